//! Reading `torch.save` checkpoints (the zip format every official SAM / F-LMM file uses). A legacy
//! (non-zip) pickle is refused with the one-line command that converts it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use crate::error::HeadError;

/// Every tensor of the `torch.save` zip archive at `path`; `key` selects a nested dict (e.g. `state_dict`).
pub fn read_torch_zip(path: &Path, key: Option<&str>) -> Result<HashMap<String, Tensor>, HeadError> {
    let bad = |message: String| HeadError::Checkpoint { path: path.to_path_buf(), message };
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        f.read_exact(&mut magic).map_err(|e| bad(format!("cannot read: {e}")))?;
    }
    if &magic != b"PK\x03\x04" {
        return Err(bad(
            "not a zip-format PyTorch checkpoint (a legacy pickle?); convert it with \
             python -c \"import torch; torch.save(torch.load('IN', map_location='cpu'), 'OUT', _use_new_zipfile_serialization=True)\""
                .into(),
        ));
    }
    let pth = candle_core::pickle::PthTensors::new(path, key).map_err(|e| bad(format!("cannot read the PyTorch archive: {e}")))?;
    let mut map = HashMap::new();
    for name in pth.tensor_infos().keys() {
        if let Some(t) = pth.get(name).map_err(|e| bad(format!("tensor {name}: {e}")))? {
            map.insert(name.clone(), t);
        }
    }
    Ok(map)
}

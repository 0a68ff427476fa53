//! Reading SAM checkpoints as the official files are written: `torch.save` zip archives (a tiny one made
//! by `tools/fixtures/sam_checkpoint.py`), safetensors, and a clear refusal of legacy pickles. An opt-in
//! test checks a real checkpoint named by `FLMM_SAM_CHECKPOINT` against the hash prefix in its official
//! file name and loads it.

mod support;

use std::io::Read;

use flmm_head::sam::{Sam, SamWeights};
use sha2::{Digest, Sha256};

fn tiny(name: &str) -> std::path::PathBuf {
    support::fixtures_dir().join("sam").join(name)
}

#[test]
fn torch_zip_checkpoint_loads_with_every_tensor_equal() {
    let w = SamWeights::load(&tiny("tiny_sam.pth")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tiny("tiny_sam.json")).unwrap()).unwrap();
    let keys = meta["keys"].as_array().unwrap();
    assert_eq!(w.keys().count(), keys.len());
    for entry in keys {
        let key = entry[0].as_str().unwrap();
        let shape: Vec<usize> = entry[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let want = support::sam_fixture_weight(key, &shape).unwrap();
        let got = w.get(key, &shape).unwrap();
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want.flatten_all().unwrap().to_vec1::<f32>().unwrap(), "{key}");
    }
    let sam = Sam::from_weights(&w).unwrap();
    assert_eq!(sam.image_encoder.input_size(), 64);
    assert_eq!(sam.params.vars().len(), 136);
}

#[test]
fn safetensors_conversion_loads_too() {
    let w = SamWeights::load(&tiny("tiny_sam.pth")).unwrap();
    let map: std::collections::HashMap<String, candle_core::Tensor> =
        w.keys().map(|k| (k.clone(), w.get(k, &w.shape_of(k).unwrap()).unwrap())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tiny_sam.safetensors");
    candle_core::safetensors::save(&map, &path).unwrap();
    Sam::load_file(&path).unwrap();
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let err = SamWeights::load(&tiny("tiny_sam_legacy.pth")).err().unwrap().to_string();
    assert!(err.contains("legacy") && err.contains("_use_new_zipfile_serialization=True"), "{err}");
    let err = SamWeights::load(std::path::Path::new("/no/such/sam.pth")).err().unwrap().to_string();
    assert!(err.contains("/no/such/sam.pth") && err.contains("cannot open"), "{err}");
    // A checkpoint without a mask decoder names the missing key.
    let mut map = std::collections::HashMap::new();
    let w = SamWeights::load(&tiny("tiny_sam.pth")).unwrap();
    for k in w.keys().filter(|k| !k.starts_with("mask_decoder.")) {
        map.insert(k.clone(), w.get(k, &w.shape_of(k).unwrap()).unwrap());
    }
    let err = Sam::from_weights(&SamWeights::from_map(map, std::path::Path::new("partial.pth"))).err().unwrap().to_string();
    assert!(err.contains("partial.pth") && err.contains("mask_decoder.mask_tokens.weight"), "{err}");
}

/// The official files carry the first hex digits of their SHA-256 in the name (PyTorch hub convention).
const OFFICIAL: [(&str, &str); 3] = [("sam_vit_b_01ec64.pth", "01ec64"), ("sam_vit_l_0b3195.pth", "0b3195"), ("sam_vit_h_4b8939.pth", "4b8939")];

#[test]
fn real_checkpoint_when_supplied() {
    let Some(path) = std::env::var_os("FLMM_SAM_CHECKPOINT") else {
        eprintln!("skipped: set FLMM_SAM_CHECKPOINT=/path/to/sam_vit_b_01ec64.pth (or _l_0b3195, _h_4b8939, mobile_sam.pt) to run");
        return;
    };
    let path = std::path::PathBuf::from(path);
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    eprintln!("{name}: sha256 {digest}");
    if let Some((_, prefix)) = OFFICIAL.iter().find(|(n, _)| *n == name) {
        assert!(digest.starts_with(prefix), "{name}: SHA-256 {digest} does not start with the published {prefix}");
    }
    let sam = Sam::load_file(&path).unwrap();
    eprintln!("loaded {} ({} trainable tensors)", sam.image_encoder.variant(), sam.params.vars().len());
}

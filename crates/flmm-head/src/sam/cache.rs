//! On-disk cache of SAM image embeddings. The image encoder is frozen, so an embedding depends only on
//! the image pixels and the encoder weights: entries are keyed by a SHA-256 of the decoded pixels and a
//! model id derived from the encoder's own weights, stored as `<dir>/<model id>/<image hash>.safetensors`
//! and written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::error::HeadError;
use crate::sam::model::Sam;
use crate::sam::preprocess::{preprocess, SamGeometry};

/// A cache directory for one SAM image encoder.
pub struct EmbeddingCache {
    dir: PathBuf,
}

/// An embedding and where it came from.
pub struct CachedEmbedding {
    /// `[1, 256, h, w]`.
    pub embedding: Tensor,
    /// The image's geometry in SAM's frame.
    pub geometry: SamGeometry,
    /// Whether it was read from disk.
    pub hit: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the image size and RGB bytes.
pub fn image_key(image: &RgbImage) -> String {
    let mut h = Sha256::new();
    h.update(image.width().to_le_bytes());
    h.update(image.height().to_le_bytes());
    h.update(image.as_raw());
    hex(&h.finalize())
}

impl EmbeddingCache {
    /// A cache under `root` for `sam`'s image encoder.
    pub fn new(root: &Path, sam: &Sam) -> Self {
        Self { dir: root.join(sam.model_id()) }
    }

    /// The directory holding this encoder's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, image: &RgbImage) -> PathBuf {
        self.dir.join(format!("{}.safetensors", image_key(image)))
    }

    /// The embedding of `image`, read from the cache or computed with `sam` and stored.
    /// A damaged entry is recomputed and replaced.
    pub fn get_or_compute(&self, sam: &Sam, image: &RgbImage, device: &Device) -> Result<CachedEmbedding, HeadError> {
        let input = sam.image_encoder.input_size();
        let geometry = SamGeometry::new((image.height() as usize, image.width() as usize), input)?;
        let path = self.entry(image);
        if let Ok(map) = candle_core::safetensors::load(&path, device) {
            if let Some(e) = map.get("embedding") {
                if e.dims().len() == 4 && e.dim(0)? == 1 {
                    return Ok(CachedEmbedding { embedding: e.clone(), geometry, hit: true });
                }
            }
        }
        let (x, geometry) = preprocess(image, input, device)?;
        let embedding = sam.image_encoder.forward(&x)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| HeadError::Checkpoint { path: self.dir.clone(), message: format!("cannot create the cache: {e}") })?;
        let tensors = HashMap::from([("embedding".to_string(), embedding.clone())]);
        flmm_nn::params::save_tensors(&tensors, &path)?;
        Ok(CachedEmbedding { embedding, geometry, hit: false })
    }
}

impl Sam {
    /// An id of the image encoder's weights: the variant plus a SHA-256 over the shapes and values of the
    /// patch embedding and absolute positions (distinct for every trained encoder, cheap to compute).
    pub fn model_id(&self) -> String {
        let mut h = Sha256::new();
        for t in self.image_encoder.fingerprint_tensors() {
            h.update(format!("{:?}", t.dims()).as_bytes());
            if let Ok(v) = t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F32)).and_then(|t| t.to_vec1::<f32>()) {
                for x in v {
                    h.update(x.to_le_bytes());
                }
            }
        }
        format!("{}-{}", self.image_encoder.variant(), &hex(&h.finalize())[..16])
    }
}

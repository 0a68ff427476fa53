//! The F-LMM inference pipeline shared by `ground` and `eval`: frozen backbone pass → U-Net → crop to
//! the image → SAM refiner prompted with box, mask and text tokens.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use flmm_head::sam::cache::EmbeddingCache;
use flmm_head::sam::preprocess::preprocess;
use flmm_head::sam::Sam;
use flmm_head::{GroundingHead, UNetConfig};
use flmm_lmm::backbone::{Backbone, Prepared};
use flmm_lmm::capture::Capture;
use flmm_lmm::llava::ImageLayout;
use image::RgbImage;

/// A backbone with its trained head.
pub struct Grounder {
    /// The frozen multimodal model.
    pub backbone: Backbone,
    /// U-Net + text projection + SAM.
    pub head: GroundingHead,
    /// SAM embedding cache (its directory names the encoder, hashed once here).
    cache: Option<EmbeddingCache>,
}

/// Logits of one request.
pub struct Prediction {
    /// U-Net logits `[N, h, w]`, cropped to the image.
    pub unet: Tensor,
    /// Refined logits `[N, H, W]` at the image's size.
    pub refined: Tensor,
}

impl Prediction {
    /// The U-Net logits resized bilinearly to the image's `(height, width)`: the U-Net-alone prediction
    /// at the size the refined masks have (how F-LMM scores its mask head).
    pub fn unet_at(&self, height: usize, width: usize) -> anyhow::Result<Tensor> {
        Ok(flmm_nn::resize::resize_bilinear_to(&self.unet, height, width)?)
    }
}

impl Grounder {
    /// Loads the backbone (`dtype`, `device`), the head file and SAM; `cache` keeps SAM embeddings.
    pub fn open(model: &Path, head: &Path, sam: &Path, dtype: DType, device: &Device, cache: Option<&Path>) -> anyhow::Result<Self> {
        let backbone = Backbone::open(model, dtype, device)?;
        let head = load_head(&backbone, head, sam)?;
        Ok(Self::from_parts(backbone, head, cache.map(Path::to_path_buf)))
    }

    /// Assembles a grounder from loaded parts.
    pub fn from_parts(backbone: Backbone, head: GroundingHead, cache: Option<PathBuf>) -> Self {
        let cache = cache.map(|dir| EmbeddingCache::new(&dir, &head.sam));
        Self { backbone, head, cache }
    }

    /// Runs the pipeline on a prepared request (see [`Backbone::prepare`]).
    pub fn predict(&self, image: &RgbImage, prepared: &Prepared) -> anyhow::Result<Prediction> {
        let features = self.backbone.features(prepared, &Capture::default())?;
        let logits = self.head.unet_logits(&features.attention)?;
        let logits = match features.layout {
            // LLaVA-1.5's grid covers the padded square: keep the image part (spec §2.1).
            ImageLayout::Grid { .. } => features.geometry.crop_to_unpadded(&logits)?,
            // LLaVA-NeXT's fine grid is already un-padded.
            ImageLayout::CoarseFine { .. } => logits,
        };
        let tokens: Vec<Tensor> = features.phrase_hidden.iter().map(|h| self.head.text_tokens(h)).collect::<Result<_, _>>()?;
        let cpu = Device::Cpu;
        let sam = &self.head.sam;
        let (embedding, geometry) = match &self.cache {
            Some(cache) => {
                let e = cache.get_or_compute(sam, image, &cpu)?;
                (e.embedding, e.geometry)
            }
            None => {
                let (x, g) = preprocess(image, sam.image_encoder.input_size(), &cpu)?;
                (sam.image_encoder.forward(&x)?, g)
            }
        };
        let logits = logits.to_device(&cpu)?;
        let refined = self.head.refine(&embedding, &geometry, &logits, &tokens)?;
        Ok(Prediction { unet: logits, refined })
    }
}

/// Builds the head for `backbone`: U-Net channels from the backbone, base width from the head file.
fn load_head(backbone: &Backbone, head_path: &Path, sam_path: &Path) -> anyhow::Result<GroundingHead> {
    let file = candle_core::safetensors::load(head_path, &Device::Cpu).with_context(|| format!("reading the head {}", head_path.display()))?;
    let first = "mask_head.encoder.0.0.convs.0.conv.weight";
    let Some(w) = file.get(first) else {
        bail!("{} is not an F-LMM head: no {first} (convert released .pth heads with `flmm import`)", head_path.display());
    };
    let channels = backbone.config.attention_channels();
    if w.dim(1)? != channels {
        bail!(
            "{}: the U-Net takes {} attention channels but {} gives {channels}; was it trained on another backbone?",
            head_path.display(),
            w.dim(1)?,
            backbone.dir.root.display()
        );
    }
    let unet = UNetConfig { in_channels: channels, base_channels: w.dim(0)?, ..Default::default() };
    let sam = Sam::load_file(sam_path)?;
    let t = &backbone.config.text;
    let head = GroundingHead::new(unet, sam, t.num_hidden_layers, t.hidden_size, 0, &Device::Cpu)?;
    let unused = head.assign(&file, head_path)?;
    if !unused.is_empty() {
        eprintln!("note: {} keys of the head file are not used: {}", unused.len(), unused.join(", "));
    }
    Ok(head)
}

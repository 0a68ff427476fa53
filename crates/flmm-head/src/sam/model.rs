//! A whole SAM: a frozen image encoder (ViT-B/L/H, or MobileSAM's TinyViT) plus the trainable prompt
//! encoder and mask decoder, loaded from an official checkpoint with the variant read off its shapes.

use std::path::Path;

use candle_core::Tensor;
use flmm_nn::params::ParamStore;
use flmm_nn::resize::resize_bilinear_to;

use crate::error::HeadError;
use crate::sam::image_encoder::{ImageEncoderVit, VitConfig};
use crate::sam::mask_decoder::{MaskDecoder, MaskDecoderConfig};
use crate::sam::parts::TensorSource;
use crate::sam::preprocess::SamGeometry;
use crate::sam::prompt_encoder::{PromptEncoder, Prompts};
use crate::sam::tiny_vit::{TinyViT, TinyVitConfig};
use crate::sam::weights::SamWeights;

/// The image encoders SAM comes with.
pub enum ImageEncoder {
    /// SAM's ViT (B, L or H).
    Vit(ImageEncoderVit),
    /// MobileSAM's TinyViT.
    TinyVit(Box<TinyViT>),
}

/// Which image encoder a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderConfig {
    /// SAM's ViT.
    Vit(VitConfig),
    /// MobileSAM's TinyViT.
    TinyVit(TinyVitConfig),
}

impl EncoderConfig {
    /// Reads the encoder kind and configuration off checkpoint shapes under `prefix`.
    pub fn detect(w: &SamWeights, prefix: &str) -> Result<Self, HeadError> {
        if w.contains(&format!("{prefix}.patch_embed.seq.0.c.weight")) {
            Ok(Self::TinyVit(TinyVitConfig::detect(w, prefix)?))
        } else {
            Ok(Self::Vit(VitConfig::detect(w, prefix)?))
        }
    }

    /// Square input side.
    pub fn img_size(&self) -> usize {
        match self {
            Self::Vit(c) => c.img_size,
            Self::TinyVit(c) => c.img_size,
        }
    }

    /// Channels of the image embedding.
    pub fn out_chans(&self) -> usize {
        match self {
            Self::Vit(c) => c.out_chans,
            Self::TinyVit(c) => c.neck_dim,
        }
    }
}

impl ImageEncoder {
    /// Encodes a preprocessed `[1, 3, S, S]` image into `[1, 256, S/16, S/16]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, HeadError> {
        match self {
            ImageEncoder::Vit(v) => v.forward(x),
            ImageEncoder::TinyVit(v) => v.forward(x),
        }
    }

    /// The encoder's square input side.
    pub fn input_size(&self) -> usize {
        match self {
            ImageEncoder::Vit(v) => v.config().img_size,
            ImageEncoder::TinyVit(v) => v.config().img_size,
        }
    }

    /// Small tensors that identify the encoder's weights (see [`Sam::model_id`]).
    pub fn fingerprint_tensors(&self) -> Vec<&Tensor> {
        match self {
            ImageEncoder::Vit(v) => v.fingerprint_tensors(),
            ImageEncoder::TinyVit(v) => v.fingerprint_tensors(),
        }
    }

    /// A short name: `vit_b`, `vit_l`, `vit_h`, `vit(<dim>)` or `tiny_vit`.
    pub fn variant(&self) -> String {
        match self {
            ImageEncoder::Vit(v) => match v.config().embed_dim {
                768 => "vit_b".into(),
                1024 => "vit_l".into(),
                1280 => "vit_h".into(),
                d => format!("vit({d})"),
            },
            ImageEncoder::TinyVit(_) => "tiny_vit".into(),
        }
    }
}

/// SAM with its prompt encoder and mask decoder registered as trainable parameters.
pub struct Sam {
    /// Frozen image encoder.
    pub image_encoder: ImageEncoder,
    /// Trainable prompt encoder.
    pub prompt_encoder: PromptEncoder,
    /// Trainable mask decoder.
    pub mask_decoder: MaskDecoder,
    /// The trainable tensors under their checkpoint keys (`prompt_encoder.*`, `mask_decoder.*`).
    pub params: ParamStore,
}

impl Sam {
    /// Loads a checkpoint file (`sam_vit_*.pth`, `mobile_sam.pt` or a safetensors conversion).
    pub fn load_file(path: &Path) -> Result<Self, HeadError> {
        Self::from_weights(&SamWeights::load(path)?)
    }

    /// Builds SAM from checkpoint tensors with the official key names, the variant read off the shapes.
    pub fn from_weights(w: &SamWeights) -> Result<Self, HeadError> {
        let config = EncoderConfig::detect(w, "image_encoder")?;
        let decoder = MaskDecoderConfig::detect(w, "mask_decoder")?;
        if decoder.dim != config.out_chans() {
            return Err(HeadError::Checkpoint {
                path: w.source().to_path_buf(),
                message: format!("mask decoder width {} differs from the image encoder's {} output channels", decoder.dim, config.out_chans()),
            });
        }
        Self::build(w, &config, decoder)
    }

    /// Builds SAM with explicit configurations (e.g. from synthetic weights).
    pub fn build(w: &SamWeights, encoder: &EncoderConfig, decoder: MaskDecoderConfig) -> Result<Self, HeadError> {
        let image_encoder = match encoder {
            EncoderConfig::Vit(c) => ImageEncoder::Vit(ImageEncoderVit::load(w, "image_encoder", c)?),
            EncoderConfig::TinyVit(c) => ImageEncoder::TinyVit(Box::new(TinyViT::load(w, "image_encoder", c)?)),
        };
        let mut params = ParamStore::new();
        let size = encoder.img_size();
        let grid = size / 16;
        let mut src = TensorSource::Trainable(w, &mut params);
        let prompt_encoder = PromptEncoder::load(&mut src, "prompt_encoder", decoder.dim, (grid, grid), (size, size), 16)?;
        let mask_decoder = MaskDecoder::load(&mut src, "mask_decoder", decoder)?;
        Ok(Self { image_encoder, prompt_encoder, mask_decoder, params })
    }
}

/// `postprocess_masks`: low-resolution logits `[1, m, 4h, 4w]` → bilinear to the square input, crop
/// the resized image, bilinear to the original size → `[1, m, H, W]`.
pub fn postprocess_masks(low: &Tensor, geometry: &SamGeometry) -> Result<Tensor, HeadError> {
    let s = geometry.input;
    let up = resize_bilinear_to(low, s, s)?;
    let cropped = up.narrow(2, 0, geometry.resized.0)?.narrow(3, 0, geometry.resized.1)?;
    Ok(resize_bilinear_to(&cropped, geometry.original.0, geometry.original.1)?)
}

/// Masks for one prompt set at the original resolution.
pub struct Prediction {
    /// `[1, m, H, W]` logits.
    pub masks: Tensor,
    /// `[1, m, 4h, 4w]` low-resolution logits.
    pub low_res: Tensor,
    /// `[1, m]` predicted IoU.
    pub iou: Tensor,
}

impl Sam {
    /// Prompts SAM on an encoded image. Coordinates in `prompts` are in the input frame (use
    /// [`SamGeometry::map_point`] / [`SamGeometry::map_box`]); `extra_tokens [n, C]` are appended to the
    /// sparse prompt (F-LMM's text tokens).
    pub fn predict(
        &self,
        embedding: &Tensor,
        geometry: &SamGeometry,
        prompts: &Prompts,
        extra_tokens: Option<&Tensor>,
        multimask: bool,
    ) -> Result<Prediction, HeadError> {
        let (sparse, dense) = self.prompt_encoder.forward(prompts)?;
        let sparse = match extra_tokens {
            Some(t) => Tensor::cat(&[&sparse, &t.unsqueeze(0)?.to_dtype(sparse.dtype())?], 1)?,
            None => sparse,
        };
        let decoded = self.mask_decoder.forward(embedding, &self.prompt_encoder.dense_pe()?, &sparse, &dense, multimask)?;
        Ok(Prediction { masks: postprocess_masks(&decoded.masks, geometry)?, low_res: decoded.masks, iou: decoded.iou })
    }
}

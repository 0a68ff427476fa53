//! A whole SAM: a frozen image encoder (ViT-B/L/H, or MobileSAM's TinyViT) plus the trainable prompt
//! encoder and mask decoder, loaded from an official checkpoint with the variant read off its shapes;
//! or, for pretraining, a SAM whose ViT encoder is trainable too ([`Sam::build_trainable`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};
use flmm_nn::params::ParamStore;
use flmm_nn::resize::resize_bilinear_to;

use crate::error::HeadError;
use crate::sam::image_encoder::{ImageEncoderVit, VitConfig};
use crate::sam::mask_decoder::{heads_metadata_key, DecodedMasks, MaskDecoder, MaskDecoderConfig};
use crate::sam::parts::TensorSource;
use crate::sam::preprocess::SamGeometry;
use crate::sam::prompt_encoder::{PromptEncoder, Prompts};
use crate::sam::tiny_vit::{TinyViT, TinyVitConfig};
use crate::sam::weights::SamWeights;

/// Checkpoint key of the prompt encoder's random Fourier projection (a buffer, not a parameter).
pub const GAUSSIAN_KEY: &str = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix";

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

    /// Side of the (square) image embedding: the input side over the encoder's total stride.
    pub fn grid(&self) -> usize {
        match self {
            Self::Vit(c) => c.grid(),
            Self::TinyVit(c) => c.img_size / crate::sam::tiny_vit::ENCODER_STRIDE,
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
    /// Encodes a preprocessed `[1, 3, S, S]` image into `[1, C, g, g]` (`[1, 256, S/16, S/16]` in SAM).
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

/// SAM with its prompt encoder and mask decoder (and, from [`Sam::build_trainable`], its image encoder)
/// registered as trainable parameters.
pub struct Sam {
    /// Image encoder: frozen, or trainable from [`Sam::build_trainable`].
    pub image_encoder: ImageEncoder,
    /// Trainable prompt encoder.
    pub prompt_encoder: PromptEncoder,
    /// Trainable mask decoder.
    pub mask_decoder: MaskDecoder,
    /// The trainable tensors under their checkpoint keys (`prompt_encoder.*`, `mask_decoder.*`, and
    /// `image_encoder.*` when the encoder is trainable).
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

    /// Builds SAM with explicit configurations (e.g. from synthetic weights); the image encoder is frozen.
    pub fn build(w: &SamWeights, encoder: &EncoderConfig, decoder: MaskDecoderConfig) -> Result<Self, HeadError> {
        Self::assemble(w, encoder, decoder, false)
    }

    /// Builds SAM with every part trainable, all in [`Sam::params`] under the official keys
    /// (`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`): SAM's own promptable-segmentation
    /// training. Only the ViT encoder has a trainable forward.
    pub fn build_trainable(w: &SamWeights, encoder: &EncoderConfig, decoder: MaskDecoderConfig) -> Result<Self, HeadError> {
        Self::assemble(w, encoder, decoder, true)
    }

    /// Writes a safetensors checkpoint that [`Sam::load_file`] opens: every trainable tensor under its
    /// official key plus the prompt encoder's positional-encoding buffer, stored as `dtype` (e.g. f16;
    /// loading widens to f32), and the mask decoder's head count as metadata (`mask_decoder.num_heads`,
    /// which shapes do not show). Only a SAM from [`Sam::build_trainable`] holds its encoder in the store.
    pub fn save_file(&self, path: &Path, dtype: DType) -> Result<(), HeadError> {
        if !self.params.names().iter().any(|k| k.starts_with("image_encoder.")) {
            return Err(HeadError::InvalidInput("this SAM's image encoder is frozen, so its tensors are not in the store to save".into()));
        }
        let mut all = self.params.tensors();
        all.insert(GAUSSIAN_KEY.into(), self.prompt_encoder.gaussian().clone());
        let all = all.into_iter().map(|(k, t)| Ok((k, t.to_dtype(dtype)?))).collect::<Result<BTreeMap<_, _>, HeadError>>()?;
        let metadata = HashMap::from([(heads_metadata_key("mask_decoder"), self.mask_decoder.config().heads.to_string())]);
        flmm_nn::fsutil::write_atomic_with(path, |tmp| safetensors::serialize_to_file(&all, Some(metadata), tmp).map_err(std::io::Error::other))
            .map_err(|e| HeadError::Checkpoint { path: path.to_path_buf(), message: format!("cannot write: {e}") })
    }

    fn assemble(w: &SamWeights, encoder: &EncoderConfig, decoder: MaskDecoderConfig, train_encoder: bool) -> Result<Self, HeadError> {
        let mut params = ParamStore::new();
        let image_encoder = match (encoder, train_encoder) {
            (EncoderConfig::Vit(c), false) => ImageEncoder::Vit(ImageEncoderVit::load(&mut TensorSource::Frozen(w), "image_encoder", c)?),
            (EncoderConfig::Vit(c), true) => {
                ImageEncoder::Vit(ImageEncoderVit::load(&mut TensorSource::Trainable(w, &mut params), "image_encoder", c)?)
            }
            (EncoderConfig::TinyVit(c), false) => ImageEncoder::TinyVit(Box::new(TinyViT::load(w, "image_encoder", c)?)),
            (EncoderConfig::TinyVit(_), true) => {
                return Err(HeadError::InvalidConfig("MobileSAM's TinyViT encoder has no trainable forward".into()));
            }
        };
        let size = encoder.img_size();
        let grid = encoder.grid();
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

    /// Low-resolution masks for many prompt sets on one encoded image, decoded in batches of prompts
    /// with equally many sparse tokens (as SAM batches prompts): `masks [N, m, 4h, 4w]` and
    /// `iou [N, m]`, in the order of `prompts`.
    pub fn decode_many(&self, embedding: &Tensor, prompts: &[Prompts], multimask: bool) -> Result<DecodedMasks, HeadError> {
        let encoded = prompts.iter().map(|p| self.prompt_encoder.forward(p)).collect::<Result<Vec<_>, _>>()?;
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, (sparse, _)) in encoded.iter().enumerate() {
            groups.entry(sparse.dim(1)?).or_default().push(i);
        }
        let image_pe = self.prompt_encoder.dense_pe()?;
        let (mut masks, mut ious, mut order) = (Vec::new(), Vec::new(), Vec::<usize>::with_capacity(prompts.len()));
        for members in groups.values() {
            let sparse = Tensor::cat(&members.iter().map(|&i| &encoded[i].0).collect::<Vec<_>>(), 0)?;
            let dense = Tensor::cat(&members.iter().map(|&i| &encoded[i].1).collect::<Vec<_>>(), 0)?;
            let decoded = self.mask_decoder.forward(embedding, &image_pe, &sparse, &dense, multimask)?;
            masks.push(decoded.masks);
            ious.push(decoded.iou);
            order.extend(members);
        }
        let (masks, iou) = (Tensor::cat(&masks, 0)?.contiguous()?, Tensor::cat(&ious, 0)?.contiguous()?);
        if order.iter().enumerate().all(|(row, &i)| row == i) {
            return Ok(DecodedMasks { masks, iou });
        }
        // Row r of the grouped batch holds prompt order[r]; gather the rows back into prompt order.
        let mut position = vec![0u32; order.len()];
        for (row, &i) in order.iter().enumerate() {
            position[i] = row as u32;
        }
        let position = Tensor::from_vec(position, prompts.len(), embedding.device())?;
        Ok(DecodedMasks { masks: masks.index_select(&position, 0)?, iou: iou.index_select(&position, 0)? })
    }
}

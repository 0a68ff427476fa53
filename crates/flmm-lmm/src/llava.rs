//! LLaVA-1.5 and LLaVA-NeXT: CLIP tower → projector → image tokens spliced into the decoder's input at
//! the `<image>` token, then one decoder pass with phrase-row capture.

use candle_core::{DType, Device, Module, Tensor};

use crate::capture::{Capture, CaptureSink, RowCapture};
use crate::clip::{select_features, ClipVision};
use crate::config::{Family, LlavaConfig};
use crate::decoder::{Decoder, DecoderKeys, ForwardRequest, KvCache};
use crate::error::{LmmError, Result};
use crate::layers::activate;
use crate::model_dir::{ModelDir, Weights};
use crate::prompt::TokenizedText;

/// What the vision side needs to know about one processed image.
#[derive(Debug, Clone)]
pub struct VisionInput {
    /// `[1, 3, S, S]` (LLaVA-1.5) or `[1 + rows·cols, 3, S, S]` (LLaVA-NeXT: base image, then tiles row-major).
    pub pixel_values: Tensor,
    /// Original image size `(height, width)`.
    pub original: (usize, usize),
    /// LLaVA-NeXT tile grid `(rows, cols)`.
    pub tiles: Option<(usize, usize)>,
}

/// How the image tokens are laid out in the sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageLayout {
    /// One `g × g` grid in raster order.
    Grid {
        /// Grid side.
        side: usize,
    },
    /// A coarse `g × g` grid, then the fine `fh × (fw + 1)` grid whose last column is `image_newline`.
    CoarseFine {
        /// Coarse grid side.
        coarse: usize,
        /// Fine grid height (rows of image tokens after un-padding).
        fine_h: usize,
        /// Fine grid width without the newline column.
        fine_w: usize,
    },
}

impl ImageLayout {
    /// Number of image tokens.
    pub fn len(&self) -> usize {
        match *self {
            ImageLayout::Grid { side } => side * side,
            ImageLayout::CoarseFine { coarse, fine_h, fine_w } => coarse * coarse + fine_h * (fine_w + 1),
        }
    }

    /// Whether there are no image tokens (never, for a valid layout).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request expanded to the decoder's sequence: image tokens in place of `<image>`.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// Input embeddings `[T, d]`.
    pub embeds: Tensor,
    /// Per position phrase index (-1 for prompt, image and ungrounded tokens).
    pub mask_ids: Vec<i32>,
    /// Positions of the image tokens, in layout order.
    pub image_positions: Vec<usize>,
    /// The image token layout.
    pub layout: ImageLayout,
}

/// Key prefixes of the checkpoint, which differ between transformers versions.
#[derive(Debug, Clone)]
struct KeyLayout {
    vision: String,
    projector: String,
    newline: String,
    decoder: DecoderKeys,
}

impl KeyLayout {
    fn detect(w: &Weights, dir: &std::path::Path) -> Result<Self> {
        let layout = |root: &str, lm: &str, head: &str| KeyLayout {
            vision: format!("{root}vision_tower.vision_model"),
            projector: format!("{root}multi_modal_projector"),
            newline: format!("{root}image_newline"),
            decoder: DecoderKeys { model: lm.into(), lm_head: head.into() },
        };
        if w.contains("language_model.model.embed_tokens.weight") {
            Ok(layout("", "language_model.model", "language_model.lm_head"))
        } else if w.contains("model.language_model.embed_tokens.weight") {
            Ok(layout("model.", "model.language_model", "lm_head"))
        } else {
            Err(LmmError::Weight {
                dir: dir.to_path_buf(),
                key: "language_model.model.embed_tokens.weight".into(),
                message: "neither this key nor model.language_model.embed_tokens.weight exists; \
                          is this a LLaVA checkpoint saved by transformers?"
                    .into(),
            })
        }
    }
}

struct Projector {
    linear_1: candle_nn::Linear,
    linear_2: candle_nn::Linear,
}

/// A loaded LLaVA-1.5 or LLaVA-NeXT model.
pub struct LlavaModel {
    config: LlavaConfig,
    vision: ClipVision,
    projector: Projector,
    newline: Option<Tensor>,
    decoder: Decoder,
    device: Device,
    dtype: DType,
}

impl LlavaModel {
    /// Loads the model of `dir` with weights converted to `dtype` on `device`.
    pub fn load(dir: &ModelDir, config: &LlavaConfig, dtype: DType, device: &Device) -> Result<Self> {
        let w = dir.weights(dtype, device)?;
        let keys = KeyLayout::detect(&w, &dir.root)?;
        let vision = ClipVision::load(&w, &keys.vision, &config.vision, config.vision_layers_to_run())?;
        let vd = config.vision.hidden_size;
        let td = config.text.hidden_size;
        let projector = Projector {
            linear_1: w.linear(&format!("{}.linear_1", keys.projector), vd, td, true)?,
            linear_2: w.linear(&format!("{}.linear_2", keys.projector), td, td, true)?,
        };
        let newline = match config.family {
            Family::LlavaNext => Some(w.get(&keys.newline, &[td])?),
            Family::Llava15 => None,
        };
        let decoder = Decoder::load(&w, &keys.decoder, &config.text)?;
        Ok(Self { config: config.clone(), vision, projector, newline, decoder, device: device.clone(), dtype })
    }

    /// The configuration.
    pub fn config(&self) -> &LlavaConfig {
        &self.config
    }

    /// The decoder.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Image embeddings `[n_image_tokens, d]` in sequence order, and their layout.
    pub fn image_features(&self, input: &VisionInput) -> Result<(Tensor, ImageLayout)> {
        let s = self.config.vision.image_size;
        let (n, c, h, w) = input.pixel_values.dims4()?;
        if c != 3 || h != s || w != s {
            return Err(LmmError::BadImage(format!("pixel values {:?} do not match the vision tower's 3×{s}×{s}", input.pixel_values.dims())));
        }
        let hidden = self.vision.forward(&input.pixel_values.to_dtype(self.dtype)?)?;
        let feats = select_features(&hidden, self.config.drop_cls)?;
        let feats = self.projector.linear_2.forward(&activate(&self.projector.linear_1.forward(&feats)?, self.config.projector_act)?)?;
        let g = self.config.vision.grid();
        let d = self.config.text.hidden_size;
        match self.config.family {
            Family::Llava15 => {
                if n != 1 {
                    return Err(LmmError::BadImage(format!("LLaVA-1.5 takes one image tile, got {n}")));
                }
                if !self.config.drop_cls {
                    return Err(LmmError::BadImage("vision_feature_select_strategy \"full\" has no square token grid".into()));
                }
                Ok((feats.get(0)?, ImageLayout::Grid { side: g }))
            }
            Family::LlavaNext => {
                let (rows, cols) = input.tiles.ok_or_else(|| LmmError::BadImage("LLaVA-NeXT input lacks its tile grid".into()))?;
                if n != 1 + rows * cols {
                    return Err(LmmError::BadImage(format!("LLaVA-NeXT expects 1 + {rows}×{cols} tiles, got {n}")));
                }
                let base = feats.get(0)?;
                // tiles [rows, cols, g, g, d] → [d, rows·g, cols·g]
                let tiles = feats
                    .narrow(0, 1, rows * cols)?
                    .reshape((rows, cols, g, g, d))?
                    .permute((4, 0, 2, 1, 3))?
                    .reshape((d, rows * g, cols * g))?;
                let (top, fine_h, left, fine_w) = unpad_region(input.original, (rows * g, cols * g));
                let fine = tiles.narrow(1, top, fine_h)?.narrow(2, left, fine_w)?;
                let newline = self.newline.as_ref().expect("NeXT loads image_newline").reshape((d, 1, 1))?.expand((d, fine_h, 1))?;
                let fine = Tensor::cat(&[&fine, &newline.to_dtype(fine.dtype())?], 2)?; // [d, fh, fw+1]
                let fine = fine.reshape((d, fine_h * (fine_w + 1)))?.t()?;
                let all = Tensor::cat(&[&base, &fine], 0)?;
                Ok((all, ImageLayout::CoarseFine { coarse: g, fine_h, fine_w }))
            }
        }
    }

    /// Splices the image features into the embedded token sequence at the single `<image>` token.
    pub fn expand(&self, text: &TokenizedText, image: &VisionInput) -> Result<Expanded> {
        let image_token = self.config.image_token_index;
        let at: Vec<usize> = text.input_ids.iter().enumerate().filter(|(_, &t)| t == image_token).map(|(i, _)| i).collect();
        if at.len() != 1 {
            return Err(LmmError::BadText(format!(
                "the prompt must contain exactly one image token (id {image_token}), found {}",
                at.len()
            )));
        }
        let at = at[0];
        let (features, layout) = self.image_features(image)?;
        let before = self.decoder.embed_tokens(&text.input_ids[..at])?;
        let after = self.decoder.embed_tokens(&text.input_ids[at + 1..])?;
        let n_img = features.dim(0)?;
        let embeds = Tensor::cat(&[&before, &features.to_dtype(before.dtype())?, &after], 0)?;
        let mut mask_ids = text.mask_ids[..at].to_vec();
        mask_ids.extend(std::iter::repeat_n(-1, n_img));
        mask_ids.extend_from_slice(&text.mask_ids[at + 1..]);
        Ok(Expanded { embeds, mask_ids, image_positions: (at..at + n_img).collect(), layout })
    }

    /// One teacher-forced pass: per phrase, the merged attention rows to the image tokens
    /// `[N, channels, n_image_tokens]` (f32) and the phrase tokens' hidden states of every layer.
    pub fn capture(&self, expanded: &Expanded, capture: &Capture) -> Result<Captured> {
        let phrases = expanded.mask_ids.iter().copied().max().unwrap_or(-1) + 1;
        if phrases <= 0 {
            return Err(LmmError::BadText("no phrase tokens to capture".into()));
        }
        let groups: Vec<Vec<usize>> = (0..phrases)
            .map(|k| expanded.mask_ids.iter().enumerate().filter(|(_, &m)| m == k).map(|(i, _)| i).collect())
            .collect();
        let text = self.decoder.config();
        let request = RowCapture {
            groups: groups.clone(),
            keys: expanded.image_positions.clone(),
            layers: capture.layer_list(text.num_hidden_layers)?,
            heads: capture.head_list(text.num_attention_heads)?,
            merge: capture.merge,
        };
        let sink = CaptureSink::new(request, &self.device)?;
        let mut hidden_positions: Vec<usize> = groups.iter().flatten().copied().collect();
        hidden_positions.sort_unstable();
        let out = self.decoder.forward(
            &expanded.embeds,
            &mut KvCache::default(),
            ForwardRequest { hidden_positions: hidden_positions.clone(), logit_positions: vec![], capture: Some(sink) },
        )?;
        let hidden = out.hidden.expect("hidden rows were requested"); // [L+1, P, d]
        let layers = hidden.dim(0)? - 1;
        let mut phrase_hidden = Vec::with_capacity(groups.len());
        for group in &groups {
            let rows: Vec<u32> = group.iter().map(|p| hidden_positions.binary_search(p).expect("listed") as u32).collect();
            let idx = Tensor::from_vec(rows.clone(), rows.len(), &self.device)?;
            let h = hidden.narrow(0, 1, layers)?.index_select(&idx, 1)?.transpose(0, 1)?; // [n_k, L, d]
            phrase_hidden.push(h.to_dtype(DType::F32)?);
        }
        Ok(Captured { rows: out.captured.expect("capture was requested"), phrase_hidden, groups })
    }
}

/// Output of [`LlavaModel::capture`].
pub struct Captured {
    /// `[N, channels, n_image_tokens]`, merged over each phrase's tokens (channel = l·H + h).
    pub rows: Tensor,
    /// Per phrase `[n_k, L, d]`: outputs of layers 1..L (the last after the final norm).
    pub phrase_hidden: Vec<Tensor>,
    /// Per phrase, its token positions in the expanded sequence.
    pub groups: Vec<Vec<usize>>,
}

/// The region of a `(rows, cols)` padded feature grid that covers an `original (h, w)` image, as
/// transformers 4.39's `unpad_image`: `(top, height, left, width)`. The ratios are float32 (the sizes
/// arrive there as a tensor), the new size is truncated, and the same margin is cut on both sides.
pub fn unpad_region(original: (usize, usize), current: (usize, usize)) -> (usize, usize, usize, usize) {
    let (oh, ow) = (original.0 as f32, original.1 as f32);
    let (ch, cw) = current;
    if ow / oh > cw as f32 / ch as f32 {
        let new_h = (oh * (cw as f32 / ow)) as usize;
        let pad = (ch - new_h.min(ch)) / 2;
        (pad, ch - 2 * pad, 0, cw)
    } else {
        let new_w = (ow * (ch as f32 / oh)) as usize;
        let pad = (cw - new_w.min(cw)) / 2;
        (0, ch, pad, cw - 2 * pad)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unpad_keeps_the_extra_column_of_an_odd_margin() {
        // 64×155 image on a 7×21 grid: new width int(16.95) = 16, margin (21-16)//2 = 2 each side → 17.
        assert_eq!(super::unpad_region((64, 155), (7, 21)), (0, 7, 2, 17));
        // Tall image: rows are cut.
        assert_eq!(super::unpad_region((200, 50), (14, 14)), (0, 14, 5, 4));
        assert_eq!(super::unpad_region((50, 200), (14, 14)), (5, 4, 0, 14));
    }
}

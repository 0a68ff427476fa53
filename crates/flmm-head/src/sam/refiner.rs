//! F-LMM's refiner (spec §3.2): SAM prompted, per phrase, with the U-Net logits as a dense mask, the box
//! of the binarized U-Net mask, and the phrase's text tokens as extra sparse tokens. Gradients reach
//! the U-Net through the dense prompt (the box is computed from detached values) and the text tokens.

use candle_core::{DType, Tensor};
use flmm_nn::resize::resize_bilinear_to;

use crate::error::HeadError;
use crate::sam::model::Sam;
use crate::sam::preprocess::SamGeometry;
use crate::sam::prompt_encoder::Prompts;

/// The dense mask prompt of each phrase, `[N, 1, 4h, 4w]`: U-Net logits `[N, mh, mw]` resized to the
/// resized image, padded right/bottom to the square input with `min(-1, min logit)`, resized to the
/// mask-prompt size.
pub fn dense_prompts(sam: &Sam, unet_logits: &Tensor, geometry: &SamGeometry) -> Result<Tensor, HeadError> {
    let (n, _, _) = unet_logits.dims3()?;
    let pad = unet_logits.detach().min_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.min(-1.0);
    let (rh, rw) = geometry.resized;
    let s = geometry.input;
    let x = resize_bilinear_to(&unet_logits.unsqueeze(1)?, rh, rw)?;
    let (dtype, device) = (x.dtype(), x.device().clone());
    let fill = |h: usize, w: usize| -> Result<Tensor, HeadError> { Ok((Tensor::ones((n, 1, h, w), dtype, &device)? * pad)?) };
    let x = if rw < s { Tensor::cat(&[&x, &fill(rh, s - rw)?], 3)? } else { x };
    let x = if rh < s { Tensor::cat(&[&x, &fill(s - rh, s)?], 2)? } else { x };
    let (h, w) = sam.prompt_encoder.embedding_size();
    Ok(resize_bilinear_to(&x, 4 * h, 4 * w)?)
}

/// Box prompts `[x0, y0, x1, y1]` in the input frame: the extent of `sigmoid(logits) > 0.5` after
/// resizing the (detached) logits to the original size, `x1, y1` exclusive; the whole image when empty.
pub fn box_prompts(unet_logits: &Tensor, geometry: &SamGeometry) -> Result<Vec<[f32; 4]>, HeadError> {
    let (oh, ow) = geometry.original;
    let probs = flmm_nn::act::sigmoid(&unet_logits.detach().to_dtype(DType::F32)?)?;
    let up = resize_bilinear_to(&probs.unsqueeze(0)?, oh, ow)?.squeeze(0)?; // [N, H, W]
    let mut boxes = Vec::new();
    for k in 0..up.dim(0)? {
        let plane = up.get(k)?.flatten_all()?.to_vec1::<f32>()?;
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for (i, &p) in plane.iter().enumerate() {
            if p > 0.5 {
                let (y, x) = (i / ow, i % ow);
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
        let b = if x0 == usize::MAX { [0.0, 0.0, ow as f32, oh as f32] } else { [x0 as f32, y0 as f32, (x1 + 1) as f32, (y1 + 1) as f32] };
        boxes.push(geometry.map_box(b));
    }
    Ok(boxes)
}

/// Refined logits `[N, H, W]` at the original resolution for U-Net logits `[N, mh, mw]` (covering the
/// image) and per-phrase text tokens `[n_k, C]` (`None` skips the text prompt).
pub fn refine(
    sam: &Sam,
    embedding: &Tensor,
    geometry: &SamGeometry,
    unet_logits: &Tensor,
    text_tokens: Option<&[Tensor]>,
) -> Result<Tensor, HeadError> {
    let n = unet_logits.dim(0)?;
    if let Some(t) = text_tokens {
        if t.len() != n {
            return Err(HeadError::InvalidInput(format!("{} text token sets for {n} masks", t.len())));
        }
    }
    let dense = dense_prompts(sam, unet_logits, geometry)?;
    let boxes = box_prompts(unet_logits, geometry)?;
    let mut out = Vec::with_capacity(n);
    for (k, b) in boxes.into_iter().enumerate() {
        let prompts = Prompts { points: vec![], bbox: Some(b), mask: Some(dense.narrow(0, k, 1)?) };
        let tokens = text_tokens.map(|t| &t[k]);
        let pred = sam.predict(embedding, geometry, &prompts, tokens, false)?;
        out.push(pred.masks.squeeze(0)?.squeeze(0)?);
    }
    Ok(Tensor::stack(&out, 0)?)
}

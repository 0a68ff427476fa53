//! LLaVA-NeXT ("anyres") image processor (F-LMM's `CustomLlavaNextImageProcessor`, spec §5.3):
//! pick the best pinpoint resolution, resize keeping the aspect ratio to fit it, pad with 0 centred,
//! cut S×S tiles row-major, and prepend the whole image squashed to S×S.
//!
//! Differences from transformers 4.39.1's `LlavaNextImageProcessor`: F-LMM pads `pad/2` before and
//! `pad - pad/2` after; transformers pads `pad/2` on both sides, leaving the canvas one pixel short
//! when the padding is odd (its tiles are then resized/cropped again). Everything else (best-resolution
//! choice, resize size, tile order, base image) is transformers' arithmetic.

use candle_core::{Device, Tensor};
use flmm_data::resample::resize_rgb8;
use image::RgbImage;

use super::config::{ProcessorConfig, SizeSpec};
use super::error::{ProcessorError, Result};
use super::geometry::{ImageGeometry, Padding, Size2};
use super::pixels::{paste_on_canvas, Normalizer};
use super::{AnyResLayout, Processed};

/// transformers' default `image_grid_pinpoints` (used when the config has none), as [height, width].
pub const DEFAULT_PINPOINTS: [[u32; 2]; 5] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/// transformers 4.39.1 `select_best_resolution`: for each pinpoint `[ph, pw]` (height, width) take
/// `s = min(pw/w, ph/h)`, effective = `min(int(w·s)·int(h·s), w·h)`, wasted = `pw·ph − effective`;
/// keep the largest effective resolution, ties broken by the smaller waste, then by list order.
/// Returns (height, width); `None` only for an empty list.
pub fn select_best_resolution(original: (u32, u32), pinpoints: &[[u32; 2]]) -> Option<(u32, u32)> {
    let (oh, ow) = (original.0 as f64, original.1 as f64);
    let orig_area = original.0 as i64 * original.1 as i64;
    let mut best = None;
    let mut max_eff: i64 = 0;
    let mut min_waste = f64::INFINITY;
    for &[ph, pw] in pinpoints {
        let scale = (pw as f64 / ow).min(ph as f64 / oh);
        let (dw, dh) = ((ow * scale) as i64, (oh * scale) as i64);
        let eff = (dw * dh).min(orig_area);
        let waste = (pw as i64 * ph as i64 - eff) as f64;
        if eff > max_eff || (eff == max_eff && waste < min_waste) {
            max_eff = eff;
            min_waste = waste;
            best = Some((ph, pw));
        }
    }
    best
}

/// transformers 4.39.1 `_get_patch_output_size`: the aspect-preserving size of an `h`×`w` image inside
/// `target` (height, width): with `sw = tw/w`, `sh = th/h`, if `sw < sh` → `(min(ceil(h·sw), th), tw)`,
/// else `(th, min(ceil(w·sh), tw))`.
pub fn patch_output_size(h: u32, w: u32, target: (u32, u32)) -> (u32, u32) {
    let (th, tw) = target;
    let scale_w = tw as f64 / w as f64;
    let scale_h = th as f64 / h as f64;
    if scale_w < scale_h {
        (((h as f64 * scale_w).ceil() as u32).min(th), tw)
    } else {
        (th, ((w as f64 * scale_h).ceil() as u32).min(tw))
    }
}

fn config_error(message: String) -> ProcessorError {
    ProcessorError::Config { source_name: "LLaVA-NeXT processor".into(), message }
}

/// The tile side: `size.shortest_edge` (the base image side) which must equal `crop_size.height`
/// (the patch side) — otherwise the base image and the tiles could not be stacked.
fn tile_side(cfg: &ProcessorConfig) -> Result<u32> {
    let base = match cfg.size {
        SizeSpec::ShortestEdge(s) => s,
        SizeSpec::HeightWidth { height, width } if height == width => height,
        SizeSpec::HeightWidth { height, width } => {
            return Err(config_error(format!("`size` must be square for LLaVA-NeXT, got {height}x{width}")))
        }
    };
    let patch = match cfg.crop_size {
        None => base,
        Some(SizeSpec::HeightWidth { height, .. }) => height,
        Some(SizeSpec::ShortestEdge(s)) => s,
    };
    if patch != base {
        return Err(config_error(format!(
            "the patch size (`crop_size` height {patch}) must equal the base image size (`size` {base})"
        )));
    }
    Ok(base)
}

/// Process one image for LLaVA-NeXT: `pixel_values` `[1 + rows·cols, 3, S, S]` f32 on the CPU (base
/// image first, then the tiles row-major), the geometry inside the best resolution, and the layout.
pub fn process_llava_next(img: &RgbImage, cfg: &ProcessorConfig) -> Result<Processed> {
    let (h, w) = (img.height(), img.width());
    if h == 0 || w == 0 {
        return Err(ProcessorError::EmptyImage { width: w, height: h });
    }
    let s = tile_side(cfg)?;
    let pinpoints: &[[u32; 2]] = cfg.image_grid_pinpoints.as_deref().unwrap_or(&DEFAULT_PINPOINTS);
    let (bh, bw) = select_best_resolution((h, w), pinpoints)
        .ok_or_else(|| config_error("`image_grid_pinpoints` is empty".into()))?;
    if bh % s != 0 || bw % s != 0 {
        return Err(config_error(format!("pinpoint {bh}x{bw} is not a multiple of the patch size {s}")));
    }
    let (nh, nw) = patch_output_size(h, w, (bh, bw));
    let resized = resize_rgb8(img, nw, nh, cfg.resample);
    let (pad_h, pad_w) = (bh - nh, bw - nw);
    let padding = Padding::centred(pad_h, pad_w);
    let canvas = paste_on_canvas(&resized, bw, bh, padding.before_height, padding.before_width, [0, 0, 0]);
    let (rows, cols) = (bh / s, bw / s);
    let n = 1 + (rows * cols) as usize;

    let norm = Normalizer::new(cfg);
    let mut data = Vec::with_capacity(n * 3 * s as usize * s as usize);
    let base = resize_rgb8(img, s, s, cfg.resample);
    norm.push_chw(&base, 0, 0, s, s, &mut data);
    for r in 0..rows {
        for c in 0..cols {
            norm.push_chw(&canvas, r * s, c * s, s, s, &mut data);
        }
    }
    let pixel_values = Tensor::from_vec(data, (n, 3, s as usize, s as usize), &Device::Cpu)?;
    let geometry = ImageGeometry {
        original: Size2 { height: h, width: w },
        image_shape: Size2 { height: nh, width: nw },
        padded_shape: Size2 { height: bh, width: bw },
        padding,
    };
    let anyres = AnyResLayout { best_resolution: Size2 { height: bh, width: bw }, grid_rows: rows, grid_cols: cols };
    Ok(Processed { pixel_values, geometry, anyres: Some(anyres) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_resolution_follows_transformers() {
        let p = DEFAULT_PINPOINTS;
        assert_eq!(select_best_resolution((300, 500), &p), Some((336, 672)));
        // smaller than every pinpoint: all effective areas equal the original, the least waste wins,
        // first in list order on ties — even for a tall image
        assert_eq!(select_best_resolution((330, 120), &p), Some((336, 672)));
        assert_eq!(select_best_resolution((701, 243), &p), Some((1008, 336)));
        assert_eq!(select_best_resolution((500, 520), &p), Some((672, 672)));
        assert_eq!(select_best_resolution((5, 5), &[]), None);
    }

    #[test]
    fn patch_output_size_uses_ceil() {
        assert_eq!(patch_output_size(300, 500, (336, 672)), (336, 560));
        assert_eq!(patch_output_size(190, 64, (168, 56)), (167, 56)); // min(ceil(190*0.875), 168) = 167
        assert_eq!(patch_output_size(200, 700, (336, 1008)), (288, 1008));
    }

    #[test]
    fn bad_configs_are_errors() {
        let img = RgbImage::new(4, 4);
        let mut cfg = ProcessorConfig::clip(56);
        cfg.image_grid_pinpoints = Some(vec![[56, 100]]);
        assert!(process_llava_next(&img, &cfg).unwrap_err().to_string().contains("not a multiple"));
        cfg.image_grid_pinpoints = Some(vec![]);
        assert!(process_llava_next(&img, &cfg).is_err());
        let mut cfg = ProcessorConfig::clip(56);
        cfg.crop_size = Some(SizeSpec::HeightWidth { height: 28, width: 28 });
        assert!(process_llava_next(&img, &cfg).unwrap_err().to_string().contains("patch size"));
        assert!(process_llava_next(&RgbImage::new(0, 3), &ProcessorConfig::clip(56)).is_err());
    }
}

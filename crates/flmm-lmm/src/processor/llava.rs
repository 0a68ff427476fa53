//! LLaVA-1.5 image processor (F-LMM's `CustomLlavaImageProcessor`, spec §5.3): longest side → S,
//! pad centred to S×S with `int(mean·255)`, rescale, normalise. No centre crop.

use candle_core::{Device, Tensor};
use flmm_data::resample::resize_rgb8;
use image::RgbImage;

use super::config::{ProcessorConfig, SizeSpec};
use super::error::{ProcessorError, Result};
use super::geometry::{ImageGeometry, Padding, Size2};
use super::pixels::{paste_on_canvas, Normalizer};
use super::Processed;

/// The resized (height, width) of an `h`×`w` image: for `shortest_edge = S` the *longest* side becomes
/// `S` and the other `int(short·S/long)` (Python true division, truncated; a square goes to S×S);
/// for `{height, width}` exactly that size. Errors when a side would be 0.
pub fn llava15_resize_shape(h: u32, w: u32, size: SizeSpec) -> Result<(u32, u32)> {
    if h == 0 || w == 0 {
        return Err(ProcessorError::EmptyImage { width: w, height: h });
    }
    let (nh, nw, s) = match size {
        SizeSpec::ShortestEdge(s) => {
            let other = |short: u32, long: u32| ((short as u64 * s as u64) as f64 / long as f64) as u32;
            if h > w {
                (s, other(w, h), s)
            } else {
                (other(h, w), s, s)
            }
        }
        SizeSpec::HeightWidth { height, width } => (height, width, height.max(width)),
    };
    if nh == 0 || nw == 0 {
        return Err(ProcessorError::DegenerateAspect { width: w, height: h, size: s });
    }
    Ok((nh, nw))
}

/// `int(mean·255)` per channel (Python truncation; clamped to 0..=255).
fn pad_fill(cfg: &ProcessorConfig) -> [u8; 3] {
    cfg.image_mean.map(|m| ((m * 255.0) as i64).clamp(0, 255) as u8)
}

/// Process one image for LLaVA-1.5: `pixel_values` `[1, 3, S, S]` f32 on the CPU, plus its geometry
/// (`image_shape` = resized size, `padded_shape` = S×S, centred padding `before = pad/2`).
pub fn process_llava15(img: &RgbImage, cfg: &ProcessorConfig) -> Result<Processed> {
    let (h, w) = (img.height(), img.width());
    let (nh, nw) = llava15_resize_shape(h, w, cfg.size)?;
    let resized = resize_rgb8(img, nw, nh, cfg.resample);
    let side = nh.max(nw);
    let (pad_h, pad_w) = (side - nh, side - nw);
    let padding = Padding::centred(pad_h, pad_w);
    let canvas = paste_on_canvas(&resized, side, side, padding.before_height, padding.before_width, pad_fill(cfg));
    let mut data = Vec::with_capacity(3 * side as usize * side as usize);
    Normalizer::new(cfg).push_chw(&canvas, 0, 0, side, side, &mut data);
    let pixel_values = Tensor::from_vec(data, (1, 3, side as usize, side as usize), &Device::Cpu)?;
    let geometry = ImageGeometry {
        original: Size2 { height: h, width: w },
        image_shape: Size2 { height: nh, width: nw },
        padded_shape: Size2 { height: side, width: side },
        padding,
    };
    Ok(Processed { pixel_values, geometry, anyres: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_shape_arithmetic() {
        let s = SizeSpec::ShortestEdge(336);
        assert_eq!(llava15_resize_shape(300, 500, s).unwrap(), (201, 336)); // int(300*336/500) = int(201.6)
        assert_eq!(llava15_resize_shape(500, 300, s).unwrap(), (336, 201));
        assert_eq!(llava15_resize_shape(7, 7, s).unwrap(), (336, 336));
        assert!(matches!(llava15_resize_shape(1, 400, s), Err(ProcessorError::DegenerateAspect { .. })));
        assert!(matches!(llava15_resize_shape(0, 4, s), Err(ProcessorError::EmptyImage { .. })));
    }

    #[test]
    fn clip_pad_fill_is_122_116_104() {
        assert_eq!(pad_fill(&ProcessorConfig::clip(336)), [122, 116, 104]);
    }
}

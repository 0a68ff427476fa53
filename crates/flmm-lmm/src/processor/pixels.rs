//! The shared last step of both processors: uint8 RGB → rescaled, normalised f32, channels first.

use image::RgbImage;

use super::config::ProcessorConfig;

/// Per-channel lookup of the 256 possible output values, computed with Hugging Face 4.39's arithmetic:
/// `rescale` multiplies in f64 and casts to f32; `normalize` subtracts and divides in f32 with the
/// mean/std cast to f32. Identical to numpy bit for bit.
pub(crate) struct Normalizer {
    lut: [[f32; 256]; 3],
}

impl Normalizer {
    pub(crate) fn new(cfg: &ProcessorConfig) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            let (mean, std) = (cfg.image_mean[c] as f32, cfg.image_std[c] as f32);
            for (v, out) in table.iter_mut().enumerate() {
                let x = if cfg.do_rescale { (v as f64 * cfg.rescale_factor) as f32 } else { v as f32 };
                *out = if cfg.do_normalize { (x - mean) / std } else { x };
            }
        }
        Normalizer { lut }
    }

    /// Append the `height`×`width` window of `canvas` at (`top`, `left`) as CHW f32 to `out`.
    /// The window must lie inside the canvas (callers guarantee it).
    pub(crate) fn push_chw(&self, canvas: &RgbImage, top: u32, left: u32, height: u32, width: u32, out: &mut Vec<f32>) {
        let stride = canvas.width() as usize * 3;
        let raw = canvas.as_raw();
        for (c, table) in self.lut.iter().enumerate() {
            for y in top as usize..(top + height) as usize {
                let row = &raw[y * stride..(y + 1) * stride];
                out.extend(
                    row[left as usize * 3..(left + width) as usize * 3]
                        .iter()
                        .skip(c)
                        .step_by(3)
                        .map(|&v| table[v as usize]),
                );
            }
        }
    }
}

/// A `width`×`height` canvas filled with `fill`, with `img` pasted at (`top`, `left`) (clipped to the canvas).
pub(crate) fn paste_on_canvas(img: &RgbImage, width: u32, height: u32, top: u32, left: u32, fill: [u8; 3]) -> RgbImage {
    let mut canvas = RgbImage::from_pixel(width, height, image::Rgb(fill));
    let cols = img.width().min(width.saturating_sub(left)) as usize;
    let rows = img.height().min(height.saturating_sub(top));
    let (src_stride, dst_stride) = (img.width() as usize * 3, width as usize * 3);
    let src = img.as_raw();
    let dst: &mut [u8] = &mut canvas;
    for y in 0..rows as usize {
        let s = &src[y * src_stride..y * src_stride + cols * 3];
        let d0 = (top as usize + y) * dst_stride + left as usize * 3;
        dst[d0..d0 + cols * 3].copy_from_slice(s);
    }
    canvas
}

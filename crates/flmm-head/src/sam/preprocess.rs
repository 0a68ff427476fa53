//! SAM's input pipeline: `ResizeLongestSide` (PIL bilinear, sides rounded half up), pixel
//! normalization, zero padding to the square input; and coordinate mapping into that frame.

use candle_core::{Device, Tensor};
use flmm_data::resample::{resize_rgb8, Filter};
use image::RgbImage;

use crate::error::HeadError;

/// SAM's pixel mean (RGB, 0–255).
pub const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
/// SAM's pixel standard deviation (RGB, 0–255).
pub const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// Sizes involved in one image's trip through SAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamGeometry {
    /// Original `(height, width)`.
    pub original: (usize, usize),
    /// After `ResizeLongestSide`, before padding.
    pub resized: (usize, usize),
    /// The square encoder input side.
    pub input: usize,
}

impl SamGeometry {
    /// `ResizeLongestSide.get_preprocess_shape`: scale the longest side to `input`, round half up.
    pub fn new(original: (usize, usize), input: usize) -> Result<Self, HeadError> {
        let (h, w) = original;
        if h == 0 || w == 0 {
            return Err(HeadError::InvalidInput(format!("image is empty ({w}x{h})")));
        }
        let scale = input as f64 / h.max(w) as f64;
        let resized = (((h as f64 * scale) + 0.5) as usize, ((w as f64 * scale) + 0.5) as usize);
        if resized.0 == 0 || resized.1 == 0 {
            return Err(HeadError::InvalidInput(format!("image {w}x{h} is too thin to resize to a {input}-pixel side")));
        }
        Ok(Self { original, resized, input })
    }

    /// Maps a point from original pixels to the input frame (`apply_coords`).
    pub fn map_point(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.resized.1 as f64 / self.original.1 as f64;
        let sy = self.resized.0 as f64 / self.original.0 as f64;
        ((x as f64 * sx) as f32, (y as f64 * sy) as f32)
    }

    /// Maps a box `[x0, y0, x1, y1]` from original pixels to the input frame (`apply_boxes`).
    pub fn map_box(&self, b: [f32; 4]) -> [f32; 4] {
        let (x0, y0) = self.map_point(b[0], b[1]);
        let (x1, y1) = self.map_point(b[2], b[3]);
        [x0, y0, x1, y1]
    }
}

/// `[1, 3, input, input]` f32: resized with PIL's bilinear filter, normalized, zero-padded bottom/right.
pub fn preprocess(image: &RgbImage, input: usize, device: &Device) -> Result<(Tensor, SamGeometry), HeadError> {
    let geometry = SamGeometry::new((image.height() as usize, image.width() as usize), input)?;
    let (rh, rw) = geometry.resized;
    let resized = resize_rgb8(image, rw as u32, rh as u32, Filter::Bilinear);
    let mut data = vec![0f32; 3 * input * input];
    for (x, y, p) in resized.enumerate_pixels() {
        for c in 0..3 {
            data[c * input * input + y as usize * input + x as usize] = (p[c] as f32 - PIXEL_MEAN[c]) / PIXEL_STD[c];
        }
    }
    Ok((Tensor::from_vec(data, (1, 3, input, input), device)?, geometry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_side_rounds_half_up() {
        let g = SamGeometry::new((150, 200), 1024).unwrap();
        assert_eq!(g.resized, (768, 1024));
        let g = SamGeometry::new((3, 2), 1024).unwrap();
        assert_eq!(g.resized, (1024, 683)); // 682.67 → 683
        assert!(SamGeometry::new((0, 5), 1024).is_err());
    }

    #[test]
    fn padding_is_zero_and_pixels_are_normalized() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([124, 116, 104]));
        let (t, g) = preprocess(&img, 8, &Device::Cpu).unwrap();
        assert_eq!(g.resized, (4, 8));
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - (124.0 - 123.675) / 58.395).abs() < 1e-6);
        assert_eq!(v[5 * 8], 0.0, "row 5 is padding");
    }
}

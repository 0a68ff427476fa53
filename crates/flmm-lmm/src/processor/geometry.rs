//! `ImageGeometry`: where the image sits inside the processor's padded input, and how to map a
//! mask-sized map back to the image region (F-LMM's `crop_to_unpadded_image`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::error::{ProcessorError, Result};

/// A (height, width) pair, serialised as `{"height": h, "width": w}` like F-LMM's meta data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size2 {
    /// Height in pixels.
    pub height: u32,
    /// Width in pixels.
    pub width: u32,
}

/// Padding added around the resized image, in pixels of the padded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Padding {
    /// Rows above the image.
    pub before_height: u32,
    /// Rows below the image.
    pub after_height: u32,
    /// Columns left of the image.
    pub before_width: u32,
    /// Columns right of the image.
    pub after_width: u32,
}

impl Padding {
    /// `pad_h` rows and `pad_w` columns split around the image as F-LMM's processors do:
    /// `before = pad / 2`, `after = pad − before`.
    pub fn centred(pad_h: u32, pad_w: u32) -> Self {
        Self { before_height: pad_h / 2, after_height: pad_h - pad_h / 2, before_width: pad_w / 2, after_width: pad_w - pad_w / 2 }
    }
}

/// The geometry of one processed image, matching F-LMM's `meta_datas[0]` (spec §5.3) plus the
/// original size. All but `original` are in the processor's resized frame:
/// `padded_shape = image_shape + padding` in each dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGeometry {
    /// The original image size (`image_sizes[0]`), before any resizing.
    #[serde(rename = "ori_shape")]
    pub original: Size2,
    /// The resized image inside the padded canvas.
    pub image_shape: Size2,
    /// The padded canvas (LLaVA-1.5: S×S; LLaVA-NeXT: the best resolution).
    pub padded_shape: Size2,
    /// Padding around the resized image (`before = pad / 2`, `after = pad - before`).
    pub padding: Padding,
}

/// A rectangle of a map: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Number of rows.
    pub height: usize,
    /// Number of columns.
    pub width: usize,
}

/// `int(a * m / p)` with Python semantics: exact integer product, correctly rounded true division,
/// truncation (all values are non-negative).
fn scaled(a: u32, m: usize, p: u32) -> f64 {
    (a as f64 * m as f64) / p as f64
}

impl ImageGeometry {
    /// The region of a `map_h`×`map_w` map (covering the whole padded canvas) that shows the image,
    /// with the arithmetic of F-LMM's `crop_to_unpadded_image`:
    ///
    /// ```text
    /// top  = int(before_height * Hm / ph)        left  = int(before_width * Wm / pw)
    /// rows = int(image_h * Hm / ph + 0.5)        cols  = int(image_w * Wm / pw + 0.5)
    /// ```
    ///
    /// and the end clamped to the map as Python slicing does. An empty region is an error.
    pub fn unpadded_region(&self, map_h: usize, map_w: usize) -> Result<CropRect> {
        let bad = |message: String| ProcessorError::BadCrop { map_height: map_h, map_width: map_w, message };
        let (ph, pw) = (self.padded_shape.height, self.padded_shape.width);
        if ph == 0 || pw == 0 {
            return Err(bad(format!("padded shape {ph}x{pw} is empty")));
        }
        let top = scaled(self.padding.before_height, map_h, ph) as usize;
        let left = scaled(self.padding.before_width, map_w, pw) as usize;
        let rows = (scaled(self.image_shape.height, map_h, ph) + 0.5) as usize;
        let cols = (scaled(self.image_shape.width, map_w, pw) + 0.5) as usize;
        let height = (top + rows).min(map_h).saturating_sub(top);
        let width = (left + cols).min(map_w).saturating_sub(left);
        if height == 0 || width == 0 {
            return Err(bad(format!(
                "the image region ({}x{} of a {ph}x{pw} canvas) maps to {height}x{width} cells",
                self.image_shape.height, self.image_shape.width
            )));
        }
        Ok(CropRect { top, left, height, width })
    }

    /// Crop the last two dimensions of `map` (`[..., Hm, Wm]`, covering the padded canvas) to the
    /// image region given by [`ImageGeometry::unpadded_region`].
    pub fn crop_to_unpadded(&self, map: &Tensor) -> Result<Tensor> {
        let rank = map.rank();
        if rank < 2 {
            return Err(ProcessorError::BadCrop {
                map_height: 0,
                map_width: 0,
                message: format!("expected a tensor with at least 2 dimensions, got shape {:?}", map.dims()),
            });
        }
        let (hm, wm) = (map.dims()[rank - 2], map.dims()[rank - 1]);
        let r = self.unpadded_region(hm, wm)?;
        Ok(map.narrow(rank - 2, r.top, r.height)?.narrow(rank - 1, r.left, r.width)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn geom(img: (u32, u32), pad: (u32, u32, u32, u32), padded: (u32, u32)) -> ImageGeometry {
        ImageGeometry {
            original: Size2 { height: 1, width: 1 },
            image_shape: Size2 { height: img.0, width: img.1 },
            padded_shape: Size2 { height: padded.0, width: padded.1 },
            padding: Padding { before_height: pad.0, after_height: pad.1, before_width: pad.2, after_width: pad.3 },
        }
    }

    #[test]
    fn crop_arithmetic_matches_the_spec() {
        // 336x201 image centred in 336x336, 64x64 map:
        // top = int(0*64/336) = 0, left = int(67*64/336) = int(12.76) = 12
        // rows = int(336*64/336 + .5) = 64, cols = int(201*64/336 + .5) = int(38.79) = 38
        let g = geom((336, 201), (0, 0, 67, 68), (336, 336));
        assert_eq!(g.unpadded_region(64, 64).unwrap(), CropRect { top: 0, left: 12, height: 64, width: 38 });
        // a region running past the map end (inconsistent geometry) is clamped, as Python slicing does:
        // top = int(5*3/15) = 1, rows = int(15*3/15 + .5) = 3 -> rows 1..3
        let g = geom((15, 10), (5, 0, 0, 0), (15, 10));
        assert_eq!(g.unpadded_region(3, 2).unwrap(), CropRect { top: 1, left: 0, height: 2, width: 2 });
    }

    #[test]
    fn crop_tensor_and_errors() {
        let g = geom((336, 201), (0, 0, 67, 68), (336, 336));
        let t = Tensor::arange(0f32, (2 * 64 * 64) as f32, &Device::Cpu).unwrap().reshape((2, 64, 64)).unwrap();
        let c = g.crop_to_unpadded(&t).unwrap();
        assert_eq!(c.dims(), &[2, 64, 38]);
        assert_eq!(
            c.get(1).unwrap().get(0).unwrap().get(0).unwrap().to_scalar::<f32>().unwrap(),
            (64 * 64 + 12) as f32
        );
        let thin = geom((336, 1), (0, 0, 167, 168), (336, 336));
        assert!(thin.unpadded_region(24, 24).is_err());
        assert!(g.crop_to_unpadded(&Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
    }
}

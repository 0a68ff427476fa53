//! Attention heatmaps drawn over the photo: a coarse map on the processor's frame is sampled
//! bilinearly at every image pixel, normalized to [0, 1], coloured and blended with the image.

use image::{Rgb, RgbImage};

/// Where a map lies relative to the image: the map covers a `frame_h × frame_w` frame, of which the
/// rectangle `(top, left, height, width)` (frame units) shows the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapPlacement {
    /// Frame height.
    pub frame_h: f64,
    /// Frame width.
    pub frame_w: f64,
    /// Top of the image in the frame.
    pub top: f64,
    /// Left of the image in the frame.
    pub left: f64,
    /// Height of the image in the frame.
    pub height: f64,
    /// Width of the image in the frame.
    pub width: f64,
}

impl MapPlacement {
    /// The map covers exactly the image.
    pub fn whole() -> Self {
        Self { frame_h: 1.0, frame_w: 1.0, top: 0.0, left: 0.0, height: 1.0, width: 1.0 }
    }
}

/// Samples `map` (`map_h × map_w`, row-major) at every pixel of a `out_h × out_w` image.
pub fn map_to_image(map: &[f32], map_h: usize, map_w: usize, place: MapPlacement, out_h: u32, out_w: u32) -> Vec<f32> {
    let sample_axis = |i: u32, n: u32, start: f64, len: f64, frame: f64, cells: usize| -> (usize, usize, f32) {
        let frame_pos = start + (i as f64 + 0.5) * len / n as f64;
        let g = (frame_pos * cells as f64 / frame - 0.5).clamp(0.0, (cells - 1) as f64);
        let lo = g.floor() as usize;
        let hi = (lo + 1).min(cells - 1);
        (lo, hi, (g - lo as f64) as f32)
    };
    let cols: Vec<_> = (0..out_w).map(|x| sample_axis(x, out_w, place.left, place.width, place.frame_w, map_w)).collect();
    let mut out = Vec::with_capacity((out_h * out_w) as usize);
    for y in 0..out_h {
        let (y0, y1, fy) = sample_axis(y, out_h, place.top, place.height, place.frame_h, map_h);
        for &(x0, x1, fx) in &cols {
            let a = map[y0 * map_w + x0] * (1.0 - fx) + map[y0 * map_w + x1] * fx;
            let b = map[y1 * map_w + x0] * (1.0 - fx) + map[y1 * map_w + x1] * fx;
            out.push(a * (1.0 - fy) + b * fy);
        }
    }
    out
}

/// A perceptually ordered dark-blue → red → yellow colour ramp for `t` in [0, 1].
fn ramp(t: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] = [[0.05, 0.03, 0.25], [0.35, 0.05, 0.55], [0.80, 0.15, 0.35], [0.98, 0.55, 0.10], [0.99, 0.95, 0.45]];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    std::array::from_fn(|c| STOPS[i][c] * (1.0 - f) + STOPS[i + 1][c] * f)
}

/// Blends the min–max normalized `values` (one per pixel) over `image` with weight `alpha`.
pub fn overlay(image: &RgbImage, values: &[f32], alpha: f32) -> RgbImage {
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut out = image.clone();
    for (pixel, &v) in out.pixels_mut().zip(values) {
        let colour = ramp((v - lo) / span);
        let Rgb(p) = *pixel;
        *pixel = Rgb(std::array::from_fn(|c| ((1.0 - alpha) * p[c] as f32 + alpha * 255.0 * colour[c]).round().clamp(0.0, 255.0) as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_a_constant_or_a_ramp() {
        let v = map_to_image(&[2.0; 4], 2, 2, MapPlacement::whole(), 3, 5);
        assert!(v.iter().all(|&x| (x - 2.0).abs() < 1e-6));
        // Left column 0, right column 1: the left half of the output is darker than the right half.
        let v = map_to_image(&[0.0, 1.0, 0.0, 1.0], 2, 2, MapPlacement::whole(), 1, 8);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[7], 1.0);
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn placement_crops_the_padding() {
        // Map of a 4-high frame whose rows 1..3 show the image; row 0 and 3 are padding (value 9).
        let map = [9.0, 1.0, 2.0, 9.0];
        let place = MapPlacement { frame_h: 4.0, frame_w: 1.0, top: 1.0, left: 0.0, height: 2.0, width: 1.0 };
        let v = map_to_image(&map, 4, 1, place, 2, 1);
        assert_eq!(v, [1.0, 2.0]);
    }

    #[test]
    fn overlay_keeps_size_and_marks_the_peak() {
        let img = RgbImage::from_pixel(2, 1, Rgb([100, 100, 100]));
        let out = overlay(&img, &[0.0, 1.0], 0.5);
        assert_eq!(out.dimensions(), (2, 1));
        assert!(out.get_pixel(1, 0)[0] > out.get_pixel(0, 0)[0]);
    }
}

//! Resizing of 8-bit RGB images, bit-exact with Pillow's `Image.resize((w, h), resample=...)` for
//! `NEAREST`, `BILINEAR` and `BICUBIC` with default arguments (no `box`, `reducing_gap=None`).
//!
//! Hugging Face image processors hand PIL's uint8 output to the model, so matching it bit for bit is
//! the only way to feed a frozen backbone exactly the pixels it was evaluated with. The algorithm
//! below is written from the facts of Pillow's `libImaging/Resample.c` and `Geometry.c`:
//!
//! * Same size in both dimensions: a copy.
//! * `NEAREST`: source index `(int)(scale * 0.5 + k * scale)` with `scale = in / out` in `f64`, where
//!   the position is *accumulated* (`pos += scale` per output pixel), exactly as Pillow does.
//! * Convolution filters: separable, two passes, each rounding to `u8`; a pass is skipped when that
//!   dimension keeps its size. Order: **horizontal first**, except (new in Pillow 13's
//!   `ImagingResampleInner`) when `in_h - h > 0 && in_h - h > 2 * (in_w - w)`: then vertical first. Older
//!   Pillow releases always ran the horizontal pass first, so their output differs for such sizes.
//!   - `scale = in / out`, `filterscale = max(scale, 1)`, `support = filter_support * filterscale`
//!     (bilinear 1, bicubic 2); output pixel `i` is centred at `(i + 0.5) * scale`; its taps are
//!     `xmin = trunc(center - support + 0.5)` clamped to 0 up to `trunc(center + support + 0.5)` clamped
//!     to `in`; weight `filter((x - center + 0.5) / filterscale)`, then divided by their sum (if non-zero).
//!   - Bicubic uses `a = -0.5`.
//!   - Fixed point: `PRECISION_BITS = 22`; each weight becomes `trunc(w * 2^22 ± 0.5)` (sign of `w`);
//!     the accumulator starts at `2^21` (rounding), and the result is `clamp(acc >> 22, 0, 255)` with an
//!     arithmetic (flooring) shift.

use image::RgbImage;

/// A resampling filter, named as in Pillow (`Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.NEAREST` (0): nearest neighbour, no interpolation.
    Nearest,
    /// `Image.BILINEAR` (2): triangle filter, support 1 (widened when downscaling).
    Bilinear,
    /// `Image.BICUBIC` (3): Keys cubic with `a = -0.5`, support 2 (widened when downscaling).
    Bicubic,
}

impl Filter {
    /// The filter for a Pillow / Hugging Face `resample` id (0, 2 or 3); `None` for the others
    /// (LANCZOS = 1, BOX = 4, HAMMING = 5), which this crate does not implement.
    pub fn from_pil_id(id: i64) -> Option<Filter> {
        match id {
            0 => Some(Filter::Nearest),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    /// The Pillow / Hugging Face `resample` id of the filter.
    pub fn pil_id(self) -> i64 {
        match self {
            Filter::Nearest => 0,
            Filter::Bilinear => 2,
            Filter::Bicubic => 3,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Nearest => 0.0,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = if x < 0.0 { -x } else { x };
        match self {
            Filter::Nearest => 0.0,
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                // Same operation order as Pillow (a = -0.5), so the doubles agree bit for bit.
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resize `img` to `width` × `height` exactly as Pillow's `Image.resize((width, height), filter)` does
/// for an RGB image. A zero target dimension (or an empty source) yields an empty image of the
/// requested size instead of failing; callers that need a real image check sizes first.
pub fn resize_rgb8(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (width, height) {
        return img.clone();
    }
    if width == 0 || height == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(width, height);
    }
    match filter {
        Filter::Nearest => resize_nearest(img, width, height),
        Filter::Bilinear | Filter::Bicubic => resize_convolve(img, width, height, filter),
    }
}

/// Pillow's `ImagingScaleAffine` (nearest neighbour with an accumulated `f64` position). `None` marks a
/// position outside the source, which Pillow fills with black (it cannot happen for a plain resize).
fn nearest_indices(in_size: u32, out_size: u32) -> Vec<Option<usize>> {
    let scale = in_size as f64 / out_size as f64;
    let mut pos = scale * 0.5;
    let mut out = Vec::with_capacity(out_size as usize);
    for _ in 0..out_size {
        // COORD(v) = v < 0 ? -1 : (int)v
        let i = if pos < 0.0 { -1 } else { pos as i64 };
        out.push((0..in_size as i64).contains(&i).then_some(i as usize));
        pos += scale;
    }
    out
}

fn resize_nearest(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let xs = nearest_indices(img.width(), width);
    let ys = nearest_indices(img.height(), height);
    let src = img.as_raw();
    let in_stride = img.width() as usize * 3;
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for &y in &ys {
        let Some(y) = y else {
            out.resize(out.len() + width as usize * 3, 0);
            continue;
        };
        let row = &src[y * in_stride..(y + 1) * in_stride];
        for &x in &xs {
            match x {
                Some(x) => out.extend_from_slice(&row[x * 3..x * 3 + 3]),
                None => out.extend_from_slice(&[0, 0, 0]),
            }
        }
    }
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

/// Fixed-point taps of one output pixel: the first source index and one weight per tap.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`.
fn precompute_taps(in_size: u32, out_size: u32, filter: Filter) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    let one = (1i64 << PRECISION_BITS) as f64;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; then clamp into the image.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).max(0) as usize;
            let mut w: Vec<f64> =
                (0..count).map(|x| filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().fold(0.0, |acc, v| acc + v);
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            let weights =
                w.iter().map(|&v| if v < 0.0 { (-0.5 + v * one) as i32 } else { (0.5 + v * one) as i32 }).collect();
            Taps { start: xmin as usize, weights }
        })
        .collect()
}

#[inline]
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over rows `rows` of `src` (`w` pixels wide, RGB interleaved).
fn horizontal(src: &[u8], w: usize, rows: std::ops::Range<usize>, taps: &[Taps]) -> Vec<u8> {
    let out_w = taps.len();
    let mut out = Vec::with_capacity(out_w * rows.len() * 3);
    for y in rows {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for t in taps {
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (k, &wt) in t.weights.iter().enumerate() {
                let p = (t.start + k) * 3;
                let wt = wt as i64;
                r += row[p] as i64 * wt;
                g += row[p + 1] as i64 * wt;
                b += row[p + 2] as i64 * wt;
            }
            out.extend_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

/// Vertical pass: `src` is `w` pixels wide; tap starts are relative to row `row_offset` of `src`.
fn vertical(src: &[u8], w: usize, row_offset: usize, taps: &[Taps]) -> Vec<u8> {
    let stride = w * 3;
    let mut out = Vec::with_capacity(stride * taps.len());
    let mut acc = vec![0i64; stride];
    for t in taps {
        acc.iter_mut().for_each(|a| *a = HALF);
        for (k, &wt) in t.weights.iter().enumerate() {
            let y = t.start + k - row_offset;
            let row = &src[y * stride..(y + 1) * stride];
            let wt = wt as i64;
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i64 * wt;
            }
        }
        out.extend(acc.iter().map(|&a| clip8(a)));
    }
    out
}

fn resize_convolve(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    let need_h = width != in_w;
    let need_v = height != in_h;
    let (dx, dy) = (in_w as i64 - width as i64, in_h as i64 - height as i64);
    // Pillow >= 13: when the height shrinks by more than twice as much as the width, the vertical pass
    // runs first (to make the horizontal pass cheaper). The order changes the intermediate rounding.
    let vertical_first = dy > 0 && dy > 2 * dx;

    let mut data = img.as_raw().clone();
    let mut w = in_w as usize;
    if vertical_first {
        // need_v is true here (dy > 0)
        let vtaps = precompute_taps(in_h, height, filter);
        data = vertical(&data, w, 0, &vtaps);
        if need_h {
            data = horizontal(&data, w, 0..height as usize, &precompute_taps(in_w, width, filter));
            w = width as usize;
        }
    } else {
        let vtaps = precompute_taps(in_h, height, filter);
        // Rows of the source the vertical pass will read (Pillow only resamples those horizontally).
        let first = vtaps.first().map_or(0, |t| t.start);
        let last = vtaps.last().map_or(0, |t| t.start + t.weights.len());
        let mut offset = 0usize;
        if need_h {
            let rows = if need_v { first..last } else { 0..in_h as usize };
            offset = rows.start;
            data = horizontal(&data, w, rows, &precompute_taps(in_w, width, filter));
            w = width as usize;
        }
        if need_v {
            data = vertical(&data, w, offset, &vtaps);
        }
    }
    debug_assert_eq!(w, width as usize);
    RgbImage::from_raw(width, height, data).unwrap_or_else(|| RgbImage::new(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant_images() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 200]));
        assert_eq!(resize_rgb8(&img, 7, 5, Filter::Bicubic), img);
        let flat = RgbImage::from_pixel(9, 4, image::Rgb([17, 128, 255]));
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
            for (w, h) in [(1, 1), (3, 11), (20, 2), (9, 9)] {
                let out = resize_rgb8(&flat, w, h, f);
                assert_eq!(out.dimensions(), (w, h));
                assert!(out.pixels().all(|p| p.0 == [17, 128, 255]), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn zero_sized_target_is_empty_not_a_panic() {
        let img = RgbImage::new(4, 4);
        assert_eq!(resize_rgb8(&img, 0, 3, Filter::Bicubic).dimensions(), (0, 3));
        assert_eq!(resize_rgb8(&RgbImage::new(0, 0), 2, 2, Filter::Nearest).dimensions(), (2, 2));
    }

    #[test]
    fn bicubic_weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(10u32, 3u32), (3, 10), (336, 56), (1, 7)] {
            for t in precompute_taps(i, o, Filter::Bicubic) {
                let s: i32 = t.weights.iter().sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i32, "{i}->{o}: {s}");
            }
        }
    }
}

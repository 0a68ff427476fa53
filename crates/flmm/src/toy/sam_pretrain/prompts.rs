//! The prompts of SAM's promptable-segmentation training, drawn for one toy object from a seeded RNG:
//! a jittered box, a positive point (sometimes with a negative one), or F-LMM's refiner prompt — a box
//! and a coarse mask made to look like a U-Net's low-resolution logits.

use candle_core::{Device, Tensor};
use flmm_data::toy::ToyObject;
use flmm_head::sam::preprocess::SamGeometry;
use flmm_head::sam::prompt_encoder::{PointPrompt, Prompts};
use flmm_head::sam::refiner::{box_prompts, dense_prompts};
use flmm_head::sam::Sam;
use flmm_head::HeadError;
use flmm_nn::rng::Rng;
use serde::Serialize;

/// Each box side moves by up to this fraction of the box's width / height (SAM trains with ~10 %).
const BOX_JITTER: f64 = 0.1;
/// Chance that a point prompt also carries one negative point.
const NEGATIVE_POINT_CHANCE: f64 = 0.5;
/// Negative points are drawn from the object's box grown by this fraction of its side on every side.
const NEGATIVE_MARGIN: f64 = 0.25;
/// Side range of the coarse (U-Net-like) logit grid over the scene.
const COARSE_SIDES: std::ops::RangeInclusive<usize> = 12..=32;

/// What a prompt consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// The object's box, jittered in training.
    Box,
    /// One positive point inside the visible mask (in training sometimes plus a negative point).
    Point,
    /// F-LMM's refiner prompt: a coarse mask of logits and the box of its binarized pixels.
    BoxMask,
}

impl PromptKind {
    /// Every kind, in report order.
    pub const ALL: [PromptKind; 3] = [PromptKind::Box, PromptKind::Point, PromptKind::BoxMask];

    /// Short name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            PromptKind::Box => "box",
            PromptKind::Point => "point",
            PromptKind::BoxMask => "box_mask",
        }
    }
}

/// Whether the prompt is for training (jittered boxes, optional negative points) or evaluation (exact
/// boxes, one positive point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Training prompts.
    Train,
    /// Evaluation prompts.
    Eval,
}

/// The box `[x0, y0, x1, y1]` (x1, y1 exclusive) of the pixels set in a row-major mask of width `w`.
pub fn mask_box(mask: &[u8], w: usize) -> Option<[f32; 4]> {
    let mut b: Option<[usize; 4]> = None;
    for (k, _) in mask.iter().enumerate().filter(|(_, &v)| v != 0) {
        let (x, y) = (k % w, k / w);
        let r = b.get_or_insert([x, y, x, y]);
        *r = [r[0].min(x), r[1].min(y), r[2].max(x), r[3].max(y)];
    }
    b.map(|[x0, y0, x1, y1]| [x0 as f32, y0 as f32, (x1 + 1) as f32, (y1 + 1) as f32])
}

/// Moves every side of `b` by a uniform amount in ±[`BOX_JITTER`] of the box's side, inside `(w, h)`,
/// keeping at least one pixel.
fn jitter_box(b: [f32; 4], (w, h): (usize, usize), rng: &mut Rng) -> [f32; 4] {
    let (bw, bh) = ((b[2] - b[0]) as f64, (b[3] - b[1]) as f64);
    let mut shift = |side: f64| ((2.0 * rng.uniform() - 1.0) * BOX_JITTER * side) as f32;
    let x0 = (b[0] + shift(bw)).clamp(0.0, w as f32 - 1.0);
    let y0 = (b[1] + shift(bh)).clamp(0.0, h as f32 - 1.0);
    let x1 = (b[2] + shift(bw)).clamp(x0 + 1.0, w as f32);
    let y1 = (b[3] + shift(bh)).clamp(y0 + 1.0, h as f32);
    [x0, y0, x1, y1]
}

/// A uniformly drawn pixel `(x, y)` among those where `pick(k)` holds, if any.
fn random_pixel(n: usize, w: usize, rng: &mut Rng, pick: impl Fn(usize) -> bool) -> Option<(f32, f32)> {
    let candidates: Vec<usize> = (0..n).filter(|&k| pick(k)).collect();
    (!candidates.is_empty()).then(|| {
        let k = candidates[rng.below(candidates.len())];
        ((k % w) as f32, (k / w) as f32)
    })
}

/// Logits `[1, r, r]` over the scene that look like a U-Net's: the mask's area coverage on an `r × r`
/// grid (r drawn from [`COARSE_SIDES`]) displaced by up to half a cell, binarized at a random level
/// between 0.3 and 0.7 with a random steepness, plus per-cell noise small enough that empty cells stay
/// negative (a speckle far away would blow up the box F-LMM derives from the mask). `sigmoid > 0.5` is
/// then a blocky, slightly shifted, grown or shrunk, sometimes holed version of the object.
pub fn coarse_logits(mask: &[u8], (w, h): (usize, usize), rng: &mut Rng) -> candle_core::Result<Tensor> {
    let r = *COARSE_SIDES.start() + rng.below(COARSE_SIDES.end() - COARSE_SIDES.start() + 1);
    let offset = |rng: &mut Rng, side: usize| ((rng.uniform() - 0.5) * side as f64 / r as f64).round() as isize;
    let (dx, dy) = (offset(rng, w), offset(rng, h));
    let level = 0.3 + 0.4 * rng.uniform();
    let gain = 4.0 + 8.0 * rng.uniform();
    let noise = 0.4 * gain * level * rng.uniform();
    let mut out = Vec::with_capacity(r * r);
    for i in 0..r {
        let (y0, y1) = (i * h / r, ((i + 1) * h).div_ceil(r));
        for j in 0..r {
            let (x0, x1) = (j * w / r, ((j + 1) * w).div_ceil(r));
            let mut covered = 0usize;
            for y in y0..y1 {
                for x in x0..x1 {
                    let (sy, sx) = (y as isize + dy, x as isize + dx);
                    let inside = sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w;
                    covered += (inside && mask[sy as usize * w + sx as usize] != 0) as usize;
                }
            }
            let p = covered as f64 / ((y1 - y0) * (x1 - x0)) as f64;
            out.push((gain * (p - level) + noise * rng.normal().clamp(-2.0, 2.0)) as f32);
        }
    }
    Tensor::from_vec(out, (1, r, r), &Device::Cpu)
}

/// SAM prompts (in the encoder's input frame) of kind `kind` for `object` of a `(w, h)` scene.
pub fn draw(kind: PromptKind, purpose: Purpose, object: &ToyObject, (w, h): (usize, usize), rng: &mut Rng, sam: &Sam, geometry: &SamGeometry) -> Result<Prompts, HeadError> {
    let gt_box = mask_box(&object.mask, w).ok_or_else(|| HeadError::InvalidInput("a toy object without visible pixels".into()))?;
    Ok(match kind {
        PromptKind::Box => {
            let b = if purpose == Purpose::Train { jitter_box(gt_box, (w, h), rng) } else { gt_box };
            Prompts { bbox: Some(geometry.map_box(b)), ..Default::default() }
        }
        PromptKind::Point => {
            let n = w * h;
            let (x, y) = random_pixel(n, w, rng, |k| object.mask[k] != 0).expect("the box exists, so a pixel does");
            let mut points = vec![(x, y, 1)];
            if purpose == Purpose::Train && rng.uniform() < NEGATIVE_POINT_CHANCE {
                let [x0, y0, x1, y1] = gt_box.map(|v| v as f64);
                let (mx, my) = ((x1 - x0) * NEGATIVE_MARGIN, (y1 - y0) * NEGATIVE_MARGIN);
                let near = |k: usize| {
                    let (px, py) = ((k % w) as f64, (k / w) as f64);
                    object.mask[k] == 0 && px >= x0 - mx && px < x1 + mx && py >= y0 - my && py < y1 + my
                };
                points.extend(random_pixel(n, w, rng, near).map(|(x, y)| (x, y, 0)));
            }
            let points = points
                .into_iter()
                .map(|(x, y, label)| {
                    let (x, y) = geometry.map_point(x, y);
                    PointPrompt { x, y, label }
                })
                .collect();
            Prompts { points, ..Default::default() }
        }
        PromptKind::BoxMask => {
            let logits = coarse_logits(&object.mask, (w, h), rng)?;
            let bbox = box_prompts(&logits, geometry)?[0];
            Prompts { bbox: Some(bbox), mask: Some(dense_prompts(sam, &logits, geometry)?), ..Default::default() }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square_mask() -> Vec<u8> {
        // 16×16 image, object = rows 4..10, columns 2..8.
        (0..256).map(|k| ((4..10).contains(&(k / 16)) && (2..8).contains(&(k % 16))) as u8).collect()
    }

    #[test]
    fn mask_box_is_exclusive_and_jitter_stays_close() {
        let b = mask_box(&square_mask(), 16).unwrap();
        assert_eq!(b, [2.0, 4.0, 8.0, 10.0]);
        assert!(mask_box(&[0; 4], 2).is_none());
        let mut rng = Rng::new(1);
        for _ in 0..100 {
            let j = jitter_box(b, (16, 16), &mut rng);
            for (a, c) in j.iter().zip(&b) {
                assert!((a - c).abs() <= 0.6 + 1e-6, "{j:?}");
            }
        }
    }

    #[test]
    fn coarse_logits_cover_the_object() {
        let mut mask = vec![0u8; 128 * 128];
        for y in 40..80 {
            for x in 30..70 {
                mask[y * 128 + x] = 1;
            }
        }
        let mut rng = Rng::new(4);
        for _ in 0..10 {
            let t = coarse_logits(&mask, (128, 128), &mut rng).unwrap();
            let (_, r, _) = t.dims3().unwrap();
            assert!(COARSE_SIDES.contains(&r));
            let v: Vec<Vec<f32>> = t.squeeze(0).unwrap().to_vec2().unwrap();
            let centre = r * 60 / 128;
            assert!(v[centre][centre * 50 / 60] > 0.0, "the object's centre is foreground");
            assert!(v[0][r - 1] < 0.0 && v[r - 1][0] < 0.0, "far corners are background");
        }
    }
}

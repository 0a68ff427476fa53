//! Evaluation metrics of F-LMM (spec §2.2, §6): pixel accuracy, aIoU, RefCOCO cIoU/mIoU and the
//! Panoptic Narrative Grounding average recall with its singular/plural and thing/stuff splits.

use serde::{Deserialize, Serialize};

/// Pixel counts of one predicted binary mask against its ground truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskCounts {
    /// |pred ∧ gt|
    pub intersection: u64,
    /// |pred ∨ gt|
    pub union: u64,
    /// pixels where pred == gt
    pub correct: u64,
    /// all pixels
    pub pixels: u64,
}

impl MaskCounts {
    /// Counts for two equally sized binary masks.
    pub fn new(pred: &[bool], gt: &[bool]) -> Self {
        assert_eq!(pred.len(), gt.len(), "prediction and ground truth differ in size");
        let mut c = MaskCounts { pixels: pred.len() as u64, ..Default::default() };
        for (&p, &g) in pred.iter().zip(gt) {
            c.intersection += (p && g) as u64;
            c.union += (p || g) as u64;
            c.correct += (p == g) as u64;
        }
        c
    }

    /// `I / (U + 1e-12)`, the IoU as F-LMM computes it (0 for two empty masks).
    pub fn iou(&self) -> f64 {
        self.intersection as f64 / (self.union as f64 + 1e-12)
    }

    /// Fraction of pixels classified correctly.
    pub fn pixel_accuracy(&self) -> f64 {
        self.correct as f64 / self.pixels.max(1) as f64
    }
}

/// Binarizes logits as F-LMM does, `sigmoid(x) > 0.5` in f32 (a logit of +1e-8 stays 0: its f32
/// sigmoid is exactly 0.5).
pub fn binarize_logits(logits: &[f32]) -> Vec<bool> {
    logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp()) > 0.5).collect()
}

/// Training-log statistics over the N masks of one sample: `accuracy` over all pixels of all masks
/// and `aiou` = mean over masks of `I/(U+1e-12)`.
pub fn accuracy_and_aiou(masks: &[MaskCounts]) -> (f64, f64) {
    let correct: u64 = masks.iter().map(|m| m.correct).sum();
    let pixels: u64 = masks.iter().map(|m| m.pixels).sum();
    let aiou = masks.iter().map(MaskCounts::iou).sum::<f64>() / masks.len().max(1) as f64;
    (correct as f64 / pixels.max(1) as f64, aiou)
}

/// RefCOCO-style accumulator (mmdet `RefSegMetric`): cumulative IoU and mean IoU.
#[derive(Debug, Clone, Default)]
pub struct RefSegAccumulator {
    intersection: u64,
    union: u64,
    iou_sum: f64,
    count: usize,
}

/// The two RefCOCO numbers, in percent.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RefSegScores {
    /// 100 · ΣI / ΣU over the split.
    pub ciou: f64,
    /// 100 · mean of per-instance IoU (an undefined IoU counts as 0).
    pub miou: f64,
    /// Number of instances.
    pub count: usize,
}

impl RefSegAccumulator {
    /// Adds one instance.
    pub fn add(&mut self, m: &MaskCounts) {
        self.intersection += m.intersection;
        self.union += m.union;
        let iou = m.intersection as f64 / m.union as f64;
        self.iou_sum += if iou.is_nan() { 0.0 } else { iou };
        self.count += 1;
    }

    /// Merges another accumulator (data-parallel evaluation).
    pub fn merge(&mut self, other: &RefSegAccumulator) {
        self.intersection += other.intersection;
        self.union += other.union;
        self.iou_sum += other.iou_sum;
        self.count += other.count;
    }

    /// Final scores.
    pub fn scores(&self) -> RefSegScores {
        RefSegScores {
            ciou: 100.0 * self.intersection as f64 / self.union.max(1) as f64,
            miou: 100.0 * self.iou_sum / self.count.max(1) as f64,
            count: self.count,
        }
    }
}

/// Area under the recall-vs-IoU-threshold curve, the PNG benchmark's "average recall":
/// thresholds `t_i = i·1e-5` for `i < 100000`, `acc_i = mean(iou ≥ t_i)`, `AR = Σ_{i<99999} (t_{i+1} − t_i)·acc_i`.
pub fn average_recall(ious: &[f64]) -> f64 {
    const STEPS: usize = 100_000;
    if ious.is_empty() {
        return f64::NAN;
    }
    let mut sorted = ious.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let threshold = |i: usize| i as f64 * 1e-5;
    let mut below = 0usize; // how many IoUs are < current threshold
    let mut area = 0.0;
    for i in 0..STEPS - 1 {
        let t = threshold(i);
        while below < sorted.len() && sorted[below] < t {
            below += 1;
        }
        let recall = (sorted.len() - below) as f64 / n;
        area += (threshold(i + 1) - t) * recall;
    }
    area
}

/// Per-mask record for the PNG benchmark.
#[derive(Debug, Clone, Copy)]
pub struct PngMaskResult {
    /// IoU of the predicted mask.
    pub iou: f64,
    /// Pixel accuracy of the predicted mask.
    pub pixel_accuracy: f64,
    /// The phrase is plural ("two dogs").
    pub plural: bool,
    /// The segment is a thing (plurals count as things), otherwise stuff.
    pub isthing: bool,
}

/// PNG benchmark scores, in percent.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PngScores {
    /// Average recall over all masks.
    pub ar_all: f64,
    /// … over singular phrases.
    pub ar_singular: f64,
    /// … over plural phrases.
    pub ar_plural: f64,
    /// … over things.
    pub ar_things: f64,
    /// … over stuff.
    pub ar_stuff: f64,
    /// 100 · mean(IoU > 0.5).
    pub acc_at_05: f64,
    /// 100 · mean per-mask pixel accuracy.
    pub pixel_accuracy: f64,
    /// Number of masks.
    pub count: usize,
}

/// Computes the PNG scores of a split (a subset with no masks reports NaN for its recall).
pub fn png_scores(results: &[PngMaskResult]) -> PngScores {
    let ar = |keep: &dyn Fn(&PngMaskResult) -> bool| {
        let ious: Vec<f64> = results.iter().filter(|r| keep(r)).map(|r| r.iou).collect();
        100.0 * average_recall(&ious)
    };
    let n = results.len().max(1) as f64;
    PngScores {
        ar_all: ar(&|_| true),
        ar_singular: ar(&|r| !r.plural),
        ar_plural: ar(&|r| r.plural),
        ar_things: ar(&|r| r.isthing),
        ar_stuff: ar(&|r| !r.isthing),
        acc_at_05: 100.0 * results.iter().filter(|r| r.iou > 0.5).count() as f64 / n,
        pixel_accuracy: 100.0 * results.iter().map(|r| r.pixel_accuracy).sum::<f64>() / n,
        count: results.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_iou() {
        let pred = [true, true, false, false];
        let gt = [true, false, true, false];
        let m = MaskCounts::new(&pred, &gt);
        assert_eq!((m.intersection, m.union, m.correct, m.pixels), (1, 3, 2, 4));
        assert!((m.iou() - 1.0 / 3.0).abs() < 1e-12);
        let empty = MaskCounts::new(&[false], &[false]);
        assert_eq!(empty.iou(), 0.0);
    }

    #[test]
    fn average_recall_approximates_mean_iou() {
        // For a single IoU v the curve is 1 up to v then 0, so the area is v to within one grid step.
        for v in [0.0, 0.25, 0.5, 0.7731, 1.0] {
            assert!((average_recall(&[v]) - v).abs() <= 1.0001e-5, "{v}");
        }
        let two = average_recall(&[0.2, 0.6]);
        assert!((two - 0.4).abs() <= 1.0001e-5, "{two}");
    }

    #[test]
    fn refseg_undefined_iou_counts_as_zero() {
        let mut acc = RefSegAccumulator::default();
        acc.add(&MaskCounts::new(&[true, false], &[true, true]));
        acc.add(&MaskCounts::new(&[false, false], &[false, false]));
        let s = acc.scores();
        assert!((s.ciou - 50.0).abs() < 1e-12);
        assert!((s.miou - 25.0).abs() < 1e-12);
    }
}

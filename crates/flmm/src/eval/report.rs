//! Evaluation reports: the paper's numbers from the merged records, as JSON and Markdown.

use std::path::Path;

use flmm_nn::metrics::{png_scores, PngMaskResult, PngScores, RefSegAccumulator, RefSegScores};
use serde::Serialize;

use super::config::EvalConfig;
use super::records::SampleRecord;
use super::{Benchmark, Protocol};

/// Scores of one benchmark.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Scores {
    /// cIoU / mIoU.
    RefCoco(RefSegScores),
    /// Average recall and its splits.
    Png(PngScores),
}

/// A finished evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// e.g. `refcoco-val-first-concat`.
    pub benchmark: String,
    /// Sentence protocol (RefCOCO).
    pub protocol: Option<String>,
    /// Head file.
    pub head: String,
    /// Backbone directory.
    pub model: String,
    /// Samples (images or narratives).
    pub samples: usize,
    /// The numbers.
    pub scores: Scores,
}

impl Report {
    /// Computes the scores of `records` (sorted by sample index).
    pub fn new(bench: &Benchmark, head: &Path, config: &EvalConfig, records: &[SampleRecord]) -> Self {
        let masks = records.iter().flat_map(|r| &r.masks);
        let (scores, protocol) = match bench {
            Benchmark::RefCoco { protocol, .. } => {
                let mut acc = RefSegAccumulator::default();
                masks.for_each(|m| acc.add(&m.counts));
                let name = if *protocol == Protocol::FirstSentence { "first sentence per ref (F-LMM)" } else { "all sentences (standard)" };
                (Scores::RefCoco(acc.scores()), Some(name.to_string()))
            }
            Benchmark::Png => {
                let results: Vec<PngMaskResult> = masks
                    .map(|m| PngMaskResult { iou: m.counts.iou(), pixel_accuracy: m.counts.pixel_accuracy(), plural: m.plural, isthing: m.isthing })
                    .collect();
                (Scores::Png(png_scores(&results)), None)
            }
        };
        Report {
            benchmark: bench.tag(),
            protocol,
            head: head.display().to_string(),
            model: config.model.dir.display().to_string(),
            samples: records.len(),
            scores,
        }
    }

    /// The report as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut md = format!("# {}\n\nhead `{}`, model `{}`, {} samples", self.benchmark, self.head, self.model, self.samples);
        if let Some(p) = &self.protocol {
            md.push_str(&format!(", protocol: {p}"));
        }
        md.push_str("\n\n");
        match &self.scores {
            Scores::RefCoco(s) => md.push_str(&format!("| cIoU | mIoU | instances |\n|---|---|---|\n| {:.2} | {:.2} | {} |\n", s.ciou, s.miou, s.count)),
            Scores::Png(s) => md.push_str(&format!(
                "| AR all | singular | plural | things | stuff | acc@0.5 | pixel acc | masks |\n|---|---|---|---|---|---|---|---|\n| {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                s.ar_all, s.ar_singular, s.ar_plural, s.ar_things, s.ar_stuff, s.acc_at_05, s.pixel_accuracy, s.count
            )),
        }
        md
    }

    /// Writes `<tag>.json` and `<tag>.md` to `dir`.
    pub fn write(&self, dir: &Path, tag: &str) -> anyhow::Result<()> {
        flmm_nn::fsutil::write_atomic(&dir.join(format!("{tag}.json")), serde_json::to_string_pretty(self)?.as_bytes())?;
        flmm_nn::fsutil::write_atomic(&dir.join(format!("{tag}.md")), self.markdown().as_bytes())?;
        Ok(())
    }
}

//! Evaluation reports: the paper's numbers from the merged records, as JSON and Markdown.

use std::path::Path;

use flmm_nn::metrics::{png_scores, MaskCounts, PngMaskResult, PngScores, RefSegAccumulator, RefSegScores};
use serde::Serialize;

use super::config::EvalConfig;
use super::records::{MaskRecord, SampleRecord};
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
    /// The numbers of the refined masks (F-LMM's final output).
    pub scores: Scores,
    /// The same numbers for the U-Net's masks alone (absent in records written before they were kept).
    pub unet_scores: Option<Scores>,
}

/// The benchmark's numbers over `(counts, record)` pairs.
fn score(bench: &Benchmark, masks: &[(MaskCounts, &MaskRecord)]) -> Scores {
    match bench {
        Benchmark::RefCoco { .. } => {
            let mut acc = RefSegAccumulator::default();
            masks.iter().for_each(|(c, _)| acc.add(c));
            Scores::RefCoco(acc.scores())
        }
        Benchmark::Png => {
            let results: Vec<PngMaskResult> = masks
                .iter()
                .map(|(c, m)| PngMaskResult { iou: c.iou(), pixel_accuracy: c.pixel_accuracy(), plural: m.plural, isthing: m.isthing })
                .collect();
            Scores::Png(png_scores(&results))
        }
    }
}

impl Report {
    /// Computes the scores of `records` (sorted by sample index).
    pub fn new(bench: &Benchmark, head: &Path, config: &EvalConfig, records: &[SampleRecord]) -> Self {
        let masks: Vec<&MaskRecord> = records.iter().flat_map(|r| &r.masks).collect();
        let refined: Vec<(MaskCounts, &MaskRecord)> = masks.iter().map(|m| (m.counts, *m)).collect();
        let unet: Option<Vec<(MaskCounts, &MaskRecord)>> = masks.iter().map(|m| m.unet.map(|c| (c, *m))).collect();
        let protocol = match bench {
            Benchmark::RefCoco { protocol, .. } => {
                Some(if *protocol == Protocol::FirstSentence { "first sentence per ref (F-LMM)" } else { "all sentences (standard)" }.to_string())
            }
            Benchmark::Png => None,
        };
        Report {
            benchmark: bench.tag(),
            protocol,
            head: head.display().to_string(),
            model: config.model.dir.display().to_string(),
            samples: records.len(),
            scores: score(bench, &refined),
            unet_scores: unet.filter(|u| !u.is_empty()).map(|u| score(bench, &u)),
        }
    }

    /// The report as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut md = format!("# {}\n\nhead `{}`, model `{}`, {} samples", self.benchmark, self.head, self.model, self.samples);
        if let Some(p) = &self.protocol {
            md.push_str(&format!(", protocol: {p}"));
        }
        md.push_str("\n\n");
        let rows = [("refined (SAM)", Some(&self.scores)), ("U-Net alone", self.unet_scores.as_ref())];
        let header = match &self.scores {
            Scores::RefCoco(_) => "| masks | cIoU | mIoU | instances |\n|---|---|---|---|\n",
            Scores::Png(_) => "| masks | AR all | singular | plural | things | stuff | acc@0.5 | pixel acc | count |\n|---|---|---|---|---|---|---|---|---|\n",
        };
        md.push_str(header);
        for (name, scores) in rows {
            match scores {
                Some(Scores::RefCoco(s)) => md.push_str(&format!("| {name} | {:.2} | {:.2} | {} |\n", s.ciou, s.miou, s.count)),
                Some(Scores::Png(s)) => md.push_str(&format!(
                    "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                    s.ar_all, s.ar_singular, s.ar_plural, s.ar_things, s.ar_stuff, s.acc_at_05, s.pixel_accuracy, s.count
                )),
                None => {}
            }
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

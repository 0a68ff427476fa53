//! `flmm eval refcoco|png`: F-LMM's evaluation protocols (spec §6) with resumable, data-parallel runs.
//!
//! Every sample's masks are compared with the ground truth at the original resolution
//! (`sigmoid(logit) > 0.5`) and recorded as a JSON line as soon as it is done ([`records`]); `--workers N`
//! runs N processes over interleaved shards; the report is computed from all records, sorted by sample
//! index, so it does not depend on the worker count or on interruptions.

pub mod config;
pub mod records;
pub mod report;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use flmm_data::coco_mask::Mask;
use flmm_data::png_dataset::{PngDataset, PngOptions, PngSplit};
use flmm_data::refcoco::{load_refcoco, RefCocoOptions, RefCocoSplit, RefDataset, TextMode};
use flmm_lmm::prompt::{tokenize_expressions, Segment};
use flmm_nn::metrics::{binarize_logits, MaskCounts};

use crate::pipeline::{Grounder, Prediction};
use config::EvalConfig;
use records::{MaskRecord, RecordStore, SampleRecord};

/// Which sentences of a RefCOCO ref are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// F-LMM's: the first sentence of each ref (instances = refs).
    FirstSentence,
    /// The standard one: every sentence (instances = expressions).
    AllSentences,
}

/// What to evaluate.
#[derive(Debug, Clone)]
pub enum Benchmark {
    /// A RefCOCO-family split.
    RefCoco {
        /// RefCOCO, RefCOCO+ or RefCOCOg.
        dataset: RefDataset,
        /// `val`, `testA`, `testB`, `test`.
        split: String,
        /// All expressions of an image in one sequence (as in training) instead of one pass each.
        concat: bool,
        /// Sentence protocol.
        protocol: Protocol,
    },
    /// Panoptic Narrative Grounding, val2017.
    Png,
}

impl Benchmark {
    /// A name for the run's files.
    pub fn tag(&self) -> String {
        match self {
            Benchmark::RefCoco { dataset, split, concat, protocol } => format!(
                "{}-{split}-{}-{}",
                dataset.dir_name(),
                if *protocol == Protocol::FirstSentence { "first" } else { "all" },
                if *concat { "concat" } else { "single" }
            ),
            Benchmark::Png => "png-val2017".into(),
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Output directory (records and reports).
    pub out: PathBuf,
    /// Worker processes.
    pub workers: usize,
    /// This process's shard when it is a worker (set by the parent).
    pub rank: Option<usize>,
    /// Evaluate only the first samples (quick checks).
    pub limit: Option<usize>,
    /// The command line that started the parent, re-run with `--rank r` for each worker.
    pub relaunch: Vec<String>,
    /// Show a progress bar.
    pub progress: bool,
}

enum Loaded {
    RefCoco(RefCocoSplit, bool),
    Png(PngDataset),
}

impl Loaded {
    fn len(&self) -> usize {
        match self {
            Loaded::RefCoco(s, _) => s.samples.len(),
            Loaded::Png(d) => d.narratives.len(),
        }
    }
}

fn load(config: &EvalConfig, bench: &Benchmark) -> anyhow::Result<Loaded> {
    Ok(match bench {
        Benchmark::RefCoco { dataset, split, concat, protocol } => {
            let text_mode = if *protocol == Protocol::FirstSentence { TextMode::SelectFirst } else { TextMode::All };
            let options = RefCocoOptions { text_mode, ..Default::default() };
            Loaded::RefCoco(load_refcoco(&config.data.root, *dataset, split, &options)?, *concat)
        }
        Benchmark::Png => Loaded::Png(PngDataset::load_standard(&config.data.root, PngSplit::Val, &PngOptions::default())?),
    })
}

/// Runs (or resumes) an evaluation; the parent writes and returns the report.
pub fn run(config: &EvalConfig, head: &Path, bench: &Benchmark, opts: &EvalOptions) -> anyhow::Result<Option<report::Report>> {
    let data = load(config, bench)?;
    let total = opts.limit.map_or(data.len(), |l| l.min(data.len()));
    let store = RecordStore::new(&opts.out.join("records"), &bench.tag())?;
    match opts.rank {
        Some(rank) => {
            evaluate_shard(config, head, &data, &store, rank, opts.workers, total, opts.progress)?;
            return Ok(None);
        }
        None if opts.workers > 1 => spawn_workers(opts)?,
        None => evaluate_shard(config, head, &data, &store, 0, 1, total, opts.progress)?,
    }
    let records: Vec<SampleRecord> = store.load_all()?.into_values().filter(|r| r.index < total).collect();
    if records.len() < total {
        bail!("only {} of {total} samples have records; run the same command again to resume", records.len());
    }
    let report = report::Report::new(bench, head, config, &records);
    report.write(&opts.out, &bench.tag())?;
    Ok(Some(report))
}

fn spawn_workers(opts: &EvalOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..opts.workers)
        .map(|rank| {
            std::process::Command::new(&exe)
                .args(&opts.relaunch[1..])
                .args(["--rank", &rank.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("starting worker {rank}"))
        })
        .collect::<Result<_, _>>()?;
    let mut failures = Vec::new();
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            failures.push(format!("worker {rank}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    if !failures.is_empty() {
        bail!("{}\n(finished samples are kept; run the same command again to resume)", failures.join("\n"));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn evaluate_shard(
    config: &EvalConfig,
    head: &Path,
    data: &Loaded,
    store: &RecordStore,
    rank: usize,
    workers: usize,
    total: usize,
    progress: bool,
) -> anyhow::Result<()> {
    let done = store.done()?;
    let todo: Vec<usize> = (rank..total).step_by(workers.max(1)).filter(|i| !done.contains(i)).collect();
    if todo.is_empty() {
        return Ok(());
    }
    let dtype = crate::device::parse_dtype(&config.model.dtype)?;
    let device = crate::device::parse_device(&config.model.device)?;
    let grounder = Grounder::open(&config.model.dir, head, &config.sam.checkpoint, dtype, &device, config.sam.cache.as_deref())?;
    let mut writer = store.writer(&format!("{rank}-of-{workers}"))?;
    let bar = progress.then(|| indicatif::ProgressBar::new(todo.len() as u64));
    for index in todo {
        let record = match data {
            Loaded::RefCoco(split, concat) => refcoco_sample(&grounder, split, index, *concat),
            Loaded::Png(d) => png_sample(&grounder, d, index),
        }?;
        writer.push(&record)?;
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(())
}

/// The record of mask `k` of a prediction: refined and U-Net-alone counts against `gt`.
fn mask_record(prediction: &Prediction, k: usize, gt: &Mask, plural: bool, isthing: bool) -> anyhow::Result<MaskRecord> {
    let unet = prediction.unet_at(gt.height as usize, gt.width as usize)?;
    Ok(MaskRecord { counts: counts(&prediction.refined.get(k)?, gt)?, unet: Some(counts(&unet.get(k)?, gt)?), plural, isthing })
}

/// Pixel counts of logits `[H, W]` against a ground-truth mask of the same size.
fn counts(logits: &candle_core::Tensor, gt: &Mask) -> anyhow::Result<MaskCounts> {
    let (h, w) = logits.dims2()?;
    if (h as u32, w as u32) != (gt.height, gt.width) {
        bail!("prediction {h}×{w} vs ground truth {}×{}", gt.height, gt.width);
    }
    let pred = binarize_logits(&logits.flatten_all()?.to_vec1::<f32>()?);
    let gt: Vec<bool> = gt.data.iter().map(|&v| v != 0).collect();
    Ok(MaskCounts::new(&pred, &gt))
}

fn check_size(image: &image::RgbImage, h: u32, w: u32, path: &Path) -> anyhow::Result<()> {
    if image.dimensions() != (w, h) {
        bail!("{}: image is {}×{} but the annotations say {w}×{h}", path.display(), image.width(), image.height());
    }
    Ok(())
}

fn refcoco_sample(g: &Grounder, split: &RefCocoSplit, index: usize, concat: bool) -> anyhow::Result<SampleRecord> {
    let s = &split.samples[index];
    let image = flmm_data::image_io::load_rgb_image(&s.image_path)?;
    check_size(&image, s.height, s.width, &s.image_path)?;
    let gt = s.masks().with_context(|| format!("masks of image {}", s.image_id))?;
    let expressions = s.expressions();
    let b = &g.backbone;
    let mut masks = Vec::with_capacity(expressions.len());
    let groups: Vec<Vec<(usize, &str)>> = if concat { vec![expressions] } else { expressions.into_iter().map(|e| vec![e]).collect() };
    for group in groups {
        let texts: Vec<String> = group.iter().map(|(_, t)| t.to_string()).collect();
        let tokens = tokenize_expressions(&b.tokenizer, b.template, &b.image_prompt, &texts)?;
        let prediction = g.predict(&image, &b.prepare_tokens(&image, tokens)?)?;
        for (k, (ref_index, _)) in group.iter().enumerate() {
            masks.push(mask_record(&prediction, k, &gt[*ref_index], false, true)?);
        }
    }
    Ok(SampleRecord { index, image_id: s.image_id, masks })
}

fn png_sample(g: &Grounder, d: &PngDataset, index: usize) -> anyhow::Result<SampleRecord> {
    let n = &d.narratives[index];
    let image = flmm_data::image_io::load_rgb_image(&n.image_path)?;
    check_size(&image, n.height, n.width, &n.image_path)?;
    let gt = n.load_masks()?;
    let infos = n.mask_infos();
    let segments: Vec<Segment> = n.segments.iter().map(|s| Segment { text: s.utterance.clone(), phrase: s.mask_index }).collect();
    let prediction = g.predict(&image, &g.backbone.prepare_segments(&image, &segments)?)?;
    let masks = gt
        .iter()
        .zip(&infos)
        .enumerate()
        .map(|(k, (m, info))| mask_record(&prediction, k, m, info.plural, info.isthing))
        .collect::<anyhow::Result<_>>()?;
    Ok(SampleRecord { index, image_id: n.image_id, masks })
}

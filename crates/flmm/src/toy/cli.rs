//! `flmm toy …`: regenerate the toy world step by step.

use std::path::PathBuf;

use clap::Subcommand;
use flmm_data::toy::{dataset_scenes, write_toy_dataset, ToyConfig};

use super::all::{regenerate, summary, RegenerateOptions};
use super::pretrain::{pretrain_vlm, VlmPretrainOptions};
use super::qa::evaluate_qa;
use super::sam_pretrain::{pretrain_sam, SamPretrainOptions};
use super::ship::{ship_model, write_examples, ShipInputs};
use super::vision_pretrain::{pretrain_vision, vision_path, VisionPretrainOptions};
use super::vlm::ToyVlm;
use crate::train::config::OptimConfig;

/// Default work directory of the toy world.
pub const DEFAULT_WORK: &str = "runs/toy";

/// A toy dataset as `flmm toy build` draws it: scenes `0..train` of the seed train, the next `val` are
/// held out.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DatasetSplit {
    /// Dataset seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training scenes.
    #[arg(long, default_value_t = 2000)]
    pub train: usize,
    /// Held-out scenes (they follow the training scenes).
    #[arg(long, default_value_t = 500)]
    pub val: usize,
}

/// The toy-world steps.
#[derive(Subcommand, Debug)]
pub enum ToyAction {
    /// Write the toy grounding dataset (RefCOCO + PNG formats, QA lines) under <work>/data.
    Build {
        /// Work directory.
        #[arg(long, default_value = DEFAULT_WORK)]
        work: PathBuf,
        /// The dataset to write.
        #[command(flatten)]
        dataset: DatasetSplit,
    },
    /// Pretrain the toy VLM's vision tower on image-level labels (which colour + shape and size + shape
    /// combinations a scene holds; no masks): <work>/vision-train/vision.safetensors.
    PretrainVision {
        /// Work directory.
        #[arg(long, default_value = DEFAULT_WORK)]
        work: PathBuf,
        /// Seed of the initial weights, the probe and the scenes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Training scenes.
        #[arg(long, default_value_t = 8000)]
        scenes: usize,
        /// Held-out scenes scored at the end.
        #[arg(long, default_value_t = 300)]
        val: usize,
        /// Epochs.
        #[arg(long, default_value_t = 1)]
        epochs: u64,
        /// Peak learning rate.
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        /// Scenes per optimizer step.
        #[arg(long, default_value_t = 16)]
        accumulate: usize,
        /// Continue an interrupted run.
        #[arg(long)]
        resume: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Pretrain the toy VLM on toy conversations (captions + QA; no masks), starting from the vision
    /// stage's tower: <work>/vlm-train/vlm.
    PretrainVlm {
        /// Work directory.
        #[arg(long, default_value = DEFAULT_WORK)]
        work: PathBuf,
        /// Seed of the initial weights and the pretraining scenes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Pretraining scenes (one conversation each per epoch).
        #[arg(long, default_value_t = 12000)]
        scenes: usize,
        /// Epochs.
        #[arg(long, default_value_t = 2)]
        epochs: u64,
        /// Peak learning rate.
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// Conversations per optimizer step.
        #[arg(long, default_value_t = 8)]
        accumulate: usize,
        /// Start from a random vision tower instead of <work>/vision-train/vision.safetensors.
        #[arg(long)]
        no_vision_stage: bool,
        /// Continue an interrupted run.
        #[arg(long)]
        resume: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Pretrain the toy SAM refiner on promptable segmentation of toy scenes (boxes, points, box +
    /// coarse mask): <work>/sam-train/sam.safetensors, with held-out mean IoU per prompt kind.
    PretrainSam {
        /// Work directory.
        #[arg(long, default_value = DEFAULT_WORK)]
        work: PathBuf,
        /// Seed of the initial weights, data order and prompts.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Training scenes (every object of each prompted once per epoch).
        #[arg(long, default_value_t = 2400)]
        scenes: usize,
        /// Epochs.
        #[arg(long, default_value_t = 1)]
        epochs: u64,
        /// Peak learning rate.
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        /// Held-out scenes evaluated at the end.
        #[arg(long, default_value_t = 100)]
        val: usize,
        /// Continue an interrupted run.
        #[arg(long)]
        resume: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Store the trained VLM, refiner and head in f16 as the embedded default model (models/toy, ≤ 15 MB)
    /// and write example scenes (examples/toy). Rebuild flmm afterwards to embed them.
    Ship {
        /// Work directory holding vlm-train/vlm, sam-train/sam.safetensors and head-train/head.safetensors.
        #[arg(long, default_value = DEFAULT_WORK)]
        work: PathBuf,
        /// The model output directory.
        #[arg(long, default_value = "models/toy")]
        out: PathBuf,
        /// The example scenes' directory.
        #[arg(long, default_value = "examples/toy")]
        examples: PathBuf,
        /// The dataset of `flmm toy build` whose held-out scenes become the examples.
        #[command(flatten)]
        dataset: DatasetSplit,
    },
    /// Question-answering accuracy of a toy VLM directory on held-out scenes (JSON).
    Qa {
        /// The model directory.
        #[arg(long)]
        model: PathBuf,
        /// The dataset whose held-out scenes are scored.
        #[command(flatten)]
        dataset: DatasetSplit,
        /// Also write the report (JSON) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Regenerate everything: data, VLM and refiner pretraining (side by side), head and control head
    /// (on the untrained VLM), QA, evaluation; logs in <work>/logs, times appended to <work>/regeneration.json.
    All {
        /// Work directory.
        #[arg(long, default_value = DEFAULT_WORK)]
        work: PathBuf,
        /// The head's training config (its paths are replaced by the work directory's).
        #[arg(long, default_value = "configs/toy.toml")]
        config: PathBuf,
        /// Held-out scenes scored for question answering.
        #[arg(long, default_value_t = 500)]
        qa_scenes: usize,
    },
}

/// Optimizer settings of a VLM pretraining stage (vision or language): the CLI's values, checkpoints
/// every 50 steps.
fn stage_optim(lr: f64, epochs: u64, accumulate: usize) -> OptimConfig {
    OptimConfig { lr, epochs, accumulate, checkpoint_every: 50, ..OptimConfig::default() }
}

/// Whether a training step draws a progress bar: not asked to be quiet and stderr is a terminal.
fn show_progress(quiet: bool) -> bool {
    !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Runs one toy step.
pub fn run(action: ToyAction) -> anyhow::Result<()> {
    match action {
        ToyAction::Build { work, dataset: DatasetSplit { seed, train, val } } => {
            let root = work.join("data");
            let summary = write_toy_dataset(&root, seed, train, val)?;
            println!("wrote the toy dataset to {}: {summary:?}", root.display());
            Ok(())
        }
        ToyAction::PretrainVision { work, seed, scenes, val, epochs, lr, accumulate, resume, quiet } => {
            let (optim, progress) = (stage_optim(lr, epochs, accumulate), show_progress(quiet));
            let opts = VisionPretrainOptions { work: work.clone(), seed, scenes, val, optim, resume, progress };
            let (summary, report) = pretrain_vision(&opts)?;
            println!(
                "pretrained the toy vision tower: {} steps in {:.0}s, loss {:.3} → {:.3}; tower in {}",
                summary.steps,
                summary.seconds,
                summary.first_loss,
                summary.last_loss,
                vision_path(&work).display()
            );
            println!("held-out: {}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        ToyAction::PretrainVlm { work, seed, scenes, epochs, lr, accumulate, no_vision_stage, resume, quiet } => {
            let (optim, progress) = (stage_optim(lr, epochs, accumulate), show_progress(quiet));
            let vision = if no_vision_stage {
                None
            } else {
                let tower = vision_path(&work);
                anyhow::ensure!(
                    tower.is_file(),
                    "{} is missing: run `flmm toy pretrain-vision --work {}` first (or pass --no-vision-stage)",
                    tower.display(),
                    work.display()
                );
                Some(tower)
            };
            let opts = VlmPretrainOptions { work: work.clone(), seed, scenes, vision, optim, resume, progress };
            let summary = pretrain_vlm(&opts)?;
            println!(
                "pretrained the toy VLM: {} steps in {:.0}s, loss {:.3} → {:.3}; model in {}",
                summary.steps,
                summary.seconds,
                summary.first_loss,
                summary.last_loss,
                super::pretrain::model_dir(&work).display()
            );
            Ok(())
        }
        ToyAction::PretrainSam { work, seed, scenes, epochs, lr, val, resume, quiet } => {
            let opts = SamPretrainOptions {
                seed,
                train_scenes: scenes,
                eval_scenes: val,
                epochs,
                lr,
                out_dir: super::sam_pretrain::run_dir(&work),
                show_progress: show_progress(quiet),
                resume,
                ..SamPretrainOptions::default()
            };
            let report = pretrain_sam(&opts)?;
            println!(
                "pretrained the toy refiner: {} steps in {:.0}s, loss {:.3} → {:.3}; {} parameters, {:.2} MB at {}",
                report.train.steps,
                report.train.seconds,
                report.train.first_loss,
                report.train.last_loss,
                report.parameters,
                report.file_bytes as f64 / 1048576.0,
                report.sam_path.display()
            );
            if let Some(eval) = report.eval {
                for k in &eval.per_kind {
                    println!("held-out mean IoU ({} objects), {:>8} prompt: {:.4}", eval.objects, k.kind.name(), k.mean_iou);
                }
            }
            Ok(())
        }
        ToyAction::Ship { work, out, examples, dataset: DatasetSplit { seed, train, val } } => {
            let inputs = ShipInputs {
                vlm: super::pretrain::model_dir(&work),
                sam: super::sam_pretrain::sam_path(&work),
                head: work.join("head-train/head.safetensors"),
            };
            let size = ship_model(&inputs, &out)?;
            let scenes = write_examples(&examples, seed, train, val, 6)?;
            println!("shipped {:.2} MB to {} and {} example scenes to {}", size as f64 / 1048576.0, out.display(), scenes.len(), examples.display());
            Ok(())
        }
        ToyAction::Qa { model, dataset: DatasetSplit { seed, train, val }, out } => {
            let vlm = ToyVlm::load(&model)?;
            let scenes = dataset_scenes(seed, train, val, &ToyConfig::default()).split_off(train);
            let report = serde_json::to_string_pretty(&evaluate_qa(&vlm, &scenes)?)?;
            if let Some(path) = out {
                flmm_nn::fsutil::write_atomic(&path, report.as_bytes())?;
            }
            println!("{report}");
            Ok(())
        }
        ToyAction::All { work, config, qa_scenes } => {
            let times = regenerate(&RegenerateOptions { work: work.clone(), head_config: config, qa_scenes })?;
            for t in &times {
                println!("{:>14}: {}", t.step, if t.skipped { "skipped (done before)".to_string() } else { format!("{:.1} min", t.seconds / 60.0) });
            }
            println!("{}", summary(&work)?);
            println!("ship it as the embedded default: flmm toy ship --work {}", work.display());
            Ok(())
        }
    }
}

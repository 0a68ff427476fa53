//! The `flmm` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use flmm::train::{config::DataConfig, task::{TrainTask, UNetTask}, TrainConfig, TrainOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// F-LMM: pixel masks for phrases from a frozen multimodal model's attention.
#[derive(Parser)]
#[command(name = "flmm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a grounding head from a TOML config (see configs/).
    Train {
        /// The experiment config.
        config: PathBuf,
        /// Run directory for metrics, checkpoints and the trained head.
        #[arg(long, default_value = "runs/latest")]
        out: PathBuf,
        /// Continue from the newest checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Backbone model directory replacing the config's [model] dir (e.g. a control backbone).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Draw a metric from a training log (metrics.jsonl) as a PNG chart.
    Plot {
        /// The metrics.jsonl file.
        metrics: PathBuf,
        /// Output PNG (default: beside the log, named after the metric).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The metric to draw.
        #[arg(long, default_value = "loss")]
        key: String,
        /// Linear instead of logarithmic y axis.
        #[arg(long)]
        linear: bool,
    },
    /// Ground phrases of a text in an image: mask PNGs, an overlay and result.json (score, box, COCO RLE).
    Ground {
        /// Backbone model directory (LLaVA-1.5 / LLaVA-NeXT); without --model, --head and --sam the embedded toy model runs.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Head file with official keys (`flmm import` converts released .pth heads).
        #[arg(long)]
        head: Option<PathBuf>,
        /// SAM checkpoint for the image encoder (sam_vit_*.pth, mobile_sam.pt, safetensors).
        #[arg(long)]
        sam: Option<PathBuf>,
        /// The image (PNG or JPEG).
        #[arg(long)]
        image: PathBuf,
        /// The text; every --phrase must be a span of it (default: the whole text is one phrase).
        #[arg(long)]
        text: String,
        /// A span of the text to ground (repeat for several, in text order).
        #[arg(long = "phrase")]
        phrases: Vec<String>,
        /// Output directory.
        #[arg(long, default_value = "runs/ground")]
        out: PathBuf,
        /// Also write the U-Net and refiner logits (logits.safetensors).
        #[arg(long)]
        save_logits: bool,
        /// Cache SAM image embeddings in this directory.
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Backbone compute dtype: f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// cpu or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Inspect datasets.
    Data {
        #[command(subcommand)]
        action: DataAction,
    },
    /// Evaluate a head on RefCOCO/+/g or Panoptic Narrative Grounding (resumable, --workers N).
    Eval {
        /// refcoco or png.
        #[arg(value_parser = ["refcoco", "png"])]
        benchmark: String,
        /// Eval config (TOML): [model] dir, [sam] checkpoint, [data] root.
        config: PathBuf,
        /// The head to evaluate (official keys; see `flmm import`).
        #[arg(long)]
        head: PathBuf,
        /// Backbone model directory replacing the config's [model] dir.
        #[arg(long)]
        model: Option<PathBuf>,
        /// RefCOCO family member: refcoco, refcoco+ or refcocog.
        #[arg(long, default_value = "refcoco")]
        dataset: String,
        /// RefCOCO split (val, testA, testB, test).
        #[arg(long, default_value = "val")]
        split: String,
        /// All expressions of an image in one sequence, as in training (F-LMM's README setting).
        #[arg(long)]
        concat: bool,
        /// Evaluate every sentence of each ref (the standard protocol) instead of only the first (F-LMM's).
        #[arg(long)]
        all_sentences: bool,
        /// Worker processes (each loads the model).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Internal: the shard of a worker process.
        #[arg(long, hide = true)]
        rank: Option<usize>,
        /// Only the first N samples.
        #[arg(long)]
        limit: Option<usize>,
        /// Output directory (records/, <benchmark>.json, <benchmark>.md).
        #[arg(long, default_value = "runs/eval")]
        out: PathBuf,
    },
    /// The toy world: build its data, pretrain its VLM, score it.
    Toy {
        #[command(subcommand)]
        action: flmm::toy::cli::ToyAction,
    },
    /// Cache frozen features for fast head training (not implemented yet).
    Cache,
    /// Serve the HTTP API and web page (not implemented yet).
    Serve,
    /// Grounded conversation (not implemented yet).
    Chat,
    /// Promptable segmentation with a SAM checkpoint: mask PNG(s), overlay, raw logits.
    Sam {
        /// sam_vit_{b,l,h}_*.pth, mobile_sam.pt, or a safetensors conversion.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The image (PNG or JPEG).
        #[arg(long)]
        image: PathBuf,
        /// Box prompt x0,y0,x1,y1 in image pixels.
        #[arg(long = "box", value_parser = flmm::sam_cmd::parse_box)]
        bbox: Option<[f32; 4]>,
        /// Point prompt x,y[,label] in image pixels (label 1 foreground, 0 background); repeatable.
        #[arg(long = "point", value_parser = flmm::sam_cmd::parse_point)]
        points: Vec<(f32, f32, i32)>,
        /// Write SAM's three candidate masks instead of one.
        #[arg(long)]
        multimask: bool,
        /// Cache image embeddings in this directory (keyed by image content and encoder weights).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "runs/sam")]
        out: PathBuf,
    },
    /// Convert a released F-LMM .pth head to flmm's format (safetensors + JSON), checking every shape.
    Import {
        /// The official checkpoint (torch.save zip: mask_head.*, sam.model.*, text_proj.*, text_layer_weights).
        checkpoint: PathBuf,
        /// The backbone the head was trained on (a model directory): gives L, H, d and the channel order.
        #[arg(long, conflicts_with_all = ["layers", "heads", "hidden"])]
        model: Option<PathBuf>,
        /// Decoder layers L (instead of --model).
        #[arg(long, requires_all = ["heads", "hidden"])]
        layers: Option<usize>,
        /// Attention heads H (instead of --model).
        #[arg(long)]
        heads: Option<usize>,
        /// Decoder width d (instead of --model).
        #[arg(long)]
        hidden: Option<usize>,
        /// Coarse + fine attention stacks (LLaVA-NeXT, MGM-HD): U-Net input is 2·L·H (with --layers).
        #[arg(long)]
        coarse_fine: bool,
        /// U-Net base width of the checkpoint (64 in every released head).
        #[arg(long, default_value_t = 64)]
        unet_base_channels: usize,
        /// SAM prompt width of the checkpoint (256 in every SAM).
        #[arg(long, default_value_t = 256)]
        sam_dim: usize,
        /// SAM mask-decoder MLP width of the checkpoint (2048 in every SAM).
        #[arg(long, default_value_t = 2048)]
        sam_mlp_dim: usize,
        /// Output head file (a .json sidecar is written beside it).
        #[arg(long, default_value = "head.safetensors")]
        out: PathBuf,
    },
    /// Describe a model directory: family, layers × heads, image grids, head channels, dtype, size.
    InspectModel {
        /// A Hugging Face layout directory (config.json, *.safetensors, tokenizer.json, preprocessor_config.json).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Capture word-to-image attention of phrases: stacks + hidden states (safetensors), JSON, heatmap PNGs.
    Attention {
        /// A Hugging Face layout model directory (LLaVA-1.5 or LLaVA-NeXT).
        #[arg(long)]
        model: PathBuf,
        /// The image (PNG or JPEG).
        #[arg(long)]
        image: PathBuf,
        /// The caption; every --phrase must be a span of it.
        #[arg(long)]
        text: String,
        /// A span of the text to ground (repeat for several, in text order).
        #[arg(long = "phrase", required = true)]
        phrases: Vec<String>,
        /// Output directory.
        #[arg(long, default_value = "runs/attention")]
        out: PathBuf,
        /// Merge a phrase's tokens by mean or max.
        #[arg(long, default_value = "mean")]
        merge: flmm_lmm::capture::Merge,
        /// Keep only these decoder layers (comma-separated, ascending).
        #[arg(long, value_delimiter = ',')]
        layers: Option<Vec<usize>>,
        /// Keep only these heads (comma-separated, ascending).
        #[arg(long, value_delimiter = ',')]
        heads: Option<Vec<usize>>,
        /// Compute dtype: f32, bf16 (a 7B model needs it to fit 24 GiB) or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// cpu or cuda:N (CUDA needs a build with --features cuda).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(Subcommand)]
enum DataAction {
    /// Check F-LMM's data layout under <root> (data/coco): loads every split, reports counts or what is missing.
    Check {
        /// The data root (holding refcoco*/, train2014/, val2017/, annotations/).
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    flmm_nn::runtime::tune_process();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train { config, out, resume, quiet, model } => train(&config, model, out, resume, quiet),
        Command::Plot { metrics, out, key, linear } => {
            let out = out.unwrap_or_else(|| metrics.with_file_name(format!("{key}.png")));
            let n = flmm::plot::plot_file(&metrics, &key, &out, !linear)?;
            println!("plotted {n} points of `{key}` to {}", out.display());
            Ok(())
        }
        Command::Ground { model, head, sam, image, text, phrases, out, save_logits, cache, dtype, device } => {
            let (model, head, sam) = match (model, head, sam) {
                (Some(model), Some(head), Some(sam)) => (model, head, sam),
                (None, None, None) => {
                    let toy = flmm::default_model::materialize()?;
                    (toy.model, toy.head, toy.sam)
                }
                _ => anyhow::bail!("give all of --model, --head and --sam, or none of them for the embedded toy model"),
            };
            let phrases = if phrases.is_empty() { vec![text.trim().to_string()] } else { phrases };
            let request = flmm::ground::GroundRequest {
                model,
                head,
                sam,
                image,
                text,
                phrases,
                out,
                save_logits,
                cache,
                dtype: flmm::device::parse_dtype(&dtype)?,
                device: flmm::device::parse_device(&device)?,
            };
            for path in flmm::ground::run(&request)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Data { action: DataAction::Check { root } } => {
            let lines = flmm::data_check::check(&root);
            println!("{}", flmm::data_check::render(&root, &lines));
            if lines.iter().all(|l| l.result.is_err()) {
                anyhow::bail!("no usable split under {}", root.display());
            }
            Ok(())
        }
        Command::Eval { benchmark, config, head, model, dataset, split, concat, all_sentences, workers, rank, limit, out } => {
            let bench = match benchmark.as_str() {
                "png" => flmm::eval::Benchmark::Png,
                _ => {
                    let dataset = match dataset.as_str() {
                        "refcoco" => flmm_data::refcoco::RefDataset::RefCoco,
                        "refcoco+" => flmm_data::refcoco::RefDataset::RefCocoPlus,
                        "refcocog" => flmm_data::refcoco::RefDataset::RefCocog,
                        other => anyhow::bail!("unknown dataset {other:?}: refcoco, refcoco+ or refcocog"),
                    };
                    let protocol = if all_sentences { flmm::eval::Protocol::AllSentences } else { flmm::eval::Protocol::FirstSentence };
                    flmm::eval::Benchmark::RefCoco { dataset, split, concat, protocol }
                }
            };
            if workers == 0 {
                anyhow::bail!("--workers must be at least 1");
            }
            let mut config = flmm::eval::config::EvalConfig::load(&config)?;
            if let Some(dir) = model {
                config.model.dir = dir;
            }
            let opts = flmm::eval::EvalOptions {
                out: out.clone(),
                workers,
                rank,
                limit,
                relaunch: std::env::args().collect(),
                progress: rank.is_none() && workers == 1 && std::io::stderr().is_terminal(),
            };
            if let Some(report) = flmm::eval::run(&config, &head, &bench, &opts)? {
                println!("{}", report.markdown());
                println!("wrote {}", out.join(format!("{}.json", bench.tag())).display());
            }
            Ok(())
        }
        Command::Toy { action } => flmm::toy::cli::run(action),
        Command::Cache => not_implemented("cache"),
        Command::Serve => not_implemented("serve"),
        Command::Chat => not_implemented("chat"),
        Command::Import { checkpoint, model, layers, heads, hidden, coarse_fine, unet_base_channels, sam_dim, sam_mlp_dim, out } => {
            let (mut shape, order, backbone) = match (&model, layers, heads, hidden) {
                (Some(dir), _, _, _) => {
                    let model_dir = flmm_lmm::model_dir::ModelDir::open(dir)?;
                    let config = flmm_lmm::config::LlavaConfig::from_file(&model_dir.config)?;
                    let t = &config.text;
                    let order = match config.family {
                        flmm_lmm::config::Family::Llava15 => "layer*H + head".to_string(),
                        flmm_lmm::config::Family::LlavaNext => "coarse (layer*H + head), then fine (L*H + layer*H + head)".to_string(),
                    };
                    (flmm::import::HeadShape::official(t.num_hidden_layers, t.hidden_size, config.attention_channels()), order, Some(dir.clone()))
                }
                (None, Some(l), Some(h), Some(d)) => {
                    let factor = if coarse_fine { 2 } else { 1 };
                    let order = if coarse_fine { "coarse then fine, each layer*H + head" } else { "layer*H + head" };
                    (flmm::import::HeadShape::official(l, d, factor * l * h), order.to_string(), None)
                }
                _ => anyhow::bail!("give the backbone with --model <dir>, or its shape with --layers L --heads H --hidden d"),
            };
            shape.unet_base_channels = unet_base_channels;
            shape.sam_dim = sam_dim;
            shape.sam_mlp_dim = sam_mlp_dim;
            let report = flmm::import::import(&checkpoint, shape, backbone.as_deref(), order, &out)?;
            println!("imported {} tensors to {} (+ {})", report.imported, out.display(), flmm::import::sidecar(&out).display());
            if !report.unknown_keys.is_empty() {
                eprintln!("skipped {} keys a head does not have: {}", report.unknown_keys.len(), report.unknown_keys.join(", "));
            }
            Ok(())
        }
        Command::Sam { checkpoint, image, bbox, points, multimask, cache, out } => {
            let request = flmm::sam_cmd::SamRequest { checkpoint, image, bbox, points, multimask, cache, out };
            for path in flmm::sam_cmd::run(&request)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::InspectModel { dir, json } => inspect_model(&dir, json),
        Command::Attention { model, image, text, phrases, out, merge, layers, heads, dtype, device } => {
            let request = flmm::attention::AttentionRequest {
                model,
                image,
                text,
                phrases,
                out,
                capture: flmm_lmm::capture::Capture { layers, heads, merge },
                dtype: flmm::device::parse_dtype(&dtype)?,
                device: flmm::device::parse_device(&device)?,
            };
            for path in flmm::attention::run(&request)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

fn inspect_model(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let model_dir = flmm_lmm::model_dir::ModelDir::open(dir)?;
    let config = flmm_lmm::config::LlavaConfig::from_file(&model_dir.config)?;
    let summary = flmm_lmm::summary::summarize(&model_dir, &config)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(())
}

fn not_implemented(name: &str) -> anyhow::Result<()> {
    anyhow::bail!("`flmm {name}` is not implemented yet (see the README's status table)")
}

fn train(config_path: &std::path::Path, model: Option<PathBuf>, out: PathBuf, resume: bool, quiet: bool) -> anyhow::Result<()> {
    let mut config = TrainConfig::load(config_path)?;
    if let Some(dir) = model {
        let Some(section) = config.model.as_mut() else { anyhow::bail!("--model needs a config with a [model] section") };
        section.dir = dir;
    }
    let opts = TrainOptions { out_dir: out.clone(), resume, stop_after_step: None, show_progress: !quiet && std::io::stderr().is_terminal() };
    match &config.data {
        DataConfig::Blobs(data) => train_blobs(&config, data, &opts),
        DataConfig::Flmm(data) => {
            let task = flmm::train::flmm_task::FlmmTask::new(&config, data)?;
            eprintln!(
                "training the F-LMM head ({:.2}M parameters: U-Net, SAM prompt encoder + mask decoder, text_proj) on {} samples for {} epochs → {}",
                task.params().parameter_count() as f64 / 1e6,
                task.len(),
                config.optim.epochs,
                out.display()
            );
            let summary = flmm::train::train(&task, &config, &opts)?;
            println!(
                "done: {} steps in {:.1}s, loss {:.4} → {:.4}; head written to {}",
                summary.steps,
                summary.seconds,
                summary.first_loss,
                summary.last_loss,
                out.join("head.safetensors").display()
            );
            Ok(())
        }
    }
}

fn train_blobs(config: &TrainConfig, data: &flmm_data::blobs::BlobConfig, opts: &TrainOptions) -> anyhow::Result<()> {
    let device = candle_core::Device::Cpu;
    let samples = flmm_data::blobs::generate(data).context("generating the synthetic data")?;
    let head = flmm_head::UNetHead::new(config.head.clone(), config.seed, &device)?;
    let task = UNetTask { head, samples, data_name: "synthetic-blobs".into() };
    eprintln!(
        "training the U-Net head ({:.2}M parameters) on {} samples for {} epochs → {}",
        task.head.params().parameter_count() as f64 / 1e6,
        task.samples.len(),
        config.optim.epochs,
        opts.out_dir.display()
    );
    let summary = flmm::train::train(&task, config, opts)?;
    let counts = task.evaluate()?;
    let mean_iou = counts.iter().map(|c| c.iou()).sum::<f64>() / counts.len() as f64;
    println!(
        "done: {} steps in {:.1}s, loss {:.4} → {:.4}, training-set mIoU {:.3}; head written to {}",
        summary.steps,
        summary.seconds,
        summary.first_loss,
        summary.last_loss,
        mean_iou,
        opts.out_dir.join("head.safetensors").display()
    );
    Ok(())
}

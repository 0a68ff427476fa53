//! `flmm toy all`: the whole toy world regenerated in one command. Every step is a child `flmm`
//! process (log in `<work>/logs/<step>.log`; each run's step times are appended to
//! `<work>/regeneration.json`); the VLM's two stages (vision tower, then language; two samples at a
//! time) and the refiner pretrain side by side, then the head and the control head. A step whose
//! result already exists is skipped, and the training steps resume from their last checkpoint, so an
//! interrupted regeneration continues where it stopped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::pretrain::{init_dir, model_dir};
use super::sam_pretrain::sam_path;
use super::vision_pretrain::vision_path;
use crate::train::config::TrainConfig;

/// Where `flmm toy all` works and what it reads.
#[derive(Debug, Clone)]
pub struct RegenerateOptions {
    /// Work directory (data, runs, logs, reports).
    pub work: PathBuf,
    /// The head's training config; its paths are replaced by the work directory's.
    pub head_config: PathBuf,
    /// Held-out scenes scored for question answering.
    pub qa_scenes: usize,
}

/// The evaluation's report name (`flmm eval refcoco` on the toy val split, one sentence per ref).
const EVAL_TAG: &str = "refcoco-val-first-single";

/// One step's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTime {
    /// Step name (also its log's name).
    pub step: String,
    /// Wall-clock seconds (0 when skipped).
    pub seconds: f64,
    /// Whether the result was already there.
    pub skipped: bool,
}

/// A step: its name, its `flmm` arguments and the file whose existence means it is done.
struct Step {
    name: &'static str,
    args: Vec<String>,
    done_when: PathBuf,
    /// A training run's directory: `--resume` is added when it holds checkpoints.
    run_dir: Option<PathBuf>,
    /// Compute threads of the step's process (`RAYON_NUM_THREADS`).
    threads: usize,
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

impl Step {
    fn new(name: &'static str, args: &[&str], done_when: PathBuf) -> Self {
        Self { name, args: args.iter().map(|s| s.to_string()).collect(), done_when, run_dir: None, threads: 1 }
    }

    /// Runs the step with `threads` compute threads (the trainer then computes that many samples of a
    /// step side by side).
    fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// A training step that continues from the checkpoints in `run_dir` when there are any.
    fn resuming(mut self, run_dir: PathBuf) -> Self {
        self.run_dir = Some(run_dir);
        self
    }

    /// Starts the step as a child process (`None` when its result exists).
    fn spawn(&self, logs: &Path) -> anyhow::Result<Option<std::process::Child>> {
        if self.done_when.exists() {
            eprintln!("[{}] done already ({} exists)", self.name, self.done_when.display());
            return Ok(None);
        }
        let mut args = self.args.clone();
        if self.run_dir.as_ref().is_some_and(|d| d.join("checkpoints").is_dir()) {
            args.push("--resume".into());
        }
        let log = std::fs::File::create(logs.join(format!("{}.log", self.name)))?;
        eprintln!("[{}] flmm {}", self.name, args.join(" "));
        let child = Command::new(std::env::current_exe()?)
            .args(&args)
            .env("RAYON_NUM_THREADS", self.threads.to_string())
            .env("CANDLE_NUM_THREADS", "1")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting step {}", self.name))?;
        Ok(Some(child))
    }
}

/// Runs one step to its end and returns its record.
fn run_step(step: &Step, logs: &Path) -> anyhow::Result<StepTime> {
    let started = Instant::now();
    let Some(mut child) = step.spawn(logs)? else {
        return Ok(StepTime { step: step.name.into(), seconds: 0.0, skipped: true });
    };
    let status = child.wait()?;
    let log = logs.join(format!("{}.log", step.name));
    anyhow::ensure!(status.success(), "step {} failed ({status}); see {}", step.name, log.display());
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("[{}] finished after {seconds:.0}s", step.name);
    Ok(StepTime { step: step.name.into(), seconds, skipped: false })
}

/// Runs `lanes` side by side, the steps of one lane one after another (a lane stops at its first
/// failure), and records every step's time in lane order.
fn run_lanes(lanes: &[Vec<Step>], logs: &Path, times: &mut Vec<StepTime>) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<Vec<StepTime>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .iter()
            .map(|lane| scope.spawn(move || lane.iter().map(|step| run_step(step, logs)).collect::<anyhow::Result<Vec<_>>>()))
            .collect();
        handles.into_iter().map(|h| h.join().expect("a toy step's thread panicked")).collect()
    });
    for lane in results {
        times.extend(lane?);
    }
    Ok(())
}

/// Writes the head config with the work directory's paths: `<work>/head.toml`.
fn head_config(opts: &RegenerateOptions, w: &Path) -> anyhow::Result<PathBuf> {
    let mut config = TrainConfig::load(&opts.head_config)
        .context("the head's training config: pass --config, or run flmm toy all in the repository root (the default is configs/toy.toml)")?;
    let crate::train::config::DataConfig::Flmm(data) = &mut config.data else {
        anyhow::bail!("{}: the toy head trains on data.kind = \"flmm\"", opts.head_config.display());
    };
    data.root = w.join("data");
    let model = config.model.as_mut().context("the head config needs [model]")?;
    model.dir = model_dir(w);
    let sam = config.sam.as_mut().context("the head config needs [sam]")?;
    sam.checkpoint = sam_path(w);
    sam.cache = Some(w.join("sam-cache"));
    let path = w.join("head.toml");
    flmm_nn::fsutil::write_atomic(&path, toml::to_string(&config)?.as_bytes())?;
    Ok(path)
}

/// Writes the evaluation config for the work directory: `<work>/eval.toml` (absolute paths).
fn eval_config(w: &Path) -> anyhow::Result<PathBuf> {
    let config = serde_json::json!({
        "model": { "dir": model_dir(w) },
        "sam": { "checkpoint": sam_path(w), "cache": w.join("sam-cache") },
        "data": { "root": w.join("data") },
    });
    let path = w.join("eval.toml");
    flmm_nn::fsutil::write_atomic(&path, toml::to_string(&config)?.as_bytes())?;
    Ok(path)
}

/// Regenerates the toy world under `opts.work` and returns each step's time.
pub fn regenerate(opts: &RegenerateOptions) -> anyhow::Result<Vec<StepTime>> {
    let w = opts.work.canonicalize().or_else(|_| {
        std::fs::create_dir_all(&opts.work)?;
        opts.work.canonicalize()
    })?;
    let logs = w.join("logs");
    std::fs::create_dir_all(&logs)?;
    let ws = path_arg(&w);
    // Both configs are written first: a missing or bad head config fails now, not after an hour of
    // pretraining.
    let head_toml = head_config(opts, &w)?;
    let eval_toml = eval_config(&w)?;
    let started = Instant::now();
    let mut times = Vec::new();

    let data = Step::new("data", &["toy", "build", "--work", &ws], w.join("data/toy/qa_val.jsonl"));
    run_lanes(&[vec![data]], &logs, &mut times)?;

    let vision = Step::new("pretrain-vision", &["toy", "pretrain-vision", "--work", &ws, "--quiet"], vision_path(&w))
        .resuming(super::vision_pretrain::run_dir(&w))
        .threads(2);
    let vlm_dir = model_dir(&w);
    let weights = vlm_dir.join("model.safetensors");
    let vlm = Step::new("pretrain-vlm", &["toy", "pretrain-vlm", "--work", &ws, "--quiet"], weights.clone())
        .resuming(super::pretrain::run_dir(&w))
        .threads(2);
    let sam = Step::new("pretrain-sam", &["toy", "pretrain-sam", "--work", &ws, "--quiet"], sam_path(&w)).resuming(super::sam_pretrain::run_dir(&w));
    run_lanes(&[vec![vision, vlm], vec![sam]], &logs, &mut times)?;

    let before = std::fs::read(&weights)?;
    let head = |name: &'static str, dir: &str, model: &Path| {
        let out = w.join(dir);
        let args = ["train", &path_arg(&head_toml), "--model", &path_arg(model), "--out", &path_arg(&out), "--quiet"];
        Step::new(name, &args, out.join("head.safetensors")).resuming(out)
    };
    let qa_scenes = opts.qa_scenes.to_string();
    let qa_file = w.join("reports/qa.json");
    let qa = Step::new("qa", &["toy", "qa", "--model", &path_arg(&vlm_dir), "--val", &qa_scenes, "--out", &path_arg(&qa_file)], qa_file.clone());
    run_lanes(&[vec![head("head", "head-train", &vlm_dir)], vec![head("control-head", "control-train", &init_dir(&w))]], &logs, &mut times)?;
    anyhow::ensure!(std::fs::read(&weights)? == before, "head training changed {}", weights.display());
    eprintln!("the frozen VLM's weights are byte-identical before and after head training");
    run_lanes(&[vec![qa]], &logs, &mut times)?;

    let eval = |name: &'static str, head_dir: &str, model: &Path| {
        let out = w.join("reports").join(name);
        let head = w.join(head_dir).join("head.safetensors");
        let args = ["eval", "refcoco", &path_arg(&eval_toml), "--head", &path_arg(&head), "--model", &path_arg(model), "--out", &path_arg(&out)];
        Step::new(name, &args, out.join(format!("{EVAL_TAG}.json")))
    };
    run_lanes(&[vec![eval("eval", "head-train", &vlm_dir)], vec![eval("eval-control", "control-train", &init_dir(&w))]], &logs, &mut times)?;

    times.push(StepTime { step: "total".into(), seconds: started.elapsed().as_secs_f64(), skipped: false });
    record_run(&w.join(REGENERATION_FILE), &times)?;
    Ok(times)
}

/// The step times of every `flmm toy all` run on a work directory, oldest first.
pub const REGENERATION_FILE: &str = "regeneration.json";

/// Appends one run's step times to the history at `path` (a JSON list of runs, each a list of steps),
/// so a re-run that skips finished steps keeps the times measured when they ran. A file holding one run
/// as a bare list of steps (the earlier format) becomes the history's first run.
pub fn record_run(path: &Path, times: &[StepTime]) -> anyhow::Result<()> {
    let mut runs: Vec<Vec<StepTime>> = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .or_else(|_| serde_json::from_str::<Vec<StepTime>>(&text).map(|one| vec![one]))
            .with_context(|| format!("{} is neither a list of runs nor one run's steps; move it away", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    runs.push(times.to_vec());
    flmm_nn::fsutil::write_atomic(path, serde_json::to_string_pretty(&runs)?.as_bytes())?;
    Ok(())
}

/// The regeneration's results as Markdown: the head's and the control's evaluation tables and the
/// VLM's question-answering accuracy per question kind (from the reports under `<work>/reports`).
pub fn summary(work: &Path) -> anyhow::Result<String> {
    let reports = work.join("reports");
    let read = |p: PathBuf| std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()));
    let mut md = String::from("## Head on the pretrained VLM\n\n");
    md.push_str(&read(reports.join("eval").join(format!("{EVAL_TAG}.md")))?);
    md.push_str("\n## Control: the same head on the untrained VLM\n\n");
    md.push_str(&read(reports.join("eval-control").join(format!("{EVAL_TAG}.md")))?);
    let qa: super::qa::QaReport = serde_json::from_str(&read(reports.join("qa.json"))?)?;
    md.push_str(&format!("\n## The frozen VLM's question answering ({} held-out scenes)\n\n| questions | exact match |\n|---|---|\n", qa.scenes));
    for (kind, tally) in qa.by_kind.iter().chain([(&"all".to_string(), &qa.questions)]) {
        md.push_str(&format!("| {kind} | {:.1} % of {} |\n", 100.0 * tally.accuracy(), tally.total));
    }
    Ok(md)
}

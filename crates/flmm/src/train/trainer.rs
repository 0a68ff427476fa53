//! The training loop: gradient accumulation, the first-step gradient audit, global-norm clipping,
//! AdamW with F-LMM's schedule, JSON-lines metrics, a progress bar, atomic checkpoints and exact
//! resumption.

use super::checkpoint::{self, CheckpointError, LoopState};
use super::config::TrainConfig;
use super::metrics_log::MetricsLog;
use super::task::TrainTask;
use candle_core::{DType, Tensor, Var};
use rayon::prelude::*;
use flmm_nn::optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};
use flmm_nn::rng::Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// How to run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Run directory (metrics, checkpoints, the exported head).
    pub out_dir: PathBuf,
    /// Continue from the newest checkpoint in `out_dir`.
    pub resume: bool,
    /// Stop (as if interrupted) once this many optimizer steps are done.
    pub stop_after_step: Option<u64>,
    /// Draw a progress bar on stderr.
    pub show_progress: bool,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Optimizer steps completed in total.
    pub steps: u64,
    /// Steps the schedule has in total.
    pub total_steps: u64,
    /// Mean loss of the first optimizer step of this invocation.
    pub first_loss: f64,
    /// Mean loss of the last optimizer step.
    pub last_loss: f64,
    /// Newest checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// Wall time of this invocation.
    pub seconds: f64,
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite; nothing was updated or saved after the last good checkpoint.
    #[error("training stopped at step {step}: the loss of sample {sample} is {value} (not finite); the last good checkpoint is {}", describe(.checkpoint))]
    NonFiniteLoss {
        /// The optimizer step being computed.
        step: u64,
        /// The sample index.
        sample: usize,
        /// The loss value.
        value: f64,
        /// The newest checkpoint (kept as it was).
        checkpoint: Option<PathBuf>,
    },
    /// The gradient norm is NaN or infinite.
    #[error("training stopped at step {step}: the gradient norm is {norm} (not finite); the last good checkpoint is {}", describe(.checkpoint))]
    NonFiniteGradient {
        /// The optimizer step.
        step: u64,
        /// The norm.
        norm: f64,
        /// The newest checkpoint.
        checkpoint: Option<PathBuf>,
    },
    /// Some trainable parameters got no gradient on the first step: an op on their path does not
    /// propagate gradients (candle's fused norms, softmax, rope), or they are unused.
    #[error("these trainable parameters received no gradient on the first step: {}", .0.join(", "))]
    MissingGradients(Vec<String>),
    /// The task has no samples.
    #[error("the training set is empty")]
    EmptyDataset,
    /// The checkpoint's configuration differs from the one given.
    #[error("cannot resume: the configuration differs from the one the checkpoint was trained with ({0})")]
    ConfigChanged(PathBuf),
    /// Checkpoint problems.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Metrics file or export problems.
    #[error("{0}")]
    Io(String),
    /// Tensor failures.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

fn describe(checkpoint: &Option<PathBuf>) -> String {
    checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none (no checkpoint was written yet)".into())
}

fn shuffled_order(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    order
}

/// What the samples of one optimizer step add up to: their loss, their mean logs, and the gradients of
/// their mean loss (one slot per trainable variable; `None` where none reached it).
struct StepSum {
    loss_sum: f64,
    logs: BTreeMap<String, f64>,
    grads: Vec<Option<Tensor>>,
}

impl StepSum {
    fn new(vars: usize) -> Self {
        Self { loss_sum: 0.0, logs: BTreeMap::new(), grads: vec![None; vars] }
    }

    /// Adds `other` (the later samples) into `self`.
    fn absorb(&mut self, other: StepSum) -> candle_core::Result<()> {
        self.loss_sum += other.loss_sum;
        for (k, v) in other.logs {
            *self.logs.entry(k).or_default() += v;
        }
        for (slot, g) in self.grads.iter_mut().zip(other.grads) {
            add_gradient(slot, g)?;
        }
        Ok(())
    }
}

fn add_gradient(slot: &mut Option<Tensor>, g: Option<Tensor>) -> candle_core::Result<()> {
    if let Some(g) = g {
        *slot = Some(match slot.take() {
            Some(acc) => (acc + g)?,
            None => g,
        });
    }
    Ok(())
}

/// Forward and backward of `samples` in order, gradients of their mean loss summed. `Ok(Err((sample,
/// loss)))` names the first sample whose loss is not finite.
fn accumulate_serial(task: &dyn TrainTask, vars: &[Var], samples: &[usize], total: usize, dtype: DType) -> Result<Result<StepSum, (usize, f64)>, TrainError> {
    let mut sum = StepSum::new(vars.len());
    for &sample in samples {
        let out = task.sample_loss(sample, dtype)?;
        let value = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Ok(Err((sample, value)));
        }
        sum.loss_sum += value;
        for (k, v) in out.logs {
            *sum.logs.entry(k).or_default() += v / total as f64;
        }
        let step_grads = (out.loss / total as f64)?.backward()?;
        for (slot, var) in sum.grads.iter_mut().zip(vars) {
            add_gradient(slot, step_grads.get(var.as_tensor()).cloned())?;
        }
    }
    Ok(Ok(sum))
}

/// [`accumulate_serial`] with the samples split into contiguous shares, one per rayon thread (at most
/// one share per sample), computed side by side and added in share order — deterministic for a given
/// thread count (`RAYON_NUM_THREADS`), and the same as serial with one thread. The small models of the
/// toy world gain most: their ops are too small to parallelize within, their samples are not.
fn accumulate(task: &dyn TrainTask, vars: &[Var], samples: &[usize], dtype: DType) -> Result<Result<StepSum, (usize, f64)>, TrainError> {
    let shares = rayon::current_num_threads().clamp(1, samples.len().max(1));
    let per_share = samples.len().div_ceil(shares);
    let parts: Vec<_> = samples
        .par_chunks(per_share)
        .map(|chunk| accumulate_serial(task, vars, chunk, samples.len(), dtype))
        .collect();
    let mut total = StepSum::new(vars.len());
    for part in parts {
        match part? {
            Ok(sum) => total.absorb(sum)?,
            Err(bad) => return Ok(Err(bad)),
        }
    }
    Ok(Ok(total))
}

/// Trains `task` as `config` says; see [`TrainOptions`].
pub fn train(task: &dyn TrainTask, config: &TrainConfig, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let n = task.len();
    if n == 0 {
        return Err(TrainError::EmptyDataset);
    }
    let o = &config.optim;
    let names = task.params().names();
    let vars = task.params().vars();
    let adamw = AdamWConfig { lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weight_decay: o.weight_decay };
    let mut opt = AdamW::new(adamw, &vars)?;
    let steps_per_epoch = (n / o.accumulate).max(1) as u64;
    let total_steps = o.epochs * steps_per_epoch;
    let schedule = Schedule { base_lr: o.lr, total_steps, warmup_fraction: o.warmup_fraction, start_factor: o.start_factor };

    let mut last_checkpoint = None;
    let mut state: LoopState = if opts.resume {
        let dir = checkpoint::latest(&opts.out_dir).ok_or_else(|| CheckpointError::NoCheckpoint(opts.out_dir.clone()))?;
        let state = checkpoint::load(&dir, task.params(), &mut opt)?;
        if state.config != *config {
            return Err(TrainError::ConfigChanged(dir));
        }
        last_checkpoint = Some(dir);
        state
    } else {
        checkpoint::initial_state(config)
    };
    let io = |e: std::io::Error| TrainError::Io(e.to_string());
    std::fs::create_dir_all(&opts.out_dir).map_err(io)?;
    let mut log = MetricsLog::open(&opts.out_dir.join("metrics.jsonl"), opts.resume.then_some(state.step)).map_err(io)?;

    let mut rng = state.epoch_rng.clone();
    let mut order = shuffled_order(&mut rng, n);
    let progress = progress_bar(opts.show_progress, total_steps, state.step);
    let (mut first_loss, mut last_loss) = (None, f64::NAN);
    let first_step_of_run = state.step;

    while state.step < total_steps {
        while state.epoch < state.step / steps_per_epoch {
            state.epoch += 1;
            state.epoch_rng = rng.clone();
            order = shuffled_order(&mut rng, n);
        }
        let step_started = Instant::now();
        let position = (state.step % steps_per_epoch) as usize * o.accumulate;
        task.begin_step(state.step);
        let samples: Vec<usize> = (0..o.accumulate).map(|micro| order[(position + micro) % n]).collect();
        let StepSum { loss_sum, logs, mut grads } = match accumulate(task, &vars, &samples, o.dtype.dtype())? {
            Ok(sum) => sum,
            Err((sample, value)) => {
                progress.abandon();
                return Err(TrainError::NonFiniteLoss { step: state.step, sample, value, checkpoint: last_checkpoint });
            }
        };
        if state.step == first_step_of_run {
            let missing: Vec<String> =
                names.iter().zip(&grads).filter(|(n, g)| g.is_none() && !task.may_lack_gradient(n)).map(|(n, _)| n.clone()).collect();
            if !missing.is_empty() {
                progress.abandon();
                return Err(TrainError::MissingGradients(missing));
            }
        }
        let grad_norm = clip_grad_norm(&mut grads, o.max_grad_norm)?;
        if !grad_norm.is_finite() {
            progress.abandon();
            return Err(TrainError::NonFiniteGradient { step: state.step, norm: grad_norm, checkpoint: last_checkpoint });
        }
        let lr = schedule.lr(state.step);
        opt.step(&vars, &grads, lr)?;
        state.step += 1;
        state.optimizer_step = opt.step;

        let loss = loss_sum / o.accumulate as f64;
        first_loss.get_or_insert(loss);
        last_loss = loss;
        let mut record = serde_json::json!({
            "step": state.step,
            "epoch": state.epoch,
            "lr": lr,
            "loss": loss,
            "grad_norm": grad_norm,
            "samples_per_sec": o.accumulate as f64 / step_started.elapsed().as_secs_f64(),
        });
        for (k, v) in logs {
            record[k] = serde_json::json!(v);
        }
        log.write(&record).map_err(io)?;
        progress.set_message(format!("loss {loss:.4}"));
        progress.inc(1);

        if state.step.is_multiple_of(o.checkpoint_every) || state.step == total_steps {
            last_checkpoint = Some(checkpoint::save(&opts.out_dir, &state, task.params(), &opt, o.keep_checkpoints)?);
        }
        if opts.stop_after_step == Some(state.step) {
            break;
        }
    }
    progress.finish_and_clear();
    if state.step == total_steps {
        task.export(&opts.out_dir).map_err(|e| TrainError::Io(format!("exporting the head to {}: {e:#}", opts.out_dir.display())))?;
    }
    Ok(TrainSummary {
        steps: state.step,
        total_steps,
        first_loss: first_loss.unwrap_or(f64::NAN),
        last_loss,
        checkpoint: last_checkpoint,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn progress_bar(show: bool, total: u64, done: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} train [{bar:30}] {pos}/{len} steps  {msg}  {per_sec}  eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(done);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::task::SampleLoss;
    use candle_core::Device;
    use flmm_nn::params::ParamStore;

    /// Sample `i` has loss `Σ (w − i)² · (i + 1)` and logs `i`.
    struct Shifted(ParamStore);

    impl TrainTask for Shifted {
        fn params(&self) -> &ParamStore {
            &self.0
        }
        fn len(&self) -> usize {
            7
        }
        fn sample_loss(&self, index: usize, _dtype: DType) -> candle_core::Result<SampleLoss> {
            let w = self.0.get("w").unwrap().as_tensor();
            let loss = ((w - index as f64)?.sqr()?.sum_all()? * (index + 1) as f64)?;
            Ok(SampleLoss { loss, logs: [("index".to_string(), index as f64)].into() })
        }
        fn export(&self, _dir: &std::path::Path) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn samples_side_by_side_add_up_to_the_serial_sum() {
        let mut params = ParamStore::new();
        params.insert("w", Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap()).unwrap();
        let task = Shifted(params);
        let vars = task.params().vars();
        let samples = [3, 0, 6, 1, 5];
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let sum = pool.install(|| accumulate(&task, &vars, &samples, DType::F32)).unwrap().unwrap();
            (sum.loss_sum, sum.logs["index"], sum.grads[0].as_ref().unwrap().to_vec1::<f32>().unwrap())
        };
        let (loss1, index1, grad1) = run(1);
        let expected_index = samples.iter().sum::<usize>() as f64 / samples.len() as f64;
        assert!((index1 - expected_index).abs() < 1e-12);
        for threads in [2, 3] {
            let (loss, index, grad) = run(threads);
            assert!((loss - loss1).abs() <= 1e-9 * loss1.abs(), "{threads} threads: {loss} vs {loss1}");
            assert!((index - index1).abs() < 1e-12);
            for (a, b) in grad.iter().zip(&grad1) {
                // f32 sums in another grouping: a few ulps.
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{threads} threads: {grad:?} vs {grad1:?}");
            }
        }
    }
}

//! Training checkpoints: `checkpoints/step-NNNNNNNN/` holding the trainable parameters
//! (`params.safetensors`), the AdamW moments (`optimizer.safetensors`) and the loop state
//! (`trainer.json`: step, RNG, optimizer step, config). A checkpoint directory appears atomically
//! (written under a temp name, then renamed) and `checkpoints/latest` names the newest one.

use super::config::TrainConfig;
use flmm_nn::optim::AdamW;
use flmm_nn::params::{checked_tensor, save_tensors, ParamStore, ParamsError};
use flmm_nn::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FORMAT: &str = "flmm-train-checkpoint/1";

/// The training loop's own state, saved beside the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopState {
    /// Format tag.
    pub format: String,
    /// Optimizer steps completed.
    pub step: u64,
    /// The data-order RNG as it was before shuffling epoch `epoch` (that epoch's order is re-derived
    /// from it on resume).
    pub epoch_rng: Rng,
    /// The epoch whose order `epoch_rng` produces.
    pub epoch: u64,
    /// AdamW's step counter (bias correction).
    pub optimizer_step: u64,
    /// The configuration the run was started with.
    pub config: TrainConfig,
}

/// Problems reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Filesystem failure.
    #[error("checkpoint I/O at {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Tensor file problems (missing / mis-shaped keys name the key).
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// `trainer.json` is unreadable or from another format.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Nothing to resume from.
    #[error("no checkpoint to resume from in {0} (start without --resume)")]
    NoCheckpoint(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// Directory holding a run's checkpoints.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint for `state.step` and prunes all but the newest `keep`. Returns its directory.
pub fn save(run_dir: &Path, state: &LoopState, params: &ParamStore, opt: &AdamW, keep: usize) -> Result<PathBuf, CheckpointError> {
    let root = checkpoints_dir(run_dir);
    let name = format!("step-{:08}", state.step);
    let final_dir = root.join(&name);
    let tmp_dir = root.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;

    params.save(&tmp_dir.join("params.safetensors"), "")?;
    let mut moments = HashMap::new();
    for (i, name) in params.names().iter().enumerate() {
        moments.insert(format!("exp_avg/{name}"), opt.exp_avg[i].clone());
        moments.insert(format!("exp_avg_sq/{name}"), opt.exp_avg_sq[i].clone());
    }
    save_tensors(&moments, &tmp_dir.join("optimizer.safetensors"))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| CheckpointError::State { path: tmp_dir.clone(), message: e.to_string() })?;
    flmm_nn::fsutil::write_atomic(&tmp_dir.join("trainer.json"), &json).map_err(io(&tmp_dir))?;

    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
    }
    std::fs::rename(&tmp_dir, &final_dir).map_err(io(&final_dir))?;
    std::fs::File::open(&root).and_then(|d| d.sync_all()).map_err(io(&root))?;
    flmm_nn::fsutil::write_atomic(&root.join("latest"), name.as_bytes()).map_err(io(&root))?;
    prune(&root, keep)?;
    Ok(final_dir)
}

fn prune(root: &Path, keep: usize) -> Result<(), CheckpointError> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io(root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
        .collect();
    dirs.sort();
    let excess = dirs.len().saturating_sub(keep);
    for old in &dirs[..excess] {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    Ok(())
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Option<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let name = std::fs::read_to_string(root.join("latest")).ok()?;
    let dir = root.join(name.trim());
    dir.join("trainer.json").exists().then_some(dir)
}

/// Restores parameters and optimizer moments from `dir` and returns the loop state.
pub fn load(dir: &Path, params: &ParamStore, opt: &mut AdamW) -> Result<LoopState, CheckpointError> {
    let state_path = dir.join("trainer.json");
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: LoopState =
        serde_json::from_str(&text).map_err(|e| CheckpointError::State { path: state_path.clone(), message: e.to_string() })?;
    if state.format != FORMAT {
        return Err(CheckpointError::State { path: state_path, message: format!("format `{}`, expected `{FORMAT}`", state.format) });
    }
    params.load(&dir.join("params.safetensors"), "")?;
    let moments_path = dir.join("optimizer.safetensors");
    let moments = candle_core::safetensors::load(&moments_path, &candle_core::Device::Cpu).map_err(ParamsError::from_tensor(&moments_path))?;
    for (i, (name, var)) in params.iter().enumerate() {
        opt.exp_avg[i] = checked_tensor(&moments, &format!("exp_avg/{name}"), var.shape(), &moments_path)?;
        opt.exp_avg_sq[i] = checked_tensor(&moments, &format!("exp_avg_sq/{name}"), var.shape(), &moments_path)?;
    }
    opt.step = state.optimizer_step;
    Ok(state)
}

/// A fresh loop state at step 0.
pub fn initial_state(config: &TrainConfig) -> LoopState {
    LoopState { format: FORMAT.into(), step: 0, epoch_rng: Rng::new(config.seed ^ 0x5EED_DA7A), epoch: 0, optimizer_step: 0, config: config.clone() }
}

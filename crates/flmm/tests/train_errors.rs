//! Bad training situations stop with a clear message and lose nothing.

use candle_core::{DType, Device, Tensor};
use flmm::train::task::{SampleLoss, TrainTask};
use flmm::train::{train, TrainConfig, TrainError, TrainOptions};
use flmm_nn::params::ParamStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::collections::BTreeMap;

/// Minimizes `(w − 1)²`; optionally returns NaN from call `nan_at` on, and can own an unused parameter.
struct Quadratic {
    params: ParamStore,
    calls: AtomicUsize,
    nan_at: Option<usize>,
}

impl Quadratic {
    fn new(with_unused: bool, nan_at: Option<usize>) -> Self {
        let mut params = ParamStore::new();
        params.insert("w", Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
        if with_unused {
            params.insert("decoder.unused.weight", Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap()).unwrap();
        }
        Self { params, calls: AtomicUsize::new(0), nan_at }
    }
}

impl TrainTask for Quadratic {
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn len(&self) -> usize {
        4
    }
    fn sample_loss(&self, _index: usize, _dtype: DType) -> candle_core::Result<SampleLoss> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let w = self.params.get("w").unwrap().as_tensor();
        let mut loss = (w - 1.0)?.sqr()?.sum_all()?;
        if self.nan_at.is_some_and(|n| call >= n) {
            loss = (loss * f64::NAN)?;
        }
        Ok(SampleLoss { loss, logs: BTreeMap::new() })
    }
    fn export(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        Ok(self.params.save(&dir.join("head.safetensors"), "")?)
    }
}

fn config() -> TrainConfig {
    let mut cfg = TrainConfig::default();
    cfg.optim.lr = 0.1;
    cfg.optim.epochs = 3;
    cfg.optim.checkpoint_every = 2;
    cfg.optim.keep_checkpoints = 2;
    cfg
}

fn opts(dir: &std::path::Path, resume: bool) -> TrainOptions {
    TrainOptions { out_dir: dir.to_path_buf(), resume, stop_after_step: None, show_progress: false }
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let task = Quadratic::new(false, Some(5));
    let err = train(&task, &config(), &opts(tmp.path(), false)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::NonFiniteLoss { step: 5, .. }), "{msg}");
    assert!(msg.contains("not finite") && msg.contains("step-00000004"), "{msg}");
    let latest = flmm::train::checkpoint::latest(tmp.path()).unwrap();
    assert!(latest.ends_with("step-00000004"));
    assert!(!tmp.path().join("head.safetensors").exists());
    // The saved weights are the good ones: resuming with a healthy task finishes the run.
    let healthy = Quadratic::new(false, None);
    let summary = train(&healthy, &config(), &opts(tmp.path(), true)).unwrap();
    assert_eq!(summary.steps, 12);
}

#[test]
fn a_parameter_without_gradient_is_named_on_the_first_step() {
    let tmp = tempfile::tempdir().unwrap();
    let err = train(&Quadratic::new(true, None), &config(), &opts(tmp.path(), false)).unwrap_err();
    assert!(matches!(&err, TrainError::MissingGradients(names) if names == &["decoder.unused.weight".to_string()]), "{err}");
    assert!(err.to_string().contains("decoder.unused.weight"));
}

#[test]
fn a_checkpoint_with_a_missing_or_misshaped_key_is_rejected_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.optim.epochs = 1;
    train(&Quadratic::new(false, None), &cfg, &opts(tmp.path(), false)).unwrap();
    let dir = flmm::train::checkpoint::latest(tmp.path()).unwrap();
    let path = dir.join("params.safetensors");

    let wrong_shape: std::collections::HashMap<String, Tensor> =
        [("w".to_string(), Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap())].into();
    candle_core::safetensors::save(&wrong_shape, &path).unwrap();
    let err = train(&Quadratic::new(false, None), &cfg, &opts(tmp.path(), true)).unwrap_err().to_string();
    assert!(err.contains("key `w` has shape [4], expected [3]"), "{err}");

    let missing: std::collections::HashMap<String, Tensor> =
        [("v".to_string(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap())].into();
    candle_core::safetensors::save(&missing, &path).unwrap();
    let err = train(&Quadratic::new(false, None), &cfg, &opts(tmp.path(), true)).unwrap_err().to_string();
    assert!(err.contains("missing key `w`"), "{err}");
}

#[test]
fn resuming_without_a_checkpoint_or_with_another_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = train(&Quadratic::new(false, None), &config(), &opts(tmp.path(), true)).unwrap_err().to_string();
    assert!(err.contains("no checkpoint to resume from"), "{err}");
    train(&Quadratic::new(false, None), &config(), &opts(tmp.path(), false)).unwrap();
    let mut other = config();
    other.optim.lr = 0.2;
    let err = train(&Quadratic::new(false, None), &other, &opts(tmp.path(), true)).unwrap_err().to_string();
    assert!(err.contains("configuration differs"), "{err}");
}

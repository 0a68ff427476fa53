//! Training the head: configuration, tasks, checkpoints and the training loop.

pub mod checkpoint;
pub mod config;
pub mod flmm_task;
pub mod metrics_log;
pub mod task;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{train, TrainError, TrainOptions, TrainSummary};

//! Errors of the head crate.

/// What can go wrong building, loading or running a head.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The input does not satisfy the head's contract (shape, value range).
    #[error("invalid head input: {0}")]
    InvalidInput(String),
    /// A configuration value is unusable.
    #[error("invalid head configuration: {0}")]
    InvalidConfig(String),
    /// A parameter file is missing keys, mis-shaped or unreadable.
    #[error(transparent)]
    Params(#[from] flmm_nn::params::ParamsError),
    /// A checkpoint file is unreadable, or lacks / mis-shapes a key.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

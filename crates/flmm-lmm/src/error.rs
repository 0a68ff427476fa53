//! Errors of the frozen-backbone room. Every variant names the input at fault and what was expected.

use std::path::PathBuf;

/// Anything that can go wrong loading or running a frozen backbone.
#[derive(Debug, thiserror::Error)]
pub enum LmmError {
    /// A file the model directory must contain is absent.
    #[error("model directory {dir}: missing {file} ({why})")]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The expected file name.
        file: String,
        /// What the file is for.
        why: String,
    },
    /// A file exists but could not be read or parsed.
    #[error("{path}: {message}")]
    BadFile {
        /// The file at fault.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The directory holds a model family flmm does not run (yet).
    #[error("model directory {dir}: architecture {found:?} is not supported; expected one of {expected:?}")]
    UnsupportedArchitecture {
        /// The model directory.
        dir: PathBuf,
        /// The architecture names found in config.json.
        found: Vec<String>,
        /// The architectures flmm can load.
        expected: Vec<String>,
    },
    /// A weight tensor is missing or has the wrong shape.
    #[error("model directory {dir}: weight {key}: {message}")]
    Weight {
        /// The model directory.
        dir: PathBuf,
        /// The checkpoint key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// The text or phrases of a request are unusable.
    #[error("{0}")]
    BadText(String),
    /// The image of a request is unusable.
    #[error("{0}")]
    BadImage(String),
    /// Tokenizer failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The image processor refused the image or its settings.
    #[error(transparent)]
    Processor(#[from] crate::processor::ProcessorError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, LmmError>;

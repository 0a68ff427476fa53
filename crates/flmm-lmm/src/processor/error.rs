//! Errors of the image processors.

use std::path::PathBuf;

/// Why an image could not be processed, or a processor configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// `preprocessor_config.json` could not be read.
    #[error("cannot read processor config {}: {source}", path.display())]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `preprocessor_config.json` is not valid JSON or misses / mistypes a field.
    #[error("processor config {source_name}: {message}")]
    Config {
        /// The file (or label) the config came from.
        source_name: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The image has no pixels.
    #[error("image is empty ({width}x{height}); expected at least 1x1 pixels")]
    EmptyImage {
        /// Width of the image.
        width: u32,
        /// Height of the image.
        height: u32,
    },
    /// The aspect ratio is so extreme that the short side would resize to zero pixels.
    #[error(
        "image {width}x{height} is too thin for a {size}x{size} input: its short side would resize to 0 pixels \
         (aspect ratio above {size}:1)"
    )]
    DegenerateAspect {
        /// Width of the image.
        width: u32,
        /// Height of the image.
        height: u32,
        /// The processor's square input size.
        size: u32,
    },
    /// A mask-sized map is too small or the geometry is inconsistent, so the crop would be empty.
    #[error("cannot crop a {map_height}x{map_width} map to the image region: {message}")]
    BadCrop {
        /// Height of the map.
        map_height: usize,
        /// Width of the map.
        map_width: usize,
        /// What went wrong.
        message: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for the processors.
pub type Result<T> = std::result::Result<T, ProcessorError>;

//! Image processors: turn a decoded image into the pixel tensor a backbone expects, plus the geometry
//! needed to map masks back to the original image.
//!
//! * [`process_llava15`] — LLaVA-1.5 (F-LMM's `CustomLlavaImageProcessor`): `[1, 3, S, S]`.
//! * [`process_llava_next`] — LLaVA-NeXT anyres (F-LMM's `CustomLlavaNextImageProcessor`): `[1 + P, 3, S, S]`.
//!
//! Both resize with [`flmm_data::resample::resize_rgb8`], which is bit-exact with PIL, and rescale /
//! normalise with Hugging Face's f64→f32 arithmetic, so the output equals the Python processors'.
//! Settings come from a Hugging Face `preprocessor_config.json` ([`ProcessorConfig`]).

mod config;
mod error;
mod geometry;
mod llava;
mod llava_next;
mod pixels;

pub use config::{ProcessorConfig, SizeSpec};
pub use error::{ProcessorError, Result};
pub use geometry::{CropRect, ImageGeometry, Padding, Size2};
pub use llava::{llava15_resize_shape, process_llava15};
pub use llava_next::{patch_output_size, process_llava_next, select_best_resolution, DEFAULT_PINPOINTS};

use candle_core::Tensor;

/// How a LLaVA-NeXT image was cut: the chosen pinpoint and its tile grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyResLayout {
    /// The selected pinpoint (height, width) = the padded canvas.
    pub best_resolution: Size2,
    /// Tile rows (`best_resolution.height / S`).
    pub grid_rows: u32,
    /// Tile columns (`best_resolution.width / S`).
    pub grid_cols: u32,
}

/// The output of an image processor.
#[derive(Debug, Clone)]
pub struct Processed {
    /// `[n, 3, S, S]` f32 on the CPU: n = 1 (LLaVA-1.5) or 1 + rows·cols (LLaVA-NeXT, base image first).
    pub pixel_values: Tensor,
    /// Original size, resized size, padded canvas and padding.
    pub geometry: ImageGeometry,
    /// LLaVA-NeXT only: the pinpoint and tile grid.
    pub anyres: Option<AnyResLayout>,
}

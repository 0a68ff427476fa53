//! Building blocks that candle lacks or gets wrong for training.
//!
//! Every op here that sits on a trainable path is composed from candle primitives whose backward is
//! correct, or carries its own backward, and is covered by a finite-difference gradient test
//! ([`gradcheck`]). The fused candle ops `LayerNorm`, `RmsNorm`, `softmax_last_dim` and `rope` drop
//! gradients, `max_pool2d`'s backward is wrong and `upsample_bilinear2d` has none: do not use them on a
//! trainable path.

pub mod act;
pub mod conv;
pub mod fsutil;
pub mod fused;
pub mod fused_group_norm;
pub mod gradcheck;
pub mod init;
pub mod loss;
pub mod metrics;
pub mod norm;
pub mod optim;
pub mod params;
pub mod patch_conv;
pub mod pool;
pub mod resize;
pub mod rng;
pub mod runtime;
pub mod softmax;

pub use candle_core::{DType, Device, Result, Tensor, Var};

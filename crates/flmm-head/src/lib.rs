//! The trainable half of F-LMM: the U-Net mask head that turns a phrase's attention stack into mask
//! logits. Parameter names are the official F-LMM checkpoint keys (without the `mask_head.` prefix
//! inside the store; [`unet::CHECKPOINT_PREFIX`] adds it on disk), so released heads load unchanged.

pub mod error;
pub mod grounding;
pub mod sam;
pub mod torch_file;
pub mod unet;

pub use error::HeadError;
pub use grounding::GroundingHead;
pub use unet::{UNetConfig, UNetHead};

//! Segment Anything: image encoders (ViT-B/L/H, MobileSAM's TinyViT), prompt encoder, mask decoder, and
//! F-LMM's refiner that prompts SAM with a box, the U-Net mask and text tokens.

pub mod cache;
pub mod image_encoder;
pub mod init;
pub mod mask_decoder;
pub mod model;
pub mod parts;
pub mod preprocess;
pub mod prompt_encoder;
pub mod refiner;
pub mod tiny_vit;
pub mod weights;

pub use model::{EncoderConfig, ImageEncoder, Sam};
pub use tiny_vit::{TinyViT, TinyVitConfig};
pub use weights::SamWeights;

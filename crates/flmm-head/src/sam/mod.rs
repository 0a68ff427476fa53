//! Segment Anything: image encoders (ViT-B/L/H, MobileSAM's TinyViT), prompt encoder, mask decoder, and
//! F-LMM's refiner that prompts SAM with a box, the U-Net mask and text tokens.

pub mod weights;

pub use weights::SamWeights;

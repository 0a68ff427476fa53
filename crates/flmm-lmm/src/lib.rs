//! Frozen multimodal backbones: Hugging Face model directories, vision towers, decoders that capture
//! exact phrase-token → image-token attention rows, image processors and prompt templates.

pub mod backbone;
pub mod capture;
pub mod clip;
pub mod config;
pub mod decoder;
pub mod error;
pub mod features;
pub mod generate;
pub mod layers;
pub mod llava;
pub mod model_dir;
pub mod processor;
pub mod prompt;
pub mod summary;
pub mod tokenizer;
pub mod trainable;

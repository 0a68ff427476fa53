//! The toy world end to end: a tiny vision-language model pretrained by flmm on toy conversations
//! ([`vlm`], [`pretrain`]) and its question-answering accuracy ([`qa`]); a tiny SAM refiner pretrained
//! on toy scenes ([`sam_pretrain`]); shipping them as the embedded default model ([`ship`]); all of it in one command ([`all`]).

pub mod all;
pub mod cli;
pub mod pretrain;
pub mod qa;
pub mod sam_pretrain;
pub mod ship;
pub mod vision_pretrain;
pub mod vlm;

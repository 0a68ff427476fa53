//! The toy world end to end: a tiny vision-language model pretrained by flmm on toy conversations
//! ([`vlm`], [`pretrain`]), and its question-answering accuracy ([`qa`]).

pub mod cli;
pub mod pretrain;
pub mod qa;
pub mod ship;
pub mod vlm;

//! The toy world's models: a tiny SAM refiner pretrained on toy scenes ([`sam_pretrain`]).

pub mod sam_pretrain;

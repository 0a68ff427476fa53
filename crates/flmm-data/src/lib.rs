//! Datasets for flmm. Today: synthetic attention-stack → mask sets for testing the trainable head.
//! The COCO / RefCOCO / PNG loaders and the toy world live here too as they arrive.
//! Images: [`image_io`] loads PNG/JPEG as RGB8 with clear errors; [`resample`] resizes bit-exactly like PIL.

pub mod blobs;
pub mod image_io;
pub mod resample;

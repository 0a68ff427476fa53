//! Datasets for flmm. Today: synthetic attention-stack → mask sets for testing the trainable head.
//! The COCO / RefCOCO / PNG loaders and the toy world live here too as they arrive.

pub mod blobs;

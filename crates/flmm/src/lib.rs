//! flmm: F-LMM — grounding frozen large multimodal models — as one program.
//!
//! This crate is the product layer: training ([`train`]), plotting ([`plot`]) and the CLI in
//! `main.rs`. The building blocks live in `flmm-nn`, the head in `flmm-head`, datasets in `flmm-data`.

pub mod attention;
pub mod data_check;
pub mod device;
pub mod eval;
pub mod ground;
pub mod heatmap;
pub mod import;
pub mod pipeline;
pub mod plot;
pub mod png_out;
pub mod sam_cmd;
pub mod toy;
pub mod train;

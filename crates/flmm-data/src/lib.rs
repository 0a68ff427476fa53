//! Datasets for flmm. Today: synthetic attention-stack → mask sets for testing the trainable head.
//! Real data: [`refcoco`] (RefCOCO / RefCOCO+ / RefCOCOg, refs pickles read by [`pickle`]) and
//! [`png_dataset`] (Panoptic Narrative Grounding); COCO instance masks in [`coco_mask`].
//! Toy world: [`toy`] (generated scenes, texts, and a writer of both real formats).
//! Images: [`image_io`] loads PNG/JPEG as RGB8 with clear errors; [`resample`] resizes bit-exactly like PIL.

pub mod blobs;
pub mod coco_mask;
pub mod image_io;
pub mod pickle;
pub mod png_dataset;
pub mod refcoco;
pub mod resample;
pub mod toy;

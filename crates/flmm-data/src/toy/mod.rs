//! The toy world: synthetic scenes of coloured shapes with exact instance masks, texts about them
//! (referring expressions, PNG-style narratives, questions with answers), and a writer that puts them on
//! disk in the real RefCOCO and PNG formats so the same loaders read them.
//!
//! * [`scene`]: [`generate`] (deterministic from `(seed, index)`) and [`render`].
//! * [`text`]: [`referring_expressions`], [`narrative`], [`questions`].
//! * [`conversation`]: pretraining conversations for the toy VLM and the closed [`vocabulary`].
//! * [`writer`]: [`write_toy_dataset`] (layout in the module docs).

pub mod conversation;
pub mod scene;
pub mod text;
pub mod writer;

pub use conversation::{conversation, object_listing, vocabulary, words, Turn};
pub use scene::{
    generate, relation, render, Background, Colour, Relation, Shape, Size, ToyConfig, ToyObject, ToyScene,
};
pub use text::{narrative, questions, referring_expressions, Description, Expression, Narrative, Question};
pub use writer::{dataset_scenes, write_toy_dataset, write_toy_dataset_with, ToyDatasetSummary, ToyWriteError};

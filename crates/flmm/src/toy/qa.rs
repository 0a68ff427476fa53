//! The toy VLM's question-answering accuracy on held-out scenes.
//!
//! Each scene's conversation (description, then every question) runs as one sequence. An answer counts
//! as correct when every one of its tokens and its `</s>` is the model's top choice given the
//! conversation before it — exactly when greedy decoding at that point reproduces the answer and stops.

use std::collections::BTreeMap;

use flmm_data::toy::{conversation, ToyScene, Turn};
use flmm_lmm::prompt::{Template, DEFAULT_IMAGE_PROMPT};
use flmm_lmm::trainable::tokenize_conversation;
use serde::{Deserialize, Serialize};

use super::vlm::ToyVlm;

/// Exact-match counts of one kind of turn.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    /// Answers.
    pub total: usize,
    /// Greedy-exact answers.
    pub correct: usize,
}

impl Tally {
    /// correct / total (0 when empty).
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Accuracy per question kind, over all questions, and of the descriptions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QaReport {
    /// Scenes evaluated.
    pub scenes: usize,
    /// Per kind ("how many", "what colour", "what shape", "what size", "where is", "what is <relation>").
    pub by_kind: BTreeMap<String, Tally>,
    /// All questions.
    pub questions: Tally,
    /// Whole descriptions reproduced exactly.
    pub descriptions: Tally,
    /// Description tokens that are the greedy choice.
    pub description_tokens: Tally,
}

/// The kind of a toy question, from its opening words.
pub fn question_kind(question: &str) -> &'static str {
    const KINDS: [(&str, &str); 9] = [
        ("how many", "how many"),
        ("what colour", "what colour"),
        ("what shape", "what shape"),
        ("what size", "what size"),
        ("where is", "where is"),
        ("what is left of", "what is <relation>"),
        ("what is right of", "what is <relation>"),
        ("what is above", "what is <relation>"),
        ("what is below", "what is <relation>"),
    ];
    KINDS.iter().find(|(prefix, _)| question.starts_with(prefix)).map_or("other", |(_, kind)| kind)
}

/// Scores `vlm` on `scenes` (conversation variant = scene position, all questions asked).
pub fn evaluate_qa(vlm: &ToyVlm, scenes: &[ToyScene]) -> anyhow::Result<QaReport> {
    let mut report = QaReport { scenes: scenes.len(), ..QaReport::default() };
    for (i, scene) in scenes.iter().enumerate() {
        let turns: Vec<Turn> = conversation(scene, DEFAULT_IMAGE_PROMPT, i as u64, usize::MAX);
        let conv = tokenize_conversation(&vlm.tokenizer, Template::Vicuna, &turns)?;
        let out = vlm.model.loss(&vlm.pixels(scene)?, &conv)?;
        let mut hits = out.hits.iter();
        for (t, (turn, &n)) in turns.iter().zip(&conv.turn_targets).enumerate() {
            let turn_hits: Vec<bool> = hits.by_ref().take(n).copied().collect();
            let exact = turn_hits.iter().all(|&h| h);
            let bump = |tally: &mut Tally, ok: bool| {
                tally.total += 1;
                tally.correct += ok as usize;
            };
            if t == 0 {
                bump(&mut report.descriptions, exact);
                report.description_tokens.total += n;
                report.description_tokens.correct += turn_hits.iter().filter(|&&h| h).count();
            } else {
                bump(&mut report.questions, exact);
                bump(report.by_kind.entry(question_kind(&turn.user).into()).or_default(), exact);
            }
        }
    }
    Ok(report)
}

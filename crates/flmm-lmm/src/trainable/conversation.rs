//! Conversations → token ids with next-token targets: every turn is the template's instruction around
//! the user's words, then the answer and `</s>`; only answers and their `</s>` are targets.

use flmm_data::toy::Turn;

use super::Conversation;
use crate::error::{LmmError, Result};
use crate::prompt::Template;
use crate::tokenizer::TextTokenizer;

/// Tokenizes `turns` in `template`'s chat format (BOS first; the first user message carries `<image>`).
pub fn tokenize_conversation(tok: &TextTokenizer, template: Template, turns: &[Turn]) -> Result<Conversation> {
    let eos = tok.token_id("</s>").ok_or_else(|| LmmError::Tokenizer("the tokenizer has no </s> token".into()))?;
    let mut input_ids = Vec::new();
    let mut targets = Vec::new();
    let mut turn_targets = Vec::with_capacity(turns.len());
    for (i, turn) in turns.iter().enumerate() {
        let prompt = tok.encode(&template.instruction(&turn.user), i == 0)?;
        let answer = tok.encode(&turn.assistant, false)?;
        if answer.is_empty() {
            return Err(LmmError::BadText(format!("turn {i} has an empty answer")));
        }
        targets.extend(std::iter::repeat_n(false, prompt.len()));
        input_ids.extend(prompt);
        targets.extend(std::iter::repeat_n(true, answer.len() + 1));
        turn_targets.push(answer.len() + 1);
        input_ids.extend(answer);
        input_ids.push(eos);
    }
    Ok(Conversation { input_ids, targets, turn_targets })
}

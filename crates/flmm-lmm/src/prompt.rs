//! Prompt templates and phrase → token mapping (`mask_ids`), as F-LMM builds its inputs: the template's
//! instruction with the image prompt, then the caption, each piece tokenized on its own.

use crate::error::{LmmError, Result};
use crate::tokenizer::TextTokenizer;

/// The image prompt F-LMM's configs use.
pub const DEFAULT_IMAGE_PROMPT: &str = "<image>\nPlease give me a description of the image.";

/// Chat templates (xtuner's `INSTRUCTION` strings; only the instruction is used, no system prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `USER: {input} ASSISTANT:` (LLaVA-1.5, LLaVA-NeXT-Vicuna, MGM, ...).
    Vicuna,
    /// `[INST] {input} [/INST]` (LLaVA-NeXT-Mistral).
    Mistral,
    /// `User: {input}\n\nAssistant:` (DeepSeek-VL).
    DeepSeek,
    /// Gemma turns (MGM-2B).
    Gemma,
    /// ChatML (`internlm2_chat`, HPT-Air).
    ChatMl,
    /// Llama-3 headers (HPT-1.5).
    Llama3,
}

impl Template {
    /// All templates with their names.
    pub const ALL: [(&'static str, Template); 6] = [
        ("vicuna", Template::Vicuna),
        ("mistral", Template::Mistral),
        ("deepseek", Template::DeepSeek),
        ("gemma", Template::Gemma),
        ("chatml", Template::ChatMl),
        ("llama3", Template::Llama3),
    ];

    /// The template's name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Fills the instruction with `input`.
    pub fn instruction(self, input: &str) -> String {
        match self {
            Template::Vicuna => format!("USER: {input} ASSISTANT:"),
            Template::Mistral => format!("[INST] {input} [/INST]"),
            Template::DeepSeek => format!("User: {input}\n\nAssistant:"),
            Template::Gemma => format!("<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model\n"),
            Template::ChatMl => format!("<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"),
            Template::Llama3 => format!(
                "<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
        }
    }
}

impl std::str::FromStr for Template {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, t)| *t).ok_or_else(|| {
            format!("unknown template {s:?} (one of {})", Self::ALL.map(|(n, _)| n).join(", "))
        })
    }
}

/// One piece of a caption: its text and the phrase it grounds, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The utterance, tokenized on its own.
    pub text: String,
    /// Phrase index, or `None` for ungrounded words.
    pub phrase: Option<usize>,
}

/// A tokenized request: ids and per-token phrase index (-1 = not grounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    /// Token ids: prompt (with BOS and the image token) then caption.
    pub input_ids: Vec<u32>,
    /// Same length: phrase index per token, -1 elsewhere.
    pub mask_ids: Vec<i32>,
    /// Number of phrases.
    pub phrases: usize,
    /// Length of the prompt part.
    pub prompt_len: usize,
}

impl TokenizedText {
    /// Positions of phrase `k`'s tokens.
    pub fn phrase_positions(&self, k: usize) -> Vec<usize> {
        self.mask_ids.iter().enumerate().filter(|(_, &m)| m == k as i32).map(|(i, _)| i).collect()
    }
}

/// Tokenizes `template(image_prompt)` with special tokens, then every segment without them
/// (PNG style: each utterance separately).
pub fn tokenize_segments(
    tok: &TextTokenizer,
    template: Template,
    image_prompt: &str,
    segments: &[Segment],
) -> Result<TokenizedText> {
    let mut input_ids = tok.encode(&template.instruction(image_prompt), true)?;
    let prompt_len = input_ids.len();
    let mut mask_ids = vec![-1; prompt_len];
    let mut phrases = 0;
    for seg in segments {
        let ids = tok.encode(&seg.text, false)?;
        let tag = match seg.phrase {
            Some(k) => {
                if ids.is_empty() {
                    return Err(LmmError::BadText(format!("phrase {:?} produces no tokens", seg.text)));
                }
                phrases = phrases.max(k + 1);
                k as i32
            }
            None => -1,
        };
        mask_ids.extend(std::iter::repeat_n(tag, ids.len()));
        input_ids.extend(ids);
    }
    let out = TokenizedText { input_ids, mask_ids, phrases, prompt_len };
    if let Some(k) = (0..phrases).find(|&k| out.phrase_positions(k).is_empty()) {
        return Err(LmmError::BadText(format!("phrase {k} has no tokens")));
    }
    Ok(out)
}

/// RefCOCO style (spec §5.2): every expression is one phrase, followed by the token of `.`.
pub fn tokenize_expressions(
    tok: &TextTokenizer,
    template: Template,
    image_prompt: &str,
    expressions: &[String],
) -> Result<TokenizedText> {
    let sep = *tok
        .encode(".", false)?
        .last()
        .ok_or_else(|| LmmError::Tokenizer("'.' encodes to no token".into()))?;
    let mut t = tokenize_segments(tok, template, image_prompt, &[])?;
    for (k, text) in expressions.iter().enumerate() {
        let ids = tok.encode(text, false)?;
        if text.trim().is_empty() || ids.is_empty() {
            return Err(LmmError::BadText(format!("expression {k} is empty")));
        }
        t.mask_ids.extend(std::iter::repeat_n(k as i32, ids.len()));
        t.input_ids.extend(ids);
        t.input_ids.push(sep);
        t.mask_ids.push(-1);
    }
    t.phrases = expressions.len();
    Ok(t)
}

/// Splits `text` into segments around the first occurrence of each phrase, searched left to right
/// in the order given. Errors: empty text, an empty phrase, a phrase not found after the previous one.
pub fn segments_from_phrases(text: &str, phrases: &[String]) -> Result<Vec<Segment>> {
    if text.trim().is_empty() {
        return Err(LmmError::BadText("the text is empty".into()));
    }
    if phrases.is_empty() {
        return Err(LmmError::BadText("no phrase given: name at least one span of the text to ground".into()));
    }
    let mut segments = Vec::new();
    let mut cursor = 0;
    for (k, phrase) in phrases.iter().enumerate() {
        let p = phrase.trim();
        if p.is_empty() {
            return Err(LmmError::BadText(format!("phrase {k} is empty")));
        }
        let found = text[cursor..].find(p).map(|i| i + cursor).ok_or_else(|| {
            if text.contains(p) {
                LmmError::BadText(format!(
                    "phrase {p:?} occurs only before the previous phrase; give phrases in text order"
                ))
            } else {
                LmmError::BadText(format!("phrase {p:?} is not in the text {text:?}"))
            }
        })?;
        push_plain(&mut segments, &text[cursor..found]);
        segments.push(Segment { text: p.to_string(), phrase: Some(k) });
        cursor = found + p.len();
    }
    push_plain(&mut segments, &text[cursor..]);
    Ok(segments)
}

fn push_plain(segments: &mut Vec<Segment>, piece: &str) {
    let piece = piece.trim();
    if !piece.is_empty() {
        segments.push(Segment { text: piece.to_string(), phrase: None });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_split_the_text_in_order() {
        let s = segments_from_phrases("A brown dog sits on the grass.", &["brown dog".into(), "the grass".into()]).unwrap();
        let texts: Vec<(&str, Option<usize>)> = s.iter().map(|x| (x.text.as_str(), x.phrase)).collect();
        assert_eq!(texts, [("A", None), ("brown dog", Some(0)), ("sits on", None), ("the grass", Some(1)), (".", None)]);
    }

    #[test]
    fn bad_phrases_are_clear_errors() {
        let e = segments_from_phrases("a cat", &["dog".into()]).unwrap_err().to_string();
        assert!(e.contains("\"dog\" is not in the text"), "{e}");
        let e = segments_from_phrases("a cat", &[" ".into()]).unwrap_err().to_string();
        assert!(e.contains("phrase 0 is empty"), "{e}");
        let e = segments_from_phrases("  ", &["a".into()]).unwrap_err().to_string();
        assert!(e.contains("text is empty"), "{e}");
        let e = segments_from_phrases("cat and dog", &["dog".into(), "cat".into()]).unwrap_err().to_string();
        assert!(e.contains("text order"), "{e}");
    }

    #[test]
    fn templates_parse_by_name() {
        for (name, t) in Template::ALL {
            assert_eq!(name.parse::<Template>().unwrap(), t);
        }
        assert!("nope".parse::<Template>().is_err());
    }
}

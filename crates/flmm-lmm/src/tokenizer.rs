//! `tokenizer.json` (Hugging Face tokenizers) behind a small API with clear errors.

use std::path::Path;

use crate::error::{LmmError, Result};

/// A loaded fast tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| LmmError::BadFile {
            path: path.to_path_buf(),
            message: format!("not a valid tokenizer.json: {e}"),
        })?;
        Ok(Self { inner })
    }

    /// Token ids of `text`; `add_special_tokens` adds what the tokenizer's post-processor adds (BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| LmmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| LmmError::Tokenizer(e.to_string()))
    }

    /// The id of a token string such as `<image>` or `</s>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of one token id.
    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Special tokens of a word-level tokenizer, in id order from 0: unknown, begin and end of sequence.
pub const WORD_LEVEL_SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// Writes a word-level `tokenizer.json` (the toy model's): lower-casing, split into runs of word
/// characters and runs of punctuation (`\w+|[^\w\s]+`), ids [`WORD_LEVEL_SPECIALS`] then `words` in
/// order then `image_token` last; `<s>` is prepended when special tokens are requested, unknown words map
/// to `<unk>`, decoding joins words with spaces. Returns the tokenizer as loaded back from the file.
pub fn write_word_level(path: &Path, words: &[String], image_token: &str) -> Result<TextTokenizer> {
    let mut vocab = serde_json::Map::new();
    let all = WORD_LEVEL_SPECIALS.iter().map(|s| s.to_string()).chain(words.iter().cloned()).chain([image_token.to_string()]);
    for word in all {
        let id = vocab.len();
        if vocab.insert(word.clone(), id.into()).is_some() {
            return Err(LmmError::Tokenizer(format!("word {word:?} appears twice in the vocabulary")));
        }
    }
    let added = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    let mut added_tokens: Vec<serde_json::Value> = WORD_LEVEL_SPECIALS.iter().enumerate().map(|(i, s)| added(i, s)).collect();
    added_tokens.push(added(vocab.len() - 1, image_token));
    let bos = WORD_LEVEL_SPECIALS[1];
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [1], "tokens": [bos]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": WORD_LEVEL_SPECIALS[0]}
    });
    let text = serde_json::to_string_pretty(&json).expect("a JSON value serializes");
    flmm_nn::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| LmmError::BadFile { path: path.to_path_buf(), message: format!("cannot write: {e}") })?;
    TextTokenizer::from_file(path)
}

//! Prompt building with the fixture's Llama-style tokenizer: PNG-style segments and RefCOCO-style
//! concatenated expressions (spec §5.1–5.2).

use std::path::Path;

use flmm_lmm::prompt::{tokenize_expressions, tokenize_segments, Segment, Template, DEFAULT_IMAGE_PROMPT};
use flmm_lmm::tokenizer::TextTokenizer;

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llava/llava15/tokenizer.json")).unwrap()
}

#[test]
fn expressions_are_concatenated_with_the_period_token() {
    let tok = tokenizer();
    let exprs = vec!["brown dog".to_string(), "the green grass".to_string()];
    let t = tokenize_expressions(&tok, Template::Vicuna, DEFAULT_IMAGE_PROMPT, &exprs).unwrap();
    let prompt = tok.encode(&Template::Vicuna.instruction(DEFAULT_IMAGE_PROMPT), true).unwrap();
    let sep = *tok.encode(".", false).unwrap().last().unwrap();
    let a = tok.encode("brown dog", false).unwrap();
    let b = tok.encode("the green grass", false).unwrap();
    let mut want_ids = prompt.clone();
    want_ids.extend(&a);
    want_ids.push(sep);
    want_ids.extend(&b);
    want_ids.push(sep);
    assert_eq!(t.input_ids, want_ids);
    let mut want_mask = vec![-1; prompt.len()];
    want_mask.extend(std::iter::repeat_n(0, a.len()));
    want_mask.push(-1);
    want_mask.extend(std::iter::repeat_n(1, b.len()));
    want_mask.push(-1);
    assert_eq!(t.mask_ids, want_mask);
    assert_eq!((t.phrases, t.prompt_len), (2, prompt.len()));
    assert_eq!(tok.id_token(prompt[0]).as_deref(), Some("<s>"), "BOS from the post-processor");
    assert!(tokenize_expressions(&tok, Template::Vicuna, DEFAULT_IMAGE_PROMPT, &["".into()]).is_err());
}

#[test]
fn segments_tag_each_utterance_tokenized_alone() {
    let tok = tokenizer();
    let segs = [
        Segment { text: "two red balls".into(), phrase: Some(0) },
        Segment { text: "are here".into(), phrase: None },
    ];
    let t = tokenize_segments(&tok, Template::Mistral, DEFAULT_IMAGE_PROMPT, &segs).unwrap();
    let pieces: Vec<String> = t.phrase_positions(0).iter().map(|&p| tok.id_token(t.input_ids[p]).unwrap()).collect();
    assert_eq!(pieces, ["▁two", "▁red", "▁ball", "s"]);
    assert_eq!(t.mask_ids.iter().filter(|&&m| m == -1).count(), t.prompt_len + tok.encode("are here", false).unwrap().len());
}

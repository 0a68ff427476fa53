//! What the toy vision-language model is pretrained on: conversations about a scene whose answers need
//! looking at the named objects, and the closed vocabulary of every toy text.
//!
//! A conversation starts with the image prompt answered by a description (the left-to-right narrative,
//! or a listing that says where each object is), then questions with unique answers in a seeded order:
//! the scene's [`questions`] plus "where is <referring expression>?" for every expression.

use flmm_nn::rng::Rng;

use super::scene::{Background, Colour, Relation, Shape, Size, ToyScene};
use super::text::{count_word, expressions_for, narrative, questions, region};

/// One exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// What the user says.
    pub user: String,
    /// The answer the model learns to give.
    pub assistant: String,
}

/// "circle red large at the top left . square blue small at the bottom ." — every object, left to right,
/// named shape first so that the word after the shape (its colour) needs that object.
pub fn object_listing(scene: &ToyScene) -> String {
    let mut order: Vec<usize> = (0..scene.objects.len()).collect();
    order.sort_by(|&a, &b| scene.objects[a].center.0.total_cmp(&scene.objects[b].center.0));
    let parts: Vec<String> = order
        .into_iter()
        .map(|i| {
            let o = &scene.objects[i];
            format!("{} {} {} at the {} .", o.shape.name(), o.colour.name(), o.size.name(), region(scene, o))
        })
        .collect();
    parts.join(" ")
}

/// The conversation about `scene`: `image_prompt` (which carries the image token) answered by the
/// narrative caption or, for odd `variant`, the [`object_listing`]; then at most `max_questions`
/// question turns in an order drawn from `variant`.
pub fn conversation(scene: &ToyScene, image_prompt: &str, variant: u64, max_questions: usize) -> Vec<Turn> {
    let description = if variant.is_multiple_of(2) { narrative(scene).caption } else { object_listing(scene) };
    let mut qa: Vec<Turn> = questions(scene).into_iter().map(|q| Turn { user: q.question, assistant: q.answer }).collect();
    for (i, o) in scene.objects.iter().enumerate() {
        for e in expressions_for(scene, i) {
            let user = format!("where is {}?", e.text);
            if !qa.iter().any(|t| t.user == user) {
                qa.push(Turn { user, assistant: region(scene, o).into() });
            }
        }
    }
    Rng::new(variant).shuffle(&mut qa);
    qa.truncate(max_questions);
    let mut turns = vec![Turn { user: image_prompt.into(), assistant: description }];
    turns.extend(qa);
    turns
}

/// Splits text into word-level tokens as the toy tokenizer does: lower case, runs of letters/digits and
/// runs of other non-space characters.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut current_is_word = false;
    for c in text.to_lowercase().chars() {
        if c.is_whitespace() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        let is_word = c.is_alphanumeric() || c == '_';
        if !current.is_empty() && is_word != current_is_word {
            out.push(std::mem::take(&mut current));
        }
        current_is_word = is_word;
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Every word any toy text can contain, plus those of `extra` (the chat template and image prompt),
/// sorted and unique.
pub fn vocabulary(extra: &[&str]) -> Vec<String> {
    let mut texts: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let fixed = [
        "a an the picture of , and on background . is at",
        "how many are there ? what colour shape size where object",
        "top left right bottom center",
    ];
    texts.extend(fixed.iter().map(|s| s.to_string()));
    texts.extend(Shape::ALL.iter().flat_map(|s| [s.name().to_string(), s.plural().to_string()]));
    texts.extend(Colour::ALL.iter().map(|c| c.name().to_string()));
    texts.extend([Size::Small, Size::Large].iter().map(|s| s.name().to_string()));
    texts.extend(Background::ALL.iter().map(|b| b.name().to_string()));
    texts.extend([Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below].iter().map(|r| r.words().to_string()));
    texts.extend((0..=10).map(count_word));
    let mut all: Vec<String> = texts.iter().flat_map(|t| words(t)).collect();
    all.sort();
    all.dedup();
    all
}

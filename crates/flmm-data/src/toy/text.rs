//! Texts about toy scenes, built from the scene's structure (never parsed back):
//!
//! * referring expressions that single out one object ([`referring_expressions`]),
//! * PNG-style narratives with grounded and ungrounded segments ([`narrative`]),
//! * questions with unique answers ([`questions`]).

use super::scene::{relation, Colour, Relation, Shape, Size, ToyObject, ToyScene};

/// What an expression says about its target; `None` fields are not mentioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Description {
    /// Colour word, if said.
    pub colour: Option<Colour>,
    /// Shape noun ("object" when `None`).
    pub shape: Option<Shape>,
    /// Size word, if said.
    pub size: Option<Size>,
    /// `<relation> the <colour> <shape>` of the object at that index, if said.
    pub relation: Option<(Relation, usize)>,
}

/// A referring expression with the structure it was written from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    /// Index of the referred object in [`ToyScene::objects`].
    pub target: usize,
    /// The text, e.g. "the small red circle left of the blue square".
    pub text: String,
    /// What the text says.
    pub description: Description,
}

/// Whether object `i` fits the description (attributes and relation) in `scene`.
pub fn matches(scene: &ToyScene, i: usize, d: &Description) -> bool {
    let o = &scene.objects[i];
    d.colour.is_none_or(|c| c == o.colour)
        && d.shape.is_none_or(|s| s == o.shape)
        && d.size.is_none_or(|s| s == o.size)
        && d.relation.is_none_or(|(r, b)| b != i && relation(o, &scene.objects[b]) == Some(r))
}

fn count_matching(scene: &ToyScene, d: &Description) -> usize {
    (0..scene.objects.len()).filter(|&i| matches(scene, i, d)).count()
}

fn noun_phrase(scene: &ToyScene, d: &Description) -> String {
    let mut words: Vec<&str> = Vec::new();
    if let Some(s) = d.size {
        words.push(s.name());
    }
    if let Some(c) = d.colour {
        words.push(c.name());
    }
    words.push(d.shape.map_or("object", Shape::name));
    let mut text = words.join(" ");
    if let Some((r, b)) = d.relation {
        let a = &scene.objects[b];
        text = format!("{text} {} the {} {}", r.words(), a.colour.name(), a.shape.name());
    }
    text
}

/// "the" + noun phrase of a description.
pub fn describe(scene: &ToyScene, d: &Description) -> String {
    format!("the {}", noun_phrase(scene, d))
}

/// The unique colour+shape description of object `i`, if no other object has both.
fn unique_anchor(scene: &ToyScene, i: usize) -> bool {
    let o = &scene.objects[i];
    count_matching(scene, &Description { colour: Some(o.colour), shape: Some(o.shape), size: None, relation: None })
        == 1
}

/// All referring expressions of object `i` that match it and nothing else, simplest first: colour+shape,
/// then size+colour+shape, then with a relation to an object that colour+shape identify; plus the
/// shorter `the <shape>` / `the <colour> object` when those alone are unique. Empty when none exists.
pub fn expressions_for(scene: &ToyScene, i: usize) -> Vec<Expression> {
    let o = &scene.objects[i];
    let mut out: Vec<Description> = Vec::new();
    let base = Description { colour: Some(o.colour), shape: Some(o.shape), size: None, relation: None };
    let sized = Description { size: Some(o.size), ..base };
    if count_matching(scene, &base) == 1 {
        out.push(base);
    } else if count_matching(scene, &sized) == 1 {
        out.push(sized);
    } else {
        'anchors: for b in 0..scene.objects.len() {
            if b == i || !unique_anchor(scene, b) {
                continue;
            }
            let Some(r) = relation(o, &scene.objects[b]) else { continue };
            for d in [base, sized] {
                let d = Description { relation: Some((r, b)), ..d };
                if count_matching(scene, &d) == 1 {
                    out.push(d);
                    break 'anchors;
                }
            }
        }
    }
    if out.is_empty() {
        return Vec::new();
    }
    for d in [
        Description { colour: None, shape: Some(o.shape), size: None, relation: None },
        Description { colour: Some(o.colour), shape: None, size: None, relation: None },
    ] {
        if count_matching(scene, &d) == 1 {
            out.push(d);
        }
    }
    out.into_iter().map(|d| Expression { target: i, text: describe(scene, &d), description: d }).collect()
}

/// For every object that can be singled out, its expressions (see [`expressions_for`]), in object order.
pub fn referring_expressions(scene: &ToyScene) -> Vec<Vec<Expression>> {
    (0..scene.objects.len()).map(|i| expressions_for(scene, i)).filter(|e| !e.is_empty()).collect()
}

/// One utterance of a narrative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarrativeSegment {
    /// The words.
    pub utterance: String,
    /// What it grounds: object indices (empty = not grounded).
    pub objects: Vec<usize>,
    /// Grounded to the background (a "stuff" region).
    pub background: bool,
    /// Refers to several objects ("two green triangles").
    pub plural: bool,
}

/// A multi-phrase narrative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrative {
    /// Full caption (utterances joined, no space before punctuation).
    pub caption: String,
    /// The utterances in order.
    pub segments: Vec<NarrativeSegment>,
}

/// "an" before a vowel-initial word, else "a".
pub fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// English number word for 0–10 (digits beyond).
pub fn count_word(n: usize) -> String {
    const WORDS: [&str; 11] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
    WORDS.get(n).map_or_else(|| n.to_string(), |w| w.to_string())
}

/// The narrative: "A picture of" + one phrase per (colour, shape) group, groups ordered left to right by
/// their leftmost member (so the order is visible in the image, ties by placement order), each singular
/// ("a large red circle") or plural ("two green triangles" covering all of them), joined by ","
/// and "and", then "on" "a dark background" (grounded to the background) ".".
pub fn narrative(scene: &ToyScene) -> Narrative {
    let mut groups: Vec<(Colour, Shape, Vec<usize>)> = Vec::new();
    for (i, o) in scene.objects.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == o.colour && g.1 == o.shape) {
            Some(g) => g.2.push(i),
            None => groups.push((o.colour, o.shape, vec![i])),
        }
    }
    let leftmost = |ids: &[usize]| ids.iter().map(|&i| scene.objects[i].center.0).fold(f32::INFINITY, f32::min);
    groups.sort_by(|a, b| leftmost(&a.2).total_cmp(&leftmost(&b.2)));
    let plain =
        |u: &str| NarrativeSegment { utterance: u.to_string(), objects: vec![], background: false, plural: false };
    let mut segs = vec![plain("A picture of")];
    let ng = groups.len();
    for (k, (colour, shape, ids)) in groups.into_iter().enumerate() {
        if k > 0 {
            segs.push(plain(if k + 1 == ng { "and" } else { "," }));
        }
        let utterance = if ids.len() == 1 {
            let o = &scene.objects[ids[0]];
            let size = o.size.name();
            format!("a {size} {} {}", colour.name(), shape.name())
        } else {
            format!("{} {} {}", count_word(ids.len()), colour.name(), shape.plural())
        };
        let plural = ids.len() > 1;
        segs.push(NarrativeSegment { utterance, objects: ids, background: false, plural });
    }
    segs.push(plain("on"));
    segs.push(NarrativeSegment {
        utterance: format!("a {} background", scene.background.name()),
        objects: vec![],
        background: true,
        plural: false,
    });
    segs.push(plain("."));
    let mut caption = String::new();
    for s in &segs {
        if !caption.is_empty() && s.utterance != "," && s.utterance != "." {
            caption.push(' ');
        }
        caption.push_str(&s.utterance);
    }
    Narrative { caption, segments: segs }
}

/// A question about a scene with its (unique) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
}

/// 3×3 region word of a point: "top left", "top", ..., "center", ..., "bottom right".
pub fn region(scene: &ToyScene, o: &ToyObject) -> &'static str {
    let col = ((o.center.0 / scene.width as f32 * 3.0) as usize).min(2);
    let row = ((o.center.1 / scene.height as f32 * 3.0) as usize).min(2);
    [["top left", "top", "top right"], ["left", "center", "right"], ["bottom left", "bottom", "bottom right"]][row][col]
}

/// Questions whose answers are unique in the scene:
/// `how many <shapes> are there?` (every shape, "zero" included), `what colour is the <shape>?` (shape
/// unique), `what shape is the <colour> object?` (colour unique), and for each object that colour+shape
/// identify: "what size is ...?", "where is ...?" and `what is <left of|right of|above|below> ...?`
/// (only when exactly one object stands in that relation; answer `a|an <colour> <shape>`).
pub fn questions(scene: &ToyScene) -> Vec<Question> {
    let q = |question: String, answer: String| Question { question, answer };
    let objs = &scene.objects;
    let mut out = Vec::new();
    for s in Shape::ALL {
        let n = objs.iter().filter(|o| o.shape == s).count();
        out.push(q(format!("how many {} are there?", s.plural()), count_word(n)));
    }
    for s in Shape::ALL {
        let with: Vec<&ToyObject> = objs.iter().filter(|o| o.shape == s).collect();
        if with.len() == 1 {
            out.push(q(format!("what colour is the {}?", s.name()), with[0].colour.name().into()));
        }
    }
    for c in Colour::ALL {
        let with: Vec<&ToyObject> = objs.iter().filter(|o| o.colour == c).collect();
        if with.len() == 1 {
            out.push(q(format!("what shape is the {} object?", c.name()), with[0].shape.name().into()));
        }
    }
    for (b, anchor) in objs.iter().enumerate() {
        if !unique_anchor(scene, b) {
            continue;
        }
        let name = format!("the {} {}", anchor.colour.name(), anchor.shape.name());
        out.push(q(format!("what size is {name}?"), anchor.size.name().into()));
        out.push(q(format!("where is {name}?"), region(scene, anchor).into()));
        for r in [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below] {
            let hits: Vec<&ToyObject> = objs
                .iter()
                .enumerate()
                .filter(|&(a, o)| a != b && relation(o, anchor) == Some(r))
                .map(|p| p.1)
                .collect();
            if hits.len() == 1 {
                let h = hits[0];
                let answer = format!("{} {} {}", article(h.colour.name()), h.colour.name(), h.shape.name());
                out.push(q(format!("what is {} {name}?", r.words()), answer));
            }
        }
    }
    out
}

//! RefCOCO / RefCOCO+ / RefCOCOg referring-expression segmentation data, read from the files of the
//! public release (lichengunc/refer, as arranged by mmdet and F-LMM's README):
//!
//! ```text
//! <root>/                     F-LMM: data/coco
//!   train2014/COCO_train2014_000000xxxxxx.jpg     (the images; name = instances.json `file_name`)
//!   refcoco/instances.json   refcoco/refs(unc).p  splits train / val / testA / testB
//!   refcoco+/instances.json  refcoco+/refs(unc).p splits train / val / testA / testB
//!   refcocog/instances.json  refcocog/refs(umd).p splits train / val / test
//! ```
//!
//! `instances.json` is COCO instances JSON (`images` with `id`, `file_name`, `height`, `width`;
//! `annotations` with `id`, `image_id`, `category_id`, `segmentation`). `refs(*).p` is a Python 2 pickle
//! (read with [`crate::pickle`]) of a list of refs, each a dict with `ref_id`, `ann_id`, `image_id`,
//! `category_id`, `split`, `sentences` (dicts with `raw`, `sent`, `tokens`, `sent_id`), `sent_ids`,
//! `file_name`.
//!
//! # Grouping (as mmdet 3.3's `RefCocoDataset`, which F-LMM trains and evaluates with)
//!
//! * The refs of the requested split are taken in file order. Refs are **deduplicated by `ann_id`**: a
//!   later ref of the same annotation replaces the earlier one's fields (ref id, sentences, category) but
//!   keeps its position (mmdet updates the shared annotation dict and keys `final_anno` by `ann_id`).
//! * **One sample = one image** with all its (deduplicated) refs, in that order. Images come in order of
//!   their first ref. (mmdet iterates `set(image_ids)`, whose order is CPython's hash-set order; training
//!   shuffles anyway and evaluation sums over the split, so only the order differs.)
//! * Sentences are `raw.lower()` (mmdet: `x['raw'].lower()`), not the tokenised `sent`. Python 2 byte
//!   strings are decoded with [`crate::pickle::decode_text`] (UTF-8, else Latin-1; mmengine's own
//!   `pickle.load` would raise on non-ASCII bytes). Lower-casing is Rust's Unicode `to_lowercase`, the
//!   same as Python's `str.lower` except for a few context-dependent letters (final sigma).
//! * The image path is `<root>/train2014/<images[image_id].file_name>`; the instance mask of a ref is its
//!   annotation's `segmentation` (polygons, RLE or compressed RLE, see [`crate::coco_mask`]) rasterised at
//!   the image's `height × width` — built lazily by [`RefObject::mask`] / [`RefCocoSample::masks`].
//!
//! # Text modes
//!
//! * [`TextMode::Random`] — one sentence per ref, chosen **once** at load time (F-LMM training; mmdet's
//!   `'random'` uses Python's global `random.randint`). Here the choice is reproducible and independent of
//!   the split, the load order and the other refs: for a ref with `n` sentences the index is
//!   `Rng::new(seed ^ splitmix64(ref_id as u64)).below(n)` ([`random_sentence_index`]) with
//!   [`flmm_nn::rng::Rng`] (xoshiro256** seeded through SplitMix64; `below` = high 64 bits of
//!   `next_u64() · n`) and `splitmix64(x)` = the first SplitMix64 output for state `x` (add
//!   `0x9E3779B97F4A7C15`, then the two xor-shift-multiply rounds and the final xor-shift).
//! * [`TextMode::SelectFirst`] — the first sentence (F-LMM's evaluation; one expression per ref).
//! * [`TextMode::All`] — every sentence (mmdet's `'original'`): the standard RES protocol that counts all
//!   expressions; [`RefCocoSample::expressions`] pairs each with its ref (whose mask is repeated).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flmm_nn::rng::Rng;
use serde::Deserialize;

use crate::coco_mask::{Mask, MaskError, Segmentation};
use crate::pickle::{read_pickle_file, PickleFileError, PickleValue};

/// Which dataset of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefDataset {
    /// RefCOCO, UNC partition.
    RefCoco,
    /// RefCOCO+, UNC partition.
    RefCocoPlus,
    /// RefCOCOg, UMD partition.
    RefCocog,
}

impl RefDataset {
    /// Folder under the root: `refcoco`, `refcoco+`, `refcocog`.
    pub fn dir_name(self) -> &'static str {
        match self {
            RefDataset::RefCoco => "refcoco",
            RefDataset::RefCocoPlus => "refcoco+",
            RefDataset::RefCocog => "refcocog",
        }
    }

    /// The refs pickle's file name: `refs(unc).p` or `refs(umd).p`.
    pub fn refs_file_name(self) -> &'static str {
        match self {
            RefDataset::RefCoco | RefDataset::RefCocoPlus => "refs(unc).p",
            RefDataset::RefCocog => "refs(umd).p",
        }
    }

    /// The split names of the partition.
    pub fn splits(self) -> &'static [&'static str] {
        match self {
            RefDataset::RefCoco | RefDataset::RefCocoPlus => &["train", "val", "testA", "testB"],
            RefDataset::RefCocog => &["train", "val", "test"],
        }
    }

    /// The splits F-LMM evaluates (spec §6.2): every split but `train`.
    pub fn eval_splits(self) -> &'static [&'static str] {
        &self.splits()[1..]
    }

    /// `<root>/<dir>/instances.json`, `<root>/<dir>/refs(..).p` and the image folder `<root>/train2014`.
    pub fn paths(self, root: impl AsRef<Path>) -> RefCocoPaths {
        let root = root.as_ref();
        let dir = root.join(self.dir_name());
        RefCocoPaths {
            instances: dir.join("instances.json"),
            refs: dir.join(self.refs_file_name()),
            image_dir: root.join("train2014"),
        }
    }
}

/// The three inputs of one dataset (see [`RefDataset::paths`] for the standard layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefCocoPaths {
    /// COCO instances JSON.
    pub instances: PathBuf,
    /// The refs pickle.
    pub refs: PathBuf,
    /// Folder of the images named by `instances.json`.
    pub image_dir: PathBuf,
}

/// How the sentences of a ref become the sample's expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextMode {
    /// One sentence per ref, drawn once from `seed` (see the module docs for the exact rule).
    Random {
        /// Seed of the draw.
        seed: u64,
    },
    /// The first sentence of each ref.
    SelectFirst,
    /// All sentences of each ref.
    All,
}

/// Loader options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefCocoOptions {
    /// Sentence selection.
    pub text_mode: TextMode,
    /// Check at load time that every sample's image file exists (one `stat` per image).
    pub check_images: bool,
}

impl Default for RefCocoOptions {
    /// `SelectFirst`, images checked.
    fn default() -> Self {
        RefCocoOptions { text_mode: TextMode::SelectFirst, check_images: true }
    }
}

/// One referred object of a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct RefObject {
    /// `ref_id` of the (last) ref of this annotation.
    pub ref_id: i64,
    /// The instance annotation's id.
    pub ann_id: i64,
    /// The ref's `category_id` (the annotation's if the ref has none).
    pub category_id: i64,
    /// The selected sentences, lower-cased (one for `Random`/`SelectFirst`, all for `All`).
    pub sentences: Vec<String>,
    /// How many sentences the ref has in the file.
    pub num_sentences: usize,
    /// The instance's segmentation from `instances.json`.
    pub segmentation: Segmentation,
}

/// One image with all its refs of the split.
#[derive(Debug, Clone, PartialEq)]
pub struct RefCocoSample {
    /// COCO image id.
    pub image_id: i64,
    /// `file_name` from `instances.json`.
    pub file_name: String,
    /// `<image_dir>/<file_name>`.
    pub image_path: PathBuf,
    /// Image height from `instances.json`.
    pub height: u32,
    /// Image width from `instances.json`.
    pub width: u32,
    /// The refs, in dataset order.
    pub refs: Vec<RefObject>,
}

/// One split of one dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct RefCocoSplit {
    /// The split's name.
    pub split: String,
    /// The inputs it was read from.
    pub paths: RefCocoPaths,
    /// One sample per image.
    pub samples: Vec<RefCocoSample>,
}

/// Why a RefCOCO-family split could not be loaded. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum RefCocoError {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `instances.json` is not valid JSON of the expected shape (e.g. truncated).
    #[error("{}: invalid COCO instances JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// The refs pickle could not be parsed.
    #[error(transparent)]
    Pickle(#[from] PickleFileError),
    /// A file parsed but does not have the expected structure.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        msg: String,
    },
    /// A ref points at an annotation that `instances.json` does not have.
    #[error("{}: ref_id {ref_id} refers to ann_id {ann_id}, which is not in {}", refs.display(), instances.display())]
    MissingAnnotation {
        /// The refs pickle.
        refs: PathBuf,
        /// The instances file.
        instances: PathBuf,
        /// The ref.
        ref_id: i64,
        /// The missing annotation id.
        ann_id: i64,
    },
    /// A ref points at an image that `instances.json` does not have.
    #[error("{}: ref_id {ref_id} refers to image_id {image_id}, which is not in {}", refs.display(), instances.display())]
    MissingImageEntry {
        /// The refs pickle.
        refs: PathBuf,
        /// The instances file.
        instances: PathBuf,
        /// The ref.
        ref_id: i64,
        /// The missing image id.
        image_id: i64,
    },
    /// An image file named by `instances.json` does not exist.
    #[error("image file {} (image_id {image_id}, named in {}) does not exist", path.display(), instances.display())]
    MissingImageFile {
        /// The expected image path.
        path: PathBuf,
        /// The image's id.
        image_id: i64,
        /// The instances file that names it.
        instances: PathBuf,
    },
    /// No ref of the file has the requested split.
    #[error("{}: no refs in split {split:?} (splits present: {present})", path.display())]
    UnknownSplit {
        /// The refs pickle.
        path: PathBuf,
        /// The requested split.
        split: String,
        /// The splits found, comma-separated.
        present: String,
    },
    /// An annotation's segmentation is malformed or cannot be rasterised.
    #[error("{}: annotation {ann_id} (image {image_id}): {source}", path.display())]
    Mask {
        /// The instances file.
        path: PathBuf,
        /// The annotation.
        ann_id: i64,
        /// Its image.
        image_id: i64,
        /// What is wrong.
        source: MaskError,
    },
}

impl RefObject {
    /// The instance mask on an image of `height × width` (row-major, 0/1).
    pub fn mask(&self, height: u32, width: u32) -> Result<Mask, MaskError> {
        self.segmentation.to_mask(height, width)
    }
}

impl RefCocoSample {
    /// All expressions of the sample in order, each with the index of its ref in [`Self::refs`]
    /// (mmdet's `text` list; with [`TextMode::All`] a ref appears once per sentence).
    pub fn expressions(&self) -> Vec<(usize, &str)> {
        self.refs.iter().enumerate().flat_map(|(i, r)| r.sentences.iter().map(move |s| (i, s.as_str()))).collect()
    }

    /// One mask per ref, at the image's size.
    pub fn masks(&self) -> Result<Vec<Mask>, MaskError> {
        self.refs.iter().map(|r| r.mask(self.height, self.width)).collect()
    }
}

impl RefCocoSplit {
    /// Number of refs (deduplicated annotations) in the split.
    pub fn num_refs(&self) -> usize {
        self.samples.iter().map(|s| s.refs.len()).sum()
    }

    /// Number of selected expressions in the split.
    pub fn num_expressions(&self) -> usize {
        self.samples.iter().flat_map(|s| &s.refs).map(|r| r.sentences.len()).sum()
    }
}

/// Loads `split` of `dataset` from the standard layout under `root` (F-LMM's `data/coco`).
pub fn load_refcoco(
    root: impl AsRef<Path>,
    dataset: RefDataset,
    split: &str,
    options: &RefCocoOptions,
) -> Result<RefCocoSplit, RefCocoError> {
    load_refcoco_files(&dataset.paths(root), split, options)
}

#[derive(Deserialize)]
struct InstancesJson {
    images: Vec<ImageEntry>,
    annotations: Vec<AnnEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: i64,
    file_name: String,
    height: u32,
    width: u32,
}

#[derive(Deserialize)]
struct AnnEntry {
    id: i64,
    image_id: i64,
    category_id: i64,
    segmentation: serde_json::Value,
}

/// A ref read from the pickle (only the fields used).
struct RawRef {
    ref_id: i64,
    ann_id: i64,
    image_id: i64,
    category_id: Option<i64>,
    sentences: Vec<String>,
}

/// Loads `split` from explicit paths.
pub fn load_refcoco_files(
    paths: &RefCocoPaths,
    split: &str,
    options: &RefCocoOptions,
) -> Result<RefCocoSplit, RefCocoError> {
    let refs_value = read_pickle_file(&paths.refs)?;
    let refs = split_refs(&paths.refs, &refs_value, split)?;

    let bytes =
        std::fs::read(&paths.instances).map_err(|source| RefCocoError::Io { path: paths.instances.clone(), source })?;
    let instances: InstancesJson = serde_json::from_slice(&bytes)
        .map_err(|source| RefCocoError::Json { path: paths.instances.clone(), source })?;
    drop(bytes);
    let images: HashMap<i64, &ImageEntry> = instances.images.iter().map(|i| (i.id, i)).collect();
    let anns: HashMap<i64, &AnnEntry> = instances.annotations.iter().map(|a| (a.id, a)).collect();

    // Deduplicate by ann_id: first position, last ref's fields (mmdet).
    let mut order: Vec<RawRef> = Vec::new();
    let mut pos_of_ann: HashMap<i64, usize> = HashMap::new();
    for r in refs {
        match pos_of_ann.get(&r.ann_id) {
            Some(&p) => order[p] = r,
            None => {
                pos_of_ann.insert(r.ann_id, order.len());
                order.push(r);
            }
        }
    }

    let mut samples: Vec<RefCocoSample> = Vec::new();
    let mut sample_of_image: HashMap<i64, usize> = HashMap::new();
    for r in order {
        let ann = anns.get(&r.ann_id).ok_or_else(|| RefCocoError::MissingAnnotation {
            refs: paths.refs.clone(),
            instances: paths.instances.clone(),
            ref_id: r.ref_id,
            ann_id: r.ann_id,
        })?;
        if ann.image_id != r.image_id {
            return Err(RefCocoError::Format {
                path: paths.refs.clone(),
                msg: format!(
                    "ref_id {} says image_id {} but its annotation {} belongs to image {} in {}",
                    r.ref_id,
                    r.image_id,
                    r.ann_id,
                    ann.image_id,
                    paths.instances.display()
                ),
            });
        }
        let image = images.get(&r.image_id).ok_or_else(|| RefCocoError::MissingImageEntry {
            refs: paths.refs.clone(),
            instances: paths.instances.clone(),
            ref_id: r.ref_id,
            image_id: r.image_id,
        })?;
        let segmentation = Segmentation::from_json(&ann.segmentation).map_err(|source| RefCocoError::Mask {
            path: paths.instances.clone(),
            ann_id: ann.id,
            image_id: ann.image_id,
            source,
        })?;
        let num_sentences = r.sentences.len();
        let sentences = select_sentences(options.text_mode, r.ref_id, r.sentences);
        let obj = RefObject {
            ref_id: r.ref_id,
            ann_id: r.ann_id,
            category_id: r.category_id.unwrap_or(ann.category_id),
            sentences,
            num_sentences,
            segmentation,
        };
        let idx = *sample_of_image.entry(r.image_id).or_insert_with(|| {
            samples.push(RefCocoSample {
                image_id: image.id,
                file_name: image.file_name.clone(),
                image_path: paths.image_dir.join(&image.file_name),
                height: image.height,
                width: image.width,
                refs: Vec::new(),
            });
            samples.len() - 1
        });
        samples[idx].refs.push(obj);
    }

    if options.check_images {
        for s in &samples {
            if !s.image_path.is_file() {
                return Err(RefCocoError::MissingImageFile {
                    path: s.image_path.clone(),
                    image_id: s.image_id,
                    instances: paths.instances.clone(),
                });
            }
        }
    }
    Ok(RefCocoSplit { split: split.to_string(), paths: paths.clone(), samples })
}

/// SplitMix64's output function (a bijective 64-bit mixer).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sentence index [`TextMode::Random`] picks for a ref with `n > 0` sentences.
pub fn random_sentence_index(seed: u64, ref_id: i64, n: usize) -> usize {
    Rng::new(seed ^ splitmix64(ref_id as u64)).below(n)
}

fn select_sentences(mode: TextMode, ref_id: i64, mut all: Vec<String>) -> Vec<String> {
    match mode {
        TextMode::All => all,
        TextMode::SelectFirst => {
            all.truncate(1);
            all
        }
        TextMode::Random { seed } => {
            let i = random_sentence_index(seed, ref_id, all.len());
            vec![all.swap_remove(i)]
        }
    }
}

/// Reads the refs of `split` from the pickle's value, checking the shape.
fn split_refs(path: &Path, value: &PickleValue, split: &str) -> Result<Vec<RawRef>, RefCocoError> {
    let fmt = |msg: String| RefCocoError::Format { path: path.to_path_buf(), msg };
    let list = match value {
        PickleValue::List(v) => v,
        other => return Err(fmt(format!("expected a list of refs, found a {}", other.type_name()))),
    };
    let mut present: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        if r.as_dict().is_none() {
            return Err(fmt(format!("ref #{i}: expected a dict, found a {}", r.type_name())));
        }
        let field = |key: &str| r.get(key).ok_or_else(|| fmt(format!("ref #{i}: no {key:?} key")));
        let int = |key: &str| {
            let v = field(key)?;
            v.as_int().ok_or_else(|| fmt(format!("ref #{i}: {key:?} is a {}, expected an int", v.type_name())))
        };
        let ref_split = field("split")?;
        let ref_split = ref_split
            .as_text()
            .ok_or_else(|| fmt(format!("ref #{i}: \"split\" is a {}, expected a string", ref_split.type_name())))?;
        if !present.iter().any(|p| *p == ref_split) {
            present.push(ref_split.to_string());
        }
        if ref_split != split {
            continue;
        }
        let ref_id = int("ref_id")?;
        let ctx = |msg: String| fmt(format!("ref #{i} (ref_id {ref_id}): {msg}"));
        let sentences = match r.get("sentences").ok_or_else(|| ctx("no \"sentences\" key".into()))? {
            PickleValue::List(s) => s,
            other => return Err(ctx(format!("\"sentences\" is a {}, expected a list", other.type_name()))),
        };
        if sentences.is_empty() {
            return Err(ctx("has no sentences".into()));
        }
        let sentences = sentences
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let raw = s.get("raw").ok_or_else(|| ctx(format!("sentence {j} has no \"raw\" text")))?;
                let text = raw
                    .as_text()
                    .ok_or_else(|| ctx(format!("sentence {j}: \"raw\" is a {}, expected a string", raw.type_name())))?;
                Ok(text.to_lowercase())
            })
            .collect::<Result<Vec<_>, RefCocoError>>()?;
        let category_id = match r.get("category_id") {
            None => None,
            Some(v) => Some(v.as_int().ok_or_else(|| ctx(format!("\"category_id\" is a {}", v.type_name())))?),
        };
        let ann_id = int("ann_id").map_err(|_| ctx("no int \"ann_id\"".into()))?;
        let image_id = int("image_id").map_err(|_| ctx("no int \"image_id\"".into()))?;
        out.push(RawRef { ref_id, ann_id, image_id, category_id, sentences });
    }
    if out.is_empty() {
        return Err(RefCocoError::UnknownSplit {
            path: path.to_path_buf(),
            split: split.to_string(),
            present: present.join(", "),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_index_is_in_range_and_spread() {
        let mut counts = [0usize; 3];
        for ref_id in 0..3000 {
            let i = random_sentence_index(7, ref_id, 3);
            counts[i] += 1;
        }
        assert!(counts.iter().all(|&c| c > 900), "{counts:?}");
        assert_eq!(random_sentence_index(1, 5, 1), 0);
    }

    #[test]
    fn select_modes() {
        let all = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(select_sentences(TextMode::All, 1, all.clone()), all);
        assert_eq!(select_sentences(TextMode::SelectFirst, 1, all.clone()), vec!["a"]);
        let r = select_sentences(TextMode::Random { seed: 3 }, 9, all.clone());
        assert_eq!(r, vec![all[random_sentence_index(3, 9, 3)].clone()]);
    }

    #[test]
    fn shape_errors() {
        let p = Path::new("refs(unc).p");
        let e = split_refs(p, &PickleValue::Dict(vec![]), "train").err().unwrap();
        assert_eq!(e.to_string(), "refs(unc).p: expected a list of refs, found a dict");
        let e = split_refs(p, &PickleValue::List(vec![PickleValue::Int(1)]), "train").err().unwrap();
        assert_eq!(e.to_string(), "refs(unc).p: ref #0: expected a dict, found a int");
        let b = |s: &str| PickleValue::Bytes(s.as_bytes().to_vec());
        let r = PickleValue::Dict(vec![(b("split"), b("val")), (b("ref_id"), PickleValue::Int(4))]);
        let e = split_refs(p, &PickleValue::List(vec![r.clone()]), "train").err().unwrap();
        assert_eq!(e.to_string(), "refs(unc).p: no refs in split \"train\" (splits present: val)");
        let e = split_refs(p, &PickleValue::List(vec![r]), "val").err().unwrap();
        assert_eq!(e.to_string(), "refs(unc).p: ref #0 (ref_id 4): no \"sentences\" key");
    }
}

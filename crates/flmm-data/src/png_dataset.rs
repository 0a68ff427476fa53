//! Panoptic Narrative Grounding (PNG, BCV-Uniandes) on COCO panoptic ground truth, as F-LMM's
//! `PNGDataset` reads it (spec §5.1). Standard layout (F-LMM's README, `data/coco`):
//!
//! ```text
//! <root>/annotations/png_coco_{train,val}2017.json      narratives
//! <root>/annotations/panoptic_{train,val}2017.json      COCO panoptic JSON (images, annotations, categories)
//! <root>/annotations/panoptic_{train,val}2017/*.png     panoptic PNGs
//! <root>/{train,val}2017/*.jpg                          images
//! ```
//!
//! * The narratives file is a list of `{image_id, caption, segments}`; `image_id` may be a string (as in
//!   the release) or a number. `segments` cover the caption in order: `{utterance, segment_ids, plural,
//!   noun}` with `segment_ids` a list of panoptic segment ids (strings in the release; numbers accepted).
//!   An empty list means the utterance is not grounded.
//! * Each grounded segment is one mask: the **union** of its segment ids' pixels in the panoptic PNG,
//!   where a pixel's id is `R + 256·G + 65536·B` (panopticapi `rgb2id`).
//! * `isthing` of a grounded segment (the thing/stuff split of the metrics): **plural → true**; singular →
//!   the `isthing` of the category of its (single) segment in the image's `segments_info`. A singular
//!   segment with more than one id is an error (F-LMM asserts); so is any id that is not a segment of
//!   that image (F-LMM would fail on a singular one and silently produce an empty mask for a plural one).
//! * Narratives with **no grounded segment are skipped** here, deterministically, at load time, and their
//!   positions are listed in [`PngDataset::skipped`]. F-LMM's `__getitem__` instead returns another
//!   narrative drawn *at random* (`random.choice`), also at evaluation time.
//!
//! Masks are read lazily ([`PngNarrative::load_masks`]) as [`Mask`]s (row-major `Vec<u8>` of 0/1, with
//! `height`, `width`) at the panoptic PNG's resolution, which must equal the image's size in the JSON.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::coco_mask::Mask;
use crate::image_io::{load_rgb_image, ImageLoadError};

/// Training or validation split of the standard layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngSplit {
    /// `train2017`.
    Train,
    /// `val2017` (the benchmark).
    Val,
}

/// The four inputs of a PNG split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PngPaths {
    /// `png_coco_*.json`.
    pub narratives: PathBuf,
    /// `panoptic_*.json`.
    pub panoptic_json: PathBuf,
    /// Folder of the panoptic PNGs (named by the panoptic annotations' `file_name`).
    pub panoptic_dir: PathBuf,
    /// Folder of the images (named by the panoptic images' `file_name`).
    pub image_dir: PathBuf,
}

impl PngPaths {
    /// The standard layout under `root` (F-LMM's `data/coco`).
    pub fn standard(root: impl AsRef<Path>, split: PngSplit) -> Self {
        let root = root.as_ref();
        let s = match split {
            PngSplit::Train => "train2017",
            PngSplit::Val => "val2017",
        };
        let ann = root.join("annotations");
        PngPaths {
            narratives: ann.join(format!("png_coco_{s}.json")),
            panoptic_json: ann.join(format!("panoptic_{s}.json")),
            panoptic_dir: ann.join(format!("panoptic_{s}")),
            image_dir: root.join(s),
        }
    }
}

/// Loader options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngOptions {
    /// Check at load time that every kept narrative's image and panoptic PNG exist (two `stat`s each).
    pub check_files: bool,
}

impl Default for PngOptions {
    /// Files checked.
    fn default() -> Self {
        PngOptions { check_files: true }
    }
}

/// One utterance of a narrative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PngSegment {
    /// The text.
    pub utterance: String,
    /// Panoptic segment ids (empty: not grounded).
    pub segment_ids: Vec<u32>,
    /// The PNG annotation's plural flag.
    pub plural: bool,
    /// The PNG annotation's noun flag (unused by F-LMM).
    pub noun: bool,
    /// For grounded segments: the index of its mask among the narrative's masks.
    pub mask_index: Option<usize>,
    /// For grounded segments: thing (true) or stuff (false), by the rule in the module docs.
    pub isthing: Option<bool>,
}

/// The metric split of one mask (F-LMM's `mask_infos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskInfo {
    /// Plural utterance.
    pub plural: bool,
    /// Thing (plural counts as thing).
    pub isthing: bool,
}

/// One narrative with at least one grounded segment.
#[derive(Debug, Clone, PartialEq)]
pub struct PngNarrative {
    /// Position of the narrative in the narratives file.
    pub index: usize,
    /// COCO image id.
    pub image_id: i64,
    /// The caption, if the file has one.
    pub caption: Option<String>,
    /// `<image_dir>/<file_name>`.
    pub image_path: PathBuf,
    /// `<panoptic_dir>/<annotation file_name>`.
    pub panoptic_png: PathBuf,
    /// Image height (panoptic JSON).
    pub height: u32,
    /// Image width (panoptic JSON).
    pub width: u32,
    /// All utterances, in order.
    pub segments: Vec<PngSegment>,
}

/// A loaded PNG split.
#[derive(Debug, Clone, PartialEq)]
pub struct PngDataset {
    /// Where it was read from.
    pub paths: PngPaths,
    /// Narratives with at least one grounded segment, in file order.
    pub narratives: Vec<PngNarrative>,
    /// Positions (in the file) of the narratives skipped because nothing in them is grounded.
    pub skipped: Vec<usize>,
}

/// Why a PNG split or its masks could not be loaded. Every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file is invalid or has the wrong shape (e.g. truncated).
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// A file parsed but its content is inconsistent.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        msg: String,
    },
    /// A file that a narrative needs does not exist.
    #[error("{what} {} (narrative {index}, image_id {image_id}) does not exist", path.display())]
    MissingFile {
        /// "image file" or "panoptic PNG".
        what: &'static str,
        /// The expected path.
        path: PathBuf,
        /// The narrative's position in the narratives file.
        index: usize,
        /// Its image.
        image_id: i64,
    },
    /// The panoptic PNG could not be decoded.
    #[error(transparent)]
    Image(#[from] ImageLoadError),
}

#[derive(Deserialize)]
struct NarrativeJson {
    image_id: IdValue,
    #[serde(default)]
    caption: Option<String>,
    segments: Vec<SegmentJson>,
}

#[derive(Deserialize)]
struct SegmentJson {
    utterance: String,
    segment_ids: Vec<IdValue>,
    #[serde(default)]
    plural: bool,
    #[serde(default)]
    noun: bool,
}

/// An id written as a number or as a decimal string.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Int(i64),
    Str(String),
}

impl IdValue {
    fn get(&self) -> Option<i64> {
        match self {
            IdValue::Int(i) => Some(*i),
            IdValue::Str(s) => s.trim().parse().ok(),
        }
    }

    fn show(&self) -> String {
        match self {
            IdValue::Int(i) => i.to_string(),
            IdValue::Str(s) => format!("{s:?}"),
        }
    }
}

#[derive(Deserialize)]
struct PanopticJson {
    images: Vec<PanImage>,
    annotations: Vec<PanAnnotation>,
    categories: Vec<PanCategory>,
}

#[derive(Deserialize)]
struct PanImage {
    id: i64,
    file_name: String,
    height: u32,
    width: u32,
}

#[derive(Deserialize)]
struct PanAnnotation {
    image_id: i64,
    file_name: String,
    segments_info: Vec<PanSegmentInfo>,
}

#[derive(Deserialize)]
struct PanSegmentInfo {
    id: u32,
    category_id: i64,
}

#[derive(Deserialize)]
struct PanCategory {
    id: i64,
    isthing: i64,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, PngError> {
    let bytes = std::fs::read(path).map_err(|source| PngError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| PngError::Json { path: path.to_path_buf(), source })
}

impl PngDataset {
    /// Loads a split of the standard layout under `root`.
    pub fn load_standard(root: impl AsRef<Path>, split: PngSplit, options: &PngOptions) -> Result<Self, PngError> {
        Self::load(&PngPaths::standard(root, split), options)
    }

    /// Loads a split from explicit paths.
    pub fn load(paths: &PngPaths, options: &PngOptions) -> Result<Self, PngError> {
        let narratives: Vec<NarrativeJson> = read_json(&paths.narratives)?;
        let panoptic: PanopticJson = read_json(&paths.panoptic_json)?;
        let pan_fmt = |msg: String| PngError::Format { path: paths.panoptic_json.clone(), msg };
        let nar_fmt = |msg: String| PngError::Format { path: paths.narratives.clone(), msg };

        let isthing: HashMap<i64, bool> = panoptic.categories.iter().map(|c| (c.id, c.isthing > 0)).collect();
        let images: HashMap<i64, &PanImage> = panoptic.images.iter().map(|i| (i.id, i)).collect();
        let mut anns: HashMap<i64, (&PanAnnotation, HashMap<u32, i64>)> = HashMap::new();
        for a in &panoptic.annotations {
            let segs = a.segments_info.iter().map(|s| (s.id, s.category_id)).collect();
            if anns.insert(a.image_id, (a, segs)).is_some() {
                return Err(pan_fmt(format!("image_id {} has more than one annotation", a.image_id)));
            }
        }

        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for (index, n) in narratives.iter().enumerate() {
            let image_id = n.image_id.get().ok_or_else(|| {
                nar_fmt(format!("narrative {index}: image_id {} is not an integer", n.image_id.show()))
            })?;
            if n.segments.iter().all(|s| s.segment_ids.is_empty()) {
                skipped.push(index);
                continue;
            }
            let image = images.get(&image_id).ok_or_else(|| {
                nar_fmt(format!(
                    "narrative {index}: image_id {image_id} is not an image of {}",
                    paths.panoptic_json.display()
                ))
            })?;
            let (ann, segs) = anns.get(&image_id).ok_or_else(|| {
                pan_fmt(format!(
                    "no panoptic annotation for image_id {image_id} (narrative {index} of {})",
                    paths.narratives.display()
                ))
            })?;
            let mut segments = Vec::with_capacity(n.segments.len());
            let mut k = 0;
            for (j, s) in n.segments.iter().enumerate() {
                let ids = s
                    .segment_ids
                    .iter()
                    .map(|id| {
                        id.get().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| {
                            nar_fmt(format!("narrative {index}, segment {j}: bad segment id {}", id.show()))
                        })
                    })
                    .collect::<Result<Vec<u32>, _>>()?;
                for id in &ids {
                    if !segs.contains_key(id) {
                        return Err(nar_fmt(format!(
                            "narrative {index}, segment {j} ({:?}): segment id {id} is not a segment of image {image_id} in {}",
                            s.utterance,
                            paths.panoptic_json.display()
                        )));
                    }
                }
                let (mask_index, thing) = if ids.is_empty() {
                    (None, None)
                } else {
                    let thing = if s.plural {
                        true
                    } else {
                        if ids.len() != 1 {
                            return Err(nar_fmt(format!(
                                "narrative {index}, segment {j} ({:?}): singular utterance with {} segment ids (expected 1)",
                                s.utterance,
                                ids.len()
                            )));
                        }
                        let cat = segs[&ids[0]];
                        *isthing.get(&cat).ok_or_else(|| {
                            pan_fmt(format!(
                                "category {cat} (segment {} of image {image_id}) is not in categories",
                                ids[0]
                            ))
                        })?
                    };
                    k += 1;
                    (Some(k - 1), Some(thing))
                };
                segments.push(PngSegment {
                    utterance: s.utterance.clone(),
                    segment_ids: ids,
                    plural: s.plural,
                    noun: s.noun,
                    mask_index,
                    isthing: thing,
                });
            }
            let narrative = PngNarrative {
                index,
                image_id,
                caption: n.caption.clone(),
                image_path: paths.image_dir.join(&image.file_name),
                panoptic_png: paths.panoptic_dir.join(&ann.file_name),
                height: image.height,
                width: image.width,
                segments,
            };
            if options.check_files {
                for (what, path) in [("image file", &narrative.image_path), ("panoptic PNG", &narrative.panoptic_png)] {
                    if !path.is_file() {
                        return Err(PngError::MissingFile { what, path: path.clone(), index, image_id });
                    }
                }
            }
            out.push(narrative);
        }
        Ok(PngDataset { paths: paths.clone(), narratives: out, skipped })
    }

    /// Number of grounded masks over all narratives.
    pub fn num_masks(&self) -> usize {
        self.narratives.iter().map(|n| n.num_masks()).sum()
    }
}

/// Reads a panoptic PNG as segment ids (`R + 256·G + 65536·B`), row-major, with its (height, width).
pub fn load_segment_ids(path: impl AsRef<Path>) -> Result<(u32, u32, Vec<u32>), PngError> {
    let img = load_rgb_image(path)?;
    let (w, h) = img.dimensions();
    let ids = img.pixels().map(|p| p[0] as u32 + 256 * p[1] as u32 + 65536 * p[2] as u32).collect();
    Ok((h, w, ids))
}

impl PngNarrative {
    /// The grounded segments, in order (mask `i` belongs to the `i`-th).
    pub fn grounded(&self) -> impl Iterator<Item = &PngSegment> {
        self.segments.iter().filter(|s| s.mask_index.is_some())
    }

    /// Number of masks (grounded segments).
    pub fn num_masks(&self) -> usize {
        self.grounded().count()
    }

    /// `plural` / `isthing` per mask.
    pub fn mask_infos(&self) -> Vec<MaskInfo> {
        self.grounded().map(|s| MaskInfo { plural: s.plural, isthing: s.isthing.unwrap_or(true) }).collect()
    }

    /// One mask per grounded segment (the union of its segment ids), at the image's resolution.
    pub fn load_masks(&self) -> Result<Vec<Mask>, PngError> {
        let (h, w, ids) = load_segment_ids(&self.panoptic_png)?;
        if (h, w) != (self.height, self.width) {
            return Err(PngError::Format {
                path: self.panoptic_png.clone(),
                msg: format!(
                    "panoptic PNG is {h}x{w} (HxW) but image {} is {}x{} in the panoptic JSON",
                    self.image_id, self.height, self.width
                ),
            });
        }
        Ok(self
            .grounded()
            .map(|s| {
                let data = ids.iter().map(|id| s.segment_ids.contains(id) as u8).collect();
                Mask { height: h, width: w, data }
            })
            .collect())
    }
}

//! Writes a toy dataset in the real on-disk formats, so that [`crate::refcoco`] and
//! [`crate::png_dataset`] read it unchanged:
//!
//! ```text
//! <root>/train2014/COCO_train2014_<id:012>.png        every scene (PNG bytes; loaders sniff the format)
//! <root>/refcoco/instances.json                       COCO instances: one annotation per object,
//!                                                     compressed-RLE segmentation, area, bbox, category = shape
//! <root>/refcoco/refs(unc).p                          protocol-2 pickle of refs, splits train / val
//! <root>/{train,val}2017/<id:012>.png                 the same scenes for PNG
//! <root>/annotations/panoptic_{train,val}2017.json    COCO panoptic JSON (shapes are things, background is stuff)
//! <root>/annotations/panoptic_{train,val}2017/<id:012>.png   id = R + 256·G + 65536·B
//! <root>/annotations/png_coco_{train,val}2017.json    narratives (segment ids as strings, as the release)
//! <root>/toy/qa_{train,val}.jsonl                     {"image", "question", "answer"} per line
//! ```
//!
//! Scene `k` (0-based) of the stream is image id `k + 1`; the first `n_train` scenes are train, the next
//! `n_val` are val. Annotation ids are `image_id · 10 + object index`; panoptic segment id of object `k` is
//! `(k + 1) + 256 · category_id`, the background's is `65536 · 5 + 1`. Every file is written atomically.

use std::path::{Path, PathBuf};

use flmm_nn::fsutil::write_atomic;
use serde_json::{json, Value};

use super::scene::{generate, render, Shape, ToyConfig, ToyScene};
use super::text::{narrative, questions, referring_expressions};
use crate::coco_mask::{Mask, Rle};
use crate::pickle::PickleValue;

/// Category id of the background ("stuff") in the panoptic files.
pub const BACKGROUND_CATEGORY: i64 = 5;

/// Panoptic segment id of object `k` of a scene.
pub fn object_segment_id(k: usize, shape: Shape) -> u32 {
    (k as u32 + 1) + 256 * shape.category_id() as u32
}

/// Panoptic segment id of the background.
pub const BACKGROUND_SEGMENT_ID: u32 = 65536 * 5 + 1;

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
pub enum ToyWriteError {
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// PNG encoding failed.
    #[error("cannot encode {}: {source}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToyDatasetSummary {
    /// Scenes (images) written.
    pub images: usize,
    /// Instance annotations (objects).
    pub annotations: usize,
    /// Refs (objects with at least one referring expression), train + val.
    pub refs: usize,
    /// Narratives, train + val.
    pub narratives: usize,
    /// Question–answer lines, train + val.
    pub questions: usize,
}

/// Writes `n_train + n_val` scenes of stream `seed` at the default [`ToyConfig`] under `root`.
pub fn write_toy_dataset(
    root: &Path,
    seed: u64,
    n_train: usize,
    n_val: usize,
) -> Result<ToyDatasetSummary, ToyWriteError> {
    write_toy_dataset_with(root, seed, n_train, n_val, &ToyConfig::default())
}

/// The scenes of a dataset written with these arguments, in image-id order (train first).
pub fn dataset_scenes(seed: u64, n_train: usize, n_val: usize, config: &ToyConfig) -> Vec<ToyScene> {
    (0..(n_train + n_val) as u64).map(|k| generate(seed, k, config)).collect()
}

/// What one split accumulates: panoptic images, panoptic annotations, narratives, qa lines.
type SplitFiles = (Vec<Value>, Vec<Value>, Vec<Value>, String);

fn write(path: &Path, bytes: &[u8]) -> Result<(), ToyWriteError> {
    write_atomic(path, bytes).map_err(|source| ToyWriteError::Io { path: path.to_path_buf(), source })
}

fn png_bytes(img: &image::RgbImage, path: &Path) -> Result<Vec<u8>, ToyWriteError> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|source| ToyWriteError::Encode { path: path.to_path_buf(), source })?;
    Ok(buf.into_inner())
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialising a JSON value cannot fail")
}

fn rle_of(data: &[u8], scene: &ToyScene) -> Rle {
    Rle::encode(&Mask { height: scene.height, width: scene.width, data: data.to_vec() })
}

fn bbox_json(rle: &Rle) -> Value {
    json!(rle.bbox())
}

/// Same as [`write_toy_dataset`] with explicit scene settings.
pub fn write_toy_dataset_with(
    root: &Path,
    seed: u64,
    n_train: usize,
    n_val: usize,
    config: &ToyConfig,
) -> Result<ToyDatasetSummary, ToyWriteError> {
    let scenes = dataset_scenes(seed, n_train, n_val, config);
    let mut summary = ToyDatasetSummary { images: scenes.len(), ..Default::default() };
    let categories: Vec<Value> = Shape::ALL
        .iter()
        .map(|s| json!({ "id": s.category_id(), "name": s.name(), "supercategory": "shape" }))
        .collect();
    let mut coco_images = Vec::new();
    let mut coco_anns = Vec::new();
    let mut refs = Vec::new();
    let (mut ref_id, mut sent_id) = (0i64, 0i64);
    let mut pan: [SplitFiles; 2] = Default::default();

    for (k, scene) in scenes.iter().enumerate() {
        let image_id = k as i64 + 1;
        let s = usize::from(k >= n_train);
        let (split, split2017) = [("train", "train2017"), ("val", "val2017")][s];
        let img = render(scene);
        let coco_name = format!("COCO_train2014_{image_id:012}.png");
        let coco_path = root.join("train2014").join(&coco_name);
        let bytes = png_bytes(&img, &coco_path)?;
        write(&coco_path, &bytes)?;
        let pan_name = format!("{image_id:012}.png");
        write(&root.join(split2017).join(&pan_name), &bytes)?;
        let (w, h) = (scene.width, scene.height);
        coco_images.push(json!({ "id": image_id, "file_name": coco_name, "height": h, "width": w }));

        // Instances and panoptic segments.
        let mut ids_png = image::RgbImage::new(w, h);
        let mut segments_info = Vec::new();
        let mut put_segment = |mask: &[u8], id: u32, category: i64, rle: &Rle| {
            for (p, &m) in mask.iter().enumerate() {
                if m != 0 {
                    let px = [(id & 255) as u8, ((id >> 8) & 255) as u8, ((id >> 16) & 255) as u8];
                    ids_png.put_pixel(p as u32 % w, p as u32 / w, image::Rgb(px));
                }
            }
            segments_info.push(json!({
                "id": id, "category_id": category, "area": rle.area(), "bbox": bbox_json(rle), "iscrowd": 0
            }));
        };
        for (i, o) in scene.objects.iter().enumerate() {
            let rle = rle_of(&o.mask, scene);
            coco_anns.push(json!({
                "id": image_id * 10 + i as i64,
                "image_id": image_id,
                "category_id": o.shape.category_id(),
                "segmentation": rle.to_json(),
                "area": rle.area(),
                "bbox": bbox_json(&rle),
                "iscrowd": 0,
            }));
            put_segment(&o.mask, object_segment_id(i, o.shape), o.shape.category_id(), &rle);
        }
        let bg = scene.background_mask();
        let bg_rle = rle_of(&bg, scene);
        if bg_rle.area() > 0 {
            put_segment(&bg, BACKGROUND_SEGMENT_ID, BACKGROUND_CATEGORY, &bg_rle);
        }
        summary.annotations += scene.objects.len();
        let pan_png_path = root.join("annotations").join(format!("panoptic_{split2017}")).join(&pan_name);
        write(&pan_png_path, &png_bytes(&ids_png, &pan_png_path)?)?;
        pan[s].0.push(json!({ "id": image_id, "file_name": pan_name, "height": h, "width": w }));
        pan[s].1.push(json!({ "image_id": image_id, "file_name": pan_name, "segments_info": segments_info }));

        // Refs.
        for exprs in referring_expressions(scene) {
            let target = exprs[0].target;
            ref_id += 1;
            let b = |s: &str| PickleValue::Bytes(s.as_bytes().to_vec());
            let mut sentences = Vec::new();
            let mut sent_ids = Vec::new();
            for e in &exprs {
                sent_id += 1;
                let tokens = e.text.split(' ').map(b).collect();
                sentences.push(PickleValue::Dict(vec![
                    (b("tokens"), PickleValue::List(tokens)),
                    (b("raw"), b(&e.text)),
                    (b("sent_id"), PickleValue::Int(sent_id)),
                    (b("sent"), b(&e.text)),
                ]));
                sent_ids.push(PickleValue::Int(sent_id));
            }
            let o = &scene.objects[target];
            refs.push(PickleValue::Dict(vec![
                (b("sent_ids"), PickleValue::List(sent_ids)),
                (b("file_name"), b(&format!("COCO_train2014_{image_id:012}_{}.png", image_id * 10 + target as i64))),
                (b("ann_id"), PickleValue::Int(image_id * 10 + target as i64)),
                (b("ref_id"), PickleValue::Int(ref_id)),
                (b("image_id"), PickleValue::Int(image_id)),
                (b("split"), b(split)),
                (b("sentences"), PickleValue::List(sentences)),
                (b("category_id"), PickleValue::Int(o.shape.category_id())),
            ]));
            summary.refs += 1;
        }

        // Narrative.
        let nar = narrative(scene);
        let segments: Vec<Value> = nar
            .segments
            .iter()
            .map(|seg| {
                let ids: Vec<String> = if seg.background {
                    if bg_rle.area() > 0 {
                        vec![BACKGROUND_SEGMENT_ID.to_string()]
                    } else {
                        vec![]
                    }
                } else {
                    seg.objects.iter().map(|&i| object_segment_id(i, scene.objects[i].shape).to_string()).collect()
                };
                let noun = !ids.is_empty();
                json!({ "utterance": seg.utterance, "segment_ids": ids, "plural": seg.plural, "noun": noun })
            })
            .collect();
        pan[s].2.push(json!({ "image_id": image_id.to_string(), "caption": nar.caption, "segments": segments }));
        summary.narratives += 1;

        // Questions.
        for q in questions(scene) {
            let line =
                json!({ "image": format!("{split2017}/{pan_name}"), "question": q.question, "answer": q.answer });
            pan[s].3.push_str(&line.to_string());
            pan[s].3.push('\n');
            summary.questions += 1;
        }
    }

    let instances = json!({
        "info": { "description": format!("flmm toy world, seed {seed}") },
        "images": coco_images,
        "annotations": coco_anns,
        "categories": categories,
    });
    write(&root.join("refcoco").join("instances.json"), &json_bytes(&instances))?;
    write(&root.join("refcoco").join("refs(unc).p"), &encode_pickle(&PickleValue::List(refs)))?;

    let mut pan_categories = categories.clone();
    for c in &mut pan_categories {
        c["isthing"] = json!(1);
    }
    pan_categories
        .push(json!({ "id": BACKGROUND_CATEGORY, "name": "background", "supercategory": "stuff", "isthing": 0 }));
    for (s, (images, anns, narratives, qa)) in pan.into_iter().enumerate() {
        let (split, split2017) = [("train", "train2017"), ("val", "val2017")][s];
        let ann = root.join("annotations");
        let panoptic = json!({ "images": images, "annotations": anns, "categories": pan_categories });
        write(&ann.join(format!("panoptic_{split2017}.json")), &json_bytes(&panoptic))?;
        write(&ann.join(format!("png_coco_{split2017}.json")), &json_bytes(&Value::Array(narratives)))?;
        write(&root.join("toy").join(format!("qa_{split}.jsonl")), qa.as_bytes())?;
    }
    Ok(summary)
}

/// Encodes a value as a protocol-2 pickle the way Python 2 would for plain data (without memo opcodes):
/// `PROTO 2`, `EMPTY_LIST`/`EMPTY_DICT` + `MARK` … `APPENDS`/`SETITEMS`, `BININT1`/`BININT2`/`BININT`/`LONG1`,
/// `SHORT_BINSTRING`/`BINSTRING` for byte strings, `BINUNICODE`, `BINFLOAT`, tuples, `NONE`, `NEWTRUE`/`NEWFALSE`.
pub fn encode_pickle(value: &PickleValue) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    encode_value(value, &mut out);
    out.push(b'.');
    out
}

fn encode_value(v: &PickleValue, out: &mut Vec<u8>) {
    match v {
        PickleValue::None => out.push(b'N'),
        PickleValue::Bool(b) => out.push(if *b { 0x88 } else { 0x89 }),
        PickleValue::Int(i) => {
            if (0..256).contains(i) {
                out.extend([b'K', *i as u8]);
            } else if (0..65536).contains(i) {
                out.push(b'M');
                out.extend((*i as u16).to_le_bytes());
            } else if let Ok(i32v) = i32::try_from(*i) {
                out.push(b'J');
                out.extend(i32v.to_le_bytes());
            } else {
                out.extend([0x8a, 8]);
                out.extend(i.to_le_bytes());
            }
        }
        PickleValue::Float(f) => {
            out.push(b'G');
            out.extend(f.to_be_bytes());
        }
        PickleValue::Bytes(b) => {
            if b.len() < 256 {
                out.extend([b'U', b.len() as u8]);
            } else {
                out.push(b'T');
                out.extend((b.len() as u32).to_le_bytes());
            }
            out.extend(b);
        }
        PickleValue::Str(s) => {
            out.push(b'X');
            out.extend((s.len() as u32).to_le_bytes());
            out.extend(s.as_bytes());
        }
        PickleValue::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                items.iter().for_each(|x| encode_value(x, out));
                out.push(b'e');
            }
        }
        PickleValue::Tuple(items) => {
            out.push(b'(');
            items.iter().for_each(|x| encode_value(x, out));
            out.push(b't');
        }
        PickleValue::Dict(pairs) => {
            out.push(b'}');
            if !pairs.is_empty() {
                out.push(b'(');
                for (k, x) in pairs {
                    encode_value(k, out);
                    encode_value(x, out);
                }
                out.push(b'u');
            }
        }
    }
}

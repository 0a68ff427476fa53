//! RefCOCO-family and Panoptic Narrative Grounding loaders on tiny datasets in the real formats.
//!
//! Fixture: `tests/fixtures/datasets/` from `tools/fixtures/refcoco_png_fixture.py` — real COCO
//! annotations (the two-cats image #39769 with its polygons; panopticapi's val2017 panoptic sample
//! #142238 / #439180 with their PNGs), refs pickled with Python 2 cPickle's protocol-2 opcodes (one
//! Latin-1 sentence, one `unicode` sentence, one > 255 bytes), hand-written narratives. `expected.json`
//! holds what the script computed (and cross-checked against mmdet's `RefCocoDataset` and pycocotools).

use std::path::{Path, PathBuf};

use flmm_data::coco_mask::Mask;
use flmm_data::image_io::load_rgb_image;
use flmm_data::pickle::read_pickle_file;
use flmm_data::png_dataset::{load_segment_ids, MaskInfo, PngDataset, PngOptions, PngSplit};
use flmm_data::refcoco::{load_refcoco, random_sentence_index, RefCocoOptions, RefCocoSplit, RefDataset, TextMode};
use serde_json::Value;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/datasets")
}

fn coco_root() -> PathBuf {
    fixture().join("coco")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).unwrap()
}

const DATASETS: [RefDataset; 3] = [RefDataset::RefCoco, RefDataset::RefCocoPlus, RefDataset::RefCocog];

fn load(root: &Path, ds: RefDataset, split: &str, text_mode: TextMode) -> RefCocoSplit {
    load_refcoco(root, ds, split, &RefCocoOptions { text_mode, check_images: true })
        .unwrap_or_else(|e| panic!("{} {split}: {e}", ds.dir_name()))
}

fn all_sentences(exp: &Value, ds: RefDataset, split: &str) -> Vec<Vec<String>> {
    exp["refcoco_family"][ds.dir_name()][split]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|img| img["refs"].as_array().unwrap())
        .map(|r| r["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .collect()
}

/// Copies the fixture to a temporary directory that a test may damage.
fn scratch_copy() -> tempfile::TempDir {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), dir.path());
    dir
}

// ------------------------------------------------------------------------------------------------
// RefCOCO family
// ------------------------------------------------------------------------------------------------

#[test]
fn refcoco_family_splits_match_expected() {
    let exp = expected();
    for ds in DATASETS {
        for &split in ds.splits() {
            let got = load(&coco_root(), ds, split, TextMode::All);
            let want = exp["refcoco_family"][ds.dir_name()][split].as_array().unwrap();
            assert_eq!(got.samples.len(), want.len(), "{} {split}: images", ds.dir_name());
            for (s, w) in got.samples.iter().zip(want) {
                assert_eq!(s.image_id, w["image_id"].as_i64().unwrap());
                assert!(s.image_path.ends_with(w["file_name"].as_str().unwrap()), "{}", s.image_path.display());
                assert_eq!(s.image_path, coco_root().join(w["file_name"].as_str().unwrap()));
                assert_eq!(
                    (s.height as u64, s.width as u64),
                    (w["height"].as_u64().unwrap(), w["width"].as_u64().unwrap())
                );
                let wrefs = w["refs"].as_array().unwrap();
                assert_eq!(s.refs.len(), wrefs.len(), "{} {split} image {}", ds.dir_name(), s.image_id);
                for (r, wr) in s.refs.iter().zip(wrefs) {
                    assert_eq!(r.ref_id, wr["ref_id"].as_i64().unwrap());
                    assert_eq!(r.ann_id, wr["ann_id"].as_i64().unwrap());
                    assert_eq!(r.category_id, wr["category_id"].as_i64().unwrap());
                    let ws: Vec<&str> =
                        wr["sentences"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                    assert_eq!(r.sentences, ws);
                    assert_eq!(r.num_sentences, ws.len());
                }
            }
        }
    }
}

#[test]
fn refcoco_counts_per_split() {
    // (images, refs, expressions with All) per split, as written by the fixture script.
    let cases: [(RefDataset, &str, usize, usize, usize); 11] = [
        (RefDataset::RefCoco, "train", 2, 4, 8),
        (RefDataset::RefCoco, "val", 1, 2, 3),
        (RefDataset::RefCoco, "testA", 1, 2, 3),
        (RefDataset::RefCoco, "testB", 1, 2, 3),
        (RefDataset::RefCocoPlus, "train", 1, 2, 3),
        (RefDataset::RefCocoPlus, "val", 1, 1, 1),
        (RefDataset::RefCocoPlus, "testA", 1, 1, 1),
        (RefDataset::RefCocoPlus, "testB", 1, 1, 1),
        (RefDataset::RefCocog, "train", 1, 2, 3),
        (RefDataset::RefCocog, "val", 1, 1, 1),
        (RefDataset::RefCocog, "test", 1, 1, 2),
    ];
    for (ds, split, images, refs, exprs) in cases {
        let all = load(&coco_root(), ds, split, TextMode::All);
        assert_eq!(
            (all.samples.len(), all.num_refs(), all.num_expressions()),
            (images, refs, exprs),
            "{} {split}",
            ds.dir_name()
        );
        let first = load(&coco_root(), ds, split, TextMode::SelectFirst);
        assert_eq!((first.num_refs(), first.num_expressions()), (refs, refs));
        let sample = &all.samples[0];
        assert_eq!(sample.expressions().len(), sample.refs.iter().map(|r| r.sentences.len()).sum::<usize>());
    }
    assert_eq!(RefDataset::RefCocog.eval_splits(), ["val", "test"]);
    assert_eq!(RefDataset::RefCocoPlus.eval_splits(), ["val", "testA", "testB"]);
}

#[test]
fn sentences_are_lowercased_raw_with_latin1_fallback() {
    let train = load(&coco_root(), RefDataset::RefCoco, "train", TextMode::All);
    let cat = &train.samples[0].refs[0];
    assert_eq!(cat.ref_id, 0);
    // `raw` is the Latin-1 byte string b"Cat on the left, caf\xe9 colour" (not valid UTF-8).
    assert_eq!(cat.sentences, ["cat on the left, café colour", "left cat", "tabby on the left"]);
    // A Python 2 `unicode` sentence (BINUNICODE).
    assert_eq!(train.samples[0].refs[1].sentences[0], "the cat on the right, naïve and sleepy");
    // The raw bytes really are Latin-1 in the pickle.
    let refs = read_pickle_file(coco_root().join("refcoco/refs(unc).p")).unwrap();
    let raw = refs.as_seq().unwrap()[0].get("sentences").unwrap().as_seq().unwrap()[0].get("raw").unwrap().clone();
    let flmm_data::pickle::PickleValue::Bytes(raw) = raw else { panic!("raw is not a byte string: {raw:?}") };
    assert_eq!(raw, b"Cat on the left, caf\xe9 colour");
    assert!(std::str::from_utf8(&raw).is_err(), "the fixture's sentence must not be valid UTF-8");
    // RefCOCOg's > 255-byte expression (BINSTRING).
    let g = load(&coco_root(), RefDataset::RefCocog, "train", TextMode::SelectFirst);
    assert!(g.samples[0].refs[0].sentences[0].len() > 255);
    assert!(g.samples[0].refs[0].sentences[0].starts_with("the furry brown and grey tabby cat"));
}

#[test]
fn select_first_picks_the_first_sentence() {
    let exp = expected();
    for ds in DATASETS {
        for &split in ds.splits() {
            let got = load(&coco_root(), ds, split, TextMode::SelectFirst);
            let firsts: Vec<String> = got.samples.iter().flat_map(|s| &s.refs).map(|r| r.sentences.concat()).collect();
            let want: Vec<String> = all_sentences(&exp, ds, split).into_iter().map(|v| v[0].clone()).collect();
            assert_eq!(firsts, want, "{} {split}", ds.dir_name());
        }
    }
}

#[test]
fn random_text_mode_is_deterministic_per_seed_and_differs_between_seeds() {
    let exp = expected();
    let picks = |seed: u64| -> Vec<String> {
        let s = load(&coco_root(), RefDataset::RefCoco, "train", TextMode::Random { seed });
        s.samples
            .iter()
            .flat_map(|s| &s.refs)
            .map(|r| {
                assert_eq!(r.sentences.len(), 1);
                r.sentences[0].clone()
            })
            .collect()
    };
    let all = all_sentences(&exp, RefDataset::RefCoco, "train");
    let a = picks(1234);
    assert_eq!(a, picks(1234), "same seed, same choice");
    // Each pick is one of the ref's sentences, at the documented index.
    let train = load(&coco_root(), RefDataset::RefCoco, "train", TextMode::All);
    for ((pick, sents), r) in a.iter().zip(&all).zip(train.samples.iter().flat_map(|s| &s.refs)) {
        assert_eq!(pick, &sents[random_sentence_index(1234, r.ref_id, sents.len())]);
    }
    let distinct: std::collections::BTreeSet<Vec<String>> = (0..16).map(picks).collect();
    assert!(distinct.len() > 1, "16 seeds all chose the same sentences");
    assert!(distinct.iter().any(|p| p != &a));
}

#[test]
fn refs_of_one_annotation_are_deduplicated_like_mmdet() {
    // RefCOCO+ train: refs 100 (ann 2190842), 101 and 102 (both ann 2190839). mmdet keeps the first
    // position of ann 2190839 with the last ref's fields.
    let s = load(&coco_root(), RefDataset::RefCocoPlus, "train", TextMode::All);
    let refs = &s.samples[0].refs;
    assert_eq!(refs.iter().map(|r| (r.ref_id, r.ann_id)).collect::<Vec<_>>(), [(100, 2190842), (102, 2190839)]);
    assert_eq!(refs[1].sentences, ["other cat", "darker cat"]);
}

#[test]
fn instance_masks_match_annotations() {
    let exp = expected();
    // The panoptic PNG of each image, to compare the RLE-derived instance masks with.
    let pan = |image_id: i64| {
        load_segment_ids(coco_root().join(format!("annotations/panoptic_val2017/{image_id:012}.png"))).unwrap()
    };
    let mut checked = (0, 0);
    for ds in DATASETS {
        for &split in ds.splits() {
            let got = load(&coco_root(), ds, split, TextMode::SelectFirst);
            let want = exp["refcoco_family"][ds.dir_name()][split].as_array().unwrap();
            for (s, w) in got.samples.iter().zip(want) {
                let masks = s.masks().unwrap();
                for ((m, r), wr) in masks.iter().zip(&s.refs).zip(w["refs"].as_array().unwrap()) {
                    assert_eq!((m.height, m.width), (s.height, s.width));
                    let area = wr["area"].as_f64().unwrap();
                    let ones = m.count_ones() as f64;
                    if wr["segmentation"] == "polygons" {
                        // Rasterised polygons vs COCO's polygon area: within 7 % (see data MANIFEST).
                        assert!((ones - area).abs() <= 0.07 * area, "ann {}: {ones} vs {area}", r.ann_id);
                        checked.0 += 1;
                    } else {
                        // RLE made from the panoptic segment: exactly that segment's pixels.
                        let (h, w_, ids) = pan(s.image_id);
                        assert_eq!((h, w_), (s.height, s.width));
                        let seg: Vec<u8> = ids.iter().map(|&id| (id as i64 == r.ann_id) as u8).collect();
                        assert_eq!(m.data, seg, "ann {}", r.ann_id);
                        assert_eq!(ones, area);
                        checked.1 += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, (9, 10), "(polygon, RLE) masks checked");
}

#[test]
fn sample_images_load_at_their_annotated_size() {
    let s = load(&coco_root(), RefDataset::RefCoco, "train", TextMode::SelectFirst);
    for sample in &s.samples {
        let img = load_rgb_image(&sample.image_path).unwrap();
        assert_eq!(img.dimensions(), (sample.width, sample.height));
    }
}

// ------------------------------------------------------------------------------------------------
// RefCOCO errors: each names the file
// ------------------------------------------------------------------------------------------------

fn load_err(root: &Path, ds: RefDataset, split: &str) -> String {
    match load_refcoco(root, ds, split, &RefCocoOptions::default()) {
        Ok(_) => panic!("{} {split}: loaded but should fail", ds.dir_name()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_image_file_is_named() {
    let dir = scratch_copy();
    let root = dir.path().join("coco");
    let img = root.join("train2014/COCO_train2014_000000439180.jpg");
    std::fs::remove_file(&img).unwrap();
    let msg = load_err(&root, RefDataset::RefCoco, "testB");
    assert!(msg.contains(&img.display().to_string()) && msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("image_id 439180") && msg.contains("refcoco/instances.json"), "{msg}");
    // Not checked when asked not to.
    let opts = RefCocoOptions { text_mode: TextMode::SelectFirst, check_images: false };
    assert!(load_refcoco(&root, RefDataset::RefCoco, "testB", &opts).is_ok());
    // Missing annotation files are named too.
    std::fs::remove_file(root.join("refcocog/refs(umd).p")).unwrap();
    let msg = load_err(&root, RefDataset::RefCocog, "val");
    assert!(msg.contains("refcocog/refs(umd).p"), "{msg}");
    std::fs::remove_file(root.join("refcoco+/instances.json")).unwrap();
    let msg = load_err(&root, RefDataset::RefCocoPlus, "val");
    assert!(msg.contains("refcoco+/instances.json"), "{msg}");
}

#[test]
fn truncated_instances_json_is_named() {
    let dir = scratch_copy();
    let root = dir.path().join("coco");
    let path = root.join("refcoco/instances.json");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(&root, RefDataset::RefCoco, "val");
    assert!(msg.contains(&path.display().to_string()) && msg.contains("EOF"), "{msg}");
}

#[test]
fn refs_pickle_of_the_wrong_shape_is_named() {
    let dir = scratch_copy();
    let root = dir.path().join("coco");
    let refs = root.join("refcoco/refs(unc).p");
    let bad = dir.path().join("bad");

    std::fs::copy(bad.join("refs_dict.p"), &refs).unwrap();
    let msg = load_err(&root, RefDataset::RefCoco, "train");
    assert!(msg.contains(&refs.display().to_string()), "{msg}");
    assert!(msg.ends_with("expected a list of refs, found a dict"), "{msg}");

    std::fs::copy(bad.join("refs_no_sentences.p"), &refs).unwrap();
    let msg = load_err(&root, RefDataset::RefCoco, "train");
    assert!(msg.contains(&refs.display().to_string()), "{msg}");
    assert!(msg.ends_with("ref #1 (ref_id 1): no \"sentences\" key"), "{msg}");

    std::fs::copy(bad.join("refs_truncated.p"), &refs).unwrap();
    let msg = load_err(&root, RefDataset::RefCoco, "train");
    assert!(msg.contains(&refs.display().to_string()) && msg.contains("truncated"), "{msg}");
}

#[test]
fn ann_id_missing_from_instances_is_named() {
    let dir = scratch_copy();
    let root = dir.path().join("coco");
    let path = root.join("refcoco/instances.json");
    let mut inst: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    inst["annotations"].as_array_mut().unwrap().retain(|a| a["id"] != 1605237);
    std::fs::write(&path, serde_json::to_vec(&inst).unwrap()).unwrap();
    let msg = load_err(&root, RefDataset::RefCoco, "val");
    assert!(msg.contains("refcoco/refs(unc).p") && msg.contains("refcoco/instances.json"), "{msg}");
    assert!(msg.contains("ref_id 4 refers to ann_id 1605237"), "{msg}");
}

#[test]
fn unknown_split_lists_the_present_ones() {
    let msg = load_err(&coco_root(), RefDataset::RefCoco, "testC");
    assert!(msg.contains("refs(unc).p") && msg.contains("train, val, testA, testB"), "{msg}");
}

// ------------------------------------------------------------------------------------------------
// Panoptic Narrative Grounding
// ------------------------------------------------------------------------------------------------

fn png_val() -> PngDataset {
    PngDataset::load_standard(coco_root(), PngSplit::Val, &PngOptions::default()).unwrap()
}

#[test]
fn png_narratives_segments_and_skipping() {
    let ds = png_val();
    let exp = expected();
    let want = exp["png"]["val2017"].as_array().unwrap();
    let kept: Vec<&Value> = want.iter().filter(|n| !n["skipped"].as_bool().unwrap()).collect();
    assert_eq!(ds.skipped, [1], "the ungrounded-only narrative is skipped");
    assert_eq!(ds.narratives.len(), kept.len());
    assert_eq!(ds.narratives.iter().map(|n| n.index).collect::<Vec<_>>(), [0, 2, 3]);
    assert_eq!(ds.num_masks(), 5 + 4 + 1);
    for (n, w) in ds.narratives.iter().zip(&kept) {
        assert_eq!(n.image_id, w["image_id"].as_i64().unwrap());
        assert_eq!(n.segments.len() as u64, w["segments"].as_u64().unwrap());
        assert_eq!(n.image_path, coco_root().join(format!("val2017/{:012}.jpg", n.image_id)));
        assert_eq!(n.panoptic_png, coco_root().join(format!("annotations/panoptic_val2017/{:012}.png", n.image_id)));
        let grounded: Vec<_> = n.grounded().collect();
        let wg = w["grounded"].as_array().unwrap();
        assert_eq!(grounded.len(), wg.len());
        for (k, (s, g)) in grounded.iter().zip(wg).enumerate() {
            assert_eq!(s.mask_index, Some(k));
            assert_eq!(s.utterance, g["utterance"].as_str().unwrap());
            let ids: Vec<u32> =
                g["segment_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(s.segment_ids, ids);
            assert_eq!(s.plural, g["plural"].as_bool().unwrap());
            assert_eq!(s.isthing, Some(g["isthing"].as_bool().unwrap()));
        }
        // Ungrounded utterances stay in order, without a mask.
        assert!(n
            .segments
            .iter()
            .filter(|s| s.segment_ids.is_empty())
            .all(|s| s.mask_index.is_none() && s.isthing.is_none()));
    }
    let first = &ds.narratives[0];
    assert_eq!(first.segments[0].utterance, "In this image we can see");
    assert!(first.caption.as_deref().unwrap().starts_with("In this image"));
    // isthing: singular person → thing, plural "trees" (a stuff category) → thing, singular sky → stuff.
    assert_eq!(
        first.mask_infos(),
        [(false, true), (false, true), (true, true), (true, true), (false, false)]
            .map(|(plural, isthing)| MaskInfo { plural, isthing })
    );
    // Numeric image_id (narrative 3) is accepted; "grass" is stuff.
    assert_eq!(ds.narratives[2].image_id, 439180);
    assert_eq!(ds.narratives[2].mask_infos(), [MaskInfo { plural: false, isthing: false }]);
}

#[test]
fn png_masks_pixel_counts_equal_segments_info_area() {
    // Acceptance criterion: a single-segment utterance's mask has exactly segments_info.area pixels.
    let ds = png_val();
    let exp = expected();
    let want: Vec<&Value> =
        exp["png"]["val2017"].as_array().unwrap().iter().filter(|n| !n["skipped"].as_bool().unwrap()).collect();
    let mut singles = 0;
    for (n, w) in ds.narratives.iter().zip(want) {
        let masks = n.load_masks().unwrap();
        assert_eq!(masks.len(), n.num_masks());
        for (m, g) in masks.iter().zip(w["grounded"].as_array().unwrap()) {
            assert_eq!((m.height, m.width), (n.height, n.width));
            assert_eq!(m.data.len(), (n.height * n.width) as usize);
            assert!(m.data.iter().all(|&v| v <= 1));
            let areas: Vec<u64> =
                g["segments_info_areas"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            if areas.len() == 1 {
                assert_eq!(m.count_ones(), areas[0], "{}", g["utterance"]);
                singles += 1;
            }
            assert_eq!(m.count_ones(), g["area"].as_u64().unwrap());
        }
    }
    assert_eq!(singles, 8);

    // Every segment of both panoptic PNGs against its segments_info.area (50 segments).
    let pan: Value =
        serde_json::from_slice(&std::fs::read(coco_root().join("annotations/panoptic_val2017.json")).unwrap()).unwrap();
    let mut n = 0;
    for a in pan["annotations"].as_array().unwrap() {
        let (_, _, ids) =
            load_segment_ids(coco_root().join("annotations/panoptic_val2017").join(a["file_name"].as_str().unwrap()))
                .unwrap();
        for s in a["segments_info"].as_array().unwrap() {
            let id = s["id"].as_u64().unwrap() as u32;
            assert_eq!(ids.iter().filter(|&&v| v == id).count() as u64, s["area"].as_u64().unwrap());
            n += 1;
        }
    }
    assert_eq!(n, 50);
}

#[test]
fn png_plural_mask_is_the_union_of_its_segments() {
    let ds = png_val();
    let n = &ds.narratives[0];
    let masks = n.load_masks().unwrap();
    let people = n.grounded().position(|s| s.utterance == "people").unwrap();
    let (_, _, ids) = load_segment_ids(&n.panoptic_png).unwrap();
    let one = |id: u32| -> Mask {
        Mask { height: n.height, width: n.width, data: ids.iter().map(|&v| (v == id) as u8).collect() }
    };
    let (a, b) = (one(3937500), one(2035955));
    let union: Vec<u8> = a.data.iter().zip(&b.data).map(|(x, y)| x | y).collect();
    assert_eq!(masks[people].data, union);
    assert_eq!(masks[people].count_ones(), 3528 + 2301);
    assert!(a.count_ones() > 0 && b.count_ones() > 0);
    // Three persons in the other narrative.
    let m = ds.narratives[1].load_masks().unwrap();
    assert_eq!(m[2].count_ones(), 797 + 538 + 2282);
}

#[test]
fn png_errors_name_the_file() {
    let dir = scratch_copy();
    let root = dir.path().join("coco");
    let opts = PngOptions::default();
    let err = |root: &Path| match PngDataset::load_standard(root, PngSplit::Val, &opts) {
        Ok(_) => panic!("loaded but should fail"),
        Err(e) => e.to_string(),
    };

    // Missing image file.
    let img = root.join("val2017/000000439180.jpg");
    std::fs::rename(&img, img.with_extension("bak")).unwrap();
    let msg = err(&root);
    assert!(
        msg.contains(&img.display().to_string()) && msg.contains("image file") && msg.contains("narrative 2"),
        "{msg}"
    );
    assert!(PngDataset::load_standard(&root, PngSplit::Val, &PngOptions { check_files: false }).is_ok());
    std::fs::rename(img.with_extension("bak"), &img).unwrap();

    // Missing panoptic PNG.
    let png = root.join("annotations/panoptic_val2017/000000142238.png");
    std::fs::rename(&png, png.with_extension("bak")).unwrap();
    let msg = err(&root);
    assert!(msg.contains(&png.display().to_string()) && msg.contains("panoptic PNG"), "{msg}");
    std::fs::rename(png.with_extension("bak"), &png).unwrap();

    // Truncated narratives and panoptic JSON.
    for name in ["png_coco_val2017.json", "panoptic_val2017.json"] {
        let path = root.join("annotations").join(name);
        let orig = std::fs::read(&path).unwrap();
        std::fs::write(&path, &orig[..orig.len() - 10]).unwrap();
        let msg = err(&root);
        assert!(msg.contains(&path.display().to_string()) && msg.contains("EOF"), "{msg}");
        std::fs::write(&path, orig).unwrap();
    }

    // A singular utterance with two ids, and an id that is not a segment of the image.
    let path = root.join("annotations/png_coco_val2017.json");
    let orig: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut bad = orig.clone();
    bad[0]["segments"][1]["segment_ids"] = serde_json::json!(["4260062", "3937500"]);
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let msg = err(&root);
    assert!(msg.contains("png_coco_val2017.json") && msg.contains("singular utterance with 2 segment ids"), "{msg}");
    let mut bad = orig.clone();
    bad[2]["segments"][5]["segment_ids"][0] = serde_json::json!("123");
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let msg = err(&root);
    assert!(msg.contains("segment id 123 is not a segment of image 439180"), "{msg}");

    // A panoptic PNG of the wrong size is caught when the masks are read.
    std::fs::write(&path, serde_json::to_vec(&orig).unwrap()).unwrap();
    let ds = PngDataset::load_standard(&root, PngSplit::Val, &opts).unwrap();
    std::fs::copy(root.join("annotations/panoptic_val2017/000000439180.png"), &ds.narratives[0].panoptic_png).unwrap();
    let msg = ds.narratives[0].load_masks().unwrap_err().to_string();
    assert!(msg.contains("000000142238.png") && msg.contains("360x640"), "{msg}");
}

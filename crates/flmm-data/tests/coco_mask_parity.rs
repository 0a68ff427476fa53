//! Parity of [`flmm_data::coco_mask`] with pycocotools 2.0.11 (`frPyObjects`, `merge`, `encode`,
//! `decode`, `area`, `toBbox`, `iou`).
//!
//! Everything is compared exactly: compressed RLE strings equal, areas equal, boxes equal as `f64`,
//! decoded masks equal (pixel count + FNV-1a 64 of the row-major bytes pycocotools decoded; raw pixels
//! for the 37×53 round trip); IoUs within 1e-12 (in practice bit-equal).
//!
//! Fixture: `tests/fixtures/coco_masks/coco_masks.json` from `tools/fixtures/coco_masks.py` (the real
//! polygons of COCO val2017 #39769, hand-made edge cases, 240 seeded random objects, boxes, IoU matrices,
//! merges, uncompressed / compressed RLE inputs).

use std::path::PathBuf;

use flmm_data::coco_mask::{
    bbox_to_rle, iou, polygon_to_rle, polygons_to_rle, Mask, MaskError, Rle, Segmentation,
};
use serde_json::{json, Value};

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/coco_masks/coco_masks.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("coco_masks.json")).expect("valid json")
}

fn fnv1a64(mask: &Mask) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &mask.data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn u32_of(v: &Value) -> u32 {
    v.as_u64().expect("integer") as u32
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("string")
}

fn bbox_of(v: &Value) -> [f64; 4] {
    let a = v.as_array().expect("bbox");
    [0, 1, 2, 3].map(|i| a[i].as_f64().expect("number"))
}

fn polys_of(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("polygons")
        .iter()
        .map(|p| p.as_array().expect("polygon").iter().map(|c| c.as_f64().expect("number")).collect())
        .collect()
}

/// Checks the outputs `describe()` writes: string, area, bbox, pixel count, mask hash.
fn check_rle(name: &str, rle: &Rle, case: &Value, failures: &mut Vec<String>) {
    let mut fail = |what: &str, got: String, want: String| failures.push(format!("{name}: {what}: got {got}, want {want}"));
    if rle.to_string() != str_of(&case["rle"]) {
        fail("rle", rle.to_string(), case["rle"].to_string());
    }
    if rle.area() != case["area"].as_u64().unwrap() {
        fail("area", rle.area().to_string(), case["area"].to_string());
    }
    let want_bbox = bbox_of(&case["bbox"]);
    if rle.bbox().map(f64::to_bits) != want_bbox.map(f64::to_bits) {
        fail("bbox", format!("{:?}", rle.bbox()), format!("{want_bbox:?}"));
    }
    let mask = rle.try_decode().expect("valid RLE");
    if mask.count_ones() != case["pixels"].as_u64().unwrap() {
        fail("pixels", mask.count_ones().to_string(), case["pixels"].to_string());
    }
    if fnv1a64(&mask) != str_of(&case["fnv"]) {
        fail("mask hash", fnv1a64(&mask), case["fnv"].to_string());
    }
    // Every RLE we produce survives the string round trip and re-encoding of its mask.
    let back = Rle::from_compressed(rle.height, rle.width, &rle.to_string()).expect("own string parses");
    if &back != rle {
        fail("string round trip", format!("{:?}", back.counts), format!("{:?}", rle.counts));
    }
    if Rle::encode(&mask).to_string() != rle.to_string() && rle.counts.iter().skip(1).all(|&c| c > 0) {
        fail("re-encode", Rle::encode(&mask).to_string(), rle.to_string());
    }
}

fn check_matrix(name: &str, got: &[Vec<f64>], want: &Value, failures: &mut Vec<String>) -> f64 {
    let want = want.as_array().expect("matrix");
    assert_eq!(got.len(), want.len(), "{name}: rows");
    let mut max_err = 0.0f64;
    for (d, row) in want.iter().enumerate() {
        for (g, w) in row.as_array().unwrap().iter().enumerate() {
            let (got, want) = (got[d][g], w.as_f64().unwrap());
            let err = (got - want).abs();
            max_err = max_err.max(err);
            if err > 1e-12 || got.is_nan() {
                failures.push(format!("{name}[{d}][{g}]: got {got:e}, want {want:e}"));
            }
        }
    }
    max_err
}

fn iou_matrix(rles: &[Rle], crowd: bool) -> Vec<Vec<f64>> {
    rles.iter().map(|dt| rles.iter().map(|gt| iou(dt, gt, crowd)).collect()).collect()
}

fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn real_coco_annotations_match_pycocotools() {
    let doc = fixture();
    let real = &doc["real"];
    let (h, w) = (u32_of(&real["height"]), u32_of(&real["width"]));
    assert_eq!((h, w), (480, 640));
    let anns = real["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), 6);
    let mut failures = Vec::new();
    let mut rles = Vec::new();
    for ann in anns {
        let name = format!("ann {}", ann["id"]);
        let seg = Segmentation::from_json(&ann["segmentation"]).expect("real segmentation parses");
        let Segmentation::Polygons(polys) = &seg else { panic!("{name}: expected polygons") };
        for (i, (p, want)) in polys.iter().zip(ann["per_polygon"].as_array().unwrap()).enumerate() {
            let got = polygon_to_rle(p, h, w).unwrap().to_string();
            if got != str_of(want) {
                failures.push(format!("{name} polygon {i}: got {got}, want {want}"));
            }
        }
        let rle = seg.to_rle(h, w).unwrap();
        check_rle(&name, &rle, ann, &mut failures);
        assert_eq!(seg.to_mask(h, w).unwrap(), rle.decode());
        rles.push(rle);
    }
    let e1 = check_matrix("real iou", &iou_matrix(&rles, false), &real["iou"], &mut failures);
    let e2 = check_matrix("real iou crowd", &iou_matrix(&rles, true), &real["iou_crowd"], &mut failures);
    report(failures);
    assert_eq!(e1.max(e2), 0.0, "IoUs are bit-equal");
}

#[test]
fn polygons_match_pycocotools() {
    let doc = fixture();
    let cases = doc["polygons"].as_array().unwrap();
    assert!(cases.len() > 250, "{} polygon cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = str_of(&case["name"]);
        let (h, w) = (u32_of(&case["height"]), u32_of(&case["width"]));
        // json parsing must give the very same doubles as Python's (float_roundtrip).
        if let Some(bits) = case.get("coord_bits") {
            for (p, pb) in case["polygons"].as_array().unwrap().iter().zip(bits.as_array().unwrap()) {
                for (c, b) in p.as_array().unwrap().iter().zip(pb.as_array().unwrap()) {
                    let want = u64::from_str_radix(str_of(b), 16).unwrap();
                    if c.as_f64().unwrap().to_bits() != want {
                        failures.push(format!("{name}: coordinate {c} parsed to a different double"));
                    }
                }
            }
        }
        let polys = polys_of(&case["polygons"]);
        for (i, (p, want)) in polys.iter().zip(case["per_polygon"].as_array().unwrap()).enumerate() {
            let got = polygon_to_rle(p, h, w).unwrap().to_string();
            if got != str_of(want) {
                failures.push(format!("{name} polygon {i}: got {got}, want {want}"));
            }
        }
        let rle = polygons_to_rle(&polys, h, w).unwrap();
        check_rle(name, &rle, case, &mut failures);
        let via_json = Segmentation::from_json(&case["polygons"]).unwrap().to_rle(h, w).unwrap();
        assert_eq!(via_json, rle, "{name}: Segmentation path");
    }
    report(failures);
}

#[test]
fn boxes_match_pycocotools() {
    let doc = fixture();
    let mut failures = Vec::new();
    for case in doc["bboxes"].as_array().unwrap() {
        let b = bbox_of(&case["bbox_in"]);
        let rle = bbox_to_rle(b, u32_of(&case["height"]), u32_of(&case["width"])).unwrap();
        check_rle(&format!("box {b:?}"), &rle, case, &mut failures);
    }
    report(failures);
}

#[test]
fn iou_matches_pycocotools() {
    let doc = fixture();
    let d = &doc["iou"];
    let (h, w) = (u32_of(&d["height"]), u32_of(&d["width"]));
    let mut failures = Vec::new();
    let mut rles = Vec::new();
    for obj in d["objects"].as_array().unwrap() {
        let rle = polygons_to_rle(&polys_of(&obj["polygons"]), h, w).unwrap();
        check_rle(str_of(&obj["name"]), &rle, obj, &mut failures);
        rles.push(rle);
    }
    let e1 = check_matrix("iou", &iou_matrix(&rles, false), &d["iou"], &mut failures);
    let e2 = check_matrix("iou crowd", &iou_matrix(&rles, true), &d["iou_crowd"], &mut failures);
    report(failures);
    assert_eq!(e1.max(e2), 0.0, "IoUs are bit-equal");

    // Different sizes: pycocotools gives -1 when the boxes overlap.
    let m = &doc["iou_size_mismatch"];
    let a = Segmentation::from_json(&m["a"]).unwrap().to_rle(8, 8).unwrap();
    let b = Segmentation::from_json(&m["b"]).unwrap().to_rle(8, 9).unwrap();
    assert_eq!(iou(&a, &b, false), m["iou"].as_f64().unwrap());
    assert_eq!(iou(&a, &b, false), -1.0);
}

#[test]
fn merge_matches_pycocotools() {
    let doc = fixture();
    for (i, case) in doc["merge"].as_array().unwrap().iter().enumerate() {
        let (h, w) = (u32_of(&case["height"]), u32_of(&case["width"]));
        let inputs: Vec<Rle> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Rle::from_compressed(h, w, str_of(s)).unwrap())
            .collect();
        let union = Rle::merge(&inputs, false).unwrap();
        let inter = Rle::merge(&inputs, true).unwrap();
        assert_eq!(union.to_string(), str_of(&case["union"]), "merge {i} union");
        assert_eq!(inter.to_string(), str_of(&case["intersection"]), "merge {i} intersection");
        // Cross-check against pixel logic.
        let masks: Vec<Mask> = inputs.iter().map(Rle::decode).collect();
        let or: Vec<u8> = (0..masks[0].data.len()).map(|p| masks.iter().any(|m| m.data[p] == 1) as u8).collect();
        let and: Vec<u8> = (0..masks[0].data.len()).map(|p| masks.iter().all(|m| m.data[p] == 1) as u8).collect();
        assert_eq!(union.decode().data, or, "merge {i} union pixels");
        assert_eq!(inter.decode().data, and, "merge {i} intersection pixels");
        assert_eq!(Rle::merge(&inputs[..1], false).unwrap(), inputs[0]);
    }
}

#[test]
fn random_mask_round_trip_matches_pycocotools() {
    let doc = fixture();
    let r = &doc["roundtrip"];
    let (h, w) = (u32_of(&r["height"]), u32_of(&r["width"]));
    let data: Vec<u8> = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| str_of(row).bytes().map(|b| b - b'0').collect::<Vec<_>>())
        .collect();
    let mask = Mask::new(h, w, data).unwrap();
    let rle = Rle::encode(&mask);
    let want_counts: Vec<u32> = r["counts"].as_array().unwrap().iter().map(u32_of).collect();
    assert_eq!(rle.counts, want_counts, "encode counts");
    assert_eq!(rle.to_string(), str_of(&r["rle"]), "compressed string");
    let back = Rle::from_compressed(h, w, str_of(&r["rle"])).unwrap();
    assert_eq!(back, rle, "from_compressed");
    assert_eq!(back.decode(), mask, "decode");
    assert_eq!(rle.area(), r["area"].as_u64().unwrap());
    assert_eq!(rle.bbox(), bbox_of(&r["bbox"]));
    let via_json = Segmentation::from_json(&json!({"size": [h, w], "counts": want_counts})).unwrap();
    assert_eq!(via_json.to_mask(h, w).unwrap(), mask, "uncompressed json → mask");
}

#[test]
fn rle_inputs_match_pycocotools() {
    let doc = fixture();
    let mut failures = Vec::new();
    for case in doc["uncompressed"].as_array().unwrap() {
        let input = &case["input"];
        let (h, w) = (u32_of(&input["size"][0]), u32_of(&input["size"][1]));
        let seg = Segmentation::from_json(input).unwrap();
        assert!(matches!(seg, Segmentation::Rle(_)));
        let rle = seg.to_rle(h, w).unwrap();
        check_rle(&format!("uncompressed {input}"), &rle, case, &mut failures);
    }
    for case in doc["compressed"].as_array().unwrap() {
        let input = &case["input"];
        let (h, w) = (u32_of(&input["size"][0]), u32_of(&input["size"][1]));
        let seg = Segmentation::from_json(input).unwrap();
        assert!(matches!(seg, Segmentation::CompressedRle { .. }));
        let rle = seg.to_rle(h, w).unwrap();
        check_rle(&format!("compressed {}", input["counts"]), &rle, case, &mut failures);
        let re = Rle::encode(&rle.decode()).to_string();
        if re != str_of(&case["reencoded"]) {
            failures.push(format!("compressed {}: re-encoded {re}, want {}", input["counts"], case["reencoded"]));
        }
    }
    report(failures);
}

#[test]
fn compressed_strings_round_trip_extreme_counts() {
    // Largest COCO-representable image: h*w < 2^32. Runs near 2^32 need 7 characters and negative deltas.
    let (h, w) = (65_535u32, 65_537u32);
    let total = h as u64 * w as u64;
    assert!(total <= u32::MAX as u64);
    let total = total as u32;
    let cases: Vec<Vec<u32>> = vec![
        vec![total],
        vec![0, total],
        vec![total - 1, 1],
        vec![1, total - 3, 1, 1],
        vec![5, 1, 1 << 31, 7, (total - (1 << 31)) - 13],
        vec![0, 1, 0x7fff_ffff, 3, 0x7fff_0000, total - 0x7fff_ffff - 0x7fff_0000 - 4],
        (0..64).map(|i| 1u32 << (i % 30)).chain(std::iter::once(0)).collect(),
    ];
    for mut counts in cases {
        let sum: u64 = counts.iter().map(|&c| c as u64).sum();
        if sum < total as u64 {
            *counts.last_mut().unwrap() += total - sum as u32;
        }
        let rle = Rle { height: h, width: w, counts };
        rle.validate().unwrap();
        let s = rle.to_string();
        assert!(s.bytes().all(|b| (48..=111).contains(&b)), "{s}");
        assert_eq!(Rle::from_compressed(h, w, &s).unwrap(), rle, "{s}");
        assert_eq!(rle.area(), rle.counts.iter().skip(1).step_by(2).map(|&c| c as u64).sum::<u64>());
    }
    // Known strings (pycocotools): [500000, 3, 499997] on 1000×1000; counts[2] is stored raw (i > 2 rule).
    let r = Rle { height: 1000, width: 1000, counts: vec![500000, 3, 499997] };
    assert_eq!(r.to_string(), "PYX?3mXX?");
}

fn err_of(v: Value, h: u32, w: u32) -> MaskError {
    match Segmentation::from_json(&v) {
        Err(e) => e,
        Ok(seg) => seg.to_rle(h, w).expect_err(&format!("{v} should be refused")),
    }
}

#[test]
fn malformed_input_gives_clear_errors() {
    let cases: Vec<(Value, &str)> = vec![
        // pycocotools: drops the last value silently.
        (json!([[1, 1, 5, 1, 5, 5, 1]]), "polygon 0 has an odd number of coordinates (7)"),
        // pycocotools: a first 4-value "polygon" is taken as a box list (TypeError); later ones rasterise.
        (json!([[1, 1, 5, 5]]), "polygon 0 has 2 point(s) (4 values); a polygon needs at least 3 points"),
        (json!([[1, 1, 8, 1, 8, 8], [2, 2, 3, 3]]), "polygon 1 has 2 point(s)"),
        (json!([[1, 1]]), "polygon 0 has 1 point(s)"),
        (json!([[]]), "polygon 0 has 0 point(s)"),
        (json!([[1, 1, 5]]), "odd number of coordinates (3)"),
        // pycocotools: IndexError.
        (json!([]), "segmentation has no polygons"),
        (json!([["1", 1, 5, 1, 5, 5]]), "polygon 0 value 0 is not a number: \"1\""),
        (json!([[1, 1, 5, null, 5, 5]]), "polygon 0 value 3 is not a number: null"),
        (json!([1, 1, 5, 1, 5, 5]), "polygon 0 must be a list of numbers"),
        (json!([[1, 1, 5e7, 1, 5, 5]]), "polygon 0 coordinate 2 is 50000000"),
        (json!("abc"), "expected a list of polygons or an RLE object"),
        (json!({"counts": [6]}), "RLE object has no \"size\""),
        (json!({"size": [2, 3]}), "RLE object has no \"counts\""),
        (json!({"size": [2], "counts": [6]}), "RLE \"size\" must be [height, width]"),
        (json!({"size": [2, -3], "counts": [6]}), "RLE width must be a non-negative integer"),
        // pycocotools: OverflowError / truncation to 1.
        (json!({"size": [2, 3], "counts": [-1, 7]}), "RLE count 0 must be a non-negative integer"),
        (json!({"size": [2, 3], "counts": [1.7, 4]}), "RLE count 0 must be a non-negative integer"),
        (json!({"size": [2, 3], "counts": {"a": 1}}), "RLE \"counts\" must be a list of integers or a string"),
        // Sums: pycocotools' decode raises above h*w and leaves memory uninitialised below it.
        (json!({"size": [2, 3], "counts": [1, 4]}), "RLE counts sum to 5, expected height*width = 6 (2x3)"),
        (json!({"size": [2, 3], "counts": "07"}), "RLE counts sum to 7, expected height*width = 6"),
        (json!({"size": [2, 3], "counts": "05"}), "RLE counts sum to 5"),
        (json!({"size": [2, 3], "counts": "0 6"}), "character ' ' is outside the alphabet"),
        (json!({"size": [2, 3], "counts": "0p"}), "character 'p' is outside the alphabet"),
        (json!({"size": [2, 3], "counts": "0P"}), "string ends inside the count that starts at byte 1"),
        (json!({"size": [2, 3], "counts": "0ooooooo0"}), "longer than 7 characters"),
        // A negative delta below zero: counts[3] = counts[1] - 2 = -1.
        (json!({"size": [2, 3], "counts": "011N"}), "count 3 decodes to -1"),
        (json!({"size": [3, 2], "counts": [6]}), "RLE size is 3x2 but the image is 2x3"),
        (json!({"size": [3, 2], "counts": "6"}), "RLE size is 3x2 but the image is 2x3"),
    ];
    for (input, want) in cases {
        let msg = err_of(input.clone(), 2, 3).to_string();
        assert!(msg.contains(want), "{input}: message {msg:?} should contain {want:?}");
    }
    // Image sizes.
    let tri = Segmentation::Polygons(vec![vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0]]);
    assert!(matches!(tri.to_rle(0, 5), Err(MaskError::BadSize { .. })));
    assert!(matches!(tri.to_rle(70_000, 70_000), Err(MaskError::BadSize { .. })));
    assert!(matches!(polygon_to_rle(&[0.0, 0.0, f64::NAN, 0.0, 0.0, 1.0], 4, 4), Err(MaskError::BadCoordinate { .. })));
    assert!(matches!(Rle::merge(&[], false), Err(MaskError::EmptyMerge)));
    let a = Rle { height: 2, width: 3, counts: vec![6] };
    let b = Rle { height: 3, width: 2, counts: vec![6] };
    assert!(matches!(Rle::merge(&[a.clone(), b], false), Err(MaskError::SizeMismatch { .. })));
    let short = Rle { height: 2, width: 3, counts: vec![1, 2] };
    assert!(matches!(short.try_decode(), Err(MaskError::CountsSum { sum: 3, expected: 6, .. })));
    assert!(matches!(Rle::merge(&[a, short], false), Err(MaskError::CountsSum { .. })));
    assert!(matches!(Mask::new(2, 2, vec![0; 3]), Err(MaskError::MaskLength { .. })));

    // mmdet's filter keeps only even-length polygons with >= 3 points.
    let mut seg = Segmentation::from_json(&json!([[1, 1, 5, 5], [0, 0, 2, 0, 0, 2], [1, 2, 3]])).unwrap();
    assert_eq!(seg.drop_invalid_polygons(), 2);
    assert!(seg.to_rle(4, 4).is_ok());
}

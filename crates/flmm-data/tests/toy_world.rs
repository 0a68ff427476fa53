//! Toy world: deterministic scenes, exact masks, unique expressions, and a round trip through the real
//! RefCOCO and PNG loaders.

use std::collections::BTreeMap;
use std::path::Path;

use flmm_data::image_io::load_rgb_image;
use flmm_data::png_dataset::{load_segment_ids, PngDataset, PngOptions, PngSplit};
use flmm_data::refcoco::{load_refcoco, RefCocoOptions, RefDataset, TextMode};
use flmm_data::toy::text::expressions_for;
use flmm_data::toy::writer::encode_pickle;
use flmm_data::toy::{
    dataset_scenes, generate, narrative, questions, referring_expressions, relation, render, write_toy_dataset,
    Description, ToyConfig, ToyScene,
};

fn scenes(n: u64) -> Vec<ToyScene> {
    (0..n).map(|k| generate(17, k, &ToyConfig::default())).collect()
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn scenes_are_deterministic_and_varied() {
    let a = scenes(40);
    assert_eq!(a, scenes(40));
    assert_ne!(a[0], generate(18, 0, &ToyConfig::default()));
    assert_eq!(render(&a[3]), render(&generate(17, 3, &ToyConfig::default())));
    let counts: std::collections::BTreeSet<usize> = a.iter().map(|s| s.objects.len()).collect();
    assert!(counts.contains(&1) && counts.contains(&5), "object counts {counts:?}");
    assert!(a.iter().all(|s| (1..=5).contains(&s.objects.len())));
    let backgrounds: std::collections::HashSet<_> = a.iter().map(|s| s.background).collect();
    assert!(backgrounds.len() >= 3);
    // Some object is occluded by a later one (overlap).
    let occluded = a.iter().any(|s| {
        s.objects.iter().any(|o| {
            let full = (0..s.width * s.height).filter(|&k| {
                let (x, y) = ((k % s.width) as f32 + 0.5, (k / s.width) as f32 + 0.5);
                (x - o.center.0).abs() <= o.extent * 0.85 && (y - o.center.1).abs() <= o.extent * 0.85
            });
            o.shape == flmm_data::toy::Shape::Square && (full.count() as u64) > o.area()
        })
    });
    assert!(occluded, "no overlapping objects in 40 scenes");
}

#[test]
fn masks_are_exact() {
    for s in scenes(30) {
        let img = render(&s);
        let mut covered = vec![0u8; (s.width * s.height) as usize];
        for o in &s.objects {
            assert!(o.area() >= 12);
            for (k, &m) in o.mask.iter().enumerate() {
                if m != 0 {
                    covered[k] += 1;
                    let (x, y) = (k as u32 % s.width, k as u32 / s.width);
                    assert_eq!(img.get_pixel(x, y).0, o.paint(x, y));
                }
            }
        }
        assert!(covered.iter().all(|&c| c <= 1), "masks overlap");
        // Background pixels never have an object colour.
        let colours: Vec<[u8; 3]> = s.objects.iter().flat_map(|o| [o.colour.rgb(), o.colour.shade()]).collect();
        for (k, &c) in covered.iter().enumerate() {
            if c == 0 {
                let px = img.get_pixel(k as u32 % s.width, k as u32 / s.width).0;
                assert!(!colours.contains(&px));
            }
        }
    }
}

/// Independent check: the target is the only object with the said colour, shape, size and relation.
fn unique(scene: &ToyScene, target: usize, d: &Description) -> bool {
    let fits = |i: usize| {
        let o = &scene.objects[i];
        d.colour.is_none_or(|c| c == o.colour)
            && d.shape.is_none_or(|sh| sh == o.shape)
            && d.size.is_none_or(|sz| sz == o.size)
            && d.relation.is_none_or(|(r, b)| i != b && relation(o, &scene.objects[b]) == Some(r))
    };
    fits(target) && (0..scene.objects.len()).filter(|&i| fits(i)).count() == 1
}

#[test]
fn expressions_are_unique_by_construction() {
    let mut with_relation = 0;
    let mut with_size = 0;
    let mut total = 0;
    for s in scenes(200) {
        for exprs in referring_expressions(&s) {
            for e in &exprs {
                assert!(unique(&s, e.target, &e.description), "{}", e.text);
                assert!(e.text.starts_with("the "));
                if let Some((_, b)) = e.description.relation {
                    with_relation += 1;
                    let a = &s.objects[b];
                    let anchor =
                        Description { colour: Some(a.colour), shape: Some(a.shape), size: None, relation: None };
                    assert!(unique(&s, b, &anchor), "anchor of {:?} not unique", e.text);
                }
                with_size += e.description.size.is_some() as usize;
                total += 1;
            }
        }
        // Objects with no expression really have no unique colour+shape(+size) description.
        for i in 0..s.objects.len() {
            if expressions_for(&s, i).is_empty() {
                let o = &s.objects[i];
                let d =
                    Description { colour: Some(o.colour), shape: Some(o.shape), size: Some(o.size), relation: None };
                assert!(!unique(&s, i, &d));
            }
        }
    }
    assert!(total > 300 && with_relation > 0 && with_size > 0, "{total} {with_relation} {with_size}");
}

#[test]
fn narratives_and_questions() {
    let mut plurals = 0;
    for s in scenes(100) {
        let n = narrative(&s);
        let grounded: Vec<usize> = n.segments.iter().flat_map(|g| g.objects.clone()).collect();
        let mut sorted = grounded.clone();
        sorted.sort();
        assert_eq!(sorted, (0..s.objects.len()).collect::<Vec<_>>(), "{}", n.caption);
        for g in &n.segments {
            assert_eq!(g.plural, g.objects.len() > 1);
            if g.plural {
                plurals += 1;
                assert!(!g.utterance.starts_with("a "), "{}", g.utterance);
            }
        }
        assert!(n.caption.starts_with("A picture of ") && n.caption.ends_with("background."), "{}", n.caption);
        let qs = questions(&s);
        for q in &qs {
            assert!(q.question.ends_with('?') && !q.answer.is_empty());
        }
        let circles = s.objects.iter().filter(|o| o.shape == flmm_data::toy::Shape::Circle).count();
        let a = &qs.iter().find(|q| q.question == "how many circles are there?").unwrap().answer;
        assert_eq!(*a, flmm_data::toy::text::count_word(circles));
    }
    assert!(plurals > 0);
}

#[test]
fn pickle_encoder_round_trips() {
    use flmm_data::pickle::{parse_pickle, PickleValue as P};
    let v = P::List(vec![
        P::Dict(vec![(P::Bytes(b"a".to_vec()), P::Int(-5)), (P::Bytes(b"b".to_vec()), P::Int(70_000))]),
        P::Bytes(vec![b'x'; 300]),
        P::Str("é".into()),
        P::Int(1 << 40),
        P::Int(300),
        P::Float(0.25),
        P::Tuple(vec![P::None, P::Bool(true)]),
        P::List(vec![]),
        P::Dict(vec![]),
    ]);
    assert_eq!(parse_pickle(&encode_pickle(&v)).unwrap(), v);
}

#[test]
fn round_trip_through_real_loaders() {
    let (n_train, n_val) = (6, 3);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let summary = write_toy_dataset(root, 5, n_train, n_val).unwrap();
    let scenes = dataset_scenes(5, n_train, n_val, &ToyConfig::default());
    assert_eq!(summary.images, 9);
    assert_eq!(summary.annotations, scenes.iter().map(|s| s.objects.len()).sum::<usize>());

    // Determinism of the bytes on disk.
    let dir2 = tempfile::tempdir().unwrap();
    write_toy_dataset(dir2.path(), 5, n_train, n_val).unwrap();
    assert_eq!(files(root), files(dir2.path()));

    // RefCOCO.
    let mut refs = 0;
    for (split, range) in [("train", 0..n_train), ("val", n_train..n_train + n_val)] {
        let opts = RefCocoOptions { text_mode: TextMode::All, check_images: true };
        let data = load_refcoco(root, RefDataset::RefCoco, split, &opts).unwrap();
        let expected: usize = scenes[range.clone()].iter().map(|s| referring_expressions(s).len()).sum();
        assert_eq!(data.num_refs(), expected);
        refs += data.num_refs();
        for sample in &data.samples {
            let k = sample.image_id as usize - 1;
            assert!(range.contains(&k));
            let scene = &scenes[k];
            assert_eq!(load_rgb_image(&sample.image_path).unwrap(), render(scene));
            let exprs = referring_expressions(scene);
            assert_eq!(sample.refs.len(), exprs.len());
            for ((r, m), e) in sample.refs.iter().zip(sample.masks().unwrap()).zip(&exprs) {
                let target = (r.ann_id - sample.image_id * 10) as usize;
                assert_eq!(target, e[0].target);
                assert_eq!(m.data, scene.objects[target].mask);
                let texts: Vec<&str> = e.iter().map(|x| x.text.as_str()).collect();
                assert_eq!(r.sentences, texts);
                assert_eq!(r.category_id, scene.objects[target].shape.category_id());
            }
        }
    }
    assert_eq!(refs, summary.refs);

    // PNG.
    for (split, range) in [(PngSplit::Train, 0..n_train), (PngSplit::Val, n_train..n_train + n_val)] {
        let data = PngDataset::load_standard(root, split, &PngOptions::default()).unwrap();
        assert_eq!(data.narratives.len(), range.len());
        assert!(data.skipped.is_empty());
        let pan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&data.paths.panoptic_json).unwrap()).unwrap();
        for (nar, k) in data.narratives.iter().zip(range) {
            let scene = &scenes[k];
            let expected = narrative(scene);
            assert_eq!(nar.image_id as usize, k + 1);
            assert_eq!(nar.caption.as_deref(), Some(expected.caption.as_str()));
            assert_eq!(load_rgb_image(&nar.image_path).unwrap(), render(scene));
            let masks = nar.load_masks().unwrap();
            let grounded: Vec<_> = expected.segments.iter().filter(|g| g.background || !g.objects.is_empty()).collect();
            assert_eq!(masks.len(), grounded.len());
            for ((m, g), info) in masks.iter().zip(&grounded).zip(nar.mask_infos()) {
                let want: Vec<u8> = if g.background {
                    scene.background_mask()
                } else {
                    (0..m.data.len()).map(|p| g.objects.iter().any(|&i| scene.objects[i].mask[p] != 0) as u8).collect()
                };
                assert_eq!(m.data, want, "{}", g.utterance);
                assert_eq!(info.plural, g.plural);
                assert_eq!(info.isthing, !g.background);
            }
            // segments_info areas equal the PNG's pixel counts.
            let ann = pan["annotations"].as_array().unwrap().iter().find(|a| a["image_id"] == k + 1).unwrap();
            let (_, _, ids) = load_segment_ids(&nar.panoptic_png).unwrap();
            let infos = ann["segments_info"].as_array().unwrap();
            assert_eq!(infos.len(), scene.objects.len() + 1);
            for info in infos {
                let id = info["id"].as_u64().unwrap() as u32;
                let area = ids.iter().filter(|&&v| v == id).count() as u64;
                assert_eq!(info["area"].as_u64().unwrap(), area);
            }
            assert_eq!(ids.iter().filter(|&&v| v == 0).count(), 0, "unlabelled pixels");
        }
    }

    // QA lines.
    let qa = std::fs::read_to_string(root.join("toy/qa_val.jsonl")).unwrap();
    let n: usize = scenes[n_train..].iter().map(|s| questions(s).len()).sum();
    assert_eq!(qa.lines().count(), n);
    let first: serde_json::Value = serde_json::from_str(qa.lines().next().unwrap()).unwrap();
    assert!(root.join(first["image"].as_str().unwrap()).is_file());
}

#[test]
fn narrative_groups_run_left_to_right() {
    for s in scenes(100) {
        let n = narrative(&s);
        let leftmost: Vec<f32> = n
            .segments
            .iter()
            .filter(|g| !g.objects.is_empty())
            .map(|g| g.objects.iter().map(|&i| s.objects[i].center.0).fold(f32::INFINITY, f32::min))
            .collect();
        assert!(leftmost.windows(2).all(|w| w[0] <= w[1]), "{}: {leftmost:?}", n.caption);
    }
}

#[test]
fn conversations_stay_inside_the_vocabulary() {
    let vocab = flmm_data::toy::vocabulary(&["user : please give me a description of the image . assistant :"]);
    for (i, s) in scenes(300).iter().enumerate() {
        let turns = flmm_data::toy::conversation(s, "please give me a description of the image .", i as u64, usize::MAX);
        assert!(turns.len() >= 5, "the image prompt and at least the four counting questions");
        assert_eq!(turns[0].assistant == narrative(s).caption, i % 2 == 0, "even variants describe with the narrative");
        for t in &turns {
            for w in flmm_data::toy::words(&t.user).into_iter().chain(flmm_data::toy::words(&t.assistant)) {
                assert!(vocab.binary_search(&w).is_ok(), "{w:?} of {t:?} is not in the vocabulary");
            }
        }
    }
    assert_eq!(flmm_data::toy::words("Where is the red-circle?"), ["where", "is", "the", "red", "-", "circle", "?"]);
}

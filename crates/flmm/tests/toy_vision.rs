//! The toy VLM's vision stage: image-level labels, a short run through the shared trainer that learns
//! and exports only the tower, and the tower's hand-over to the language stage.

use std::collections::{BTreeSet, HashMap};

use candle_core::{Device, Tensor};
use flmm::toy::pretrain::init_dir;
use flmm::toy::vision_pretrain::{load_tower, pretrain_vision, scene_labels, vision_path, VisionPretrainOptions, LABELS};
use flmm::toy::vlm::ToyVlm;
use flmm::train::config::OptimConfig;
use flmm_lmm::trainable::init::VISION;
use flmm_data::toy::{generate, Colour, Shape, Size, ToyConfig};

#[test]
fn labels_name_each_colour_shape_and_size_shape_pair_present() {
    for index in 0..20 {
        let scene = generate(3, index, &ToyConfig::default());
        let labels = scene_labels(&scene);
        assert_eq!(labels.len(), LABELS);
        let mut pairs = BTreeSet::new();
        for o in &scene.objects {
            let s = Shape::ALL.iter().position(|&x| x == o.shape).unwrap();
            let c = Colour::ALL.iter().position(|&x| x == o.colour).unwrap();
            let z = match o.size {
                Size::Small => 0,
                Size::Large => 1,
            };
            pairs.insert(c * 4 + s);
            pairs.insert(24 + z * 4 + s);
        }
        let present: BTreeSet<usize> = labels.iter().enumerate().filter(|(_, &v)| v == 1.0).map(|(i, _)| i).collect();
        assert_eq!(present, pairs, "scene {index}");
        assert!(labels.iter().all(|&v| v == 0.0 || v == 1.0));
    }
}

/// The values of every parameter of `vlm` whose name starts with `prefix` (with `inside`) or does not.
fn part(vlm: &ToyVlm, prefix: &str, inside: bool) -> HashMap<String, Vec<f32>> {
    vlm.model
        .params()
        .iter()
        .filter(|(n, _)| n.starts_with(prefix) == inside)
        .map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn a_short_run_learns_and_hands_its_tower_to_the_language_stage() {
    let work = tempfile::tempdir().unwrap();
    let optim = OptimConfig { lr: 2e-3, epochs: 4, accumulate: 4, checkpoint_every: 100, ..OptimConfig::default() };
    let opts = VisionPretrainOptions { work: work.path().to_path_buf(), seed: 2, scenes: 8, val: 3, optim, resume: false, progress: false };
    let (summary, report) = pretrain_vision(&opts).unwrap();
    assert_eq!(summary.steps, 8);
    assert!(summary.last_loss < summary.first_loss, "{} -> {}", summary.first_loss, summary.last_loss);
    assert_eq!(report.scenes, 3);
    for share in [report.colour_shape_recall, report.colour_shape_rejection, report.size_shape_recall, report.scenes_all_right] {
        assert!((0.0..=1.0).contains(&share), "{report:?}");
    }

    // The export holds exactly the tower, changed by training.
    let tower = vision_path(work.path());
    let exported = candle_core::safetensors::load(&tower, &Device::Cpu).unwrap();
    let fresh = ToyVlm::load(&init_dir(work.path())).unwrap();
    let fresh_tower = part(&fresh, VISION, true);
    let names: BTreeSet<&String> = exported.keys().collect();
    assert_eq!(names, fresh_tower.keys().collect::<BTreeSet<_>>());

    // Loading it replaces the tower of a fresh VLM and nothing else.
    let rest_before = part(&fresh, VISION, false);
    load_tower(fresh.model.params(), &tower).unwrap();
    let loaded = part(&fresh, VISION, true);
    let mut changed = 0;
    for (name, values) in &loaded {
        let want: Vec<f32> = exported[name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(values, &want, "{name}");
        changed += usize::from(values != &fresh_tower[name]);
    }
    assert!(changed > 0, "training left the tower as initialised");
    assert_eq!(part(&fresh, VISION, false), rest_before);
}

#[test]
fn a_tower_file_missing_a_key_is_rejected_naming_it_and_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    flmm::toy::vlm::init_vlm_dir(&init_dir(work.path()), 0).unwrap();
    let vlm = ToyVlm::load(&init_dir(work.path())).unwrap();
    let tensors: HashMap<String, Tensor> = vlm.model.params().tensors();
    let mut names: Vec<&String> = tensors.keys().filter(|n| n.contains("patch_embedding")).collect();
    names.sort();
    let dropped = names[0].clone();
    // Every other tower key is present with new values (doubled), so a partial load would show.
    let tower: HashMap<String, Tensor> =
        tensors.iter().filter(|(n, _)| **n != dropped && n.starts_with(VISION)).map(|(n, t)| (n.clone(), (t * 2.0).unwrap())).collect();
    let path = work.path().join("tower.safetensors");
    candle_core::safetensors::save(&tower, &path).unwrap();
    let err = format!("{:#}", load_tower(vlm.model.params(), &path).unwrap_err());
    assert!(err.contains(&dropped), "{err}");
    let before: HashMap<String, Vec<f32>> = tensors.iter().map(|(n, t)| (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap())).collect();
    assert_eq!(part(&vlm, "", true), before, "a rejected tower file changed the model");
}

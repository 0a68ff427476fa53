//! Every shipped config parses and validates (unknown fields are errors), and the ten F-LMM configs keep
//! the original's shared settings (spec §1); the toy head config trains on the toy data's two formats.

use flmm::train::config::DataConfig;
use flmm::train::TrainConfig;

#[test]
fn shipped_configs_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut flmm_configs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let config = TrainConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if let DataConfig::Flmm(data) = &config.data {
            if name == "toy" {
                assert_eq!(data.datasets, ["refcoco", "png"]);
                continue;
            }
            flmm_configs += 1;
            assert_eq!(data.datasets, ["png", "refcoco", "refcoco+", "refcocog"], "{}", path.display());
            let o = &config.optim;
            assert_eq!((o.lr, o.weight_decay, o.epochs, o.max_grad_norm, o.warmup_fraction, o.start_factor), (1e-4, 0.01, 8, 1.0, 0.03, 1e-5));
            assert_eq!((o.checkpoint_every, o.keep_checkpoints), (500, 1));
            assert_eq!(config.sam.as_ref().unwrap().checkpoint, std::path::Path::new("checkpoints/sam_vit_l_0b3195.pth"));
            let template = config.model.as_ref().unwrap().template.as_deref().unwrap();
            template.parse::<flmm_lmm::prompt::Template>().unwrap();
        }
    }
    assert_eq!(flmm_configs, 10, "the ten F-LMM configs");
}

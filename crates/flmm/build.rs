//! Embeds the toy world's default model (`models/toy/`) when all its files are present: writes
//! `$OUT_DIR/default_model_files.rs` with one `include_bytes!` per file (an empty list otherwise), which
//! `src/default_model.rs` includes. Without the files the binary still builds, and `flmm ground` without
//! `--model` says how to regenerate them.

use std::path::Path;

/// The files of the default model, relative to `models/toy/`.
const FILES: [&str; 7] = [
    "vlm/config.json",
    "vlm/model.safetensors",
    "vlm/tokenizer.json",
    "vlm/preprocessor_config.json",
    "sam.safetensors",
    "head.safetensors",
    "head.json",
];

fn main() {
    // The manifest directory of this build, read at run time: `env!` would freeze the directory the
    // build script was compiled in, and cargo reuses that binary for another checkout sharing the target.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("../../models/toy");
    println!("cargo::rerun-if-changed={}", root.display());
    let mut entries = Vec::new();
    for f in FILES {
        let path = root.join(f);
        println!("cargo::rerun-if-changed={}", path.display());
        if path.is_file() {
            entries.push(format!("    ({f:?}, include_bytes!({:?})),\n", path.display().to_string()));
        }
    }
    if entries.len() < FILES.len() {
        entries.clear();
    }
    let code = format!("/// The embedded default-model files (name under models/toy/, bytes).\nconst FILES: &[(&str, &[u8])] = &[\n{}];\n", entries.concat());
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("default_model_files.rs");
    std::fs::write(&out, code).expect("writing the embedded file list");
}

//! `flmm data check <root>`: validates F-LMM's data layout (spec §1.1, `data/coco`) by loading every
//! split with the real loaders, and reports counts or exactly what is missing or broken.

use std::path::Path;

use flmm_data::png_dataset::{PngDataset, PngOptions, PngSplit};
use flmm_data::refcoco::{load_refcoco, RefCocoOptions, RefDataset};

/// The outcome for one split.
pub struct CheckLine {
    /// e.g. `refcoco val`.
    pub name: String,
    /// Counts, or the error.
    pub result: Result<String, String>,
}

/// Loads every RefCOCO-family and PNG split under `root`.
pub fn check(root: &Path) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for dataset in [RefDataset::RefCoco, RefDataset::RefCocoPlus, RefDataset::RefCocog] {
        for split in dataset.splits() {
            let result = load_refcoco(root, dataset, split, &RefCocoOptions::default())
                .map(|s| format!("{} images, {} refs, {} expressions", s.samples.len(), s.num_refs(), s.num_expressions()))
                .map_err(|e| e.to_string());
            lines.push(CheckLine { name: format!("{} {split}", dataset.dir_name()), result });
        }
    }
    for (split, name) in [(PngSplit::Train, "png train2017"), (PngSplit::Val, "png val2017")] {
        let result = PngDataset::load_standard(root, split, &PngOptions::default())
            .map(|d| format!("{} narratives, {} masks, {} skipped (nothing grounded)", d.narratives.len(), d.num_masks(), d.skipped.len()))
            .map_err(|e| e.to_string());
        lines.push(CheckLine { name: name.into(), result });
    }
    lines
}

/// The report as text, one line per split.
pub fn render(root: &Path, lines: &[CheckLine]) -> String {
    let mut out = format!("data root {}\n", root.display());
    for l in lines {
        match &l.result {
            Ok(counts) => out.push_str(&format!("  ok       {:<18} {counts}\n", l.name)),
            Err(e) => out.push_str(&format!("  MISSING  {:<18} {e}\n", l.name)),
        }
    }
    let bad = lines.iter().filter(|l| l.result.is_err()).count();
    out.push_str(&format!("{} of {} splits usable", lines.len() - bad, lines.len()));
    out
}

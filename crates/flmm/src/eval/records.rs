//! Per-sample evaluation records as JSON lines: written as each sample finishes, so an interrupted run
//! resumes where it stopped, and shards of parallel workers merge deterministically (by sample index).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flmm_nn::metrics::MaskCounts;
use serde::{Deserialize, Serialize};

/// One evaluated mask.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct MaskRecord {
    /// Pixel counts of the refined mask against the ground truth.
    pub counts: MaskCounts,
    /// Pixel counts of the U-Net's mask alone (resized to the image) against the ground truth.
    #[serde(default)]
    pub unet: Option<MaskCounts>,
    /// PNG: the phrase is plural.
    pub plural: bool,
    /// PNG: the segment is a thing (plurals count as things).
    pub isthing: bool,
}

/// One evaluated sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampleRecord {
    /// Index of the sample in the split.
    pub index: usize,
    /// COCO image id.
    pub image_id: i64,
    /// Its masks, in order.
    pub masks: Vec<MaskRecord>,
}

/// The records of one evaluation (`tag`) under `dir`: `<tag>.<shard>.jsonl` files.
pub struct RecordStore {
    dir: PathBuf,
    tag: String,
}

impl RecordStore {
    /// Records of `tag` in `dir` (created when missing).
    pub fn new(dir: &Path, tag: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf(), tag: tag.to_string() })
    }

    fn files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let prefix = format!("{}.", self.tag);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".jsonl")))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Every complete record of every shard, by sample index (a torn last line is ignored).
    pub fn load_all(&self) -> anyhow::Result<BTreeMap<usize, SampleRecord>> {
        let mut all = BTreeMap::new();
        for file in self.files()? {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            for line in text.lines() {
                if let Ok(r) = serde_json::from_str::<SampleRecord>(line) {
                    all.insert(r.index, r);
                }
            }
        }
        Ok(all)
    }

    /// Indices already evaluated by any shard.
    pub fn done(&self) -> anyhow::Result<BTreeSet<usize>> {
        Ok(self.load_all()?.into_keys().collect())
    }

    /// An appender for `shard`; a torn last line from an interrupted run is dropped first.
    pub fn writer(&self, shard: &str) -> anyhow::Result<RecordWriter> {
        let path = self.dir.join(format!("{}.{shard}.jsonl", self.tag));
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            let good: String = text.lines().filter(|l| serde_json::from_str::<SampleRecord>(l).is_ok()).map(|l| format!("{l}\n")).collect();
            if good != text {
                flmm_nn::fsutil::write_atomic(&path, good.as_bytes())?;
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(RecordWriter { file, path })
    }
}

/// Appends records, one flushed line each.
pub struct RecordWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl RecordWriter {
    /// Writes one record durably.
    pub fn push(&mut self, record: &SampleRecord) -> anyhow::Result<()> {
        let line = serde_json::to_string(record)? + "\n";
        self.file.write_all(line.as_bytes()).and_then(|_| self.file.sync_data()).with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: usize) -> SampleRecord {
        let counts = MaskCounts { intersection: index as u64, union: 10, correct: 5, pixels: 10 };
        SampleRecord { index, image_id: 7, masks: vec![MaskRecord { counts, unet: None, plural: false, isthing: true }] }
    }

    #[test]
    fn shards_merge_and_torn_lines_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RecordStore::new(tmp.path(), "refcoco-val").unwrap();
        store.writer("0-of-2").unwrap().push(&record(2)).unwrap();
        let mut w = store.writer("1-of-2").unwrap();
        w.push(&record(1)).unwrap();
        drop(w);
        let torn = tmp.path().join("refcoco-val.1-of-2.jsonl");
        let mut text = std::fs::read_to_string(&torn).unwrap();
        text.push_str("{\"index\": 3, \"ima");
        std::fs::write(&torn, text).unwrap();
        assert_eq!(store.done().unwrap().into_iter().collect::<Vec<_>>(), [1, 2]);
        store.writer("1-of-2").unwrap().push(&record(3)).unwrap();
        let all = store.load_all().unwrap();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(all[&3], record(3));
        // Other tags are not mixed in.
        RecordStore::new(tmp.path(), "png").unwrap().writer("0-of-1").unwrap().push(&record(9)).unwrap();
        assert_eq!(store.load_all().unwrap().len(), 3);
    }
}

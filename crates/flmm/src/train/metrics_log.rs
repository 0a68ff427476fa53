//! The JSON-lines metrics file: one object per optimizer step.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends step records to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for appending after dropping records with `step > keep_through` (the steps a
    /// resumed run will redo). `keep_through = None` starts a fresh log.
    pub fn open(path: &Path, keep_through: Option<u64>) -> std::io::Result<Self> {
        let kept: Vec<String> = match (keep_through, std::fs::read_to_string(path)) {
            (Some(last), Ok(text)) => text
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s <= last)
                })
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        flmm_nn::fsutil::write_atomic(path, body.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Writes one record (flushed, so a killed run keeps what it logged).
    pub fn write(&mut self, record: &serde_json::Value) -> std::io::Result<()> {
        writeln!(self.file, "{record}")?;
        self.file.flush()
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every record of a metrics file, skipping lines that do not parse (a torn last line).
pub fn read(path: &Path) -> std::io::Result<Vec<serde_json::Value>> {
    Ok(std::fs::read_to_string(path)?.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

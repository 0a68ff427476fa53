//! `flmm toy all`'s timing history: every run is appended, an earlier single-run file is kept as the
//! first run, and a file of another shape is refused rather than overwritten.

use flmm::toy::all::{record_run, StepTime};

fn step(name: &str, seconds: f64, skipped: bool) -> StepTime {
    StepTime { step: name.into(), seconds, skipped }
}

fn runs(path: &std::path::Path) -> Vec<Vec<(String, f64, bool)>> {
    let value: Vec<Vec<StepTime>> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    value.into_iter().map(|run| run.into_iter().map(|s| (s.step, s.seconds, s.skipped)).collect()).collect()
}

#[test]
fn runs_are_appended_and_an_old_single_run_file_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regeneration.json");
    // The earlier format: one run's steps as a bare list.
    std::fs::write(&path, r#"[{"step":"data","seconds":6.0,"skipped":false},{"step":"total","seconds":60.0,"skipped":false}]"#).unwrap();
    record_run(&path, &[step("data", 0.0, true), step("total", 1.0, false)]).unwrap();
    record_run(&path, &[step("qa", 2.0, false)]).unwrap();
    let expected = vec![
        vec![("data".to_string(), 6.0, false), ("total".to_string(), 60.0, false)],
        vec![("data".to_string(), 0.0, true), ("total".to_string(), 1.0, false)],
        vec![("qa".to_string(), 2.0, false)],
    ];
    assert_eq!(runs(&path), expected);
}

#[test]
fn a_foreign_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regeneration.json");
    std::fs::write(&path, "{\"not\": \"a run\"}").unwrap();
    let err = format!("{:#}", record_run(&path, &[step("data", 1.0, false)]).unwrap_err());
    assert!(err.contains("regeneration.json"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"not\": \"a run\"}");
}

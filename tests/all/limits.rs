//! Every limit stops the job with the limit named, and the run still gets a receipt.

use std::sync::Arc;

use gridbox_core::{LimitKind, Outcome, RunOptions};

use crate::common::*;
use crate::guests;

fn stopped_by(limit: LimitKind, value: u64) -> Outcome {
    Outcome::LimitExceeded { limit, value }
}

#[test]
fn fuel_limit_stops_a_spinning_job_at_exactly_its_budget() {
    let run = run_probe(&["spin"], &[(LimitKind::Fuel, 2_000_000)]);
    assert_eq!(run.outcome, stopped_by(LimitKind::Fuel, 2_000_000));
    assert_eq!(run.fuel_used, 2_000_000);
}

#[test]
fn wall_time_limit_stops_a_job_with_unbounded_fuel() {
    let run = run_probe(&["spin"], &[(LimitKind::Fuel, 1_000_000_000_000), (LimitKind::WallTimeMs, 200)]);
    assert_eq!(run.outcome, stopped_by(LimitKind::WallTimeMs, 200));
}

#[test]
fn memory_limit_stops_a_growing_job() {
    let run = run_probe(&["alloc"], &[(LimitKind::MemoryBytes, 32 << 20)]);
    assert_eq!(run.outcome, stopped_by(LimitKind::MemoryBytes, 32 << 20));
}

#[test]
fn table_limit_stops_table_growth() {
    let module = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (table 1 funcref)
            (func (export "_start") (drop (table.grow (ref.null func) (i32.const 100)))))"#,
    )
    .unwrap();
    let run = engine().run(&job(Arc::from(module), &[], &[], &[(LimitKind::TableElements, 50)]), RunOptions::default()).unwrap();
    assert_eq!(run.outcome, stopped_by(LimitKind::TableElements, 50));
}

#[test]
fn stdio_limit_stops_a_chatty_job() {
    let run = run_probe(&["print", "100000"], &[(LimitKind::StdioBytes, 10_000)]);
    assert_eq!(run.outcome, stopped_by(LimitKind::StdioBytes, 10_000));
    assert!(run.stdout.len() <= 10_000);
}

#[test]
fn output_byte_limit_stops_a_large_file() {
    let run = run_probe(&["write-files", "1", "50000"], &[(LimitKind::OutputBytes, 10_000)]);
    assert_eq!(run.outcome, stopped_by(LimitKind::OutputBytes, 10_000));
}

#[test]
fn output_file_limit_stops_many_files() {
    let run = run_probe(&["write-files", "10", "1"], &[(LimitKind::OutputFiles, 3)]);
    assert_eq!(run.outcome, stopped_by(LimitKind::OutputFiles, 3));
    assert!(run.outputs.len() <= 3);
}

#[test]
fn a_limited_run_exits_135_names_the_limit_and_writes_a_receipt() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let output = gridbox_output(&[&"run", &guests::PROBE.path(), &"--limit", &"fuel=1_000_000", &"--out", &out, &"--", &"spin"]);
    assert_eq!(output.status.code(), Some(135), "{}", stderr(&output));
    assert!(stderr(&output).contains("fuel limit of 1000000"), "{}", stderr(&output));
    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("receipt.json")).unwrap()).unwrap();
    assert_eq!(receipt["outcome"], serde_json::json!({"status": "limit_exceeded", "limit": "fuel", "value": 1_000_000}));
    assert_eq!(receipt["fuel_used"], 1_000_000);
    // And that receipt verifies: fuel stops are deterministic.
    let verified = gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &guests::PROBE.path()]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
}

//! The examples in examples/ as their builders would use them: through the real `gridbox`
//! binary, on their sample data, with receipts verified by replay; and the instructions that
//! open each example's main.rs.

use crate::common::*;
use crate::guests::{self, repo_root};

/// csvstats on its sample data with the arguments and environment its main.rs shows: three
/// outputs, the outliers planted in the data, and a receipt that verifies against a pinned key.
#[test]
fn csvstats_reads_csv_json_args_and_env_and_its_receipt_verifies() {
    let work = tempfile::tempdir().unwrap();
    let module = guests::CSVSTATS.path();
    let data = format!("{}::/input", repo_root().join("examples/csvstats/data").display());
    let key = work.path().join("provider.key");
    assert!(gridbox_output(&[&"keygen", &key]).status.success());
    let out = work.path().join("out");
    let run = gridbox_output(&[
        &"run",
        &module,
        &"--capability",
        &"tensor",
        &"--dir",
        &data,
        &"--env",
        &"SEPARATOR=;",
        &"--key",
        &key,
        &"--out",
        &out,
        &"--",
        &"--column",
        &"wind_kmh",
        &"--column",
        &"rain_mm",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));

    let stats = std::fs::read_to_string(out.join("output/stats.csv")).unwrap();
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(lines[0], "column,count,mean,std,min,max");
    assert!(lines[1].starts_with("wind_kmh,24,") && lines[1].ends_with(",6,78"), "{stats}");
    assert!(lines[2].starts_with("rain_mm,24,") && lines[2].ends_with(",0,41.5"), "{stats}");
    assert_eq!(lines.len(), 3, "{stats}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("output/report.json")).unwrap()).unwrap();
    assert_eq!(report["separator"], ";");
    assert_eq!(report["columns"], serde_json::json!(["wind_kmh", "rain_mm"]), "the arguments choose the columns: {report:#}");
    let outliers: Vec<(&str, &str)> =
        report["outliers"].as_array().unwrap().iter().map(|o| (o["label"].as_str().unwrap(), o["column"].as_str().unwrap())).collect();
    assert_eq!(outliers, [("hill 2025-03-06", "wind_kmh"), ("valley 2025-03-03", "rain_mm")], "{report:#}");

    let zscores = std::fs::read_to_string(out.join("output/zscores.csv")).unwrap();
    assert_eq!(zscores.lines().count(), 25, "a header and one line per row: {zscores}");
    assert!(std::fs::read_to_string(out.join("stdout")).unwrap().contains("24 rows, 2 columns, 2 outliers"));

    // verify takes the arguments and environment from the receipt's manifest: none are given here.
    let verify =
        gridbox_output(&[&"verify", &out.join("receipt.json"), &"--module", &module, &"--dir", &data, &"--trust", &work.path().join("provider.key.pub")]);
    assert_eq!(verify.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&verify.stdout), stderr(&verify));
}

/// Without `SEPARATOR` the semicolon-separated sample is one column: the job fails with its
/// own exit status and a hint, and that failure is a receipt too.
#[test]
fn csvstats_without_its_separator_fails_with_a_hint() {
    let data = format!("{}::/input", repo_root().join("examples/csvstats/data").display());
    let run = gridbox_output(&[&"run", &guests::CSVSTATS.path(), &"--capability", &"tensor", &"--dir", &data]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).contains("is SEPARATOR=\",\" right?"), "{}", stderr(&run));
}

/// Every example's main.rs opens with a doc comment that says how to build, run and verify it,
/// with the paths of this repository.
#[test]
fn every_example_opens_with_how_to_run_it() {
    let examples = repo_root().join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        let main = dir.join("src/main.rs");
        if !main.is_file() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&main).unwrap();
        let doc: String = text.lines().take_while(|line| line.starts_with("//!")).map(|line| format!("{line}\n")).collect();
        let module = format!("examples/target/wasm32-wasip1/release/{name}.wasm");
        for expected in [
            "cargo build --release --manifest-path examples/Cargo.toml".to_string(),
            format!("gridbox run {module}"),
            format!("gridbox verify out/receipt.json --module {module}"),
        ] {
            assert!(doc.contains(&expected), "{}: its opening doc comment lacks `{expected}`", main.display());
        }
        if doc.contains(&format!("examples/{name}/data::")) {
            assert!(examples.join(&name).join("data").is_dir(), "{name}: its doc comment mounts a data folder that does not exist");
        }
        seen += 1;
    }
    assert!(seen >= 4, "found {seen} examples");
}

//! Column statistics and outliers of a CSV table, the way a data job takes its inputs: the table
//! from `/input/measurements.csv`, settings from `/input/config.json`, the columns from
//! arguments (`--column NAME`, repeatable; the config's `columns` without any) and the field
//! separator from the environment (`SEPARATOR`, default `,`). It writes three outputs:
//! `/output/stats.csv` (count, mean, standard deviation, min and max per column),
//! `/output/zscores.csv` (every value as a z-score) and `/output/report.json` (the settings used
//! and every value more than `outlier_z` standard deviations from its column's mean).
//!
//! Build and run it (from the repository root; the sample table separates fields with `;`):
//!
//! ```sh
//! cargo build --release --manifest-path examples/Cargo.toml
//! gridbox run examples/target/wasm32-wasip1/release/csvstats.wasm --capability tensor \
//!     --dir examples/csvstats/data::/input --env 'SEPARATOR=;' --out out -- --column wind_kmh --column rain_mm
//! gridbox verify out/receipt.json --module examples/target/wasm32-wasip1/release/csvstats.wasm \
//!     --dir examples/csvstats/data::/input
//! ```
//!
//! The arguments and environment are part of the job's manifest, so the receipt commits to them
//! and `verify` replays with the same ones: it takes them from the receipt.

use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;

use gridbox_sdk::Tensor;
use serde::{Deserialize, Serialize};

const TABLE: &str = "/input/measurements.csv";
const CONFIG: &str = "/input/config.json";

/// `/input/config.json`. Unknown keys are refused, so a misspelt setting is an error rather
/// than silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Goes into the report.
    title: String,
    /// The columns that name a row in the outputs (a station, a date); any text. Without any,
    /// rows are named by number.
    #[serde(default)]
    label_columns: Vec<String>,
    /// The numeric columns to analyse when no `--column` is given.
    columns: Vec<String>,
    /// A value is an outlier when it is more than this many standard deviations from its mean.
    #[serde(default = "default_outlier_z")]
    outlier_z: f32,
}

fn default_outlier_z() -> f32 {
    3.0
}

/// `/output/report.json`.
#[derive(Serialize)]
struct Report<'a> {
    title: &'a str,
    rows: usize,
    columns: &'a [String],
    separator: &'a str,
    outlier_z: f32,
    outliers: Vec<Outlier>,
}

/// One value far from its column's mean.
#[derive(Serialize)]
struct Outlier {
    /// 1-based, counting data rows only (the header is not a row).
    row: usize,
    label: String,
    column: String,
    value: f32,
    z: f32,
}

fn main() -> ExitCode {
    // Bad arguments are the caller's mistake: exit 2 with usage, as command-line tools do.
    let columns = match parse_args(std::env::args().skip(1)) {
        Ok(columns) => columns,
        Err(message) => {
            eprintln!("csvstats: {message}\nusage: csvstats [--column NAME]...");
            return ExitCode::from(2);
        }
    };
    match run(columns) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csvstats: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `--column NAME` arguments, in order.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Vec<String>, String> {
    let mut columns = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--column" => columns.push(args.next().ok_or("--column needs a column name")?),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(columns)
}

fn run(columns_from_args: Vec<String>) -> Result<(), Box<dyn Error>> {
    let config_text = std::fs::read_to_string(CONFIG).map_err(|e| format!("cannot read {CONFIG}: {e}"))?;
    let config: Config = serde_json::from_str(&config_text).map_err(|e| format!("{CONFIG}: {e}"))?;
    // The environment is the job's manifest's `env`: set with `gridbox run --env NAME=VALUE`.
    let separator = std::env::var("SEPARATOR").unwrap_or_else(|_| ",".to_string());
    if separator.is_empty() {
        return Err("SEPARATOR is set but empty".into());
    }
    let columns = if columns_from_args.is_empty() { config.columns.clone() } else { columns_from_args };
    if columns.is_empty() {
        return Err(format!("no columns to analyse: pass --column NAME or list them in {CONFIG}").into());
    }

    let text = std::fs::read_to_string(TABLE).map_err(|e| format!("cannot read {TABLE}: {e}"))?;
    let table = Table::parse(&text, &separator, &columns, &config.label_columns)?;
    let (rows, width) = (table.labels.len(), columns.len());
    if rows < 2 {
        return Err(format!("{TABLE}: need at least 2 rows, found {rows}").into());
    }

    // The statistics, on the tensor bridge. `x` is [rows, width]; reductions over axis 0 give
    // one value per column, and the arithmetic operators broadcast them back over the rows.
    let x = Tensor::from_slice(&table.values, &[rows, width])?;
    let mean = x.mean(0, false)?;
    let centered = (&x - &mean)?;
    let squares = (&centered * &centered)?;
    let degrees = Tensor::scalar((rows - 1) as f32)?;
    let deviation = (&squares.sum(0, false)? / &degrees)?.sqrt()?;
    let z = (&centered / &deviation)?;
    let max = x.max(0, false)?;
    // There is no `min` op: the minimum is the negated maximum of the negation.
    let min = x.neg()?.max(0, false)?.neg()?;
    let (mean, deviation, z, min, max) = (mean.to_vec()?, deviation.to_vec()?, z.to_vec()?, min.to_vec()?, max.to_vec()?);

    let mut stats = String::from("column,count,mean,std,min,max\n");
    for (c, name) in columns.iter().enumerate() {
        writeln!(stats, "{name},{rows},{:.4},{:.4},{},{}", mean[c], deviation[c], min[c], max[c])?;
    }
    std::fs::write("/output/stats.csv", stats)?;

    let mut zscores = String::from("row");
    for name in &columns {
        write!(zscores, ",{name}")?;
    }
    zscores.push('\n');
    for (r, label) in table.labels.iter().enumerate() {
        zscores.push_str(label);
        for value in &z[r * width..(r + 1) * width] {
            write!(zscores, ",{value:.4}")?;
        }
        zscores.push('\n');
    }
    std::fs::write("/output/zscores.csv", zscores)?;

    // Row-major order, so the list is the same on every run (and so is the receipt).
    let mut outliers = Vec::new();
    for (i, &score) in z.iter().enumerate() {
        if score.abs() > config.outlier_z {
            let (r, c) = (i / width, i % width);
            let z = (score * 1e4).round() / 1e4;
            outliers.push(Outlier { row: r + 1, label: table.labels[r].clone(), column: columns[c].clone(), value: table.values[i], z });
        }
    }
    let report = Report { title: &config.title, rows, columns: &columns, separator: &separator, outlier_z: config.outlier_z, outliers };
    let mut json = serde_json::to_string_pretty(&report)?;
    json.push('\n');
    std::fs::write("/output/report.json", json)?;

    println!("{}: {rows} rows, {width} columns, {} outliers beyond {} sigma", config.title, report.outliers.len(), config.outlier_z);
    for outlier in &report.outliers {
        println!("  row {:>3} {:<18} {:<14} {:>8} (z = {})", outlier.row, outlier.label, outlier.column, outlier.value, outlier.z);
    }
    Ok(())
}

/// The chosen columns of a CSV table with a header line.
struct Table {
    /// Each row's name: its label columns' values, or its number.
    labels: Vec<String>,
    /// The chosen columns' values, row after row.
    values: Vec<f32>,
}

impl Table {
    fn parse(text: &str, separator: &str, columns: &[String], label_columns: &[String]) -> Result<Table, Box<dyn Error>> {
        let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| format!("{TABLE} is empty"))?;
        let names: Vec<&str> = header.split(separator).map(str::trim).collect();
        let find = |name: &str| {
            names.iter().position(|n| *n == name).ok_or_else(|| {
                let hint = if names.len() == 1 { format!(" (the header has one field: is SEPARATOR={separator:?} right?)") } else { String::new() };
                format!("{TABLE} has no column {name:?}; it has {names:?}{hint}")
            })
        };
        let indices = columns.iter().map(|name| find(name)).collect::<Result<Vec<_>, _>>()?;
        let labels = label_columns.iter().map(|name| find(name)).collect::<Result<Vec<_>, _>>()?;
        let mut table = Table { labels: Vec::new(), values: Vec::new() };
        for (index, line) in lines {
            let fields: Vec<&str> = line.split(separator).map(str::trim).collect();
            if fields.len() != names.len() {
                return Err(format!("{TABLE} line {}: {} fields, the header has {}", index + 1, fields.len(), names.len()).into());
            }
            for (&i, name) in indices.iter().zip(columns) {
                let value = fields[i].parse().map_err(|_| format!("{TABLE} line {}: {name} is {:?}, not a number", index + 1, fields[i]))?;
                table.values.push(value);
            }
            let row = table.labels.len() + 1;
            table.labels.push(if labels.is_empty() { row.to_string() } else { labels.iter().map(|&i| fields[i]).collect::<Vec<_>>().join(" ") });
        }
        Ok(table)
    }
}

//! {{name}}: a gridbox job. It reads a table of numbers from `/input/data.csv`, computes each
//! column's mean and standard deviation and the correlation of every pair of columns with
//! tensors, and writes them to `/output/summary.csv`.
//!
//! Build and run it from this folder (README.md has the rest: a manifest, a signed receipt,
//! verifying it):
//!
//! ```sh
//! cargo build --release
//! gridbox run target/wasm32-wasip1/release/{{name}}.wasm --capability tensor --dir data::/input --out out
//! cat out/output/summary.csv
//! ```
//!
//! A job is an ordinary Rust program built for `wasm32-wasip1`. Inside gridbox it sees only what
//! the manifest gives it: its inputs under `/input` (read-only), an empty `/output` whose files
//! become the job's outputs, its arguments and environment variables, and (with the `tensor`
//! capability) the host's tensor bridge. There is no network and no real clock, so the same
//! inputs always give the same bytes, which is what lets anybody verify the receipt by replaying
//! the job.

use std::error::Error;
use std::fmt::Write as _;

use gridbox_sdk::Tensor;

/// The input: `gridbox run --dir data::/input` shows this project's `data/` folder at `/input`.
const INPUT: &str = "/input/data.csv";
/// The output: every file the job leaves under `/output` is committed to in the receipt, and
/// `gridbox run --out DIR` writes it to `DIR/output/`.
const OUTPUT: &str = "/output/summary.csv";

fn main() {
    // A job fails as any program does: a message on stderr and a non-zero exit code. gridbox
    // records both in the receipt, and `gridbox run` exits with the job's code.
    if let Err(e) = run() {
        eprintln!("{}: {e}", env!("CARGO_PKG_NAME"));
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let text = std::fs::read_to_string(INPUT).map_err(|e| format!("cannot read {INPUT}: {e}"))?;
    let table = Table::parse(&text)?;
    let (rows, columns) = (table.rows, table.names.len());
    if rows < 2 {
        return Err(format!("{INPUT}: need at least 2 rows of numbers, found {rows}").into());
    }

    // The whole table as one [rows, columns] tensor. Tensors live on the host (CPU or GPU): a
    // `Tensor` here is a handle, and only `from_slice` and `to_vec` copy data in and out. Every
    // op gives the same bits on every machine, so a GPU's receipt verifies on a laptop.
    let x = Tensor::from_slice(&table.values, &[rows, columns])?;

    // Column means, shape [columns]. `-` broadcasts them over every row, centring each column.
    let mean = x.mean(0, false)?;
    let centered = (&x - &mean)?;

    // The sample covariance matrix: transpose(centered) x centered / (rows - 1), one
    // [columns, rows] by [rows, columns] matmul. Every op returns a `Result`: the host can
    // refuse a call (shapes that do not fit, a quota reached) and the job can handle that.
    let degrees = Tensor::scalar((rows - 1) as f32)?;
    let products = centered.transpose()?.matmul(&centered)?;
    let covariance = (&products / &degrees)?;

    // Standard deviations: the square root of each column's sum of squared deviations over
    // (rows - 1). The operators take references (`&a * &b`): tensors are handles, not copied.
    let squares = (&centered * &centered)?;
    let variance = (&squares.sum(0, false)? / &degrees)?;
    let deviation = variance.sqrt()?;

    // Correlation: covariance[i][j] / (deviation[i] * deviation[j]). The denominators are an
    // outer product, a [columns, 1] by [1, columns] matmul. A constant column gives NaN.
    let outer = deviation.reshape(&[columns, 1])?.matmul(&deviation.reshape(&[1, columns])?)?;
    let correlation = (&covariance / &outer)?;

    // Back into the job's memory, to format.
    let (mean, deviation, correlation) = (mean.to_vec()?, deviation.to_vec()?, correlation.to_vec()?);

    // One row per column: name, mean, standard deviation, then its correlation with each column.
    let mut csv = String::from("column,mean,std");
    for name in &table.names {
        write!(csv, ",corr_{name}")?;
    }
    csv.push('\n');
    for (i, name) in table.names.iter().enumerate() {
        write!(csv, "{name},{:.4},{:.4}", mean[i], deviation[i])?;
        for j in 0..columns {
            write!(csv, ",{:.4}", correlation[i * columns + j])?;
        }
        csv.push('\n');
    }
    std::fs::write(OUTPUT, csv).map_err(|e| format!("cannot write {OUTPUT}: {e}"))?;

    // Stdout is an output too: the receipt commits to it, and `gridbox run` echoes it.
    let mut strongest: Option<(usize, usize, f32)> = None;
    for i in 0..columns {
        for j in i + 1..columns {
            let r = correlation[i * columns + j];
            if strongest.is_none_or(|(_, _, best)| r.abs() > best.abs()) {
                strongest = Some((i, j, r));
            }
        }
    }
    print!("{rows} rows, {columns} columns");
    if let Some((i, j, r)) = strongest {
        print!("; strongest correlation: {} ~ {} ({r:.4})", table.names[i], table.names[j]);
    }
    println!("; wrote {OUTPUT}");
    Ok(())
}

/// A CSV table of numbers: a header line of column names, then one line of numbers per row.
struct Table {
    names: Vec<String>,
    rows: usize,
    /// Every number, row after row (row-major, as `Tensor::from_slice` takes them).
    values: Vec<f32>,
}

impl Table {
    fn parse(text: &str) -> Result<Table, Box<dyn Error>> {
        // Blank lines are skipped; line numbers in messages count them, as an editor does.
        let mut lines = text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| format!("{INPUT} is empty: expected a header line of column names"))?;
        let names: Vec<String> = header.split(',').map(|name| name.trim().to_string()).collect();
        let mut values = Vec::new();
        let mut rows = 0;
        for (index, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != names.len() {
                return Err(format!("{INPUT} line {}: {} fields, but the header names {}", index + 1, fields.len(), names.len()).into());
            }
            for field in fields {
                let value: f32 = field.parse().map_err(|_| format!("{INPUT} line {}: {field:?} is not a number", index + 1))?;
                values.push(value);
            }
            rows += 1;
        }
        Ok(Table { names, rows, values })
    }
}

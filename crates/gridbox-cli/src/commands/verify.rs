//! `gridbox verify`: check a receipt by its signature, its commitments and a replay.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_compute::DeviceChoice;
use gridbox_core::verify::{self, Basis, Evidence, Verification, VerifyOptions};
use gridbox_core::{Manifest, Policy, Receipt, artifacts, trace_file};

use crate::cache::CacheArgs;
use crate::device::{engine_on, uses_tensors};
use crate::exit;
use crate::flags::{InputArgs, artifacts_beside, gather_inputs, read, read_text};

/// `gridbox verify`'s flags.
#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The receipt to check.
    receipt: PathBuf,
    /// The job's wasm module.
    #[arg(long)]
    module: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    /// Folder holding the delivered stdout, stderr and output/ to check too; default: the
    /// receipt's folder when it holds them.
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// The manifest the job was submitted with (TOML, as the client wrote it): every field it
    /// sets must be what the receipt says ran.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// A provider key to trust (64 hex digits, or a file of keys such as a keygen .pub file);
    /// repeatable. Without one the signer is not pinned, and the report says so.
    #[arg(long = "trust", value_name = "KEY|FILE")]
    trust: Vec<String>,
    /// The delivered trace log (trace.jsonl); default: the one in the receipt's folder, if any.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Do not replay: check the trace log against the receipt (each chain step, the length, the
    /// final root, the Merkle root). Cheap, and says nothing of whether the ops were right:
    /// `gridbox check-op` recomputes one.
    #[arg(long)]
    no_replay: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Print the table with every value in full (the default table fits 100 columns: hashes
    /// are cut to their first 12 digits, long values to what fits).
    #[arg(long, conflicts_with = "json")]
    wide: bool,
    /// Where the replay's tensor ops run: auto (the default), cpu, cuda or cuda:N. Any backend
    /// must give the receipt's bytes.
    #[arg(long, value_name = "DEVICE")]
    device: Option<DeviceChoice>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Give up on a replay that runs longer than this (exit status 2); default: ten times the
    /// job's own wall-time limit, at least 60 s.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<u64>,
}

/// Verifies; exit status 0 when every field matches, 1 on a mismatch.
pub(crate) fn verify(args: VerifyArgs) -> Result<u8> {
    let receipt = Receipt::from_json(&read(&args.receipt)?).with_context(|| format!("receipt {}", args.receipt.display()))?;
    let artifact_dir = args.artifacts.clone().or_else(|| artifacts_beside(&args.receipt));
    // The receipt's manifest says which inputs a mount flag's files are; an unreadable one is
    // reported by the verification itself.
    let manifest = Manifest::from_toml(&receipt.manifest.text).ok();
    let mut delivered = artifact_dir.as_deref().map(artifacts::read).transpose()?;
    let trace = match &args.trace {
        Some(path) => Some(trace_file::decode(&read(path)?).with_context(|| format!("trace {}", path.display()))?),
        None => delivered.as_mut().and_then(|a| a.trace.take()),
    };
    let evidence = Evidence {
        module: read(&args.module)?.into(),
        inputs: gather_inputs(&args.inputs, manifest.as_ref())?.inputs,
        artifacts: delivered,
        trace,
        requested: match &args.manifest {
            Some(path) => Some(Manifest::from_toml(&read_text(path)?).with_context(|| format!("manifest {}", path.display()))?),
            None => None,
        },
    };
    let engine = engine_on(&Policy::default(), args.device, uses_tensors(manifest.as_ref()), &args.cache)?;
    engine.announce_device();
    let options =
        VerifyOptions { replay_time_ms: args.time_limit.map(|s| s.saturating_mul(1000)), trusted_keys: trusted_keys(&args.trust)?, no_replay: args.no_replay };
    let report = verify::verify(&engine, &receipt, &evidence, options)?;
    if args.json {
        let json = serde_json::json!({
            "ok": report.ok(),
            "first_mismatch": report.first_mismatch().map(|check| &check.field),
            "signer_pinned": report.signer_pinned,
            "request_checked": evidence.requested.is_some(),
            "checks": report.checks,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", table(&report, args.wide));
    }
    match report.first_mismatch() {
        None => {
            eprintln!("gridbox: receipt verified: every field matches");
            if evidence.requested.is_none() {
                eprintln!("gridbox: note: no --manifest given: the receipt's manifest was not compared with what the client asked for");
            }
            warn_if_unpinned(&report);
            Ok(0)
        }
        Some(check) => {
            eprintln!("gridbox: verification FAILED: first mismatch in `{}`: expected {}, got {}", check.field, check.expected, check.got);
            let link = report.checks.iter().find(|c| !c.ok && (c.field.starts_with("trace.log[") || c.field.starts_with("trace first difference")));
            if let Some(link) = link {
                eprintln!("gridbox: the trace first differs at `{}`: expected {}, got {}", link.field, link.expected, link.got);
            }
            Ok(exit::MISMATCH)
        }
    }
}

/// The checks as a table: field, expected, got, ok, checked by. The last column says what each
/// row rests on; `claim` rows are the provider's word, checked by nothing (`-` in `ok`).
///
/// Unless `wide`, the table fits [`TABLE_WIDTH`] columns: hashes keep their first
/// [`SHORT_HASH`] digits (more on a mismatching row, up to the first digit that differs, so the
/// two never look alike), sizes are in bytes (`B`), and other values and fields that do not
/// fit are cut with `…` (a mismatching value around its first difference). Only a mismatch
/// that a long hash prefix hides can make a row wider.
pub(crate) fn table(report: &Verification, wide: bool) -> String {
    if wide {
        return wide_table(report);
    }
    let header = Cells { field: "field".into(), expected: "expected".into(), got: "got".into(), mark: "ok", basis: "checked by" };
    let mut rows = vec![(header, None, [0; 2])];
    for check in &report.checks {
        let differs = !check.ok && check.basis != Basis::Claim;
        let diff = differs.then(|| first_difference(&check.expected, &check.got));
        let (expected, got) = match (split_hash(&check.expected), split_hash(&check.got)) {
            (Some(e), Some(g)) => {
                // Enough digits that a mismatch shows: one past the first that differs.
                let keep = if differs { first_difference(e.0, g.0).map_or(SHORT_HASH, |d| (d + 1).max(SHORT_HASH)) } else { SHORT_HASH };
                (short_hash(e, keep), short_hash(g, keep))
            }
            (e, g) => (e.map_or(Cow::from(&*check.expected), |e| short_hash(e, SHORT_HASH)), g.map_or(Cow::from(&*check.got), |g| short_hash(g, SHORT_HASH))),
        };
        // Shortened hashes are never cut further: they are already as short as they can be.
        let whole = [split_hash(&check.expected).map_or(0, |_| expected.chars().count()), split_hash(&check.got).map_or(0, |_| got.chars().count())];
        let cells = Cells {
            field: check.field.as_str().into(),
            expected,
            got,
            mark: match (check.ok, check.basis) {
                (_, Basis::Claim) => "-",
                (true, _) => "yes",
                (false, _) => "NO",
            },
            basis: check.basis.as_str(),
        };
        rows.push((cells, diff.flatten(), whole));
    }
    // Natural widths; then, until the rows fit, the wider value column gives way down to a
    // short hash with its size, and after that the widest of the three. Field names are cut
    // last: they say what a row is.
    let width = |f: fn(&Cells<'_>) -> usize| rows.iter().map(|(cells, _, _)| f(cells)).max().unwrap_or(0);
    let mut widths = [width(|c| c.field.chars().count()), width(|c| c.expected.chars().count()), width(|c| c.got.chars().count())];
    let fixed = width(|c| c.mark.len()) + width(|c| c.basis.len()) + 2 * 4;
    let whole = |side: usize| rows.iter().map(|row| row.2[side]).max().unwrap_or(0).max(MIN_COLUMN);
    let minimum = [MIN_COLUMN, whole(0), whole(1)];
    for (columns, floor) in [(&[1, 2][..], VALUE_COLUMN), (&[0, 1, 2][..], 0)] {
        while widths.iter().sum::<usize>() + fixed > TABLE_WIDTH {
            let shrinkable = columns.iter().copied().filter(|&i| widths[i] > minimum[i].max(floor));
            let Some(widest) = shrinkable.max_by_key(|&i| (widths[i], std::cmp::Reverse(i))) else {
                break;
            };
            widths[widest] -= 1;
        }
    }
    let mark_width = width(|c| c.mark.len());
    let mut text = String::new();
    for (cells, diff, _) in &rows {
        let line = format!(
            "{:fw$}  {:ew$}  {:gw$}  {:mark_width$}  {}",
            fit_middle(&cells.field, widths[0]),
            fit(&cells.expected, widths[1], *diff),
            fit(&cells.got, widths[2], *diff),
            cells.mark,
            cells.basis,
            fw = widths[0],
            ew = widths[1],
            gw = widths[2],
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// The widest the default table gets, in columns.
pub(crate) const TABLE_WIDTH: usize = 100;

/// The hex digits a hash keeps in the default table.
const SHORT_HASH: usize = 12;

/// The narrowest a cut column gets.
const MIN_COLUMN: usize = 12;

/// What a value column keeps before field names are cut: a short hash and a 6-digit size.
const VALUE_COLUMN: usize = 24;

/// One row of the default table, before it is fitted to the columns.
struct Cells<'a> {
    field: Cow<'a, str>,
    expected: Cow<'a, str>,
    got: Cow<'a, str>,
    mark: &'static str,
    basis: &'static str,
}

/// `text` as a 64-digit hash and the rest: nothing, or ` (N bytes)`'s size.
fn split_hash(text: &str) -> Option<(&str, Option<&str>)> {
    let hash = text.get(..64).filter(|hash| hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))?;
    match &text[64..] {
        "" => Some((hash, None)),
        rest => {
            let size = rest.strip_prefix(" (")?.strip_suffix(" bytes)")?;
            size.bytes().all(|b| b.is_ascii_digit()).then_some((hash, Some(size)))
        }
    }
}

/// A hash cut to its first `keep` digits and `…`, with its size in bytes if it has one.
fn short_hash((hash, size): (&str, Option<&str>), keep: usize) -> Cow<'static, str> {
    let digits = if keep < hash.len() { format!("{}…", &hash[..keep]) } else { hash.to_string() };
    match size {
        Some(size) => format!("{digits} ({size} B)").into(),
        None => digits.into(),
    }
}

/// Where (in characters) two texts first differ; `None` if they are equal.
fn first_difference(a: &str, b: &str) -> Option<usize> {
    let same = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    (a.chars().count() != same || b.chars().count() != same).then_some(same)
}

/// `text` cut to `width` characters with `…`: its start, or, when the first difference from
/// the value it is compared with (`diff`) would be cut off, a window around that difference.
fn fit(text: &str, width: usize, diff: Option<usize>) -> Cow<'_, str> {
    let length = text.chars().count();
    if length <= width {
        return text.into();
    }
    match diff {
        Some(at) if at + 1 >= width => {
            let inner = width.saturating_sub(2);
            let start = at.saturating_sub(inner / 2);
            if start + inner >= length {
                // The difference is near the end: show the end.
                format!("…{}", text.chars().skip(length - (width - 1)).collect::<String>()).into()
            } else {
                format!("…{}…", text.chars().skip(start).take(inner).collect::<String>()).into()
            }
        }
        _ => format!("{}…", text.chars().take(width.saturating_sub(1)).collect::<String>()).into(),
    }
}

/// `text` cut to `width` characters by `…` in its middle: a field's start says what it is and
/// its end which one (an output's name).
fn fit_middle(text: &str, width: usize) -> Cow<'_, str> {
    let length = text.chars().count();
    if length <= width {
        return text.into();
    }
    let head = width / 3;
    let tail = width.saturating_sub(head + 1);
    format!("{}…{}", text.chars().take(head).collect::<String>(), text.chars().skip(length - tail).collect::<String>()).into()
}

/// The table with every value in full, however wide it gets (`--wide`).
fn wide_table(report: &Verification) -> String {
    let width = |f: fn(&verify::Check) -> usize| report.checks.iter().map(f).max().unwrap_or(0);
    let (fw, ew) = (width(|c| c.field.len()).max(5), width(|c| c.expected.len()).clamp(8, 80));
    let mut text = format!("{:fw$}  {:ew$}  {:ew$}  ok   checked by\n", "field", "expected", "got");
    for check in &report.checks {
        let mark = match (check.ok, check.basis) {
            (_, Basis::Claim) => "-  ",
            (true, _) => "yes",
            (false, _) => "NO ",
        };
        let basis = if check.basis == Basis::Claim { "nothing (the provider's claim)" } else { check.basis.as_str() };
        text.push_str(&format!("{:fw$}  {:ew$}  {:ew$}  {mark}  {basis}\n", check.field, check.expected, check.got));
    }
    text
}

/// The keys `--trust` names.
pub(crate) fn trusted_keys(specs: &[String]) -> Result<Vec<ed25519_dalek::VerifyingKey>> {
    let mut keys = Vec::new();
    for spec in specs {
        keys.extend(gridbox_core::keys::read_trusted_keys(spec)?);
    }
    Ok(keys)
}

/// Says plainly that a valid signature proved only that someone signed, when no key was pinned.
pub(crate) fn warn_if_unpinned(report: &Verification) {
    if !report.signer_pinned {
        eprintln!("gridbox: note: the signer is not pinned (no --trust key): the signature is valid, but anyone could have made it");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use gridbox_core::verify::Check;

    fn report(checks: &[(&str, &str, &str, bool, Basis)]) -> Verification {
        let checks = checks
            .iter()
            .map(|&(field, expected, got, ok, basis)| Check { field: field.into(), expected: expected.into(), got: got.into(), ok, basis })
            .collect();
        Verification { checks, signer_pinned: false }
    }

    fn row<'a>(text: &'a str, field: &str) -> &'a str {
        text.lines().find(|line| line.starts_with(field)).unwrap()
    }

    #[test]
    fn hashes_that_share_their_first_digits_show_up_to_the_first_that_differs() {
        let (a, b) = (format!("{}0{}", "7".repeat(20), "1".repeat(43)), format!("{}1{}", "7".repeat(20), "1".repeat(43)));
        let (sized_a, sized_b) = (format!("{a} (5 bytes)"), format!("{b} (5 bytes)"));
        let text = table(
            &report(&[
                ("stdout", &sized_a, &sized_b, false, Basis::Replay),
                ("stderr", &sized_a, &sized_a, true, Basis::Replay),
                ("public_key", &a, "not pinned", true, Basis::Claim),
            ]),
            false,
        );
        let mismatch = row(&text, "stdout");
        assert!(mismatch.contains(&format!("{}… (5 B)", &a[..21])) && mismatch.contains(&format!("{}… (5 B)", &b[..21])), "{text}");
        assert!(mismatch.trim_end().ends_with("NO   replay"), "{text}");
        assert!(row(&text, "stderr").contains(&format!("{}… (5 B)", &a[..12])), "{text}");
        assert!(row(&text, "public_key").contains(&format!("{}…  ", &a[..12])) && row(&text, "public_key").contains("claim"), "{text}");
        assert!(text.lines().all(|line| line.chars().count() <= TABLE_WIDTH), "{text}");
    }

    #[test]
    fn long_fields_and_values_are_cut_to_fit_and_a_mismatch_is_cut_around_its_difference() {
        let field = format!("delivered outputs[\"{}/result.json\"]", "deep".repeat(20));
        let (expected, got) = (format!("{}a tail", "x".repeat(150)), format!("{}b tail", "x".repeat(150)));
        let long = "y".repeat(300);
        let text = table(&report(&[(&field, &expected, &got, false, Basis::Replay), ("note", &long, &long, true, Basis::Commitment)]), false);
        assert!(text.lines().all(|line| line.chars().count() <= TABLE_WIDTH), "{text}");
        let mismatch = text.lines().nth(1).unwrap();
        assert!(mismatch.starts_with("delivered") && mismatch.contains("result.json\"]"), "the field's start and end: {mismatch}");
        assert!(mismatch.contains("xa tail") && mismatch.contains("xb tail"), "{text}");
        assert!(row(&text, "note").contains("yyy…"), "{text}");
        let wide = table(&report(&[(&field, &expected, &got, false, Basis::Replay)]), true);
        assert!(wide.contains(&field) && wide.contains(&expected) && wide.contains(&got), "{wide}");
    }
}

//! Saying what happened to a job and what to do about it, on gridbox's stderr (never in the
//! job's own stderr or the receipt): the panic message of a Rust job, the job's own frames of a
//! trap's backtrace, how much of a limit was used and how to raise it, and the inputs that exist
//! when the job looked for one that does not.

use gridbox_core::{Job, JobRun, LimitKind, Outcome, Policy};

/// Lines explaining `run`'s ending, for a person; empty when the job exited 0 and missed no file.
pub(crate) fn explain(job: &Job, run: &JobRun, policy: &Policy) -> Vec<String> {
    let mut lines = Vec::new();
    match &run.outcome {
        Outcome::Trapped { trap, .. } => {
            match (trap.as_str(), panic_message(&run.stderr)) {
                ("unreachable", Some(panic)) => lines.push(format!("the job panicked {panic}")),
                _ => lines.extend(run.detail.as_deref().and_then(root_cause).map(str::to_string)),
            }
            let frames = job_frames(run.detail.as_deref().unwrap_or_default());
            if !frames.is_empty() {
                lines.push("the job's own frames, innermost first:".into());
                lines.extend(frames.into_iter().map(|frame| format!("    {frame}")));
            }
        }
        Outcome::LimitExceeded { limit, value } => {
            if let Some(what) = &run.detail {
                lines.push(what.clone());
            }
            let name = limit.as_str();
            let max = policy.max(*limit);
            let used = match limit {
                LimitKind::Fuel => format!("it used all {value} fuel"),
                LimitKind::WallTimeMs => format!("it ran for {value} ms"),
                _ => format!("its limit was {value}"),
            };
            lines.push(if *value < max {
                format!("{used}; raise it with `--limit {name}=N` (or `limits.{name}` in the manifest), up to {max} under this policy")
            } else {
                format!("{used}, the most this policy allows (`max.{name}`)")
            });
        }
        _ => {}
    }
    if !run.missing_paths.is_empty() && !matches!(run.outcome, Outcome::Exited { code: 0 }) {
        lines.push(format!("the job looked for files that do not exist: {}", run.missing_paths.join(", ")));
        let names: Vec<String> = job.inputs().keys().map(|name| format!("/input/{name}")).collect();
        lines.push(if names.is_empty() {
            "the job has no inputs (give them with --input NAME=FILE or --dir HOST::/input)".into()
        } else {
            format!("its inputs are: {}", names.join(", "))
        });
    }
    lines
}

/// `at src/main.rs:5:9: MESSAGE` from a Rust panic in the job's stderr
/// (`thread 'main' panicked at src/main.rs:5:9:\nMESSAGE\n`).
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let start = text.rfind("panicked at ")?;
    let rest = &text[start + "panicked at ".len()..];
    let (location, message) = rest.split_once('\n').unwrap_or((rest, ""));
    let message: Vec<&str> = message.lines().take_while(|line| !line.starts_with("note: ")).collect();
    Some(format!("at {}: {}", location.trim_end_matches(':'), message.join(" ").trim()))
}

/// The root cause of a wasmtime error's text: its last non-empty line (after `Caused by:`).
fn root_cause(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|line| !line.is_empty())
}

/// The frames of a wasmtime backtrace (`   3:  0x1a2b - job.wasm!my_job::main::h0123...`) that
/// belong to the job rather than to Rust's standard library, the panic machinery or WASI shims,
/// as `job.wasm!my_job::main` (the symbol hash dropped).
fn job_frames(detail: &str) -> Vec<String> {
    const RUNTIME: [&str; 9] = ["std", "core", "alloc", "abort", "_start", "__main_void", "__original_main", "rust_begin_unwind", "rust_panic"];
    detail
        .lines()
        .filter_map(|line| line.trim().split_once(" - ").map(|(_, frame)| frame))
        .filter_map(|frame| frame.split_once('!'))
        .filter(|(_, symbol)| {
            // `std::...`, `std[5f2a...]::...`, `<std::... as ...>`, `__rust_start_panic`, ...
            let head = symbol.trim_start_matches('<').split([':', '[', ' ']).next().unwrap_or_default();
            !RUNTIME.contains(&head) && !head.starts_with("__")
        })
        .map(|(module, symbol)| {
            let symbol = match symbol.rsplit_once("::h") {
                Some((path, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => path,
                _ => symbol,
            };
            format!("{module}!{symbol}")
        })
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_is_found_in_the_jobs_stderr() {
        let stderr = b"working\n\nthread 'main' panicked at src/main.rs:5:9:\nno input named data.csv\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("at src/main.rs:5:9: no input named data.csv"));
        assert_eq!(panic_message(b"all good\n"), None);
    }

    #[test]
    fn backtraces_keep_the_jobs_frames() {
        let detail = "error while executing at wasm backtrace:\n    0:  0x6a1b - job.wasm!__rust_start_panic\n    1:  0x12 - job.wasm!std[a88812da5ee6ad9e]::panicking::begin_panic\n    2:  0x99 - job.wasm!my_job::parse::row::h0123456789abcdef\n    3:  0xaa - job.wasm!my_job::main\n    4:  0xbb - job.wasm!core::ops::function::FnOnce::call_once\n    5:  0xbc - job.wasm!<std::a as b>::f\n    6:  0xcc - job.wasm!_start\n    7:  0x140a1 - job.wasm!abort\n\nCaused by:\n    wasm trap: wasm `unreachable` instruction executed";
        assert_eq!(job_frames(detail), ["job.wasm!my_job::parse::row", "job.wasm!my_job::main"]);
    }
}

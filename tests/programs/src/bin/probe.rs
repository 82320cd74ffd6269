//! A test job that does one thing per subcommand, for gridbox's integration tests:
//! `probe hello | exit CODE | trap | spin | work ROUNDS | alloc | print BYTES |
//! write-files COUNT SIZE | report | stdin | fs-ops | rooted`.

use std::io::{Read, Write};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |index: usize| -> u64 { args.get(index).and_then(|a| a.parse().ok()).unwrap_or(0) };
    match args.get(1).map(String::as_str).unwrap_or("hello") {
        "hello" => println!("hello from a gridbox job"),
        "exit" => std::process::exit(arg(2) as i32),
        "trap" => std::process::abort(),
        "spin" => {
            let mut counter = 0u64;
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        "work" => {
            // Busy for a while, then done: a job that is still running when a test wants it to be.
            let mut state = 1u64;
            for round in 0..arg(2) {
                state = work_step(state, round);
            }
            println!("work: {state:016x}");
        }
        "alloc" => {
            let mut blocks = Vec::new();
            loop {
                blocks.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&blocks);
            }
        }
        "print" => {
            let line = vec![b'x'; 1000];
            let mut left = arg(2) as usize;
            let mut out = std::io::stdout().lock();
            while left > 0 {
                let n = left.min(line.len());
                out.write_all(&line[..n]).expect("write stdout");
                left -= n;
            }
        }
        "write-files" => {
            for index in 0..arg(2) {
                std::fs::write(format!("/output/f{index}.bin"), vec![7u8; arg(3) as usize]).expect("write output");
            }
        }
        "report" => report(),
        "stdin" => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).expect("read stdin");
            println!("stdin: {} bytes: {}", bytes.len(), String::from_utf8_lossy(&bytes));
        }
        "fs-ops" => fs_ops(),
        "rooted" => rooted(),
        other => {
            eprintln!("probe: unknown subcommand {other:?}");
            std::process::exit(2);
        }
    }
}

/// One round of `work`, kept a call: wasmtime publishes a job's fuel counter at calls, which is
/// what a status request's "fuel used so far" reads.
#[inline(never)]
fn work_step(state: u64, round: u64) -> u64 {
    std::hint::black_box(state.wrapping_mul(6364136223846793005).wrapping_add(round))
}

/// Everything a job could learn about its host: it must all come out the same on any host.
fn report() {
    let mut out = String::new();
    out += &format!("args: {:?}\n", std::env::args().collect::<Vec<_>>());
    let mut env: Vec<_> = std::env::vars().collect();
    env.sort();
    out += &format!("env: {env:?}\n");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    out += &format!("now: {}\n", now.as_nanos());
    let start = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    out += &format!("slept: {} ns\n", start.elapsed().as_nanos());
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).expect("random bytes");
    out += &format!("random: {random:?}\n");
    let mut pending = vec![String::from("/input")];
    while let Some(dir) = pending.pop() {
        // Listing order as the host gives it, on purpose: it must be deterministic.
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let path = format!("{dir}/{}", entry.file_name().to_string_lossy());
            let meta = entry.metadata().expect("metadata");
            let modified = meta.modified().expect("mtime").duration_since(UNIX_EPOCH).expect("after 1970");
            let relative = path.trim_start_matches("/input/");
            // SAFETY (test program): fd 3 is the /input preopen; the path is a valid string.
            let stat = unsafe { wasi::path_filestat_get(3, 0, relative) }.expect("path_filestat_get");
            out += &format!(
                "{path}: dir={} len={} mtime={} dev={} ino={} nlink={}\n",
                meta.is_dir(),
                meta.len(),
                modified.as_nanos(),
                stat.dev,
                stat.ino,
                stat.nlink
            );
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    print!("{out}");
    std::fs::write("/output/report.txt", out).expect("write report");
}

/// The file operations a real job uses, each checked.
fn fs_ops() {
    std::fs::create_dir_all("/output/a/b").expect("mkdir");
    std::fs::write("/output/a/b/one.txt", b"one").expect("write");
    let mut file = std::fs::OpenOptions::new().append(true).open("/output/a/b/one.txt").expect("open append");
    file.write_all(b"+two").expect("append");
    drop(file);
    std::fs::rename("/output/a/b/one.txt", "/output/a/moved.txt").expect("rename");
    std::fs::write("/output/gone.txt", b"x").expect("write gone");
    std::fs::remove_file("/output/gone.txt").expect("remove");
    std::fs::remove_dir("/output/a/b").expect("rmdir");
    let back = std::fs::read_to_string("/output/a/moved.txt").expect("read back");
    assert_eq!(back, "one+two");
    let refused = std::fs::write("/input/new.txt", b"no");
    println!("write to /input: {}", if refused.is_err() { "refused" } else { "allowed" });
    let escape = std::fs::read("/input/../etc/passwd");
    println!("escape: {}", if escape.is_err() { "refused" } else { "allowed" });
    println!("fs-ops ok");
}

/// A program written for `wasmtime run --dir data::/`: it works on its files at `/`, and prints
/// what it finds, before and after.
fn rooted() {
    print!("{}", listing("/"));
    let words = std::fs::read_to_string("/words.txt").expect("read /words.txt");
    std::fs::create_dir_all("/counts").expect("mkdir /counts");
    std::fs::write("/counts/summary.txt", format!("{} words\n", words.split_whitespace().count())).expect("write summary");
    let mut log = std::fs::OpenOptions::new().append(true).open("/log.txt").expect("open /log.txt");
    log.write_all(b"counted\n").expect("append to /log.txt");
    drop(log);
    std::fs::create_dir("/archive").expect("mkdir /archive");
    std::fs::rename("/old.txt", "/archive/old.txt").expect("rename");
    std::fs::remove_file("/remove-me.txt").expect("remove");
    println!("--- after");
    print!("{}", listing("/"));
}

/// Every entry under `root`, sorted, with sizes and the text of small files.
fn listing(root: &str) -> String {
    let mut lines = Vec::new();
    let mut pending = vec![root.trim_end_matches('/').to_string()];
    while let Some(dir) = pending.pop() {
        let path = if dir.is_empty() { "/".to_string() } else { dir.clone() };
        for entry in std::fs::read_dir(&path).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let path = format!("{dir}/{}", entry.file_name().to_string_lossy());
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                lines.push(format!("{path}/"));
                pending.push(path);
            } else {
                let text = std::fs::read_to_string(&path).expect("read");
                lines.push(format!("{path} {} {text:?}", meta.len()));
            }
        }
    }
    lines.sort();
    lines.iter().map(|line| format!("{line}\n")).collect()
}

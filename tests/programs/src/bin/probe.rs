//! A test job that does one thing per subcommand, for gridbox's integration tests:
//! `probe hello | exit CODE | trap | spin | work ROUNDS | alloc | print BYTES |
//! write-files COUNT SIZE | report | stdin | fs-ops | rooted | floats | nan-bits | panic MESSAGE |
//! read PATH`.

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
        "floats" => floats(arg(2).max(1)),
        "nan-bits" => nan_bits(),
        "panic" => panic!("{}", args.get(2).map(String::as_str).unwrap_or("no message")),
        "read" => {
            let path = args.get(2).map(String::as_str).unwrap_or("/input/missing");
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
            println!("read {} bytes from {path}", bytes.len());
        }
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

/// Float-heavy pure wasm: arithmetic, square roots, fused multiply-adds (a libm call on wasm),
/// conversions, rounding, min/max and transcendental functions from the Rust's libm, `rounds`
/// times over values that include -0, subnormals, infinities and huge and tiny numbers. Prints
/// a checksum of every result's bits per kind, so any difference shows.
fn floats(rounds: u64) {
    let seeds32: [f32; 10] = [0.0, -0.0, 1.0e-45, -1.17e-38, 3.4e38, f32::INFINITY, -2.5, 0.1, 1.0 / 3.0, 7.0e-3];
    let seeds64: [f64; 10] = [0.0, -0.0, 5.0e-324, -2.2e-308, 1.7e308, f64::NEG_INFINITY, -2.5, 0.1, 1.0 / 3.0, 7.0e-3];
    let mut sums = [0u64; 6];
    let mix = |sum: &mut u64, bits: u64| *sum = (*sum ^ bits).wrapping_mul(0x100000001b3).rotate_left(5);
    for round in 0..rounds {
        let r = round as f32 * 0.618;
        for (i, &a) in seeds32.iter().enumerate() {
            let b = seeds32[(i + 3) % 10] + r;
            mix(&mut sums[0], u64::from((a + b).to_bits() ^ (a * b).to_bits() ^ (a / b).to_bits() ^ (a - b).to_bits()));
            mix(&mut sums[1], u64::from(a.abs().sqrt().to_bits() ^ a.mul_add(b, r).to_bits() ^ a.min(b).to_bits() ^ a.max(b).to_bits()));
            mix(&mut sums[2], u64::from((a as i32) as u32 ^ (b as u64) as u32 ^ a.round().to_bits() ^ b.trunc().to_bits() ^ (f64::from(a) as f32).to_bits()));
        }
        for (i, &a) in seeds64.iter().enumerate() {
            let b = seeds64[(i + 7) % 10] + f64::from(r);
            mix(&mut sums[3], (a + b).to_bits() ^ (a * b).to_bits() ^ (a / b).to_bits() ^ a.abs().sqrt().to_bits());
            mix(&mut sums[4], a.mul_add(b, 1.5).to_bits() ^ b.floor().to_bits() ^ (b as f32 as f64).to_bits() ^ (b as i64) as u64);
            mix(&mut sums[5], b.sin().to_bits() ^ b.exp().to_bits() ^ b.abs().ln().to_bits() ^ b.atan2(a).to_bits() ^ b.powf(0.75).to_bits());
        }
    }
    for (name, sum) in ["f32 arith", "f32 sqrt/fma/min/max", "f32 conversions", "f64 arith", "f64 fma/round/conv", "f64 libm"].iter().zip(sums) {
        println!("{name}: {sum:016x}");
    }
}

/// The bits of NaNs made every way wasm can: arithmetic NaNs (canonical under gridbox's NaN
/// canonicalisation, so the same on every CPU) and bit operations on NaN payloads (neg, abs,
/// copysign, reinterpretation: exact by definition).
fn nan_bits() {
    let zero = std::hint::black_box(0.0f32);
    let other_zero = std::hint::black_box(0.0f32);
    let payload = std::hint::black_box(f32::from_bits(0x7fa0_0001));
    let payload64 = std::hint::black_box(f64::from_bits(0x7ff4_0000_0000_0001));
    let cases32 = [
        ("0/0", zero / other_zero),
        ("inf-inf", f32::INFINITY - std::hint::black_box(f32::INFINITY)),
        ("sqrt(-1)", std::hint::black_box(-1.0f32).sqrt()),
        ("payload+1", payload + 1.0),
        ("payload*0", payload * zero),
        ("min(payload,1)", payload.min(1.0)),
        ("-payload", -payload),
        ("abs(-payload)", (-payload).abs()),
        ("copysign", payload.copysign(-1.0)),
        ("demote", payload64 as f32),
    ];
    for (name, value) in cases32 {
        println!("f32 {name}: {:08x}", value.to_bits());
    }
    let cases64 = [("0/0", f64::from(zero) / f64::from(other_zero)), ("promote", f64::from(payload)), ("payload-1", payload64 - 1.0), ("-payload", -payload64)];
    for (name, value) in cases64 {
        println!("f64 {name}: {:016x}", value.to_bits());
    }
}

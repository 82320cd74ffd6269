//! gridbox's Llama job (examples/llama) against candle-transformers' Llama on the CPU: the same
//! model folder (a SmolLM-135M-shaped model with random weights from scripts/llama/make_model.py),
//! the same prompt tokens, the same thread count, rounds interleaved so that the machine's noise
//! hits both; prints prompt and generated tokens/s side by side with their ratio, whether the
//! two generate the same tokens, and whether gridbox's tokens and receipt outputs are identical
//! across thread counts.
//!
//! ```sh
//! python3 scripts/llama/make_model.py /tmp/smol --layers 30 --hidden 576 --heads 9 --kv-heads 3 \
//!     --intermediate 1536 --vocab 49152 --no-tokenizer --tie
//! cargo build --release -p gridbox-cli && cargo build --release --manifest-path examples/Cargo.toml
//! cargo run --release --manifest-path bench/llama-vs-candle/Cargo.toml -- --model /tmp/smol \
//!     --threads 2 --rounds 3
//! ```
//!
//! gridbox is timed as a user runs it, one `gridbox run` process per round, by the job's progress
//! lines on stderr as they arrive (the job has no clock of its own: its time is deterministic):
//! from "generating" (loaded) to "1/65 tokens" is the prompt's forward pass and its token, from
//! there to "65/65 tokens" the 64 generated tokens. candle is timed in process after loading,
//! over the same spans.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama::{Cache, Llama, LlamaConfig};

struct Options {
    model: PathBuf,
    gridbox: PathBuf,
    module: PathBuf,
    threads: usize,
    rounds: usize,
    prompt_tokens: usize,
    generated: usize,
}

fn options() -> Result<Options> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut o = Options {
        model: PathBuf::new(),
        gridbox: root.join("target/release/gridbox"),
        module: root.join("examples/target/wasm32-wasip1/release/llama.wasm"),
        threads: 1,
        rounds: 3,
        prompt_tokens: 32,
        generated: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => o.model = value.into(),
            "--gridbox" => o.gridbox = value.into(),
            "--module" => o.module = value.into(),
            "--threads" => o.threads = value.parse()?,
            "--rounds" => o.rounds = value.parse()?,
            "--prompt-tokens" => o.prompt_tokens = value.parse()?,
            "--generated" => o.generated = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if o.model.as_os_str().is_empty() {
        bail!("--model DIR is required (make one with scripts/llama/make_model.py; see this file's header)");
    }
    Ok(o)
}

/// The prompt: `n` printable bytes, which the job's byte tokenizer (no tokenizer.json) turns
/// into the same `n` ids candle is given.
fn prompt(n: usize) -> String {
    "Once upon a time, in a land of idle GPUs and careful verifiers, ".chars().cycle().take(n).collect()
}

struct Timing {
    prompt: Duration,
    generated: Duration,
    tokens: Vec<u32>,
}

fn candle_run(llama: &Llama, config: &candle_transformers::models::llama::Config, o: &Options) -> Result<Timing> {
    let device = Device::Cpu;
    let ids: Vec<u32> = prompt(o.prompt_tokens).bytes().map(u32::from).collect();
    let mut cache = Cache::new(true, DType::F32, config, &device)?;
    let start = Instant::now();
    let logits = llama.forward(&Tensor::new(ids.as_slice(), &device)?.unsqueeze(0)?, 0, &mut cache)?;
    let mut next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
    let prompt_time = start.elapsed();
    let mut tokens = vec![next];
    let start = Instant::now();
    for step in 0..o.generated {
        let logits = llama.forward(&Tensor::new(&[next], &device)?.unsqueeze(0)?, ids.len() + step, &mut cache)?;
        next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        tokens.push(next);
    }
    Ok(Timing { prompt: prompt_time, generated: start.elapsed(), tokens })
}

/// One `gridbox run` of the job generating `tokens`, timed by the job's progress lines on
/// stderr as they arrive: "generating" (the model is loaded), "1/N tokens" (the prompt's forward
/// pass and the first token), "N/N tokens" (the rest).
fn gridbox_once(o: &Options, threads: usize, tokens: usize, out: &Path, policy_dir: &Path) -> Result<Timing> {
    use std::io::BufRead;
    let policy = policy_dir.join(format!("policy-{threads}.toml"));
    std::fs::write(&policy, format!("kernel_threads = {threads}\n[max]\nfuel = 1000000000000000\nwall_time_ms = 900000\n"))?;
    let _ = std::fs::remove_dir_all(out);
    let mut child = Command::new(&o.gridbox)
        .arg("run")
        .arg(&o.module)
        .args(["--capability", "tensor", "--device", "cpu", "--policy"])
        .arg(&policy)
        .args(["--limit", "fuel=1000000000000000", "--limit", "wall_time_ms=900000", "--ro-dir"])
        .arg(format!("{}::/model", o.model.display()))
        .arg("--out")
        .arg(out)
        .args(["--", "--prompt", &prompt(o.prompt_tokens), "--tokens", &tokens.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let (mut loaded, mut first, mut last) = (None, None, None);
    let mut log = String::new();
    for line in std::io::BufReader::new(child.stderr.take().context("stderr")?).lines() {
        let line = line?;
        let now = Instant::now();
        if line.starts_with("llama: ") && line.contains("generating") {
            loaded = Some(now);
        } else if line == format!("llama: 1/{tokens} tokens") {
            first = Some(now);
        }
        if line == format!("llama: {tokens}/{tokens} tokens") {
            last = Some(now);
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("gridbox run failed ({status}):\n{log}");
    }
    let (Some(loaded), Some(first), Some(last)) = (loaded, first, last) else { bail!("the job's progress lines are missing:\n{log}") };
    let ids: Vec<u32> = std::fs::read_to_string(out.join("output/tokens.txt"))?.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    Ok(Timing { prompt: first - loaded, generated: last - first, tokens: ids[o.prompt_tokens..].to_vec() })
}

fn gridbox_run(o: &Options, threads: usize, work: &Path) -> Result<Timing> {
    gridbox_once(o, threads, o.generated + 1, &work.join(format!("all-{threads}")), work)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let o = options()?;
    for (what, path) in [("gridbox binary", &o.gridbox), ("llama.wasm", &o.module)] {
        if !path.exists() {
            bail!("no {what} at {} (see this file's header for the build commands)", path.display());
        }
    }
    // candle's CPU kernels run on rayon's global pool, which reads RAYON_NUM_THREADS when it
    // first starts: set before any pool exists.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", o.threads.to_string()) };
    }
    let config_json = std::fs::read(o.model.join("config.json"))?;
    let config: LlamaConfig = serde_json::from_slice(&config_json)?;
    let config = config.into_config(false);
    // SAFETY: the model file is not changed while the bench runs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[o.model.join("model.safetensors")], DType::F32, &Device::Cpu)? };
    let llama = Llama::load(vb, &config)?;
    let work = std::env::temp_dir().join(format!("llama-vs-candle-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    println!(
        "model: {} ({} layers, hidden {}, vocab {}), prompt {} tokens, {} generated, {} threads",
        o.model.display(),
        config.num_hidden_layers,
        config.hidden_size,
        config.vocab_size,
        o.prompt_tokens,
        o.generated,
        o.threads
    );
    let (mut c_prompt, mut c_gen, mut g_prompt, mut g_gen) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut candle_tokens, mut gridbox_tokens) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let c = candle_run(&llama, &config, &o)?;
        let g = gridbox_run(&o, o.threads, &work)?;
        println!(
            "round {round}: candle prompt {:.0} ms, 64 tokens {:.0} ms | gridbox prompt {:.0} ms, 64 tokens {:.0} ms",
            c.prompt.as_secs_f64() * 1e3,
            c.generated.as_secs_f64() * 1e3,
            g.prompt.as_secs_f64() * 1e3,
            g.generated.as_secs_f64() * 1e3
        );
        c_prompt.push(c.prompt);
        c_gen.push(c.generated);
        g_prompt.push(g.prompt);
        g_gen.push(g.generated);
        candle_tokens = c.tokens;
        gridbox_tokens = g.tokens;
    }
    let rate = |tokens: usize, d: Duration| tokens as f64 / d.as_secs_f64();
    let (cp, cg) = (rate(o.prompt_tokens, median(c_prompt)), rate(o.generated, median(c_gen)));
    let (gp, gg) = (rate(o.prompt_tokens, median(g_prompt)), rate(o.generated, median(g_gen)));
    println!("prompt tokens/s:    gridbox {gp:8.1}   candle {cp:8.1}   gridbox / candle {:.2}x", gp / cp);
    println!("generated tokens/s: gridbox {gg:8.1}   candle {cg:8.1}   gridbox / candle {:.2}x (goal >= 0.70x)", gg / cg);
    let agree = candle_tokens.iter().zip(&gridbox_tokens).take_while(|(a, b)| a == b).count();
    println!("greedy tokens: the first {agree} of {} agree with candle's", candle_tokens.len().min(gridbox_tokens.len()));
    // Bit-identical across thread counts: the same job at 1 thread and at the bench's count.
    let other = if o.threads == 1 { 2 } else { 1 };
    let out_other = work.join(format!("all-{other}"));
    gridbox_once(&o, other, o.generated + 1, &out_other, &work)?;
    let outputs = |dir: &Path| -> Result<serde_json::Value> {
        Ok(serde_json::from_slice::<serde_json::Value>(&std::fs::read(dir.join("receipt.json"))?)?["outputs"].clone())
    };
    let same = outputs(&out_other)? == outputs(&work.join(format!("all-{}", o.threads)))?;
    println!("gridbox outputs at {other} and {} threads: {}", o.threads, if same { "identical" } else { "DIFFERENT" });
    let _ = std::fs::remove_dir_all(&work);
    if !same {
        bail!("gridbox's outputs depend on the thread count");
    }
    Ok(())
}

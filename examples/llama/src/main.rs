//! Text generation with a Llama-architecture model on the tensor bridge.
//!
//! ```sh
//! cargo build --release --manifest-path examples/Cargo.toml
//! python3 scripts/llama/make_model.py model    # a small random model; or a downloaded one
//! gridbox run examples/target/wasm32-wasip1/release/llama.wasm --capability tensor \
//!     --ro-dir model::/model --out out -- --prompt "Once upon a time" --tokens 32
//! gridbox verify out/receipt.json --module examples/target/wasm32-wasip1/release/llama.wasm \
//!     --ro-dir model::/model
//! ```
//!
//! Flags: `--model DIR` (default `/model`; holds `config.json`, `model.safetensors` and
//! optionally `tokenizer.json`), `--prompt TEXT` or `--prompt-file FILE`, `--tokens N` (default
//! 32), `--temperature T` (default 0: greedy), `--top-k K`, `--top-p P`, `--seed S`,
//! `--stop-at-eos`. `--tokens 0` loads the model and stops (no forward pass). Writes `/output/tokens.txt` (the prompt's ids, then the generated ones),
//! `/output/text.txt` (the generated text) and `/output/logits.bin` (little-endian f32, one row
//! of `vocab` logits per generated token: the logits it was chosen from). Progress goes to
//! stderr.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;

use gridbox_llama::{Llama, Sampler};
use gridbox_models::{Bpe, Tokenizer};

struct Args {
    model: PathBuf,
    prompt: String,
    tokens: usize,
    sampler: Sampler,
    stop_at_eos: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("llama: {e}");
        std::process::exit(1);
    }
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        model: PathBuf::from("/model"),
        prompt: String::new(),
        tokens: 32,
        sampler: Sampler { temperature: 0.0, top_k: 0, top_p: 1.0, state: 0 },
        stop_at_eos: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--stop-at-eos" {
            args.stop_at_eos = true;
            continue;
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| format!("{flag} {value:?}: expected {what}");
        match flag.as_str() {
            "--model" => args.model = PathBuf::from(value),
            "--prompt" => args.prompt = value,
            "--prompt-file" => args.prompt = std::fs::read_to_string(&value).map_err(|e| format!("--prompt-file {value}: {e}"))?,
            "--tokens" => args.tokens = value.parse().map_err(|_| number("a count"))?,
            "--temperature" => args.sampler.temperature = value.parse().map_err(|_| number("a number"))?,
            "--top-k" => args.sampler.top_k = value.parse().map_err(|_| number("a count"))?,
            "--top-p" => args.sampler.top_p = value.parse().map_err(|_| number("a number in (0, 1]"))?,
            "--seed" => args.sampler.state = value.parse().map_err(|_| number("an integer"))?,
            other => return Err(format!("unknown flag {other:?} (see the source's header for the flags)").into()),
        }
    }
    if !(args.sampler.temperature >= 0.0 && args.sampler.temperature.is_finite()) {
        return Err("--temperature must be 0 or positive".into());
    }
    if !(args.sampler.top_p > 0.0 && args.sampler.top_p <= 1.0) {
        return Err("--top-p must be in (0, 1]".into());
    }
    Ok(args)
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = parse_args()?;
    let tokenizer = match std::fs::read(args.model.join("tokenizer.json")) {
        Ok(json) => Tokenizer::Bpe(Box::new(Bpe::from_json(&json)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tokenizer::Bytes,
        Err(e) => return Err(format!("{}: {e}", args.model.join("tokenizer.json").display()).into()),
    };
    let mut model = Llama::load(&args.model)?;
    let vocab = model.config().vocab_size;
    let prompt = tokenizer.encode(&args.prompt)?;
    if prompt.is_empty() {
        return Err("the prompt is empty: give --prompt TEXT".into());
    }
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(format!("the tokenizer gave id {bad}, outside the model's vocabulary of {vocab}").into());
    }
    eprintln!("llama: {} layers, {} prompt tokens, generating {}", model.config().num_hidden_layers, prompt.len(), args.tokens);
    let eos = model.config().eos_ids();
    let mut logits_file = std::io::BufWriter::new(std::fs::File::create("/output/logits.bin")?);
    let mut generated = Vec::with_capacity(args.tokens);
    if args.tokens == 0 {
        // Load only: no forward pass.
        std::fs::write("/output/tokens.txt", "")?;
        std::fs::write("/output/text.txt", "")?;
        return Ok(());
    }
    let mut logits = model.forward(&prompt)?;
    for step in 0..args.tokens {
        for value in logits.to_vec()? {
            logits_file.write_all(&value.to_le_bytes())?;
        }
        let next = args.sampler.next(&logits)?;
        generated.push(next);
        // The first line marks the prompt's end (a benchmark times it from outside).
        if step == 0 || (step + 1) % 8 == 0 || step + 1 == args.tokens {
            eprintln!("llama: {}/{} tokens", step + 1, args.tokens);
        }
        if step + 1 == args.tokens || (args.stop_at_eos && eos.contains(&next)) {
            break;
        }
        logits = model.forward(&[next])?;
    }
    logits_file.flush()?;
    let ids: Vec<String> = prompt.iter().chain(&generated).map(u32::to_string).collect();
    std::fs::write("/output/tokens.txt", format!("{}\n", ids.join(" ")))?;
    let text = tokenizer.decode(&generated)?;
    std::fs::write("/output/text.txt", &text)?;
    println!("{text}");
    Ok(())
}

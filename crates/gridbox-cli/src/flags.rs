//! Flags that several commands share, and what they turn into: inputs, a job's manifest,
//! a server's address and token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use gridbox_compute::TraceLevel;
use gridbox_core::job::INPUT_DIR;
use gridbox_core::manifest::{TensorSection, check_input_name};
use gridbox_core::{Capability, Digest, LimitKind, Manifest, artifacts};

/// The job's inputs.
#[derive(Args)]
pub(crate) struct InputArgs {
    /// An input, mounted read-only at /input/NAME.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Mount every file under a host folder as inputs under GUEST (which must be /input or below).
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    pub dirs: Vec<String>,
}

/// What a job asks for, when no manifest file is given.
#[derive(Args)]
pub(crate) struct JobFlags {
    /// An environment variable; NAME alone takes the value from gridbox's own environment.
    #[arg(long = "env", value_name = "NAME[=VAL]")]
    pub env: Vec<String>,
    /// The input to feed to the job's stdin.
    #[arg(long, value_name = "NAME")]
    pub stdin: Option<String>,
    /// A capability to grant besides `wasi`: `tensor` (the tensor bridge, every op).
    #[arg(long = "capability", value_name = "NAME")]
    pub capabilities: Vec<String>,
    /// What the tensor trace records: `full` or `readback` (needs the `tensor` capability).
    #[arg(long, value_name = "LEVEL")]
    pub trace: Option<String>,
    /// A limit for the job, e.g. `fuel=1000000` (see spec/manifest.md for names).
    #[arg(long = "limit", value_name = "NAME=VALUE")]
    pub limits: Vec<String>,
    /// Arguments passed to the job after argv[0].
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl JobFlags {
    fn any(&self) -> bool {
        !self.env.is_empty()
            || !self.args.is_empty()
            || self.stdin.is_some()
            || !self.limits.is_empty()
            || !self.capabilities.is_empty()
            || self.trace.is_some()
    }
}

/// Where a server is and who we are to it.
#[derive(Args)]
pub(crate) struct ServerArgs {
    /// The server, as http://HOST:PORT.
    #[arg(long, env = "GRIDBOX_SERVER")]
    pub server: String,
    /// Your tenant token (or set GRIDBOX_TOKEN).
    #[arg(long, env = "GRIDBOX_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// The job's manifest: the file given, or one written from the job flags (not both).
pub(crate) fn job_manifest(path: Option<&Path>, flags: &JobFlags, module: &[u8], inputs: &BTreeMap<String, Arc<[u8]>>) -> Result<Manifest> {
    match path {
        Some(_) if flags.any() => {
            bail!("--env, --stdin, --limit, --capability, --trace and job arguments go in the manifest when --manifest is given")
        }
        Some(path) => Ok(Manifest::from_toml(&read_text(path)?).with_context(|| format!("manifest {}", path.display()))?),
        None => manifest_from_flags(flags, module, inputs),
    }
}

fn manifest_from_flags(args: &JobFlags, module: &[u8], inputs: &BTreeMap<String, Arc<[u8]>>) -> Result<Manifest> {
    let mut manifest = Manifest::new(Digest::of(module));
    manifest.args = args.args.clone();
    manifest.stdin = args.stdin.clone();
    manifest.inputs = inputs.iter().map(|(name, bytes)| (name.clone(), Digest::of(bytes))).collect();
    for pair in &args.env {
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (pair.clone(), std::env::var(pair).with_context(|| format!("--env {pair}: not set in gridbox's environment"))?),
        };
        manifest.env.insert(name, value);
    }
    for pair in &args.limits {
        let (name, value) = pair.split_once('=').with_context(|| format!("--limit {pair:?}: expected NAME=VALUE"))?;
        let kind = LimitKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .with_context(|| format!("--limit {pair:?}: unknown limit {name:?}; known: {}", LimitKind::ALL.map(|k| k.as_str()).join(", ")))?;
        let value: u64 = value.replace('_', "").parse().with_context(|| format!("--limit {pair:?}: {value:?} is not a whole number"))?;
        manifest.limits.set(kind, value);
    }
    for name in &args.capabilities {
        let capability: Capability = serde_json::from_value(serde_json::Value::String(name.clone()))
            .map_err(|_| anyhow::anyhow!("--capability {name:?}: unknown; known: wasi, tensor"))?;
        if !manifest.capabilities.contains(&capability) {
            manifest.capabilities.push(capability);
        }
    }
    if let Some(level) = &args.trace {
        let trace: TraceLevel = serde_json::from_value(serde_json::Value::String(level.clone()))
            .map_err(|_| anyhow::anyhow!("--trace {level:?}: expected `full` or `readback`"))?;
        if !manifest.capabilities.contains(&Capability::Tensor) {
            bail!("--trace needs --capability tensor");
        }
        manifest.tensor = Some(TensorSection { trace, ..TensorSection::default() });
    }
    manifest.validate()?;
    Ok(manifest)
}

/// The inputs `--input` and `--dir` name, read into memory.
pub(crate) fn gather_inputs(args: &InputArgs) -> Result<BTreeMap<String, Arc<[u8]>>> {
    let mut inputs = BTreeMap::new();
    let mut add = |name: String, bytes: Vec<u8>| -> Result<()> {
        check_input_name(&name).map_err(|reason| anyhow::anyhow!("input {name:?}: {reason}"))?;
        if inputs.insert(name.clone(), Arc::from(bytes)).is_some() {
            bail!("input {name:?} is given twice");
        }
        Ok(())
    };
    for pair in &args.inputs {
        let (name, file) = pair.split_once('=').with_context(|| format!("--input {pair:?}: expected NAME=FILE"))?;
        add(name.to_string(), read(Path::new(file))?)?;
    }
    for pair in &args.dirs {
        let (host, guest) = pair.split_once("::").with_context(|| format!("--dir {pair:?}: expected HOST::GUEST"))?;
        let prefix = match guest.trim_end_matches('/').strip_prefix(INPUT_DIR) {
            Some("") => String::new(),
            Some(rest) if rest.starts_with('/') => format!("{}/", &rest[1..]),
            _ => bail!("--dir {pair:?}: the guest folder must be {INPUT_DIR} or below it (outputs go to /output)"),
        };
        for (relative, path) in artifacts::walk_files(Path::new(host)).with_context(|| format!("--dir {pair:?}"))? {
            add(format!("{prefix}{relative}"), read(&path)?)?;
        }
    }
    Ok(inputs)
}

/// A file's bytes, or an error naming it.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A text file's contents, or an error naming it.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The folder holding `receipt`, if it also holds the artifacts delivered with it.
pub(crate) fn artifacts_beside(receipt: &Path) -> Option<PathBuf> {
    let folder = receipt.parent().unwrap_or(Path::new("."));
    folder.join(artifacts::STDOUT_FILE).exists().then(|| folder.to_path_buf())
}

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
use gridbox_core::mounts::MountSpec;
use gridbox_core::{Capability, Digest, LimitKind, Manifest, artifacts};

/// The job's inputs.
#[derive(Args)]
pub(crate) struct InputArgs {
    /// An input, mounted read-only at /input/NAME.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// A host folder's files at GUEST in the job, as the wasmtime CLI's `--dir`. At /input or
    /// below they are inputs (read-only); anywhere else, `/` included, the folder is a writable
    /// mount that starts with the host files in memory, and what the job leaves in it is an output
    /// (written to OUT/mounts/GUEST). The host folder itself is never changed.
    #[arg(long = "dir", value_name = "HOST::GUEST")]
    pub dirs: Vec<String>,
    /// A host folder's files, read-only, at GUEST in the job (any guest path, `/` included).
    #[arg(long = "ro-dir", value_name = "HOST::GUEST")]
    pub read_only_dirs: Vec<String>,
}

/// A job's inputs' bytes, by name.
pub(crate) type Inputs = BTreeMap<String, Arc<[u8]>>;

/// The job's files as the flags give them: every input's bytes by name, and the mounts that show
/// some of them elsewhere (see `gridbox_core::mounts`).
pub(crate) struct JobFiles {
    /// Every input, by name.
    pub inputs: Inputs,
    /// The mounts the `--dir`/`--ro-dir` flags ask for outside /input, by guest path.
    pub mounts: BTreeMap<String, MountSpec>,
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

/// The job's manifest and inputs: the manifest file given, or one written from the job flags
/// (not both), and the inputs the input flags name. With a manifest file, a `--dir`/`--ro-dir`
/// outside /input supplies the files of the manifest's mount at that guest path.
pub(crate) fn job_manifest(path: Option<&Path>, flags: &JobFlags, inputs: &InputArgs, module: &[u8]) -> Result<(Manifest, Inputs)> {
    match path {
        Some(_) if flags.any() => {
            bail!("--env, --stdin, --limit, --capability, --trace and job arguments go in the manifest when --manifest is given")
        }
        Some(path) => {
            let manifest = Manifest::from_toml(&read_text(path)?).with_context(|| format!("manifest {}", path.display()))?;
            let files = gather_inputs(inputs, Some(&manifest))?;
            Ok((manifest, files.inputs))
        }
        None => {
            let files = gather_inputs(inputs, None)?;
            let manifest = manifest_from_flags(flags, module, &files)?;
            Ok((manifest, files.inputs))
        }
    }
}

fn manifest_from_flags(args: &JobFlags, module: &[u8], files: &JobFiles) -> Result<Manifest> {
    let mut manifest = Manifest::new(Digest::of(module));
    manifest.args = args.args.clone();
    manifest.stdin = args.stdin.clone();
    manifest.inputs = files.inputs.iter().map(|(name, bytes)| (name.clone(), Digest::of(bytes))).collect();
    manifest.mounts = files.mounts.clone();
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
    if manifest.capabilities.contains(&Capability::Tensor) {
        let newer = newer_ops_imported(module);
        if !newer.is_empty() {
            let mut section = manifest.tensor.take().unwrap_or_default();
            section.ops.extend(newer.iter().map(|op| op.name().to_string()));
            manifest.tensor = Some(section);
        }
    }
    if let Some(level) = &args.trace {
        let trace: TraceLevel = serde_json::from_value(serde_json::Value::String(level.clone()))
            .map_err(|_| anyhow::anyhow!("--trace {level:?}: expected `full` or `readback`"))?;
        if !manifest.capabilities.contains(&Capability::Tensor) {
            bail!("--trace needs --capability tensor");
        }
        manifest.tensor.get_or_insert_with(TensorSection::default).trace = trace;
    }
    manifest.validate()?;
    Ok(manifest)
}

/// The ops newer than the ABI's first release (not granted by default, spec/manifest.md) that
/// `module` imports: `--capability tensor` grants them too, so a job that uses them runs from the
/// flags alone, while a job that does not gets the same manifest (and receipt) as before they
/// existed. A module that does not parse imports nothing here; compiling it says what is wrong.
fn newer_ops_imported(module: &[u8]) -> Vec<gridbox_abi::Op> {
    let mut ops = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let Ok(payload) = payload else { break };
        if let wasmparser::Payload::ImportSection(section) = payload {
            for import in section.into_imports().flatten() {
                if import.module == gridbox_abi::IMPORT_MODULE
                    && let Some(op) = gridbox_abi::Op::from_name(import.name)
                    && !op.granted_by_default()
                    && !ops.contains(&op)
                {
                    ops.push(op);
                }
            }
        }
    }
    // In ABI order, as the default list is.
    ops.sort_by_key(|op| *op as u32);
    ops
}

/// The inputs `--input`, `--dir` and `--ro-dir` name, read into memory, and the mounts.
///
/// Without a manifest, the files of the N-th mount outside /input (`--dir` flags first, then
/// `--ro-dir`, each in command-line order) become the inputs `dirN/...`, and the mount shows them.
/// With one (a manifest file, or the one a receipt embeds), they become the inputs under the
/// `from` of the manifest's mount at that guest path, and the manifest says what is writable.
pub(crate) fn gather_inputs(args: &InputArgs, manifest: Option<&Manifest>) -> Result<JobFiles> {
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
    let mut mounts = BTreeMap::new();
    let flags = args.dirs.iter().map(|pair| ("--dir", pair, true)).chain(args.read_only_dirs.iter().map(|pair| ("--ro-dir", pair, false)));
    for (flag, pair, writable) in flags {
        let (host, guest) = pair.split_once("::").with_context(|| format!("{flag} {pair:?}: expected HOST::GUEST"))?;
        let guest = if guest.len() > 1 { guest.trim_end_matches('/') } else { guest };
        let host_files = artifacts::walk_files(Path::new(host)).with_context(|| format!("{flag} {pair:?}"))?;
        let prefix = match guest.strip_prefix(INPUT_DIR) {
            Some("") => String::new(),
            Some(rest) if rest.starts_with('/') => format!("{}/", &rest[1..]),
            _ => {
                let from = match manifest {
                    Some(manifest) => {
                        let spec = manifest.mounts.get(guest).with_context(|| format!("{flag} {pair:?}: the manifest has no mount at {guest:?}"))?;
                        match (&spec.from, host_files.is_empty()) {
                            (Some(from), _) => Some(from.clone()),
                            (None, true) => None,
                            (None, false) => bail!("{flag} {pair:?}: the manifest's mount at {guest:?} has no `from`, so it starts empty"),
                        }
                    }
                    None => (!host_files.is_empty()).then(|| format!("dir{}", mounts.len() + 1)),
                };
                if mounts.insert(guest.to_string(), MountSpec { from: from.clone(), writable }).is_some() {
                    bail!("{flag} {pair:?}: {guest:?} is mounted twice");
                }
                match from {
                    Some(from) => format!("{from}/"),
                    None => continue,
                }
            }
        };
        for (relative, path) in host_files {
            add(format!("{prefix}{relative}"), read(&path)?)?;
        }
    }
    Ok(JobFiles { inputs, mounts })
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

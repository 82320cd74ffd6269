//! The job manifest (spec/manifest.md) and the provider policy that caps it.
//!
//! A manifest is what a job asks for; a [`Policy`] is what a provider grants. [`Manifest::resolve`]
//! checks one against the other and fills in every default, giving a [`ResolvedManifest`] whose
//! canonical text is what receipts embed and hash, so a replay never depends on a policy.

use std::collections::{BTreeMap, BTreeSet};

use gridbox_abi::Op;
use gridbox_compute::TraceLevel;

use crate::digest::Digest;
use crate::limits::LimitKind;
use crate::manifest_text::canonical_text;
use crate::mounts::{MountSpec, check_mounts};

/// The manifest format this gridbox reads and writes.
pub const MANIFEST_FORMAT: u32 = 1;

/// The virtual start time when a manifest names none: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_TIME_UNIX: u64 = 1_767_225_600;

/// Most bytes that args and env together may take (they are copied into the job's memory).
pub const MAX_ARGS_ENV_BYTES: usize = 1 << 20;

/// Longest input name, in bytes.
pub const MAX_INPUT_NAME_BYTES: usize = 1024;

/// A capability a job can ask for and a policy can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Capability {
    /// Deterministic WASI preview1: args, env, virtual clocks, seeded random, stdio, `/input`
    /// (read-only) and `/output`.
    Wasi,
    /// The tensor bridge (`gridbox_tensor_v1`): the ops listed in the manifest's `[tensor]`.
    Tensor,
}

impl Capability {
    /// The name used in manifests and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Wasi => "wasi",
            Capability::Tensor => "tensor",
        }
    }
}

/// A value for each limit, some possibly unset: what a manifest asks for, or a policy's caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // Each field is the limit of the same name; see `LimitKind`.
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_elements: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdio_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_count: Option<u64>,
}

impl Limits {
    /// The value set for `kind`, if any.
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        *self.slot(kind)
    }

    /// Sets the value for `kind`.
    pub fn set(&mut self, kind: LimitKind, value: u64) {
        *self.slot_mut(kind) = Some(value);
    }

    fn slot(&self, kind: LimitKind) -> &Option<u64> {
        match kind {
            LimitKind::Fuel => &self.fuel,
            LimitKind::MemoryBytes => &self.memory_bytes,
            LimitKind::TableElements => &self.table_elements,
            LimitKind::WallTimeMs => &self.wall_time_ms,
            LimitKind::StdioBytes => &self.stdio_bytes,
            LimitKind::OutputBytes => &self.output_bytes,
            LimitKind::OutputFiles => &self.output_files,
            LimitKind::TensorBytes => &self.tensor_bytes,
            LimitKind::TensorCount => &self.tensor_count,
        }
    }

    fn slot_mut(&mut self, kind: LimitKind) -> &mut Option<u64> {
        match kind {
            LimitKind::Fuel => &mut self.fuel,
            LimitKind::MemoryBytes => &mut self.memory_bytes,
            LimitKind::TableElements => &mut self.table_elements,
            LimitKind::WallTimeMs => &mut self.wall_time_ms,
            LimitKind::StdioBytes => &mut self.stdio_bytes,
            LimitKind::OutputBytes => &mut self.output_bytes,
            LimitKind::OutputFiles => &mut self.output_files,
            LimitKind::TensorBytes => &mut self.tensor_bytes,
            LimitKind::TensorCount => &mut self.tensor_count,
        }
    }
}

/// Every limit with a value: the limits a job actually runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitValues(Limits);

impl LimitValues {
    /// The value of `kind`.
    pub fn get(&self, kind: LimitKind) -> u64 {
        // Construction guarantees every slot is set; 0 is never reached.
        self.0.get(kind).unwrap_or(0)
    }
}

/// A job manifest, as written in TOML (spec/manifest.md).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version; must be [`MANIFEST_FORMAT`].
    pub format: u32,
    /// BLAKE3 of the wasm module.
    pub module: Digest,
    /// Arguments after `argv[0]` (which is always `job.wasm`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Name of the input fed to the job's stdin; none means an empty stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The virtual wall clock's value at the start of the run, in seconds since the Unix epoch.
    #[serde(default = "default_start_time")]
    pub start_time_unix: u64,
    /// Extra seed mixed into the job's random bytes.
    #[serde(default)]
    pub seed: u64,
    /// Capabilities the job needs.
    #[serde(default = "default_capabilities")]
    pub capabilities: Vec<Capability>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Inputs by name (a relative path, mounted read-only at `/input/NAME`) and BLAKE3 hash.
    #[serde(default)]
    pub inputs: BTreeMap<String, Digest>,
    /// Mounts besides `/input` and `/output`, by absolute guest path (`/` included): which
    /// inputs each shows and whether it is writable (see [`crate::mounts`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, MountSpec>,
    /// The tensor bridge grant; needs the `tensor` capability. Resolution fills it in when the
    /// capability is asked for and the section is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<TensorSection>,
    /// Requested limits; unset ones take the policy's defaults.
    #[serde(default)]
    pub limits: Limits,
}

/// The `[tensor]` table: which bridge ops a job may import and what its trace records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSection {
    /// Op names (spec/abi.md); a module importing any other op is refused at load. Default: the
    /// ops of the ABI's first release ([`Op::granted_by_default`]); newer ones must be named.
    #[serde(default = "default_op_names")]
    pub ops: Vec<String>,
    /// `full` (every call, every tensor hashed) or `readback` (creates and reads only).
    #[serde(default)]
    pub trace: TraceLevel,
}

impl Default for TensorSection {
    fn default() -> Self {
        TensorSection { ops: default_op_names(), trace: TraceLevel::Full }
    }
}

impl TensorSection {
    /// The granted ops.
    pub fn granted_ops(&self) -> BTreeSet<Op> {
        self.ops.iter().filter_map(|name| Op::from_name(name)).collect()
    }
}

/// The ops a manifest without `tensor.ops` is granted: those of the first release, so that such a
/// job's resolved manifest (which its receipt embeds) is the same as before newer ops existed.
fn default_op_names() -> Vec<String> {
    Op::ALL.iter().filter(|op| op.granted_by_default()).map(|op| op.name().to_string()).collect()
}

fn default_start_time() -> u64 {
    DEFAULT_START_TIME_UNIX
}

fn all_capabilities() -> Vec<Capability> {
    vec![Capability::Wasi, Capability::Tensor]
}

fn default_capabilities() -> Vec<Capability> {
    vec![Capability::Wasi]
}

/// Why a manifest or a policy was refused. Every message names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The TOML did not parse or did not fit the schema (unknown key, bad hash, wrong type).
    #[error("{what} is invalid: {source}")]
    Parse {
        /// `manifest` or `policy`.
        what: &'static str,
        /// The TOML parser's error, which names the line and key.
        source: toml::de::Error,
    },
    /// `format` is not one this gridbox reads.
    #[error("manifest key `format` is {found}; this gridbox reads format {MANIFEST_FORMAT}")]
    UnsupportedFormat {
        /// The format found.
        found: u32,
    },
    /// A key holds a value that is not allowed.
    #[error("manifest key `{key}` is invalid: {reason}")]
    InvalidValue {
        /// The key, as a dotted path.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A policy key holds a value that is not allowed.
    #[error("policy key `{key}` is invalid: {reason}")]
    InvalidPolicyValue {
        /// The key, as a dotted path.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The manifest asks for more than the policy allows.
    #[error("manifest key `limits.{limit}` asks for {requested}, above the provider policy's maximum of {max}")]
    LimitAbovePolicy {
        /// Which limit.
        limit: LimitKind,
        /// What the manifest asked for.
        requested: u64,
        /// The policy's cap.
        max: u64,
    },
    /// The manifest asks for a capability the policy does not grant.
    #[error("manifest key `capabilities` asks for `{}`, which the provider policy does not grant", .0.as_str())]
    CapabilityNotGranted(Capability),
}

impl Manifest {
    /// A manifest for `module` with every other field at its default.
    pub fn new(module: Digest) -> Self {
        Manifest {
            format: MANIFEST_FORMAT,
            module,
            args: Vec::new(),
            stdin: None,
            start_time_unix: DEFAULT_START_TIME_UNIX,
            seed: 0,
            capabilities: default_capabilities(),
            env: BTreeMap::new(),
            inputs: BTreeMap::new(),
            mounts: BTreeMap::new(),
            tensor: None,
            limits: Limits::default(),
        }
    }

    /// The manifest as canonical TOML (spec/manifest.md, Canonical form), whether resolved or
    /// not: what `gridbox manifest` prints and `submit` sends.
    pub fn to_canonical_toml(&self) -> String {
        canonical_text(self)
    }

    /// Parses and checks a manifest written in TOML.
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse { what: "manifest", source: e })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks everything that does not depend on a policy.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat { found: self.format });
        }
        let invalid = |key: String, reason: &str| ManifestError::InvalidValue { key, reason: reason.into() };
        for name in self.inputs.keys() {
            if let Err(reason) = check_input_name(name) {
                return Err(invalid(format!("inputs.{name:?}"), &reason));
            }
        }
        // TOML integers are signed 64-bit: a larger value could not be written in the canonical
        // text, nor read by another implementation.
        let toml_max = i64::MAX as u64;
        for (key, value) in [("seed", self.seed), ("start_time_unix", self.start_time_unix)] {
            if value > toml_max {
                return Err(invalid(key.into(), &format!("{value} is above {toml_max}, the largest TOML integer")));
            }
        }
        check_limit_values(&self.limits, "limits")?;
        check_input_folders(&self.inputs)?;
        check_mounts(&self.mounts, self.inputs.keys()).map_err(|(key, reason)| invalid(key, &reason))?;
        if let Some(stdin) = &self.stdin
            && !self.inputs.contains_key(stdin)
        {
            return Err(invalid("stdin".into(), &format!("names input {stdin:?}, which is not in `inputs`")));
        }
        let mut total = 0usize;
        for (index, arg) in self.args.iter().enumerate() {
            if arg.contains('\0') {
                return Err(invalid(format!("args[{index}]"), "contains a NUL character"));
            }
            total = total.saturating_add(arg.len() + 1);
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(invalid(format!("env.{key:?}"), "a name must be non-empty, without `=` or NUL"));
            }
            if value.contains('\0') {
                return Err(invalid(format!("env.{key}"), "contains a NUL character"));
            }
            total = total.saturating_add(key.len() + value.len() + 2);
        }
        if total > MAX_ARGS_ENV_BYTES {
            return Err(invalid("args".into(), &format!("args and env take {total} bytes, more than {MAX_ARGS_ENV_BYTES}")));
        }
        if let Some(tensor) = &self.tensor {
            if !self.capabilities.contains(&Capability::Tensor) {
                return Err(invalid("tensor".into(), "needs `tensor` in `capabilities`"));
            }
            let mut seen = BTreeSet::new();
            for name in &tensor.ops {
                if Op::from_name(name).is_none() {
                    return Err(invalid("tensor.ops".into(), &format!("{name:?} is not an op (see spec/abi.md)")));
                }
                if !seen.insert(name) {
                    return Err(invalid("tensor.ops".into(), &format!("{name:?} is listed twice")));
                }
            }
        }
        let mut seen = Vec::new();
        for capability in &self.capabilities {
            if seen.contains(capability) {
                return Err(invalid("capabilities".into(), &format!("`{}` is listed twice", capability.as_str())));
            }
            seen.push(*capability);
        }
        Ok(())
    }

    /// Checks the manifest against `policy` and fills in every unset limit from it.
    pub fn resolve(mut self, policy: &Policy) -> Result<ResolvedManifest, ManifestError> {
        self.validate()?;
        for capability in &self.capabilities {
            if !policy.capabilities.contains(capability) {
                return Err(ManifestError::CapabilityNotGranted(*capability));
            }
        }
        for kind in LimitKind::ALL {
            let max = policy.max(kind);
            let value = match self.limits.get(kind) {
                Some(requested) if requested > max => {
                    return Err(ManifestError::LimitAbovePolicy { limit: kind, requested, max });
                }
                Some(requested) => requested,
                None => policy.default_value(kind),
            };
            self.limits.set(kind, value);
        }
        // Values the policy filled in are checked too: a receipt must hold a manifest that
        // `from_canonical_text` accepts.
        check_limit_values(&self.limits, "limits")?;
        self.capabilities.sort();
        if self.capabilities.contains(&Capability::Tensor) {
            let tensor = self.tensor.get_or_insert_with(TensorSection::default);
            // Canonical order: the ABI's op order.
            let granted = tensor.granted_ops();
            tensor.ops = granted.iter().map(|op| op.name().to_string()).collect();
        }
        ResolvedManifest::new(self)
    }
}

/// Checks every limit set in `limits` (the table `table` of a manifest or policy): within TOML's
/// integers, and a wall-time limit of at least 1 ms.
fn check_limit_values(limits: &Limits, table: &str) -> Result<(), ManifestError> {
    let toml_max = i64::MAX as u64;
    for kind in LimitKind::ALL {
        let reason = match limits.get(kind) {
            Some(value) if value > toml_max => format!("{value} is above {toml_max}, the largest TOML integer"),
            Some(0) if kind == LimitKind::WallTimeMs => "must be at least 1 (a job with no time cannot start)".to_string(),
            _ => continue,
        };
        return Err(ManifestError::InvalidValue { key: format!("{table}.{kind}"), reason });
    }
    Ok(())
}

/// Refuses an input name that is also the folder of another input (`a` and `a/b`): `/input`
/// could not hold both.
fn check_input_folders(inputs: &BTreeMap<String, Digest>) -> Result<(), ManifestError> {
    for name in inputs.keys() {
        // Names inside `name/` sort together, right from `name/` on.
        let folder = format!("{name}/");
        if let Some((inside, _)) = inputs.range(folder.clone()..).next().filter(|(other, _)| other.starts_with(&folder)) {
            return Err(ManifestError::InvalidValue {
                key: format!("inputs.{name:?}"),
                reason: format!("{name:?} is a file, but input {inside:?} needs it to be a folder"),
            });
        }
    }
    Ok(())
}

/// Checks that an input name is a plain relative path: `a.txt`, `data/b.bin`.
pub fn check_input_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_INPUT_NAME_BYTES {
        return Err(format!("an input name must have 1 to {MAX_INPUT_NAME_BYTES} bytes"));
    }
    if name.contains('\0') || name.contains('\\') {
        return Err("an input name may not contain NUL or `\\`".into());
    }
    if name.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err("an input name is a relative path without empty, `.` or `..` parts".into());
    }
    Ok(())
}

/// A manifest with every limit set and checked against a policy, with its canonical text and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedManifest {
    manifest: Manifest,
    limits: LimitValues,
    text: String,
    hash: Digest,
}

impl ResolvedManifest {
    fn new(manifest: Manifest) -> Result<Self, ManifestError> {
        let text = canonical_text(&manifest);
        let hash = Digest::of(text.as_bytes());
        Ok(ResolvedManifest { limits: LimitValues(manifest.limits), manifest, text, hash })
    }

    /// Re-reads the canonical text that a receipt embeds. No policy is applied: a verifier
    /// replays with exactly the limits the receipt committed to.
    pub fn from_canonical_text(text: &str) -> Result<Self, ManifestError> {
        let manifest = Manifest::from_toml(text)?;
        for kind in LimitKind::ALL {
            if manifest.limits.get(kind).is_none() {
                return Err(ManifestError::InvalidValue { key: format!("limits.{kind}"), reason: "a resolved manifest sets every limit".into() });
            }
        }
        let resolved = ResolvedManifest::new(manifest)?;
        if resolved.text != text {
            return Err(ManifestError::InvalidValue { key: "manifest".into(), reason: "text is not in canonical form".into() });
        }
        Ok(resolved)
    }

    /// The manifest with every limit set.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The limits the job runs under.
    pub fn limits(&self) -> LimitValues {
        self.limits
    }

    /// The canonical TOML text (what receipts embed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// BLAKE3 of the canonical text: the job's identity.
    pub fn hash(&self) -> Digest {
        self.hash
    }
}

/// What a provider grants: the capabilities it allows, and for each limit a cap and a default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Capabilities jobs may ask for. Default: all.
    #[serde(default = "all_capabilities")]
    pub capabilities: Vec<Capability>,
    /// The most a job may ask for; unset limits take [`Policy::BUILTIN_MAX`].
    #[serde(default)]
    pub max: Limits,
    /// What a job gets when its manifest is silent (capped by `max`); unset limits take
    /// [`Policy::BUILTIN_DEFAULT`].
    #[serde(default)]
    pub default: Limits,
    /// Threads one tensor kernel may use. Results never depend on it; only speed does.
    #[serde(default = "one")]
    pub kernel_threads: usize,
}

fn one() -> usize {
    1
}

impl Default for Policy {
    fn default() -> Self {
        Policy { capabilities: all_capabilities(), max: Limits::default(), default: Limits::default(), kernel_threads: 1 }
    }
}

impl Policy {
    /// Caps used where a policy file sets none.
    pub const BUILTIN_MAX: Limits = Limits {
        fuel: Some(1_000_000_000_000),
        memory_bytes: Some(4 << 30),
        table_elements: Some(1_000_000),
        wall_time_ms: Some(15 * 60 * 1000),
        stdio_bytes: Some(64 << 20),
        output_bytes: Some(1 << 30),
        output_files: Some(10_000),
        tensor_bytes: Some(16 << 30),
        tensor_count: Some(1_000_000),
    };

    /// Defaults used where neither the manifest nor the policy file sets one.
    pub const BUILTIN_DEFAULT: Limits = Limits {
        fuel: Some(10_000_000_000),
        memory_bytes: Some(1 << 30),
        table_elements: Some(100_000),
        wall_time_ms: Some(60 * 1000),
        stdio_bytes: Some(16 << 20),
        output_bytes: Some(256 << 20),
        output_files: Some(1_000),
        tensor_bytes: Some(1 << 30),
        tensor_count: Some(10_000),
    };

    /// Parses a policy written in TOML.
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        let policy: Policy = toml::from_str(text).map_err(|e| ManifestError::Parse { what: "policy", source: e })?;
        for (limits, table) in [(&policy.max, "max"), (&policy.default, "default")] {
            check_limit_values(limits, table).map_err(|e| match e {
                ManifestError::InvalidValue { key, reason } => ManifestError::InvalidPolicyValue { key, reason },
                other => other,
            })?;
        }
        Ok(policy)
    }

    /// The cap for `kind`.
    pub fn max(&self, kind: LimitKind) -> u64 {
        self.max.get(kind).or(Self::BUILTIN_MAX.get(kind)).unwrap_or(0)
    }

    /// The value a silent manifest gets for `kind`, never above [`Policy::max`].
    pub fn default_value(&self, kind: LimitKind) -> u64 {
        let default = self.default.get(kind).or(Self::BUILTIN_DEFAULT.get(kind)).unwrap_or(0);
        default.min(self.max(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> Digest {
        Digest::of(b"module")
    }

    fn parse_err(text: &str) -> String {
        Manifest::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_manifest_resolves_with_defaults() {
        let text = format!("format = 1\nmodule = \"{}\"\n", module());
        let resolved = Manifest::from_toml(&text).unwrap().resolve(&Policy::default()).unwrap();
        assert_eq!(resolved.limits().get(LimitKind::Fuel), 10_000_000_000);
        assert_eq!(resolved.manifest().capabilities, vec![Capability::Wasi]);
        // Canonical text re-reads to the same manifest and hash.
        let again = ResolvedManifest::from_canonical_text(resolved.text()).unwrap();
        assert_eq!(again, resolved);
    }

    #[test]
    fn unknown_keys_are_named() {
        let message = parse_err(&format!("format = 1\nmodule = \"{}\"\nfule = 3\n", module()));
        assert!(message.contains("fule"), "{message}");
        let message = parse_err(&format!("format = 1\nmodule = \"{}\"\n[limits]\nfuell = 3\n", module()));
        assert!(message.contains("fuell"), "{message}");
    }

    #[test]
    fn bad_hashes_are_named() {
        let message = parse_err("format = 1\nmodule = \"1234\"\n");
        assert!(message.contains("module") && message.contains("64 hex digits"), "{message}");
        let message = parse_err(&format!("format = 1\nmodule = \"{}\"\n[inputs]\n\"a.txt\" = \"zz\"\n", module()));
        assert!(message.contains("a.txt") && message.contains("64 hex digits"), "{message}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("format = 2\nmodule = \"M\"\n", "`format`"),
            ("format = 1\nmodule = \"M\"\nstdin = \"nope\"\n", "`stdin`"),
            ("format = 1\nmodule = \"M\"\n[inputs]\n\"../x\" = \"M\"\n", "inputs"),
            ("format = 1\nmodule = \"M\"\n[env]\n\"A=B\" = \"1\"\n", "env"),
            ("format = 1\nmodule = \"M\"\ncapabilities = [\"wasi\", \"wasi\"]\n", "capabilities"),
            ("format = 1\nmodule = \"M\"\ncapabilities = [\"gpu\"]\n", "gpu"),
            ("format = 1\nmodule = \"M\"\n[inputs]\n\"a\" = \"M\"\n\"a-b\" = \"M\"\n\"a/b\" = \"M\"\n", "`inputs.\"a\"`"),
            ("format = 1\nmodule = \"M\"\n[limits]\nwall_time_ms = 0\n", "`limits.wall_time_ms`"),
        ];
        for (text, key) in cases {
            let message = parse_err(&text.replace('M', &module().to_hex()));
            assert!(message.contains(key), "{key}: {message}");
        }
    }

    #[test]
    fn limits_above_policy_are_refused_with_the_limit_named() {
        let policy = Policy::from_toml("[max]\nfuel = 100\n").unwrap();
        let mut manifest = Manifest::new(module());
        manifest.limits.set(LimitKind::Fuel, 101);
        let message = manifest.clone().resolve(&policy).unwrap_err().to_string();
        assert!(message.contains("limits.fuel") && message.contains("101") && message.contains("100"), "{message}");
        manifest.limits.set(LimitKind::Fuel, 100);
        assert_eq!(manifest.resolve(&policy).unwrap().limits().get(LimitKind::Fuel), 100);
    }

    #[test]
    fn defaults_never_exceed_the_cap() {
        let policy = Policy::from_toml("[max]\nfuel = 5\n").unwrap();
        let resolved = Manifest::new(module()).resolve(&policy).unwrap();
        assert_eq!(resolved.limits().get(LimitKind::Fuel), 5);
    }

    #[test]
    fn capabilities_must_be_granted() {
        let policy = Policy::from_toml("capabilities = []\n").unwrap();
        let message = Manifest::new(module()).resolve(&policy).unwrap_err().to_string();
        assert!(message.contains("`wasi`"), "{message}");
        let zero = Policy::from_toml("[default]\nwall_time_ms = 0\n").unwrap_err().to_string();
        assert!(zero.contains("policy key `default.wall_time_ms`"), "{zero}");
        let message = Policy::from_toml("[max]\nbogus = 1\n").unwrap_err().to_string();
        assert!(message.contains("bogus"), "{message}");
    }

    #[test]
    fn non_canonical_text_is_refused() {
        let resolved = Manifest::new(module()).resolve(&Policy::default()).unwrap();
        let spaced = resolved.text().replace(" = ", "=");
        assert!(ResolvedManifest::from_canonical_text(&spaced).is_err());
    }
}

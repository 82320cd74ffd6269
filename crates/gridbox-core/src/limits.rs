//! Resource limits a job runs under, and the error that stops a job which exceeds one.

use std::fmt;

/// One kind of limit. The manifest asks for a value of each; the provider's policy caps it.
///
/// The snake_case name (`as_str`) is the key used in manifests, policies and receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitKind {
    /// Wasm fuel (roughly one unit per instruction, plus what host calls charge).
    Fuel,
    /// Bytes of linear memory, summed over all memories.
    MemoryBytes,
    /// Elements of any one table.
    TableElements,
    /// Milliseconds of wall-clock time (enforced with epoch interruption).
    WallTimeMs,
    /// Bytes written to stdout and stderr together.
    StdioBytes,
    /// Bytes held by all files in the job's output directories at any moment.
    OutputBytes,
    /// Files and directories the job creates in its output directories.
    OutputFiles,
    /// Bytes of tensor data the job holds in the bridge at once.
    TensorBytes,
    /// Tensors the job holds in the bridge at once.
    TensorCount,
}

impl LimitKind {
    /// Every limit, in the order they are listed in manifests and policies.
    pub const ALL: [LimitKind; 9] = [
        LimitKind::Fuel,
        LimitKind::MemoryBytes,
        LimitKind::TableElements,
        LimitKind::WallTimeMs,
        LimitKind::StdioBytes,
        LimitKind::OutputBytes,
        LimitKind::OutputFiles,
        LimitKind::TensorBytes,
        LimitKind::TensorCount,
    ];

    /// The key that names this limit in manifests, policies and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Fuel => "fuel",
            LimitKind::MemoryBytes => "memory_bytes",
            LimitKind::TableElements => "table_elements",
            LimitKind::WallTimeMs => "wall_time_ms",
            LimitKind::StdioBytes => "stdio_bytes",
            LimitKind::OutputBytes => "output_bytes",
            LimitKind::OutputFiles => "output_files",
            LimitKind::TensorBytes => "tensor_bytes",
            LimitKind::TensorCount => "tensor_count",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job went past one of its limits. Host functions return this (wrapped in a
/// `wasmtime::Error`) to stop the job; the runner downcasts it to fill in the receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("job exceeded its {limit} limit of {value}")]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: LimitKind,
    /// The job's value of that limit.
    pub value: u64,
}

//! gridbox's compute: tensors, the ops defined on them, and the kernels that run them on the
//! CPU (the reference, bit for bit as spec/determinism.md says) and on CUDA GPUs, with the same
//! bits. It knows nothing of wasm, HTTP or receipts: the runtime's bridge glue (in
//! `gridbox-core`) reads a job's memory and calls a [`TensorSession`] here, and the kernels are
//! tested and benchmarked alone.
//!
//! - [`tensor`]: tensors as the host holds them.
//! - [`ops`]: decoded op calls, shape inference and fuel prices, all checked before allocation.
//! - [`session`]: one job's tensors, quotas and trace, behind the bridge's handles.
//! - [`backend`]: the closed set of backends and the contract every one implements.
//! - [`cpu`]: the CPU reference kernels.
//! - [`math`]: gridbox's own exp, log, tanh, ... built from +, *, fma, division, sqrt and bit
//!   operations, so every backend rounds identically.
//! - [`cuda`]: the CUDA backend (feature `cuda`, on by default; a twin that returns errors
//!   without it).
//! - [`TraceChain`]: the BLAKE3 hash chain over bridge calls that every receipt commits to;
//!   [`trace_log`] its links kept one by one and [`merkle`] the tree over them (`trace.log_root`).
//! - [`tensor_file`]: kept tensors' file encoding; [`reference`]: one op on the CPU from a
//!   trace entry, for `gridbox check-op`.

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_disabled.rs"]
pub mod cuda;
pub mod math;
pub mod merkle;
pub mod ops;
pub mod reference;
pub mod session;
pub mod stop;
pub mod tensor;
pub mod tensor_file;
mod trace;
pub mod trace_log;

pub use backend::{Backend, Buffer, CudaError, DeviceChoice, JobBackend};
pub use ops::{OpCall, OpError};
pub use session::{CallError, PlannedCreate, PlannedOp, TensorGrant, TensorSession, TraceLevel};
pub use stop::{Stop, StopReason};
pub use tensor::{Tensor, TensorData, TensorMeta};
pub use tensor_file::TensorKeeper;
pub use trace::{TraceChain, TraceLink, chain_step};
pub use trace_log::{TraceEntry, TraceLog};

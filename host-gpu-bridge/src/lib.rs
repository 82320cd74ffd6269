//! gridbox's host bridge between jobs and tensor kernels.
//!
//! - [`tensor`]: tensors as the host holds them.
//! - [`ops`]: decoded op calls, shape inference and fuel prices, all checked before allocation.
//! - [`cpu`]: the CPU reference kernels, defined bit for bit by spec/determinism.md.
//! - [`math`]: gridbox's own exp, log, tanh, ... built from +, *, fma, division, sqrt and bit
//!   operations, so every backend rounds identically.
//! - [`cuda`]: the CUDA backend (feature `cuda`, on by default; a twin that returns errors
//!   without it).
//! - [`TraceChain`]: the BLAKE3 hash chain over bridge calls that every receipt commits to.
//!
//! - [`host`]: the functions jobs import, over a per-job [`BridgeState`]; the only module that
//!   knows about wasm.
//!
//! The kernels know nothing about wasm or HTTP: they are tested and benchmarked alone.

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_disabled.rs"]
pub mod cuda;
pub mod host;
pub mod math;
pub mod ops;
pub mod tensor;
mod trace;

pub use backend::{Backend, Buffer, CudaError, DeviceChoice, JobBackend};
pub use host::{BridgeGrant, BridgeState, TraceLevel};
pub use ops::{OpCall, OpError};
pub use tensor::{Tensor, TensorData, TensorMeta};
pub use trace::{TraceChain, TraceLink};

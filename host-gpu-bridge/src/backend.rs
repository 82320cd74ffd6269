//! Compute backends behind one closed enum.

use crate::cpu;
use crate::ops::{OpCall, OpError};
use crate::tensor::{Tensor, TensorMeta};

/// Where kernels run. Every backend gives results bit-identical to [`Backend::Cpu`], the
/// reference.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// The CPU reference kernels.
    Cpu {
        /// Threads a kernel may use (results do not depend on it).
        threads: usize,
    },
}

impl Backend {
    /// The CPU backend with `threads` threads per kernel (at least 1).
    pub fn cpu(threads: usize) -> Self {
        Backend::Cpu { threads: threads.max(1) }
    }

    /// The name receipts record (`cpu`).
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu { .. } => "cpu".into(),
        }
    }

    /// Runs `call` on `inputs`; `out` is the inferred output.
    pub fn execute(&self, call: &OpCall, inputs: &[&Tensor], out: &TensorMeta) -> Result<Tensor, OpError> {
        match self {
            Backend::Cpu { threads } => cpu::execute(call, inputs, out, *threads),
        }
    }
}

//! Planted faults, for tests only (cargo feature `fault-injection`, which release builds leave
//! out): a backend that fails or flips one bit at a chosen op, to prove that a failing device
//! never becomes a job's outcome and that verification finds a wrong result.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, Buffer, CudaError, ExecError, JobBackend};
use crate::ops::OpCall;
use crate::stop::Stop;
use crate::tensor::{Tensor, TensorData, TensorMeta};

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The op fails as a device failure would.
    DeviceError,
    /// The `at_op`-th upload (a `create`) fails as a device failure would.
    UploadError,
    /// The `at_op`-th copy back to the host (a `read`, or hashing for the trace) fails.
    DownloadError,
    /// The op succeeds, but bit `bit` of its output (counting from the first element's lowest
    /// bit, wrapping around the output) is flipped.
    FlipBit {
        /// Which bit.
        bit: u64,
    },
}

/// Where and what: the `at_op`-th op a job runs (0-based) meets `fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Which op of each job.
    pub at_op: u64,
    /// What happens to it.
    pub fault: Fault,
}

/// A backend with a plan.
#[derive(Debug, Clone)]
pub struct FaultyBackend {
    inner: Box<Backend>,
    plan: FaultPlan,
}

impl Backend {
    /// This backend, with `plan` planted in every job it runs.
    pub fn with_fault(self, plan: FaultPlan) -> Backend {
        Backend::Faulty(FaultyBackend { inner: Box::new(self), plan })
    }
}

impl FaultyBackend {
    /// The backend that does the work.
    pub fn inner(&self) -> &Backend {
        &self.inner
    }

    pub(super) fn for_job(&self) -> Result<FaultyJob, CudaError> {
        let inner = Box::new(self.inner.for_job(Stop::never())?);
        Ok(FaultyJob { inner, plan: self.plan, ops: AtomicU64::new(0), uploads: AtomicU64::new(0), downloads: AtomicU64::new(0) })
    }
}

/// One job's faulty backend: counts ops, uploads and downloads, and applies the plan.
pub struct FaultyJob {
    inner: Box<JobBackend>,
    plan: FaultPlan,
    ops: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
}

fn planted() -> CudaError {
    CudaError::Driver(std::sync::Arc::new(std::io::Error::other("planted device fault")))
}

impl FaultyJob {
    /// The job backend that does the work.
    pub fn inner(&self) -> &JobBackend {
        &self.inner
    }

    pub(super) fn upload(&self, tensor: Tensor) -> Result<Buffer, CudaError> {
        let index = self.uploads.fetch_add(1, Ordering::Relaxed);
        if self.plan.fault == Fault::UploadError && index == self.plan.at_op {
            return Err(planted());
        }
        self.inner.upload(tensor)
    }

    pub(super) fn with_host<R>(&self, buffer: &Buffer, f: impl FnOnce(&Tensor) -> R) -> Result<R, CudaError> {
        let index = self.downloads.fetch_add(1, Ordering::Relaxed);
        if self.plan.fault == Fault::DownloadError && index == self.plan.at_op {
            return Err(planted());
        }
        self.inner.with_host(buffer, f)
    }

    pub(super) fn execute(&self, call: &OpCall, inputs: &[&Buffer], out: &TensorMeta) -> Result<Buffer, ExecError> {
        let index = self.ops.fetch_add(1, Ordering::Relaxed);
        if index != self.plan.at_op || matches!(self.plan.fault, Fault::UploadError | Fault::DownloadError) {
            return self.inner.execute(call, inputs, out);
        }
        match self.plan.fault {
            Fault::UploadError | Fault::DownloadError | Fault::DeviceError => Err(planted().into()),
            Fault::FlipBit { bit } => {
                let output = self.inner.execute(call, inputs, out)?;
                let tensor = self.inner.download(&output)?;
                Ok(self.inner.upload(flip(tensor, bit))?)
            }
        }
    }
}

fn flip(tensor: Tensor, bit: u64) -> Tensor {
    let shape = tensor.shape().to_vec();
    let len = tensor.len() as u64;
    if len == 0 {
        return tensor;
    }
    let (element, within) = (((bit / 32) % len) as usize, (bit % 32) as u32);
    let data = match tensor.data().clone() {
        TensorData::F32(mut v) => {
            v[element] = f32::from_bits(v[element].to_bits() ^ (1 << within));
            TensorData::F32(v)
        }
        TensorData::I32(mut v) => {
            v[element] ^= 1 << within;
            TensorData::I32(v)
        }
        TensorData::F16(mut v) => {
            v[element] ^= 1 << (within % 16);
            TensorData::F16(v)
        }
        TensorData::Bf16(mut v) => {
            v[element] ^= 1 << (within % 16);
            TensorData::Bf16(v)
        }
    };
    Tensor::new(shape, data).unwrap_or(tensor)
}

//! The contract every GPU backend twin implements: the CUDA backend (`cuda/mod.rs`, feature
//! `cuda`) and its stand-in for builds without it (`cuda_disabled.rs`). [`super::Backend`]
//! reaches the GPU only through these traits, so a method one twin lacks, or a signature that
//! drifts, fails to compile in both builds.

use std::sync::Arc;

use super::CudaError;
use crate::ops::{OpCall, OpError};
use crate::stop::StopReason;
use crate::tensor::{Tensor, TensorMeta};

/// Why a device op failed: an error the job can handle, or a failure of the device.
#[derive(Debug)]
pub enum ExecError {
    /// A handleable op error (a bad gather index, ...).
    Op(OpError),
    /// The device failed: the provider's fault, never the job's.
    Device(CudaError),
    /// The job's stop came (its wall-time limit, or the host's switch) before the op ended.
    Stopped(StopReason),
}

impl From<CudaError> for ExecError {
    fn from(e: CudaError) -> Self {
        ExecError::Device(e)
    }
}

impl From<OpError> for ExecError {
    fn from(e: OpError) -> Self {
        ExecError::Op(e)
    }
}

/// A GPU with gridbox's kernels loaded.
pub trait GpuDevice: std::fmt::Debug + Send + Sync + Sized {
    /// One job's view of the device.
    type Job: GpuJob;

    /// How many devices there are (an error when the driver is missing).
    fn device_count() -> Result<usize, CudaError>;

    /// Opens device `ordinal` and loads the kernels.
    fn open(ordinal: usize) -> Result<Arc<Self>, CudaError>;

    /// `cuda:N (name, sm_XY)`: what logs and receipts record.
    fn description(&self) -> &str;

    /// A job's own view of the device (its own stream).
    fn new_job(self: &Arc<Self>) -> Result<Self::Job, CudaError>;
}

/// One job's work on a device. Its tensors are freed when dropped.
pub trait GpuJob: Send {
    /// A tensor in device memory.
    type Tensor: DeviceTensorMeta + Send;

    /// Copies a host tensor to the device.
    fn upload(&self, tensor: &Tensor) -> Result<Self::Tensor, CudaError>;

    /// Copies a device tensor back (after the kernels that wrote it).
    fn download(&self, tensor: &Self::Tensor) -> Result<Tensor, CudaError>;

    /// Runs `call` on device tensors; `out` is the inferred output.
    fn execute(&self, call: &OpCall, inputs: &[&Self::Tensor], out: &TensorMeta) -> Result<Self::Tensor, ExecError>;
}

/// What every device tensor knows about itself.
pub trait DeviceTensorMeta {
    /// Dtype and shape.
    fn meta(&self) -> &TensorMeta;
}

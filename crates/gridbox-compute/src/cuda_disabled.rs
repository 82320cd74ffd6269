//! The CUDA backend's twin for builds without the `cuda` feature: the same API, and every
//! entry point says CUDA is not compiled in. Its types cannot be constructed.

use std::sync::Arc;

use crate::backend::CudaError;
use crate::ops::{OpCall, OpError};
use crate::tensor::{Tensor, TensorMeta};

/// The kernels' source is not part of this build.
pub const KERNELS_SOURCE: &str = "";

/// Never present in this build.
#[derive(Debug)]
pub enum CudaDevice {}

/// Never present in this build.
pub enum CudaJob {}

/// Never present in this build.
pub enum DeviceTensor {}

/// Why a device op failed.
#[derive(Debug)]
pub enum ExecError {
    /// A handleable op error.
    Op(OpError),
    /// The device failed.
    Cuda(CudaError),
}

/// Always fails: CUDA is not compiled in.
pub fn device_count() -> Result<usize, CudaError> {
    Err(CudaError::NotCompiled)
}

/// Always fails: CUDA is not compiled in.
pub fn compile_kernels(_arch: &'static str) -> Result<(), CudaError> {
    Err(CudaError::NotCompiled)
}

impl CudaDevice {
    /// Always fails: CUDA is not compiled in.
    pub fn open(_ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    /// Unreachable: no value exists.
    pub fn description(&self) -> &str {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn new_job(self: &Arc<Self>) -> Result<CudaJob, CudaError> {
        match **self {}
    }
}

impl DeviceTensor {
    /// Unreachable: no value exists.
    pub fn meta(&self) -> &TensorMeta {
        match *self {}
    }
}

impl CudaJob {
    /// Unreachable: no value exists.
    pub fn description(&self) -> &str {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn upload(&self, _tensor: &Tensor) -> Result<DeviceTensor, CudaError> {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn download(&self, _tensor: &DeviceTensor) -> Result<Tensor, CudaError> {
        match *self {}
    }

    /// Unreachable: no value exists.
    pub fn execute(&self, _call: &OpCall, _inputs: &[&DeviceTensor], _out: &TensorMeta) -> Result<DeviceTensor, ExecError> {
        match *self {}
    }
}

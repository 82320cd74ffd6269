//! The CUDA backend's twin for builds without the `cuda` feature: it keeps the same contract
//! ([`crate::backend::contract`]), and every entry point says CUDA is not compiled in. Its
//! types cannot be constructed.

use std::sync::Arc;

use crate::backend::CudaError;
use crate::backend::contract::{DeviceTensorMeta, ExecError, GpuDevice, GpuJob};
use crate::ops::OpCall;
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

/// Always fails: CUDA is not compiled in.
pub fn compile_kernels(_arch: &'static str) -> Result<(), CudaError> {
    Err(CudaError::NotCompiled)
}

impl GpuDevice for CudaDevice {
    type Job = CudaJob;

    fn device_count() -> Result<usize, CudaError> {
        Err(CudaError::NotCompiled)
    }

    fn open(_ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        Err(CudaError::NotCompiled)
    }

    fn description(&self) -> &str {
        match *self {}
    }

    fn new_job(self: &Arc<Self>) -> Result<CudaJob, CudaError> {
        match **self {}
    }
}

impl DeviceTensorMeta for DeviceTensor {
    fn meta(&self) -> &TensorMeta {
        match *self {}
    }
}

impl GpuJob for CudaJob {
    type Tensor = DeviceTensor;

    fn upload(&self, _tensor: &Tensor) -> Result<DeviceTensor, CudaError> {
        match *self {}
    }

    fn download(&self, _tensor: &DeviceTensor) -> Result<Tensor, CudaError> {
        match *self {}
    }

    fn execute(&self, _call: &OpCall, _inputs: &[&DeviceTensor], _out: &TensorMeta) -> Result<DeviceTensor, ExecError> {
        match *self {}
    }
}

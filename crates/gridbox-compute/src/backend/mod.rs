//! Compute backends behind one closed enum, chosen by [`Backend::select`]. The GPU is reached
//! only through the [`contract`] both CUDA twins implement.

pub mod contract;
#[cfg(feature = "fault-injection")]
pub mod faults;

use std::sync::Arc;

pub use contract::ExecError;
use contract::{DeviceTensorMeta, GpuDevice, GpuJob};

use crate::cpu;
use crate::cuda::{CudaDevice, CudaJob, DeviceTensor};
use crate::ops::OpCall;
use crate::tensor::{Tensor, TensorMeta};

/// The cause of a device failure, as the driver or NVRTC reported it.
pub type DeviceCause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A CUDA failure. None of these is the job's fault.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// This gridbox was built without the `cuda` feature.
    #[error("this gridbox was built without CUDA support (the `cuda` feature)")]
    NotCompiled,
    /// A CUDA library could not be loaded.
    #[error("{0} is not installed or not on the library path")]
    LibraryMissing(&'static str),
    /// There is no device with that number.
    #[error("there is no CUDA device {ordinal} ({count} found)")]
    NoDevice {
        /// The device asked for.
        ordinal: usize,
        /// How many there are.
        count: usize,
    },
    /// NVRTC rejected the kernels.
    #[error("the CUDA kernels did not compile")]
    Compile(#[source] DeviceCause),
    /// A driver call failed.
    #[error("a CUDA driver call failed")]
    Driver(#[source] DeviceCause),
    /// gridbox's own bookkeeping went wrong (a tensor on the wrong device, a kernel not
    /// loaded): a bug, reported rather than panicking.
    #[error("internal error in the compute backend: {0}")]
    Internal(&'static str),
}

/// Which device a run uses: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when a driver and a device are present, else the CPU.
    #[default]
    Auto,
    /// The CPU reference backend.
    Cpu,
    /// CUDA device N; an error where there is none.
    Cuda(usize),
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("device {text:?}: expected auto, cpu, cuda or cuda:N")),
        }
    }
}

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
    /// An NVIDIA GPU.
    Cuda(Arc<CudaDevice>),
    /// Another backend with a fault planted in it (tests only; release builds leave it out).
    #[cfg(feature = "fault-injection")]
    Faulty(faults::FaultyBackend),
}

impl Backend {
    /// The CPU backend with `threads` threads per kernel (at least 1).
    pub fn cpu(threads: usize) -> Self {
        Backend::Cpu { threads: threads.max(1) }
    }

    /// The backend `choice` names. `Auto` never fails: without a usable GPU it is the CPU, and
    /// the second value says why.
    pub fn select(choice: DeviceChoice, threads: usize) -> Result<(Backend, Option<CudaError>), CudaError> {
        match choice {
            DeviceChoice::Cpu => Ok((Backend::cpu(threads), None)),
            DeviceChoice::Cuda(ordinal) => Ok((Backend::Cuda(CudaDevice::open(ordinal)?), None)),
            DeviceChoice::Auto => Ok(match CudaDevice::open(0) {
                Ok(device) => (Backend::Cuda(device), None),
                Err(why) => (Backend::cpu(threads), Some(why)),
            }),
        }
    }

    /// How many CUDA devices this machine has (an error when the driver is missing or CUDA is
    /// not compiled in).
    pub fn cuda_device_count() -> Result<usize, CudaError> {
        CudaDevice::device_count()
    }

    /// What receipts record: `cpu` or `cuda:N (name, sm_XY)`.
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu { .. } => "cpu".into(),
            Backend::Cuda(device) => device.description().into(),
            #[cfg(feature = "fault-injection")]
            Backend::Faulty(faulty) => faulty.inner().name(),
        }
    }

    /// A job's own handle on this backend (on CUDA, its own stream).
    pub fn for_job(&self) -> Result<JobBackend, CudaError> {
        Ok(match self {
            Backend::Cpu { threads } => JobBackend::Cpu { threads: *threads },
            Backend::Cuda(device) => JobBackend::Cuda(device.new_job()?),
            #[cfg(feature = "fault-injection")]
            Backend::Faulty(faulty) => JobBackend::Faulty(faulty.for_job()?),
        })
    }

    /// Runs `call` on host tensors, on a job handle of its own (tests and benches).
    pub fn execute(&self, call: &OpCall, inputs: &[&Tensor], out: &TensorMeta) -> Result<Tensor, ExecError> {
        if let Backend::Cpu { threads } = self {
            return cpu::execute(call, inputs, out, *threads).map_err(ExecError::Op);
        }
        let job = self.for_job()?;
        let uploaded: Vec<Buffer> = inputs.iter().map(|t| job.upload((*t).clone())).collect::<Result<_, _>>()?;
        let refs: Vec<&Buffer> = uploaded.iter().collect();
        let output = job.execute(call, &refs, out)?;
        Ok(job.download(&output)?)
    }
}

/// A tensor held by a job: in host memory (CPU) or device memory (CUDA).
pub enum Buffer {
    /// On the host.
    Host(Tensor),
    /// On a GPU.
    Device(DeviceTensor),
}

impl Buffer {
    /// Dtype and shape.
    pub fn meta(&self) -> TensorMeta {
        match self {
            Buffer::Host(t) => t.meta(),
            Buffer::Device(t) => t.meta().clone(),
        }
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.meta().checked_bytes().unwrap_or(0)
    }
}

/// One job's backend: the CPU, or a CUDA device with the job's own stream.
pub enum JobBackend {
    /// CPU kernels with this many threads.
    Cpu {
        /// Threads per kernel.
        threads: usize,
    },
    /// A CUDA device and the job's stream.
    Cuda(CudaJob),
    /// A job backend with a fault planted in it (tests only).
    #[cfg(feature = "fault-injection")]
    Faulty(faults::FaultyJob),
}

impl JobBackend {
    /// Takes a host tensor in.
    pub fn upload(&self, tensor: Tensor) -> Result<Buffer, CudaError> {
        match self {
            JobBackend::Cpu { .. } => Ok(Buffer::Host(tensor)),
            JobBackend::Cuda(job) => Ok(Buffer::Device(job.upload(&tensor)?)),
            #[cfg(feature = "fault-injection")]
            JobBackend::Faulty(job) => job.inner().upload(tensor),
        }
    }

    /// A host copy of a buffer.
    pub fn download(&self, buffer: &Buffer) -> Result<Tensor, CudaError> {
        match (self, buffer) {
            (_, Buffer::Host(t)) => Ok(t.clone()),
            (JobBackend::Cuda(job), Buffer::Device(t)) => job.download(t),
            #[cfg(feature = "fault-injection")]
            (JobBackend::Faulty(job), buffer) => job.inner().download(buffer),
            (JobBackend::Cpu { .. }, Buffer::Device(_)) => Err(CudaError::Internal("a device tensor reached the CPU backend")),
        }
    }

    /// Runs `call`; `out` is the inferred output.
    pub fn execute(&self, call: &OpCall, inputs: &[&Buffer], out: &TensorMeta) -> Result<Buffer, ExecError> {
        match self {
            JobBackend::Cpu { threads } => {
                let mut hosts = Vec::with_capacity(inputs.len());
                for buffer in inputs {
                    match buffer {
                        Buffer::Host(t) => hosts.push(t),
                        Buffer::Device(_) => return Err(CudaError::Internal("a device tensor reached the CPU backend").into()),
                    }
                }
                cpu::execute(call, &hosts, out, *threads).map(Buffer::Host).map_err(ExecError::Op)
            }
            JobBackend::Cuda(job) => {
                let mut devices = Vec::with_capacity(inputs.len());
                for buffer in inputs {
                    match buffer {
                        Buffer::Device(t) => devices.push(t),
                        Buffer::Host(_) => return Err(CudaError::Internal("a host tensor reached the CUDA backend").into()),
                    }
                }
                job.execute(call, &devices, out).map(Buffer::Device)
            }
            #[cfg(feature = "fault-injection")]
            JobBackend::Faulty(job) => job.execute(call, inputs, out),
        }
    }
}

/// The compiler checks here that both CUDA twins keep the contract.
const _: () = {
    fn keeps_the_contract<D: GpuDevice<Job = CudaJob>>()
    where
        CudaJob: GpuJob<Tensor = DeviceTensor>,
    {
    }
    let _ = keeps_the_contract::<CudaDevice>;
};

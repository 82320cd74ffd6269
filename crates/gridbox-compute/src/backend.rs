//! Compute backends behind one closed enum, chosen by [`Backend::select`].

use std::sync::Arc;

use crate::cpu;
use crate::cuda::{CudaDevice, CudaJob, DeviceTensor, ExecError};
use crate::ops::{OpCall, OpError};
use crate::tensor::{Tensor, TensorMeta};

/// A CUDA failure. None of these is the job's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    #[error("the CUDA kernels did not compile: {0}")]
    Compile(String),
    /// A driver call failed.
    #[error("CUDA error: {0}")]
    Driver(String),
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

    /// What receipts record: `cpu` or `cuda:N (name, sm_XY)`.
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu { .. } => "cpu".into(),
            Backend::Cuda(device) => device.description().into(),
        }
    }

    /// A job's own handle on this backend (on CUDA, its own stream).
    pub fn for_job(&self) -> Result<JobBackend, CudaError> {
        Ok(match self {
            Backend::Cpu { threads } => JobBackend::Cpu { threads: *threads },
            Backend::Cuda(device) => JobBackend::Cuda(device.new_job()?),
        })
    }

    /// Runs `call` on host tensors (the CPU reference; tests and benches use it directly).
    pub fn execute(&self, call: &OpCall, inputs: &[&Tensor], out: &TensorMeta) -> Result<Tensor, OpError> {
        match self {
            Backend::Cpu { threads } => cpu::execute(call, inputs, out, *threads),
            Backend::Cuda(_) => {
                let job = self.for_job().map_err(|e| OpError::InvalidParameter(e.to_string()))?;
                let uploaded: Vec<Buffer> =
                    inputs.iter().map(|t| job.upload((*t).clone())).collect::<Result<_, _>>().map_err(|e| OpError::InvalidParameter(e.to_string()))?;
                let refs: Vec<&Buffer> = uploaded.iter().collect();
                let output = job.execute(call, &refs, out).map_err(|e| match e {
                    BufferError::Op(e) => e,
                    BufferError::Cuda(e) => OpError::InvalidParameter(e.to_string()),
                })?;
                job.download(&output).map_err(|e| OpError::InvalidParameter(e.to_string()))
            }
        }
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

/// Why a job's op failed.
#[derive(Debug)]
pub enum BufferError {
    /// The job can handle it (an error code).
    Op(OpError),
    /// The device failed (the job traps).
    Cuda(CudaError),
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
}

impl JobBackend {
    /// Takes a host tensor in.
    pub fn upload(&self, tensor: Tensor) -> Result<Buffer, CudaError> {
        match self {
            JobBackend::Cpu { .. } => Ok(Buffer::Host(tensor)),
            JobBackend::Cuda(job) => Ok(Buffer::Device(job.upload(&tensor)?)),
        }
    }

    /// A host copy of a buffer.
    pub fn download(&self, buffer: &Buffer) -> Result<Tensor, CudaError> {
        match (self, buffer) {
            (_, Buffer::Host(t)) => Ok(t.clone()),
            (JobBackend::Cuda(job), Buffer::Device(t)) => job.download(t),
            (JobBackend::Cpu { .. }, Buffer::Device(_)) => Err(CudaError::Driver("a device tensor reached the CPU backend".into())),
        }
    }

    /// Runs `call`; `out` is the inferred output.
    pub fn execute(&self, call: &OpCall, inputs: &[&Buffer], out: &TensorMeta) -> Result<Buffer, BufferError> {
        match self {
            JobBackend::Cpu { threads } => {
                let mut hosts = Vec::with_capacity(inputs.len());
                for buffer in inputs {
                    match buffer {
                        Buffer::Host(t) => hosts.push(t),
                        Buffer::Device(_) => return Err(BufferError::Cuda(CudaError::Driver("a device tensor reached the CPU backend".into()))),
                    }
                }
                cpu::execute(call, &hosts, out, *threads).map(Buffer::Host).map_err(BufferError::Op)
            }
            JobBackend::Cuda(job) => {
                let mut devices = Vec::with_capacity(inputs.len());
                for buffer in inputs {
                    match buffer {
                        Buffer::Device(t) => devices.push(t),
                        Buffer::Host(_) => return Err(BufferError::Cuda(CudaError::Driver("a host tensor reached the CUDA backend".into()))),
                    }
                }
                job.execute(call, &devices, out).map(Buffer::Device).map_err(|e| match e {
                    ExecError::Op(e) => BufferError::Op(e),
                    ExecError::Cuda(e) => BufferError::Cuda(e),
                })
            }
        }
    }
}

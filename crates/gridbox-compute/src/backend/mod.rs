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
use crate::stop::Stop;
use crate::tensor::{Tensor, TensorData, TensorMeta};

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

    /// A job's own handle on this backend (on CUDA, its own stream), whose ops end early, with
    /// [`ExecError::Stopped`], once `stop` says so.
    pub fn for_job(&self, stop: Stop) -> Result<JobBackend, CudaError> {
        let kind = match self {
            Backend::Cpu { threads } => JobKind::Cpu { threads: *threads },
            Backend::Cuda(device) => JobKind::Cuda(device.new_job()?),
            #[cfg(feature = "fault-injection")]
            Backend::Faulty(faulty) => JobKind::Faulty(faulty.for_job()?),
        };
        Ok(JobBackend { kind, stop })
    }

    /// Runs `call` on host tensors, on a job handle of its own (tests and benches).
    pub fn execute(&self, call: &OpCall, inputs: &[&Tensor], out: &TensorMeta) -> Result<Tensor, ExecError> {
        if let Backend::Cpu { threads } = self {
            return cpu::execute(call, inputs, out, *threads).map_err(ExecError::Op);
        }
        let job = self.for_job(Stop::never())?;
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

/// One job's backend: the CPU, or a CUDA device with the job's own stream; and the job's stop.
pub struct JobBackend {
    kind: JobKind,
    stop: Stop,
}

enum JobKind {
    Cpu {
        threads: usize,
    },
    Cuda(CudaJob),
    #[cfg(feature = "fault-injection")]
    Faulty(faults::FaultyJob),
}

impl JobBackend {
    /// Takes a host tensor in.
    pub fn upload(&self, tensor: Tensor) -> Result<Buffer, CudaError> {
        match &self.kind {
            JobKind::Cpu { .. } => Ok(Buffer::Host(tensor)),
            JobKind::Cuda(job) => Ok(Buffer::Device(job.upload(&tensor)?)),
            #[cfg(feature = "fault-injection")]
            JobKind::Faulty(job) => job.upload(tensor),
        }
    }

    /// A host copy of a buffer.
    pub fn download(&self, buffer: &Buffer) -> Result<Tensor, CudaError> {
        self.with_host(buffer, Tensor::clone)
    }

    /// `f` of the buffer's tensor on the host: the tensor itself on the CPU (no copy), a
    /// downloaded copy from a device.
    pub fn with_host<R>(&self, buffer: &Buffer, f: impl FnOnce(&Tensor) -> R) -> Result<R, CudaError> {
        match (&self.kind, buffer) {
            #[cfg(feature = "fault-injection")]
            (JobKind::Faulty(job), buffer) => job.with_host(buffer, f),
            (_, Buffer::Host(t)) => Ok(f(t)),
            (JobKind::Cuda(job), Buffer::Device(t)) => Ok(f(&job.download(t)?)),
            (JobKind::Cpu { .. }, Buffer::Device(_)) => Err(CudaError::Internal("a device tensor reached the CPU backend")),
        }
    }

    /// Runs `call`; `out` is the inferred output. An empty output is made without running a
    /// kernel (some would loop over an empty input's huge leading dims); a stop that comes
    /// while the op runs makes it [`ExecError::Stopped`].
    pub fn execute(&self, call: &OpCall, inputs: &[&Buffer], out: &TensorMeta) -> Result<Buffer, ExecError> {
        if let Some(reason) = self.stop.reason() {
            return Err(ExecError::Stopped(reason));
        }
        let empty = out.checked_len().map_err(ExecError::Op)? == 0;
        if empty && !matches!(call, OpCall::Gather) {
            let tensor = Tensor::new(out.shape.clone(), TensorData::empty(out.dtype)).map_err(ExecError::Op)?;
            return Ok(self.upload(tensor)?);
        }
        let result = self.run(call, inputs, out);
        match self.stop.reason() {
            Some(reason) => Err(ExecError::Stopped(reason)),
            None => result,
        }
    }

    fn run(&self, call: &OpCall, inputs: &[&Buffer], out: &TensorMeta) -> Result<Buffer, ExecError> {
        match &self.kind {
            JobKind::Cpu { threads } => {
                let mut hosts = Vec::with_capacity(inputs.len());
                for buffer in inputs {
                    match buffer {
                        Buffer::Host(t) => hosts.push(t),
                        Buffer::Device(_) => return Err(CudaError::Internal("a device tensor reached the CPU backend").into()),
                    }
                }
                cpu::execute_until(call, &hosts, out, *threads, &self.stop).map(Buffer::Host).map_err(ExecError::Op)
            }
            JobKind::Cuda(job) => {
                // A device kernel cannot be stopped halfway; the stop is checked before it starts.
                if self.stop.should_stop() {
                    return Err(ExecError::Stopped(self.stop.reason().unwrap_or(crate::StopReason::WallTime)));
                }
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
            JobKind::Faulty(job) => job.execute(call, inputs, out),
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

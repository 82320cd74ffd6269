//! Provider faults: failures of the machine running a job, never of the job itself.

use gridbox_compute::CudaError;

/// The provider failed while running a job: its device or its host. A run that meets one has
/// no outcome and gets no receipt: the job did nothing wrong, a replay elsewhere would not see
/// the failure, and signing it would make an honest provider lose a dispute. The job can be run
/// again, here or elsewhere.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderFault {
    /// The job's handle on the compute device could not be made (its stream, its memory).
    #[error("the compute device could not be set up for the job")]
    DeviceSetup(#[source] CudaError),
    /// The compute device failed during a bridge call.
    #[error("the compute device failed during the bridge call `{call}`")]
    Device {
        /// The bridge call (`matmul`, `read`, ...).
        call: &'static str,
        /// What the device reported.
        #[source]
        source: CudaError,
    },
}

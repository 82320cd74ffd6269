//! The fleet's errors.

use gridbox_core::digest::Digest;
use gridbox_core::errors::BoxError;

/// Why a market operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The NATS server could not be reached or refused the credentials.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// The server's URL.
        url: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A credentials file could not be read.
    #[error("cannot read the NATS credentials file {path}")]
    Credentials {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stream, consumer or bucket the market needs is not there (providers and checkers do
    /// not create them: the gateway does).
    #[error("the market's {what} does not exist: start the gateway (`gridbox serve --fleet`) against this NATS server first")]
    MarketMissing {
        /// What is missing, e.g. `stream GRIDBOX_JOBS`.
        what: String,
        /// The server's answer.
        #[source]
        source: BoxError,
    },
    /// A JetStream operation failed (the server, the network, permissions).
    #[error("NATS: cannot {what}")]
    Nats {
        /// What was being done, e.g. `read job record 5f0c...`.
        what: String,
        /// The server's or client's answer.
        #[source]
        source: BoxError,
    },
    /// A blob is not in the market.
    #[error("blob {0} is not in the market")]
    BlobMissing(Digest),
    /// A blob's bytes do not hash to its name: damaged or planted. Never used.
    #[error("blob {name} in the market holds bytes that hash to {got}: refused")]
    BlobMismatch {
        /// The name it is stored under.
        name: Digest,
        /// What its bytes hash to.
        got: Digest,
    },
    /// A blob is larger than the reader allows.
    #[error("blob {name} is {size} bytes, above the {limit}-byte limit for {what}")]
    BlobTooLarge {
        /// The blob.
        name: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
        /// What it was read as.
        what: &'static str,
    },
    /// A message or record in the market is malformed or breaks a rule of spec/fleet.md.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was read, e.g. `job record 5f0c...`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of this machine's could not be read (to place it in the market).
    #[error("cannot read {what} here")]
    LocalRead {
        /// What.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `/metrics` listener could not be opened.
    #[error("cannot listen for /metrics on {addr}")]
    MetricsListen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl FleetError {
    /// A [`FleetError::Nats`] for `what`.
    pub(crate) fn nats(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        FleetError::Nats { what: what.into(), source: source.into() }
    }

    /// A [`FleetError::Malformed`] for `what`.
    pub(crate) fn malformed(what: impl Into<String>, reason: impl Into<String>) -> Self {
        FleetError::Malformed { what: what.into(), reason: reason.into() }
    }
}

//! The market: one gateway, many providers and verifiers, on NATS JetStream (spec/fleet.md).
//!
//! - The **gateway** (`gridbox serve --fleet`, [`gateway::FleetRunner`]) keeps the HTTP API of
//!   `gridbox serve` for tenants and hands their jobs to the market instead of running them.
//! - **Providers** (`gridbox provide`, [`provider`]) pull jobs from a JetStream work queue, run them
//!   with the same engine as `gridbox run`, store the results and the signed receipt in the
//!   market and record the job's end once, by compare-and-set on its record.
//! - **Checkers** (`gridbox check`, [`checker`]) replay a sample of ended jobs and publish a
//!   verdict per job, tallied against the provider's key.
//!
//! Nothing read from the market is trusted by name: blobs are hashed on every read, records and
//! messages are parsed strictly and bounded, receipts are checked against the job they claim to
//! be for ([`record`], [`blobs`]).

pub mod blobs;
pub mod checker;
mod error;
pub mod gateway;
pub mod market;
pub mod metrics;
pub mod provider;
mod pull;
pub mod record;
mod say;

pub use error::FleetError;
pub use market::{Credentials, Market};
pub use say::redacted_url;

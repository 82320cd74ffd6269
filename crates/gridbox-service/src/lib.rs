//! The provider service behind `gridbox serve` (spec/http.md), and the client that talks to it.
//!
//! Layers, top down: [`http`] (the hyper accept loop, axum routes, auth, body limits, timeouts;
//! the only layer that knows HTTP status codes) calls [`service`] (tenants, the bounded queue,
//! the worker pool, running jobs on a `gridbox_core::JobEngine`), which stores jobs in [`db`]
//! (redb, group commit) and bytes in [`blobs`] (content-addressed files). [`config`] reads the
//! `[[tenants]]` and `[serve]` sections of the policy file, [`metrics`] renders Prometheus
//! text, [`events`] tells whoever logs them what happens to each job, and [`wire`] holds the
//! JSON bodies the server and [`client`] share. [`load`] is the load generator of `gridbox load`.

pub mod blobs;
pub mod client;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod load;
pub mod metrics;
pub mod remote;
pub mod service;
pub mod wire;

pub use config::ServiceConfig;
pub use error::ServiceError;
pub use events::{EventHook, JobEvent, JobEventKind, escape_control};
pub use http::serve;
pub use service::Service;

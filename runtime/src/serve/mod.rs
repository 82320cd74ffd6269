//! `gridbox serve`: the provider service (spec/http.md).
//!
//! Layers, top down: [`api`] (axum routes, auth, body limits, timeouts) calls [`service`]
//! (tenants, the bounded queue, the worker pool), which stores jobs in [`db`] (redb, group
//! commit) and bytes in [`blobs`] (content-addressed files). [`wire`] holds the JSON bodies the
//! client shares.

pub mod api;
pub mod blobs;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod service;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use config::ServiceConfig;
pub use service::Service;

/// Serves `service` on `listener` until `shutdown` resolves. Then it stops accepting jobs and
/// connections, lets running jobs finish within the grace period, stops the rest (they stay
/// queued in the database) and returns.
pub async fn serve(listener: tokio::net::TcpListener, service: Arc<Service>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let workers = service.start_workers();
    let grace = Duration::from_secs(service.config().serve.grace_period_s);
    let mut stopping = service.stop_signal();
    let stop = {
        let service = service.clone();
        async move {
            shutdown.await;
            service.begin_shutdown();
        }
    };
    let server = axum::serve(listener, api::router(service.clone())).with_graceful_shutdown(stop).into_future();
    let connections = async {
        let mut stopping = service.stop_signal();
        tokio::select! {
            result = server => result,
            _ = async { let _ = stopping.wait_for(|stop| *stop).await; tokio::time::sleep(grace).await } => {
                eprintln!("gridbox: closing connections still open after the grace period");
                Ok(())
            }
        }
    };
    let jobs = async {
        let _ = stopping.wait_for(|stop| *stop).await;
        service.shutdown(grace).await;
    };
    let (result, ()) = tokio::join!(connections, jobs);
    for worker in workers {
        let _ = worker.await;
    }
    result
}

//! Each fleet process's figures, as Prometheus text, and the small `/metrics` listener of the
//! processes that have no HTTP API of their own (providers and checkers).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::FleetError;

/// A counter or gauge.
#[derive(Debug, Default)]
pub struct Figure(AtomicU64);

impl Figure {
    /// Adds one.
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away (not below 0).
    pub fn sub(&self) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| Some(value.saturating_sub(1)));
    }

    /// Sets it.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Its value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Appends one metric with its help and type lines: `gridbox_fleet_NAME VALUE`.
pub fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP gridbox_fleet_{name} {help}\n# TYPE gridbox_fleet_{name} {kind}\ngridbox_fleet_{name} {value}");
}

/// Appends one metric with one label, a line per `(label value, value)`:
/// `gridbox_fleet_NAME{LABEL="..."} VALUE`. Label values must need no escaping (keys, names).
pub fn write_labelled<'a>(out: &mut String, name: &str, kind: &str, help: &str, label: &str, rows: impl IntoIterator<Item = (&'a str, u64)>) {
    let _ = writeln!(out, "# HELP gridbox_fleet_{name} {help}\n# TYPE gridbox_fleet_{name} {kind}");
    for (value_of_label, value) in rows {
        let _ = writeln!(out, "gridbox_fleet_{name}{{{label}=\"{value_of_label}\"}} {value}");
    }
}

/// What renders a process's metrics.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` (and `GET /healthz`) on `addr` until the process ends; returns the
/// address bound (port 0 picks one).
pub async fn serve_metrics(addr: &str, render: Render) -> Result<SocketAddr, FleetError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| FleetError::MetricsListen { addr: addr.to_string(), source })?;
    let bound = listener.local_addr().map_err(|source| FleetError::MetricsListen { addr: addr.to_string(), source })?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let render = render.clone();
                    async move {
                        let (status, body) = match (request.method().as_str(), request.uri().path()) {
                            ("GET", "/metrics") => (StatusCode::OK, render()),
                            ("GET", "/healthz") => (StatusCode::OK, "{\"status\": \"ok\"}\n".to_string()),
                            _ => (StatusCode::NOT_FOUND, "not found: this listener serves GET /metrics and GET /healthz\n".to_string()),
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let connection = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(io, service);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(60), connection).await;
            });
        }
    });
    Ok(bound)
}

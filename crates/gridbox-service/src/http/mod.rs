//! The HTTP side of the service: the accept loop ([`serve`]), the routes ([`routes`]), errors
//! as HTTP responses ([`error`]) and the guard that cuts off clients that stop reading
//! ([`stall`]). The only module of the service that knows HTTP status codes.

pub mod error;
pub mod routes;
pub mod stall;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use crate::service::Service;

/// Serves `service` on `listener` until `shutdown` resolves. Then it stops accepting jobs and
/// connections, lets running jobs and open requests finish within the grace period, stops the
/// rest (they stay queued in the database) and returns.
///
/// Connections are HTTP/1.1 with limits on the time to send request headers, on how long a
/// client may stop reading a response, and on how many are open at once (`[serve]
/// header_timeout_s`, `stall_timeout_s`, `max_connections`).
pub async fn serve(listener: tokio::net::TcpListener, service: Arc<Service>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let workers = service.start_workers();
    let collector = service.start_collector();
    let settings = service.config().serve.clone();
    let grace = Duration::from_secs(settings.grace_period_s);
    let router = routes::router(service.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(settings.header_timeout_s));
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut stopping = service.stop_signal();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            _ = stopping.wait_for(|stop| *stop) => {} // the service stopped itself
        }
    };
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            () = &mut stop => break,
        };
        let Ok(permit) = permit else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    eprintln!("gridbox: cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let stream = stall::StallGuard::new(stream, Duration::from_secs(settings.stall_timeout_s));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone())));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    service.begin_shutdown();
    drop(listener);
    let connections = async {
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(grace) => eprintln!("gridbox: closing connections still open after the grace period"),
        }
    };
    tokio::join!(connections, service.shutdown(grace));
    // Workers end once their current job does; one stuck in a host call must not hold the
    // process (its job is durable and queued).
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        for worker in workers {
            let _ = worker.await;
        }
    })
    .await;
    collector.abort();
    match service.failure() {
        Some(reason) => Err(std::io::Error::other(reason)),
        None => Ok(()),
    }
}

//! The flags the market's commands share (`serve --fleet`, `provide`, `check`): where NATS is
//! and how to authenticate to it, and the `/metrics` listener.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use gridbox_fleet::Credentials;

/// How to reach the market's NATS server.
#[derive(Args)]
pub(crate) struct NatsArgs {
    /// NATS user (the server's `authorization { users = [...] }`); also GRIDBOX_NATS_USER.
    #[arg(long, env = "GRIDBOX_NATS_USER", value_name = "USER")]
    nats_user: Option<String>,
    /// NATS password for --nats-user; better given as GRIDBOX_NATS_PASSWORD than on the command line.
    #[arg(long, env = "GRIDBOX_NATS_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// A NATS credentials file (a JWT and an NKey seed, as `nsc` writes them).
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`), for servers with `nkey` users.
    #[arg(long, value_name = "FILE")]
    nats_nkey: Option<PathBuf>,
}

impl NatsArgs {
    /// The credentials the flags name.
    pub(crate) fn credentials(&self) -> Result<Credentials> {
        let user_password = match (&self.nats_user, &self.nats_password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (None, None) => None,
            _ => anyhow::bail!("--nats-user and --nats-password (GRIDBOX_NATS_USER, GRIDBOX_NATS_PASSWORD) go together"),
        };
        let nkey_seed = match &self.nats_nkey {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read the NKey seed file {}", path.display()))?.trim().to_string()),
            None => None,
        };
        Ok(Credentials { user_password, creds_file: self.nats_creds.clone(), nkey_seed })
    }
}

/// Resolves when SIGTERM or SIGINT arrives, saying which and then `stopping` (`stopping the
/// provider`); if the signals cannot be watched, says so and what to do instead (`without`) and
/// never resolves.
pub(crate) async fn stop_signal(stopping: String, without: String) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("gridbox: cannot watch for SIGTERM; {without}");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => eprintln!("gridbox: SIGTERM: {stopping}"),
        _ = interrupt.recv() => eprintln!("gridbox: SIGINT: {stopping}"),
    }
}

/// Serves `GET /metrics` on `addr`, if one was given, and says where.
pub(crate) async fn serve_metrics(addr: Option<&str>, render: gridbox_fleet::metrics::Render) -> Result<()> {
    if let Some(addr) = addr {
        let bound = gridbox_fleet::metrics::serve_metrics(addr, render).await?;
        eprintln!("gridbox: metrics on http://{bound}/metrics");
    }
    Ok(())
}

/// Runs `task` (a provider's or checker's loop) until SIGTERM or SIGINT, then tells it to stop
/// and waits for it to return. `what` names it in the messages.
pub(crate) async fn run_until_signal<F, Fut>(what: &'static str, task: F) -> Result<()>
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), gridbox_fleet::FleetError>> + Send + 'static,
{
    let (stopper, stop) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(task(stop));
    stop_signal(format!("stopping the {what}"), format!("stop the {what} with SIGKILL (nothing is lost)")).await;
    stopper.send_replace(true);
    running.await.with_context(|| format!("the {what}'s task"))??;
    Ok(())
}

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

/// Resolves when SIGTERM or SIGINT arrives, saying which.
pub(crate) async fn stop_signal(what: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("gridbox: cannot watch for SIGTERM; stop the {what} with SIGKILL (nothing is lost)");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => eprintln!("gridbox: SIGTERM: stopping the {what}"),
        _ = interrupt.recv() => eprintln!("gridbox: SIGINT: stopping the {what}"),
    }
}

//! The pull loop providers and checkers share: one message at a time from a durable pull
//! consumer, until told to stop.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::Message;
use async_nats::jetstream::consumer::PullConsumer;
use futures_util::StreamExt;
use gridbox_core::errors::error_chain;
use tokio::sync::watch;

use crate::say::say;

/// Pulls messages from `consumer` one at a time and hands each to `handle` (which acknowledges
/// it), until `stop` turns true. A pull that fails is tried again after a second; a pull that
/// neither delivers nor expires is given up and made again. `what` names the pull in logs
/// (`provider: ... jobs`).
pub(crate) async fn each_message<F, Fut>(consumer: &PullConsumer, mut stop: watch::Receiver<bool>, who: &str, what: &str, mut handle: F)
where
    F: FnMut(Message) -> Fut,
    Fut: Future<Output = ()>,
{
    while !*stop.borrow() {
        let mut batch = match consumer.batch().max_messages(1).expires(Duration::from_secs(5)).messages().await {
            Ok(batch) => batch,
            Err(e) => {
                say(&format!("gridbox: {who}: cannot pull {what}: {}; trying again", error_chain(&e)));
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => {}, _ = stop.changed() => {} }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(Duration::from_secs(10), batch.next()) => next.ok().flatten(),
                _ = stop.changed() => None,
            };
            let Some(message) = next else { break };
            match message {
                Ok(message) => handle(message).await,
                Err(e) => {
                    say(&format!("gridbox: {who}: pulling {what}: {}", error_chain(&*e)));
                    break;
                }
            }
        }
    }
}

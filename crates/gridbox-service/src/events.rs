//! Job events: what happened to each job, reported to a hook that the service's owner gives
//! [`Service::open_with_events`](crate::Service::open_with_events). The service only reports;
//! `gridbox serve` formats each event as a log line (text or JSON).

use std::sync::Arc;

use crate::db::JobState;

/// What happened to one job, and when. It borrows from the service's own records, so that
/// reporting an event allocates nothing; a hook that keeps one copies what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobEvent<'a> {
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The job's id.
    pub job: &'a str,
    /// The tenant that submitted it (a name from the policy, never a token).
    pub tenant: &'a str,
    /// What happened.
    pub kind: JobEventKind<'a>,
}

/// The kinds of [`JobEvent`], in the order a job meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobEventKind<'a> {
    /// The job is stored durably and queued: its submitter got 202.
    Accepted,
    /// Found unfinished when the service opened its data folder: it is queued again.
    Recovered,
    /// A worker started it, `waited_ms` after it was accepted.
    Started {
        /// Milliseconds from acceptance to this start.
        waited_ms: u64,
    },
    /// An attempt failed for the provider's reasons (disk, driver), not the job's: it is
    /// queued again after a pause.
    Requeued {
        /// What failed.
        reason: &'a str,
        /// Failed attempts so far.
        tries: u32,
        /// Failed attempts after which the job fails.
        max_tries: u32,
    },
    /// The job ended, and its end is durable.
    Ended {
        /// `succeeded` or `failed`.
        state: JobState,
        /// The outcome as its receipt states it; absent when it did not run to one.
        outcome: Option<&'a str>,
        /// Why it failed, for people; absent when it succeeded.
        reason: Option<&'a str>,
        /// Fuel it consumed.
        fuel_used: u64,
        /// Milliseconds from the start of its last attempt to its end (0 when it never started).
        wall_ms: u64,
    },
    /// Its record and results were deleted, a retention time after it ended.
    Expired,
}

impl JobEventKind<'_> {
    /// The event's name in logs: `accepted`, `recovered`, `started`, `requeued`, `ended`, `expired`.
    pub fn name(&self) -> &'static str {
        match self {
            JobEventKind::Accepted => "accepted",
            JobEventKind::Recovered => "recovered",
            JobEventKind::Started { .. } => "started",
            JobEventKind::Requeued { .. } => "requeued",
            JobEventKind::Ended { .. } => "ended",
            JobEventKind::Expired => "expired",
        }
    }
}

/// Called once per [`JobEvent`], on whichever thread it happened (a worker, a request's task, a
/// collection), never while the service holds a lock. It should be quick (the service runs
/// thousands of jobs a second) and must not call back into the service.
pub type EventHook = Arc<dyn Fn(&JobEvent<'_>) + Send + Sync>;

/// A hook that drops every event: [`Service::open`](crate::Service::open)'s.
pub fn no_events() -> EventHook {
    Arc::new(|_| {})
}

/// `text` with control characters (newlines, escapes) written as Rust escapes, for a log line
/// that text from a job or from a market must not forge or garble.
pub fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect::<String>().into()
    } else {
        text.into()
    }
}

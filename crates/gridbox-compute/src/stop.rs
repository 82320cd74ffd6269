//! Stopping a job inside a long kernel: the job's wall-time deadline and its host's stop switch.
//!
//! wasmtime interrupts wasm code at epoch ticks, but a host call runs to its end. Kernels whose
//! work grows faster than their data (matmul, conv2d) and the row loops of the others ask
//! [`Stop::should_stop`] between blocks of a millisecond or so and return early when it says
//! so; their partial output is then thrown away and the op reports [`StopReason`] instead. A
//! stop is never part of a result: it only decides that there is none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

/// Why a kernel stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The job's wall-time limit passed.
    WallTime,
    /// The host asked the job to stop (a service shutting down).
    Cancelled,
}

/// When one job's kernels must stop: a deadline, a switch, both or neither.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    deadline: Option<Instant>,
    switch: Option<Arc<AtomicBool>>,
    /// 0 until a check saw a reason to stop, then that reason (1 wall time, 2 cancelled).
    seen: Arc<AtomicU8>,
}

impl Stop {
    /// Never stops (benches, tests and replays without a time limit).
    pub fn never() -> Self {
        Stop::default()
    }

    /// Stops at `deadline`, or once `switch` is set.
    pub fn new(deadline: Option<Instant>, switch: Option<Arc<AtomicBool>>) -> Self {
        Stop { deadline, switch, seen: Arc::default() }
    }

    /// Whether the kernel asking should stop now. Cheap: one atomic load, and one clock read
    /// when there is a deadline. Once it has said yes it keeps saying so.
    pub fn should_stop(&self) -> bool {
        if self.seen.load(Ordering::Relaxed) != 0 {
            return true;
        }
        let reason = if self.switch.as_ref().is_some_and(|switch| switch.load(Ordering::Relaxed)) {
            2
        } else if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            1
        } else {
            return false;
        };
        self.seen.store(reason, Ordering::Relaxed);
        true
    }

    /// Why a kernel stopped, if one did since this job began.
    pub fn reason(&self) -> Option<StopReason> {
        match self.seen.load(Ordering::Relaxed) {
            1 => Some(StopReason::WallTime),
            2 => Some(StopReason::Cancelled),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_remembers_why() {
        assert!(!Stop::never().should_stop());
        let past = Stop::new(Some(Instant::now()), None);
        assert!(past.should_stop());
        assert_eq!(past.reason(), Some(StopReason::WallTime));
        let switch = Arc::new(AtomicBool::new(false));
        let stop = Stop::new(None, Some(switch.clone()));
        assert!(!stop.should_stop());
        assert_eq!(stop.reason(), None);
        switch.store(true, Ordering::Relaxed);
        assert!(stop.should_stop());
        assert_eq!(stop.reason(), Some(StopReason::Cancelled));
    }
}

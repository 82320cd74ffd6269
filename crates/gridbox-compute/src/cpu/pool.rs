//! The kernels' worker threads: one persistent pool per thread count, started on first use and
//! kept for the life of the process.
//!
//! Starting threads for every call cost 20 to 400 µs each on the 2-core development VM (more
//! under load), which a 64 Ki-element elementwise op or a 256^3 matmul does not repay; a pool
//! thread is woken instead. Work is handed out piece by piece from a shared queue, so a thread
//! that starts late (busy with another job's call, or descheduled) takes fewer pieces, and no
//! result depends on which thread computed which piece: each piece is computed whole by one
//! thread, in the spec's order.
//!
//! How the threads wait matters as much as how they work. On the development VM (a Firecracker
//! guest booted with `sched_vcpu_pack=15`, whose scheduler packs wake-ups onto busy vCPUs;
//! `perf sched timehist -w -M` shows the migrations) a helper that sleeps on a futex and is
//! woken by the caller is usually put on the caller's own vCPU after an idle spell of some tens
//! of milliseconds, and the two then share one core for 5 to 10 ms until the load balancer parts
//! them: a 1024^3 matmul at 2 threads took 17 to 18 ms instead of 12. And a caller that sleeps
//! while the last helper finishes is woken onto that helper's vCPU, which sets up the same
//! collision for the next call. So:
//! - between jobs a helper first yields for [`SPIN`], then naps in steps of [`NAP`] on its own
//!   timer (a timer wake-up stays on the helper's vCPU) for [`NAP_FOR`] after its last job, and
//!   only then sleeps until the caller wakes it;
//! - the caller never sleeps on its helpers: once the queue is empty it yields until the
//!   helpers still working have finished (at most one piece each).
//!
//! The naps cost a few microseconds of CPU every [`NAP`] for [`NAP_FOR`] after a job; a helper
//! that arrives after the caller has done all the pieces finds the queue empty and leaves.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The most threads a kernel uses, whatever `kernel_threads` says: beyond this, threads only
/// add memory and wake-up cost.
const MAX_THREADS: usize = 256;

/// How long a helper yields after a job before it naps: back-to-back kernel calls (a model's
/// ops) find it awake.
const SPIN: Duration = Duration::from_micros(200);
/// One nap of an idle helper: also the most a napping helper is late for a job. (On the
/// development VM, 250 µs naps slowed a single-thread matmul running beside them by some 10%;
/// 1 ms naps made the 1024^3 matmul at 2 threads about 1 ms slower.)
const NAP: Duration = Duration::from_micros(500);
/// How long after its last job a helper naps before it sleeps until woken.
const NAP_FOR: Duration = Duration::from_secs(1);

/// Pools by helper count (the calling thread is the extra one). Few distinct counts exist in a
/// process: the policy's `kernel_threads`, and the tests'.
static POOLS: Mutex<Vec<(usize, Arc<Shared>)>> = Mutex::new(Vec::new());

/// The job of one [`for_each`] call as its helpers see it: the caller's drain loop, its
/// lifetime erased (see the SAFETY note where it is made).
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn() + Sync + 'static));

// SAFETY: the pointee is `Sync`, so calling it from another thread is sound; the pointer is
// only dereferenced while the caller keeps the closure alive (see `for_each`).
#[allow(unsafe_code)]
unsafe impl Send for Job {}

/// What a pool's threads share.
struct Shared {
    state: Mutex<State>,
    /// Wakes helpers that sleep (past [`NAP_FOR`] without a job).
    wake: Condvar,
    /// `State::epoch`, readable without the lock: napping helpers poll it.
    epoch: AtomicU64,
    /// Helpers inside the open job's drain loop (joined under the lock, left without it).
    active: AtomicUsize,
}

/// A pool's job slot.
struct State {
    /// The open job, if any: at most one per pool (a second caller meanwhile works alone).
    job: Option<Job>,
    /// Bumped for every job, so that a helper joins each job at most once.
    epoch: u64,
    /// Helpers the open job still wants.
    wanted: usize,
    /// Helpers asleep on `wake`.
    sleepers: usize,
    /// The first panic of a helper in the open job, for the caller to resume.
    panic: Option<Box<dyn Any + Send>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pool of `helpers` threads, started on first use; `None` when no thread could be
/// started (the work then runs on the calling thread alone, with the same result).
fn pool(helpers: usize) -> Option<Arc<Shared>> {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == helpers) {
        return Some(Arc::clone(pool));
    }
    let shared = Arc::new(Shared {
        state: Mutex::new(State { job: None, epoch: 0, wanted: 0, sleepers: 0, panic: None }),
        wake: Condvar::new(),
        epoch: AtomicU64::new(0),
        active: AtomicUsize::new(0),
    });
    let started = (0..helpers)
        .filter(|i| {
            let shared = Arc::clone(&shared);
            thread::Builder::new().name(format!("gridbox-kernel-{i}")).spawn(move || helper(&shared)).is_ok()
        })
        .count();
    if started == 0 {
        return None;
    }
    pools.push((helpers, Arc::clone(&shared)));
    Some(shared)
}

/// A helper thread: waits for a job (see the module note), joins it if it still wants
/// helpers, and runs its drain loop.
fn helper(shared: &Shared) {
    let mut seen = 0;
    let mut last_job = Instant::now();
    loop {
        while shared.epoch.load(Ordering::Acquire) == seen {
            let idle = last_job.elapsed();
            if idle < SPIN {
                thread::yield_now();
            } else if idle < NAP_FOR {
                thread::sleep(NAP);
            } else {
                let mut state = shared.lock();
                state.sleepers += 1;
                while state.epoch == seen {
                    state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                state.sleepers -= 1;
            }
        }
        let job = {
            let mut state = shared.lock();
            seen = state.epoch;
            match state.job {
                Some(job) if state.wanted > 0 => {
                    state.wanted -= 1;
                    shared.active.fetch_add(1, Ordering::AcqRel);
                    Some(job)
                }
                _ => None,
            }
        };
        if let Some(job) = job {
            // SAFETY: the job was open when this helper joined it (under the lock), and its
            // caller does not return, so the closure stays alive, until `active` drops back to
            // zero, which this helper's decrement below is part of.
            #[allow(unsafe_code)]
            let result = panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() }));
            if let Err(payload) = result {
                shared.lock().panic.get_or_insert(payload);
            }
            shared.active.fetch_sub(1, Ordering::AcqRel);
        }
        last_job = Instant::now();
    }
}

/// Closes the open job and waits (yielding, never sleeping) for the helpers inside it, also
/// when the caller's own work panics.
struct Close<'a>(&'a Shared);

impl Drop for Close<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.job = None;
            state.wanted = 0;
        }
        // No helper joins from here on; those inside finish their piece (the queue is empty
        // or the caller is unwinding) and leave.
        while self.0.active.load(Ordering::Acquire) != 0 {
            thread::yield_now();
        }
    }
}

/// Calls `work(index, item)` once for every item of `items` (in index order per thread), on
/// the calling thread and up to `threads - 1` pool threads at once; returns when all are done.
/// Items are taken one at a time from a shared queue, so make each worth a few microseconds.
pub(crate) fn for_each<T: Send>(threads: usize, items: Vec<T>, work: impl Fn(usize, T) + Sync) {
    // The pool is the one for the thread count asked for (so a process has one pool per
    // `kernel_threads`, whatever the item counts); no more of its threads join than there are
    // items for.
    let pool_threads = threads.clamp(1, MAX_THREADS);
    let threads = pool_threads.min(items.len());
    if threads <= 1 {
        items.into_iter().enumerate().for_each(|(i, item)| work(i, item));
        return;
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    let drain = || {
        loop {
            // The lock is held only to take the next item, never while working on it.
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((i, item)) = next else { return };
            work(i, item);
        }
    };
    let Some(shared) = pool(pool_threads - 1) else {
        return drain();
    };
    let drain_ref: &(dyn Fn() + Sync) = &drain;
    // SAFETY: only the lifetime changes. Helpers call the job only after joining it while it is
    // open, and `Close` (dropped before this function returns or unwinds) closes it and waits
    // until every helper that joined has left, so no call outlives `drain`.
    #[allow(unsafe_code)]
    let job = Job(unsafe { std::mem::transmute::<&(dyn Fn() + Sync + '_), &'static (dyn Fn() + Sync + 'static)>(drain_ref) });
    {
        let mut state = shared.lock();
        if state.job.is_some() {
            // Another caller has the pool (concurrent jobs, or a nested call): work alone.
            drop(state);
            return drain();
        }
        state.job = Some(job);
        state.wanted = threads - 1;
        state.panic = None;
        state.epoch += 1;
        shared.epoch.store(state.epoch, Ordering::Release);
        if state.sleepers > 0 {
            shared.wake.notify_all();
        }
    }
    let close = Close(&shared);
    drain();
    drop(close);
    let payload = shared.lock().panic.take();
    if let Some(payload) = payload {
        panic::resume_unwind(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_item_runs_once_at_any_thread_count() {
        for threads in [0, 1, 2, 3, 8, 17] {
            for len in [0, 1, 2, 7, 100] {
                let seen: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
                let items: Vec<usize> = (0..len).map(|i| i * 10).collect();
                for_each(threads, items, |i, item| {
                    assert_eq!(item, i * 10);
                    seen[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1), "threads {threads} len {len}");
            }
        }
    }

    #[test]
    fn a_panic_in_any_thread_reaches_the_caller_and_the_pool_goes_on() {
        for _ in 0..20 {
            let result = panic::catch_unwind(|| {
                for_each(2, (0..64).collect(), |i, _: usize| {
                    thread::sleep(Duration::from_micros(20));
                    assert!(i != 40, "item 40");
                });
            });
            assert!(result.is_err());
        }
        let count = AtomicUsize::new(0);
        for_each(2, (0..100).collect(), |_, _: usize| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn concurrent_callers_share_a_pool() {
        let callers: Vec<_> = (0..4)
            .map(|c| {
                thread::spawn(move || {
                    for round in 0..50 {
                        let mut out = vec![0usize; 257];
                        let pieces: Vec<&mut [usize]> = out.chunks_mut(5).collect();
                        for_each(3, pieces, |i, piece| piece.iter_mut().for_each(|v| *v = i + c + round));
                        assert!(out.iter().enumerate().all(|(j, &v)| v == j / 5 + c + round));
                    }
                })
            })
            .collect();
        for caller in callers {
            assert!(caller.join().is_ok());
        }
    }

    #[test]
    fn items_can_borrow_disjoint_output() {
        let mut out = vec![0u32; 1000];
        let pieces: Vec<&mut [u32]> = out.chunks_mut(7).collect();
        for_each(3, pieces, |i, piece| piece.iter_mut().for_each(|v| *v = i as u32));
        assert!(out.iter().enumerate().all(|(j, &v)| v == (j / 7) as u32));
    }
}

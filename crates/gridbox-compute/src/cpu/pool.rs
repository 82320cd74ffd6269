//! The kernels' worker threads: one persistent pool, started on first use, grown to the most
//! threads a call has asked for, and kept for the life of the process.
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

/// The pool: started on first use, grown to the most helpers any call has asked for (at most
/// [`MAX_THREADS`] - 1), kept for the life of the process. One pool, not one per thread count:
/// kernels ask for fewer threads on small shapes, and a job choosing shapes must not make the
/// process start a pool per count.
static POOL: Mutex<Option<Pool>> = Mutex::new(None);

struct Pool {
    shared: Arc<Shared>,
    /// Helper threads started.
    helpers: usize,
    /// A start failed: no more are tried (the calls that have fewer helpers are only slower).
    spawn_failed: bool,
}

/// One [`for_each`] call's work as its helpers see it. Each call has its own count of helpers
/// inside and its own panic slot, so that nothing of one call (a helper still leaving, a
/// panic) can reach another call on the same pool.
struct Job {
    /// The caller's drain loop, its lifetime erased (see the SAFETY note where it is made).
    work: *const (dyn Fn() + Sync + 'static),
    /// Helpers inside `work`: joined under the pool's lock while the job is open, left by
    /// [`Leave`] whatever happens inside.
    active: AtomicUsize,
    /// The first panic of a helper in this job, for the caller to resume.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `work` points to a `Sync` closure, so calling it from other threads is sound, and it
// is only called by a helper counted in `active`, which the caller waits to see drop to zero
// before the closure's frame ends (see `for_each` and `Close`). The other fields are `Send` and
// `Sync`.
#[allow(unsafe_code)]
unsafe impl Send for Job {}
// SAFETY: as for `Send`: shared access is to atomics, a mutex and a pointer to a `Sync` closure.
#[allow(unsafe_code)]
unsafe impl Sync for Job {}

/// What the pool's threads share.
struct Shared {
    state: Mutex<State>,
    /// Wakes helpers that sleep (past [`NAP_FOR`] without a job).
    wake: Condvar,
    /// `State::epoch`, readable without the lock: napping helpers poll it.
    epoch: AtomicU64,
}

/// The pool's job slot.
struct State {
    /// The open job, if any: at most one at a time (a second caller meanwhile works alone).
    job: Option<Arc<Job>>,
    /// Changed for every job, so that a helper looks at each job once.
    epoch: u64,
    /// Helpers the open job still wants.
    wanted: usize,
    /// Helpers asleep on `wake`.
    sleepers: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pool with at least `helpers` threads where they could be started, and how many it has;
/// `None` when it has none (the work then runs on the calling thread alone, with the same
/// result).
fn pool(helpers: usize) -> Option<(Arc<Shared>, usize)> {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    let pool = pool.get_or_insert_with(|| Pool {
        shared: Arc::new(Shared { state: Mutex::new(State { job: None, epoch: 0, wanted: 0, sleepers: 0 }), wake: Condvar::new(), epoch: AtomicU64::new(0) }),
        helpers: 0,
        spawn_failed: false,
    });
    while pool.helpers < helpers.min(MAX_THREADS - 1) && !pool.spawn_failed {
        let shared = Arc::clone(&pool.shared);
        match thread::Builder::new().name(format!("gridbox-kernel-{}", pool.helpers)).spawn(move || helper(&shared)) {
            Ok(_) => pool.helpers += 1,
            Err(_) => pool.spawn_failed = true,
        }
    }
    (pool.helpers > 0).then(|| (Arc::clone(&pool.shared), pool.helpers))
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
            match &state.job {
                Some(job) if state.wanted > 0 => {
                    // Counted under the lock, so the caller, which closes the job under the
                    // lock and then waits for `active`, waits for this helper too.
                    job.active.fetch_add(1, Ordering::AcqRel);
                    let job = Arc::clone(job);
                    state.wanted -= 1;
                    Some(job)
                }
                _ => None,
            }
        };
        // Only a job this helper worked on restarts its spin and naps: the others in the pool
        // that a job did not need keep their own schedule.
        if let Some(job) = job {
            run(&job);
            last_job = Instant::now();
        }
    }
}

/// Runs a joined job's work on a helper, keeping its first panic for the caller, and leaves.
fn run(job: &Job) {
    let _leave = Leave(&job.active);
    // SAFETY: this helper was counted in `job.active` while the job was open (under the lock),
    // and its caller waits for `active` to drop to zero (which `_leave` does last, whatever
    // happens here) before the closure's frame ends.
    #[allow(unsafe_code)]
    let result = panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*job.work)() }));
    if let Err(payload) = result {
        let mut first = job.panic.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(payload);
        } else {
            // Not dropped: a payload's `Drop` may itself panic, which would end this thread.
            std::mem::forget(payload);
        }
    }
}

/// Leaves a job: decrements its count of helpers inside when dropped.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// A caller's hold on its published job: closing it (no helper joins after) and waiting,
/// yielding, never sleeping, until the helpers inside have left. Done by [`Close::finish`] on
/// the normal path and by `Drop` when the caller's own work panics.
struct Close<'a> {
    shared: &'a Shared,
    job: &'a Arc<Job>,
    published: bool,
}

impl Close<'_> {
    /// Closes and waits; the first helper panic, if any.
    fn close(&mut self) -> Option<Box<dyn Any + Send>> {
        if !std::mem::replace(&mut self.published, false) {
            return None;
        }
        {
            let mut state = self.shared.lock();
            if state.job.as_ref().is_some_and(|open| Arc::ptr_eq(open, self.job)) {
                state.job = None;
                state.wanted = 0;
            }
        }
        // Helpers inside take what is left in the queue (nothing, or the rest when the caller
        // is unwinding) and leave.
        while self.job.active.load(Ordering::Acquire) != 0 {
            thread::yield_now();
        }
        self.job.panic.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn finish(mut self) -> Option<Box<dyn Any + Send>> {
        self.close()
    }
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        // Only while unwinding from the caller's own panic, which goes on: a helper's panic
        // would be a second one, and is not dropped (its `Drop` could panic too).
        if let Some(payload) = self.close() {
            std::mem::forget(payload);
        }
    }
}

/// Calls `work(index, item)` once for every item of `items` (in index order per thread), on
/// the calling thread and up to `threads - 1` pool threads at once; returns when all are done.
/// Items are taken one at a time from a shared queue, so make each worth a few microseconds.
/// A call made while another holds the pool (a concurrent caller, or a kernel inside a kernel)
/// works alone.
pub(crate) fn for_each<T: Send>(threads: usize, items: Vec<T>, work: impl Fn(usize, T) + Sync) {
    let threads = threads.clamp(1, MAX_THREADS).min(items.len());
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
    let Some((shared, helpers)) = pool(threads - 1) else {
        return drain();
    };
    let drain_ref: &(dyn Fn() + Sync) = &drain;
    // SAFETY: only the lifetime changes. Helpers call the job only after joining it while it is
    // open, and `close` (finished, or dropped while unwinding, before `drain` goes out of scope:
    // it is declared after it) closes it and waits until every helper that joined has left.
    #[allow(unsafe_code)]
    let work_ptr = unsafe { std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(drain_ref as *const _) };
    let job = Arc::new(Job { work: work_ptr, active: AtomicUsize::new(0), panic: Mutex::new(None) });
    let mut close = Close { shared: &shared, job: &job, published: false };
    {
        let mut state = shared.lock();
        if state.job.is_some() {
            drop(state);
            return drain();
        }
        state.job = Some(Arc::clone(&job));
        close.published = true;
        state.wanted = (threads - 1).min(helpers);
        state.epoch = state.epoch.wrapping_add(1);
        shared.epoch.store(state.epoch, Ordering::Release);
        // Wake no more sleepers than the job wants: a pool grown by one wide call keeps its
        // threads, and waking them all for every small call cost 3 to 10 times its CPU.
        for _ in 0..state.wanted.min(state.sleepers) {
            shared.wake.notify_one();
        }
    }
    drain();
    if let Some(payload) = close.finish() {
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

//! Review tests for the kernel pool (`super::pool`): interleavings the pool's own tests do not
//! reach. The first five broke the pool of aa89e64 (line numbers below are that version's); all
//! tests share the one pool of the process, so a call may find it busy and work alone.

use super::pool::for_each;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Every item runs exactly once, also with many callers on one pool and items of uneven cost.
#[test]
fn many_callers_every_item_once() {
    let callers: Vec<_> = (0..6)
        .map(|c| {
            thread::spawn(move || {
                for round in 0..40 {
                    let len = 1 + (round * 7 + c) % 97;
                    let seen: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
                    for_each(7, (0..len).collect(), |i, item: usize| {
                        assert_eq!(i, item);
                        if i % 13 == 0 {
                            thread::yield_now();
                        }
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
                }
            })
        })
        .collect();
    for caller in callers {
        assert!(caller.join().is_ok());
    }
}

// Interleavings that broke aa89e64's pool (review findings): a helper's panic landing in another
// call, a helper thread dying inside a job, a dangling job after a panicking payload drop, and
// nested calls deadlocking.

fn on_helper() -> bool {
    thread::current().name().is_some_and(|n| n.starts_with("gridbox-kernel"))
}

/// Waits (bounded, so a broken pool fails the test instead of hanging it) until `done` holds.
fn wait_until(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(20) {
            return false;
        }
        thread::yield_now();
    }
    true
}

/// A panic payload whose drop panics (quietly: `resume_unwind` skips the hook).
struct LoudDrop;

impl Drop for LoudDrop {
    fn drop(&mut self) {
        panic::resume_unwind(Box::new("payload drop"));
    }
}

/// A helper's panic belongs to the job it ran in: with a second caller opening jobs on the same
/// pool, the first caller's `drop(close)` .. `panic.take()` window (pool.rs 236-237) lets the
/// second caller's `state.panic = None` (pool.rs 227) drop the payload, and the first caller
/// returns normally with an item never done.
#[test]
fn a_helper_panic_is_never_lost_to_another_caller() {
    const THREADS: usize = 5;
    let stop = Arc::new(AtomicBool::new(false));
    let stolen = Arc::new(AtomicUsize::new(0));
    let other = {
        let (stop, stolen) = (Arc::clone(&stop), Arc::clone(&stolen));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = panic::catch_unwind(|| for_each(THREADS, vec![0u8; 2], |_, _| {}));
                if r.is_err() {
                    stolen.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut lost = 0;
    let mut helper_panics = 0;
    for _ in 0..20000 {
        let panicked = AtomicBool::new(false);
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            for_each(THREADS, vec![0u8; 8], |_, _| {
                if on_helper() && !panicked.swap(true, Ordering::Relaxed) {
                    panic::resume_unwind(Box::new("helper"));
                }
            })
        }));
        if panicked.load(Ordering::Relaxed) {
            helper_panics += 1;
            if r.is_ok() {
                lost += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(other.join().is_ok());
    let stolen = stolen.load(Ordering::Relaxed);
    eprintln!("helper panics {helper_panics}, lost {lost}, stolen {stolen}");
    assert!(lost == 0 && stolen == 0, "of {helper_panics} helper panics, {lost} lost and {stolen} resumed in the other caller");
}

/// Two helpers panic in one job with payloads whose drop panics: the second payload must not be
/// dropped on the helper (its drop would end the thread before it leaves the job, and the
/// caller would wait for it forever). Tried until one run had two helper panics: while another
/// test holds the pool, a call works alone.
#[test]
fn a_helper_whose_panic_payload_panics_on_drop_does_not_hang_the_caller() {
    let mut two_panicked = false;
    for _ in 0..50 {
        let done = Arc::new(AtomicBool::new(false));
        let panics = Arc::new(AtomicUsize::new(0));
        {
            let (done, panics) = (Arc::clone(&done), Arc::clone(&panics));
            thread::spawn(move || {
                let _ = panic::catch_unwind(AssertUnwindSafe(|| {
                    // 3 items: the job wants 2 helpers.
                    for_each(23, vec![0u8; 3], |_, _| {
                        if on_helper() {
                            if panics.fetch_add(1, Ordering::SeqCst) < 2 {
                                panic::resume_unwind(Box::new(LoudDrop));
                            }
                        } else {
                            let start = Instant::now();
                            while panics.load(Ordering::SeqCst) < 2 && start.elapsed() < Duration::from_millis(200) {
                                thread::yield_now();
                            }
                        }
                    })
                }))
                .map_err(std::mem::forget);
                done.store(true, Ordering::SeqCst);
            });
        }
        assert!(wait_until(|| done.load(Ordering::SeqCst)), "for_each never returned: a helper died inside the job");
        if panics.load(Ordering::SeqCst) >= 2 {
            two_panicked = true;
            break;
        }
    }
    assert!(two_panicked, "no run had two helpers panic in one job");
}

/// A payload left in the slot (caller and helper both panicked) is dropped by the next job's
/// `state.panic = None` (pool.rs 227) after `state.job = Some(job)` (225) and before `Close`
/// exists (234): when that drop panics, the caller unwinds with its dangling `drain` still in
/// the slot. Every later caller then works alone (the slot looks busy), and a helper that takes
/// the lock meanwhile (it saw an earlier epoch late) joins the dangling job: use after free.
#[test]
fn a_stale_panic_payload_cannot_leave_a_dangling_job() {
    const THREADS: usize = 29;
    // Job 1: a helper panics with a payload that panics on drop, then the caller panics too, so
    // `for_each` unwinds without taking the payload.
    let helper_panicked = AtomicBool::new(false);
    let first = panic::catch_unwind(AssertUnwindSafe(|| {
        for_each(THREADS, vec![0u8; 2], |_, _| {
            if on_helper() {
                if !helper_panicked.swap(true, Ordering::SeqCst) {
                    panic::resume_unwind(Box::new(LoudDrop));
                }
            } else {
                assert!(wait_until(|| helper_panicked.load(Ordering::SeqCst)));
                panic::resume_unwind(Box::new("caller"));
            }
        })
    }));
    assert!(first.is_err());
    // Job 2: an innocent call.
    let second = panic::catch_unwind(|| for_each(THREADS, vec![0u8; 2], |_, _| {}));
    let second_panicked = second.is_err();
    if let Err(payload) = second {
        std::mem::forget(payload);
    }
    // Jobs 3..: helpers must still take part.
    let helped = AtomicBool::new(false);
    for _ in 0..20 {
        for_each(THREADS, vec![0u8; 200], |_, _| {
            if on_helper() {
                helped.store(true, Ordering::Relaxed);
            }
            thread::sleep(Duration::from_micros(50));
        });
        if helped.load(Ordering::Relaxed) {
            break;
        }
    }
    assert!(
        !second_panicked && helped.load(Ordering::Relaxed),
        "innocent call panicked: {second_panicked}; helpers still join: {}",
        helped.load(Ordering::Relaxed)
    );
}

/// Nested calls (a kernel inside a kernel, on a helper or on the caller) finish, every item once.
#[test]
fn nested_calls_finish() {
    let count = AtomicUsize::new(0);
    for_each(9, (0..20).collect(), |_, _: usize| {
        for_each(9, (0..10).collect(), |_, _: usize| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        for_each(10, (0..10).collect(), |_, _: usize| {
            for_each(9, (0..3).collect(), |_, _: usize| {
                count.fetch_add(1, Ordering::Relaxed);
            });
        });
    });
    assert_eq!(count.load(Ordering::Relaxed), 20 * (10 + 10 * 3));
}

// Second review (8ef3b07): the closure's lifetime is erased for the helpers, so no helper may
// run it after `for_each` has returned or unwound, whichever way the call ends.

/// Sets its flag when dropped: captured by the work closure, it marks the end of the closure's
/// frame as the helpers can see it.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The caller panics on its first item while helpers are inside with slow items: the caller
/// unwinds only after the helpers have left, so none of them runs the closure (or sees its
/// captures dropped) after `for_each` has unwound.
#[test]
fn no_helper_runs_the_closure_after_the_caller_unwinds() {
    let mut helped = 0;
    for _ in 0..30 {
        let dropped = Arc::new(AtomicBool::new(false));
        let returned = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicUsize::new(0));
        let helpers_in = Arc::new(AtomicUsize::new(0));
        let flag = DropFlag(Arc::clone(&dropped));
        let (d, r, l, h) = (Arc::clone(&dropped), Arc::clone(&returned), Arc::clone(&late), Arc::clone(&helpers_in));
        let result = panic::catch_unwind(AssertUnwindSafe(move || {
            for_each(4, vec![0u8; 40], move |_, _| {
                let _keep = &flag;
                if on_helper() {
                    h.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_micros(200));
                    if d.load(Ordering::SeqCst) || r.load(Ordering::SeqCst) {
                        l.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    // Give the helpers time to join, then panic with items left in the queue.
                    // (Briefly: while another test holds the pool, this call works alone.)
                    let start = Instant::now();
                    while h.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_millis(5) {
                        thread::yield_now();
                    }
                    thread::sleep(Duration::from_micros(300));
                    panic::resume_unwind(Box::new("caller"));
                }
            })
        }));
        returned.store(true, Ordering::SeqCst);
        assert!(result.is_err());
        assert!(dropped.load(Ordering::SeqCst), "the closure's captures outlived the call");
        // Nothing a helper does after this point may touch the closure: give a straggler time.
        thread::sleep(Duration::from_millis(2));
        assert_eq!(late.load(Ordering::SeqCst), 0, "a helper ran the closure after for_each unwound");
        if helpers_in.load(Ordering::SeqCst) > 0 {
            helped += 1;
        }
    }
    eprintln!("runs with a helper inside: {helped} of 30");
}

/// A helper's work calls `for_each` after the outer caller has run out of items (the outer job
/// is closed, so the nested call publishes its own job and other helpers join it): every item
/// runs once, and a panic of a helper in the nested job reaches the outermost caller.
#[test]
fn nested_jobs_published_by_helpers_finish_and_panics_climb() {
    const THREADS: usize = 6;
    // Grow the pool (if no other test has) so that helpers outside the outer job exist.
    for_each(THREADS, vec![0u8; 64], |_, _| {});
    let count = AtomicUsize::new(0);
    let nested_calls = AtomicUsize::new(0);
    let nested_helped = AtomicBool::new(false);
    for _ in 0..50 {
        // Two items: the outer job wants one helper, the rest of the pool is free.
        for_each(THREADS, vec![0u8; 2], |_, _| {
            if !on_helper() {
                thread::sleep(Duration::from_micros(100));
            } else {
                // Let the outer caller finish its items and close its job.
                thread::sleep(Duration::from_micros(500));
                let me = thread::current().id();
                nested_calls.fetch_add(1, Ordering::Relaxed);
                for_each(THREADS, (0..8).collect(), |_, _: usize| {
                    if thread::current().id() != me {
                        nested_helped.store(true, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_micros(200));
                    count.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        if nested_helped.load(Ordering::Relaxed) {
            break;
        }
    }
    assert_eq!(count.load(Ordering::Relaxed), 8 * nested_calls.load(Ordering::Relaxed));
    assert!(nested_helped.load(Ordering::Relaxed), "no nested job published by a helper had helpers");

    let mut climbed = false;
    for _ in 0..50 {
        let r = panic::catch_unwind(|| {
            for_each(THREADS, vec![0u8; 2], |_, _| {
                if !on_helper() {
                    thread::sleep(Duration::from_micros(100));
                } else {
                    thread::sleep(Duration::from_micros(500));
                    let me = thread::current().id();
                    for_each(THREADS, (0..8).collect(), |_, _: usize| {
                        thread::sleep(Duration::from_micros(200));
                        if thread::current().id() != me {
                            panic::resume_unwind(Box::new(7u32));
                        }
                    });
                }
            });
        });
        if let Err(payload) = r {
            assert_eq!(payload.downcast_ref::<u32>(), Some(&7), "another panic reached the caller");
            climbed = true;
            break;
        }
    }
    assert!(climbed, "no nested helper panic reached the outermost caller");
}

/// The pool grows (a call asks for more threads) while another caller's job is open: both
/// calls do every item once, and later calls get the new helpers.
#[test]
fn the_pool_grows_while_a_job_is_open() {
    const BIG: usize = 41;
    let open = AtomicBool::new(false);
    let release = AtomicBool::new(false);
    let seen: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
    let seen_big: Vec<AtomicUsize> = (0..BIG).map(|_| AtomicUsize::new(0)).collect();
    thread::scope(|s| {
        s.spawn(|| {
            for_each(3, (0..64).collect(), |i, _: usize| {
                open.store(true, Ordering::SeqCst);
                if i == 0 {
                    assert!(wait_until(|| release.load(Ordering::SeqCst)));
                }
                seen[i].fetch_add(1, Ordering::Relaxed);
            });
        });
        assert!(wait_until(|| open.load(Ordering::SeqCst)));
        for_each(BIG, (0..BIG).collect(), |i, _: usize| {
            seen_big[i].fetch_add(1, Ordering::Relaxed);
        });
        release.store(true, Ordering::SeqCst);
    });
    assert!(seen.iter().chain(&seen_big).all(|s| s.load(Ordering::Relaxed) == 1));
    let helpers = std::sync::Mutex::new(std::collections::HashSet::new());
    for _ in 0..20 {
        for_each(BIG, (0..400).collect(), |_, _: usize| {
            if on_helper() {
                helpers.lock().unwrap().insert(thread::current().id());
            }
            thread::sleep(Duration::from_micros(20));
        });
    }
    assert!(helpers.lock().unwrap().len() > 3, "the grown pool's helpers never joined");
}

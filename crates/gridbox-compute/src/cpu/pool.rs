//! The kernels' worker threads: one persistent pool per thread count, started on first use and
//! kept for the life of the process.
//!
//! Starting threads for every call cost 20 to 400 µs each on the 2-core development VM (more
//! under load), which a 64 Ki-element elementwise op or a 256^3 matmul does not repay; a pool
//! thread is woken instead. Work is handed out piece by piece from a shared queue, so a thread
//! that starts late (busy with another job's call, or descheduled) takes fewer pieces, and no
//! result depends on which thread computed which piece: each piece is computed whole by one
//! thread, in the spec's order.

use std::sync::{Arc, Mutex, PoisonError};

use rayon_core::{ThreadPool, ThreadPoolBuilder};

/// The most threads a kernel uses, whatever `kernel_threads` says: beyond this, threads only
/// add memory and wake-up cost.
const MAX_THREADS: usize = 256;

/// Pools by helper count (the calling thread is the extra one). Few distinct counts exist in a
/// process: the policy's `kernel_threads`, and the tests'.
static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());

/// The pool of `helpers` threads, started on first use; `None` when threads cannot be started
/// (the work then runs on the calling thread alone, with the same result).
fn pool(helpers: usize) -> Option<Arc<ThreadPool>> {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == helpers) {
        return Some(Arc::clone(pool));
    }
    let pool = ThreadPoolBuilder::new().num_threads(helpers).thread_name(|i| format!("gridbox-kernel-{i}")).build().ok()?;
    let pool = Arc::new(pool);
    pools.push((helpers, Arc::clone(&pool)));
    Some(pool)
}

/// Calls `work(index, item)` once for every item of `items` (in index order per thread), on
/// the calling thread and up to `threads - 1` pool threads at once; returns when all are done.
/// Items are taken one at a time from a shared queue, so make each worth a few microseconds.
pub(crate) fn for_each<T: Send>(threads: usize, items: Vec<T>, work: impl Fn(usize, T) + Sync) {
    // The pool is the one for the thread count asked for (so a process has one pool per
    // `kernel_threads`, whatever the item counts); no more of its threads are woken than there
    // are items for.
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
    match pool(pool_threads - 1) {
        Some(pool) => pool.in_place_scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|_| drain());
            }
            drain();
        }),
        None => drain(),
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
    fn items_can_borrow_disjoint_output() {
        let mut out = vec![0u32; 1000];
        let pieces: Vec<&mut [u32]> = out.chunks_mut(7).collect();
        for_each(3, pieces, |i, piece| piece.iter_mut().for_each(|v| *v = i as u32));
        assert!(out.iter().enumerate().all(|(j, &v)| v == (j / 7) as u32));
    }
}

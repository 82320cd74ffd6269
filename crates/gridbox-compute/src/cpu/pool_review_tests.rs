//! Review tests for the kernel pool (`super::pool`): interleavings the pool's own tests do not
//! reach. Each test uses a thread count no other test uses, so that a pool it breaks is its own.

use super::pool::for_each;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

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

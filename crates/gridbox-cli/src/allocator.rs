//! Allocator settings for the long-running server.
//!
//! glibc's malloc gives each thread that allocates under contention an arena of its own, up to
//! eight per core, and memory freed into one arena is not reused by the others. `serve` moves
//! work across tokio's worker and blocking threads (about 70 under load), so freed memory piled
//! up in many arenas: RSS rose from 52 MB after 10,000 jobs to 160 MB after 50,000 and kept
//! creeping. With two arenas it levels off near 80 MB (spec/http.md, "Memory is bounded").
#![allow(unsafe_code)]

/// Most malloc arenas `serve` uses.
const SERVE_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`SERVE_ARENAS`] unless `MALLOC_ARENA_MAX` says otherwise.
/// Call it before the runtime starts its threads.
pub(crate) fn cap_arenas_for_serve() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc tunable; it takes no pointers and is safe to call
        // at any time (glibc locks its parameters). Its 0 return (refused) is harmless: the
        // default stays.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, SERVE_ARENAS);
        }
    }
}

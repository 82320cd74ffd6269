//! WASI preview1 for jobs, made deterministic.
//!
//! wasmtime-wasi provides args, environment, random bytes (from gridbox's seeded generator),
//! `proc_exit` and `sched_yield`. Everything that touches files, stdio or clocks is shadowed by
//! [`preview1`], which serves an in-memory filesystem with fixed metadata and a virtual clock,
//! because a cap-std preopen leaks host timestamps, inode numbers and directory order.

pub mod preview1;
pub mod vfs;
pub mod random;

/// The preview1 module name.
pub const PREVIEW1_MODULE: &str = "wasi_snapshot_preview1";

/// Every preview1 function a job may import with the `wasi` capability. Socket functions are not
/// here: gridbox jobs have no network, and a module importing one is refused at load.
pub const PREVIEW1_FUNCTIONS: &[&str] = &[
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
    "clock_time_get", "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get",
    "fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
    "fd_filestat_set_times", "fd_pread", "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite",
    "fd_read", "fd_readdir", "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write",
    "path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link",
    "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
    "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get",
];

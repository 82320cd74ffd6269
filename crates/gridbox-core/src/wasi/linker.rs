//! Registering the preview1 functions with wasmtime: one list of names and witx signatures,
//! from which both [`FUNCTIONS`] and [`add_to_linker`] are made.

use wasmtime::{Caller, Linker};

use super::PREVIEW1_MODULE;
use super::fuel::CALL_FUEL;
use super::state::{DeterministicWasi, HostError, HostResult};
use crate::guest_memory::{GuestMemory, exported_memory};

/// Runs one host function: finds the guest's memory, updates the virtual clock from the fuel
/// left and turns the result into an errno or a trap.
fn host_call<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut DeterministicWasi,
    body: impl FnOnce(&mut DeterministicWasi, &mut GuestMemory<'_>) -> HostResult,
) -> wasmtime::Result<i32> {
    let fuel_left = caller.get_fuel().ok();
    let Some(memory) = exported_memory(caller) else {
        return Err(wasmtime::Error::msg("gridbox: the module calls a WASI preview1 function but does not export a linear memory named \"memory\""));
    };
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    let wasi = get(state);
    wasi.clock.observe(fuel_left);
    // Without fuel metering (tests of the layer alone) calls are free.
    wasi.fuel_left = fuel_left.unwrap_or(u64::MAX);
    let mut guest = GuestMemory::new(data);
    let result = wasi.charge(CALL_FUEL).and_then(|()| body(wasi, &mut guest));
    let fuel_after = wasi.fuel_left;
    if fuel_left.is_some() {
        caller.set_fuel(fuel_after)?;
    }
    match result {
        Ok(()) => Ok(0),
        Err(HostError::Errno(errno)) => Ok(i32::from(errno.raw())),
        Err(HostError::Trap(error)) => Err(error),
    }
}

/// Calls `$then!` with every preview1 function gridbox provides as `name(arg: wasm type, ...);`.
/// This is the one list: the names and the linker definitions both come from it. Socket
/// functions are not in it: jobs have no network.
macro_rules! preview1_functions {
    ($then:ident) => {
        $then! {
            args_get(argv: i32, argv_buf: i32);
            args_sizes_get(argc: i32, argv_buf_size: i32);
            environ_get(environ: i32, environ_buf: i32);
            environ_sizes_get(count: i32, buf_size: i32);
            clock_res_get(id: i32, result: i32);
            clock_time_get(id: i32, precision: i64, result: i32);
            fd_advise(fd: i32, offset: i64, len: i64, advice: i32);
            fd_allocate(fd: i32, offset: i64, len: i64);
            fd_close(fd: i32);
            fd_datasync(fd: i32);
            fd_fdstat_get(fd: i32, result: i32);
            fd_fdstat_set_flags(fd: i32, flags: i32);
            fd_fdstat_set_rights(fd: i32, base: i64, inheriting: i64);
            fd_filestat_get(fd: i32, result: i32);
            fd_filestat_set_size(fd: i32, size: i64);
            fd_filestat_set_times(fd: i32, atim: i64, mtim: i64, flags: i32);
            fd_pread(fd: i32, iovs: i32, iovs_len: i32, offset: i64, result: i32);
            fd_prestat_get(fd: i32, result: i32);
            fd_prestat_dir_name(fd: i32, path: i32, path_len: i32);
            fd_pwrite(fd: i32, iovs: i32, iovs_len: i32, offset: i64, result: i32);
            fd_read(fd: i32, iovs: i32, iovs_len: i32, result: i32);
            fd_readdir(fd: i32, buf: i32, buf_len: i32, cookie: i64, result: i32);
            fd_renumber(fd: i32, to: i32);
            fd_seek(fd: i32, offset: i64, whence: i32, result: i32);
            fd_sync(fd: i32);
            fd_tell(fd: i32, result: i32);
            fd_write(fd: i32, iovs: i32, iovs_len: i32, result: i32);
            path_create_directory(fd: i32, path: i32, path_len: i32);
            path_filestat_get(fd: i32, flags: i32, path: i32, path_len: i32, result: i32);
            path_filestat_set_times(fd: i32, flags: i32, path: i32, path_len: i32, atim: i64, mtim: i64, fst_flags: i32);
            path_link(old_fd: i32, old_flags: i32, old_path: i32, old_path_len: i32, new_fd: i32, new_path: i32, new_path_len: i32);
            path_open(fd: i32, dirflags: i32, path: i32, path_len: i32, oflags: i32, base: i64, inheriting: i64, fdflags: i32, result: i32);
            path_readlink(fd: i32, path: i32, path_len: i32, buf: i32, buf_len: i32, result: i32);
            path_remove_directory(fd: i32, path: i32, path_len: i32);
            path_rename(fd: i32, old_path: i32, old_path_len: i32, new_fd: i32, new_path: i32, new_path_len: i32);
            path_symlink(old_path: i32, old_path_len: i32, fd: i32, new_path: i32, new_path_len: i32);
            path_unlink_file(fd: i32, path: i32, path_len: i32);
            poll_oneoff(subs: i32, events: i32, nsubscriptions: i32, result: i32);
            proc_exit(code: i32) -> noreturn;
            proc_raise(signal: i32);
            sched_yield();
            random_get(buf: i32, buf_len: i32);
        }
    };
}

macro_rules! function_names {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $noreturn:ident)?;)*) => {
        /// Every preview1 function [`add_to_linker`] defines: all a job may import.
        pub const FUNCTIONS: &[&str] = &[$(stringify!($name)),*];

        /// Every function with its wasm parameter types (`"i32 i64 ..."`) and whether it
        /// returns an errno (`proc_exit` returns nothing): what a harness calling them needs.
        pub const SIGNATURES: &[(&str, &str, bool)] = &[$((stringify!($name), concat!($(stringify!($ty), " "),*), true $(&& returns(stringify!($noreturn)))?)),*];

        /// Every function with the names of its parameters (`"fd path path_len"`), in the order
        /// of [`SIGNATURES`]: a fuzzer uses them to make well-formed calls.
        pub const PARAMETER_NAMES: &[(&str, &str)] = &[$((stringify!($name), concat!($(stringify!($arg), " "),*))),*];
    };
}

/// `false` for the `noreturn` marker of the list.
const fn returns(marker: &str) -> bool {
    marker.is_empty()
}

preview1_functions!(function_names);

/// Defines every function of [`FUNCTIONS`] in `linker` under `wasi_snapshot_preview1`,
/// with the signatures of the preview1 witx. `get` finds the job's [`DeterministicWasi`] in the
/// store's data.
///
/// Each wasm argument is passed to the method of the same name reinterpreted as the unsigned
/// type it is in the ABI (`as _`: a wasm i32 is a u32 pointer, size or flags word; i64 a u64,
/// except fd_seek's signed offset, which the method takes as i64).
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut DeterministicWasi) -> wasmtime::Result<()> {
    macro_rules! define_one {
        // `proc_exit` returns nothing to wasm: it always stops the job.
        ($name:ident($($arg:ident: $ty:ty),*) -> noreturn) => {
            linker.func_wrap(PREVIEW1_MODULE, stringify!($name), move |mut caller: Caller<'_, T>, $($arg: $ty),*| -> wasmtime::Result<()> {
                host_call(&mut caller, get, |wasi, mem| wasi.$name(mem, $($arg as _),*)).map(drop)
            })?;
        };
        ($name:ident($($arg:ident: $ty:ty),*)) => {
            linker.func_wrap(PREVIEW1_MODULE, stringify!($name), move |mut caller: Caller<'_, T>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                host_call(&mut caller, get, |wasi, mem| wasi.$name(mem, $($arg as _),*))
            })?;
        };
    }
    macro_rules! define_all {
        ($($name:ident($($arg:ident: $ty:ty),*) $(-> $noreturn:ident)?;)*) => {$(
            define_one!($name($($arg: $ty),*) $(-> $noreturn)?);
        )*};
    }
    preview1_functions!(define_all);
    Ok(())
}

//! The tensor bridge's imports (`gridbox_tensor_v1`, spec/abi.md): the glue between a job's
//! memory and its [`TensorSession`], which holds the tensors and knows nothing of wasm.
//!
//! Each function reads its arguments through [`GuestMemory`], charges fuel before the work it
//! pays for, and maps the session's answer: a code the job can handle is returned (its detail
//! kept for `last_error`), a misuse of the ABI traps with a message naming the call, and a
//! failure of the provider's device stops the run with a [`ProviderFault`], which is never
//! recorded as the job's outcome.

use gridbox_abi::{ErrorCode, FN_CREATE, FN_FREE, FN_INFO, FN_LAST_ERROR, FN_READ, IMPORT_MODULE, MAX_OP_INPUTS, MAX_OP_PARAMS, MAX_RANK, Op};
use gridbox_compute::ops::transfer_fuel;
use gridbox_compute::{CallError, StopReason, TensorSession};
use wasmtime::{Caller, Linker, Memory, Trap};

use crate::fault::ProviderFault;
use crate::guest_memory::{GuestMemory, OutOfBounds, exported_memory};
use crate::job::CancelledByHost;

/// A job's bridge: its tensor session and, once found, the memory the bridge reads.
pub struct BridgeHost {
    session: TensorSession,
    memory: Option<Memory>,
}

impl BridgeHost {
    /// The bridge over `session`.
    pub fn new(session: TensorSession) -> Self {
        BridgeHost { session, memory: None }
    }

    /// The job's tensors and trace.
    pub fn session(&self) -> &TensorSession {
        &self.session
    }

    /// The job's tensors and trace, to set up what the session keeps before the job runs.
    pub fn session_mut(&mut self) -> &mut TensorSession {
        &mut self.session
    }
}

#[cold]
#[inline(never)]
fn trap(function: &str, message: impl std::fmt::Display) -> wasmtime::Error {
    wasmtime::Error::msg(format!("{IMPORT_MODULE}::{function}: {message}"))
}

#[cold]
#[inline(never)]
fn outside(function: &str, what: &str, error: OutOfBounds) -> wasmtime::Error {
    let OutOfBounds { ptr, len, memory_len } = error;
    trap(function, format!("{what} at {ptr} with {len} bytes is outside the job's memory ({memory_len} bytes)"))
}

/// What a call that did not succeed returns to the job (a code, whose detail the session keeps
/// for `last_error`), or how it stops it.
#[cold]
fn failed(function: &'static str, session: &mut TensorSession, error: CallError) -> wasmtime::Result<i32> {
    let error = match session.refusal(error) {
        Ok(code) => return Ok(code.raw()),
        Err(error) => error,
    };
    match error {
        CallError::Fault(source) => Err(ProviderFault::Device { call: function, source }.into()),
        // A kernel stopped early: the same endings an epoch gives wasm code.
        CallError::Stopped(StopReason::WallTime) => Err(Trap::Interrupt.into()),
        CallError::Stopped(StopReason::Cancelled) => Err(CancelledByHost.into()),
        CallError::Misuse(message) => Err(trap(function, message)),
        // `refusal` took the codes; any later kind of error stops the job with its message.
        other => Err(trap(function, other)),
    }
}

/// Takes `cost` fuel from the job, stopping it with the fuel trap if it has too little.
fn charge<T>(caller: &mut Caller<'_, T>, cost: u64) -> wasmtime::Result<()> {
    let fuel = caller.get_fuel()?;
    if fuel < cost {
        caller.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    caller.set_fuel(fuel - cost)
}

/// Guest memory and bridge state, borrowed together.
#[inline]
fn split<'a, T: 'static>(
    caller: &'a mut Caller<'_, T>,
    function: &str,
    get: fn(&mut T) -> &mut BridgeHost,
) -> wasmtime::Result<(GuestMemory<'a>, &'a mut TensorSession)> {
    let memory = match get(caller.data_mut()).memory {
        Some(memory) => memory,
        None => find_memory(caller, function, get)?,
    };
    let (memory, state) = memory.data_and_store_mut(caller);
    Ok((GuestMemory::new(memory), &mut get(state).session))
}

/// The export lookup is by name: done once per job, then the handle is kept.
#[cold]
#[inline(never)]
fn find_memory<T: 'static>(caller: &mut Caller<'_, T>, function: &str, get: fn(&mut T) -> &mut BridgeHost) -> wasmtime::Result<Memory> {
    let memory = exported_memory(caller).ok_or_else(|| trap(function, "the module exports no memory named `memory`"))?;
    get(caller.data_mut()).memory = Some(memory);
    Ok(memory)
}

fn check_rank(function: &str, rank: u32) -> wasmtime::Result<()> {
    if rank as usize > MAX_RANK {
        return Err(trap(function, format!("rank {rank} is above the ABI's maximum of {MAX_RANK}")));
    }
    Ok(())
}

/// Registers every bridge import on `linker`. `get` reaches the job's [`BridgeHost`].
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut BridgeHost) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        FN_CREATE,
        move |mut caller: Caller<'_, T>, dtype: u32, shape_ptr: u32, rank: u32, data_ptr: u32, data_len: u32, out_ptr: u32| {
            create(&mut caller, get, dtype, shape_ptr, rank, data_ptr, data_len, out_ptr)
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, FN_READ, move |mut caller: Caller<'_, T>, handle: u32, data_ptr: u32, data_len: u32| {
        read(&mut caller, get, handle, data_ptr, data_len)
    })?;
    linker.func_wrap(IMPORT_MODULE, FN_INFO, move |mut caller: Caller<'_, T>, handle: u32, dtype_ptr: u32, shape_ptr: u32, max_rank: u32, rank_ptr: u32| {
        info(&mut caller, get, handle, dtype_ptr, shape_ptr, max_rank, rank_ptr)
    })?;
    linker.func_wrap(IMPORT_MODULE, FN_FREE, move |mut caller: Caller<'_, T>, handle: u32| -> wasmtime::Result<i32> {
        // `free` is O(1) and charges no fuel of its own: the wasm around it pays.
        let session = &mut get(caller.data_mut()).session;
        match session.free(handle) {
            Ok(()) => Ok(ErrorCode::Ok.raw()),
            Err(error) => failed(FN_FREE, session, error),
        }
    })?;
    linker
        .func_wrap(IMPORT_MODULE, FN_LAST_ERROR, move |mut caller: Caller<'_, T>, buf_ptr: u32, buf_len: u32| last_error(&mut caller, get, buf_ptr, buf_len))?;
    for &op in Op::ALL {
        linker.func_wrap(
            IMPORT_MODULE,
            op.name(),
            move |mut caller: Caller<'_, T>, inputs_ptr: u32, n_inputs: u32, params_ptr: u32, n_params: u32, out_ptr: u32| {
                op_call(&mut caller, get, op, inputs_ptr, n_inputs, params_ptr, n_params, out_ptr)
            },
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // The ABI's signature.
fn create<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut BridgeHost,
    dtype: u32,
    shape_ptr: u32,
    rank: u32,
    data_ptr: u32,
    data_len: u32,
    out_ptr: u32,
) -> wasmtime::Result<i32> {
    const F: &str = FN_CREATE;
    charge(caller, transfer_fuel(data_len as usize))?;
    check_rank(F, rank)?;
    let (mut memory, session) = split(caller, F, get)?;
    memory.check(out_ptr, 4).map_err(|e| outside(F, "out_handle", e))?;
    // An unknown dtype is a code before the shape is read (a bad shape pointer then does not trap).
    if let Err(error) = TensorSession::create_dtype(dtype) {
        return failed(F, session, error);
    }
    let shape = memory.read_u32s(shape_ptr, rank).map_err(|e| outside(F, "shape", e))?;
    let plan = match session.plan_create(dtype, &shape, data_len) {
        Ok(plan) => plan,
        Err(error) => return failed(F, session, error),
    };
    let data = memory.bytes(data_ptr, u64::from(data_len)).map_err(|e| outside(F, "data", e))?;
    let handle = match session.create(plan, data) {
        Ok(handle) => handle,
        Err(error) => return failed(F, session, error),
    };
    memory.write_u32(out_ptr, handle).map_err(|e| outside(F, "out_handle", e))?;
    Ok(ErrorCode::Ok.raw())
}

fn read<T: 'static>(caller: &mut Caller<'_, T>, get: fn(&mut T) -> &mut BridgeHost, handle: u32, data_ptr: u32, data_len: u32) -> wasmtime::Result<i32> {
    const F: &str = FN_READ;
    charge(caller, transfer_fuel(data_len as usize))?;
    let (mut memory, session) = split(caller, F, get)?;
    if let Err(error) = session.check_read(handle, data_len) {
        return failed(F, session, error);
    }
    let out = memory.bytes_mut(data_ptr, u64::from(data_len)).map_err(|e| outside(F, "data", e))?;
    match session.read(handle, out) {
        Ok(()) => Ok(ErrorCode::Ok.raw()),
        Err(error) => failed(F, session, error),
    }
}

/// Copies the detail of the job's most recent refused call (`""` if none) into
/// `buf_ptr .. buf_ptr + buf_len`, as much as fits, and returns its full length so that the job can ask
/// again with a larger buffer. It changes no tensor, so the trace does not record it.
fn last_error<T: 'static>(caller: &mut Caller<'_, T>, get: fn(&mut T) -> &mut BridgeHost, buf_ptr: u32, buf_len: u32) -> wasmtime::Result<i32> {
    const F: &str = FN_LAST_ERROR;
    // Paid like `read`, for the bytes it copies, before copying them; the detail's length is the
    // job's own state, so the price is the same on every run.
    let len = get(caller.data_mut()).session.last_error().len();
    charge(caller, transfer_fuel(len.min(buf_len as usize)))?;
    // The whole buffer the job names must lie in its memory, however much of it is written.
    let (mut memory, session) = split(caller, F, get)?;
    let out = memory.bytes_mut(buf_ptr, u64::from(buf_len)).map_err(|e| outside(F, "buf", e))?;
    let detail = session.last_error().as_bytes();
    let copied = detail.len().min(out.len());
    out[..copied].copy_from_slice(&detail[..copied]);
    // Details are a few hundred bytes at most (shapes of rank 8, 64 parameters).
    Ok(i32::try_from(detail.len()).unwrap_or(i32::MAX))
}

#[allow(clippy::too_many_arguments)] // The ABI's signature.
fn info<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut BridgeHost,
    handle: u32,
    dtype_ptr: u32,
    shape_ptr: u32,
    max_rank: u32,
    rank_ptr: u32,
) -> wasmtime::Result<i32> {
    const F: &str = FN_INFO;
    // `info` is O(1) and charges no fuel of its own: the wasm around it pays.
    let (mut memory, session) = split(caller, F, get)?;
    let Some(meta) = session.meta(handle) else {
        return failed(F, session, CallError::not_live(handle));
    };
    let shape = &meta.shape;
    let dtype = meta.dtype.code();
    let rank = shape.len() as u32;
    if max_rank < rank {
        return Err(trap(F, format!("tensor {handle} has rank {rank}, max_rank is {max_rank}")));
    }
    let dims = memory.range(shape_ptr, u64::from(rank) * 4).map_err(|e| outside(F, "shape", e))?;
    let dtype_at = memory.range(dtype_ptr, 4).map_err(|e| outside(F, "dtype", e))?;
    let rank_at = memory.range(rank_ptr, 4).map_err(|e| outside(F, "rank", e))?;
    // Every range is checked before the first write, so a bad pointer changes nothing.
    for (slot, dim) in memory.at_mut(dims).chunks_exact_mut(4).zip(shape) {
        slot.copy_from_slice(&(*dim as u32).to_le_bytes());
    }
    memory.at_mut(dtype_at).copy_from_slice(&dtype.to_le_bytes());
    memory.at_mut(rank_at).copy_from_slice(&rank.to_le_bytes());
    Ok(ErrorCode::Ok.raw())
}

#[allow(clippy::too_many_arguments)] // The ABI's signature.
fn op_call<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut BridgeHost,
    op: Op,
    inputs_ptr: u32,
    n_inputs: u32,
    params_ptr: u32,
    n_params: u32,
    out_ptr: u32,
) -> wasmtime::Result<i32> {
    let f = op.name();
    if n_inputs as usize > MAX_OP_INPUTS || n_params as usize > MAX_OP_PARAMS {
        return Err(trap(f, format!("{n_inputs} inputs and {n_params} params: at most {MAX_OP_INPUTS} and {MAX_OP_PARAMS}")));
    }
    let plan = {
        let (memory, session) = split(caller, f, get)?;
        if let Err(error) = session.check_granted(op) {
            return failed(f, session, error);
        }
        memory.check(out_ptr, 4).map_err(|e| outside(f, "out_handle", e))?;
        let handles = memory.read_u32s(inputs_ptr, n_inputs).map_err(|e| outside(f, "inputs", e))?;
        let params = memory.read_i64s(params_ptr, n_params).map_err(|e| outside(f, "params", e))?;
        match session.plan_op(op, handles, params) {
            Ok(plan) => plan,
            Err(error) => return failed(f, session, error),
        }
    };
    charge(caller, plan.fuel())?;
    let (mut memory, session) = split(caller, f, get)?;
    let handle = match session.run_op(plan) {
        Ok(handle) => handle,
        Err(error) => return failed(f, session, error),
    };
    memory.write_u32(out_ptr, handle).map_err(|e| outside(f, "out_handle", e))?;
    Ok(ErrorCode::Ok.raw())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use gridbox_abi::{CORE_FUNCTIONS, CORE_PARAMS, OP_PARAMS};
    use gridbox_compute::{Backend, Stop, TensorGrant, TraceLevel};
    use wasmtime::{Engine, Instance, Module, Store};

    use super::*;

    #[test]
    fn every_import_name_is_unique() {
        let mut names: Vec<&str> = CORE_FUNCTIONS.to_vec();
        names.extend(Op::ALL.iter().map(|op| op.name()));
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
    }

    /// A module importing `imports` (name, parameter count; all i32, one i32 result) and
    /// exporting each as `call_NAME`, with one page of memory.
    fn module_text(imports: &[(&str, usize)]) -> String {
        let mut wat = String::from("(module\n");
        for (name, params) in imports {
            wat += &format!("(import \"{IMPORT_MODULE}\" \"{name}\" (func ${name} (param {}) (result i32)))\n", "i32 ".repeat(*params));
        }
        wat += "(memory (export \"memory\") 1)\n";
        for (name, params) in imports {
            let gets: String = (0..*params).map(|i| format!("local.get {i} ")).collect();
            wat += &format!("(func (export \"call_{name}\") (param {}) (result i32) {gets} call ${name})\n", "i32 ".repeat(*params));
        }
        wat + ")"
    }

    fn linker(engine: &Engine) -> Linker<BridgeHost> {
        let mut linker = Linker::new(engine);
        add_to_linker(&mut linker, |host: &mut BridgeHost| host).unwrap();
        linker
    }

    #[test]
    fn every_import_has_the_signature_the_abi_lists() {
        let engine = Engine::default();
        let mut imports: Vec<(&str, usize)> = CORE_FUNCTIONS.iter().copied().zip(CORE_PARAMS).collect();
        imports.extend(Op::ALL.iter().map(|op| (op.name(), OP_PARAMS)));
        let module = Module::new(&engine, wat::parse_str(module_text(&imports)).unwrap()).unwrap();
        // `instantiate_pre` type-checks every import against what the linker defines.
        linker(&engine).instantiate_pre(&module).unwrap();
    }

    /// A job with a 1 MiB tensor quota that imports `create`, `matmul` and `last_error`.
    fn job(fuel: u64) -> (Store<BridgeHost>, Instance) {
        let mut config = crate::engine::deterministic_config();
        config.epoch_interruption(false);
        let engine = Engine::new(&config).unwrap();
        let imports = [(FN_CREATE, 6), ("matmul", OP_PARAMS), (FN_LAST_ERROR, 2)];
        let module = Module::new(&engine, wat::parse_str(module_text(&imports)).unwrap()).unwrap();
        let grant = TensorGrant { ops: Op::ALL.iter().copied().collect(), max_bytes: 1 << 20, max_tensors: 64, trace_level: TraceLevel::Full };
        let session = TensorSession::new(grant, Backend::cpu(1).for_job(Stop::never()).unwrap());
        let mut store = Store::new(&engine, BridgeHost::new(session));
        store.set_fuel(fuel).unwrap();
        let instance = linker(&engine).instantiate(&mut store, &module).unwrap();
        (store, instance)
    }

    fn call(store: &mut Store<BridgeHost>, instance: &Instance, name: &str, args: &[i32]) -> wasmtime::Result<i32> {
        let func = instance.get_func(&mut *store, &format!("call_{name}")).unwrap();
        let args: Vec<wasmtime::Val> = args.iter().map(|&a| wasmtime::Val::I32(a)).collect();
        let mut result = [wasmtime::Val::I32(0)];
        func.call(&mut *store, &args, &mut result)?;
        Ok(result[0].unwrap_i32())
    }

    /// Creates a zero f32 tensor of `shape` (dims at 0, data at 1024, handle at 512).
    fn create(store: &mut Store<BridgeHost>, instance: &Instance, shape: &[u32]) -> u32 {
        let memory = instance.get_memory(&mut *store, "memory").unwrap();
        let dims: Vec<u8> = shape.iter().flat_map(|d| d.to_le_bytes()).collect();
        memory.write(&mut *store, 0, &dims).unwrap();
        let bytes = shape.iter().product::<u32>() as i32 * 4;
        assert_eq!(call(store, instance, FN_CREATE, &[0, 0, shape.len() as i32, 1024, bytes, 512]).unwrap(), 0);
        let mut handle = [0u8; 4];
        memory.read(&*store, 512, &mut handle).unwrap();
        u32::from_le_bytes(handle)
    }

    #[test]
    fn last_error_copies_the_detail_of_the_last_refused_call_and_returns_its_length() {
        let (mut store, instance) = job(10_000_000);
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        // Before any refusal the detail is empty.
        assert_eq!(call(&mut store, &instance, FN_LAST_ERROR, &[0, 64]).unwrap(), 0);
        let (a, b) = (create(&mut store, &instance, &[64, 32]), create(&mut store, &instance, &[16, 4]));
        memory.write(&mut store, 256, &[a.to_le_bytes(), b.to_le_bytes()].concat()).unwrap();
        let links = store.data().session().trace().len();
        assert_eq!(call(&mut store, &instance, "matmul", &[256, 2, 0, 0, 512]).unwrap(), ErrorCode::ShapeMismatch.raw());
        let detail = "matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims 32 and 16 differ";

        // A short buffer gets what fits and the full length; the bytes after it are untouched.
        memory.write(&mut store, 40_000, &[b'.'; 16]).unwrap();
        assert_eq!(call(&mut store, &instance, FN_LAST_ERROR, &[40_000, 6]).unwrap(), detail.len() as i32);
        let mut seen = [0u8; 16];
        memory.read(&store, 40_000, &mut seen).unwrap();
        assert_eq!(&seen, b"matmul..........");
        // A buffer large enough gets all of it.
        assert_eq!(call(&mut store, &instance, FN_LAST_ERROR, &[40_000, 1000]).unwrap(), detail.len() as i32);
        let mut whole = vec![0u8; detail.len()];
        memory.read(&store, 40_000, &mut whole).unwrap();
        assert_eq!(String::from_utf8(whole).unwrap(), detail);
        // Reading it records nothing, and a successful call leaves it in place.
        create(&mut store, &instance, &[2]);
        assert_eq!(store.data().session().trace().len(), links + 1, "only the create is traced");
        assert_eq!(call(&mut store, &instance, FN_LAST_ERROR, &[0, 0]).unwrap(), detail.len() as i32);

        // It is paid like `read`: the base plus a unit per 4 bytes copied, however large the buffer.
        let mut fuel_for = |buf_len: i32| {
            let before = store.get_fuel().unwrap();
            call(&mut store, &instance, FN_LAST_ERROR, &[40_000, buf_len]).unwrap();
            before - store.get_fuel().unwrap()
        };
        let (none, all, more) = (fuel_for(0), fuel_for(detail.len() as i32), fuel_for(20_000));
        assert_eq!(all - none, detail.len() as u64 / 4);
        assert_eq!(more, all);
        assert!(none >= gridbox_compute::ops::CALL_BASE_FUEL, "{none}");
    }

    #[test]
    fn last_error_traps_on_a_buffer_outside_memory() {
        for (ptr, len) in [(65_530, 16), (-1, 1), (0, 65_537), (65_537, 0)] {
            let (mut store, instance) = job(10_000_000);
            let error = call(&mut store, &instance, FN_LAST_ERROR, &[ptr, len]).unwrap_err();
            assert!(format!("{error:?}").contains("gridbox_tensor_v1::last_error: buf at"), "{ptr}, {len}: {error:?}");
        }
        // The end of memory with nothing to write is inside it.
        let (mut store, instance) = job(10_000_000);
        assert_eq!(call(&mut store, &instance, FN_LAST_ERROR, &[65_536, 0]).unwrap(), 0);
    }
}

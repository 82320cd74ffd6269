//! The tensor bridge's imports (`gridbox_tensor_v1`, spec/abi.md): the glue between a job's
//! memory and its [`TensorSession`], which holds the tensors and knows nothing of wasm.
//!
//! Each function reads its arguments through [`GuestMemory`], charges fuel before the work it
//! pays for, and maps the session's answer: a code the job can handle is returned, a misuse of
//! the ABI traps with a message naming the call, and a failure of the provider's device stops
//! the run with a [`ProviderFault`], which is never recorded as the job's outcome.

use gridbox_abi::{CORE_FUNCTIONS, ErrorCode, IMPORT_MODULE, MAX_OP_INPUTS, MAX_OP_PARAMS, MAX_RANK, Op};
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

/// What a call that did not succeed returns to the job, or how it stops it.
#[cold]
fn failed(function: &'static str, error: CallError) -> wasmtime::Result<i32> {
    match error {
        CallError::Code(code) => Ok(code.raw()),
        CallError::Fault(source) => Err(ProviderFault::Device { call: function, source }.into()),
        // A kernel stopped early: the same endings an epoch gives wasm code.
        CallError::Stopped(StopReason::WallTime) => Err(Trap::Interrupt.into()),
        CallError::Stopped(StopReason::Cancelled) => Err(CancelledByHost.into()),
        CallError::Misuse(message) => Err(trap(function, message)),
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
        CORE_FUNCTIONS[0],
        move |mut caller: Caller<'_, T>, dtype: u32, shape_ptr: u32, rank: u32, data_ptr: u32, data_len: u32, out_ptr: u32| {
            create(&mut caller, get, dtype, shape_ptr, rank, data_ptr, data_len, out_ptr)
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, CORE_FUNCTIONS[1], move |mut caller: Caller<'_, T>, handle: u32, data_ptr: u32, data_len: u32| {
        read(&mut caller, get, handle, data_ptr, data_len)
    })?;
    linker.func_wrap(
        IMPORT_MODULE,
        CORE_FUNCTIONS[2],
        move |mut caller: Caller<'_, T>, handle: u32, dtype_ptr: u32, shape_ptr: u32, max_rank: u32, rank_ptr: u32| {
            info(&mut caller, get, handle, dtype_ptr, shape_ptr, max_rank, rank_ptr)
        },
    )?;
    linker.func_wrap(IMPORT_MODULE, CORE_FUNCTIONS[3], move |mut caller: Caller<'_, T>, handle: u32| -> wasmtime::Result<i32> {
        // `free` is O(1) and charges no fuel of its own: the wasm around it pays.
        match get(caller.data_mut()).session.free(handle) {
            Ok(()) => Ok(ErrorCode::Ok.raw()),
            Err(error) => failed("free", error),
        }
    })?;
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
    const F: &str = "create";
    charge(caller, transfer_fuel(data_len as usize))?;
    check_rank(F, rank)?;
    let (mut memory, session) = split(caller, F, get)?;
    memory.check(out_ptr, 4).map_err(|e| outside(F, "out_handle", e))?;
    if gridbox_abi::DType::from_code(dtype).is_none() {
        return Ok(ErrorCode::UnsupportedDType.raw());
    }
    let shape = memory.read_u32s(shape_ptr, rank).map_err(|e| outside(F, "shape", e))?;
    let plan = match session.plan_create(dtype, &shape, data_len) {
        Ok(plan) => plan,
        Err(error) => return failed(F, error),
    };
    let data = memory.bytes(data_ptr, u64::from(data_len)).map_err(|e| outside(F, "data", e))?;
    let handle = match session.create(plan, data) {
        Ok(handle) => handle,
        Err(error) => return failed(F, error),
    };
    memory.write_u32(out_ptr, handle).map_err(|e| outside(F, "out_handle", e))?;
    Ok(ErrorCode::Ok.raw())
}

fn read<T: 'static>(caller: &mut Caller<'_, T>, get: fn(&mut T) -> &mut BridgeHost, handle: u32, data_ptr: u32, data_len: u32) -> wasmtime::Result<i32> {
    const F: &str = "read";
    charge(caller, transfer_fuel(data_len as usize))?;
    let (mut memory, session) = split(caller, F, get)?;
    if let Err(error) = session.check_read(handle, data_len) {
        return failed(F, error);
    }
    let out = memory.bytes_mut(data_ptr, u64::from(data_len)).map_err(|e| outside(F, "data", e))?;
    match session.read(handle, out) {
        Ok(()) => Ok(ErrorCode::Ok.raw()),
        Err(error) => failed(F, error),
    }
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
    const F: &str = "info";
    // `info` is O(1) and charges no fuel of its own: the wasm around it pays.
    let (mut memory, session) = split(caller, F, get)?;
    let Some(meta) = session.meta(handle) else {
        return failed(F, CallError::not_live(handle));
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
            return failed(f, error);
        }
        memory.check(out_ptr, 4).map_err(|e| outside(f, "out_handle", e))?;
        let handles = memory.read_u32s(inputs_ptr, n_inputs).map_err(|e| outside(f, "inputs", e))?;
        let params = memory.read_i64s(params_ptr, n_params).map_err(|e| outside(f, "params", e))?;
        match session.plan_op(op, handles, params) {
            Ok(plan) => plan,
            Err(error) => return failed(f, error),
        }
    };
    charge(caller, plan.fuel())?;
    let (mut memory, session) = split(caller, f, get)?;
    let handle = match session.run_op(plan) {
        Ok(handle) => handle,
        Err(error) => return failed(f, error),
    };
    memory.write_u32(out_ptr, handle).map_err(|e| outside(f, "out_handle", e))?;
    Ok(ErrorCode::Ok.raw())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_import_name_is_unique() {
        let mut names: Vec<&str> = CORE_FUNCTIONS.to_vec();
        names.extend(Op::ALL.iter().map(|op| op.name()));
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
    }
}

//! The functions jobs import from `gridbox_tensor_v1` (spec/abi.md): argument checking, quotas,
//! fuel, the trace, and the tensor table. The kernels behind them know nothing of wasm.
//!
//! Errors a job can handle come back as [`ErrorCode`]s; misuse of the ABI (a pointer outside
//! memory, an unknown or freed handle, a malformed call) traps with a message naming the call.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use gridbox_abi::{CORE_FUNCTIONS, DType, ErrorCode, IMPORT_MODULE, MAX_OP_INPUTS, MAX_OP_PARAMS, MAX_RANK, Op};
use wasmtime::{Caller, Linker, Memory, Trap};

use crate::backend::{Buffer, BufferError, JobBackend};
use crate::ops::{OpCall, transfer_fuel};
use crate::tensor::{Tensor, TensorMeta};

use crate::trace::{TraceChain, TraceLink};

/// How much of the bridge's work the trace records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceLevel {
    /// Every create, op and read, with the hashes of all tensors involved.
    #[default]
    Full,
    /// Only creates and reads: the tensors that cross the boundary. Intermediates are not
    /// hashed, which saves time; a divergence is then pinned to a read, not to an op.
    Readback,
}

impl TraceLevel {
    /// The name used in manifests and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceLevel::Full => "full",
            TraceLevel::Readback => "readback",
        }
    }
}

/// A job's grant and quotas for the bridge.
#[derive(Debug, Clone)]
pub struct BridgeGrant {
    /// Ops the job may call (imports of others are refused at load by the runtime).
    pub ops: BTreeSet<Op>,
    /// Most bytes of tensor data the job may hold at once.
    pub max_bytes: u64,
    /// Most tensors the job may hold at once.
    pub max_tensors: u64,
    /// What the trace records.
    pub trace_level: TraceLevel,
}

/// Handles are sequential numbers the host chose, so they need no hashing against collisions:
/// the table hashes them as themselves (multiplied to spread the high bits).
#[derive(Default)]
struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | byte as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = (value as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

struct Entry {
    buffer: Buffer,
    meta: TensorMeta,
    /// Computed once, when the trace needs it.
    hash: Option<[u8; 32]>,
}

/// Per-job bridge state: the tensor table, quotas in use, and the trace.
pub struct BridgeState {
    grant: BridgeGrant,
    backend: JobBackend,
    tensors: HashMap<u32, Entry, BuildHasherDefault<HandleHasher>>,
    next_handle: u32,
    memory: Option<Memory>,
    bytes_used: u64,
    trace: TraceChain,
}

impl BridgeState {
    /// A bridge for one job, on the job's own backend handle.
    pub fn new(grant: BridgeGrant, backend: JobBackend) -> Self {
        BridgeState {
            grant,
            backend,
            tensors: HashMap::default(),
            next_handle: 1,
            memory: None,
            bytes_used: 0,
            trace: TraceChain::new(),
        }
    }

    /// The trace so far.
    pub fn trace(&self) -> &TraceChain {
        &self.trace
    }

    /// Bytes of tensor data held now.
    pub fn bytes_used(&self) -> u64 {
        self.bytes_used
    }

    /// Tensors held now.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Checks quotas for a new tensor of `bytes`.
    fn admit(&self, bytes: usize) -> Result<(), ErrorCode> {
        if self.tensors.len() as u64 >= self.grant.max_tensors {
            return Err(ErrorCode::TensorCountQuota);
        }
        if self.bytes_used.saturating_add(bytes as u64) > self.grant.max_bytes {
            return Err(ErrorCode::TensorMemoryQuota);
        }
        Ok(())
    }

    /// Stores `tensor` and returns its handle. Handles count up from 1 and are never reused, so
    /// they are the same on every run.
    fn insert(&mut self, buffer: Buffer, meta: TensorMeta, hash: Option<[u8; 32]>) -> u32 {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.bytes_used += buffer.byte_len() as u64;
        self.tensors.insert(handle, Entry { buffer, meta, hash });
        handle
    }

    /// The content hash of a live tensor (a device tensor is copied back once to hash it).
    fn hash_of(&mut self, function: &str, handle: u32) -> wasmtime::Result<[u8; 32]> {
        let entry = self.tensors.get_mut(&handle).ok_or_else(|| trap(function, format!("handle {handle} is not a live tensor")))?;
        if let Some(hash) = entry.hash {
            return Ok(hash);
        }
        let hash = self.backend.download(&entry.buffer).map_err(|e| trap(function, e))?.content_hash();
        entry.hash = Some(hash);
        Ok(hash)
    }
}

#[cold]
#[inline(never)]
fn trap(function: &str, message: impl std::fmt::Display) -> wasmtime::Error {
    wasmtime::Error::msg(format!("{IMPORT_MODULE}::{function}: {message}"))
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
    get: fn(&mut T) -> &mut BridgeState,
) -> wasmtime::Result<(&'a mut [u8], &'a mut BridgeState)> {
    // The export lookup is by name: done once per job, then the handle is kept.
    let memory = match get(caller.data_mut()).memory {
        Some(memory) => memory,
        None => {
            let memory = caller
                .get_export("memory")
                .and_then(|export| export.into_memory())
                .ok_or_else(|| trap(function, "the module exports no memory named `memory`"))?;
            get(caller.data_mut()).memory = Some(memory);
            memory
        }
    };
    let (memory, state) = memory.data_and_store_mut(caller);
    Ok((memory, get(state)))
}

#[inline]
fn range(memory: &[u8], function: &str, what: &str, ptr: u32, len: u64) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as usize;
    let end = usize::try_from(len).ok().and_then(|len| start.checked_add(len));
    match end {
        Some(end) if end <= memory.len() => Ok(start..end),
        _ => Err(outside(memory.len(), function, what, ptr, len)),
    }
}

#[cold]
#[inline(never)]
fn outside(memory_len: usize, function: &str, what: &str, ptr: u32, len: u64) -> wasmtime::Error {
    trap(function, format!("{what} at {ptr} with {len} bytes is outside the job's memory ({memory_len} bytes)"))
}

fn read_u32s(memory: &[u8], function: &str, what: &str, ptr: u32, count: u32) -> wasmtime::Result<Vec<u32>> {
    let bytes = &memory[range(memory, function, what, ptr, count as u64 * 4)?];
    Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[inline]
fn write_u32(memory: &mut [u8], function: &str, what: &str, ptr: u32, value: u32) -> wasmtime::Result<()> {
    let at = range(memory, function, what, ptr, 4)?;
    memory[at].copy_from_slice(&value.to_le_bytes());
    Ok(())
}

fn check_rank(function: &str, rank: u32) -> wasmtime::Result<()> {
    if rank as usize > MAX_RANK {
        return Err(trap(function, format!("rank {rank} is above the ABI's maximum of {MAX_RANK}")));
    }
    Ok(())
}

/// Registers every bridge import on `linker`. `get` reaches the job's [`BridgeState`].
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut BridgeState) -> wasmtime::Result<()> {
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
        let state = get(caller.data_mut());
        let entry = state.tensors.remove(&handle).ok_or_else(|| trap("free", format!("handle {handle} is not a live tensor")))?;
        state.bytes_used -= entry.buffer.byte_len() as u64;
        Ok(ErrorCode::Ok.raw())
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
    get: fn(&mut T) -> &mut BridgeState,
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
    let (memory, state) = split(caller, F, get)?;
    range(memory, F, "out_handle", out_ptr, 4)?;
    let Some(dtype) = DType::from_code(dtype) else {
        return Ok(ErrorCode::UnsupportedDType.raw());
    };
    let shape: Vec<usize> = read_u32s(memory, F, "shape", shape_ptr, rank)?.into_iter().map(|d| d as usize).collect();
    let meta = TensorMeta::new(dtype, shape);
    let bytes = match meta.checked_bytes() {
        Ok(bytes) if bytes == data_len as usize => bytes,
        Ok(bytes) => return Err(trap(F, format!("shape {:?} of {} needs {bytes} bytes, data_len is {data_len}", meta.shape, dtype.name()))),
        Err(e) => return Ok(e.code().raw()),
    };
    if let Err(code) = state.admit(bytes) {
        return Ok(code.raw());
    }
    let data = range(memory, F, "data", data_ptr, data_len as u64)?;
    let tensor = Tensor::from_le_bytes(dtype, meta.shape, &memory[data]).map_err(|e| trap(F, e))?;
    let hash = tensor.content_hash();
    let mut params = Vec::with_capacity(8 + 8 * rank as usize);
    params.extend(dtype.code().to_le_bytes());
    tensor.shape().iter().for_each(|d| params.extend((*d as u64).to_le_bytes()));
    state.trace.append(&TraceLink { op: F.into(), params, inputs: Vec::new(), output: hash });
    let meta = tensor.meta();
    let buffer = state.backend.upload(tensor).map_err(|e| trap(F, e))?;
    let handle = state.insert(buffer, meta, Some(hash));
    write_u32(memory, F, "out_handle", out_ptr, handle)?;
    Ok(ErrorCode::Ok.raw())
}

fn read<T: 'static>(caller: &mut Caller<'_, T>, get: fn(&mut T) -> &mut BridgeState, handle: u32, data_ptr: u32, data_len: u32) -> wasmtime::Result<i32> {
    const F: &str = "read";
    charge(caller, transfer_fuel(data_len as usize))?;
    let (memory, state) = split(caller, F, get)?;
    let entry = state.tensors.get_mut(&handle).ok_or_else(|| trap(F, format!("handle {handle} is not a live tensor")))?;
    if entry.buffer.byte_len() != data_len as usize {
        return Err(trap(F, format!("tensor {handle} has {} bytes, data_len is {data_len}", entry.buffer.byte_len())));
    }
    let at = range(memory, F, "data", data_ptr, data_len as u64)?;
    let tensor = state.backend.download(&entry.buffer).map_err(|e| trap(F, e))?;
    memory[at].copy_from_slice(&tensor.to_le_bytes());
    let hash = *entry.hash.get_or_insert_with(|| tensor.content_hash());
    state.trace.append(&TraceLink { op: F.into(), params: (handle as u64).to_le_bytes().to_vec(), inputs: Vec::new(), output: hash });
    Ok(ErrorCode::Ok.raw())
}

#[allow(clippy::too_many_arguments)] // The ABI's signature.
fn info<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut BridgeState,
    handle: u32,
    dtype_ptr: u32,
    shape_ptr: u32,
    max_rank: u32,
    rank_ptr: u32,
) -> wasmtime::Result<i32> {
    const F: &str = "info";
    // `info` and `free` are O(1) and charge no fuel of their own: the wasm around them pays.
    let (memory, state) = split(caller, F, get)?;
    let entry = state.tensors.get(&handle).ok_or_else(|| trap(F, format!("handle {handle} is not a live tensor")))?;
    let shape = &entry.meta.shape;
    let dtype = entry.meta.dtype.code();
    let rank = shape.len() as u32;
    if max_rank < rank {
        return Err(trap(F, format!("tensor {handle} has rank {rank}, max_rank is {max_rank}")));
    }
    let dims = range(memory, F, "shape", shape_ptr, rank as u64 * 4)?;
    range(memory, F, "dtype", dtype_ptr, 4)?;
    range(memory, F, "rank", rank_ptr, 4)?;
    // Every range is checked before the first write, so a bad pointer changes nothing.
    for (slot, dim) in memory[dims].chunks_exact_mut(4).zip(shape) {
        slot.copy_from_slice(&(*dim as u32).to_le_bytes());
    }
    write_u32(memory, F, "dtype", dtype_ptr, dtype)?;
    write_u32(memory, F, "rank", rank_ptr, rank)?;
    Ok(ErrorCode::Ok.raw())
}

#[allow(clippy::too_many_arguments)] // The ABI's signature.
fn op_call<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut BridgeState,
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
    let (handles, params, metas, call, out_meta) = {
        let (memory, state) = split(caller, f, get)?;
        if !state.grant.ops.contains(&op) {
            // Imports are checked at load, so this is only reachable by a host misconfiguration.
            return Err(trap(f, "this op is not granted to the job"));
        }
        range(memory, f, "out_handle", out_ptr, 4)?;
        let handles = read_u32s(memory, f, "inputs", inputs_ptr, n_inputs)?;
        let at = range(memory, f, "params", params_ptr, n_params as u64 * 8)?;
        let params: Vec<i64> = memory[at]
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let mut metas = Vec::with_capacity(handles.len());
        for handle in &handles {
            let entry = state.tensors.get(handle).ok_or_else(|| trap(f, format!("handle {handle} is not a live tensor")))?;
            metas.push(entry.meta.clone());
        }
        let call = match OpCall::decode(op, &params, handles.len()) {
            Ok(call) => call,
            Err(e) => return Ok(e.code().raw()),
        };
        let out_meta = match call.infer(&metas) {
            Ok(meta) => meta,
            Err(e) => return Ok(e.code().raw()),
        };
        (handles, params, metas, call, out_meta)
    };
    charge(caller, call.fuel(&metas, &out_meta))?;
    let (memory, state) = split(caller, f, get)?;
    // `infer` checked the size fits in memory arithmetic.
    let bytes = out_meta.checked_bytes().map_err(|e| trap(f, e))?;
    if let Err(code) = state.admit(bytes) {
        return Ok(code.raw());
    }
    let output = {
        let inputs: Vec<&Buffer> = handles.iter().filter_map(|h| state.tensors.get(h).map(|e| &e.buffer)).collect();
        match state.backend.execute(&call, &inputs, &out_meta) {
            Ok(output) => output,
            Err(BufferError::Op(e)) => return Ok(e.code().raw()),
            Err(BufferError::Cuda(e)) => return Err(trap(f, e)),
        }
    };
    let hash = match state.grant.trace_level {
        TraceLevel::Full => {
            let inputs = handles.iter().map(|h| state.hash_of(f, *h)).collect::<wasmtime::Result<Vec<_>>>()?;
            let output_hash = state.backend.download(&output).map_err(|e| trap(f, e))?.content_hash();
            let mut encoded = Vec::with_capacity(params.len() * 8);
            params.iter().for_each(|p| encoded.extend(p.to_le_bytes()));
            state.trace.append(&TraceLink { op: f.into(), params: encoded, inputs, output: output_hash });
            Some(output_hash)
        }
        TraceLevel::Readback => None,
    };
    let handle = state.insert(output, out_meta, hash);
    write_u32(memory, f, "out_handle", out_ptr, handle)?;
    Ok(ErrorCode::Ok.raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_import_name_is_unique() {
        let mut names: Vec<&str> = CORE_FUNCTIONS.to_vec();
        names.extend(Op::ALL.iter().map(|op| op.name()));
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
    }
}

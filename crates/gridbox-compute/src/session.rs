//! One job's tensors: the table of live tensors behind the bridge's handles, the job's quotas,
//! and the trace of every call. It knows nothing of wasm: the runtime's bridge glue reads the
//! job's memory, charges fuel at the points this module's plans say, and calls in here.
//!
//! Each call either succeeds, fails in a way the job can handle ([`CallError::Code`]), is a
//! misuse of the ABI that stops the job ([`CallError::Misuse`]), or fails because the provider's
//! device failed ([`CallError::Fault`]), which is never the job's outcome.
//!
//! A code comes with a detail naming the call and what failed its check (`matmul: shapes [64, 32]
//! and [16, 4] do not fit: the inner dims 32 and 16 differ`), which the bridge keeps for the job's
//! `last_error` ([`TensorSession::last_error`]). Details are written from the call's arguments
//! and the job's own state (its shapes, parameters, quotas in use) by the planning code every
//! backend shares, never from a backend, the host or the time, so they are the same on every
//! machine and a job that prints one still has a reproducible receipt.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use gridbox_abi::{DType, ErrorCode, MAX_DIM, Op};

use crate::backend::{Buffer, CudaError, ExecError, JobBackend};
use crate::ops::{OpCall, OpError};
use crate::stop::StopReason;
use crate::tensor::{Tensor, TensorMeta};
use crate::tensor_file::TensorKeeper;
use crate::trace::{TraceChain, TraceLink};
use crate::trace_log::TraceLog;

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
pub struct TensorGrant {
    /// Ops the job may call (imports of others are refused at load by the runtime).
    pub ops: BTreeSet<Op>,
    /// Most bytes of tensor data the job may hold at once.
    pub max_bytes: u64,
    /// Most tensors the job may hold at once.
    pub max_tensors: u64,
    /// What the trace records.
    pub trace_level: TraceLevel,
}

/// Why a call on a [`TensorSession`] did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// A failure the job can handle: the ABI code it gets back, and the detail `last_error` gives
    /// it (`{call}: {what failed}`).
    #[error("{}: {detail}", .code.describe())]
    Code {
        /// The code returned to the job.
        code: ErrorCode,
        /// What failed, naming the call and the shapes or parameters involved. Deterministic: it
        /// depends only on the call's arguments and the job's own state.
        detail: String,
    },
    /// A misuse of the ABI (an unknown handle, a size that does not match): the job traps with
    /// this message.
    #[error("{0}")]
    Misuse(String),
    /// The provider's device failed. Not the job's doing: no outcome may record it.
    #[error("the compute device failed")]
    Fault(#[source] CudaError),
    /// The job's stop came while the call ran: its wall-time limit passed, or its host stopped it.
    #[error("the job was stopped during the call")]
    Stopped(StopReason),
}

#[cold]
fn misuse(message: impl Into<String>) -> CallError {
    CallError::Misuse(message.into())
}

#[cold]
#[inline(never)]
fn not_live(handle: u32) -> CallError {
    CallError::not_live(handle)
}

impl CallError {
    /// A failure the job can handle, with its detail.
    #[cold]
    pub fn refused(code: ErrorCode, detail: String) -> CallError {
        CallError::Code { code, detail }
    }

    /// The refusal of `call` for `error`, which leaves out the call's name.
    #[cold]
    fn op(call: &str, error: OpError) -> CallError {
        CallError::refused(error.code(), format!("{call}: {}", error.detail()))
    }

    /// The misuse of naming a handle that is not a live tensor.
    #[cold]
    pub fn not_live(handle: u32) -> CallError {
        misuse(format!("handle {handle} is not a live tensor"))
    }
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

/// A create that passed every check but the data's location: what [`TensorSession::create`]
/// needs once the caller has the bytes.
#[derive(Debug)]
pub struct PlannedCreate {
    meta: TensorMeta,
}

/// An op call that passed every check: its fuel price is known and nothing has run yet.
#[derive(Debug)]
pub struct PlannedOp {
    op: Op,
    call: OpCall,
    handles: Vec<u32>,
    params: Vec<i64>,
    out_meta: TensorMeta,
    fuel: u64,
}

impl PlannedOp {
    /// The fuel the op costs, to be charged before [`TensorSession::run_op`].
    pub fn fuel(&self) -> u64 {
        self.fuel
    }
}

/// Per-job tensor state: the tensor table, quotas in use, and the trace.
pub struct TensorSession {
    grant: TensorGrant,
    backend: JobBackend,
    tensors: HashMap<u32, Entry, BuildHasherDefault<HandleHasher>>,
    next_handle: u32,
    bytes_used: u64,
    trace: TraceChain,
    /// The trace's log: its Merkle root always, its entries when asked ([`Self::keep_log`]).
    log: TraceLog,
    /// Given every tensor the trace names, when asked ([`Self::keep_tensors`]).
    keeper: Option<Arc<dyn TensorKeeper>>,
    /// The detail of the most recent call that returned a code: what `last_error` copies out.
    last_error: String,
}

impl TensorSession {
    /// A session for one job, on the job's own backend handle.
    pub fn new(grant: TensorGrant, backend: JobBackend) -> Self {
        TensorSession {
            grant,
            backend,
            tensors: HashMap::default(),
            next_handle: 1,
            bytes_used: 0,
            trace: TraceChain::new(),
            log: TraceLog::new(),
            keeper: None,
            last_error: String::new(),
        }
    }

    /// Keeps the trace log's entries (before any call). Changes no result.
    pub fn keep_log(&mut self) {
        if self.log.is_empty() {
            self.log = TraceLog::keeping();
        }
    }

    /// Hands every tensor the trace names to `keeper` (before any call). Changes no result.
    pub fn keep_tensors(&mut self, keeper: Arc<dyn TensorKeeper>) {
        self.keeper = Some(keeper);
    }

    /// The trace so far.
    #[inline]
    pub fn trace(&self) -> &TraceChain {
        &self.trace
    }

    /// The trace's log so far.
    #[inline]
    pub fn trace_log(&self) -> &TraceLog {
        &self.log
    }

    /// The trace's log, taken out of the session (which keeps an empty one): the end of a run.
    pub fn take_trace_log(&mut self) -> TraceLog {
        std::mem::take(&mut self.log)
    }

    /// Appends `link` to the chain and the log.
    fn record(&mut self, link: TraceLink) {
        let root = self.trace.append(&link);
        self.log.push(&link, root);
    }

    /// Bytes of tensor data held now.
    pub fn bytes_used(&self) -> u64 {
        self.bytes_used
    }

    /// Tensors held now.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// The detail of the job's most recent call that returned a code, or `""` if none has: what
    /// the `last_error` import copies out. A successful call leaves it as it was.
    pub fn last_error(&self) -> &str {
        &self.last_error
    }

    /// What the job gets back for `error`: a code (its detail kept for [`Self::last_error`]), or
    /// the error itself when it is not the job's to handle (a misuse, a fault, a stop).
    pub fn refusal(&mut self, error: CallError) -> Result<ErrorCode, CallError> {
        match error {
            CallError::Code { code, detail } => {
                self.last_error = detail;
                Ok(code)
            }
            other => Err(other),
        }
    }

    /// Checks quotas for a new tensor of `bytes`, made by `call`.
    #[inline]
    fn admit(&self, call: &str, bytes: usize) -> Result<(), CallError> {
        // Handles are never reused: after 2^32 - 1 of them a job can make no more tensors.
        if self.next_handle == 0 {
            return Err(CallError::refused(ErrorCode::TensorCountQuota, format!("{call}: the job has used all {} handles, which are never reused", u32::MAX)));
        }
        if self.tensors.len() as u64 >= self.grant.max_tensors {
            let detail = format!("{call}: the tensors the job holds ({}) reach limits.tensor_count {}", self.tensors.len(), self.grant.max_tensors);
            return Err(CallError::refused(ErrorCode::TensorCountQuota, detail));
        }
        if self.bytes_used.saturating_add(bytes as u64) > self.grant.max_bytes {
            let (max, used) = (self.grant.max_bytes, self.bytes_used);
            let detail = format!("{call}: the result needs {bytes} bytes and {used} are in use, above limits.tensor_bytes {max}");
            return Err(CallError::refused(ErrorCode::TensorMemoryQuota, detail));
        }
        Ok(())
    }

    /// Stores a buffer and returns its handle. Handles count up from 1 and are never reused,
    /// so they are the same on every run.
    fn insert(&mut self, buffer: Buffer, meta: TensorMeta, hash: Option<[u8; 32]>) -> u32 {
        let handle = self.next_handle;
        // 0 marks the handles as spent (`admit` refuses more); it is never a handle.
        self.next_handle = self.next_handle.wrapping_add(1);
        self.bytes_used += buffer.byte_len() as u64;
        self.tensors.insert(handle, Entry { buffer, meta, hash });
        handle
    }

    #[inline]
    fn entry(&self, handle: u32) -> Result<&Entry, CallError> {
        self.tensors.get(&handle).ok_or_else(|| not_live(handle))
    }

    /// The content hash of a live tensor (a device tensor is copied back once to hash it).
    fn hash_of(&mut self, handle: u32) -> Result<[u8; 32], CallError> {
        let entry = self.tensors.get_mut(&handle).ok_or_else(|| not_live(handle))?;
        if let Some(hash) = entry.hash {
            return Ok(hash);
        }
        let hash = self.backend.with_host(&entry.buffer, Tensor::content_hash).map_err(CallError::Fault)?;
        entry.hash = Some(hash);
        Ok(hash)
    }

    /// Checks a create of `shape` with `data_len` bytes of data against the shape and the
    /// quotas. `dtype` is the ABI's raw code.
    pub fn plan_create(&self, dtype: u32, shape: &[u32], data_len: u32) -> Result<PlannedCreate, CallError> {
        let dtype = Self::create_dtype(dtype)?;
        let meta = TensorMeta::new(dtype, shape.iter().map(|&d| d as usize).collect());
        let bytes = match meta.checked_bytes() {
            Ok(bytes) if bytes == data_len as usize => bytes,
            Ok(bytes) => return Err(misuse(format!("shape {:?} of {} needs {bytes} bytes, data_len is {data_len}", meta.shape, dtype.name()))),
            Err(e) => return Err(CallError::op("create", e)),
        };
        self.admit("create", bytes)?;
        Ok(PlannedCreate { meta })
    }

    /// The dtype a create names by its ABI code: an unknown code is `unsupported_dtype`.
    pub fn create_dtype(code: u32) -> Result<DType, CallError> {
        DType::from_code(code).ok_or_else(|| {
            let known = crate::ops::dtype_codes();
            CallError::refused(ErrorCode::UnsupportedDType, format!("create: dtype code {code} is not a dtype ({known})"))
        })
    }

    /// Creates a tensor from its little-endian bytes, as planned, and returns its handle.
    pub fn create(&mut self, plan: PlannedCreate, data: &[u8]) -> Result<u32, CallError> {
        let PlannedCreate { meta } = plan;
        let tensor = Tensor::from_le_bytes(meta.dtype, meta.shape, data).map_err(|e| misuse(e.to_string()))?;
        let hash = tensor.content_hash();
        if let Some(keeper) = &self.keeper {
            keeper.keep(&hash, &tensor);
        }
        let mut params = Vec::with_capacity(8 + 8 * tensor.shape().len());
        params.extend(tensor.dtype().code().to_le_bytes());
        tensor.shape().iter().for_each(|d| params.extend((*d as u64).to_le_bytes()));
        self.record(TraceLink { op: "create".into(), params, inputs: Vec::new(), output: hash });
        let meta = tensor.meta();
        let buffer = self.backend.upload(tensor).map_err(CallError::Fault)?;
        Ok(self.insert(buffer, meta, Some(hash)))
    }

    /// Checks that `handle` is live and holds exactly `data_len` bytes.
    #[inline]
    pub fn check_read(&self, handle: u32, data_len: u32) -> Result<(), CallError> {
        let entry = self.entry(handle)?;
        if entry.buffer.byte_len() != data_len as usize {
            return Err(misuse(format!("tensor {handle} has {} bytes, data_len is {data_len}", entry.buffer.byte_len())));
        }
        Ok(())
    }

    /// Copies a tensor's little-endian bytes into `out` (checked by [`Self::check_read`]).
    pub fn read(&mut self, handle: u32, out: &mut [u8]) -> Result<(), CallError> {
        self.check_read(handle, u32::try_from(out.len()).map_err(|_| misuse("read buffer above 4 GiB"))?)?;
        let entry = self.tensors.get_mut(&handle).ok_or_else(|| not_live(handle))?;
        // On the CPU the tensor is read in place: no copy beyond the one into the job's memory.
        let known = entry.hash;
        let keeper = self.keeper.as_deref();
        let hash = self
            .backend
            .with_host(&entry.buffer, |tensor| {
                tensor.copy_le_bytes_to(out);
                let hash = known.unwrap_or_else(|| tensor.content_hash());
                if let Some(keeper) = keeper {
                    keeper.keep(&hash, tensor);
                }
                hash
            })
            .map_err(CallError::Fault)?;
        entry.hash = Some(hash);
        self.record(TraceLink { op: "read".into(), params: (handle as u64).to_le_bytes().to_vec(), inputs: Vec::new(), output: hash });
        Ok(())
    }

    /// Dtype and shape of a live tensor (`None`: the handle is not live, a
    /// [`CallError::not_live`] misuse).
    #[inline]
    pub fn meta(&self, handle: u32) -> Option<&TensorMeta> {
        self.tensors.get(&handle).map(|entry| &entry.meta)
    }

    /// Frees a live tensor.
    #[inline]
    pub fn free(&mut self, handle: u32) -> Result<(), CallError> {
        let entry = self.tensors.remove(&handle).ok_or_else(|| not_live(handle))?;
        self.bytes_used -= entry.buffer.byte_len() as u64;
        Ok(())
    }

    /// Whether the job was granted `op`.
    #[inline]
    pub fn check_granted(&self, op: Op) -> Result<(), CallError> {
        if self.grant.ops.contains(&op) {
            Ok(())
        } else {
            // Imports are checked at load, so this is only reachable by a host misconfiguration.
            Err(misuse("this op is not granted to the job"))
        }
    }

    /// Checks an op call (handles live, parameters decoded, shapes inferred) and prices it.
    /// Nothing is allocated.
    pub fn plan_op(&self, op: Op, handles: Vec<u32>, params: Vec<i64>) -> Result<PlannedOp, CallError> {
        let mut metas = Vec::with_capacity(handles.len());
        for handle in &handles {
            metas.push(self.entry(*handle)?.meta.clone());
        }
        let call = OpCall::decode(op, &params, handles.len()).map_err(|e| CallError::op(op.name(), e))?;
        let out_meta = call.infer(&metas).map_err(|e| CallError::op(op.name(), e))?;
        if let Some(dim) = out_meta.shape.iter().find(|&&dim| dim > MAX_DIM) {
            // spec/abi.md: every dim fits the u32 that `info` reports it in.
            let detail = format!("{}: the result {:?} has a dim {dim}, above {MAX_DIM}, the most a shape's u32 holds", op.name(), out_meta.shape);
            return Err(CallError::refused(ErrorCode::ShapeMismatch, detail));
        }
        let fuel = call.fuel(&metas, &out_meta);
        Ok(PlannedOp { op, call, handles, params, out_meta, fuel })
    }

    /// Runs a planned op (its fuel already charged) and returns the output's handle.
    pub fn run_op(&mut self, plan: PlannedOp) -> Result<u32, CallError> {
        let PlannedOp { op, call, handles, params, out_meta, .. } = plan;
        // `infer` checked the size fits in memory arithmetic.
        let bytes = out_meta.checked_bytes().map_err(|e| misuse(e.to_string()))?;
        self.admit(op.name(), bytes)?;
        let output = {
            let inputs: Vec<&Buffer> = handles.iter().filter_map(|h| self.tensors.get(h).map(|e| &e.buffer)).collect();
            match self.backend.execute(&call, &inputs, &out_meta) {
                Ok(output) => output,
                // A kernel's refusal (a gather index out of range) is described by the code both
                // backends share (`OpError::gather_index`), so its detail is backend-independent.
                Err(ExecError::Op(e)) => return Err(CallError::op(op.name(), e)),
                Err(ExecError::Device(e)) => return Err(CallError::Fault(e)),
                Err(ExecError::Stopped(reason)) => return Err(CallError::Stopped(reason)),
            }
        };
        let hash = match self.grant.trace_level {
            TraceLevel::Full => {
                let inputs = handles.iter().map(|h| self.hash_of(*h)).collect::<Result<Vec<_>, _>>()?;
                let keeper = self.keeper.as_deref();
                let keep = |tensor: &Tensor| {
                    let hash = tensor.content_hash();
                    if let Some(keeper) = keeper {
                        keeper.keep(&hash, tensor);
                    }
                    hash
                };
                let output_hash = self.backend.with_host(&output, keep).map_err(CallError::Fault)?;
                let mut encoded = Vec::with_capacity(params.len() * 8);
                params.iter().for_each(|p| encoded.extend(p.to_le_bytes()));
                self.record(TraceLink { op: op.name().into(), params: encoded, inputs, output: output_hash });
                Some(output_hash)
            }
            TraceLevel::Readback => None,
        };
        Ok(self.insert(output, out_meta, hash))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::backend::Backend;
    use crate::stop::Stop;

    fn session(stop: Stop) -> TensorSession {
        session_with_quota(stop, 1 << 30)
    }

    fn session_with_quota(stop: Stop, max_bytes: u64) -> TensorSession {
        let grant = TensorGrant { ops: Op::ALL.iter().copied().collect(), max_bytes, max_tensors: 1 << 20, trace_level: TraceLevel::Full };
        TensorSession::new(grant, Backend::cpu(2).for_job(stop).unwrap())
    }

    fn create(session: &mut TensorSession, shape: &[u32], values: &[f32]) -> u32 {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let plan = session.plan_create(DType::F32.code(), shape, bytes.len() as u32).unwrap();
        session.create(plan, &bytes).unwrap()
    }

    fn call(session: &mut TensorSession, op: Op, inputs: &[u32], params: &[i64]) -> Result<u32, CallError> {
        let plan = session.plan_op(op, inputs.to_vec(), params.to_vec())?;
        session.run_op(plan)
    }

    /// The class of the 817-byte job that took a provider down: an empty tensor reshaped to
    /// astronomically large leading dims, then fed to every op. Every call must end at once
    /// (a code or an empty result), allocate nothing large, and cost at least its output.
    #[test]
    fn empty_tensors_with_huge_dims_cost_nothing_and_hang_nothing() {
        let started = std::time::Instant::now();
        // Outputs that are not empty are real work the job pays for; keep them small here.
        let mut session = session_with_quota(Stop::never(), 1 << 20);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let big = [u32::MAX as i64, 1 << 31, (1 << 31) - 1, 1 << 20, 65_537, 3, 1, 0];
        let empty = create(&mut session, &[0], &[]);
        let ones = create(&mut session, &[1], &[1.0]);
        let ids = {
            let plan = session.plan_create(DType::I32.code(), &[2], 8).unwrap();
            session.create(plan, &[0; 8]).unwrap()
        };
        let mut calls = 0;
        for _ in 0..3_000 {
            let rank = 1 + (next() % 6) as usize;
            let mut shape: Vec<i64> = (0..rank).map(|_| big[(next() % big.len() as u64) as usize]).collect();
            let zero_at = (next() % rank as u64) as usize;
            shape[zero_at] = 0;
            let Ok(hostile) = call(&mut session, Op::Reshape, &[empty], &shape) else { continue };
            let axis = (next() % rank as u64) as i64 - (next() % 2) as i64 * rank as i64;
            let huge = big[(next() % big.len() as u64) as usize];
            let attempts: [(Op, Vec<u32>, Vec<i64>); 17] = [
                (Op::Sum, vec![hostile], vec![axis, (next() % 2) as i64]),
                (Op::Max, vec![hostile], vec![axis, 1]),
                (Op::Mean, vec![hostile], vec![axis, 0]),
                (Op::Slice, vec![hostile], vec![axis, 0, huge]),
                (Op::Concat, vec![hostile, hostile, hostile], vec![axis]),
                (Op::Permute, vec![hostile], (0..rank as i64).rev().collect()),
                (Op::Softmax, vec![hostile], vec![]),
                (Op::Relu, vec![hostile], vec![]),
                (Op::Silu, vec![hostile], vec![]),
                (Op::Argmax, vec![hostile], vec![]),
                (Op::Cast, vec![hostile], vec![0]),
                (Op::Rope, vec![hostile], vec![huge.min(1 << 24), 10_000f32.to_bits() as i64]),
                (Op::Attention, vec![hostile, hostile, hostile], vec![huge, 1f32.to_bits() as i64]),
                (Op::Add, vec![hostile, ones], vec![]),
                (Op::Matmul, vec![hostile, hostile], vec![]),
                (Op::Gather, vec![hostile, ids], vec![]),
                (Op::Conv2d, vec![hostile, hostile], vec![1, 1, huge.min(u32::MAX as i64), 0]),
            ];
            for (op, inputs, params) in attempts {
                calls += 1;
                let Ok(plan) = session.plan_op(op, inputs, params) else { continue };
                let out_len = plan.out_meta.checked_len().unwrap() as u64;
                assert!(plan.fuel() >= out_len + crate::ops::CALL_BASE_FUEL, "{op:?} is charged less than its output");
                match session.run_op(plan) {
                    Ok(handle) => {
                        let _ = session.free(handle);
                    }
                    Err(CallError::Code { .. }) => {}
                    Err(other) => panic!("{op:?}: {other:?}"),
                }
            }
            let _ = session.free(hostile);
        }
        assert!(calls > 10_000, "{calls} calls tried");
        // A regression here hangs for hours or aborts; the bound only turns that into a message.
        assert!(started.elapsed().as_secs() < 120, "hostile shapes took {:?}", started.elapsed());
    }

    /// The code and detail of a refused call, as the job gets them through `last_error`.
    fn refused(session: &mut TensorSession, result: Result<u32, CallError>) -> (ErrorCode, String) {
        match result {
            Err(error) => {
                let code = session.refusal(error).unwrap_or_else(|other| panic!("not a code: {other:?}"));
                (code, session.last_error().to_string())
            }
            Ok(handle) => panic!("handle {handle}: the call was expected to fail"),
        }
    }

    fn create_i32(session: &mut TensorSession, shape: &[u32], values: &[i32]) -> u32 {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let plan = session.plan_create(DType::I32.code(), shape, bytes.len() as u32).unwrap();
        session.create(plan, &bytes).unwrap()
    }

    /// Every kind of refusal has a detail naming the call and what failed, the same on every
    /// run; the code is the one the ABI has always returned for it.
    #[test]
    fn refusals_name_the_call_and_the_shapes_or_parameters() {
        use ErrorCode::{InvalidParameter, ShapeMismatch, UnsupportedDType};
        let mut s = session(Stop::never());
        let a = create(&mut s, &[64, 32], &[0.5; 64 * 32]);
        let b = create(&mut s, &[16, 4], &[0.5; 64]);
        let m = create(&mut s, &[2, 3], &[1.0; 6]);
        let t = create(&mut s, &[3, 2], &[1.0; 6]);
        let v = create(&mut s, &[4], &[1.0; 4]);
        let ids = create_i32(&mut s, &[2], &[1, 7]);
        let image = create(&mut s, &[1, 3, 5, 5], &[0.0; 75]);
        let filter = create(&mut s, &[2, 4, 3, 3], &[0.0; 72]);
        let empty = create(&mut s, &[0], &[]);
        let half = {
            let plan = s.plan_create(DType::F16.code(), &[2], 4).unwrap();
            s.create(plan, &[0, 0x3C, 0, 0xBC]).unwrap()
        };
        let f = |bits: f32| bits.to_bits() as i64;
        /// The call (op, inputs, params) and the code and detail it must get.
        type Case = (Op, Vec<u32>, Vec<i64>, ErrorCode, &'static str);
        let cases: Vec<Case> = vec![
            (Op::Matmul, vec![a, b], vec![], ShapeMismatch, "matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims 32 and 16 differ"),
            (Op::Matmul, vec![v, m], vec![], ShapeMismatch, "matmul: shapes [4] and [2, 3] do not fit: both need rank >= 2 ([..., M, K] and [..., K, N])"),
            (
                Op::Add,
                vec![m, t],
                vec![],
                ShapeMismatch,
                "add: shapes [2, 3] and [3, 2] do not broadcast: on axis 0 of the result, 2 and 3 differ and neither is 1",
            ),
            (Op::Exp, vec![ids], vec![], UnsupportedDType, "exp: takes f32 only, but input 0 is i32 [2]"),
            (Op::Slice, vec![m], vec![3, 0, 1], InvalidParameter, "slice: axis 3 is out of range for a rank-2 tensor [2, 3]: its axes are -2..=1"),
            (Op::Slice, vec![m], vec![1, 2, 9], InvalidParameter, "slice: [2, 9) on axis 1 of [2, 3] is not a range within 0..=3"),
            (Op::Sum, vec![m], vec![-3, 0], InvalidParameter, "sum: axis -3 is out of range for a rank-2 tensor [2, 3]: its axes are -2..=1"),
            (Op::Sum, vec![m], vec![0, 2], InvalidParameter, "sum: keepdims must be 0 or 1, got 2"),
            (Op::Sum, vec![m], vec![0], InvalidParameter, "sum: takes 2 parameters, got 1"),
            (Op::Relu, vec![m, m], vec![], InvalidParameter, "relu: takes 1 input, got 2"),
            (Op::LayerNorm, vec![m, v, v], vec![f(f32::NAN)], InvalidParameter, "layer_norm: epsilon NaN must be finite and >= 0"),
            (Op::RmsNorm, vec![m, v], vec![f(1e-6)], ShapeMismatch, "rms_norm: gamma must be [3], the last dim of x [2, 3], got [4]"),
            (Op::Permute, vec![m], vec![1], InvalidParameter, "permute: takes one axis per dim: x [2, 3] has rank 2, got 1 axis [1]"),
            (Op::Permute, vec![m], vec![1, 1], InvalidParameter, "permute: [1, 1] is not a permutation of 0..2 (x [2, 3])"),
            (Op::Reshape, vec![m], vec![4, 2], ShapeMismatch, "reshape: cannot reshape [2, 3] (6 elements) to [4, 2] (8 elements)"),
            (Op::Reshape, vec![m], vec![2, -3], InvalidParameter, "reshape: dim -3 of the new shape [2, -3] is negative"),
            (
                Op::Reshape,
                vec![empty],
                vec![0, 1 << 32],
                ShapeMismatch,
                "reshape: the result [0, 4294967296] has a dim 4294967296, above 4294967295, the most a shape's u32 holds",
            ),
            (
                Op::Concat,
                vec![m, t],
                vec![1],
                ShapeMismatch,
                "concat: on axis 1, input 1 [3, 2] does not fit input 0 [2, 3]: the ranks and every other dim must match",
            ),
            (Op::Concat, vec![m, ids], vec![0], UnsupportedDType, "concat: inputs must share one dtype: input 0 is f32, input 1 is i32"),
            (Op::Gather, vec![m, v], vec![], UnsupportedDType, "gather: indices (input 1) must be i32, got f32 [4]"),
            // Found by the kernel, not the planning: described by the code both backends share.
            (Op::Gather, vec![m, ids], vec![], InvalidParameter, "gather: indices[1] (flat) is 7, outside 0..2, the rows of the table [2, 3]"),
            (Op::Conv2d, vec![image, filter], vec![1, 1, 0, 0], ShapeMismatch, "conv2d: x [1, 3, 5, 5] has 3 channels, the weight [2, 4, 3, 3] takes 4"),
            (Op::Conv2d, vec![image, m], vec![1, 1, 0, 0], ShapeMismatch, "conv2d: the weight (input 1) must be [O, C, KH, KW] (rank 4), got [2, 3]"),
            (Op::Conv2d, vec![image, filter], vec![0, 1, 0, 0], InvalidParameter, "conv2d: stride_h 0 must be in 1..=4294967295"),
            (Op::Silu, vec![ids], vec![], UnsupportedDType, "silu: takes f32 only, but input 0 is i32 [2]"),
            (Op::Exp, vec![half], vec![], UnsupportedDType, "exp: takes f32 only, but input 0 is f16 [2]"),
            (Op::Matmul, vec![m, half], vec![], UnsupportedDType, "matmul: takes f32 only, but input 1 is f16 [2]"),
            (Op::Cast, vec![m], vec![0], UnsupportedDType, "cast: converts f16 and bf16 to f32, not f32 [2, 3] to f32"),
            (Op::Cast, vec![half], vec![2], UnsupportedDType, "cast: converts f16 and bf16 to f32, not f16 [2] to f16"),
            (Op::Cast, vec![half], vec![-1], InvalidParameter, "cast: the target dtype code -1 is not a dtype (f32 is 0, i32 is 1, f16 is 2, bf16 is 3)"),
            (Op::Concat, vec![half, v], vec![0], UnsupportedDType, "concat: inputs must share one dtype: input 0 is f16, input 1 is f32"),
            (Op::Rope, vec![m], vec![0, f(1e4)], ShapeMismatch, "rope: x must be [..., T, D] with D even, got [2, 3]"),
            (Op::Attention, vec![m, m, m], vec![0, f(1.0)], ShapeMismatch, "attention: q [2, 3], k [2, 3], v [2, 3]: q must be [Hq, T, D]"),
            (Op::Attention, vec![image, image, image], vec![-1, f(1.0)], InvalidParameter, "attention: the causal offset -1 is negative"),
            (Op::Attention, vec![image, image, image], vec![0, f(f32::NAN)], InvalidParameter, "attention: scale NaN must be finite"),
            (Op::Rope, vec![v], vec![0, f(1e4)], ShapeMismatch, "rope: x must be [..., T, D] with D even, got [4]"),
            (Op::Rope, vec![t], vec![-1, f(1e4)], InvalidParameter, "rope: the position offset -1 must be in 0..=16777216"),
            (Op::Rope, vec![t], vec![0, f(-1.0)], InvalidParameter, "rope: theta -1.0 must be finite and > 0"),
            (Op::Rope, vec![t], vec![0, f(f32::INFINITY)], InvalidParameter, "rope: theta inf must be finite and > 0"),
            (
                Op::Rope,
                vec![t],
                vec![(1 << 24) - 2, f(1e4)],
                InvalidParameter,
                "rope: positions 16777214..16777214+3 (x [3, 2]) pass 16777216, beyond which f32 does not hold every integer",
            ),
            (Op::Argmax, vec![empty], vec![], ShapeMismatch, "argmax: the last axis of x [0] must hold 1..=2147483648 elements (an index is an i32), got 0"),
        ];
        for (op, inputs, params, code, detail) in cases {
            let result = call(&mut s, op, &inputs, &params);
            assert_eq!(refused(&mut s, result), (code, detail.to_string()), "{op:?} {params:?}");
        }
        // Create's own refusals: an unknown dtype and a shape too large to hold.
        let result = s.plan_create(7, &[2], 8).map(|_| 0);
        assert_eq!(refused(&mut s, result), (UnsupportedDType, "create: dtype code 7 is not a dtype (f32 is 0, i32 is 1, f16 is 2, bf16 is 3)".into()));
        let result = s.plan_create(DType::F32.code(), &[u32::MAX; 3], 0).map(|_| 0);
        let (code, detail) = refused(&mut s, result);
        assert_eq!((code, detail.starts_with("create: shape [4294967295, 4294967295, 4294967295]")), (ShapeMismatch, true), "{detail}");
    }

    /// f16 and bf16 tensors are created from their little-endian bytes, held at 2 bytes an
    /// element (the quota counts that), moved by layout ops as stored and cast to f32 exactly.
    #[test]
    fn half_precision_weights_are_held_as_stored_and_cast_exactly() {
        let grant = TensorGrant { ops: Op::ALL.iter().copied().collect(), max_bytes: 64, max_tensors: 16, trace_level: TraceLevel::Full };
        let mut s = TensorSession::new(grant, Backend::cpu(1).for_job(Stop::never()).unwrap());
        // f16 1.0, -2.0, the smallest subnormal, -inf; bf16 1.0, NaN with a payload, -0.0, 2^-133.
        let f16 = [0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0x00, 0xFC];
        let bf16 = [0x80, 0x3F, 0xC1, 0x7F, 0x00, 0x80, 0x01, 0x00];
        let mut handles = Vec::new();
        for (dtype, bytes) in [(DType::F16, f16), (DType::BF16, bf16)] {
            let plan = s.plan_create(dtype.code(), &[2, 2], 8).unwrap();
            handles.push(s.create(plan, &bytes).unwrap());
        }
        assert_eq!(s.bytes_used(), 16);
        assert!(matches!(s.plan_create(DType::F16.code(), &[2, 2], 16), Err(CallError::Misuse(_))), "4 f16s are 8 bytes");
        let row = call(&mut s, Op::Slice, &[handles[0]], &[0, 1, 2]).unwrap();
        let mut out = [0u8; 4];
        s.read(row, &mut out).unwrap();
        assert_eq!(out, f16[4..]);
        let want: [[f32; 4]; 2] = [[1.0, -2.0, 2f32.powi(-24), f32::NEG_INFINITY], [1.0, f32::NAN, -0.0, f32::from_bits(0x0001_0000)]];
        for (handle, want) in handles.iter().zip(want) {
            let plan = s.plan_op(Op::Cast, vec![*handle], vec![DType::F32.code() as i64]).unwrap();
            assert_eq!(plan.fuel(), crate::ops::CALL_BASE_FUEL + 4);
            let y = s.run_op(plan).unwrap();
            let mut bytes = [0u8; 16];
            s.read(y, &mut bytes).unwrap();
            let got: Vec<u32> = bytes.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let want: Vec<u32> = want.iter().map(|v| if v.is_nan() { 0x7FC0_0000 } else { v.to_bits() }).collect();
            assert_eq!(got, want);
        }
        // 16 + 4 + 2 * 16 bytes are held; one more f32 [2, 2] passes the 64-byte quota.
        let result = call(&mut s, Op::Cast, &[handles[0]], &[0]);
        assert_eq!(refused(&mut s, result).0, ErrorCode::TensorMemoryQuota);
    }

    #[test]
    fn quota_refusals_say_what_is_held_and_the_limit() {
        let grant = TensorGrant { ops: Op::ALL.iter().copied().collect(), max_bytes: 1024, max_tensors: 3, trace_level: TraceLevel::Full };
        let mut s = TensorSession::new(grant, Backend::cpu(1).for_job(Stop::never()).unwrap());
        let x = create(&mut s, &[250], &[1.0; 250]);
        let result = s.plan_create(DType::F32.code(), &[1024], 4096).map(|_| 0);
        let expected = "create: the result needs 4096 bytes and 1000 are in use, above limits.tensor_bytes 1024";
        assert_eq!(refused(&mut s, result), (ErrorCode::TensorMemoryQuota, expected.into()));
        // An op's result is checked after it is priced: the same words, with the op's name.
        let result = call(&mut s, Op::Relu, &[x], &[]);
        let expected = "relu: the result needs 1000 bytes and 1000 are in use, above limits.tensor_bytes 1024";
        assert_eq!(refused(&mut s, result), (ErrorCode::TensorMemoryQuota, expected.into()));
        create(&mut s, &[1], &[1.0]);
        create(&mut s, &[1], &[1.0]);
        let result = call(&mut s, Op::Neg, &[x], &[]);
        let expected = "neg: the tensors the job holds (3) reach limits.tensor_count 3";
        assert_eq!(refused(&mut s, result), (ErrorCode::TensorCountQuota, expected.into()));
    }

    #[test]
    fn the_last_error_is_the_last_refusal_and_misuse_is_not_one() {
        let mut s = session(Stop::never());
        assert_eq!(s.last_error(), "");
        let m = create(&mut s, &[2, 3], &[1.0; 6]);
        let result = call(&mut s, Op::Softmax, &[m], &[]).and_then(|h| call(&mut s, Op::Sum, &[h], &[9, 0]));
        let (_, detail) = refused(&mut s, result);
        assert!(detail.starts_with("sum: axis 9"), "{detail}");
        // Successful calls leave it; a misuse traps instead and is not recorded.
        call(&mut s, Op::Relu, &[m], &[]).unwrap();
        assert!(matches!(s.refusal(CallError::not_live(99)), Err(CallError::Misuse(_))));
        assert_eq!(s.last_error(), detail);
        // The same calls give the same words on a fresh session: nothing but the job's own state
        // goes into them.
        let mut again = session(Stop::never());
        let m = create(&mut again, &[2, 3], &[1.0; 6]);
        let result = call(&mut again, Op::Softmax, &[m], &[]).and_then(|h| call(&mut again, Op::Sum, &[h], &[9, 0]));
        assert_eq!(refused(&mut again, result).1, detail);
    }

    fn big_square(session: &mut TensorSession, n: u32) -> u32 {
        let values: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 - 3.0).collect();
        create(session, &[n, n], &values)
    }

    #[test]
    fn a_passed_deadline_stops_every_kernel_with_no_result() {
        let mut session = session(Stop::new(Some(std::time::Instant::now()), None));
        let a = big_square(&mut session, 256);
        let image = {
            let values = vec![0.5f32; 4 * 64 * 64];
            create(&mut session, &[1, 4, 64, 64], &values)
        };
        let filter = create(&mut session, &[4, 4, 3, 3], &[0.25; 144]);
        for (op, inputs, params) in [
            (Op::Matmul, vec![a, a], vec![]),
            (Op::Conv2d, vec![image, filter], vec![1, 1, 1, 1]),
            (Op::Gelu, vec![a], vec![]),
            (Op::Sum, vec![a], vec![0, 0]),
            (Op::Permute, vec![a], vec![1, 0]),
            (Op::Slice, vec![a], vec![0, 0, 100]),
        ] {
            match call(&mut session, op, &inputs, &params) {
                Err(CallError::Stopped(StopReason::WallTime)) => {}
                other => panic!("{op:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_host_switch_stops_a_long_matmul_partway() {
        let switch = Arc::new(AtomicBool::new(false));
        let mut session = session(Stop::new(None, Some(switch.clone())));
        // 4096^3 multiply-adds: seconds on any CPU; the switch flips after 50 ms.
        let a = big_square(&mut session, 4096);
        let flipper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            switch.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let result = call(&mut session, Op::Matmul, &[a, a], &[]);
        flipper.join().unwrap();
        assert!(matches!(result, Err(CallError::Stopped(StopReason::Cancelled))), "{result:?}");
    }
}

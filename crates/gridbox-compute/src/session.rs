//! One job's tensors: the table of live tensors behind the bridge's handles, the job's quotas,
//! and the trace of every call. It knows nothing of wasm: the runtime's bridge glue reads the
//! job's memory, charges fuel at the points this module's plans say, and calls in here.
//!
//! Each call either succeeds, fails in a way the job can handle ([`CallError::Code`]), is a
//! misuse of the ABI that stops the job ([`CallError::Misuse`]), or fails because the provider's
//! device failed ([`CallError::Fault`]), which is never the job's outcome.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use gridbox_abi::{DType, ErrorCode, MAX_DIM, Op};

use crate::backend::{Buffer, CudaError, ExecError, JobBackend};
use crate::ops::OpCall;
use crate::stop::StopReason;
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
    /// A failure the job can handle: the ABI code it gets back.
    #[error("{}", .0.describe())]
    Code(ErrorCode),
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

impl From<ErrorCode> for CallError {
    fn from(code: ErrorCode) -> Self {
        CallError::Code(code)
    }
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
}

impl TensorSession {
    /// A session for one job, on the job's own backend handle.
    pub fn new(grant: TensorGrant, backend: JobBackend) -> Self {
        TensorSession { grant, backend, tensors: HashMap::default(), next_handle: 1, bytes_used: 0, trace: TraceChain::new() }
    }

    /// The trace so far.
    #[inline]
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
    #[inline]
    fn admit(&self, bytes: usize) -> Result<(), ErrorCode> {
        // Handles are never reused: after 2^32 - 1 of them a job can make no more tensors.
        if self.tensors.len() as u64 >= self.grant.max_tensors || self.next_handle == 0 {
            return Err(ErrorCode::TensorCountQuota);
        }
        if self.bytes_used.saturating_add(bytes as u64) > self.grant.max_bytes {
            return Err(ErrorCode::TensorMemoryQuota);
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
        let Some(dtype) = DType::from_code(dtype) else {
            return Err(ErrorCode::UnsupportedDType.into());
        };
        let meta = TensorMeta::new(dtype, shape.iter().map(|&d| d as usize).collect());
        let bytes = match meta.checked_bytes() {
            Ok(bytes) if bytes == data_len as usize => bytes,
            Ok(bytes) => return Err(misuse(format!("shape {:?} of {} needs {bytes} bytes, data_len is {data_len}", meta.shape, dtype.name()))),
            Err(e) => return Err(e.code().into()),
        };
        self.admit(bytes)?;
        Ok(PlannedCreate { meta })
    }

    /// Creates a tensor from its little-endian bytes, as planned, and returns its handle.
    pub fn create(&mut self, plan: PlannedCreate, data: &[u8]) -> Result<u32, CallError> {
        let PlannedCreate { meta } = plan;
        let tensor = Tensor::from_le_bytes(meta.dtype, meta.shape, data).map_err(|e| misuse(e.to_string()))?;
        let hash = tensor.content_hash();
        let mut params = Vec::with_capacity(8 + 8 * tensor.shape().len());
        params.extend(tensor.dtype().code().to_le_bytes());
        tensor.shape().iter().for_each(|d| params.extend((*d as u64).to_le_bytes()));
        self.trace.append(&TraceLink { op: "create".into(), params, inputs: Vec::new(), output: hash });
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
        let hash = self
            .backend
            .with_host(&entry.buffer, |tensor| {
                tensor.copy_le_bytes_to(out);
                known.unwrap_or_else(|| tensor.content_hash())
            })
            .map_err(CallError::Fault)?;
        entry.hash = Some(hash);
        self.trace.append(&TraceLink { op: "read".into(), params: (handle as u64).to_le_bytes().to_vec(), inputs: Vec::new(), output: hash });
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
        let call = OpCall::decode(op, &params, handles.len()).map_err(|e| CallError::Code(e.code()))?;
        let out_meta = call.infer(&metas).map_err(|e| CallError::Code(e.code()))?;
        if out_meta.shape.iter().any(|&dim| dim > MAX_DIM) {
            // spec/abi.md: every dim fits the u32 that `info` reports it in.
            return Err(ErrorCode::ShapeMismatch.into());
        }
        let fuel = call.fuel(&metas, &out_meta);
        Ok(PlannedOp { op, call, handles, params, out_meta, fuel })
    }

    /// Runs a planned op (its fuel already charged) and returns the output's handle.
    pub fn run_op(&mut self, plan: PlannedOp) -> Result<u32, CallError> {
        let PlannedOp { op, call, handles, params, out_meta, .. } = plan;
        // `infer` checked the size fits in memory arithmetic.
        let bytes = out_meta.checked_bytes().map_err(|e| misuse(e.to_string()))?;
        self.admit(bytes)?;
        let output = {
            let inputs: Vec<&Buffer> = handles.iter().filter_map(|h| self.tensors.get(h).map(|e| &e.buffer)).collect();
            match self.backend.execute(&call, &inputs, &out_meta) {
                Ok(output) => output,
                Err(ExecError::Op(e)) => return Err(CallError::Code(e.code())),
                Err(ExecError::Device(e)) => return Err(CallError::Fault(e)),
                Err(ExecError::Stopped(reason)) => return Err(CallError::Stopped(reason)),
            }
        };
        let hash = match self.grant.trace_level {
            TraceLevel::Full => {
                let inputs = handles.iter().map(|h| self.hash_of(*h)).collect::<Result<Vec<_>, _>>()?;
                let output_hash = self.backend.with_host(&output, Tensor::content_hash).map_err(CallError::Fault)?;
                let mut encoded = Vec::with_capacity(params.len() * 8);
                params.iter().for_each(|p| encoded.extend(p.to_le_bytes()));
                self.trace.append(&TraceLink { op: op.name().into(), params: encoded, inputs, output: output_hash });
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
            let attempts: [(Op, Vec<u32>, Vec<i64>); 12] = [
                (Op::Sum, vec![hostile], vec![axis, (next() % 2) as i64]),
                (Op::Max, vec![hostile], vec![axis, 1]),
                (Op::Mean, vec![hostile], vec![axis, 0]),
                (Op::Slice, vec![hostile], vec![axis, 0, huge]),
                (Op::Concat, vec![hostile, hostile, hostile], vec![axis]),
                (Op::Permute, vec![hostile], (0..rank as i64).rev().collect()),
                (Op::Softmax, vec![hostile], vec![]),
                (Op::Relu, vec![hostile], vec![]),
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
                    Err(CallError::Code(_)) => {}
                    Err(other) => panic!("{op:?}: {other:?}"),
                }
            }
            let _ = session.free(hostile);
        }
        assert!(calls > 10_000, "{calls} calls tried");
        // A regression here hangs for hours or aborts; the bound only turns that into a message.
        assert!(started.elapsed().as_secs() < 120, "hostile shapes took {:?}", started.elapsed());
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

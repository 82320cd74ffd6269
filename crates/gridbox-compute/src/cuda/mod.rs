//! The CUDA backend: gridbox's kernels (`kernels.cu`) compiled at run time by NVRTC and run
//! through cudarc, giving the same bits as the CPU reference.
//!
//! All of the crate's CUDA `unsafe` lives here. cudarc loads the CUDA libraries dynamically
//! and panics when one is missing, so every entry point first probes for the library with
//! `is_culib_present()` and turns every failure into a [`CudaError`].
//!
//! Memory: each job gets its own stream ([`CudaJob`]); its tensors are device allocations that
//! are freed when dropped, so all of a job's device memory goes when its bridge state does,
//! whatever ended the job. A tensor is only ever read after the kernel that wrote it, on the
//! same stream, and every kernel writes every element of its output, so no job can read what
//! an earlier job left behind.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, Ptx};
use gridbox_abi::DType;

use crate::backend::contract::{DeviceTensorMeta, ExecError, GpuDevice, GpuJob};
use crate::backend::{CudaError, DeviceCause};
use crate::ops::{BinaryOp, OpCall, OpError, ReduceOp, UnaryOp, broadcast_shapes, resolve_axis};
use crate::tensor::{Tensor, TensorData, TensorMeta};

/// The kernels' source, compiled by NVRTC.
pub const KERNELS_SOURCE: &str = include_str!("kernels.cu");

const KERNEL_NAMES: [&str; 18] = [
    "unary_f32",
    "attention_f32",
    "rope_f32",
    "argmax_f32",
    "cast_half_f32",
    "permute_u16",
    "copy_blocks_u16",
    "gather_u16",
    "binary_f32",
    "reduce_f32",
    "softmax_f32",
    "norm_f32",
    "permute_u32",
    "copy_blocks_u32",
    "gather_u32",
    "conv2d_f32",
    "matmul_f32",
    "matmul_f32_vec4",
];

/// Options that make NVRTC's arithmetic exactly IEEE: no contraction into fma, no flush to
/// zero, correctly rounded division and square root, no fast math.
fn compile_options(arch: &'static str) -> CompileOptions {
    CompileOptions {
        ftz: Some(false),
        prec_sqrt: Some(true),
        prec_div: Some(true),
        fmad: Some(false),
        use_fast_math: Some(false),
        arch: Some(arch),
        options: vec!["--std=c++17".into()],
        ..CompileOptions::default()
    }
}

fn nvrtc_present() -> Result<(), CudaError> {
    // SAFETY: probing only tries to load the library; no function is called.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } { Ok(()) } else { Err(CudaError::LibraryMissing("NVRTC (libnvrtc)")) }
}

fn driver_present() -> Result<(), CudaError> {
    // SAFETY: as above.
    if unsafe { cudarc::driver::sys::is_culib_present() } { Ok(()) } else { Err(CudaError::LibraryMissing("the NVIDIA driver (libcuda)")) }
}

/// Compiles the kernels for `arch` (e.g. `compute_90`). Needs NVRTC but no GPU: CI uses this
/// to prove every kernel compiles.
pub fn compile_kernels(arch: &'static str) -> Result<Ptx, CudaError> {
    nvrtc_present()?;
    cudarc::nvrtc::compile_ptx_with_opts(KERNELS_SOURCE, compile_options(arch)).map_err(|e| CudaError::Compile(Arc::new(e) as DeviceCause))
}

/// Compiled kernels, once per architecture per process.
fn kernels_for(arch: &'static str) -> Result<Ptx, CudaError> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Ptx>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ptx) = cache.get(arch) {
        return Ok(ptx.clone());
    }
    let ptx = compile_kernels(arch)?;
    cache.insert(arch, ptx.clone());
    Ok(ptx)
}

fn driver(e: cudarc::driver::DriverError) -> CudaError {
    CudaError::Driver(Arc::new(e))
}

/// One GPU, with the kernels loaded.
pub struct CudaDevice {
    context: Arc<CudaContext>,
    _module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
    description: String,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

fn arch_name(major: i32, minor: i32) -> &'static str {
    // NVRTC takes a &'static str; the architectures gridbox knows, newest first.
    match (major, minor) {
        (12, _) => "compute_120",
        (10, _) => "compute_100",
        (9, _) => "compute_90",
        (8, 9) => "compute_89",
        (8, 6) => "compute_86",
        (8, _) => "compute_80",
        (7, 5) => "compute_75",
        _ => "compute_70",
    }
}

impl GpuDevice for CudaDevice {
    type Job = CudaJob;

    fn device_count() -> Result<usize, CudaError> {
        driver_present()?;
        CudaContext::device_count().map(|n| n.max(0) as usize).map_err(driver)
    }

    /// Opens device `ordinal` and loads the kernels (compiled by NVRTC for its architecture,
    /// once per process).
    fn open(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        let count = Self::device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        nvrtc_present()?;
        let context = CudaContext::new(ordinal).map_err(driver)?;
        let (major, minor) = context.compute_capability().map_err(driver)?;
        let name = context.name().map_err(driver)?;
        let module = context.load_module(kernels_for(arch_name(major, minor))?).map_err(driver)?;
        let mut functions = HashMap::new();
        for kernel in KERNEL_NAMES {
            functions.insert(kernel, module.load_function(kernel).map_err(driver)?);
        }
        let description = format!("cuda:{ordinal} ({name}, sm_{major}{minor})");
        Ok(Arc::new(CudaDevice { context, _module: module, functions, description }))
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn new_job(self: &Arc<Self>) -> Result<CudaJob, CudaError> {
        Ok(CudaJob { device: self.clone(), stream: self.context.new_stream().map_err(driver)? })
    }
}

/// A tensor in device memory, as 32-bit words: f32 bits or i32, or two f16 or bf16 elements a
/// word (little-endian: element `2i` in the low half of word `i`), which kernels read as 16-bit
/// words.
pub struct DeviceTensor {
    meta: TensorMeta,
    data: CudaSlice<u32>,
}

impl DeviceTensorMeta for DeviceTensor {
    fn meta(&self) -> &TensorMeta {
        &self.meta
    }
}

impl DeviceTensor {
    /// The elements as 32-bit words in device memory (two a word for 2-byte dtypes).
    pub fn words(&self) -> &CudaSlice<u32> {
        &self.data
    }
}

/// Kernel-parameter struct; the layout of `Shape` in kernels.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct Shape {
    rank: i32,
    dims: [u64; 8],
    strides_a: [u64; 8],
    strides_b: [u64; 8],
}

// SAFETY: `Shape` is plain old data with the same C layout as the kernel's struct.
unsafe impl DeviceRepr for Shape {}

impl Shape {
    fn new(dims: &[usize], strides_a: &[usize], strides_b: &[usize]) -> Result<Shape, OpError> {
        if dims.len() > 8 {
            return Err(OpError::ShapeMismatch(format!("rank {} is above 8", dims.len())));
        }
        let mut shape = Shape { rank: dims.len() as i32, dims: [1; 8], strides_a: [0; 8], strides_b: [0; 8] };
        for (d, &dim) in dims.iter().enumerate() {
            shape.dims[d] = dim as u64;
            shape.strides_a[d] = strides_a.get(d).copied().unwrap_or(0) as u64;
            shape.strides_b[d] = strides_b.get(d).copied().unwrap_or(0) as u64;
        }
        Ok(shape)
    }
}

/// One job's stream on a device.
pub struct CudaJob {
    device: Arc<CudaDevice>,
    stream: Arc<CudaStream>,
}

fn grid_for(threads: u64) -> LaunchConfig {
    let blocks = threads.div_ceil(256).clamp(1, 1 << 20) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - shape.len();
    let contiguous = contiguous_strides(shape);
    let mut strides = vec![0; out.len()];
    for (i, &dim) in shape.iter().enumerate() {
        strides[offset + i] = if dim == 1 { 0 } else { contiguous[i] };
    }
    strides
}

impl CudaJob {
    /// The device's description.
    pub fn description(&self) -> &str {
        &self.device.description
    }

    /// The job's stream (benchmarks time work on it and hand it to cuBLAS).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all of the job's work.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver)
    }

    fn function(&self, name: &str) -> Result<&CudaFunction, CudaError> {
        self.device.functions.get(name).ok_or(CudaError::Internal("a kernel is not loaded"))
    }

    /// The layout kernel `name` (`permute`, `copy_blocks`, `gather`) for `dtype`'s element width.
    fn layout_function(&self, name: &'static str, dtype: DType) -> Result<&CudaFunction, CudaError> {
        let width = if dtype.size() == 2 { "u16" } else { "u32" };
        self.function(&format!("{name}_{width}"))
    }

    /// Uninitialised device memory for `len` 32-bit words; every kernel writes all of it.
    fn alloc(&self, len: usize) -> Result<CudaSlice<u32>, CudaError> {
        // SAFETY: the memory is written in full by the kernel that produces the tensor before
        // anything reads it (same stream).
        unsafe { self.stream.alloc::<u32>(len.max(1)) }.map_err(driver)
    }
}

impl GpuJob for CudaJob {
    type Tensor = DeviceTensor;

    fn upload(&self, tensor: &Tensor) -> Result<DeviceTensor, CudaError> {
        let words: Vec<u32> = match tensor.data() {
            TensorData::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as u32).collect(),
            TensorData::F16(v) | TensorData::Bf16(v) => {
                v.chunks(2).map(|pair| u32::from(pair[0]) | u32::from(pair.get(1).copied().unwrap_or(0)) << 16).collect()
            }
        };
        let data = if words.is_empty() { self.alloc(0)? } else { self.stream.clone_htod(&words).map_err(driver)? };
        Ok(DeviceTensor { meta: tensor.meta(), data })
    }

    fn download(&self, tensor: &DeviceTensor) -> Result<Tensor, CudaError> {
        let len = tensor.meta.checked_len().map_err(|_| CudaError::Internal("a device tensor's size overflows"))?;
        let mut words = self.stream.clone_dtoh(&tensor.data).map_err(driver)?;
        let halves = |words: Vec<u32>| -> Vec<u16> { words.into_iter().flat_map(|w| [w as u16, (w >> 16) as u16]).take(len).collect() };
        words.truncate(len);
        let data = match tensor.meta.dtype {
            DType::I32 => TensorData::I32(words.into_iter().map(|w| w as i32).collect()),
            DType::F16 => TensorData::F16(halves(words)),
            DType::BF16 => TensorData::Bf16(halves(words)),
            _ => TensorData::F32(words.into_iter().map(f32::from_bits).collect()),
        };
        Tensor::new(tensor.meta.shape.clone(), data).map_err(|_| CudaError::Internal("a device tensor does not fill its shape"))
    }

    fn execute(&self, call: &OpCall, inputs: &[&DeviceTensor], out: &TensorMeta) -> Result<DeviceTensor, ExecError> {
        let len = out.checked_len()?;
        let input = |i: usize| inputs.get(i).copied().ok_or_else(|| OpError::InvalidParameter(format!("missing input {i}")));
        // 32-bit words: one element each, or two of a 2-byte dtype.
        let mut result = self.alloc(words_for(out.dtype, len))?;
        let layout = |name: &'static str| self.layout_function(name, out.dtype);
        let n = len as u64;
        let stream = &self.stream;
        // SAFETY (every launch below): the arguments match the kernel's C signature in
        // kernels.cu argument for argument; every pointer is a live allocation of at least
        // the length the kernel indexes (shapes were checked by `OpCall::infer` and are
        // checked again here), and all work is ordered on this job's one stream.
        unsafe {
            match call {
                OpCall::Unary(op) => {
                    let code = unary_code(*op);
                    if len > 0 {
                        stream
                            .launch_builder(self.function("unary_f32")?)
                            .arg(&mut result)
                            .arg(&input(0)?.data)
                            .arg(&n)
                            .arg(&code)
                            .launch(grid_for(n))
                            .map_err(driver)?;
                    }
                }
                OpCall::Binary(op) => {
                    let (a, b) = (input(0)?, input(1)?);
                    let shape = broadcast_shapes(&a.meta.shape, &b.meta.shape)?;
                    let params = Shape::new(&shape, &broadcast_strides(&a.meta.shape, &shape), &broadcast_strides(&b.meta.shape, &shape))?;
                    let code = binary_code(*op);
                    if len > 0 {
                        stream
                            .launch_builder(self.function("binary_f32")?)
                            .arg(&mut result)
                            .arg(&a.data)
                            .arg(&b.data)
                            .arg(&n)
                            .arg(&code)
                            .arg(&params)
                            .launch(grid_for(n))
                            .map_err(driver)?;
                    }
                }
                OpCall::Reduce { op, axis, .. } => {
                    let x = input(0)?;
                    let axis = resolve_axis(*axis, x.meta.shape.len())?;
                    let reduced = x.meta.shape[axis] as u64;
                    let inner: u64 = x.meta.shape[axis + 1..].iter().map(|&d| d as u64).product();
                    let outer: u64 = x.meta.shape[..axis].iter().map(|&d| d as u64).product();
                    let code: i32 = match op {
                        ReduceOp::Sum => 0,
                        ReduceOp::Mean => 1,
                        ReduceOp::Max => 2,
                    };
                    if len > 0 {
                        stream
                            .launch_builder(self.function("reduce_f32")?)
                            .arg(&mut result)
                            .arg(&x.data)
                            .arg(&outer)
                            .arg(&reduced)
                            .arg(&inner)
                            .arg(&code)
                            .launch(grid_for(n * 32))
                            .map_err(driver)?;
                    }
                }
                OpCall::Argmax => {
                    let x = input(0)?;
                    let row = x.meta.shape.last().copied().unwrap_or(1) as u64;
                    // `OpCall::infer` refuses an empty last axis; the output has one index per row.
                    if n > 0 && row > 0 {
                        stream
                            .launch_builder(self.function("argmax_f32")?)
                            .arg(&mut result)
                            .arg(&x.data)
                            .arg(&n)
                            .arg(&row)
                            .launch(grid_for(n * 32))
                            .map_err(driver)?;
                    }
                }
                OpCall::Softmax | OpCall::LayerNorm { .. } | OpCall::RmsNorm { .. } => {
                    let x = input(0)?;
                    let row = x.meta.shape.last().copied().unwrap_or(1) as u64;
                    let rows = n.checked_div(row).unwrap_or(0);
                    if rows > 0 {
                        match call {
                            OpCall::Softmax => {
                                stream
                                    .launch_builder(self.function("softmax_f32")?)
                                    .arg(&mut result)
                                    .arg(&x.data)
                                    .arg(&rows)
                                    .arg(&row)
                                    .launch(grid_for(rows * 32))
                                    .map_err(driver)?;
                            }
                            OpCall::LayerNorm { eps } => {
                                stream
                                    .launch_builder(self.function("norm_f32")?)
                                    .arg(&mut result)
                                    .arg(&x.data)
                                    .arg(&input(1)?.data)
                                    .arg(&input(2)?.data)
                                    .arg(&rows)
                                    .arg(&row)
                                    .arg(eps)
                                    .launch(grid_for(rows * 32))
                                    .map_err(driver)?;
                            }
                            OpCall::RmsNorm { eps } => {
                                let null = 0u64;
                                stream
                                    .launch_builder(self.function("norm_f32")?)
                                    .arg(&mut result)
                                    .arg(&x.data)
                                    .arg(&input(1)?.data)
                                    .arg(&null)
                                    .arg(&rows)
                                    .arg(&row)
                                    .arg(eps)
                                    .launch(grid_for(rows * 32))
                                    .map_err(driver)?;
                            }
                            _ => {}
                        }
                    }
                }
                OpCall::Permute { perm } => {
                    let x = input(0)?;
                    let strides = contiguous_strides(&x.meta.shape);
                    let permuted: Vec<usize> = perm.iter().map(|&p| strides.get(p as usize).copied().unwrap_or(0)).collect();
                    let params = Shape::new(&out.shape, &permuted, &[])?;
                    if len > 0 {
                        stream.launch_builder(layout("permute")?).arg(&mut result).arg(&x.data).arg(&n).arg(&params).launch(grid_for(n)).map_err(driver)?;
                    }
                }
                OpCall::Reshape { .. } => {
                    if len > 0 {
                        stream.memcpy_dtod(&input(0)?.data, &mut result).map_err(driver)?;
                    }
                }
                OpCall::Slice { axis, start, .. } => {
                    let x = input(0)?;
                    let axis = resolve_axis(*axis, x.meta.shape.len())?;
                    let inner: u64 = x.meta.shape[axis + 1..].iter().map(|&d| d as u64).product();
                    let outer: u64 = x.meta.shape[..axis].iter().map(|&d| d as u64).product();
                    let taken = out.shape[axis] as u64;
                    let (block, src_stride, src_offset, zero) = (taken * inner, x.meta.shape[axis] as u64 * inner, *start as u64 * inner, 0u64);
                    if len > 0 {
                        stream
                            .launch_builder(layout("copy_blocks")?)
                            .arg(&mut result)
                            .arg(&x.data)
                            .arg(&outer)
                            .arg(&block)
                            .arg(&block)
                            .arg(&zero)
                            .arg(&src_stride)
                            .arg(&src_offset)
                            .launch(grid_for(n))
                            .map_err(driver)?;
                    }
                }
                OpCall::Concat { axis } => {
                    let first = input(0)?;
                    let axis = resolve_axis(*axis, first.meta.shape.len())?;
                    let outer: u64 = first.meta.shape[..axis].iter().map(|&d| d as u64).product();
                    let dst_stride: u64 = out.shape[axis..].iter().map(|&d| d as u64).product();
                    let mut offset = 0u64;
                    for x in inputs {
                        let block: u64 = x.meta.shape[axis..].iter().map(|&d| d as u64).product();
                        let zero = 0u64;
                        if outer * block > 0 {
                            stream
                                .launch_builder(layout("copy_blocks")?)
                                .arg(&mut result)
                                .arg(&x.data)
                                .arg(&outer)
                                .arg(&block)
                                .arg(&dst_stride)
                                .arg(&offset)
                                .arg(&block)
                                .arg(&zero)
                                .launch(grid_for(outer * block))
                                .map_err(driver)?;
                        }
                        offset += block;
                    }
                }
                OpCall::Gather => {
                    let (table, ids) = (input(0)?, input(1)?);
                    let rows = table.meta.shape.first().copied().unwrap_or(0);
                    let row: u64 = table.meta.shape[1..].iter().map(|&d| d as u64).product();
                    // Indices are checked on the host before anything is written.
                    let host_ids = self.download(ids)?;
                    let host_ids = host_ids.as_i32().unwrap_or(&[]);
                    // The first bad index in row-major order, described as the CPU does.
                    if let Some((position, &bad)) = host_ids.iter().enumerate().find(|&(_, &i)| i < 0 || i as usize >= rows) {
                        return Err(OpError::gather_index(position, bad, &table.meta.shape).into());
                    }
                    let count = host_ids.len() as u64;
                    if len > 0 {
                        stream
                            .launch_builder(layout("gather")?)
                            .arg(&mut result)
                            .arg(&table.data)
                            .arg(&ids.data)
                            .arg(&count)
                            .arg(&row)
                            .launch(grid_for(n))
                            .map_err(driver)?;
                    }
                }
                OpCall::Rope { offset, theta } => {
                    let x = input(0)?;
                    let rank = x.meta.shape.len();
                    let (t_len, d) = (x.meta.shape[rank - 2] as u64, x.meta.shape[rank - 1] as u64);
                    // `OpCall::infer` checked rank >= 2, D even and the positions; an empty x has no kernel.
                    let rows = n.checked_div(d).unwrap_or(0);
                    if rows > 0 && d > 0 && t_len > 0 {
                        stream
                            .launch_builder(self.function("rope_f32")?)
                            .arg(&mut result)
                            .arg(&x.data)
                            .arg(&rows)
                            .arg(&t_len)
                            .arg(&d)
                            .arg(offset)
                            .arg(theta)
                            .launch(grid_for(rows * (d / 2)))
                            .map_err(driver)?;
                    }
                }
                OpCall::Attention { offset, scale } => {
                    let (q, k, v) = (input(0)?, input(1)?, input(2)?);
                    let dim = |t: &DeviceTensor, i: usize| t.meta.shape.get(i).copied().unwrap_or(0) as u64;
                    let (hq, t_len, d) = (dim(q, 0), dim(q, 1), dim(q, 2));
                    let (hkv, s_len) = (dim(k, 0), dim(k, 1));
                    // `OpCall::infer` checked the shapes: Hq a multiple of Hkv, S >= 1 for any row.
                    let group = hq.checked_div(hkv).unwrap_or(1).max(1);
                    let rows = hq * t_len;
                    if rows > 0 && d > 0 {
                        stream
                            .launch_builder(self.function("attention_f32")?)
                            .arg(&mut result)
                            .arg(&q.data)
                            .arg(&k.data)
                            .arg(&v.data)
                            .arg(&hq)
                            .arg(&t_len)
                            .arg(&s_len)
                            .arg(&d)
                            .arg(&group)
                            .arg(offset)
                            .arg(scale)
                            .launch(grid_for(rows * 32))
                            .map_err(driver)?;
                    }
                }
                OpCall::Cast { .. } => {
                    let x = input(0)?;
                    let kind: i32 = match x.meta.dtype {
                        DType::F16 => 0,
                        DType::BF16 => 1,
                        other => return Err(OpError::UnsupportedDType(format!("cast converts f16 and bf16, not {}", other.name())).into()),
                    };
                    if len > 0 {
                        stream
                            .launch_builder(self.function("cast_half_f32")?)
                            .arg(&mut result)
                            .arg(&x.data)
                            .arg(&n)
                            .arg(&kind)
                            .launch(grid_for(n))
                            .map_err(driver)?;
                    }
                }
                OpCall::Conv2d { stride_h, stride_w, pad_h, pad_w } => {
                    let (x, w) = (input(0)?, input(1)?);
                    let dims = |s: &[usize], i: usize| s.get(i).copied().unwrap_or(0) as i32;
                    let (xn, xc, xh, xw) = (dims(&x.meta.shape, 0), dims(&x.meta.shape, 1), dims(&x.meta.shape, 2), dims(&x.meta.shape, 3));
                    let (wo, wkh, wkw) = (dims(&w.meta.shape, 0), dims(&w.meta.shape, 2), dims(&w.meta.shape, 3));
                    let (ho, woo) = (dims(&out.shape, 2), dims(&out.shape, 3));
                    let (sh, sw, ph, pw) = (*stride_h as i32, *stride_w as i32, *pad_h as i32, *pad_w as i32);
                    let null = 0u64;
                    if len > 0 {
                        let mut builder = stream.launch_builder(self.function("conv2d_f32")?);
                        builder.arg(&mut result).arg(&x.data).arg(&w.data);
                        match inputs.get(2) {
                            Some(bias) => builder.arg(&bias.data),
                            None => builder.arg(&null),
                        };
                        builder.arg(&xn).arg(&xc).arg(&xh).arg(&xw).arg(&wo).arg(&wkh).arg(&wkw).arg(&ho).arg(&woo).arg(&sh).arg(&sw).arg(&ph).arg(&pw);
                        builder.launch(grid_for(n)).map_err(driver)?;
                    }
                }
                OpCall::Matmul => self.matmul(input(0)?, input(1)?, out, &mut result)?,
            }
        }
        Ok(DeviceTensor { meta: out.clone(), data: result })
    }
}

impl CudaJob {
    /// Batched matmul: one launch per up-to-65535 batches, each block a 128 x 128 output tile.
    fn matmul(&self, a: &DeviceTensor, b: &DeviceTensor, out: &TensorMeta, result: &mut CudaSlice<u32>) -> Result<(), ExecError> {
        let (ar, br, or) = (a.meta.shape.len(), b.meta.shape.len(), out.shape.len());
        let (m, k, n) = (a.meta.shape[ar - 2], a.meta.shape[ar - 1], b.meta.shape[br - 1]);
        let batch_shape = &out.shape[..or - 2];
        let batches: usize = batch_shape.iter().product();
        if batches == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // Every element is the empty chain: +0.0.
            self.stream.memset_zeros(result).map_err(driver)?;
            return Ok(());
        }
        let (sa, sb) = (broadcast_strides(&a.meta.shape[..ar - 2], batch_shape), broadcast_strides(&b.meta.shape[..br - 2], batch_shape));
        let mut offsets = Vec::with_capacity(batches * 3);
        for batch in 0..batches {
            let (mut rest, mut oa, mut ob) = (batch, 0usize, 0usize);
            for d in (0..batch_shape.len()).rev() {
                let index = rest % batch_shape[d];
                rest /= batch_shape[d];
                oa += index * sa[d];
                ob += index * sb[d];
            }
            offsets.extend([(oa * m * k) as u64, (ob * k * n) as u64, (batch * m * n) as u64]);
        }
        let offsets = self.stream.clone_htod(&offsets).map_err(driver)?;
        let (m32, n32, k32) = (m as i32, n as i32, k as i32);
        // Rows of A and B start 16-byte aligned when k and n are multiples of 4 (allocations are
        // 256-byte aligned and every batch offset is then a multiple of 4 elements).
        let function = self.function(if k % 4 == 0 && n % 4 == 0 { "matmul_f32_vec4" } else { "matmul_f32" })?;
        for first in (0..batches).step_by(65_535) {
            let count = (batches - first).min(65_535) as u32;
            let view = offsets.slice(first * 3..);
            let config = LaunchConfig { grid_dim: (n.div_ceil(128) as u32, m.div_ceil(128) as u32, count), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: `view` holds 3 offsets per batch in this launch; each offset plus the
            // matrix it starts is inside its allocation (computed from the checked shapes).
            unsafe {
                self.stream
                    .launch_builder(function)
                    .arg(&mut *result)
                    .arg(&a.data)
                    .arg(&b.data)
                    .arg(&view)
                    .arg(&m32)
                    .arg(&n32)
                    .arg(&k32)
                    .launch(config)
                    .map_err(driver)?;
            }
        }
        Ok(())
    }
}

/// 32-bit words holding `len` elements of `dtype`.
fn words_for(dtype: DType, len: usize) -> usize {
    if dtype.size() == 2 { len.div_ceil(2) } else { len }
}

fn unary_code(op: UnaryOp) -> i32 {
    match op {
        UnaryOp::Neg => 0,
        UnaryOp::Relu => 1,
        UnaryOp::Gelu => 2,
        UnaryOp::Sigmoid => 3,
        UnaryOp::Tanh => 4,
        UnaryOp::Exp => 5,
        UnaryOp::Log => 6,
        UnaryOp::Sqrt => 7,
        UnaryOp::Silu => 8,
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    }
}

#[cfg(test)]
mod tests;

//! The gridbox guest SDK: tensors for jobs, computed by the host's tensor bridge (CPU or GPU)
//! with results that are bit-identical on every backend.
//!
//! Tensors live on the host; a [`Tensor`] here is a handle plus its shape. Ops never copy data
//! through wasm memory: only [`Tensor::from_slice`] and [`Tensor::to_vec`] do. Dropping a
//! tensor frees it on the host. Every fallible call returns [`Result`]; the host's quota and
//! shape errors arrive as [`Error`] values the job can handle.
//!
//! ```no_run
//! use gridbox_sdk::Tensor;
//!
//! fn main() -> Result<(), gridbox_sdk::Error> {
//!     let x = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
//!     let w = Tensor::from_slice(&[0.5, -1.0, 0.25, 2.0], &[2, 2])?;
//!     let b = Tensor::from_slice(&[0.1, 0.2], &[2])?;
//!     let y = (&x.matmul(&w)? + &b)?.relu()?.softmax()?;
//!     println!("{:?} {:?}", y.shape(), y.to_vec()?);
//!     Ok(())
//! }
//! ```
//!
//! Build jobs for `wasm32-wasip1` and run them with `gridbox run` (the manifest needs the
//! `tensor` capability). On other targets every call returns [`Error::NotOnWasm`].

use std::fmt;

pub use gridbox_abi::{DType, ErrorCode, MAX_RANK, Op};

/// What a bridge call can return to the job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The result would pass the job's tensor memory quota (`limits.tensor_bytes`).
    TensorMemoryQuota,
    /// The job holds as many tensors as `limits.tensor_count` allows.
    TensorCountQuota,
    /// Input shapes do not fit the op.
    ShapeMismatch,
    /// The op does not take this dtype.
    UnsupportedDType,
    /// A parameter (axis, slice bound, index, stride...) is out of range.
    InvalidParameter,
    /// A code this SDK does not know (a newer host).
    Unknown(i32),
    /// The SDK was used wrongly (shape and data length disagree, a dimension above u32...).
    Usage(String),
    /// Not running on wasm, where the host provides the bridge.
    NotOnWasm,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unknown(code) => write!(f, "unknown bridge error code {code}"),
            Error::Usage(message) => write!(f, "{message}"),
            Error::NotOnWasm => write!(f, "the tensor bridge exists only inside a gridbox job (wasm32-wasip1)"),
            other => {
                let code = match other {
                    Error::TensorMemoryQuota => ErrorCode::TensorMemoryQuota,
                    Error::TensorCountQuota => ErrorCode::TensorCountQuota,
                    Error::ShapeMismatch => ErrorCode::ShapeMismatch,
                    Error::UnsupportedDType => ErrorCode::UnsupportedDType,
                    _ => ErrorCode::InvalidParameter,
                };
                write!(f, "{}", code.describe())
            }
        }
    }
}

impl std::error::Error for Error {}

/// The SDK's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))] // The native twin never calls the host.
fn check(code: i32) -> Result<()> {
    match ErrorCode::from_raw(code) {
        Some(ErrorCode::Ok) => Ok(()),
        Some(ErrorCode::TensorMemoryQuota) => Err(Error::TensorMemoryQuota),
        Some(ErrorCode::TensorCountQuota) => Err(Error::TensorCountQuota),
        Some(ErrorCode::ShapeMismatch) => Err(Error::ShapeMismatch),
        Some(ErrorCode::UnsupportedDType) => Err(Error::UnsupportedDType),
        Some(ErrorCode::InvalidParameter) => Err(Error::InvalidParameter),
        _ => Err(Error::Unknown(code)),
    }
}

/// The calls into the host. On wasm they are the bridge's imports; elsewhere a twin that
/// returns [`Error::NotOnWasm`], so the SDK builds (and documents) on any target.
#[cfg(target_family = "wasm")]
#[allow(unsafe_code)]
mod sys {
    use super::{Op, Result, check};
    use gridbox_abi::guest;

    pub(crate) fn create(dtype: u32, shape: &[u32], data: &[u8]) -> Result<u32> {
        let mut handle = 0u32;
        // SAFETY: every pointer comes from a live slice or local of the stated length; the host
        // bounds-checks them again against our memory.
        check(unsafe { guest::create(dtype, shape.as_ptr(), shape.len() as u32, data.as_ptr(), data.len() as u32, &mut handle) })?;
        Ok(handle)
    }

    pub(crate) fn read(handle: u32, out: &mut [u8]) -> Result<()> {
        // SAFETY: `out` is a live, writable slice of the stated length.
        check(unsafe { guest::read(handle, out.as_mut_ptr(), out.len() as u32) })
    }

    pub(crate) fn info(handle: u32, shape: &mut [u32]) -> Result<(u32, usize)> {
        let (mut dtype, mut rank) = (0u32, 0u32);
        // SAFETY: all three out-pointers are live locals or a live slice of the stated length.
        check(unsafe { guest::info(handle, &mut dtype, shape.as_mut_ptr(), shape.len() as u32, &mut rank) })?;
        Ok((dtype, rank as usize))
    }

    pub(crate) fn free(handle: u32) {
        // SAFETY: no pointers. A handle is freed once: only `Tensor::drop` calls this.
        let _ = unsafe { guest::free(handle) };
    }

    pub(crate) fn op(op: Op, inputs: &[u32], params: &[i64]) -> Result<u32> {
        let mut handle = 0u32;
        // SAFETY: the slices are live for the call and their lengths are passed with them.
        check(unsafe { guest::call_op(op, inputs.as_ptr(), inputs.len() as u32, params.as_ptr(), params.len() as u32, &mut handle) })?;
        Ok(handle)
    }
}

#[cfg(not(target_family = "wasm"))]
mod sys {
    use super::{Error, Op, Result};

    pub(crate) fn create(_: u32, _: &[u32], _: &[u8]) -> Result<u32> {
        Err(Error::NotOnWasm)
    }
    pub(crate) fn read(_: u32, _: &mut [u8]) -> Result<()> {
        Err(Error::NotOnWasm)
    }
    pub(crate) fn info(_: u32, _: &mut [u32]) -> Result<(u32, usize)> {
        Err(Error::NotOnWasm)
    }
    pub(crate) fn free(_: u32) {}
    pub(crate) fn op(_: Op, _: &[u32], _: &[i64]) -> Result<u32> {
        Err(Error::NotOnWasm)
    }
}

/// A tensor held by the host.
#[derive(Debug)]
pub struct Tensor {
    handle: u32,
    dtype: DType,
    shape: Vec<usize>,
}

impl Drop for Tensor {
    fn drop(&mut self) {
        sys::free(self.handle);
    }
}

fn shape_u32(shape: &[usize]) -> Result<Vec<u32>> {
    if shape.len() > MAX_RANK {
        return Err(Error::Usage(format!("rank {} is above the bridge's maximum of {MAX_RANK}", shape.len())));
    }
    shape.iter().map(|&d| u32::try_from(d).map_err(|_| Error::Usage(format!("dimension {d} does not fit in u32")))).collect()
}

fn check_len(len: usize, shape: &[usize]) -> Result<()> {
    let expected = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(len) {
        return Err(Error::Usage(format!("{len} elements do not fill shape {shape:?}")));
    }
    Ok(())
}

impl Tensor {
    fn from_handle(handle: u32) -> Result<Tensor> {
        let mut dims = [0u32; MAX_RANK];
        let (dtype, rank) = match sys::info(handle, &mut dims) {
            Ok(info) => info,
            Err(e) => {
                sys::free(handle);
                return Err(e);
            }
        };
        let dtype = DType::from_code(dtype).unwrap_or(DType::F32);
        Ok(Tensor { handle, dtype, shape: dims[..rank.min(MAX_RANK)].iter().map(|&d| d as usize).collect() })
    }

    /// A new `f32` tensor with `shape`, holding `data` in row-major order.
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_handle(sys::create(DType::F32.code(), &shape_u32(shape)?, &bytes)?)
    }

    /// A new `i32` tensor (indices for [`Tensor::gather`]).
    pub fn from_i32(data: &[i32], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_handle(sys::create(DType::I32.code(), &shape_u32(shape)?, &bytes)?)
    }

    /// A new `f32` scalar (shape `[]`), handy for broadcasting.
    pub fn scalar(value: f32) -> Result<Tensor> {
        Tensor::from_slice(&[value], &[])
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        let len = self.len() * self.dtype.size();
        let mut bytes = vec![0u8; len];
        sys::read(self.handle, &mut bytes)?;
        Ok(bytes)
    }

    /// Copies an `f32` tensor's elements out of the host.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if self.dtype != DType::F32 {
            return Err(Error::UnsupportedDType);
        }
        Ok(self.bytes()?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Copies an `i32` tensor's elements out of the host.
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        if self.dtype != DType::I32 {
            return Err(Error::UnsupportedDType);
        }
        Ok(self.bytes()?.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn op(op: Op, inputs: &[&Tensor], params: &[i64]) -> Result<Tensor> {
        let handles: Vec<u32> = inputs.iter().map(|t| t.handle).collect();
        Tensor::from_handle(sys::op(op, &handles, params)?)
    }

    /// Matrix product `[..., M, K] x [..., K, N] -> [..., M, N]`, batch dims broadcast.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        Tensor::op(Op::Matmul, &[self, other], &[])
    }

    /// `self + other`, broadcast.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        Tensor::op(Op::Add, &[self, other], &[])
    }

    /// `self - other`, broadcast.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        Tensor::op(Op::Sub, &[self, other], &[])
    }

    /// `self * other` elementwise, broadcast.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        Tensor::op(Op::Mul, &[self, other], &[])
    }

    /// `self / other` elementwise, broadcast.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        Tensor::op(Op::Div, &[self, other], &[])
    }

    /// `-self`.
    pub fn neg(&self) -> Result<Tensor> {
        Tensor::op(Op::Neg, &[self], &[])
    }

    /// `max(x, 0)`.
    pub fn relu(&self) -> Result<Tensor> {
        Tensor::op(Op::Relu, &[self], &[])
    }

    /// GELU (tanh form).
    pub fn gelu(&self) -> Result<Tensor> {
        Tensor::op(Op::Gelu, &[self], &[])
    }

    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Result<Tensor> {
        Tensor::op(Op::Sigmoid, &[self], &[])
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor> {
        Tensor::op(Op::Tanh, &[self], &[])
    }

    /// `e^x`.
    pub fn exp(&self) -> Result<Tensor> {
        Tensor::op(Op::Exp, &[self], &[])
    }

    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        Tensor::op(Op::Log, &[self], &[])
    }

    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        Tensor::op(Op::Sqrt, &[self], &[])
    }

    /// Softmax over the last axis.
    pub fn softmax(&self) -> Result<Tensor> {
        Tensor::op(Op::Softmax, &[self], &[])
    }

    /// Layer norm over the last axis with scale `gamma` and shift `beta` (both `[last dim]`).
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        Tensor::op(Op::LayerNorm, &[self, gamma, beta], &[eps.to_bits() as i64])
    }

    /// RMS norm over the last axis with scale `gamma` (`[last dim]`).
    pub fn rms_norm(&self, gamma: &Tensor, eps: f32) -> Result<Tensor> {
        Tensor::op(Op::RmsNorm, &[self, gamma], &[eps.to_bits() as i64])
    }

    /// Sum over `axis` (negative counts from the end).
    pub fn sum(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        Tensor::op(Op::Sum, &[self], &[axis as i64, keepdims as i64])
    }

    /// Mean over `axis`.
    pub fn mean(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        Tensor::op(Op::Mean, &[self], &[axis as i64, keepdims as i64])
    }

    /// Maximum over `axis`.
    pub fn max(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        Tensor::op(Op::Max, &[self], &[axis as i64, keepdims as i64])
    }

    /// Reorders axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let params: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        Tensor::op(Op::Permute, &[self], &params)
    }

    /// Swaps the last two axes.
    pub fn transpose(&self) -> Result<Tensor> {
        let rank = self.shape.len();
        if rank < 2 {
            return Err(Error::ShapeMismatch);
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 2, rank - 1);
        self.permute(&perm)
    }

    /// The same elements with new dimensions.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let params: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        Tensor::op(Op::Reshape, &[self], &params)
    }

    /// Elements `start..end` along `axis`.
    pub fn slice(&self, axis: isize, start: usize, end: usize) -> Result<Tensor> {
        Tensor::op(Op::Slice, &[self], &[axis as i64, start as i64, end as i64])
    }

    /// Concatenates `tensors` along `axis`.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        Tensor::op(Op::Concat, tensors, &[axis as i64])
    }

    /// Rows of this table picked by `indices` (i32): `[V, D...]` with indices `[I...]` gives
    /// `[I..., D...]`. An embedding lookup.
    pub fn gather(&self, indices: &Tensor) -> Result<Tensor> {
        Tensor::op(Op::Gather, &[self, indices], &[])
    }

    /// 2-D convolution of this NCHW input with `weight` (OIHW) and optional `bias` (`[O]`).
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        let params = [stride.0 as i64, stride.1 as i64, padding.0 as i64, padding.1 as i64];
        match bias {
            Some(bias) => Tensor::op(Op::Conv2d, &[self, weight, bias], &params),
            None => Tensor::op(Op::Conv2d, &[self, weight], &params),
        }
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;

            fn $method(self, other: &Tensor) -> Result<Tensor> {
                Tensor::$method(self, other)
            }
        }
    };
}

binary_operator!(Add, add);
binary_operator!(Sub, sub);
binary_operator!(Mul, mul);
binary_operator!(Div, div);

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;

    fn neg(self) -> Result<Tensor> {
        Tensor::neg(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_wasm_every_call_says_so() {
        assert_eq!(Tensor::from_slice(&[1.0], &[1]).unwrap_err(), Error::NotOnWasm);
        assert!(Tensor::from_slice(&[1.0, 2.0], &[3]).unwrap_err().to_string().contains("do not fill"));
    }
}

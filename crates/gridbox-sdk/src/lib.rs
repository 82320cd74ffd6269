//! The gridbox guest SDK: tensors for jobs, computed by the host's tensor bridge (CPU or GPU)
//! with results that are bit-identical on every backend.
//!
//! Tensors live on the host; a [`Tensor`] here is a handle plus its shape. Ops never copy data
//! through wasm memory: only [`Tensor::from_slice`] and [`Tensor::to_vec`] do. Dropping a
//! tensor frees it on the host. Every fallible call returns [`Result`]; the host's quota and
//! shape errors arrive as [`Error`] values the job can handle, each with the host's words for
//! what failed (`shape mismatch: matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims
//! 32 and 16 differ`).
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
//! `tensor` capability). The ops newer than the bridge's first release ([`Tensor::silu`],
//! [`Tensor::rope`], [`Tensor::argmax`], [`Tensor::cast`], [`Tensor::attention`]) are granted
//! only when the manifest names them in `[tensor] ops`. On other targets every call returns [`Error::NotOnWasm`].

use std::fmt;

/// Element types of tensors: [`DType::F32`] for values, [`DType::I32`] for gather indices,
/// [`DType::F16`] and [`DType::BF16`] for weights stored at half precision
/// ([`Tensor::from_f16_bytes`], [`Tensor::cast`]).
///
/// ```
/// use gridbox_sdk::DType;
///
/// assert_eq!(DType::F32.name(), "f32");
/// assert_eq!(DType::from_code(DType::I32.code()), Some(DType::I32));
/// ```
#[doc(inline)]
pub use gridbox_abi::DType;
/// The codes bridge calls return; [`Error::code`] gives the one behind an error.
///
/// ```
/// use gridbox_sdk::ErrorCode;
///
/// assert_eq!(ErrorCode::from_raw(3), Some(ErrorCode::ShapeMismatch));
/// assert_eq!(ErrorCode::ShapeMismatch.describe(), "shape mismatch");
/// ```
#[doc(inline)]
pub use gridbox_abi::ErrorCode;
/// The most dimensions a tensor may have.
///
/// ```
/// use gridbox_sdk::{Error, MAX_RANK, Tensor};
///
/// let too_deep = vec![1; MAX_RANK + 1];
/// assert!(matches!(Tensor::from_slice(&[1.0], &too_deep), Err(Error::Usage(_))));
/// ```
#[doc(inline)]
pub use gridbox_abi::MAX_RANK;
/// The ops of the bridge, one import each; a manifest's `tensor.ops` grants them by
/// [`Op::name`].
///
/// ```
/// use gridbox_sdk::Op;
///
/// assert_eq!(Op::Matmul.name(), "matmul");
/// assert_eq!(Op::from_name("layer_norm"), Some(Op::LayerNorm));
/// ```
#[doc(inline)]
pub use gridbox_abi::Op;

/// What a bridge call can return to the job.
///
/// The host's refusals ([`Error::ShapeMismatch`] and the others with a `detail`) carry the
/// host's own words for what failed: the op and the shapes or parameters involved, as
/// `matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims 32 and 16 differ`. The SDK
/// fetches them from the host right after the call fails. They depend only on the job's own
/// calls, so printing them keeps the job reproducible. [`Error::code`] and [`Error::detail`] give
/// the parts; `Display` prints both.
///
/// ```no_run
/// use gridbox_sdk::{Error, Tensor};
///
/// let a = Tensor::from_slice(&[0.0; 64 * 32], &[64, 32])?;
/// let b = Tensor::from_slice(&[0.0; 16 * 4], &[16, 4])?;
/// match a.matmul(&b) {
///     Err(Error::ShapeMismatch { detail }) => eprintln!("cannot multiply: {detail}"),
///     Err(other) => return Err(other),
///     Ok(product) => println!("{:?}", product.shape()),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The result would pass the job's tensor memory quota (`limits.tensor_bytes`).
    TensorMemoryQuota {
        /// The host's words: the bytes needed, those in use and the limit.
        detail: String,
    },
    /// The job holds as many tensors as `limits.tensor_count` allows.
    TensorCountQuota {
        /// The host's words: the tensors held and the limit.
        detail: String,
    },
    /// Input shapes do not fit the op.
    ShapeMismatch {
        /// The op and the shapes that do not fit.
        detail: String,
    },
    /// The op does not take this dtype.
    UnsupportedDType {
        /// The op and the input of the wrong dtype.
        detail: String,
    },
    /// A parameter (axis, slice bound, index, stride...) is out of range.
    InvalidParameter {
        /// The op, the parameter and its range.
        detail: String,
    },
    /// A code this SDK does not know (a newer host).
    Unknown {
        /// The raw code.
        code: i32,
        /// The host's words for it.
        detail: String,
    },
    /// The SDK was used wrongly (shape and data length disagree, a dimension above u32...).
    Usage(String),
    /// Not running on wasm, where the host provides the bridge.
    NotOnWasm,
}

impl Error {
    /// The error for a code a bridge call returned, with the host's detail for it.
    #[cfg_attr(not(target_family = "wasm"), allow(dead_code))] // The native twin never calls the host.
    fn from_code(code: i32, detail: String) -> Error {
        match ErrorCode::from_raw(code) {
            Some(ErrorCode::TensorMemoryQuota) => Error::TensorMemoryQuota { detail },
            Some(ErrorCode::TensorCountQuota) => Error::TensorCountQuota { detail },
            Some(ErrorCode::ShapeMismatch) => Error::ShapeMismatch { detail },
            Some(ErrorCode::UnsupportedDType) => Error::UnsupportedDType { detail },
            Some(ErrorCode::InvalidParameter) => Error::InvalidParameter { detail },
            _ => Error::Unknown { code, detail },
        }
    }

    /// The bridge's code for this error, or `None` for the SDK's own errors ([`Error::Usage`],
    /// [`Error::NotOnWasm`]) and codes this SDK does not know.
    ///
    /// ```
    /// use gridbox_sdk::{Error, ErrorCode};
    ///
    /// let error = Error::ShapeMismatch { detail: "matmul: ...".into() };
    /// assert_eq!(error.code(), Some(ErrorCode::ShapeMismatch));
    /// assert_eq!(Error::NotOnWasm.code(), None);
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::TensorMemoryQuota { .. } => Some(ErrorCode::TensorMemoryQuota),
            Error::TensorCountQuota { .. } => Some(ErrorCode::TensorCountQuota),
            Error::ShapeMismatch { .. } => Some(ErrorCode::ShapeMismatch),
            Error::UnsupportedDType { .. } => Some(ErrorCode::UnsupportedDType),
            Error::InvalidParameter { .. } => Some(ErrorCode::InvalidParameter),
            Error::Unknown { .. } | Error::Usage(_) | Error::NotOnWasm => None,
        }
    }

    /// What failed, in the host's words (`slice: axis 3 is out of range for a rank-2 tensor
    /// [2, 3]: its axes are -2..=1`), or the SDK's for its own errors; empty when there is none
    /// (a host that kept no detail, [`Error::NotOnWasm`]).
    ///
    /// ```
    /// use gridbox_sdk::Error;
    ///
    /// let error = Error::InvalidParameter { detail: "slice: axis 3 is out of range".into() };
    /// assert_eq!(error.detail(), "slice: axis 3 is out of range");
    /// assert_eq!(error.to_string(), "invalid parameter: slice: axis 3 is out of range");
    /// ```
    pub fn detail(&self) -> &str {
        match self {
            Error::TensorMemoryQuota { detail }
            | Error::TensorCountQuota { detail }
            | Error::ShapeMismatch { detail }
            | Error::UnsupportedDType { detail }
            | Error::InvalidParameter { detail }
            | Error::Unknown { detail, .. } => detail,
            Error::Usage(message) => message,
            Error::NotOnWasm => "",
        }
    }
}

/// `shape mismatch: matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims 32 and 16
/// differ`: what the code means, then the detail.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Error::Usage(message) => return f.write_str(message),
            Error::NotOnWasm => return f.write_str("the tensor bridge exists only inside a gridbox job (wasm32-wasip1)"),
            Error::Unknown { code, .. } => format!("unknown bridge error code {code}"),
            other => other.code().map(ErrorCode::describe).unwrap_or("bridge error").to_string(),
        };
        match self.detail() {
            "" => f.write_str(&what),
            detail => write!(f, "{what}: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

/// The SDK's result type: every fallible call returns one.
///
/// ```no_run
/// fn double(x: &gridbox_sdk::Tensor) -> gridbox_sdk::Result<gridbox_sdk::Tensor> {
///     x + x
/// }
/// ```
pub type Result<T> = std::result::Result<T, Error>;

/// `Tensor::op` through the import of op `$variant` alone: a job imports only the ops it calls,
/// so one that calls only the first release's ops runs under a manifest that does not list
/// `tensor.ops` (which grants only those), whatever else the SDK offers.
#[cfg(target_family = "wasm")]
macro_rules! call_op {
    ($variant:ident, $inputs:expr, $params:expr) => {
        Tensor::op(gridbox_abi::guest::imports::$variant as crate::sys::Import, $inputs, $params)
    };
}

/// Off wasm there is no import to name (every call returns [`Error::NotOnWasm`]); the op is
/// still checked to be one.
#[cfg(not(target_family = "wasm"))]
macro_rules! call_op {
    ($variant:ident, $inputs:expr, $params:expr) => {{
        let _ = gridbox_abi::Op::$variant;
        Tensor::op((), $inputs, $params)
    }};
}

/// The calls into the host. On wasm they are the bridge's imports; elsewhere a twin that
/// returns [`Error::NotOnWasm`], so the SDK builds (and documents) on any target.
#[cfg(target_family = "wasm")]
#[allow(unsafe_code)]
mod sys {
    use super::{Error, ErrorCode, Result};
    use gridbox_abi::guest;

    /// `Ok` for success; else the error, with the host's detail fetched at once (the next
    /// refused call would replace it).
    fn check(code: i32) -> Result<()> {
        if code == ErrorCode::Ok.raw() { Ok(()) } else { Err(Error::from_code(code, last_error())) }
    }

    /// The host's detail of the job's most recent refused call.
    fn last_error() -> String {
        // Details are short; a longer one is fetched again into a buffer of its size.
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is a live, writable array of the stated length.
        let len = usize::try_from(unsafe { guest::last_error(buf.as_mut_ptr(), buf.len() as u32) }).unwrap_or(0);
        if len <= buf.len() {
            return String::from_utf8_lossy(&buf[..len]).into_owned();
        }
        let mut long = vec![0u8; len];
        // SAFETY: `long` is a live, writable buffer of the stated length.
        let again = usize::try_from(unsafe { guest::last_error(long.as_mut_ptr(), long.len() as u32) }).unwrap_or(0);
        long.truncate(again.min(len));
        String::from_utf8_lossy(&long).into_owned()
    }

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

    /// One op's import ([`call_op!`] names it).
    pub(crate) type Import = guest::OpImport;

    pub(crate) fn op(import: Import, inputs: &[u32], params: &[i64]) -> Result<u32> {
        let mut handle = 0u32;
        // SAFETY: `import` is one of the bridge's op imports (their signature is `OpImport`);
        // the slices are live for the call and their lengths are passed with them.
        check(unsafe { import(inputs.as_ptr(), inputs.len() as u32, params.as_ptr(), params.len() as u32, &mut handle) })?;
        Ok(handle)
    }
}

#[cfg(not(target_family = "wasm"))]
mod sys {
    use super::{Error, Result};

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
    /// Nothing to call off wasm.
    pub(crate) type Import = ();

    pub(crate) fn op(_: Import, _: &[u32], _: &[i64]) -> Result<u32> {
        Err(Error::NotOnWasm)
    }
}

/// A tensor held by the host: a handle, its dtype and its shape. The elements stay on the host
/// until [`Tensor::to_vec`] copies them out; dropping the tensor frees them there.
///
/// Ops are methods (and `+ - * /` and unary `-` on references); each returns a new tensor.
///
/// ```no_run
/// use gridbox_sdk::Tensor;
///
/// let x = Tensor::from_slice(&[1.0, -2.0, 3.0, -4.0], &[2, 2])?;
/// let y = (&x * &x)?.sqrt()?;
/// assert_eq!(y.to_vec()?, [1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), gridbox_sdk::Error>(())
/// ```
#[derive(Debug)]
pub struct Tensor {
    handle: u32,
    dtype: DType,
    shape: Vec<usize>,
}

/// Frees the tensor on the host, giving its bytes back to `limits.tensor_bytes` and its place
/// back to `limits.tensor_count`.
///
/// ```no_run
/// use gridbox_sdk::Tensor;
///
/// let big = Tensor::from_slice(&vec![0.0; 1 << 20], &[1 << 20])?;
/// drop(big); // the host's memory for it is free again
/// # Ok::<(), gridbox_sdk::Error>(())
/// ```
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
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when `data` does not fill `shape` or the shape is not one the bridge
    /// takes; [`Error::TensorMemoryQuota`] or [`Error::TensorCountQuota`] when the job's limits
    /// leave no room.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let m = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(m.shape(), [2, 3]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_handle(sys::create(DType::F32.code(), &shape_u32(shape)?, &bytes)?)
    }

    /// A new `i32` tensor (indices for [`Tensor::gather`]).
    ///
    /// # Errors
    ///
    /// As [`Tensor::from_slice`].
    ///
    /// ```no_run
    /// use gridbox_sdk::{DType, Tensor};
    ///
    /// let ids = Tensor::from_i32(&[3, 1, 4], &[3])?;
    /// assert_eq!(ids.dtype(), DType::I32);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn from_i32(data: &[i32], shape: &[usize]) -> Result<Tensor> {
        check_len(data.len(), shape)?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        Tensor::from_handle(sys::create(DType::I32.code(), &shape_u32(shape)?, &bytes)?)
    }

    /// A new `f32` scalar (shape `[]`), handy for broadcasting.
    ///
    /// # Errors
    ///
    /// As [`Tensor::from_slice`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[1.0, 2.0], &[2])?;
    /// let half = (&x * &Tensor::scalar(0.5)?)?;
    /// assert_eq!(half.to_vec()?, [0.5, 1.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn scalar(value: f32) -> Result<Tensor> {
        Tensor::from_slice(&[value], &[])
    }

    fn bytes(&self) -> Result<Vec<u8>> {
        let len = self.len() * self.dtype.size();
        let mut bytes = vec![0u8; len];
        sys::read(self.handle, &mut bytes)?;
        Ok(bytes)
    }

    /// The SDK's refusal of a read of the wrong dtype.
    fn wrong_dtype(&self, call: &str, other: &str) -> Error {
        Error::UnsupportedDType { detail: format!("{call}: the tensor is {} {:?}; read it with {other}", self.dtype.name(), self.shape) }
    }

    /// Copies an `f32` tensor's elements out of the host, in row-major order.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDType`] for an `i32` tensor (use [`Tensor::to_vec_i32`]) or an
    /// `f16` or `bf16` one ([`Tensor::cast`] it, or use [`Tensor::to_le_bytes`]).
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[-1.0, 2.0], &[2])?;
    /// assert_eq!(x.relu()?.to_vec()?, [0.0, 2.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if self.dtype != DType::F32 {
            return Err(self.wrong_dtype("to_vec", "to_vec_i32"));
        }
        Ok(self.bytes()?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// Copies an `i32` tensor's elements out of the host, in row-major order.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDType`] for an `f32` tensor (use [`Tensor::to_vec`]).
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let ids = Tensor::from_i32(&[0, 1, 2, 3], &[4])?;
    /// assert_eq!(ids.reshape(&[2, 2])?.to_vec_i32()?, [0, 1, 2, 3]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        if self.dtype != DType::I32 {
            return Err(self.wrong_dtype("to_vec_i32", "to_vec"));
        }
        Ok(self.bytes()?.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// The dimensions, outermost first (`[]` for a scalar).
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[0.0; 24], &[2, 3, 4])?;
    /// assert_eq!(x.shape(), [2, 3, 4]);
    /// assert_eq!(x.sum(1, false)?.shape(), [2, 4]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    ///
    /// ```no_run
    /// use gridbox_sdk::{DType, Tensor};
    ///
    /// assert_eq!(Tensor::scalar(1.0)?.dtype(), DType::F32);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements: the product of the dims (1 for a scalar).
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// assert_eq!(Tensor::from_slice(&[0.0; 6], &[2, 3])?.len(), 6);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements (some dim is 0).
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3])?;
    /// assert!(x.slice(0, 1, 1)?.is_empty());
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `import` (an op's own import, from [`call_op!`]) on `inputs` and `params`.
    fn op(import: sys::Import, inputs: &[&Tensor], params: &[i64]) -> Result<Tensor> {
        let handles: Vec<u32> = inputs.iter().map(|t| t.handle).collect();
        Tensor::from_handle(sys::op(import, &handles, params)?)
    }

    /// Matrix product `[..., M, K] x [..., K, N] -> [..., M, N]`, batch dims broadcast.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when the inner dims differ, a rank is below 2 or the batch dims
    /// do not broadcast; [`Error::UnsupportedDType`] for `i32` inputs; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let a = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// let b = Tensor::from_slice(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
    /// assert_eq!(a.matmul(&b)?.to_vec()?, [4.0, 5.0, 10.0, 11.0]);
    /// // [2, 3] x [2, 3]: "shape mismatch: matmul: shapes [2, 3] and [2, 3] do not fit: ..."
    /// assert!(a.matmul(&a).is_err());
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        call_op!(Matmul, &[self, other], &[])
    }

    /// `self + other`, broadcast as NumPy does (also the `+` operator on references).
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when the shapes do not broadcast; [`Error::UnsupportedDType`]
    /// for `i32` inputs; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let m = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let row = Tensor::from_slice(&[10.0, 20.0], &[2])?;
    /// assert_eq!(m.add(&row)?.to_vec()?, [11.0, 22.0, 13.0, 24.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        call_op!(Add, &[self, other], &[])
    }

    /// `self - other`, broadcast (also the `-` operator on references).
    ///
    /// # Errors
    ///
    /// As [`Tensor::add`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[3.0, 5.0], &[2])?;
    /// assert_eq!(x.sub(&Tensor::scalar(1.0)?)?.to_vec()?, [2.0, 4.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        call_op!(Sub, &[self, other], &[])
    }

    /// `self * other` elementwise, broadcast (also the `*` operator on references).
    ///
    /// # Errors
    ///
    /// As [`Tensor::add`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[3.0, 5.0], &[2])?;
    /// assert_eq!(x.mul(&x)?.to_vec()?, [9.0, 25.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        call_op!(Mul, &[self, other], &[])
    }

    /// `self / other` elementwise, broadcast (also the `/` operator on references).
    ///
    /// # Errors
    ///
    /// As [`Tensor::add`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[3.0, 5.0], &[2])?;
    /// assert_eq!(x.div(&Tensor::scalar(2.0)?)?.to_vec()?, [1.5, 2.5]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        call_op!(Div, &[self, other], &[])
    }

    /// `-self` (also the unary `-` operator on a reference).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDType`] for an `i32` tensor; the quota errors. The same for every
    /// elementwise op of one input below.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[1.0, -2.0], &[2])?;
    /// assert_eq!(x.neg()?.to_vec()?, [-1.0, 2.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn neg(&self) -> Result<Tensor> {
        call_op!(Neg, &[self], &[])
    }

    /// `max(x, 0)`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[1.0, -2.0], &[2])?;
    /// assert_eq!(x.relu()?.to_vec()?, [1.0, 0.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn relu(&self) -> Result<Tensor> {
        call_op!(Relu, &[self], &[])
    }

    /// GELU, tanh form: `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[0.0, 1.0], &[2])?;
    /// assert_eq!(x.gelu()?.to_vec()?[0], 0.0);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn gelu(&self) -> Result<Tensor> {
        call_op!(Gelu, &[self], &[])
    }

    /// Logistic sigmoid, `1 / (1 + e^-x)`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// assert_eq!(Tensor::scalar(0.0)?.sigmoid()?.to_vec()?, [0.5]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn sigmoid(&self) -> Result<Tensor> {
        call_op!(Sigmoid, &[self], &[])
    }

    /// Hyperbolic tangent.
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// assert_eq!(Tensor::scalar(0.0)?.tanh()?.to_vec()?, [0.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn tanh(&self) -> Result<Tensor> {
        call_op!(Tanh, &[self], &[])
    }

    /// `e^x`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// assert_eq!(Tensor::scalar(0.0)?.exp()?.to_vec()?, [1.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn exp(&self) -> Result<Tensor> {
        call_op!(Exp, &[self], &[])
    }

    /// Natural logarithm (NaN below 0, -inf at 0).
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// assert_eq!(Tensor::scalar(1.0)?.log()?.to_vec()?, [0.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn log(&self) -> Result<Tensor> {
        call_op!(Log, &[self], &[])
    }

    /// Square root (NaN below 0).
    ///
    /// # Errors
    ///
    /// As [`Tensor::neg`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// assert_eq!(Tensor::scalar(9.0)?.sqrt()?.to_vec()?, [3.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn sqrt(&self) -> Result<Tensor> {
        call_op!(Sqrt, &[self], &[])
    }

    /// Softmax over the last axis.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] for a scalar; as [`Tensor::neg`] otherwise.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let logits = Tensor::from_slice(&[1.0, 1.0, 5.0, 5.0], &[2, 2])?;
    /// assert_eq!(logits.softmax()?.to_vec()?, [0.5, 0.5, 0.5, 0.5]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn softmax(&self) -> Result<Tensor> {
        call_op!(Softmax, &[self], &[])
    }

    /// Layer norm over the last axis with scale `gamma` and shift `beta` (both `[last dim]`):
    /// `(x - mean) / sqrt(variance + eps) * gamma + beta`.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when `gamma` or `beta` is not `[last dim]`;
    /// [`Error::InvalidParameter`] when `eps` is negative or not finite; as [`Tensor::neg`]
    /// otherwise.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[1.0, 3.0], &[1, 2])?;
    /// let (gamma, beta) = (Tensor::from_slice(&[1.0, 1.0], &[2])?, Tensor::from_slice(&[0.0, 0.0], &[2])?);
    /// let y = x.layer_norm(&gamma, &beta, 0.0)?;
    /// assert_eq!(y.to_vec()?, [-1.0, 1.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn layer_norm(&self, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
        call_op!(LayerNorm, &[self, gamma, beta], &[eps.to_bits() as i64])
    }

    /// RMS norm over the last axis with scale `gamma` (`[last dim]`):
    /// `x / sqrt(mean(x^2) + eps) * gamma`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::layer_norm`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[3.0, -3.0], &[2])?;
    /// let gamma = Tensor::from_slice(&[1.0, 2.0], &[2])?;
    /// assert_eq!(x.rms_norm(&gamma, 0.0)?.to_vec()?, [1.0, -2.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn rms_norm(&self, gamma: &Tensor, eps: f32) -> Result<Tensor> {
        call_op!(RmsNorm, &[self, gamma], &[eps.to_bits() as i64])
    }

    /// Sum over `axis` (negative counts from the end); `keepdims` keeps it as a dim of 1.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `axis` is out of range; as [`Tensor::neg`] otherwise.
    /// The same for [`Tensor::mean`] and [`Tensor::max`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let m = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(m.sum(0, false)?.to_vec()?, [4.0, 6.0]);
    /// assert_eq!(m.sum(-1, true)?.shape(), [2, 1]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn sum(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        call_op!(Sum, &[self], &[axis as i64, keepdims as i64])
    }

    /// Mean over `axis`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::sum`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let m = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(m.mean(1, false)?.to_vec()?, [1.5, 3.5]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn mean(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        call_op!(Mean, &[self], &[axis as i64, keepdims as i64])
    }

    /// Maximum over `axis`.
    ///
    /// # Errors
    ///
    /// As [`Tensor::sum`].
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let m = Tensor::from_slice(&[1.0, 5.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(m.max(0, false)?.to_vec()?, [3.0, 5.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn max(&self, axis: isize, keepdims: bool) -> Result<Tensor> {
        call_op!(Max, &[self], &[axis as i64, keepdims as i64])
    }

    /// Reorders axes: output axis `i` is input axis `perm[i]`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `perm` is not a permutation of `0..rank`; the quota
    /// errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[0.0; 24], &[2, 3, 4])?;
    /// assert_eq!(x.permute(&[2, 0, 1])?.shape(), [4, 2, 3]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let params: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        call_op!(Permute, &[self], &params)
    }

    /// Swaps the last two axes.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] below rank 2; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let m = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// let t = m.transpose()?;
    /// assert_eq!((t.shape(), t.to_vec()?), (&[3, 2][..], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn transpose(&self) -> Result<Tensor> {
        let rank = self.shape.len();
        if rank < 2 {
            return Err(Error::ShapeMismatch { detail: format!("transpose: needs rank >= 2, got {:?}", self.shape) });
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 2, rank - 1);
        self.permute(&perm)
    }

    /// The same elements with new dimensions.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when the element count changes; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let x = Tensor::from_slice(&[0.0; 6], &[6])?;
    /// assert_eq!(x.reshape(&[2, 3])?.shape(), [2, 3]);
    /// assert!(x.reshape(&[4, 2]).is_err()); // "reshape: cannot reshape [6] (6 elements) to ..."
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let params: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        call_op!(Reshape, &[self], &params)
    }

    /// Elements `start..end` along `axis` (negative counts from the end).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when `axis` is out of range or `start..end` is not within
    /// the axis; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let m = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(m.slice(1, 1, 3)?.to_vec()?, [2.0, 3.0, 5.0, 6.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn slice(&self, axis: isize, start: usize, end: usize) -> Result<Tensor> {
        call_op!(Slice, &[self], &[axis as i64, start as i64, end as i64])
    }

    /// Concatenates `tensors` (one or more, of one dtype) along `axis`.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when dims other than `axis` differ; [`Error::UnsupportedDType`]
    /// for mixed dtypes; [`Error::InvalidParameter`] for no tensors or an axis out of range;
    /// the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let a = Tensor::from_slice(&[1.0, 2.0], &[1, 2])?;
    /// let b = Tensor::from_slice(&[3.0, 4.0], &[1, 2])?;
    /// assert_eq!(Tensor::concat(&[&a, &b], 0)?.shape(), [2, 2]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        call_op!(Concat, tensors, &[axis as i64])
    }

    /// Rows of this table picked by `indices` (i32): `[V, D...]` with indices `[I...]` gives
    /// `[I..., D...]`. An embedding lookup.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when an index is outside `0..V`; [`Error::UnsupportedDType`]
    /// when `indices` is not `i32`; [`Error::ShapeMismatch`] for a scalar table or a result
    /// above [`MAX_RANK`]; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let table = Tensor::from_slice(&[0.0, 0.0, 1.0, 1.0, 2.0, 2.0], &[3, 2])?;
    /// let ids = Tensor::from_i32(&[2, 0], &[2])?;
    /// assert_eq!(table.gather(&ids)?.to_vec()?, [2.0, 2.0, 0.0, 0.0]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn gather(&self, indices: &Tensor) -> Result<Tensor> {
        call_op!(Gather, &[self, indices], &[])
    }

    /// 2-D convolution of this NCHW input with `weight` (OIHW) and optional `bias` (`[O]`),
    /// with `stride` and zero `padding` as (height, width).
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when a rank is not 4, the channels differ, the bias is not
    /// `[O]` or the kernel does not fit the padded input; [`Error::InvalidParameter`] for a
    /// stride of 0 or a stride or padding above `u32::MAX`; the quota errors.
    ///
    /// ```no_run
    /// use gridbox_sdk::Tensor;
    ///
    /// let image = Tensor::from_slice(&[1.0; 16], &[1, 1, 4, 4])?;
    /// let kernel = Tensor::from_slice(&[1.0; 9], &[1, 1, 3, 3])?;
    /// let out = image.conv2d(&kernel, None, (1, 1), (1, 1))?;
    /// assert_eq!(out.shape(), [1, 1, 4, 4]);
    /// # Ok::<(), gridbox_sdk::Error>(())
    /// ```
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        let params = [stride.0 as i64, stride.1 as i64, padding.0 as i64, padding.1 as i64];
        match bias {
            Some(bias) => call_op!(Conv2d, &[self, weight, bias], &params),
            None => call_op!(Conv2d, &[self, weight], &params),
        }
    }
}

// The ops language models need (silu, argmax, rope, attention, half-precision weights and cast).
mod model_ops;

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $symbol:literal) => {
        #[doc = concat!("`a ", $symbol, " b` on references: [`Tensor::", stringify!($method), "`], broadcast, giving a [`Result`].")]
        ///
        /// ```no_run
        /// use gridbox_sdk::Tensor;
        ///
        /// let a = Tensor::from_slice(&[6.0, 8.0], &[2])?;
        /// let b = Tensor::scalar(2.0)?;
        #[doc = concat!("let c = (&a ", $symbol, " &b)?;")]
        /// assert_eq!(c.shape(), [2]);
        /// # Ok::<(), gridbox_sdk::Error>(())
        /// ```
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;

            fn $method(self, other: &Tensor) -> Result<Tensor> {
                Tensor::$method(self, other)
            }
        }
    };
}

binary_operator!(Add, add, "+");
binary_operator!(Sub, sub, "-");
binary_operator!(Mul, mul, "*");
binary_operator!(Div, div, "/");

/// `-a` on a reference: [`Tensor::neg`], giving a [`Result`].
///
/// ```no_run
/// use gridbox_sdk::Tensor;
///
/// let a = Tensor::from_slice(&[1.0, -2.0], &[2])?;
/// assert_eq!((-&a)?.to_vec()?, [-1.0, 2.0]);
/// # Ok::<(), gridbox_sdk::Error>(())
/// ```
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

    #[test]
    fn host_codes_become_errors_that_print_the_hosts_detail() {
        let detail = "matmul: shapes [64, 32] and [16, 4] do not fit: the inner dims 32 and 16 differ";
        let error = Error::from_code(ErrorCode::ShapeMismatch.raw(), detail.into());
        assert_eq!(error, Error::ShapeMismatch { detail: detail.into() });
        assert_eq!((error.code(), error.detail()), (Some(ErrorCode::ShapeMismatch), detail));
        assert_eq!(error.to_string(), format!("shape mismatch: {detail}"));
        for raw in 1..=5 {
            let error = Error::from_code(raw, "op: why".into());
            assert_eq!(error.code().map(ErrorCode::raw), Some(raw));
            assert!(error.to_string().ends_with(": op: why"), "{error}");
        }
        // A host that kept no detail, and a code from a newer host.
        assert_eq!(Error::from_code(1, String::new()).to_string(), "tensor memory quota exceeded");
        let newer = Error::from_code(99, "new: thing".into());
        assert_eq!((newer.code(), newer.to_string()), (None, "unknown bridge error code 99: new: thing".to_string()));
    }
}

//! The tensor bridge ABI (spec/abi.md), defined once and used by the host (`gridbox-compute`, `gridbox-core`)
//! and by jobs (`gridbox-sdk`). No constant here is written anywhere else.
//!
//! Jobs import core-wasm functions from the module [`IMPORT_MODULE`]. Tensors live on the host;
//! the guest holds opaque `u32` handles. Every function but `last_error` returns an `i32`
//! [`ErrorCode`] (0 for success) and writes results through guest pointers; after a code, the
//! host's words for it (the op, the shapes or parameters involved) come from `last_error`.
//!
//! | import | signature | does |
//! | --- | --- | --- |
//! | `create` | `(dtype, shape_ptr, rank, data_ptr, data_len, out_handle_ptr) -> i32` | copies `data_len` bytes (little-endian elements) into a new tensor |
//! | `read` | `(handle, data_ptr, data_len) -> i32` | copies the tensor's bytes out; `data_len` must equal its size |
//! | `info` | `(handle, out_dtype_ptr, shape_ptr, max_rank, out_rank_ptr) -> i32` | dtype, rank and up to `max_rank` dims (u32 each) |
//! | `free` | `(handle) -> i32` | releases the tensor |
//! | `last_error` | `(buf_ptr, buf_len) -> i32` | copies up to `buf_len` bytes of the detail of the job's most recent failed call; returns its full length |
//! | one per [`Op`] (its [`Op::name`]) | `(inputs_ptr, n_inputs, params_ptr, n_params, out_handle_ptr) -> i32` | runs the op on `n_inputs` u32 handles with `n_params` i64 parameters |
//!
//! Shapes are arrays of `u32` dims. Parameters are `i64`; float parameters (epsilon) are the
//! `f32` bit pattern in the low 32 bits.

#![no_std]

/// The import module every bridge function lives in. The version is part of the name: a new
/// ABI version is a new module, and both can be served side by side.
pub const IMPORT_MODULE: &str = "gridbox_tensor_v1";

/// Import name: create a tensor from guest memory.
pub const FN_CREATE: &str = "create";
/// Import name: copy a tensor into guest memory.
pub const FN_READ: &str = "read";
/// Import name: a tensor's dtype and shape.
pub const FN_INFO: &str = "info";
/// Import name: free a tensor.
pub const FN_FREE: &str = "free";
/// Import name: the detail of the job's most recent call that returned an error code (UTF-8,
/// empty if none did), copied into guest memory; it returns the detail's full length, not a code.
pub const FN_LAST_ERROR: &str = "last_error";
/// The non-op imports, in a fixed order. They come with the `tensor` capability; `tensor.ops`
/// grants only ops.
pub const CORE_FUNCTIONS: [&str; 5] = [FN_CREATE, FN_READ, FN_INFO, FN_FREE, FN_LAST_ERROR];
/// How many parameters each of [`CORE_FUNCTIONS`] takes, in the same order. Every parameter and
/// every result of a bridge import is an `i32`.
pub const CORE_PARAMS: [usize; 5] = [6, 3, 5, 1, 2];
/// How many parameters every op import takes: `(inputs_ptr, n_inputs, params_ptr, n_params,
/// out_handle_ptr)`.
pub const OP_PARAMS: usize = 5;

/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 8;

/// Largest dimension a tensor may have: every dim fits the `u32` that `create` takes and `info`
/// reports. An op whose result would have a larger dim fails with `ShapeMismatch`.
pub const MAX_DIM: usize = u32::MAX as usize;
/// Most inputs an op call may pass (concat takes many).
pub const MAX_OP_INPUTS: usize = 64;
/// Most parameters an op call may pass.
pub const MAX_OP_PARAMS: usize = 64;

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum DType {
    /// IEEE 754 binary32.
    F32 = 0,
    /// Two's complement 32-bit integer (indices).
    I32 = 1,
    /// IEEE 754 binary16 (half precision), for weights stored as such: only layout ops and
    /// `cast` take it.
    F16 = 2,
    /// bfloat16 (the high half of a binary32), for weights stored as such: only layout ops and
    /// `cast` take it.
    BF16 = 3,
}

impl DType {
    /// The dtype with ABI code `code`.
    pub fn from_code(code: u32) -> Option<DType> {
        match code {
            0 => Some(DType::F32),
            1 => Some(DType::I32),
            2 => Some(DType::F16),
            3 => Some(DType::BF16),
            _ => None,
        }
    }

    /// The ABI code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Lowercase name (`f32`, `i32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Every dtype, in code order.
    pub const ALL: &'static [DType] = &[DType::F32, DType::I32, DType::F16, DType::BF16];
}

/// Results of bridge calls that a job can handle. Misuse (a bad pointer, an unknown or freed
/// handle, a malformed call) is not a code: it traps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Success.
    Ok = 0,
    /// The result would pass the job's tensor memory quota.
    TensorMemoryQuota = 1,
    /// The job already holds as many tensors as its quota allows.
    TensorCountQuota = 2,
    /// Input shapes do not fit the op (or a reshape changes the element count).
    ShapeMismatch = 3,
    /// The op does not accept an input of this dtype.
    UnsupportedDType = 4,
    /// A parameter is out of range (an axis, a stride, a slice bound, a gather index...).
    InvalidParameter = 5,
}

impl ErrorCode {
    /// The code for `raw`, if it is one.
    pub fn from_raw(raw: i32) -> Option<ErrorCode> {
        Some(match raw {
            0 => ErrorCode::Ok,
            1 => ErrorCode::TensorMemoryQuota,
            2 => ErrorCode::TensorCountQuota,
            3 => ErrorCode::ShapeMismatch,
            4 => ErrorCode::UnsupportedDType,
            5 => ErrorCode::InvalidParameter,
            _ => return None,
        })
    }

    /// The raw value returned across the ABI.
    pub fn raw(self) -> i32 {
        self as i32
    }

    /// What it means, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorCode::Ok => "ok",
            ErrorCode::TensorMemoryQuota => "tensor memory quota exceeded",
            ErrorCode::TensorCountQuota => "tensor count quota exceeded",
            ErrorCode::ShapeMismatch => "shape mismatch",
            ErrorCode::UnsupportedDType => "unsupported dtype",
            ErrorCode::InvalidParameter => "invalid parameter",
        }
    }
}

macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, inputs $inputs:expr, params $params:expr;)*) => {
        /// The ops. Each is its own import (named [`Op::name`]), so a module that imports an op its
        /// manifest does not grant is refused at load. Inputs and parameters are listed in
        /// spec/abi.md; `inputs` and `params` give their counts (`None`: variable).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        #[non_exhaustive]
        pub enum Op {
            $($(#[$doc])* $variant = $code,)*
        }

        impl Op {
            /// Every op, in code order.
            pub const ALL: &'static [Op] = &[$(Op::$variant,)*];

            /// The import name (and the name used in manifests and traces).
            pub fn name(self) -> &'static str {
                match self { $(Op::$variant => $name,)* }
            }

            /// The op called `name`.
            pub fn from_name(name: &str) -> Option<Op> {
                match name { $($name => Some(Op::$variant),)* _ => None }
            }

            /// Whether a manifest that does not list `tensor.ops` grants this op: the ops of the
            /// ABI's first release (codes 0 to 24) are; newer ones (`silu`, `argmax`, `cast`,
            /// `rope`) must be named. The resolved manifest lists the granted ops and the receipt
            /// embeds it, so growing the default would change the receipt of every job written
            /// before the newer ops existed.
            pub fn granted_by_default(self) -> bool {
                (self as u32) <= Op::Conv2d as u32
            }

            /// How many inputs it takes, or `None` when variable (concat: 1 or more).
            pub fn input_count(self) -> Option<usize> {
                match self { $(Op::$variant => $inputs,)* }
            }

            /// How many parameters it takes, or `None` when variable.
            pub fn param_count(self) -> Option<usize> {
                match self { $(Op::$variant => $params,)* }
            }
        }
    };
}

/// Calls macro `$callback` with the list of every op, in the form
/// `$(#[doc] Variant = code, "name", inputs EXPR, params EXPR;)*`. This list is the one place
/// ops are written down: the [`Op`] enum here and the guest SDK's import declarations are both
/// generated from it.
#[macro_export]
macro_rules! for_each_op {
    ($callback:ident) => {
        $callback! {
            /// `[..., M, K] x [..., K, N] -> [..., M, N]`, batch dims broadcast.
            Matmul = 0, "matmul", inputs Some(2), params Some(0);
            /// Elementwise `a + b`, broadcast.
            Add = 1, "add", inputs Some(2), params Some(0);
            /// Elementwise `a - b`, broadcast.
            Sub = 2, "sub", inputs Some(2), params Some(0);
            /// Elementwise `a * b`, broadcast.
            Mul = 3, "mul", inputs Some(2), params Some(0);
            /// Elementwise `a / b`, broadcast.
            Div = 4, "div", inputs Some(2), params Some(0);
            /// `-x`.
            Neg = 5, "neg", inputs Some(1), params Some(0);
            /// `max(x, 0)`.
            Relu = 6, "relu", inputs Some(1), params Some(0);
            /// GELU, tanh form.
            Gelu = 7, "gelu", inputs Some(1), params Some(0);
            /// `1 / (1 + exp(-x))`.
            Sigmoid = 8, "sigmoid", inputs Some(1), params Some(0);
            /// Hyperbolic tangent.
            Tanh = 9, "tanh", inputs Some(1), params Some(0);
            /// `e^x`.
            Exp = 10, "exp", inputs Some(1), params Some(0);
            /// Natural logarithm.
            Log = 11, "log", inputs Some(1), params Some(0);
            /// Square root.
            Sqrt = 12, "sqrt", inputs Some(1), params Some(0);
            /// Softmax over the last axis.
            Softmax = 13, "softmax", inputs Some(1), params Some(0);
            /// Layer norm over the last axis: inputs x, gamma, beta; params [epsilon f32 bits].
            LayerNorm = 14, "layer_norm", inputs Some(3), params Some(1);
            /// RMS norm over the last axis: inputs x, gamma; params [epsilon f32 bits].
            RmsNorm = 15, "rms_norm", inputs Some(2), params Some(1);
            /// Sum over an axis: params [axis, keepdims 0/1].
            Sum = 16, "sum", inputs Some(1), params Some(2);
            /// Mean over an axis: params [axis, keepdims 0/1].
            Mean = 17, "mean", inputs Some(1), params Some(2);
            /// Max over an axis: params [axis, keepdims 0/1].
            Max = 18, "max", inputs Some(1), params Some(2);
            /// Permute axes: params = the permutation (rank of them).
            Permute = 19, "permute", inputs Some(1), params None;
            /// Reshape: params = the new dims (rank of them).
            Reshape = 20, "reshape", inputs Some(1), params None;
            /// Slice: params [axis, start, end) on one axis.
            Slice = 21, "slice", inputs Some(1), params Some(3);
            /// Concatenate along an axis: params [axis].
            Concat = 22, "concat", inputs None, params Some(1);
            /// Embedding lookup: inputs table [V, ...] (f32), indices (i32) -> [indices..., ...].
            Gather = 23, "gather", inputs Some(2), params Some(0);
            /// 2-D convolution, NCHW x OIHW (+ optional bias [O] as a third input): params
            /// [stride_h, stride_w, pad_h, pad_w].
            Conv2d = 24, "conv2d", inputs None, params Some(4);
            /// SiLU (swish), `x * sigmoid(x)`.
            Silu = 25, "silu", inputs Some(1), params Some(0);
            /// Index of the largest element over the last axis (f32 -> i32; ties: the lowest
            /// index; NaN counts as the largest, the first NaN wins).
            Argmax = 26, "argmax", inputs Some(1), params Some(0);
            /// Element type conversion: params [target dtype code]. f16 and bf16 to f32, exact.
            Cast = 27, "cast", inputs Some(1), params Some(1);
            /// Rotary position embedding of x [..., T, D] (D even; pairs (i, i + D/2), the Llama
            /// "rotate half" layout): params [position offset, theta f32 bits].
            Rope = 28, "rope", inputs Some(1), params Some(2);
            /// Causal attention with grouped-query heads: q [Hq, T, D], k and v [Hkv, S, D]
            /// (Hq a multiple of Hkv) -> [Hq, T, D]; params [causal offset, scale f32 bits].
            Attention = 29, "attention", inputs Some(3), params Some(2);
        }
    };
}

for_each_op!(ops);

/// The raw imports, for guests (the guest SDK wraps them in a safe API). Only on wasm, where
/// the host provides them.
#[cfg(target_family = "wasm")]
#[allow(unsafe_code, non_snake_case, missing_docs)] // FFI declarations, named after `Op` variants.
pub mod guest {
    use super::Op;

    // The import module's name must be a literal here; `IMPORT_MODULE` is the same string, and
    // the integration tests load real guests built against these declarations.
    #[link(wasm_import_module = "gridbox_tensor_v1")]
    unsafe extern "C" {
        #[link_name = "create"]
        pub fn create(dtype: u32, shape: *const u32, rank: u32, data: *const u8, data_len: u32, out_handle: *mut u32) -> i32;
        #[link_name = "read"]
        pub fn read(handle: u32, data: *mut u8, data_len: u32) -> i32;
        #[link_name = "info"]
        pub fn info(handle: u32, out_dtype: *mut u32, shape: *mut u32, max_rank: u32, out_rank: *mut u32) -> i32;
        #[link_name = "free"]
        pub fn free(handle: u32) -> i32;
        #[link_name = "last_error"]
        pub fn last_error(buf: *mut u8, buf_len: u32) -> i32;
    }

    /// The signature of every op's import: `(inputs_ptr, n_inputs, params_ptr, n_params,
    /// out_handle_ptr) -> code`.
    pub type OpImport = unsafe extern "C" fn(inputs: *const u32, n_inputs: u32, params: *const i64, n_params: u32, out_handle: *mut u32) -> i32;

    macro_rules! op_imports {
        ($($(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, inputs $inputs:expr, params $params:expr;)*) => {
            /// Each op's import on its own, named after its [`Op`] variant. A job whose code names
            /// only some of them imports only those (the linker drops the rest), which matters:
            /// a manifest without `tensor.ops` grants only the ops of the first release
            /// ([`Op::granted_by_default`]), and a module importing any other is refused at load.
            /// [`call_op`] names them all.
            pub mod imports {
                #[link(wasm_import_module = "gridbox_tensor_v1")]
                unsafe extern "C" {
                    $(
                        #[link_name = $name]
                        pub fn $variant(inputs: *const u32, n_inputs: u32, params: *const i64, n_params: u32, out_handle: *mut u32) -> i32;
                    )*
                }
            }

            /// Calls the import of `op`. Its code names every op's import, so a module that calls
            /// it imports them all; call one of [`imports`] (or take it as an [`OpImport`]) to
            /// import only that op.
            ///
            /// # Safety
            /// `inputs` must point to `n_inputs` readable u32s, `params` to `n_params` readable
            /// i64s and `out_handle` to a writable u32 (the host checks bounds and traps on
            /// misuse, so breaking this stops the job rather than corrupting it).
            pub unsafe fn call_op(op: Op, inputs: *const u32, n_inputs: u32, params: *const i64, n_params: u32, out_handle: *mut u32) -> i32 {
                // SAFETY: the caller upholds the pointer contract above.
                unsafe {
                    match op {
                        $(Op::$variant => imports::$variant(inputs, n_inputs, params, n_params, out_handle),)*
                    }
                }
            }
        };
    }

    crate::for_each_op!(op_imports);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for (index, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, index);
            assert_eq!(Op::from_name(op.name()), Some(*op));
            assert!(!CORE_FUNCTIONS.contains(&op.name()));
        }
        for (index, dtype) in DType::ALL.iter().enumerate() {
            assert_eq!((dtype.code() as usize, DType::from_code(dtype.code())), (index, Some(*dtype)));
        }
        assert_eq!(DType::from_code(4), None);
        for raw in 0..6 {
            assert_eq!(ErrorCode::from_raw(raw).map(ErrorCode::raw), Some(raw));
        }
    }
}

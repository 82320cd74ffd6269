//! What each operator means to the rewrite: which ones it makes free in the fuel table, which
//! ones give possibly uncanonicalised NaNs, which read floats without seeing NaN bits.

use wasmparser::Operator;
use wasmtime::OperatorCost;

/// The operators the rewrite inserts, named once for both [`operator_cost`] (which makes them
/// free) and [`made_free`] (which finds the module's own uses of them), so the two cannot
/// disagree.
macro_rules! free_operators {
    ($($op:ident),* $(,)?) => {
        /// The fuel table for rewritten modules: wasmtime's default, except that the operators
        /// the rewrite inserts cost nothing and `nop`, which the rewrite puts after each
        /// original use of them, costs the one unit they cost before. Together with
        /// [`super::rewrite`] this counts exactly the fuel wasmtime's default table counts for
        /// the original module.
        pub fn operator_cost() -> OperatorCost {
            let mut cost = OperatorCost::new();
            cost.Nop = 1;
            $(cost.$op = 0;)*
            cost
        }

        /// Whether `op` is one of the operators [`operator_cost`] makes free, so that each of
        /// the module's own uses must be followed by a `nop` that pays for it.
        pub(super) fn made_free(op: &Operator<'_>) -> bool {
            matches!(op, $(Operator::$op { .. })|*)
        }
    };
}

free_operators!(LocalGet, LocalSet, LocalTee, Select, F32Const, F64Const, F32Ne, F64Ne, V128Const, F32x4Eq, F64x2Eq, V128Bitselect);

/// The lanes of a SIMD float result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lanes {
    F32x4,
    F64x2,
}

/// A scalar float type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scalar {
    F32,
    F64,
}

/// How the rewrite treats one operator (in reachable code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// `nop`: dropped.
    Nop,
    LocalGet(u32),
    LocalSet(u32),
    LocalTee(u32),
    /// `select` with or without a type: a merge of its two operands.
    Select,
    Drop,
    /// Scalar float arithmetic that wasmtime's eager mode canonicalises: its NaN may be raw.
    RawResult(Scalar),
    /// A float result that is never a NaN (an integer converted, a non-NaN constant).
    NeverNan,
    /// Reads floats but cannot see NaN bits (comparisons, truncations to integers).
    Blind,
    /// SIMD float arithmetic that eager mode canonicalises: canonicalised right after.
    VectorArith(Lanes),
    /// `block`, `loop` or `if`: their parameters enter a new frame.
    Enter,
    Else,
    End,
    Br(u32),
    BrIf(u32),
    /// `br_table`, by its default target (every target carries the same values).
    BrTable(u32),
    Return,
    /// Anything else: a raw float operand is canonicalised, results are exact.
    Other,
}

/// The role of `op`.
pub(super) fn role(op: &Operator<'_>) -> Role {
    use Operator as O;
    match op {
        O::Nop => Role::Nop,
        O::LocalGet { local_index } => Role::LocalGet(*local_index),
        O::LocalSet { local_index } => Role::LocalSet(*local_index),
        O::LocalTee { local_index } => Role::LocalTee(*local_index),
        O::Select | O::TypedSelect { .. } => Role::Select,
        O::Drop => Role::Drop,
        O::F32Add
        | O::F32Sub
        | O::F32Mul
        | O::F32Div
        | O::F32Min
        | O::F32Max
        | O::F32Sqrt
        | O::F32Ceil
        | O::F32Floor
        | O::F32Trunc
        | O::F32Nearest
        | O::F32DemoteF64 => Role::RawResult(Scalar::F32),
        O::F64Add
        | O::F64Sub
        | O::F64Mul
        | O::F64Div
        | O::F64Min
        | O::F64Max
        | O::F64Sqrt
        | O::F64Ceil
        | O::F64Floor
        | O::F64Trunc
        | O::F64Nearest
        | O::F64PromoteF32 => Role::RawResult(Scalar::F64),
        O::F32Const { value } if !is_nan_f32(value.bits()) => Role::NeverNan,
        O::F64Const { value } if !is_nan_f64(value.bits()) => Role::NeverNan,
        O::F32ConvertI32S
        | O::F32ConvertI32U
        | O::F32ConvertI64S
        | O::F32ConvertI64U
        | O::F64ConvertI32S
        | O::F64ConvertI32U
        | O::F64ConvertI64S
        | O::F64ConvertI64U => Role::NeverNan,
        O::F32Eq
        | O::F32Ne
        | O::F32Lt
        | O::F32Gt
        | O::F32Le
        | O::F32Ge
        | O::F64Eq
        | O::F64Ne
        | O::F64Lt
        | O::F64Gt
        | O::F64Le
        | O::F64Ge
        | O::I32TruncF32S
        | O::I32TruncF32U
        | O::I32TruncF64S
        | O::I32TruncF64U
        | O::I64TruncF32S
        | O::I64TruncF32U
        | O::I64TruncF64S
        | O::I64TruncF64U
        | O::I32TruncSatF32S
        | O::I32TruncSatF32U
        | O::I32TruncSatF64S
        | O::I32TruncSatF64U
        | O::I64TruncSatF32S
        | O::I64TruncSatF32U
        | O::I64TruncSatF64S
        | O::I64TruncSatF64U => Role::Blind,
        O::F32x4Add
        | O::F32x4Sub
        | O::F32x4Mul
        | O::F32x4Div
        | O::F32x4Min
        | O::F32x4Max
        | O::F32x4Sqrt
        | O::F32x4Ceil
        | O::F32x4Floor
        | O::F32x4Trunc
        | O::F32x4Nearest
        | O::F32x4DemoteF64x2Zero
        | O::F32x4RelaxedMadd
        | O::F32x4RelaxedNmadd
        | O::F32x4RelaxedMin
        | O::F32x4RelaxedMax => Role::VectorArith(Lanes::F32x4),
        O::F64x2Add
        | O::F64x2Sub
        | O::F64x2Mul
        | O::F64x2Div
        | O::F64x2Min
        | O::F64x2Max
        | O::F64x2Sqrt
        | O::F64x2Ceil
        | O::F64x2Floor
        | O::F64x2Trunc
        | O::F64x2Nearest
        | O::F64x2PromoteLowF32x4
        | O::F64x2RelaxedMadd
        | O::F64x2RelaxedNmadd
        | O::F64x2RelaxedMin
        | O::F64x2RelaxedMax => Role::VectorArith(Lanes::F64x2),
        O::Block { .. } | O::Loop { .. } | O::If { .. } => Role::Enter,
        O::Else => Role::Else,
        O::End => Role::End,
        O::Br { relative_depth } => Role::Br(*relative_depth),
        O::BrIf { relative_depth } => Role::BrIf(*relative_depth),
        O::BrTable { targets } => Role::BrTable(targets.default()),
        O::Return => Role::Return,
        _ => Role::Other,
    }
}

/// Whether an f32's bits are a NaN.
pub(super) fn is_nan_f32(bits: u32) -> bool {
    bits & 0x7f80_0000 == 0x7f80_0000 && bits & 0x007f_ffff != 0
}

/// Whether an f64's bits are a NaN.
pub(super) fn is_nan_f64(bits: u64) -> bool {
    bits & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000 && bits & 0x000f_ffff_ffff_ffff != 0
}

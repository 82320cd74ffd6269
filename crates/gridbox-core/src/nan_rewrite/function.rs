//! The rewrite of one function body.
//!
//! Each value on the operand stack is tracked as one of three kinds ([`Bits`]): `Exact` (its bits
//! are what eager canonicalisation would give), `Raw` (a float arithmetic result, or a copy of
//! one, whose NaN may not be canonical yet: canonicalising it gives the eager bits) or
//! `NeverNan` (a float that cannot be a NaN, both of the above). A value must be `Exact` where
//! its bits can be observed and where it meets an `Exact` value (a `select`, a local assigned
//! both kinds): there a `Raw` value is canonicalised. Canonicalising an `Exact` value would be
//! wrong (a NaN loaded from memory keeps its payload), so the tracking must be precise both ways.
//!
//! Locals: a float local is `Raw` when every value assigned to it is `Raw` or `NeverNan`, else
//! `Exact` and its `Raw` assignments are canonicalised. Parameters are `Exact` (callers
//! canonicalise arguments). This is found by passes over the body that start with every
//! declared float local `Raw` and demote the ones given an `Exact` value, until none changes
//! (at most [`MAX_ANALYSIS_PASSES`], then every float local is taken as `Exact`, which is always
//! sound, so that a hostile body cannot make the rewrite quadratic).
//!
//! A value observed deep in the stack (a call argument under later arguments, a branch value
//! under the condition) is canonicalised right after the operator that pushed it, which the
//! analysis pass records; on top of the stack it is canonicalised where it is observed. No
//! value is ever spilled, so the rewritten body is at most a constant factor larger.

use wasmparser::{FrameKind, FuncValidator, FunctionBody, ModuleArity, Operator, ValType, ValidatorResources};

use super::RewriteError;
use super::ops::{Lanes, Role, Scalar, made_free, role};

/// Analysis passes before every float local is taken as `Exact`.
const MAX_ANALYSIS_PASSES: usize = 4;

/// wasm's limit on a function's locals (wasmparser's and wasmtime's).
const MAX_LOCALS: u32 = 50_000;

/// The canonical NaNs: what eager canonicalisation gives.
const CANONICAL_F32: u32 = 0x7fc0_0000;
const CANONICAL_F64: u64 = 0x7ff8_0000_0000_0000;

/// Opcodes the rewrite emits (all made free by [`super::operator_cost`], except `nop`).
const NOP: u8 = 0x01;
const SELECT: u8 = 0x1b;
const LOCAL_GET: u8 = 0x20;
const LOCAL_SET: u8 = 0x21;
const F32_CONST: u8 = 0x43;
const F64_CONST: u8 = 0x44;
const F32_NE: u8 = 0x5c;
const F64_NE: u8 = 0x62;
const SIMD_PREFIX: u8 = 0xfd;
const V128_CONST: u32 = 12;
const F32X4_EQ: u32 = 65;
const F64X2_EQ: u32 = 71;
const V128_BITSELECT: u32 = 82;

/// What is known of a value's NaN bits (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bits {
    Exact,
    Raw,
    NeverNan,
}

/// One operand stack value: its kind and the operator that pushed it.
#[derive(Clone, Copy, Debug)]
struct Slot {
    nan: Bits,
    producer: u32,
}

impl Slot {
    const EXACT: Slot = Slot { nan: Bits::Exact, producer: u32::MAX };
}

/// The kind of a value that is either of two: `select`'s result, after both were made to agree.
fn merge(a: Bits, b: Bits) -> Bits {
    match (a, b) {
        (Bits::NeverNan, other) | (other, Bits::NeverNan) => other,
        (Bits::Raw, Bits::Raw) => Bits::Raw,
        _ => Bits::Exact,
    }
}

/// What the analysis decided, which the emitting pass follows.
struct Plan {
    /// Per local: whether it holds `Raw` values.
    raw_locals: Vec<bool>,
    /// Per operator (by position): whether its result is canonicalised right after it.
    canonicalise_after: Vec<bool>,
}

impl Plan {
    fn marked(&self, op: u32) -> bool {
        self.canonicalise_after.get(op as usize).copied().unwrap_or(false)
    }

    fn mark(&mut self, op: u32) {
        let index = op as usize;
        if self.canonicalise_after.len() <= index {
            self.canonicalise_after.resize(index + 1, false);
        }
        self.canonicalise_after[index] = true;
    }
}

/// The scratch locals the emitted canonicalisations use, one per type, after the body's own.
struct Scratch {
    first: u32,
    types: Vec<ValType>,
}

impl Scratch {
    fn local(&mut self, ty: ValType) -> u32 {
        let position = match self.types.iter().position(|t| *t == ty) {
            Some(position) => position,
            None => {
                self.types.push(ty);
                self.types.len() - 1
            }
        };
        self.first + position as u32
    }
}

/// The rewritten body of one function (locals and code), validated on the way.
pub(super) fn rewrite_body(module: &[u8], body: &FunctionBody<'_>, validator: &mut FuncValidator<ValidatorResources>) -> Result<Vec<u8>, RewriteError> {
    let params = validator.len_locals();
    let mut locals = body.get_locals_reader()?;
    let groups = locals.get_count();
    let groups_start = locals.original_position();
    for _ in 0..groups {
        let offset = locals.original_position();
        let (count, ty) = locals.read()?;
        validator.define_locals(offset, count, ty)?;
    }
    let groups_end = locals.original_position();
    let local_count = validator.len_locals();

    let mut scratch = Scratch { first: local_count, types: Vec::new() };
    let mut code = Vec::with_capacity(body.range().len() + body.range().len() / 4);
    if !copy_float_free(module, body, &mut code)? {
        code.clear();
        analyse_and_emit(module, body, validator, params, &mut code, &mut scratch)?;
    }
    if local_count.saturating_add(scratch.types.len() as u32) > MAX_LOCALS {
        return Err(RewriteError::TooManyLocals { function: validator.index() });
    }

    let mut out = Vec::with_capacity(code.len() + (groups_end - groups_start) + 16);
    super::write_u32(&mut out, groups + scratch.types.len() as u32);
    out.extend_from_slice(&module[groups_start..groups_end]);
    for ty in &scratch.types {
        super::write_u32(&mut out, 1);
        out.push(value_type_byte(*ty)?);
    }
    out.extend_from_slice(&code);
    Ok(out)
}

/// Copies a body without float arithmetic, which has no raw value and so nothing to
/// canonicalise, only the fuel table's `nop`s to place, in one read; false (with `code` half
/// written) at the first operator whose result may be a raw NaN, scalar or SIMD, which needs
/// the analysis. Most functions (all of most of std) are copied; wasmtime validates them when it
/// compiles the result.
fn copy_float_free(module: &[u8], body: &FunctionBody<'_>, code: &mut Vec<u8>) -> Result<bool, RewriteError> {
    let mut reader = body.get_operators_reader()?;
    while !reader.eof() {
        let offset = reader.original_position();
        let op = reader.read()?;
        if matches!(role(&op), Role::RawResult(_) | Role::VectorArith(_)) {
            return Ok(false);
        }
        copy_op(code, &op, &module[offset..reader.original_position()]);
    }
    reader.finish()?;
    Ok(true)
}

/// The analysis passes (module doc), then the pass that writes the rewritten code.
fn analyse_and_emit(
    module: &[u8],
    body: &FunctionBody<'_>,
    validator: &mut FuncValidator<ValidatorResources>,
    params: u32,
    code: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> Result<(), RewriteError> {
    let local_count = validator.len_locals();
    let mut plan =
        Plan { raw_locals: (0..local_count).map(|i| i >= params && is_float(validator.get_local_type(i))).collect(), canonicalise_after: Vec::new() };
    let start = validator.clone();
    let mut passes = 0;
    loop {
        let mut probe = start.clone();
        let outcome = walk(module, body, &mut probe, &mut plan, None)?;
        passes += 1;
        if !outcome.locals_changed {
            break;
        }
        if passes >= MAX_ANALYSIS_PASSES {
            plan.raw_locals.iter_mut().for_each(|raw| *raw = false);
            let mut probe = start.clone();
            walk(module, body, &mut probe, &mut plan, None)?;
            break;
        }
    }

    let outcome = walk(module, body, validator, &mut plan, Some((code, scratch)))?;
    if outcome.locals_changed {
        return Err(internal("the emitting pass disagreed with the analysis about a local"));
    }
    Ok(())
}

/// What one pass found.
struct WalkOutcome {
    /// A local taken as `Raw` was given an `Exact` value (analysis must run again).
    locals_changed: bool,
}

/// One pass over the body: analysis when `emit` is `None` (updates `plan`), else writes the
/// rewritten code to `emit`'s buffer following `plan`.
fn walk(
    module: &[u8],
    body: &FunctionBody<'_>,
    validator: &mut FuncValidator<ValidatorResources>,
    plan: &mut Plan,
    mut emit: Option<(&mut Vec<u8>, &mut Scratch)>,
) -> Result<WalkOutcome, RewriteError> {
    let analysing = emit.is_none();
    if analysing {
        plan.canonicalise_after.clear();
    }
    let mut stack: Vec<Slot> = Vec::new();
    let mut locals_changed = false;
    let mut reader = body.get_operators_reader()?;
    let mut index: u32 = 0;
    while !reader.eof() {
        let offset = reader.original_position();
        let op = reader.read()?;
        let end = reader.original_position();
        let bytes = &module[offset..end];
        let reachable = validator.get_control_frame(0).is_some_and(|frame| !frame.unreachable);
        let this = index;
        index = index.saturating_add(1);

        if !reachable {
            if let Some((code, _)) = emit.as_mut() {
                copy_op(code, &op, bytes);
            }
            validator.op(offset, &op)?;
            let height = validator.operand_stack_height() as usize;
            stack.truncate(height);
            stack.resize(height, Slot::EXACT);
            continue;
        }

        let mut step =
            Step { validator: &*validator, stack: &mut stack, plan: &mut *plan, emit: emit.as_mut().map(|(code, scratch)| (&mut **code, &mut **scratch)) };
        // What the operator leaves on the stack, set below for the roles that push a tracked
        // value; other pushes are `Exact`.
        let mut pushed: Option<Slot> = None;
        let mut vector: Option<Lanes> = None;
        let role = role(&op);
        match role {
            Role::Nop | Role::Drop | Role::Blind => {}
            Role::LocalGet(local) => {
                let raw = step.plan.raw_locals.get(local as usize).copied().unwrap_or(false);
                pushed = Some(Slot { nan: if raw { Bits::Raw } else { Bits::Exact }, producer: this });
            }
            Role::LocalSet(local) | Role::LocalTee(local) => {
                let value = step.top_nan(0);
                let raw_local = step.plan.raw_locals.get(local as usize).copied().unwrap_or(false);
                if raw_local && value == Some(Bits::Exact) {
                    step.plan.raw_locals[local as usize] = false;
                    locals_changed = true;
                } else if !raw_local && value == Some(Bits::Raw) {
                    step.settle(0)?;
                }
                if let Role::LocalTee(_) = role {
                    pushed = Some(Slot { nan: step.top_nan(0).unwrap_or(Bits::Exact), producer: this });
                }
            }
            Role::Select => {
                if step.is_float(1) {
                    let (a, b) = (step.top_nan(2).unwrap_or(Bits::Exact), step.top_nan(1).unwrap_or(Bits::Exact));
                    if (a, b) == (Bits::Raw, Bits::Exact) {
                        step.settle(2)?;
                    } else if (a, b) == (Bits::Exact, Bits::Raw) {
                        step.settle(1)?;
                    }
                    let merged = merge(step.top_nan(2).unwrap_or(Bits::Exact), step.top_nan(1).unwrap_or(Bits::Exact));
                    pushed = Some(Slot { nan: merged, producer: this });
                }
            }
            Role::RawResult(_) => pushed = Some(Slot { nan: Bits::Raw, producer: this }),
            Role::NeverNan => pushed = Some(Slot { nan: Bits::NeverNan, producer: this }),
            Role::VectorArith(lanes) => vector = Some(lanes),
            Role::Enter => {
                let params = match &op {
                    Operator::Block { blockty } | Operator::Loop { blockty } | Operator::If { blockty } => {
                        step.validator.block_type_arity(*blockty).map_or(0, |(p, _)| p)
                    }
                    _ => 0,
                };
                let below = usize::from(matches!(op, Operator::If { .. }));
                step.settle_range(below, params as usize)?;
            }
            Role::Else | Role::End => {
                let results = step.validator.get_control_frame(0).and_then(|frame| step.validator.block_type_arity(frame.block_type)).map_or(0, |(_, r)| r);
                step.settle_range(0, results as usize)?;
            }
            Role::Br(depth) => {
                let carried = step.label_arity(depth);
                step.settle_range(0, carried)?;
            }
            Role::BrIf(depth) | Role::BrTable(depth) => {
                let carried = step.label_arity(depth);
                step.settle_range(1, carried)?;
            }
            Role::Return => {
                let outermost = step.validator.control_stack_height().saturating_sub(1);
                let carried = step.label_arity(outermost);
                step.settle_range(0, carried)?;
            }
            Role::Other => {
                let operands = match op.operator_arity(step.validator) {
                    Some((operands, _)) => operands as usize,
                    // No arity known (an operator of a proposal wasmtime does not run): every
                    // value of the frame counts as observed.
                    None => step.stack.len().saturating_sub(step.validator.get_control_frame(0).map_or(0, |f| f.height)),
                };
                step.settle_range(0, operands)?;
            }
        }
        // An operator whose result the analysis marked is canonicalised right after it.
        let canonicalise_result = !analysing && plan.marked(this);

        let before = stack.len();
        let frame_height = validator.get_control_frame(0).map_or(0, |frame| frame.height);
        let operands = match role {
            Role::Else | Role::End => before.saturating_sub(frame_height),
            _ => op.operator_arity(&*validator).map_or(0, |(operands, _)| operands as usize),
        };
        if let Some((code, scratch)) = emit.as_mut() {
            copy_op(code, &op, bytes);
            if let Some(lanes) = vector {
                canonicalise_top_vector(code, scratch, lanes);
            }
            if canonicalise_result {
                let ty = result_type(&op, validator)?;
                canonicalise_top(code, scratch, ty)?;
            }
        }
        validator.op(offset, &op)?;
        let height = validator.operand_stack_height() as usize;
        let now_unreachable = validator.get_control_frame(0).is_some_and(|frame| frame.unreachable);
        stack.truncate(before.saturating_sub(operands));
        if let Some(mut slot) = pushed {
            if canonicalise_result {
                slot.nan = Bits::Exact;
            }
            stack.push(slot);
        }
        // Results not tracked above are exact; a stack deeper than the validator's is only
        // right where the frame just became unreachable or ended.
        if stack.len() > height && !now_unreachable && !matches!(role, Role::Else | Role::End) {
            return Err(internal("operand stack out of step with the validator"));
        }
        stack.truncate(height);
        stack.resize(height, Slot::EXACT);
    }
    reader.finish()?;
    Ok(WalkOutcome { locals_changed })
}

/// The state one operator's handling works on.
struct Step<'a> {
    validator: &'a FuncValidator<ValidatorResources>,
    stack: &'a mut Vec<Slot>,
    plan: &'a mut Plan,
    emit: Option<(&'a mut Vec<u8>, &'a mut Scratch)>,
}

impl Step<'_> {
    /// The kind of the value `depth` below the top, if the stack is that deep.
    fn top_nan(&self, depth: usize) -> Option<Bits> {
        self.stack.len().checked_sub(depth + 1).map(|i| self.stack[i].nan)
    }

    fn is_float(&self, depth: usize) -> bool {
        is_float(self.validator.get_operand_type(depth).flatten())
    }

    /// How many values a branch to the label `depth` carries.
    fn label_arity(&self, depth: u32) -> usize {
        match self.validator.label_block(depth) {
            Some((block_type, kind)) => {
                let (params, results) = self.validator.block_type_arity(block_type).unwrap_or((0, 0));
                (if kind == FrameKind::Loop { params } else { results }) as usize
            }
            None => 0,
        }
    }

    /// Makes the `count` values from `below` down (0 is the top) exact.
    fn settle_range(&mut self, below: usize, count: usize) -> Result<(), RewriteError> {
        for depth in below..below.saturating_add(count) {
            self.settle(depth)?;
        }
        Ok(())
    }

    /// Makes the value `depth` below the top exact: canonicalised here when it is on top, else
    /// right after the operator that pushed it (recorded by the analysis, done by the
    /// emitting pass, where the value is then already exact).
    fn settle(&mut self, depth: usize) -> Result<(), RewriteError> {
        let Some(position) = self.stack.len().checked_sub(depth + 1) else {
            return Ok(());
        };
        let slot = self.stack[position];
        if slot.nan != Bits::Raw {
            return Ok(());
        }
        if depth == 0 {
            if let Some((code, scratch)) = self.emit.as_mut() {
                let ty = self.validator.get_operand_type(0).flatten().ok_or_else(|| internal("a raw value of unknown type"))?;
                canonicalise_top(code, scratch, ty)?;
            }
        } else if self.emit.is_none() {
            self.plan.mark(slot.producer);
        } else {
            return Err(internal("a raw value deep in the stack that the analysis did not see"));
        }
        self.stack[position].nan = Bits::Exact;
        Ok(())
    }
}

/// The type of the value `op` pushes (for canonicalising it right after).
/// Called before the validator sees `op`, so the operand stack is still the one it pops.
fn result_type(op: &Operator<'_>, validator: &FuncValidator<ValidatorResources>) -> Result<ValType, RewriteError> {
    let ty = match (op, role(op)) {
        (Operator::LocalGet { local_index } | Operator::LocalTee { local_index }, _) => validator.get_local_type(*local_index),
        (_, Role::Select) => validator.get_operand_type(1).flatten(),
        (_, Role::RawResult(Scalar::F32)) => Some(ValType::F32),
        (_, Role::RawResult(Scalar::F64)) => Some(ValType::F64),
        _ => None,
    };
    ty.filter(|ty| is_float(Some(*ty))).ok_or_else(|| internal("a marked operator without a float result"))
}

/// Whether `ty` is a scalar float.
fn is_float(ty: Option<ValType>) -> bool {
    matches!(ty, Some(ValType::F32 | ValType::F64))
}

/// Copies one operator of the original body: a `nop` is dropped, an operator the fuel table
/// makes free is followed by a `nop` that pays its unit.
fn copy_op(code: &mut Vec<u8>, op: &Operator<'_>, bytes: &[u8]) {
    if matches!(op, Operator::Nop) {
        return;
    }
    code.extend_from_slice(bytes);
    if made_free(op) {
        code.push(NOP);
    }
}

/// Emits `x -> x != x ? canonical NaN : x` for the float on top of the stack.
fn canonicalise_top(code: &mut Vec<u8>, scratch: &mut Scratch, ty: ValType) -> Result<(), RewriteError> {
    let local = scratch.local(ty);
    local_op(code, LOCAL_SET, local);
    match ty {
        ValType::F32 => {
            code.push(F32_CONST);
            code.extend_from_slice(&CANONICAL_F32.to_le_bytes());
        }
        ValType::F64 => {
            code.push(F64_CONST);
            code.extend_from_slice(&CANONICAL_F64.to_le_bytes());
        }
        _ => return Err(internal("canonicalising a value that is not a float")),
    }
    local_op(code, LOCAL_GET, local);
    local_op(code, LOCAL_GET, local);
    local_op(code, LOCAL_GET, local);
    code.push(if ty == ValType::F32 { F32_NE } else { F64_NE });
    code.push(SELECT);
    Ok(())
}

/// Emits `x -> bitselect(x, canonical, x == x)` for the vector on top of the stack.
fn canonicalise_top_vector(code: &mut Vec<u8>, scratch: &mut Scratch, lanes: Lanes) {
    let local = scratch.local(ValType::V128);
    local_op(code, LOCAL_SET, local);
    local_op(code, LOCAL_GET, local);
    simd_op(code, V128_CONST);
    match lanes {
        Lanes::F32x4 => (0..4).for_each(|_| code.extend_from_slice(&CANONICAL_F32.to_le_bytes())),
        Lanes::F64x2 => (0..2).for_each(|_| code.extend_from_slice(&CANONICAL_F64.to_le_bytes())),
    }
    local_op(code, LOCAL_GET, local);
    local_op(code, LOCAL_GET, local);
    simd_op(code, if lanes == Lanes::F32x4 { F32X4_EQ } else { F64X2_EQ });
    simd_op(code, V128_BITSELECT);
}

fn local_op(code: &mut Vec<u8>, opcode: u8, local: u32) {
    code.push(opcode);
    super::write_u32(code, local);
}

fn simd_op(code: &mut Vec<u8>, opcode: u32) {
    code.push(SIMD_PREFIX);
    super::write_u32(code, opcode);
}

/// The one-byte encoding of the scratch locals' types.
fn value_type_byte(ty: ValType) -> Result<u8, RewriteError> {
    match ty {
        ValType::F32 => Ok(0x7d),
        ValType::F64 => Ok(0x7c),
        ValType::V128 => Ok(0x7b),
        _ => Err(internal("a scratch local of another type")),
    }
}

/// A broken invariant of the rewrite itself, reported as an error rather than a panic.
fn internal(what: &'static str) -> RewriteError {
    RewriteError::Internal(what)
}

//! NaN canonicalisation where NaN bits become observable, instead of after every float operation.
//!
//! Float arithmetic may give a NaN whose sign and payload bits differ between CPUs. wasmtime's
//! eager mode (`cranelift_nan_canonicalization`) replaces every such NaN by the canonical one
//! (f32 `0x7fc00000`, f64 `0x7ff8000000000000`) right after the operation, which costs a compare
//! and a select per arithmetic op: 1.85x on float-heavy code. Yet the bits of a NaN only matter
//! where something can see them: a store, a reinterpret, a sign operation (`neg`, `abs`,
//! `copysign`), a value leaving the function (call arguments, returns, globals, block results and
//! branch values), and places where a computed value meets a value whose bits must be kept (a
//! `select` or a local that hold both). Comparisons, further arithmetic and conversions to
//! integers cannot tell one NaN from another.
//!
//! [`rewrite`] turns a module into one that, run with eager canonicalisation *off*, behaves bit
//! for bit as the original does with it *on*: it tracks, per value, whether it may be an
//! uncanonicalised arithmetic result ([`function`] has the rules) and inserts the canonicalising
//! sequence only where such a value is observed. SIMD float arithmetic stays canonicalised
//! right after each op (its lanes are read back in too many ways to be worth tracking).
//!
//! Fuel stays exactly what wasmtime counts for the original module: the inserted instructions
//! use only operators that [`operator_cost`] makes free, every original use of those operators
//! is followed by a `nop`, which that table makes cost what the operator did, and the module's
//! own `nop`s (free in wasmtime's default table) are dropped. A `nop` generates no code, so this
//! costs nothing at run time. spec/determinism.md states the rules.

mod function;
mod ops;

use std::ops::Range;

use wasmparser::{Encoding, FuncValidatorAllocations, Parser, Payload, ValidPayload, Validator, WasmFeatures};

pub use ops::operator_cost;

/// Bumped whenever [`rewrite`] changes what it produces, so that compiled modules cached under
/// an older rewrite are not taken for this one's.
pub const REWRITE_VERSION: u32 = 1;

/// Why a module could not be rewritten.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The bytes are not a valid core wasm module.
    #[error("invalid wasm module")]
    Invalid(#[source] wasmparser::BinaryReaderError),
    /// A component, not a core module.
    #[error("the module is a WebAssembly component; gridbox runs core modules (wasm32-wasip1)")]
    Component,
    /// The rewritten module would not fit wasm's 32-bit size fields.
    #[error("the rewritten module would be larger than wasm's size fields allow")]
    TooLarge,
    /// A broken invariant of the rewrite itself (a bug in gridbox, not in the module).
    #[error("gridbox's NaN rewrite failed: {0}")]
    Internal(&'static str),
    /// The rewrite's own locals would take a function past wasm's limit on locals.
    #[error("function {function} has too many locals to add the canonicalisation's scratch locals")]
    TooManyLocals {
        /// The function's index.
        function: u32,
    },
}

impl From<wasmparser::BinaryReaderError> for RewriteError {
    fn from(error: wasmparser::BinaryReaderError) -> Self {
        RewriteError::Invalid(error)
    }
}

/// The features the rewrite validates modules with: wasmparser's defaults less the proposals
/// this wasmtime build does not run, so that a module is refused here with the same kind of
/// error wasmtime would give.
fn features() -> WasmFeatures {
    let mut features = WasmFeatures::default();
    features.remove(WasmFeatures::COMPONENT_MODEL);
    features
}

/// `module` with NaNs canonicalised only where they are observed, as the module doc says; to be
/// compiled with eager canonicalisation off and [`operator_cost`] as the fuel table.
///
/// Validates the module's sections and every body it has to analyse (those with float
/// arithmetic); the others are copied with only the fuel table's `nop`s added or dropped, which
/// leaves an invalid body exactly as invalid, for wasmtime to refuse when it compiles it.
pub fn rewrite(module: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut validator = Validator::new_with_features(features());
    let mut out = Vec::with_capacity(module.len() + module.len() / 8);
    let mut code: Option<CodeSection> = None;
    let mut allocations = FuncValidatorAllocations::default();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload?;
        if let Payload::Version { encoding: Encoding::Component, .. } = payload {
            return Err(RewriteError::Component);
        }
        let valid = validator.payload(&payload)?;
        match payload {
            Payload::Version { .. } => out.extend_from_slice(&module[..8.min(module.len())]),
            Payload::CodeSectionStart { count, .. } => code = Some(CodeSection { count, bodies: Vec::new() }),
            Payload::CodeSectionEntry(body) => {
                let ValidPayload::Func(to_validate, _) = valid else {
                    unreachable_payload()?;
                    continue;
                };
                let mut func_validator = to_validate.into_validator(std::mem::take(&mut allocations));
                let rewritten = function::rewrite_body(module, &body, &mut func_validator)?;
                allocations = func_validator.into_allocations();
                if let Some(code) = code.as_mut() {
                    write_u32(&mut code.bodies, u32::try_from(rewritten.len()).map_err(|_| too_large())?);
                    code.bodies.extend_from_slice(&rewritten);
                }
            }
            Payload::End(_) => {}
            other => {
                if let Some(code) = code.take() {
                    code.write(&mut out)?;
                }
                if let Some((id, range)) = other.as_section() {
                    write_section(&mut out, id, &module[checked(range, module.len())?])?;
                }
            }
        }
    }
    if let Some(code) = code.take() {
        code.write(&mut out)?;
    }
    Ok(out)
}

/// A code section being rebuilt: its function count and the encoded bodies so far.
struct CodeSection {
    count: u32,
    bodies: Vec<u8>,
}

impl CodeSection {
    fn write(self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut content = Vec::with_capacity(self.bodies.len() + 5);
        write_u32(&mut content, self.count);
        content.extend_from_slice(&self.bodies);
        write_section(out, 10, &content)
    }
}

/// A section: its id, its size and its bytes.
fn write_section(out: &mut Vec<u8>, id: u8, content: &[u8]) -> Result<(), RewriteError> {
    out.push(id);
    write_u32(out, u32::try_from(content.len()).map_err(|_| too_large())?);
    out.extend_from_slice(content);
    Ok(())
}

/// The error for a rewritten section or body past wasm's 4 GiB size fields.
fn too_large() -> RewriteError {
    RewriteError::TooLarge
}

/// `range` if it lies within a module of `len` bytes (the parser's ranges always do).
fn checked(range: Range<usize>, len: usize) -> Result<Range<usize>, RewriteError> {
    if range.start <= range.end && range.end <= len { Ok(range) } else { Err(RewriteError::Internal("a section range outside the module")) }
}

/// A code entry the validator did not hand back as a function: cannot happen for a module the
/// validator accepted so far, and is refused rather than trusted if it does.
fn unreachable_payload() -> Result<(), RewriteError> {
    Err(RewriteError::Internal("a function body without a function to validate"))
}

/// `value` as unsigned LEB128.
pub(crate) fn write_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod review_tests;
#[cfg(test)]
mod tests;

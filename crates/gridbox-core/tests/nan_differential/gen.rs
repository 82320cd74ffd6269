//! Random float programs, as WAT text: a module scaffold (memory, data holding odd NaN bit
//! patterns, globals, helpers in a table, `$flush` printing the result region with `fd_write`)
//! and the statements of function bodies. Expressions are in `expr.rs`.
//!
//! Every program terminates: loops count with their own counter locals, random branches never
//! target a loop, and a helper only calls helpers defined before it.

use std::fmt::Write as _;

pub(crate) use crate::rng::Rng;

/// Value types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    I32,
    I64,
    F32,
    F64,
    V128,
}

impl Ty {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::I32 => "i32",
            Ty::I64 => "i64",
            Ty::F32 => "f32",
            Ty::F64 => "f64",
            Ty::V128 => "v128",
        }
    }
}

/// What a result slot holds, for counting the NaNs that reached memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    F32,
    F64,
    V128,
    Other,
}

// Memory layout. The iovec and `nwritten` live below everything printed.
pub(crate) const DATA_F32: u32 = 64;
pub(crate) const DATA_F64: u32 = 128;
pub(crate) const DATA_V128: u32 = 256;
pub(crate) const SCRATCH: u32 = 512;
pub(crate) const RESULT: u32 = 1024;
pub(crate) const RESULT_SLOTS: u32 = 160;
/// What `$flush` prints: scratch and results.
pub(crate) const REGION_START: u32 = SCRATCH;
pub(crate) const REGION_LEN: u32 = RESULT + RESULT_SLOTS * 16 - SCRATCH;

/// f32 bit patterns in the data segment: canonical and odd NaNs (signs, payloads, signalling),
/// infinities, zeros, ordinary and denormal numbers.
pub(crate) const F32_BITS: [u32; 16] = [
    0x7fc0_0000,
    0xffc0_0000,
    0x7fc0_0123,
    0xffd5_4321,
    0x7f80_0001,
    0xff80_0001,
    0x7fbf_ffff,
    0xffff_ffff,
    0x7f80_0000,
    0xff80_0000,
    0,
    0x8000_0000,
    0x3f80_0000,
    0xc000_0000,
    1,
    0x7f7f_ffff,
];
pub(crate) const F64_BITS: [u64; 16] = [
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0000,
    0x7ff8_0000_0000_0123,
    0xfffc_0000_0000_abcd,
    0x7ff0_0000_0000_0001,
    0xfff0_0000_0000_0001,
    0x7ff7_ffff_ffff_ffff,
    0xffff_ffff_ffff_ffff,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0,
    0x8000_0000_0000_0000,
    0x3ff0_0000_0000_0000,
    0xc000_0000_0000_0000,
    1,
    0x7fef_ffff_ffff_ffff,
];

/// A generated program.
pub(crate) struct Program {
    pub(crate) wat: String,
    /// Every result slot written, with what it holds.
    pub(crate) slots: Vec<(u32, Slot)>,
}

/// A helper's signature.
#[derive(Clone)]
pub(crate) struct Sig {
    pub(crate) params: Vec<Ty>,
    pub(crate) results: Vec<Ty>,
}

/// A label in scope: the types a branch to it carries, and whether it is a loop (random
/// branches never target loops, so that every program ends).
#[derive(Clone)]
pub(crate) struct Label {
    pub(crate) types: Vec<Ty>,
    pub(crate) is_loop: bool,
}

/// The function being generated.
pub(crate) struct Func {
    /// Params first, then the declared locals.
    pub(crate) locals: Vec<Ty>,
    /// Outermost (the function's own label) first.
    pub(crate) labels: Vec<Label>,
    /// Helpers this function may call: `0..callable`.
    pub(crate) callable: usize,
    pub(crate) results: Vec<Ty>,
    /// Loop nesting; counters are the locals `counter_base + level`.
    pub(crate) loop_level: u32,
    pub(crate) counter_base: u32,
    /// Calls left to make (bounds the work a run does).
    pub(crate) calls_left: u32,
    /// Whether `$flush` may be called here.
    pub(crate) may_flush: bool,
}

/// The locals every function declares after its params: three of each float type, two
/// v128, two i32, one i64, then the loop counters.
const SCRATCH_LOCALS: [Ty; 11] = [Ty::F32, Ty::F32, Ty::F32, Ty::F64, Ty::F64, Ty::F64, Ty::V128, Ty::V128, Ty::I32, Ty::I32, Ty::I64];
pub(crate) const MAX_LOOP_LEVEL: u32 = 2;

pub(crate) struct Gen {
    pub(crate) rng: Rng,
    pub(crate) helpers: Vec<Sig>,
    pub(crate) slots: Vec<(u32, Slot)>,
    pub(crate) next_slot: u32,
    pub(crate) next_scratch: u32,
    pub(crate) f: Func,
    pub(crate) flushes_left: u32,
    /// Whether the engine runs tail calls (checked once by the caller).
    pub(crate) tail_calls: bool,
}

impl Gen {
    /// A fresh result slot of 16 bytes (an old one again once they run out).
    pub(crate) fn slot(&mut self, kind: Slot) -> u32 {
        let addr = if self.next_slot < RESULT_SLOTS {
            self.next_slot += 1;
            RESULT + (self.next_slot - 1) * 16
        } else {
            RESULT + self.rng.below(u64::from(RESULT_SLOTS)) as u32 * 16
        };
        self.slots.push((addr, kind));
        addr
    }

    /// Four consecutive slots, for a store inside a loop at `slot + (counter & 3) * 16`.
    pub(crate) fn slots4(&mut self, kind: Slot) -> u32 {
        if self.next_slot + 4 > RESULT_SLOTS {
            return self.slot(kind);
        }
        let base = self.slot(kind);
        for _ in 1..4 {
            self.slot(kind);
        }
        base
    }

    /// A scratch address (16 bytes) that later loads may read back.
    pub(crate) fn scratch(&mut self) -> u32 {
        self.next_scratch = (self.next_scratch + 1) % 32;
        SCRATCH + self.next_scratch * 16
    }

    /// A random local of type `ty`.
    pub(crate) fn local(&mut self, ty: Ty) -> u32 {
        let candidates: Vec<u32> = (0..self.f.locals.len() as u32).filter(|&i| self.f.locals[i as usize] == ty).collect();
        self.rng.pick(&candidates)
    }

    /// A loop counter's local at the current loop level (deeper loops use the next one).
    pub(crate) fn counter(&self) -> u32 {
        self.f.counter_base + self.f.loop_level
    }

    /// Numeric depths of the labels (not loops) whose branch types are exactly `types`.
    pub(crate) fn targets(&self, types: &[Ty]) -> Vec<u32> {
        let n = self.f.labels.len();
        (0..n).filter(|&i| !self.f.labels[i].is_loop && self.f.labels[i].types == types).map(|i| (n - 1 - i) as u32).collect()
    }

    /// A sequence of statements (net stack effect nothing).
    pub(crate) fn stmts(&mut self, count: u64, depth: u32) -> String {
        let mut out = String::new();
        for _ in 0..count {
            out.push_str(&self.stmt(depth));
            out.push(' ');
        }
        out
    }

    /// `min` plus fewer than `extra` statements.
    pub(crate) fn stmts_r(&mut self, min: u64, extra: u64, depth: u32) -> String {
        let count = min + self.rng.below(extra);
        self.stmts(count, depth)
    }

    pub(crate) fn stmt(&mut self, depth: u32) -> String {
        let d = depth.saturating_sub(1);
        let s = match self.rng.below(24) {
            0..=5 => self.store_stmt(d),
            6 => self.v128_store_stmt(d),
            7..=8 => {
                let ty = self.rng.pick(&[Ty::F32, Ty::F64, Ty::V128, Ty::F32, Ty::F64, Ty::I32]);
                let l = self.local(ty);
                let e = self.expr(ty, d);
                format!("(local.set {l} {e})")
            }
            9 => {
                let (g, ty) = self.rng.pick(&[(0, Ty::F32), (1, Ty::F32), (2, Ty::F64), (3, Ty::F64), (4, Ty::V128)]);
                let e = self.expr(ty, d);
                format!("(global.set {g} {e})")
            }
            10..=11 if depth > 0 => {
                let c = self.cond(d);
                self.f.labels.push(Label { types: vec![], is_loop: false });
                let (a, b) = (self.stmts_r(1, 3, d), self.stmts_r(0, 3, d));
                self.f.labels.pop();
                format!("(if {c} (then {a}) (else {b}))")
            }
            12..=13 if depth > 0 && self.f.loop_level < MAX_LOOP_LEVEL => self.loop_stmt(d),
            14 if depth > 0 => {
                self.f.labels.push(Label { types: vec![], is_loop: false });
                let a = self.stmts_r(1, 2, d);
                let c = self.cond(d);
                let b = self.stmts_r(1, 2, d);
                self.f.labels.pop();
                format!("(block {a} (br_if 0 {c}) {b})")
            }
            15..=16 if self.f.calls_left > 0 && self.f.callable > 0 => self.call_stmt(d),
            17 => self.memory_stmt(d),
            18 if self.f.may_flush && self.flushes_left > 0 => {
                self.flushes_left -= 1;
                "(call $flush)".to_string()
            }
            19 => {
                let ty = self.rng.pick(&[Ty::F32, Ty::F64, Ty::V128, Ty::I32]);
                format!("(drop {})", self.expr(ty, d))
            }
            20 => {
                // Stored to scratch, read back by later loads: a computed NaN that went
                // through memory is a loaded value afterwards.
                let ty = self.rng.pick(&[Ty::F32, Ty::F64]);
                let addr = self.scratch();
                format!("({}.store (i32.const {addr}) {})", ty.name(), self.expr(ty, d))
            }
            21 if !self.f.may_flush => self.early_return(d),
            _ => "(nop)".to_string(),
        };
        if self.rng.chance(8) { format!("(nop) {s}") } else { s }
    }

    /// A float (or its bits) stored in every width to a fresh slot.
    fn store_stmt(&mut self, d: u32) -> String {
        let ty = self.rng.pick(&[Ty::F32, Ty::F64]);
        let e = self.expr(ty, d);
        let (kind, mut op, mut val) = match (ty, self.rng.below(6)) {
            (Ty::F32, 0) => (Slot::F32, "i32.store", format!("(i32.reinterpret_f32 {e})")),
            (Ty::F32, 1) => (Slot::Other, "i32.store16", format!("(i32.shr_u (i32.reinterpret_f32 {e}) (i32.const 16))")),
            (Ty::F32, 2) => (Slot::Other, "i32.store8", format!("(i32.shr_u (i32.reinterpret_f32 {e}) (i32.const 24))")),
            (Ty::F32, _) => (Slot::F32, "f32.store", e),
            (_, 0) => (Slot::F64, "i64.store", format!("(i64.reinterpret_f64 {e})")),
            (_, 1) => (Slot::Other, "i64.store32", format!("(i64.shr_u (i64.reinterpret_f64 {e}) (i64.const 32))")),
            (_, 2) => (Slot::Other, "i64.store16", format!("(i64.shr_u (i64.reinterpret_f64 {e}) (i64.const 48))")),
            (_, _) => (Slot::F64, "f64.store", e),
        };
        if self.rng.chance(10) {
            // Through a tee: the stored value and the local's later readers see one value.
            let l = self.local(ty);
            if kind != Slot::Other && op.starts_with('f') {
                val = format!("(local.tee {l} {val})");
            } else {
                op = if ty == Ty::F32 { "f32.store" } else { "f64.store" };
                val = format!("(local.tee {l} {})", self.expr(ty, d));
                return self.store_at(if ty == Ty::F32 { Slot::F32 } else { Slot::F64 }, op, &val);
            }
        }
        self.store_at(kind, op, &val)
    }

    /// `op` of `val` at a fresh slot, or at one of four slots picked by the loop counter.
    pub(crate) fn store_at(&mut self, kind: Slot, op: &str, val: &str) -> String {
        if self.f.loop_level > 0 && self.rng.chance(50) {
            let base = self.slots4(kind);
            let c = self.f.counter_base + self.f.loop_level - 1;
            return format!("({op} offset={base} (i32.shl (i32.and (local.get {c}) (i32.const 3)) (i32.const 4)) {val})");
        }
        let addr = self.slot(kind);
        if self.rng.chance(30) { format!("({op} offset={} (i32.const {}) {val})", addr - RESULT, RESULT) } else { format!("({op} (i32.const {addr}) {val})") }
    }

    /// A value of type `ty` stored with its own type's store.
    pub(crate) fn store_typed(&mut self, ty: Ty, val: &str) -> String {
        self.store_at(ty_slot(ty), &format!("{}.store", ty.name()), val)
    }

    fn v128_store_stmt(&mut self, d: u32) -> String {
        let v = self.expr(Ty::V128, d);
        match self.rng.below(4) {
            0 => {
                let a = self.slot(Slot::Other);
                format!("(v128.store32_lane {} (i32.const {a}) {v})", self.rng.below(4))
            }
            1 => {
                let a = self.slot(Slot::Other);
                format!("(v128.store64_lane {} (i32.const {a}) {v})", self.rng.below(2))
            }
            _ => self.store_at(Slot::V128, "v128.store", &v),
        }
    }

    /// A counted loop: an accumulator local mixing its old (possibly loaded) value with
    /// computed ones, stores inside, the accumulator stored after.
    fn loop_stmt(&mut self, d: u32) -> String {
        let c = self.counter();
        let n = 1 + self.rng.below(6);
        let ty = self.rng.pick(&[Ty::F32, Ty::F64, Ty::V128]);
        let acc = self.local(ty);
        let init = self.expr(ty, d.min(1));
        self.f.loop_level += 1;
        self.f.labels.push(Label { types: vec![], is_loop: true });
        let body = self.stmts_r(1, 3, d);
        let kind = self.rng.below(3);
        let cond = self.cond(0);
        // Inside the `if` of the third kind, one more label encloses the values.
        if kind == 2 {
            self.f.labels.push(Label { types: vec![], is_loop: false });
        }
        let step = self.expr(ty, d);
        let other = self.expr(ty, 0);
        if kind == 2 {
            self.f.labels.pop();
        }
        let update = match kind {
            0 => format!("(local.set {acc} (select {step} {other} {cond}))"),
            1 => format!("(local.set {acc} {step})"),
            _ => format!("(if {cond} (then (local.set {acc} {step})) (else (local.set {acc} {other})))"),
        };
        let inner_store = if self.rng.chance(50) { self.store_typed(ty, &format!("(local.get {acc})")) } else { String::new() };
        self.f.labels.pop();
        self.f.loop_level -= 1;
        let after = self.store_at(ty_slot(ty), &format!("{}.store", ty.name()), &format!("(local.get {acc})"));
        format!(
            "(local.set {acc} {init}) (local.set {c} (i32.const 0)) (loop {body} {update} {inner_store} (br_if 0 (i32.lt_u (local.tee {c} (i32.add (local.get {c}) (i32.const 1))) (i32.const {n})))) {after}"
        )
    }

    /// A call whose results are stored, set to locals or dropped.
    fn call_stmt(&mut self, d: u32) -> String {
        let (call, results) = self.call_any(d);
        let mut out = call;
        for ty in results.iter().rev() {
            match self.rng.below(3) {
                0 => out.push_str(" (drop)"),
                1 => write!(out, " (local.set {})", self.local(*ty)).unwrap_or(()),
                _ => {
                    let l = self.local(*ty);
                    write!(out, " (local.set {l}) {}", self.store_at(ty_slot(*ty), &format!("{}.store", ty.name()), &format!("(local.get {l})"))).unwrap_or(());
                }
            }
        }
        out
    }

    /// `(call ...)` or `(call_indirect ...)` of a random callable helper: the text and the
    /// result types it leaves.
    pub(crate) fn call_any(&mut self, d: u32) -> (String, Vec<Ty>) {
        self.f.calls_left -= 1;
        let j = self.rng.below(self.f.callable as u64) as usize;
        let sig = self.helpers[j].clone();
        let args: Vec<String> = sig.params.iter().map(|&ty| self.expr(ty, d.min(2))).collect();
        let text = if self.rng.chance(30) {
            format!("(call_indirect (type $t{j}) {} (i32.const {j}))", args.join(" "))
        } else {
            format!("(call $h{j} {})", args.join(" "))
        };
        (text, sig.results)
    }

    fn memory_stmt(&mut self, d: u32) -> String {
        let dst = self.slot(Slot::Other);
        let len = if self.rng.chance(50) {
            format!("(i32.const {})", 1 + self.rng.below(16))
        } else {
            format!("(i32.and {} (i32.const 15))", self.expr(Ty::I32, d.min(2)))
        };
        match self.rng.below(4) {
            0 => format!("(memory.fill (i32.const {dst}) (i32.reinterpret_f32 {}) {len})", self.expr(Ty::F32, d)),
            1 => format!("(memory.init $passive (i32.const {dst}) (i32.const {}) {len})", self.rng.below(48)),
            2 => {
                let src = SCRATCH + self.rng.below(496) as u32;
                format!("(memory.copy (i32.const {dst}) (i32.const {src}) {len})")
            }
            _ => {
                let src = DATA_F32 + 4 * self.rng.below(70) as u32;
                format!("(memory.copy (i32.const {dst}) (i32.const {src}) {len})")
            }
        }
    }

    /// `return` (or a `br` to the function's label) under a condition, with the results.
    fn early_return(&mut self, d: u32) -> String {
        let results = self.f.results.clone();
        let c = self.cond(d);
        let depth = self.f.labels.len(); // inside the `if` below, the function label is this deep
        self.f.labels.push(Label { types: vec![], is_loop: false });
        let vals: Vec<String> = results.iter().map(|&ty| self.expr(ty, d)).collect();
        self.f.labels.pop();
        if self.rng.chance(50) { format!("(if {c} (then (return {})))", vals.join(" ")) } else { format!("(if {c} (then (br {depth} {})))", vals.join(" ")) }
    }
}

pub(crate) fn ty_slot(ty: Ty) -> Slot {
    match ty {
        Ty::F32 => Slot::F32,
        Ty::F64 => Slot::F64,
        Ty::V128 => Slot::V128,
        _ => Slot::Other,
    }
}

/// Bytes as a WAT string literal.
pub(crate) fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// The locals after `params`, as WAT, and the index of the first loop counter.
pub(crate) fn declare_locals(params: &[Ty]) -> (Vec<Ty>, String, u32) {
    let mut locals = params.to_vec();
    locals.extend_from_slice(&SCRATCH_LOCALS);
    let counter_base = locals.len() as u32;
    for _ in 0..=MAX_LOOP_LEVEL {
        locals.push(Ty::I32);
    }
    let decl = locals[params.len()..].iter().map(|t| t.name()).collect::<Vec<_>>().join(" ");
    (locals, format!("(local {decl})"), counter_base)
}

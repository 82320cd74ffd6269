//! Expressions of every type, as folded WAT that leaves exactly one value (a sequence of
//! folded instructions may stand for one: `(call $h) (drop)` leaves the call's first result).
//!
//! Float leaves are the values whose bits must survive moves (constants with payloads and
//! signs, loads of odd NaN patterns, reinterpreted odd integers, params, globals); nodes are
//! the arithmetic that makes new NaNs, sign operations, conversions, and every way a value can
//! travel (select, tee, blocks, ifs and loops with params and results, branches with values,
//! calls, lanes).

use super::r#gen::{DATA_F32, DATA_F64, DATA_V128, Gen, Label, MAX_LOOP_LEVEL, SCRATCH, Ty};

pub(crate) const F32_CONSTS: [&str; 18] = [
    "nan",
    "-nan",
    "nan:0x123",
    "-nan:0x7fffff",
    "nan:0x1",
    "-nan:0x200001",
    "nan:0x400000",
    "inf",
    "-inf",
    "0",
    "-0",
    "1",
    "-1.5",
    "0x1p-149",
    "3.4e38",
    "2",
    "0.5",
    "-7",
];
pub(crate) const F64_CONSTS: [&str; 18] = [
    "nan",
    "-nan",
    "nan:0x123",
    "-nan:0xfffffffffffff",
    "nan:0x1",
    "-nan:0x4000000000001",
    "nan:0x8000000000000",
    "inf",
    "-inf",
    "0",
    "-0",
    "1",
    "-1.5",
    "0x1p-1074",
    "1e308",
    "2",
    "0.5",
    "-7",
];

impl Gen {
    /// An expression of type `ty`, at most `depth` deep.
    pub(crate) fn expr(&mut self, ty: Ty, depth: u32) -> String {
        let e = match ty {
            Ty::F32 | Ty::F64 => self.float(ty, depth),
            Ty::I32 => self.int32(depth),
            Ty::I64 => self.int64(depth),
            Ty::V128 => self.vector(depth),
        };
        if self.rng.chance(3) { format!("(nop) {e}") } else { e }
    }

    /// An i32 that is often 0 or 1, for conditions.
    pub(crate) fn cond(&mut self, depth: u32) -> String {
        let d = depth.saturating_sub(1);
        match self.rng.below(6) {
            0 => {
                let ty = self.rng.pick(&[Ty::F32, Ty::F64]);
                let op = self.rng.pick(&["eq", "ne", "lt", "gt", "le", "ge"]);
                format!("({}.{op} {} {})", ty.name(), self.expr(ty, d), self.expr(ty, d))
            }
            // The sign and the lowest payload bit of a float: NaN bits steering control flow.
            1 => format!("(i32.shr_u (i32.reinterpret_f32 {}) (i32.const 31))", self.expr(Ty::F32, d)),
            2 => format!("(i32.wrap_i64 (i64.and (i64.reinterpret_f64 {}) (i64.const 1)))", self.expr(Ty::F64, d)),
            3 => format!("(i32.const {})", self.rng.below(2)),
            _ => self.int32(depth),
        }
    }

    fn float(&mut self, ty: Ty, depth: u32) -> String {
        if depth == 0 || self.rng.chance(20) {
            return self.float_leaf(ty);
        }
        let p = ty.name();
        let d = depth - 1;
        match self.rng.below(30) {
            0..=5 => {
                let op = self.rng.pick(&["add", "sub", "mul", "div", "min", "max"]);
                format!("({p}.{op} {} {})", self.expr(ty, d), self.expr(ty, d))
            }
            6..=7 => {
                let op = self.rng.pick(&["sqrt", "ceil", "floor", "trunc", "nearest"]);
                format!("({p}.{op} {})", self.expr(ty, d))
            }
            8..=9 => {
                let op = self.rng.pick(&["neg", "abs"]);
                format!("({p}.{op} {})", self.expr(ty, d))
            }
            10 => format!("({p}.copysign {} {})", self.expr(ty, d), self.expr(ty, d)),
            11..=12 => self.nan_maker(ty, d),
            13 => match (ty, self.rng.below(3)) {
                (Ty::F32, 0) => format!("(f32.demote_f64 {})", self.expr(Ty::F64, d)),
                (Ty::F64, 0) => format!("(f64.promote_f32 {})", self.expr(Ty::F32, d)),
                (_, 1) => format!("({p}.convert_i32_{} {})", self.rng.pick(&["s", "u"]), self.expr(Ty::I32, d)),
                _ => format!("({p}.convert_i64_{} {})", self.rng.pick(&["s", "u"]), self.expr(Ty::I64, d)),
            },
            14 => {
                let i = if ty == Ty::F32 { Ty::I32 } else { Ty::I64 };
                format!("({p}.reinterpret_{} {})", i.name(), self.expr(i, d))
            }
            15..=16 => {
                let (a, b, c) = (self.expr(ty, d), self.expr(ty, d), self.cond(d));
                if self.rng.chance(50) { format!("(select {a} {b} {c})") } else { format!("(select (result {p}) {a} {b} {c})") }
            }
            17 => format!("(local.tee {} {})", self.local(ty), self.expr(ty, d)),
            18..=19 => self.block_expr(ty, d),
            20 => {
                let c = self.cond(d);
                self.f.labels.push(Label { types: vec![ty], is_loop: false });
                let (sa, a, sb, b) = (self.stmts_r(0, 2, d), self.expr(ty, d), self.stmts_r(0, 2, d), self.expr(ty, d));
                self.f.labels.pop();
                format!("(if (result {p}) {c} (then {sa} {a}) (else {sb} {b}))")
            }
            21 => self.br_if_expr(ty, d),
            22 if self.f.calls_left > 0 => self.call_expr(ty, d).unwrap_or_else(|| self.float_leaf(ty)),
            23 => {
                let v = self.expr(Ty::V128, d);
                if ty == Ty::F32 {
                    format!("(f32x4.extract_lane {} {v})", self.rng.below(4))
                } else {
                    format!("(f64x2.extract_lane {} {v})", self.rng.below(2))
                }
            }
            24 if self.f.loop_level < MAX_LOOP_LEVEL => self.loop_expr(ty, d),
            25 => self.with_param(ty, d),
            _ => self.float_leaf(ty),
        }
    }

    /// Arithmetic that makes a NaN (or carries an odd one into arithmetic).
    fn nan_maker(&mut self, ty: Ty, d: u32) -> String {
        let p = ty.name();
        match self.rng.below(8) {
            0 => format!("({p}.div ({p}.const 0) ({p}.const 0))"),
            1 => format!("({p}.div ({p}.const -0) {})", self.expr(ty, d.min(1))),
            2 => format!("({p}.sub ({p}.const inf) ({p}.const inf))"),
            3 => format!("({p}.mul ({p}.const -inf) {})", self.expr(ty, d)),
            4 => format!("({p}.sqrt ({p}.const -1))"),
            5 => format!("({p}.sqrt ({p}.neg ({p}.abs {})))", self.expr(ty, d)),
            6 => format!("({p}.add {} {})", self.float_leaf(ty), self.expr(ty, d)),
            _ => format!("({p}.{} {} ({p}.const -nan:0x5))", self.rng.pick(&["min", "max"]), self.expr(ty, d)),
        }
    }

    pub(crate) fn float_leaf(&mut self, ty: Ty) -> String {
        let p = ty.name();
        let (size, data, shift) = if ty == Ty::F32 { (4, DATA_F32, 2) } else { (8, DATA_F64, 3) };
        match self.rng.below(9) {
            0..=1 => format!("({p}.const {})", self.rng.pick(if ty == Ty::F32 { &F32_CONSTS } else { &F64_CONSTS })),
            2 => format!("({p}.load (i32.const {}))", data + size * self.rng.below(16) as u32),
            3 => format!("({p}.load offset={data} (i32.const {}))", size * self.rng.below(16) as u32),
            4 => format!("({p}.load offset={data} (i32.shl (i32.and (local.get {}) (i32.const 15)) (i32.const {shift})))", self.local(Ty::I32)),
            5 => format!("(local.get {})", self.local(ty)),
            6 => format!("(global.get {})", self.rng.pick(if ty == Ty::F32 { &[0, 1, 6] } else { &[2, 3, 7] })),
            7 => {
                // An odd NaN made from integer bits: any sign, any payload, quiet or signalling.
                let sign = self.rng.below(2);
                if ty == Ty::F32 {
                    let bits = (sign << 31) as u32 | 0x7f80_0000 | ((self.rng.next_u64() as u32 & 0x7f_ffff) | 1);
                    format!("(f32.reinterpret_i32 (i32.const {bits:#x}))")
                } else {
                    let bits = (sign << 63) | 0x7ff0_0000_0000_0000 | ((self.rng.next_u64() & 0xf_ffff_ffff_ffff) | 1);
                    format!("(f64.reinterpret_i64 (i64.const {bits:#x}))")
                }
            }
            _ => format!("({p}.load (i32.const {}))", SCRATCH + 16 * self.rng.below(32) as u32),
        }
    }

    /// `(block (result T) statements tail)`: the value falls out, or is branched out with
    /// `br`, `br_if` or `br_table` (possibly to an outer label), maybe followed by dead code.
    pub(crate) fn block_expr(&mut self, ty: Ty, d: u32) -> String {
        self.f.labels.push(Label { types: vec![ty], is_loop: false });
        let pre = self.stmts_r(0, 3, d);
        let e = self.expr(ty, d);
        let tail = match self.rng.below(5) {
            0 => format!("(br 0 {e}) {}", self.dead_code(ty)),
            1 => {
                let targets = self.targets(&[ty]);
                let list: Vec<String> = (0..1 + self.rng.below(4)).map(|_| self.rng.pick(&targets).to_string()).collect();
                let idx = self.expr(Ty::I32, d.min(1));
                format!("(br_table {} 0 {e} {idx}) {}", list.join(" "), self.dead_code(ty))
            }
            2 => {
                let targets = self.targets(&[ty]);
                let t = self.rng.pick(&targets);
                let (c, e2) = (self.cond(d), self.expr(ty, d));
                format!("(br_if {t} {e} {c}) (drop) {e2}")
            }
            _ => e,
        };
        self.f.labels.pop();
        format!("(block (result {}) {pre} {tail})", ty.name())
    }

    /// Instructions after an unconditional branch: stack-polymorphic, so operands may be
    /// missing altogether. Each piece leaves the stack as it found it.
    fn dead_code(&mut self, ty: Ty) -> String {
        let mut out = String::new();
        for _ in 0..self.rng.below(3) {
            let l = self.local(ty);
            let piece = match self.rng.below(12) {
                0 => "(f32.neg) (drop)".to_string(),
                1 => "(f64.abs) (drop)".to_string(),
                2 => "(select) (drop)".to_string(),
                3 => "(select (result f32)) (f32.store)".to_string(),
                4 => "(f32.add) (f32.store)".to_string(),
                5 => "(f64.copysign) (i64.reinterpret_f64) (drop)".to_string(),
                6 => format!("(local.set {l})"),
                7 => "(f32x4.splat) (v128.store)".to_string(),
                8 => "(global.set 2)".to_string(),
                9 => "(f32.demote_f64) (f32.sqrt) (drop)".to_string(),
                10 => self.stmt(1),
                _ => "(nop)".to_string(),
            };
            out.push_str(&piece);
            out.push(' ');
        }
        out
    }

    /// `(br_if L value cond)` as an expression: when not taken the value stays.
    fn br_if_expr(&mut self, ty: Ty, d: u32) -> String {
        let targets = self.targets(&[ty]);
        if targets.is_empty() {
            return self.block_expr(ty, d);
        }
        let t = self.rng.pick(&targets);
        let (e, c) = (self.expr(ty, d), self.cond(d));
        format!("(br_if {t} {e} {c})")
    }

    /// A call's first result of type `ty`, the other results set to locals or dropped.
    pub(crate) fn call_expr(&mut self, ty: Ty, d: u32) -> Option<String> {
        let candidates: Vec<usize> = (0..self.f.callable).filter(|&j| self.helpers[j].results.first() == Some(&ty)).collect();
        if candidates.is_empty() {
            return None;
        }
        self.f.calls_left -= 1;
        let j = self.rng.pick(&candidates);
        let sig = self.helpers[j].clone();
        let args: Vec<String> = sig.params.iter().map(|&t| self.expr(t, d.min(2))).collect();
        let mut out = if self.rng.chance(30) {
            format!("(call_indirect (type $t{j}) {} (i32.const {j}))", args.join(" "))
        } else {
            format!("(call $h{j} {})", args.join(" "))
        };
        for &t in sig.results[1..].iter().rev() {
            if self.rng.chance(50) {
                out.push_str(" (drop)");
            } else {
                out.push_str(&format!(" (local.set {})", self.local(t)));
            }
        }
        Some(out)
    }

    /// A loop with a param and a result: the first iteration gets `init` (often loaded), the
    /// back edge carries a computed value; each iteration's param is stored.
    fn loop_expr(&mut self, ty: Ty, d: u32) -> String {
        let c = self.counter();
        let n = 1 + self.rng.below(5);
        let x = self.local(ty);
        let init = self.expr(ty, d.min(1));
        self.f.loop_level += 1;
        self.f.labels.push(Label { types: vec![ty], is_loop: true });
        let store = if self.rng.chance(60) { self.store_typed(ty, &format!("(local.get {x})")) } else { String::new() };
        let body = self.stmts_r(0, 2, d);
        let next = match self.rng.below(3) {
            0 => format!("(local.get {x})"),
            1 => format!("({}.{} (local.get {x}) {})", ty.name(), self.rng.pick(&["add", "mul", "min", "sub"]), self.expr(ty, d)),
            _ => self.expr(ty, d),
        };
        self.f.labels.pop();
        self.f.loop_level -= 1;
        let p = ty.name();
        format!(
            "{init} (local.set {c} (i32.const 0)) (loop (param {p}) (result {p}) (local.set {x}) {store} {body} (br_if 0 {next} (i32.lt_u (local.tee {c} (i32.add (local.get {c}) (i32.const 1))) (i32.const {n}))))"
        )
    }

    /// A value passed into a `block` or an `if` as its param.
    fn with_param(&mut self, ty: Ty, d: u32) -> String {
        let p = ty.name();
        let arg = self.expr(ty, d);
        let c = self.cond(0);
        self.f.labels.push(Label { types: vec![ty], is_loop: false });
        let out = if self.rng.chance(50) {
            format!("{arg} (block (param {p}) (result {p}) {})", self.param_op(ty, d))
        } else {
            let (a, b) = (self.param_op(ty, d), self.param_op(ty, d));
            format!("{arg} (if (param {p}) (result {p}) {c} (then {a}) (else {b}))")
        };
        self.f.labels.pop();
        out
    }

    /// Instructions taking a block's param of type `ty` and leaving one of that type.
    fn param_op(&mut self, ty: Ty, d: u32) -> String {
        let p = ty.name();
        match self.rng.below(5) {
            0 => String::new(),
            1 => format!("({p}.{})", self.rng.pick(&["neg", "abs", "sqrt", "ceil"])),
            2 => format!("(local.tee {})", self.local(ty)),
            3 => format!("({p}.{} {})", self.rng.pick(&["add", "copysign", "max"]), self.expr(ty, d.min(1))),
            _ => format!("(drop) {}", self.expr(ty, d.min(1))),
        }
    }

    fn int32(&mut self, depth: u32) -> String {
        if depth == 0 || self.rng.chance(15) {
            return match self.rng.below(4) {
                0 => format!("(local.get {})", self.local(Ty::I32)),
                1 => "(global.get 5)".to_string(),
                _ => format!("(i32.const {})", self.rng.pick(&[0i64, 1, 2, 3, -1, 7, 0x7fc0_0000, 255])),
            };
        }
        let d = depth - 1;
        match self.rng.below(13) {
            0 => format!("(i32.reinterpret_f32 {})", self.expr(Ty::F32, d)),
            1 => format!("(i32.trunc_sat_{} {})", self.rng.pick(&["f32_s", "f32_u"]), self.expr(Ty::F32, d)),
            2 => format!("(i32.trunc_sat_{} {})", self.rng.pick(&["f64_s", "f64_u"]), self.expr(Ty::F64, d)),
            3 => format!("(i32.wrap_i64 {})", self.expr(Ty::I64, d)),
            4 => format!("(i32x4.extract_lane {} {})", self.rng.below(4), self.expr(Ty::V128, d)),
            5 => format!("(i8x16.extract_lane_u {} {})", self.rng.below(16), self.expr(Ty::V128, d)),
            6 => format!("(i32x4.bitmask {})", self.expr(Ty::V128, d)),
            7 => format!("(v128.any_true {})", self.expr(Ty::V128, d)),
            8 => format!("(i64x2.all_true {})", self.expr(Ty::V128, d)),
            9 => {
                let op = self.rng.pick(&["add", "xor", "and", "or", "sub", "rotl"]);
                format!("(i32.{op} {} {})", self.expr(Ty::I32, d), self.expr(Ty::I32, d))
            }
            10 => format!("(local.tee {} {})", self.local(Ty::I32), self.expr(Ty::I32, d)),
            _ => self.cond(depth),
        }
    }

    fn int64(&mut self, depth: u32) -> String {
        if depth == 0 || self.rng.chance(20) {
            return match self.rng.below(3) {
                0 => format!("(local.get {})", self.local(Ty::I64)),
                _ => format!("(i64.const {})", self.rng.pick(&[0i64, 1, -1, 0x7ff8_0000_0000_0000, 0x7ff0_0000_0000_0001, 1 << 53])),
            };
        }
        let d = depth - 1;
        match self.rng.below(6) {
            0 | 1 => format!("(i64.reinterpret_f64 {})", self.expr(Ty::F64, d)),
            2 => {
                let (op, ty) = self.rng.pick(&[("f64_s", Ty::F64), ("f64_u", Ty::F64), ("f32_s", Ty::F32), ("f32_u", Ty::F32)]);
                format!("(i64.trunc_sat_{op} {})", self.expr(ty, d))
            }
            3 => format!("(i64.extend_i32_u {})", self.expr(Ty::I32, d)),
            4 => format!("(i64x2.extract_lane {} {})", self.rng.below(2), self.expr(Ty::V128, d)),
            _ => format!("(i64.xor {} {})", self.expr(Ty::I64, d), self.expr(Ty::I64, d)),
        }
    }

    fn vector(&mut self, depth: u32) -> String {
        if depth == 0 || self.rng.chance(15) {
            return self.vector_leaf();
        }
        let d = depth - 1;
        let (s, lanes) = self.rng.pick(&[("f32x4", 4u64), ("f64x2", 2)]);
        let scalar = if s == "f32x4" { Ty::F32 } else { Ty::F64 };
        match self.rng.below(24) {
            0..=3 => {
                let op = self.rng.pick(&["add", "sub", "mul", "div", "min", "max", "pmin", "pmax", "relaxed_min", "relaxed_max"]);
                format!("({s}.{op} {} {})", self.expr(Ty::V128, d), self.expr(Ty::V128, d))
            }
            4..=5 => {
                let op = self.rng.pick(&["sqrt", "ceil", "floor", "trunc", "nearest", "abs", "neg"]);
                format!("({s}.{op} {})", self.expr(Ty::V128, d))
            }
            6 => {
                format!("({s}.relaxed_{} {} {} {})", self.rng.pick(&["madd", "nmadd"]), self.expr(Ty::V128, d), self.expr(Ty::V128, d), self.expr(Ty::V128, d))
            }
            7 => {
                let op = self.rng.pick(&["f32x4.demote_f64x2_zero", "f64x2.promote_low_f32x4"]);
                format!("({op} {})", self.expr(Ty::V128, d))
            }
            // A computed scalar NaN put into lanes.
            8..=9 => format!("({s}.splat {})", self.expr(scalar, d)),
            10..=11 => format!("({s}.replace_lane {} {} {})", self.rng.below(lanes), self.expr(Ty::V128, d), self.expr(scalar, d)),
            12 => {
                let op = self.rng.pick(&["and", "or", "xor", "andnot"]);
                format!("(v128.{op} {} {})", self.expr(Ty::V128, d), self.expr(Ty::V128, d))
            }
            13 => format!("(v128.bitselect {} {} {})", self.expr(Ty::V128, d), self.expr(Ty::V128, d), self.expr(Ty::V128, d)),
            14 => format!("(i32x4.relaxed_laneselect {} {} {})", self.expr(Ty::V128, d), self.expr(Ty::V128, d), self.expr(Ty::V128, d)),
            15 => {
                let op = self.rng.pick(&["i32x4.add", "i64x2.sub", "i8x16.swizzle", "i16x8.relaxed_q15mulr_s", "i32x4.min_u", "f32x4.eq", "f64x2.lt"]);
                format!("({op} {} {})", self.expr(Ty::V128, d), self.expr(Ty::V128, d))
            }
            16 => {
                let lanes: Vec<String> = (0..16).map(|_| self.rng.below(32).to_string()).collect();
                format!("(i8x16.shuffle {} {} {})", lanes.join(" "), self.expr(Ty::V128, d), self.expr(Ty::V128, d))
            }
            17 => {
                let op = self.rng.pick(&[
                    "v128.not",
                    "f32x4.convert_i32x4_s",
                    "i32x4.trunc_sat_f32x4_s",
                    "i32x4.relaxed_trunc_f32x4_u",
                    "f64x2.convert_low_i32x4_s",
                    "i64x2.neg",
                    "i32x4.relaxed_trunc_f64x2_s_zero",
                ]);
                format!("({op} {})", self.expr(Ty::V128, d))
            }
            18 => format!("(i32x4.shl {} {})", self.expr(Ty::V128, d), self.expr(Ty::I32, d.min(1))),
            19 => {
                let (a, b, c) = (self.expr(Ty::V128, d), self.expr(Ty::V128, d), self.cond(d));
                if self.rng.chance(50) { format!("(select {a} {b} {c})") } else { format!("(select (result v128) {a} {b} {c})") }
            }
            20 => format!("(local.tee {} {})", self.local(Ty::V128), self.expr(Ty::V128, d)),
            21 => self.block_expr(Ty::V128, d),
            22 => format!("(v128.load64_lane {} (i32.const {}) {})", self.rng.below(2), DATA_F64 + 8 * self.rng.below(16) as u32, self.expr(Ty::V128, d)),
            23 if self.f.calls_left > 0 => self.call_expr(Ty::V128, d).unwrap_or_else(|| self.vector_leaf()),
            _ => self.vector_leaf(),
        }
    }

    fn vector_leaf(&mut self) -> String {
        match self.rng.below(7) {
            0 => {
                let lanes: Vec<&str> = (0..4).map(|_| self.rng.pick(&F32_CONSTS)).collect();
                format!("(v128.const f32x4 {})", lanes.join(" "))
            }
            1 => {
                let lanes: Vec<&str> = (0..2).map(|_| self.rng.pick(&F64_CONSTS)).collect();
                format!("(v128.const f64x2 {})", lanes.join(" "))
            }
            2 => format!("(v128.load (i32.const {}))", DATA_V128 + 16 * self.rng.below(8) as u32),
            3 => format!("(v128.load32_splat (i32.const {}))", DATA_F32 + 4 * self.rng.below(16) as u32),
            4 => format!("(local.get {})", self.local(Ty::V128)),
            5 => "(global.get 4)".to_string(),
            _ => format!("(v128.load (i32.const {}))", SCRATCH + 16 * self.rng.below(32) as u32),
        }
    }
}

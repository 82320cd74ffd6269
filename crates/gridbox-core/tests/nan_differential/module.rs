//! A whole generated module: imports, memory with the odd-NaN data, globals, helpers in a
//! table, an optional wasm start function, `_start` and `$flush`.

use super::expr::{F32_CONSTS, F64_CONSTS};
use super::r#gen::{
    DATA_F32, F32_BITS, F64_BITS, Func, Gen, Label, Program, REGION_LEN, REGION_START, RESULT_SLOTS, Rng, Sig, Slot, Ty, declare_locals, wat_bytes,
};

/// The program for `seed`; `tail_calls` says whether `return_call` may be used.
pub(crate) fn program(seed: u64, tail_calls: bool) -> Program {
    let mut g = Gen {
        // The generator's own stream, apart from other tests' seeds.
        rng: Rng::new(seed ^ 0x6e61_6e5f_6469_6666),
        helpers: Vec::new(),
        slots: Vec::new(),
        next_slot: 0,
        next_scratch: 0,
        f: func(&[], Vec::new(), 0, 0),
        flushes_left: 3,
        tail_calls,
    };
    let mut wat = String::from(
        "(module\n(import \"wasi_snapshot_preview1\" \"fd_write\" (func $fd_write (param i32 i32 i32 i32) (result i32)))\n(import \"wasi_snapshot_preview1\" \"proc_exit\" (func $proc_exit (param i32)))\n(memory (export \"memory\") 1)\n",
    );
    wat.push_str(&data_segments(&mut g.rng));
    wat.push_str(&globals(&mut g.rng));

    let count = 1 + g.rng.below(5) as usize;
    let pool = [Ty::F32, Ty::F64, Ty::F32, Ty::F64, Ty::V128, Ty::I32];
    for j in 0..count {
        let params: Vec<Ty> = (0..g.rng.below(4)).map(|_| g.rng.pick(&pool)).collect();
        let results: Vec<Ty> = (0..g.rng.below(3)).map(|_| g.rng.pick(&pool[..5])).collect();
        let sig = Sig { params: params.clone(), results: results.clone() };
        wat.push_str(&format!("(type $t{j} (func {} {}))\n", decl("param", &params), decl("result", &results)));
        let (locals, local_decl, counter_base) = declare_locals(&params);
        g.f = Func {
            locals,
            labels: vec![Label { types: results.clone(), is_loop: false }],
            callable: j,
            results: results.clone(),
            loop_level: 0,
            counter_base,
            calls_left: 2,
            may_flush: false,
        };
        let body = g.stmts_r(2, 5, 3);
        let tail = helper_tail(&mut g, j, &results);
        wat.push_str(&format!("(func $h{j} (type $t{j}) {} {} {local_decl}\n  {body}\n  {tail})\n", decl("param", &params), decl("result", &results)));
        g.helpers.push(sig);
    }
    let names: Vec<String> = (0..count).map(|j| format!("$h{j}")).collect();
    wat.push_str(&format!("(table {count} funcref)\n(elem (i32.const 0) func {})\n", names.join(" ")));

    if g.rng.chance(30) {
        g.f = func(&[], Vec::new(), count, 2);
        let body = g.stmts(3, 3);
        let (_, local_decl, _) = declare_locals(&[]);
        wat.push_str(&format!("(func $init {local_decl} {body})\n(start $init)\n"));
    }

    g.f = func(&[], Vec::new(), count, 12);
    g.f.may_flush = true;
    let mut body = g.stmts_r(8, 20, 4);
    if g.rng.chance(15) {
        // A trap somewhere in the middle, usually after what came before was printed.
        let e = trap(&mut g);
        body.push_str(&format!(" (call $flush) {e} {}", g.stmts(3, 3)));
    }
    for (global, ty) in [(0, Ty::F32), (1, Ty::F32), (2, Ty::F64), (3, Ty::F64), (4, Ty::V128), (6, Ty::F32), (7, Ty::F64)] {
        let store = g.store_typed(ty, &format!("(global.get {global})"));
        body.push_str(&format!(" {store}"));
    }
    body.push_str(" (call $flush)");
    if g.rng.chance(10) {
        body.push_str(&format!(" (call $proc_exit (i32.rem_u (i32.reinterpret_f32 {}) (i32.const 100)))", g.expr(Ty::F32, 3)));
    }
    let (_, local_decl, _) = declare_locals(&[]);
    wat.push_str(&format!("(func $start (export \"_start\") {local_decl}\n  {body})\n"));
    wat.push_str(&format!(
        "(func $flush (i32.store (i32.const 0) (i32.const {REGION_START})) (i32.store (i32.const 4) (i32.const {REGION_LEN})) (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))\n)\n"
    ));
    debug_assert!(g.slots.iter().all(|(a, _)| *a + 16 <= super::r#gen::RESULT + RESULT_SLOTS * 16));
    Program { wat, slots: g.slots }
}

/// A function's state with no params, the given results, calling helpers `0..callable`.
fn func(params: &[Ty], results: Vec<Ty>, callable: usize, calls: u32) -> Func {
    let (locals, _, counter_base) = declare_locals(params);
    Func {
        locals,
        labels: vec![Label { types: results.clone(), is_loop: false }],
        callable,
        results,
        loop_level: 0,
        counter_base,
        calls_left: calls,
        may_flush: false,
    }
}

fn decl(what: &str, types: &[Ty]) -> String {
    if types.is_empty() { String::new() } else { format!("({what} {})", types.iter().map(|t| t.name()).collect::<Vec<_>>().join(" ")) }
}

/// How helper `j` ends with its results: falling out, `return`, a `br` to the function's
/// label, or a tail call to an earlier helper with the same results.
fn helper_tail(g: &mut Gen, j: usize, results: &[Ty]) -> String {
    let same: Vec<usize> = (0..j).filter(|&k| g.helpers[k].results == results).collect();
    let choice = g.rng.below(6);
    if g.tail_calls && !same.is_empty() && choice >= 4 {
        let k = g.rng.pick(&same);
        let args: Vec<String> = g.helpers[k].params.clone().iter().map(|&t| g.expr(t, 2)).collect();
        return if choice == 4 {
            format!("(return_call $h{k} {})", args.join(" "))
        } else {
            format!("(return_call_indirect (type $t{k}) {} (i32.const {k}))", args.join(" "))
        };
    }
    let vals: Vec<String> = results.iter().map(|&t| g.expr(t, 3)).collect();
    match choice {
        0 => format!("(return {})", vals.join(" ")),
        1 => format!("(br 0 {})", vals.join(" ")),
        _ => vals.join(" "),
    }
}

/// A statement that may trap (depending on the values: a NaN or out-of-range float to a
/// trapping conversion) or surely does.
fn trap(g: &mut Gen) -> String {
    match g.rng.below(5) {
        0 => format!("(drop (i32.trunc_f32_s {}))", g.expr(Ty::F32, 3)),
        1 => format!("(drop (i64.trunc_f64_u {}))", g.expr(Ty::F64, 3)),
        2 => format!("(if {} (then (unreachable)))", g.cond(3)),
        3 => format!("(f32.store (i32.const 65534) {})", g.expr(Ty::F32, 3)),
        _ => format!("(drop (i32.div_s (i32.const 1) {}))", g.cond(3)),
    }
}

/// The data: f32 and f64 patterns, vectors mixing them, and a passive segment of both.
fn data_segments(rng: &mut Rng) -> String {
    let mut bytes = Vec::new();
    for bits in F32_BITS {
        bytes.extend_from_slice(&bits.to_le_bytes());
    }
    for bits in F64_BITS {
        bytes.extend_from_slice(&bits.to_le_bytes());
    }
    for _ in 0..8 {
        if rng.chance(50) {
            for _ in 0..4 {
                bytes.extend_from_slice(&rng.pick(&F32_BITS).to_le_bytes());
            }
        } else {
            for _ in 0..2 {
                bytes.extend_from_slice(&rng.pick(&F64_BITS).to_le_bytes());
            }
        }
    }
    let mut passive = Vec::new();
    for _ in 0..8 {
        passive.extend_from_slice(&rng.pick(&F64_BITS).to_le_bytes());
    }
    format!("(data (i32.const {DATA_F32}) \"{}\")\n(data $passive \"{}\")\n", wat_bytes(&bytes), wat_bytes(&passive))
}

/// Globals 0..=7: mutable f32, f32, f64, f64, v128, i32; immutable f32, f64. Their
/// initialisers are constants, odd NaNs among them, which must keep their bits.
fn globals(rng: &mut Rng) -> String {
    let f32c = |rng: &mut Rng| rng.pick(&F32_CONSTS);
    let f64c = |rng: &mut Rng| rng.pick(&F64_CONSTS);
    let lanes: Vec<&str> = (0..4).map(|_| f32c(rng)).collect();
    format!(
        "(global (mut f32) (f32.const {}))\n(global (mut f32) (f32.const {}))\n(global (mut f64) (f64.const {}))\n(global (mut f64) (f64.const {}))\n(global (mut v128) (v128.const f32x4 {}))\n(global (mut i32) (i32.const 0))\n(global f32 (f32.const {}))\n(global f64 (f64.const {}))\n",
        f32c(rng),
        f32c(rng),
        f64c(rng),
        f64c(rng),
        lanes.join(" "),
        f32c(rng),
        f64c(rng)
    )
}

/// The bits of every float slot in a snapshot of the printed region: how many hold a
/// canonical NaN and how many an odd one (f32 lanes of v128 slots counted as f32).
pub(crate) fn count_nans(region: &[u8], slots: &[(u32, Slot)]) -> (usize, usize) {
    let (mut canonical, mut odd) = (0, 0);
    let mut f32_at = |at: usize| {
        if let Some(b) = region.get(at..at + 4) {
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if bits & 0x7f80_0000 == 0x7f80_0000 && bits & 0x7f_ffff != 0 {
                if bits == 0x7fc0_0000 { canonical += 1 } else { odd += 1 }
            }
        }
    };
    let mut f64s = Vec::new();
    for &(addr, kind) in slots {
        let at = (addr - REGION_START) as usize;
        match kind {
            Slot::F32 => f32_at(at),
            Slot::V128 => (0..4).for_each(|lane| f32_at(at + 4 * lane)),
            Slot::F64 => f64s.push(at),
            Slot::Other => {}
        }
    }
    for at in f64s {
        if let Some(b) = region.get(at..at + 8) {
            let bits = u64::from_le_bytes(b.try_into().unwrap_or_default());
            if bits & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000 && bits & 0xf_ffff_ffff_ffff != 0 {
                if bits == 0x7ff8_0000_0000_0000 { canonical += 1 } else { odd += 1 }
            }
        }
    }
    (canonical, odd)
}

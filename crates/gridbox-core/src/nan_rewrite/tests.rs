//! The rewrite against wasmtime's eager canonicalisation on hand-written modules: same memory,
//! same fuel, same traps. The generated programs are in tests/nan_differential.rs.

use wasmtime::{Engine, Instance, Module, Store};

use super::rewrite;
use crate::engine::{NanCanonicalization, config_for};

/// What a run left: the first 256 bytes of memory, the fuel it used, and its trap if any.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Ran {
    memory: Vec<u8>,
    fuel: u64,
    trap: Option<String>,
}

fn run(nans: NanCanonicalization, wat: &str, fuel: u64) -> Ran {
    let engine = Engine::new(&config_for(nans)).unwrap();
    let original = wat::parse_str(wat).unwrap_or_else(|e| panic!("{e}"));
    let bytes = match nans {
        NanCanonicalization::Eager => original,
        _ => rewrite(&original).unwrap(),
    };
    wasmparser::Validator::new().validate_all(&bytes).unwrap();
    let module = Module::new(&engine, &bytes).unwrap();
    let mut store = Store::new(&engine, ());
    store.set_fuel(fuel).unwrap();
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let result = instance.get_typed_func::<(), ()>(&mut store, "run").unwrap().call(&mut store, ());
    let memory = instance.get_memory(&mut store, "memory").unwrap().data(&store)[..256].to_vec();
    Ran { memory, fuel: fuel - store.get_fuel().unwrap(), trap: result.err().map(|e| format!("{:?}", e.downcast_ref::<wasmtime::Trap>())) }
}

/// Runs `wat` both ways with plenty of fuel and with every smaller budget down to nothing in
/// `steps` steps, and asserts the same results each time; returns the full run.
pub(super) fn same_both_ways(wat: &str) -> Ran {
    let eager = run(NanCanonicalization::Eager, wat, 1_000_000);
    let lazy = run(NanCanonicalization::AtObservation, wat, 1_000_000);
    assert_eq!(eager, lazy, "with ample fuel");
    assert!(eager.trap.is_none(), "{:?}", eager.trap);
    for budget in (0..=eager.fuel).step_by((eager.fuel as usize / 40).max(1)) {
        assert_eq!(run(NanCanonicalization::Eager, wat, budget), run(NanCanonicalization::AtObservation, wat, budget), "with {budget} fuel");
    }
    eager
}

pub(super) fn f32_at(ran: &Ran, offset: usize) -> u32 {
    u32::from_le_bytes(ran.memory[offset..offset + 4].try_into().unwrap())
}

fn f64_at(ran: &Ran, offset: usize) -> u64 {
    u64::from_le_bytes(ran.memory[offset..offset + 8].try_into().unwrap())
}

#[test]
fn computed_nans_are_canonical_where_they_are_seen() {
    let ran = same_both_ways(
        r#"(module (memory (export "memory") 1)
          (func $nan (param f32) (result f32) (f32.div (local.get 0) (local.get 0)))
          (func (export "run") (local f32 f64)
            (local.set 0 (f32.div (f32.const 0) (f32.const 0)))
            (f32.store (i32.const 0) (local.get 0))
            (f32.store (i32.const 4) (f32.neg (local.get 0)))
            (f32.store (i32.const 8) (f32.copysign (f32.const 1) (f32.sub (f32.const inf) (f32.const inf))))
            (i32.store (i32.const 12) (i32.reinterpret_f32 (f32.sqrt (f32.const -1))))
            (f32.store (i32.const 16) (call $nan (f32.const 0)))
            (local.set 1 (f64.mul (f64.const inf) (f64.const 0)))
            (f64.store (i32.const 24) (f64.abs (local.get 1)))
            (f64.store (i32.const 32) (f64.promote_f32 (f32.div (f32.const 0) (f32.const 0))))))"#,
    );
    assert_eq!(f32_at(&ran, 0), 0x7fc0_0000);
    assert_eq!(f32_at(&ran, 4), 0xffc0_0000, "neg of the canonical NaN");
    assert_eq!(f32_at(&ran, 8), 0x3f80_0000, "copysign takes the canonical NaN's positive sign");
    assert_eq!(f32_at(&ran, 12), 0x7fc0_0000);
    assert_eq!(f32_at(&ran, 16), 0x7fc0_0000);
    assert_eq!(f64_at(&ran, 24), 0x7ff8_0000_0000_0000);
    assert_eq!(f64_at(&ran, 32), 0x7ff8_0000_0000_0000);
}

#[test]
fn nans_that_are_only_moved_keep_their_bits() {
    let ran = same_both_ways(
        r#"(module (memory (export "memory") 1)
          (data (i32.const 128) "\01\00\a0\ff")
          (global $g (mut f32) (f32.const 0))
          (func $id (param f32) (result f32) (local.get 0))
          (func (export "run") (local $loaded f32) (local $mixed f32) (local $sum f32) (local $i i32)
            (local.set $loaded (f32.load (i32.const 128)))
            (f32.store (i32.const 0) (local.get $loaded))
            (f32.store (i32.const 4) (call $id (local.get $loaded)))
            (global.set $g (local.get $loaded))
            (f32.store (i32.const 8) (global.get $g))
            (f32.store (i32.const 12) (select (local.get $loaded) (f32.div (f32.const 0) (f32.const 0)) (i32.const 1)))
            (f32.store (i32.const 16) (select (local.get $loaded) (f32.div (f32.const 0) (f32.const 0)) (i32.const 0)))
            ;; a local given both a loaded and a computed value
            (local.set $mixed (f32.add (local.get $loaded) (f32.const 1)))
            (f32.store (i32.const 20) (local.get $mixed))
            (local.set $mixed (local.get $loaded))
            (f32.store (i32.const 24) (local.get $mixed))
            (f32.store (i32.const 28) (f32.const nan:0x200001))
            (f32.store (i32.const 32) (f32.neg (f32.const -nan:0x1)))
            ;; an accumulator: computed values only
            (loop $l
              (local.set $sum (f32.add (local.get $sum) (f32.div (f32.const 0) (f32.convert_i32_s (local.get $i)))))
              (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 10))))
            (f32.store (i32.const 36) (local.get $sum))
            (f32.store (i32.const 40) (block (result f32) (br_if 0 (local.get $sum) (i32.const 1)) (drop) (f32.const 2)))))"#,
    );
    let loaded = 0xffa0_0001;
    assert_eq!([f32_at(&ran, 0), f32_at(&ran, 4), f32_at(&ran, 8), f32_at(&ran, 12)], [loaded; 4]);
    assert_eq!(f32_at(&ran, 16), 0x7fc0_0000);
    assert_eq!(f32_at(&ran, 20), 0x7fc0_0000);
    assert_eq!(f32_at(&ran, 24), loaded);
    assert_eq!(f32_at(&ran, 28), 0x7fa0_0001);
    assert_eq!(f32_at(&ran, 32), 0x7f80_0001, "neg flips the sign of a constant NaN and keeps its payload");
    assert_eq!(f32_at(&ran, 36), 0x7fc0_0000);
    assert_eq!(f32_at(&ran, 40), 0x7fc0_0000);
}

#[test]
fn values_deep_in_the_stack_are_canonicalised_where_they_were_made() {
    let ran = same_both_ways(
        r#"(module (memory (export "memory") 1)
          (func $two (param f64 i32) (result f64) (local.get 0))
          (func (export "run")
            (f64.store (i32.const 0) (call $two (f64.div (f64.const 0) (f64.const 0)) (i32.const 7)))
            (f64.store (i32.const 8) (block (result f64)
              (br_if 0 (f64.sub (f64.const inf) (f64.const inf)) (i32.const 1))))
            (f64.store (i32.const 16) (block (result f64)
              (br_table 0 0 (f64.mul (f64.const inf) (f64.const 0)) (i32.const 0))))))"#,
    );
    assert_eq!([f64_at(&ran, 0), f64_at(&ran, 8), f64_at(&ran, 16)], [0x7ff8_0000_0000_0000; 3]);
}

#[test]
fn vector_arithmetic_stays_canonical() {
    let ran = same_both_ways(
        r#"(module (memory (export "memory") 1)
          (func (export "run")
            (v128.store (i32.const 0) (f32x4.div (v128.const f32x4 0 1 0 2) (v128.const f32x4 0 1 0 0)))
            (v128.store (i32.const 16) (f32x4.splat (f32.div (f32.const 0) (f32.const 0))))
            (v128.store (i32.const 32) (f64x2.relaxed_madd (v128.const f64x2 inf 1) (v128.const f64x2 0 1) (v128.const f64x2 1 1)))))"#,
    );
    assert_eq!(f32_at(&ran, 0), 0x7fc0_0000);
    assert_eq!(f32_at(&ran, 16), 0x7fc0_0000);
    assert_eq!(f64_at(&ran, 32), 0x7ff8_0000_0000_0000);
}

#[test]
fn fuel_is_what_the_original_module_uses() {
    // nops (free before, dropped now), made-free operators in every position, a bulk copy of
    // computed length, calls and loops: fuel and out-of-fuel points must not move.
    same_both_ways(
        r#"(module (memory (export "memory") 1)
          (func $f (param i32) (result i32) nop (local.get 0) nop (i32.const 1) (i32.add))
          (func (export "run") (local $i i32) (local $x f64)
            (loop $l
              nop nop
              (local.set $x (f64.add (local.get $x) (f64.const 0.5)))
              (memory.copy (i32.const 64) (i32.const 0) (local.get $i))
              (local.set $i (call $f (local.get $i)))
              (br_if $l (f64.ne (local.get $x) (f64.const 20))))
            (f64.store (i32.const 200) (local.get $x))))"#,
    );
}

#[test]
fn a_chain_of_locals_ends_the_analysis_and_stays_exact() {
    // Each local takes the previous one: demoting them one pass at a time would be quadratic;
    // after the pass limit they are all exact, and the loaded NaN still keeps its bits.
    let mut body = String::from("(local.set 0 (f32.load (i32.const 128)))");
    let count = 40;
    for i in 1..count {
        body.push_str(&format!("(local.set {i} (local.get {}))", i - 1));
    }
    let wat = format!(
        r#"(module (memory (export "memory") 1) (data (i32.const 128) "\01\00\a0\ff")
          (func (export "run") (local {}) {body} (f32.store (i32.const 0) (local.get {})) (f32.store (i32.const 4) (f32.div (f32.const 0) (local.get {})))))"#,
        "f32 ".repeat(count),
        count - 1,
        count - 1
    );
    let ran = same_both_ways(&wat);
    assert_eq!(f32_at(&ran, 0), 0xffa0_0001);
}

#[test]
fn bad_modules_are_refused_with_the_validators_error() {
    assert!(matches!(rewrite(b"\0asm\x01\0\0\0\x0a"), Err(super::RewriteError::Invalid(_))));
    assert!(matches!(rewrite(b"not wasm"), Err(super::RewriteError::Invalid(_))));
    // A body with a type error but no float arithmetic is copied, not validated (wasmtime
    // validates what it compiles); the copy is exactly as invalid, never made valid.
    for wat in [r#"(module (func (result f32) (i32.const 1)))"#, r#"(module (func (result f32) (f32.add (i32.const 1) (f32.const 1))))"#] {
        let bytes = wat::parse_str(wat).unwrap();
        match rewrite(&bytes) {
            Err(super::RewriteError::Invalid(_)) => {}
            Ok(out) => assert!(wasmparser::Validator::new().validate_all(&out).is_err(), "{wat}"),
            Err(other) => panic!("{wat}: {other:?}"),
        }
    }
    let component = wat::parse_str("(component)").unwrap();
    assert!(matches!(rewrite(&component), Err(super::RewriteError::Component)));
}

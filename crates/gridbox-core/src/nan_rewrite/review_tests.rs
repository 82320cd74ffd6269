//! A reviewer's cases for the rewrite: each runs a module with wasmtime's eager
//! canonicalisation and its rewrite without, and compares memory, fuel and trap, at full fuel
//! and at every budget below in a few steps (as tests.rs does).

use wasmtime::{Engine, Module};

use super::tests::{f32_at, same_both_ways as same};
use super::{RewriteError, rewrite};
use crate::engine::{NanCanonicalization, config_for};

#[test]
fn review_multi_value_blocks_and_branches() {
    let ran = same(
        r#"(module (memory (export "memory") 1)
          (data (i32.const 128) "\01\00\a0\ff")
          (type $ff (func (result f32 f32)))
          (type $p (func (param f32 f32) (result f32 f32)))
          (func $pair (result f32 f32) (f32.div (f32.const 0) (f32.const 0)) (f32.load (i32.const 128)))
          (func (export "run") (local $a f32) (local $b f32) (local $i i32)
            (block (type $ff) (f32.div (f32.const 0) (f32.const 0)) (f32.sqrt (f32.const -1)) (br_if 0 (i32.const 1)))
            (local.set $b) (local.set $a)
            (f32.store (i32.const 0) (local.get $a)) (f32.store (i32.const 4) (local.get $b))
            (call $pair) (local.set $b) (local.set $a)
            (f32.store (i32.const 8) (local.get $a)) (f32.store (i32.const 12) (local.get $b))
            (f32.sub (f32.const inf) (f32.const inf)) (f32.load (i32.const 128))
            (if (type $p) (i32.const 1) (then) (else))
            (local.set $b) (local.set $a)
            (f32.store (i32.const 16) (local.get $a)) (f32.store (i32.const 20) (local.get $b))
            (f32.mul (f32.const inf) (f32.const 0)) (f32.div (f32.const 0) (f32.const 0))
            (loop $l (type $p)
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (i32.const 3))))
            (local.set $b) (local.set $a)
            (f32.store (i32.const 24) (local.get $a)) (f32.store (i32.const 28) (local.get $b))
            (block (type $ff) (f32.div (f32.const 0) (f32.const 0)) (f32.load (i32.const 128)) (br_table 0 0 0 (i32.const 2)))
            (local.set $b) (local.set $a)
            (f32.store (i32.const 32) (local.get $a)) (f32.store (i32.const 36) (local.get $b))))"#,
    );
    let (canonical, loaded) = (0x7fc0_0000, 0xffa0_0001);
    let seen: Vec<u32> = (0..10).map(|i| f32_at(&ran, 4 * i)).collect();
    assert_eq!(seen, [canonical, canonical, canonical, loaded, canonical, loaded, canonical, canonical, canonical, loaded]);
}

#[test]
fn review_selects_locals_and_tees() {
    same(
        r#"(module (memory (export "memory") 1)
          (data (i32.const 128) "\01\00\a0\ff\02\00\00\00\00\00\f8\ff")
          (func (export "run") (local $r f32) (local $x f32) (local $d f64) (local $e f64)
            (f32.store (i32.const 0) (select (result f32) (f32.div (f32.const 0) (f32.const 0)) (f32.load (i32.const 128)) (i32.const 1)))
            (f32.store (i32.const 4) (select (f32.load (i32.const 128)) (f32.div (f32.const 0) (f32.const 0)) (i32.const 0)))
            (f32.store (i32.const 8) (select (f32.div (f32.const 0) (f32.const 0)) (f32.const 1) (i32.const 1)))
            (f32.store (i32.const 12) (select (f32.const 1) (local.tee $r (f32.sqrt (f32.const -1))) (i32.const 0)))
            (f32.store (i32.const 16) (local.get $r))
            (local.set $x (select (local.get $r) (f32.load (i32.const 128)) (i32.const 1)))
            (f32.store (i32.const 20) (local.get $x))
            (f32.store (i32.const 24) (f32.copysign (f32.load (i32.const 128)) (local.get $r)))
            (f32.store (i32.const 28) (f32.copysign (local.get $r) (f32.load (i32.const 128))))
            (local.set $d (f64.promote_f32 (local.get $r)))
            (f64.store (i32.const 32) (local.get $d))
            (local.set $e (f64.load (i32.const 132)))
            (f64.store (i32.const 40) (select (local.get $e) (local.get $d) (i32.const 0)))
            (f64.store (i32.const 48) (select (local.get $d) (local.get $e) (i32.const 0)))
            (f32.store (i32.const 56) (f32.demote_f64 (local.get $e)))
            (i64.store (i32.const 64) (i64.reinterpret_f64 (f64.add (local.get $e) (f64.const 1))))
            (f32.store (i32.const 72) (local.tee $r (f32.div (f32.const 0) (f32.const 0))))
            (f32.store (i32.const 76) (local.tee $x (f32.div (f32.const 0) (f32.const 0))))))"#,
    );
}

#[test]
fn review_calls_tail_calls_indirect_globals() {
    same(
        r#"(module (memory (export "memory") 1)
          (type $t (func (param f32 i32) (result f32)))
          (table 1 funcref) (elem (i32.const 0) $id)
          (global $g (mut f64) (f64.const 0))
          (func $id (param f32 i32) (result f32) (local.get 0))
          (func $tail (param f32) (result f32) (return_call $id (f32.add (local.get 0) (local.get 0)) (i32.const 0)))
          (func $tail2 (param f32) (result f32) (return_call_indirect (type $t) (f32.mul (local.get 0) (f32.const 0)) (i32.const 0) (i32.const 0)))
          (func $ret (param f32) (result f32) (return (f32.sub (local.get 0) (local.get 0))))
          (func (export "run")
            (f32.store (i32.const 0) (call $tail (f32.const inf)))
            (f32.store (i32.const 4) (call $tail2 (f32.const inf)))
            (f32.store (i32.const 8) (call $ret (f32.const inf)))
            (f32.store (i32.const 12) (call_indirect (type $t) (f32.div (f32.const 0) (f32.const 0)) (i32.const 3) (i32.const 0)))
            (global.set $g (f64.sqrt (f64.const -2)))
            (f64.store (i32.const 16) (global.get $g))))"#,
    );
}

#[test]
fn review_simd_lanes() {
    same(
        r#"(module (memory (export "memory") 1)
          (data (i32.const 128) "\01\00\a0\ff")
          (func (export "run") (local $r f32) (local $v v128)
            (local.set $r (f32.div (f32.const 0) (f32.const 0)))
            (v128.store (i32.const 0) (f32x4.replace_lane 2 (v128.load (i32.const 128)) (local.get $r)))
            (v128.store (i32.const 16) (f32x4.splat (local.get $r)))
            (f32.store (i32.const 32) (f32x4.extract_lane 0 (f32x4.add (v128.load (i32.const 128)) (v128.const f32x4 1 1 1 1))))
            (v128.store (i32.const 48) (f32x4.pmin (v128.load (i32.const 128)) (v128.const f32x4 1 1 1 1)))
            (v128.store (i32.const 64) (f64x2.promote_low_f32x4 (v128.load (i32.const 128))))
            (v128.store (i32.const 80) (f32x4.demote_f64x2_zero (v128.load (i32.const 128))))
            (v128.store (i32.const 96) (f32x4.relaxed_nmadd (v128.load (i32.const 128)) (v128.const f32x4 1 1 1 1) (v128.const f32x4 1 1 1 1)))
            (v128.store (i32.const 112) (v128.bitselect (v128.load (i32.const 128)) (f64x2.splat (f64.promote_f32 (local.get $r))) (v128.const i64x2 -1 0)))))"#,
    );
}

fn wasmtime_validates(nans: NanCanonicalization, bytes: &[u8]) -> Result<(), String> {
    let engine = Engine::new(&config_for(nans)).unwrap();
    Module::validate(&engine, bytes).map_err(|e| format!("{e:?}"))
}

/// Modules using proposals this wasmtime build does not run pass the rewrite's validator (it
/// allows more); wasmtime must still refuse the rewritten module, as it refuses the original,
/// and the rewrite must never call them its own bug.
#[test]
fn review_modules_wasmtime_refuses_stay_refused() {
    let cases = [
        ("custom page sizes", r#"(module (memory 1 (pagesize 1)))"#),
        ("wide arithmetic", r#"(module (func (param i64 i64 i64 i64) (result i64 i64) (i64.add128 (local.get 0) (local.get 1) (local.get 2) (local.get 3))))"#),
        ("threads", r#"(module (memory 1 1 shared) (func (result i32) (i32.atomic.load (i32.const 0))))"#),
        ("atomics unshared", r#"(module (memory 1 1) (func (result i32) (i32.atomic.load (i32.const 0))))"#),
        ("gc", r#"(module (type $s (struct (field f32))) (func (result f32) (struct.get $s 0 (struct.new $s (f32.div (f32.const 0) (f32.const 0))))))"#),
        (
            "exceptions",
            r#"(module (memory 1) (tag $t (param f32)) (func (f32.store (i32.const 0) (block $h (result f32) (try_table (catch $t $h) (throw $t (f32.div (f32.const 0) (f32.const 0)))) (f32.const 1)))))"#,
        ),
        (
            "function refs",
            r#"(module (type $f (func (param f32) (result f32))) (func $g (type $f) (local.get 0)) (elem declare func $g) (func (result f32) (call_ref $f (f32.div (f32.const 0) (f32.const 0)) (ref.func $g))))"#,
        ),
        ("memory64", r#"(module (memory i64 1) (func (f32.store (i64.const 0) (f32.div (f32.const 0) (f32.const 0)))))"#),
        ("multi memory", r#"(module (memory 1) (memory 1) (func (f32.store 1 (i32.const 0) (f32.div (f32.const 0) (f32.const 0)))))"#),
        (
            "br_on_null",
            r#"(module (func (param funcref) (result f32) (block $l (result f32) (br_on_null $l (f32.div (f32.const 0) (f32.const 0)) (local.get 0)) (drop) (drop) (f32.const 1))))"#,
        ),
        ("extended const", r#"(module (global i32 (i32.add (i32.const 1) (i32.const 2))))"#),
    ];
    for (what, wat) in cases {
        let bytes = match wat::parse_str(wat) {
            Ok(b) => b,
            Err(e) => panic!("{what}: {e}"),
        };
        let eager = wasmtime_validates(NanCanonicalization::Eager, &bytes);
        let rewritten = rewrite(&bytes);
        let lazy = rewritten.as_ref().map_err(|e| format!("{e:?}")).and_then(|r| wasmtime_validates(NanCanonicalization::AtObservation, r));
        assert!(!matches!(rewritten, Err(RewriteError::Internal(_))), "{what}: {rewritten:?}");
        assert_eq!(eager.is_ok(), lazy.is_ok(), "{what}: eager {eager:?}, rewritten {lazy:?}");
    }
}

#[test]
fn review_function_references() {
    same(
        r#"(module (memory (export "memory") 1)
          (data (i32.const 128) "\01\00\a0\ff")
          (type $f (func (param f32) (result f32)))
          (func $g (type $f) (f32.add (local.get 0) (f32.const 1)))
          (func $tail (param f32) (result f32) (f32.div (local.get 0) (f32.const 0)) (ref.func $g) (return_call_ref $f))
          (elem declare func $g)
          (func (export "run") (local $r (ref null $f)) (local $nn (ref $f))
            (local.set $nn (ref.func $g))
            (f32.store (i32.const 0) (block $l (result f32) (br_on_null $l (f32.div (f32.const 0) (f32.const 0)) (local.get $r)) (drop) (drop) (f32.const 1)))
            (f32.store (i32.const 4) (block $l (result f32 (ref $f)) (br_on_non_null $l (f32.sqrt (f32.const -1)) (local.get $nn)) (ref.func $g)) (drop))
            (f32.store (i32.const 8) (call_ref $f (f32.div (f32.const 0) (f32.const 0)) (local.get $nn)))
            (f32.store (i32.const 12) (call $tail (f32.const 0)))
            (f32.store (i32.const 16) (block $l (result f32 (ref $f)) (br_on_non_null $l (f32.load (i32.const 128)) (local.get $r)) (drop) (f32.mul (f32.const inf) (f32.const 0)) (ref.func $g)) (drop))))"#,
    );
}

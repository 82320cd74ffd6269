//! Hand-written cases, one per nasty way a NaN's bits can be kept, lost or observed, each with
//! the bits EAGER must give at some addresses (checked besides the EAGER/AT_OBSERVATION
//! comparison, so that the reference itself is what the spec says).
//!
//! Data at 64: f32 0x7fc02301, 0xffd54321, 0x7f800001 (signalling); at 80: f64
//! 0x7ff8000000000123, 0xfffc00000000ab01; at 96: v128 of the three f32s and 1.0.
//! `_start`'s locals: 0, 1 f32; 2, 3 f64; 4 v128; 5, 6 i32. `$flush` prints 1024..1280.

/// `(name, wat, expected)`: expected holds `(address, width in bytes, bits)`.
pub(crate) type Case = (&'static str, String, Vec<(u32, u32, u64)>);

fn module(extra: &str, body: &str) -> String {
    format!(
        r#"(module
 (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
 (memory (export "memory") 1)
 (data (i32.const 64) "\01\23\c0\7f\21\43\d5\ff\01\00\80\7f")
 (data (i32.const 80) "\23\01\00\00\00\00\f8\7f\01\ab\00\00\00\00\fc\ff")
 (data (i32.const 96) "\01\23\c0\7f\21\43\d5\ff\01\00\80\7f\00\00\80\3f")
 (func $flush (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 256))
   (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
 {extra}
 (func (export "_start") (local f32 f32 f64 f64 v128 i32 i32)
   {body}
   (call $flush)))"#
    )
}

const C32: u64 = 0x7fc0_0000;
const N32: u64 = 0xffc0_0000;
const C64: u64 = 0x7ff8_0000_0000_0000;

pub(crate) fn cases(tail_calls: bool) -> Vec<Case> {
    let mut cases: Vec<Case> = vec![
        (
            "moved values keep their bits",
            module(
                "(global $g (mut f32) (f32.const 0)) (func $id (param f32) (result f32) (local.get 0))",
                r#"(f32.store (i32.const 1024) (f32.load (i32.const 64)))
                (local.set 0 (f32.load (i32.const 68)))
                (f32.store (i32.const 1028) (local.get 0))
                (f32.store (i32.const 1032) (select (f32.load (i32.const 72)) (local.get 0) (i32.const 1)))
                (f32.store (i32.const 1036) (block (result f32) (f32.load (i32.const 64))))
                (f32.store (i32.const 1040) (call $id (f32.load (i32.const 72))))
                (global.set $g (f32.load (i32.const 68))) (f32.store (i32.const 1044) (global.get $g))
                (f64.store (i32.const 1048) (f64.load (i32.const 80)))
                (f64.store (i32.const 1056) (f64.const -nan:0x1))
                (f32.store (i32.const 1064) (f32.const nan:0x123))
                (f32.store (i32.const 1068) (f32.reinterpret_i32 (i32.const 0xff800002)))
                (f32.store (i32.const 1072) (f32x4.extract_lane 1 (v128.load (i32.const 96))))
                (f32.store (i32.const 1076) (f32.neg (f32.load (i32.const 64))))
                (f32.store (i32.const 1080) (f32.abs (f32.load (i32.const 68))))
                (f32.store (i32.const 1084) (f32.copysign (f32.load (i32.const 72)) (f32.const -1)))"#,
            ),
            vec![
                (1024, 4, 0x7fc0_2301),
                (1028, 4, 0xffd5_4321),
                (1032, 4, 0x7f80_0001),
                (1036, 4, 0x7fc0_2301),
                (1040, 4, 0x7f80_0001),
                (1044, 4, 0xffd5_4321),
                (1048, 8, 0x7ff8_0000_0000_0123),
                (1056, 8, 0xfff0_0000_0000_0001),
                (1064, 4, 0x7f80_0123),
                (1068, 4, 0xff80_0002),
                (1072, 4, 0xffd5_4321),
                (1076, 4, 0xffc0_2301),
                (1080, 4, 0x7fd5_4321),
                (1084, 4, 0xff80_0001),
            ],
        ),
        (
            "arithmetic NaNs are canonical",
            module(
                "",
                r#"(f32.store (i32.const 1024) (f32.div (f32.const 0) (f32.const 0)))
                (f32.store (i32.const 1028) (f32.add (f32.load (i32.const 64)) (f32.const 1)))
                (f32.store (i32.const 1032) (f32.sub (f32.const inf) (f32.const inf)))
                (f32.store (i32.const 1036) (f32.sqrt (f32.const -1)))
                (f32.store (i32.const 1040) (f32.mul (f32.const inf) (f32.const 0)))
                (f32.store (i32.const 1044) (f32.min (f32.load (i32.const 68)) (f32.const 1)))
                (f32.store (i32.const 1048) (f32.ceil (f32.load (i32.const 72))))
                (f64.store (i32.const 1056) (f64.promote_f32 (f32.load (i32.const 64))))
                (f32.store (i32.const 1064) (f32.demote_f64 (f64.load (i32.const 88))))
                (f64.store (i32.const 1072) (f64.nearest (f64.load (i32.const 80))))
                (f32.store (i32.const 1080) (f32.max (f32.const -nan:0x5) (f32.const nan:0x7)))"#,
            ),
            vec![
                (1024, 4, C32),
                (1028, 4, C32),
                (1032, 4, C32),
                (1036, 4, C32),
                (1040, 4, C32),
                (1044, 4, C32),
                (1048, 4, C32),
                (1056, 8, C64),
                (1064, 4, C32),
                (1072, 8, C64),
                (1080, 4, C32),
            ],
        ),
        (
            "sign operations after arithmetic",
            module(
                "",
                r#"(f32.store (i32.const 1024) (f32.neg (f32.div (f32.const 0) (f32.const 0))))
                (f32.store (i32.const 1028) (f32.abs (f32.add (f32.load (i32.const 68)) (f32.const 1))))
                (f32.store (i32.const 1032) (f32.copysign (f32.const 1) (f32.div (f32.const 0) (f32.const 0))))
                (f32.store (i32.const 1036) (f32.copysign (f32.load (i32.const 64)) (f32.sub (f32.const inf) (f32.const inf))))
                (f32.store (i32.const 1040) (f32.neg (f32.add (f32.load (i32.const 64)) (f32.const 0))))
                (f64.store (i32.const 1048) (f64.neg (f64.sqrt (f64.const -1))))
                (f64.store (i32.const 1056) (f64.copysign (f64.const 2) (f64.mul (f64.const -inf) (f64.const 0))))"#,
            ),
            vec![
                (1024, 4, N32),
                (1028, 4, C32),
                (1032, 4, 0x3f80_0000),
                (1036, 4, 0x7fc0_2301),
                (1040, 4, N32),
                (1048, 8, 0xfff8_0000_0000_0000),
                (1056, 8, 0x4000_0000_0000_0000),
            ],
        ),
        (
            "reinterpret, and control flow on NaN bits",
            module(
                "",
                r#"(i32.store (i32.const 1024) (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))))
                (i64.store (i32.const 1032) (i64.reinterpret_f64 (f64.div (f64.const 0) (f64.const 0))))
                (i32.store (i32.const 1040) (if (result i32) (i32.shr_u (i32.reinterpret_f32 (f32.sub (f32.const inf) (f32.const inf))) (i32.const 31)) (then (i32.const 111)) (else (i32.const 222))))
                (i32.store8 (i32.const 1044) (i32.shr_u (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))) (i32.const 24)))
                (i64.store32 (i32.const 1048) (i64.shr_u (i64.reinterpret_f64 (f64.add (f64.load (i32.const 88)) (f64.const 1))) (i64.const 32)))
                (call $flush)
                (call $proc_exit (i32.rem_u (i32.shr_u (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))) (i32.const 24)) (i32.const 100)))"#,
            ),
            vec![(1024, 4, C32), (1032, 8, C64), (1040, 4, 222), (1044, 1, 0x7f), (1048, 4, 0x7ff8_0000)],
        ),
        (
            "locals mixing loaded and computed values, in loops",
            module(
                "",
                r#"(local.set 0 (f32.load (i32.const 68)))
                (loop
                  (f32.store offset=1024 (i32.shl (local.get 5) (i32.const 2)) (local.get 0))
                  (local.set 0 (f32.add (local.get 0) (f32.const 1)))
                  (br_if 0 (i32.lt_u (local.tee 5 (i32.add (local.get 5) (i32.const 1))) (i32.const 4))))
                (f32.store (i32.const 1040) (local.get 0))
                (local.set 1 (f32.div (f32.const 0) (f32.const 0)))
                (local.set 1 (select (local.get 1) (f32.load (i32.const 64)) (i32.const 0)))
                (f32.store (i32.const 1044) (local.get 1))
                (f32.store (i32.const 1048) (local.tee 1 (f32.sqrt (f32.const -2))))
                (local.set 1 (f32.div (f32.const 0) (f32.const 0)))
                (local.set 5 (i32.const 0))
                (loop
                  (f32.store offset=1056 (i32.shl (local.get 5) (i32.const 2)) (f32.neg (local.get 1)))
                  (local.set 1 (select (f32.load (i32.const 64)) (f32.mul (local.get 1) (f32.const 2)) (i32.and (local.get 5) (i32.const 1))))
                  (br_if 0 (i32.lt_u (local.tee 5 (i32.add (local.get 5) (i32.const 1))) (i32.const 4))))"#,
            ),
            vec![
                (1024, 4, 0xffd5_4321),
                (1028, 4, C32),
                (1036, 4, C32),
                (1040, 4, C32),
                (1044, 4, 0x7fc0_2301),
                (1048, 4, C32),
                (1056, 4, N32),
                (1060, 4, N32),
                (1064, 4, 0xffc0_2301),
                (1068, 4, N32),
            ],
        ),
        (
            "select and typed select mixing both kinds",
            module(
                "",
                r#"(f32.store (i32.const 1024) (select (f32.div (f32.const 0) (f32.const 0)) (f32.load (i32.const 64)) (i32.const 1)))
                (f32.store (i32.const 1028) (select (f32.div (f32.const 0) (f32.const 0)) (f32.load (i32.const 64)) (i32.const 0)))
                (f32.store (i32.const 1032) (select (result f32) (f32.load (i32.const 68)) (f32.sqrt (f32.const -1)) (local.get 5)))
                (f64.store (i32.const 1040) (select (f64.load (i32.const 80)) (f64.add (f64.load (i32.const 88)) (f64.const 1)) (i32.const 1)))
                (v128.store (i32.const 1048) (select (v128.load (i32.const 96)) (f32x4.splat (f32.div (f32.const 0) (f32.const 0))) (i32.const 1)))
                (f32.store (i32.const 1064) (f32.neg (select (f32.div (f32.const 0) (f32.const 0)) (f32.load (i32.const 64)) (f32.gt (f32.load (i32.const 64)) (f32.const 0)))))
                (f32.store (i32.const 1068) (f32.neg (select (result f32) (f32.load (i32.const 64)) (f32.div (f32.const 0) (f32.const 0)) (i32.const 0))))"#,
            ),
            vec![
                (1024, 4, C32),
                (1028, 4, 0x7fc0_2301),
                (1032, 4, C32),
                (1040, 8, 0x7ff8_0000_0000_0123),
                (1048, 4, 0x7fc0_2301),
                (1052, 4, 0xffd5_4321),
                (1064, 4, 0xffc0_2301),
                (1068, 4, N32),
            ],
        ),
    ];
    cases.extend(more_cases(tail_calls));
    cases
}

fn more_cases(tail_calls: bool) -> Vec<Case> {
    let tail = if tail_calls {
        "(func $tail (param f32) (result f32) (return_call $neg (f32.div (local.get 0) (f32.const 0))))"
    } else {
        "(func $tail (param f32) (result f32) (call $neg (f32.div (local.get 0) (f32.const 0))))"
    };
    vec![
        (
            "calls: arguments, results, multi-value, indirect, tail",
            module(
                &format!(
                    r#"(type $tmv (func (param f32) (result f32 f64)))
                    (func $id (param f32) (result f32) (local.get 0))
                    (func $mk (result f32) (f32.div (f32.const 0) (f32.const 0)))
                    (func $mkbr (result f32) (br 0 (f32.sub (f32.const inf) (f32.const inf))))
                    (func $mkret (param f32) (result f32) (return (f32.add (local.get 0) (f32.const 1))))
                    (func $mv (type $tmv) (local.get 0) (f64.promote_f32 (local.get 0)))
                    (func $neg (param f32) (result f32) (f32.neg (local.get 0)))
                    {tail}
                    (table 4 funcref) (elem (i32.const 0) $id $mk $neg)"#
                ),
                r#"(f32.store (i32.const 1024) (call $id (f32.load (i32.const 64))))
                (f32.store (i32.const 1028) (call $id (f32.div (f32.const 0) (f32.const 0))))
                (f32.store (i32.const 1032) (call $mk))
                (f32.store (i32.const 1036) (call $mkbr))
                (f32.store (i32.const 1040) (call $mkret (f32.load (i32.const 68))))
                (f32.store (i32.const 1044) (call $neg (f32.div (f32.const 0) (f32.const 0))))
                (f32.store (i32.const 1048) (call $neg (f32.load (i32.const 64))))
                (call $mv (f32.load (i32.const 72))) (local.set 2) (local.set 0)
                (f32.store (i32.const 1052) (local.get 0))
                (f64.store (i32.const 1056) (local.get 2))
                (f32.store (i32.const 1064) (call_indirect (param f32) (result f32) (f32.div (f32.const 0) (f32.const 0)) (i32.const 2)))
                (f32.store (i32.const 1068) (call $tail (f32.const 0)))
                (f32.store (i32.const 1072) (call_indirect (result f32) (i32.const 1)))
                (f32.store (i32.const 1076) (f32.neg (call $mk)))"#,
            ),
            vec![
                (1024, 4, 0x7fc0_2301),
                (1028, 4, C32),
                (1032, 4, C32),
                (1036, 4, C32),
                (1040, 4, C32),
                (1044, 4, N32),
                (1048, 4, 0xffc0_2301),
                (1052, 4, 0x7f80_0001),
                (1056, 8, C64),
                (1064, 4, N32),
                (1068, 4, N32),
                (1072, 4, C32),
                (1076, 4, N32),
            ],
        ),
        (
            "branches and block params carrying floats",
            module(
                "",
                r#"(f32.store (i32.const 1024) (block (result f32) (br_if 0 (f32.div (f32.const 0) (f32.const 0)) (i32.const 1)) (drop) (f32.const 1)))
                (f32.store (i32.const 1028) (block (result f32) (br_if 0 (f32.load (i32.const 64)) (i32.const 1)) (drop) (f32.const 1)))
                (f32.store (i32.const 1032) (f32.neg (block (result f32) (br_if 0 (f32.div (f32.const 0) (f32.const 0)) (i32.const 0)))))
                (f32.store (i32.const 1036) (block $o (result f32) (f32.neg (block $i (result f32) (br_table $i $o (f32.sub (f32.const inf) (f32.const inf)) (i32.const 1))))))
                (f32.store (i32.const 1040) (block $o (result f32) (f32.neg (block $i (result f32) (br_table $i $o (f32.sub (f32.const inf) (f32.const inf)) (i32.const 0))))))
                (f32.store (i32.const 1044) (block (result f32) (br 0 (f32.load (i32.const 68)))))
                (f32.store (i32.const 1048) (if (result f32) (i32.const 1) (then (f32.sqrt (f32.const -1))) (else (f32.load (i32.const 64)))))
                (f32.store (i32.const 1052) (if (result f32) (i32.const 0) (then (f32.sqrt (f32.const -1))) (else (f32.load (i32.const 64)))))
                (f32.store (i32.const 1056) (f32.div (f32.const 0) (f32.const 0)) (if (param f32) (result f32) (i32.const 1) (then (f32.neg)) (else)))
                (f32.store (i32.const 1060) (f32.load (i32.const 64)) (block (param f32) (result f32) (f32.abs)))
                (f32.store (i32.const 1064) (f32.div (f32.const 0) (f32.const 0)) (block (param f32) (result f32)))
                (f32.store (i32.const 1068) (f32.load (i32.const 68)) (block (param f32) (result f32) (f32.neg (f32.add (f32.const 1)))))
                (f32.store (i32.const 1072) (f32.div (f32.const 0) (f32.const 0)) (f32.load (i32.const 64)) (block (param f32 f32) (result f32) (drop)) (f32.neg))
                (f32.store (i32.const 1076) (f32.div (f32.const 0) (f32.const 0)) (if (param f32) (result f32) (i32.const 0) (then (f32.neg))))
                (f32.store (i32.const 1080) (f32.load (i32.const 64)) (if (param f32) (result f32) (i32.const 0) (then (f32.neg))))"#,
            ),
            vec![
                (1024, 4, C32),
                (1028, 4, 0x7fc0_2301),
                (1032, 4, N32),
                (1036, 4, C32),
                (1040, 4, N32),
                (1044, 4, 0xffd5_4321),
                (1048, 4, C32),
                (1052, 4, 0x7fc0_2301),
                (1056, 4, N32),
                (1060, 4, 0x7fc0_2301),
                (1064, 4, C32),
                (1068, 4, N32),
                (1072, 4, N32),
                (1076, 4, C32),
                (1080, 4, 0x7fc0_2301),
            ],
        ),
        (
            "loop params: loaded on entry, computed on the back edge",
            module(
                "",
                r#"(f32.load (i32.const 68))
                (loop (param f32) (result f32)
                  (local.set 0)
                  (f32.store offset=1024 (i32.shl (local.get 5) (i32.const 2)) (local.get 0))
                  (br_if 0 (f32.add (local.get 0) (f32.const 1)) (i32.lt_u (local.tee 5 (i32.add (local.get 5) (i32.const 1))) (i32.const 3))))
                (local.set 0)
                (f32.store (i32.const 1040) (f32.neg (local.get 0)))"#,
            ),
            vec![(1024, 4, 0xffd5_4321), (1028, 4, C32), (1032, 4, C32), (1040, 4, N32)],
        ),
        (
            "globals: odd initialisers, computed sets",
            module(
                "(global $a (mut f32) (f32.const nan:0x4321)) (global $b (mut f64) (f64.const -nan:0x77)) (global $c f32 (f32.const -nan:0x1))",
                r#"(f32.store (i32.const 1024) (global.get $a))
                (f64.store (i32.const 1032) (global.get $b))
                (f32.store (i32.const 1040) (global.get $c))
                (global.set $a (f32.div (f32.const 0) (f32.const 0)))
                (f32.store (i32.const 1044) (global.get $a))
                (f32.store (i32.const 1048) (f32.neg (global.get $a)))
                (global.set $b (f64.load (i32.const 80)))
                (f64.store (i32.const 1056) (global.get $b))"#,
            ),
            vec![
                (1024, 4, 0x7f80_4321),
                (1032, 8, 0xfff0_0000_0000_0077),
                (1040, 4, 0xff80_0001),
                (1044, 4, C32),
                (1048, 4, N32),
                (1056, 8, 0x7ff8_0000_0000_0123),
            ],
        ),
        (
            "simd: splat, lanes, bit ops keep bits, arithmetic canonical",
            module(
                "",
                r#"(v128.store (i32.const 1024) (f32x4.splat (f32.div (f32.const 0) (f32.const 0))))
                (v128.store (i32.const 1040) (f32x4.replace_lane 1 (v128.load (i32.const 96)) (f32.sub (f32.const inf) (f32.const inf))))
                (v128.store (i32.const 1056) (f32x4.abs (v128.load (i32.const 96))))
                (v128.store (i32.const 1072) (f32x4.pmin (v128.load (i32.const 96)) (v128.const f32x4 1 1 1 1)))
                (v128.store (i32.const 1088) (f32x4.add (v128.load (i32.const 96)) (v128.const f32x4 0 0 0 0)))
                (v128.store (i32.const 1104) (f32x4.neg (f32x4.splat (f32.div (f32.const 0) (f32.const 0)))))
                (i32.store (i32.const 1120) (i32x4.bitmask (f32x4.splat (f32.div (f32.const 0) (f32.const 0)))))
                (f32.store (i32.const 1124) (f32x4.extract_lane 2 (f32x4.mul (v128.load (i32.const 96)) (v128.load (i32.const 96)))))
                (v128.store (i32.const 1128) (f32x4.relaxed_madd (v128.load (i32.const 96)) (v128.load (i32.const 96)) (v128.load (i32.const 96))))
                (v128.store (i32.const 1144) (f64x2.promote_low_f32x4 (v128.load (i32.const 96))))
                (v128.store (i32.const 1160) (f64x2.splat (f64.div (f64.const 0) (f64.const 0))))
                (v128.store (i32.const 1176) (f32x4.pmax (v128.load (i32.const 96)) (v128.const f32x4 0 0 0 0)))
                (v128.store (i32.const 1192) (f32x4.relaxed_min (v128.load (i32.const 96)) (v128.const f32x4 0 0 0 0)))
                (v128.store (i32.const 1208) (i32x4.relaxed_laneselect (v128.load (i32.const 96)) (f32x4.splat (f32.sqrt (f32.const -1))) (v128.const i32x4 -1 0 -1 0)))
                (v128.store (i32.const 1224) (f32x4.relaxed_nmadd (v128.load (i32.const 96)) (v128.const f32x4 1 1 1 1) (v128.const f32x4 0 0 0 0)))"#,
            ),
            vec![
                (1024, 4, C32),
                (1036, 4, C32),
                (1040, 4, 0x7fc0_2301),
                (1044, 4, C32),
                (1060, 4, 0x7fd5_4321),
                (1064, 4, 0x7f80_0001),
                (1076, 4, 0xffd5_4321),
                (1088, 4, C32),
                (1092, 4, C32),
                (1100, 4, 0x3f80_0000),
                (1104, 4, N32),
                (1120, 4, 0),
                (1124, 4, C32),
                (1144, 8, C64),
                (1160, 8, C64),
                (1176, 4, 0x7fc0_2301),
                (1196, 4, C32),
                (1208, 4, 0x7fc0_2301),
                (1212, 4, C32),
            ],
        ),
        (
            "store widths and memory operations with NaN bytes",
            module(
                "",
                r#"(nop) (i32.store8 (i32.const 1024) (i32.shr_u (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))) (i32.const 24)))
                (i32.store16 (i32.const 1026) (i32.shr_u (i32.reinterpret_f32 (f32.neg (f32.div (f32.const 0) (f32.const 0)))) (i32.const 16)))
                (v128.store32_lane 0 (i32.const 1028) (f32x4.splat (f32.div (f32.const 0) (f32.const 0))))
                (v128.store64_lane 1 (i32.const 1032) (f64x2.replace_lane 1 (v128.const i64x2 0 0) (f64.div (f64.const 0) (f64.const 0))))
                (nop) (nop)
                (memory.fill (i32.const 1040) (i32.shr_u (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))) (i32.const 24)) (i32.const 8))
                (memory.copy (i32.const 1048) (i32.const 64) (i32.trunc_sat_f32_u (f32.const 8.5)))
                (memory.fill (i32.const 1056) (i32.const 255) (i32.trunc_sat_f32_s (f32.div (f32.const 0) (f32.const 0))))
                (memory.copy (i32.const 1064) (i32.const 80) (i32.const 16)) (nop)"#,
            ),
            vec![
                (1024, 1, 0x7f),
                (1026, 2, 0xffc0),
                (1028, 4, C32),
                (1032, 8, C64),
                (1040, 8, 0x7f7f_7f7f_7f7f_7f7f),
                (1048, 4, 0x7fc0_2301),
                (1056, 8, 0),
                (1064, 8, 0x7ff8_0000_0000_0123),
            ],
        ),
        (
            "dead code after branches: operands from nowhere",
            module(
                "(func $dead (result f32) (return (f32.load (i32.const 68))) (f32.sqrt) (f32.neg))",
                r#"(f32.store (i32.const 1024) (block (result f32) (br 0 (f32.load (i32.const 64))) (f32.neg) (drop) (select) (drop) (f32.add) (f32.store) (v128.store) (local.set 0)))
                (block (br 0) (f32.div) (f32.store) (f32.div (f32.const 0) (f32.const 0)) (local.set 0))
                (f32.store (i32.const 1028) (block (result f32) (br 0 (f32.div (f32.const 0) (f32.const 0))) (select (result f32))))
                (f32.store (i32.const 1032) (call $dead))"#,
            ),
            vec![(1024, 4, 0x7fc0_2301), (1028, 4, C32), (1032, 4, 0xffd5_4321)],
        ),
        (
            "a trap after arithmetic, fuel at the trap",
            module(
                "",
                r#"(local.set 0 (f32.div (f32.const 0) (f32.const 0)))
                (f32.store (i32.const 1024) (f32.neg (local.get 0)))
                (call $flush)
                (local.set 1 (select (f32.const 1) (local.get 0) (f32.ne (local.get 0) (local.get 0))))
                (drop (i32.trunc_f32_s (f32.add (local.get 0) (local.get 1))))"#,
            ),
            vec![(1024, 4, N32)],
        ),
        (
            "fuel: operators the rewrite uses itself, then an out-of-bounds store",
            module(
                "",
                r#"(loop
                  (local.set 0 (select (f32.const 1) (local.get 0) (f32.ne (local.get 0) (local.get 0))))
                  (local.set 4 (v128.bitselect (v128.const i32x4 1 2 3 4) (local.get 4) (f32x4.eq (local.get 4) (local.get 4))))
                  (local.set 2 (f64.const 2)) (drop (f64.ne (local.get 2) (local.tee 3 (local.get 2))))
                  (drop (f64x2.eq (local.get 4) (v128.const f64x2 nan 1)))
                  (local.set 0 (f32.add (local.get 0) (f32.const 1)))
                  (f32.store (i32.add (i32.const 1024) (i32.shl (local.get 5) (i32.const 12))) (local.get 0))
                  (br_if 0 (i32.lt_u (local.tee 5 (i32.add (local.get 5) (i32.const 1))) (i32.const 100))))"#,
            ),
            vec![],
        ),
        (
            "fuel: a straight line of free operators, then a trap",
            module(
                "",
                r#"(local.set 0 (f32.const 1)) (local.set 1 (local.get 0)) (local.set 0 (select (local.get 1) (local.get 0) (local.get 5)))
                (nop) (nop) (local.set 4 (v128.const i32x4 0 0 0 0)) (local.set 2 (f64.const 3))
                (f32.store (i32.const 70000) (f32.div (local.get 0) (f32.const 0)))"#,
            ),
            vec![],
        ),
        (
            "nops in loops",
            module(
                "",
                r#"(loop (nop) (local.set 0 (f32.add (nop) (local.get 0) (f32.const 1))) (nop) (nop)
                  (f32.store offset=1024 (i32.shl (i32.and (local.get 5) (i32.const 7)) (i32.const 2)) (f32.div (local.get 0) (f32.const 0)))
                  (br_if 0 (i32.lt_u (local.tee 5 (i32.add (nop) (local.get 5) (i32.const 1))) (i32.const 30))) (nop))"#,
            ),
            vec![],
        ),
        (
            "a function with 300 locals (multi-byte local indices)",
            module(
                &format!(
                    "(func $many (param f32) (result f32) (local {}) (local.set 299 (f32.div (local.get 0) (f32.const 0))) (local.set 298 (f32.load (i32.const 68))) (f32.store (i32.const 1024) (local.get 298)) (f32.store (i32.const 1028) (f32.neg (local.get 299))) (select (local.get 299) (local.get 298) (f32.ne (local.get 0) (f32.const 0))))",
                    "f32 ".repeat(299)
                ),
                r#"(f32.store (i32.const 1032) (call $many (f32.const 0)))
                (f32.store (i32.const 1036) (call $many (f32.const 1)))"#,
            ),
            vec![(1024, 4, 0xffd5_4321), (1028, 4, 0xff80_0000), (1032, 4, 0xffd5_4321), (1036, 4, 0x7f80_0000)],
        ),
        (
            "start function and branch hints",
            module(
                "(global $s (mut f32) (f32.const 0)) (func $init (global.set $s (f32.neg (f32.div (f32.const 0) (f32.const 0))))) (start $init)",
                r#"(f32.store (i32.const 1024) (global.get $s))
                (@metadata.code.branch_hint "\01") (if (f32.ne (global.get $s) (global.get $s)) (then (f32.store (i32.const 1028) (f32.abs (global.get $s)))))"#,
            ),
            vec![(1024, 4, N32), (1028, 4, C32)],
        ),
    ]
}

//! The blocked, threaded matrix product behind matmul and conv2d: `C = A x B` with every output
//! element the chain `acc = +0.0; for k ascending: acc = fma(a[i, k], b[k, j], acc)`, except
//! that B may mark some `(k, j)` as absent (conv2d's padded taps), which the chain of column `j`
//! then skips. Blocking and threads never change a chain: K is never split across threads, and
//! when it is blocked for the cache the running accumulators are parked in the output between
//! blocks (an `f32` store and reload is exact) and the chain goes on from them.
//!
//! The shape is BLIS's: B is packed into `KC x NR` panels, A into `MR x KC` panels, and a
//! register-blocked microkernel keeps an `MR x NR` tile of accumulators in registers (module
//! `x86`: AVX-512F, 14 x 32, or AVX2 + FMA, 6 x 16, whichever the CPU has at run time; elsewhere
//! plain Rust over [`f32::mul_add`], a correctly rounded fma everywhere, so all give the same
//! bits).
//!
//! Threads: each block of B (all of K where it fits in [`PACK_CAP`] floats) is packed once,
//! its panels shared out among the threads, and then read by all of them; the output is cut
//! into rectangles (row blocks, and column ranges when there are too few rows), which the
//! threads take one at a time from a queue. With few rows (at most two row blocks: conv2d's
//! output channels, a few tokens) each B panel serves one rectangle only, so it is packed by
//! that rectangle's thread right where it is used, and the threads split the columns. Each
//! rectangle's chains are computed whole by the thread that took it, so the cut changes nothing
//! but speed.

use std::cell::RefCell;
use std::ops::Range;

use super::{Workers, pool};

mod out;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use out::{Rect, TileOut, rects};

/// Depth of one packed block: a `KC x NR` panel of B (16 or 32 KiB) stays in L1.
pub(crate) const KC: usize = 256;
/// About how many rows of A are packed at a time (rounded down to a multiple of `MR`):
/// `MC x KC` (about 144 KiB) stays in L2.
pub(crate) const MC: usize = 144;
/// About how many columns of B are packed at a time (rounded down to a multiple of `NR`).
pub(crate) const NC: usize = 2048;
/// Floats of B packed at a time (4 MiB; more when `NC x KC` is more): the K extent of a packed
/// block is as many `KC` steps as fit, so one packing serves all of K for most shapes. (The unit
/// tests pack little at a time, so that small shapes cross blocks.)
const PACK_CAP: usize = if cfg!(test) { 1 << 12 } else { 1 << 20 };
/// Row blocks of at most this many `MC`-row blocks are one unit, and pack B as they go (the
/// unit tests take the shared-packing path from 3 row tiles on).
const LOCAL_ROW_BLOCKS: usize = if cfg!(test) { 0 } else { 2 };
/// Below this many multiply-adds per thread, waking another thread costs more than it saves
/// (the unit tests split everything, so that small shapes exercise the threaded paths).
const MIN_FMAS_PER_THREAD: u128 = if cfg!(test) { 1 } else { 1 << 20 };
/// Output rectangles per thread: enough that a thread which starts late or runs slower (a
/// busy core) leaves little behind, few enough that each is a good few hundred microseconds.
const UNITS_PER_THREAD: usize = 4;

/// A microkernel: continues the chains of one `MR x NR` tile over `a.len() == b.len()` steps of
/// k. `first` means the chains start here from +0.0 and `c` is not read.
pub(crate) trait Micro<const MR: usize, const NR: usize>: Copy + Send + Sync {
    /// Every step in every lane.
    fn tile(self, a: &[[f32; MR]], b: &[[f32; NR]], c: TileOut<'_, NR>, first: bool);
    /// Step `s` only in the lanes whose bit is set in `masks[s]`; the others keep their chain.
    fn tile_masked(self, a: &[[f32; MR]], b: &[[f32; NR]], masks: &[u32], c: TileOut<'_, NR>, first: bool);
}

/// The portable microkernel: the same chains as the intrinsics, element by element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Portable;

impl<const MR: usize, const NR: usize> Micro<MR, NR> for Portable {
    fn tile(self, a: &[[f32; MR]], b: &[[f32; NR]], c: TileOut<'_, NR>, first: bool) {
        portable::<MR, NR, false>(a, b, &[], c, first);
    }

    fn tile_masked(self, a: &[[f32; MR]], b: &[[f32; NR]], masks: &[u32], c: TileOut<'_, NR>, first: bool) {
        portable::<MR, NR, true>(a, b, masks, c, first);
    }
}

fn portable<const MR: usize, const NR: usize, const MASKED: bool>(a: &[[f32; MR]], b: &[[f32; NR]], masks: &[u32], mut c: TileOut<'_, NR>, first: bool) {
    let mut acc = [[0.0f32; NR]; MR];
    if !first {
        for (i, row) in acc.iter_mut().enumerate() {
            *row = *c.row(i);
        }
    }
    for (step, (ak, bk)) in a.iter().zip(b).enumerate() {
        let mask = if MASKED { masks[step] } else { u32::MAX };
        for (row, &aik) in acc.iter_mut().zip(ak) {
            for (j, (acc_ij, &bkj)) in row.iter_mut().zip(bk).enumerate() {
                if !MASKED || mask >> j & 1 == 1 {
                    *acc_ij = aik.mul_add(bkj, *acc_ij);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        *c.row(i) = *row;
    }
}

#[cfg(target_arch = "x86_64")]
impl Micro<6, 16> for x86::Avx2Fma {
    fn tile(self, a: &[[f32; 6]], b: &[[f32; 16]], c: TileOut<'_, 16>, first: bool) {
        x86::Avx2Fma::tile(self, a, b, c, first);
    }

    fn tile_masked(self, a: &[[f32; 6]], b: &[[f32; 16]], masks: &[u32], c: TileOut<'_, 16>, first: bool) {
        x86::Avx2Fma::tile_masked(self, a, b, masks, c, first);
    }
}

#[cfg(target_arch = "x86_64")]
impl Micro<14, 32> for x86::Avx512 {
    fn tile(self, a: &[[f32; 14]], b: &[[f32; 32]], c: TileOut<'_, 32>, first: bool) {
        x86::Avx512::tile(self, a, b, c, first);
    }

    fn tile_masked(self, a: &[[f32; 14]], b: &[[f32; 32]], masks: &[u32], c: TileOut<'_, 32>, first: bool) {
        x86::Avx512::tile_masked(self, a, b, masks, c, first);
    }
}

/// Which microkernel runs. Every kernel computes the same chains; they differ only in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Plain Rust over `f32::mul_add`, a 6 x 16 tile.
    Portable,
    /// AVX2 + FMA intrinsics, a 6 x 16 tile; holds the proof that both were detected.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(x86::Avx2Fma),
    /// AVX-512F intrinsics, a 14 x 32 tile; holds the proof that it was detected.
    #[cfg(target_arch = "x86_64")]
    Avx512(x86::Avx512),
}

impl Kernel {
    /// The fastest kernel this machine runs.
    pub(crate) fn detect() -> Kernel {
        Kernel::available().pop().unwrap_or(Kernel::Portable)
    }

    /// Every kernel this machine runs, slowest first.
    pub(crate) fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            all.extend(x86::Avx2Fma::detect().map(Kernel::Avx2Fma));
            all.extend(x86::Avx512::detect().map(Kernel::Avx512));
        }
        all
    }

    /// The kernel's tile width `NR`: the lanes a right side packs per panel.
    pub(crate) fn lanes(self) -> usize {
        match self {
            Kernel::Portable => 16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma(_) => 16,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512(_) => 32,
        }
    }

    /// Fills `out` (zeroed, `m x cols.out_start(n)`) with `product`, stopping between blocks
    /// when `workers` says so (`out` is then incomplete).
    pub(crate) fn product<R: RightSide<16> + RightSide<32>>(self, product: &Product<'_, R>, out: &mut [f32], workers: Workers<'_>) {
        match self {
            Kernel::Portable => run::<6, 16, _, _>(Portable, product, out, workers),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma(token) => run::<6, 16, _, _>(token, product, out, workers),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512(token) => run::<14, 32, _, _>(token, product, out, workers),
        }
    }
}

/// The right-hand matrix B (`K x N`) of a product, as it packs itself.
pub(crate) trait RightSide<const NR: usize>: Sync {
    /// Whether some `(k, j)` may be absent, so packed rows carry lane masks.
    const MASKED: bool;

    /// Packs rows `pc..pc + kc` of columns `j0..j0 + NR * full.len()` as `full.len()` panels of
    /// `kc` rows of `NR` into `panels`, columns past N zero. When [`Self::MASKED`], `masks`
    /// (`panels.len()` long) gets one mask per packed row (bit `j` set: lane `j` is present),
    /// columns past N absent, and `full[p]` says whether every lane of panel `p` is present in
    /// every row (then the unmasked kernel runs). Without masks, `masks` is empty and `full` is
    /// all true.
    fn pack(&self, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]], masks: &mut [u32], full: &mut [bool]);
}

/// How the product's columns map to the output's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cols {
    /// Column `q` of the product is column `q` of the output.
    Identity,
    /// The product's columns are rows of `pitch` of which the first `width` are real: column
    /// `q` is output column `(q / pitch) * width + q % pitch` when `q % pitch < width`, and
    /// nowhere otherwise (conv2d computes on the input's row pitch and drops the rest).
    Grid { pitch: usize, width: usize },
}

impl Cols {
    /// The first output column at or after product column `q`.
    fn out_start(self, q: usize) -> usize {
        match self {
            Cols::Identity => q,
            Cols::Grid { pitch, width } => (q / pitch) * width + (q % pitch).min(width),
        }
    }

    /// The output column of product column `q`, if it has one.
    fn out_col(self, q: usize) -> Option<usize> {
        match self {
            Cols::Identity => Some(q),
            Cols::Grid { pitch, width } => (q % pitch < width).then(|| (q / pitch) * width + q % pitch),
        }
    }
}

/// One product: `A (m x k, row-major) x B (k x n)`, written to a row-major output of
/// `m x cols.out_start(n)`.
pub(crate) struct Product<'a, R> {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) a: &'a [f32],
    pub(crate) rhs: &'a R,
    pub(crate) cols: Cols,
    /// Called once per output row segment whose chains are complete, with the row's index:
    /// NaN canonicalisation, conv2d's bias.
    pub(crate) finish: &'a (dyn Fn(usize, &mut [f32]) + Sync),
}

/// Packed B, kept per calling thread between calls (its size is bounded by [`PACK_CAP`]), so a
/// call does not page in fresh memory.
#[derive(Default)]
struct PackedB {
    data: Vec<f32>,
    masks: Vec<u32>,
    full: Vec<bool>,
}

thread_local! {
    static PACKED_B: RefCell<PackedB> = RefCell::new(PackedB::default());
    static PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One packed block of B: product columns `jc..jc + nc` (`panels` panels), rows `kb..kb + kbl`.
#[derive(Debug, Clone, Copy)]
struct Block {
    jc: usize,
    nc: usize,
    panels: usize,
    kb: usize,
    kbl: usize,
}

impl Block {
    /// The `KC`-deep steps of the block: `(index, pc, kc)`.
    fn steps(self) -> impl Iterator<Item = (usize, usize, usize)> {
        (self.kb..self.kb + self.kbl).step_by(KC).enumerate().map(move |(s, pc)| (s, pc, KC.min(self.kb + self.kbl - pc)))
    }

    /// Where panel `q` of step `s` (depth `kc`) starts, in packed rows.
    fn panel_at(self, s: usize, q: usize, kc: usize) -> usize {
        s * KC * self.panels + q * kc
    }
}

/// Fills `out` (zeroed, `m x cols.out_start(n)`) with `product`; stops between blocks when
/// `workers` says so (`out` is then incomplete). Does nothing when `m`, `n` or `k` is 0.
fn run<const MR: usize, const NR: usize, K: Micro<MR, NR>, R: RightSide<NR>>(kernel: K, product: &Product<'_, R>, out: &mut [f32], workers: Workers<'_>) {
    let (m, n, k) = (product.m, product.n, product.k);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let fmas = m as u128 * n as u128 * k as u128;
    let threads = workers.threads.min(usize::try_from(fmas / MIN_FMAS_PER_THREAD).unwrap_or(usize::MAX).max(1));
    let ldc = product.cols.out_start(n);
    let nc_max = (NC / NR).max(1) * NR;
    let tiles = m.div_ceil(MR);
    if tiles <= (LOCAL_ROW_BLOCKS * (MC / MR)).max(2) {
        // Few rows (conv2d's output channels, a few tokens): each B panel is used by one row
        // block only, so it is packed right where it is used, while it stays in L1, and the
        // threads split the columns.
        let wanted = if threads <= 1 { 1 } else { threads * UNITS_PER_THREAD };
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let block = Block { jc, nc, panels: nc.div_ceil(NR), kb: 0, kbl: k };
            compute_block::<MR, NR, K, R>(kernel, product, block, None, out, ldc, [1, wanted.clamp(1, block.panels)], threads, workers);
            if workers.should_stop() {
                return;
            }
        }
        return;
    }
    PACKED_B.with_borrow_mut(|store| {
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            let panels = nc.div_ceil(NR);
            let kb_max = (PACK_CAP / (panels * NR) / KC).max(1) * KC;
            for kb in (0..k).step_by(kb_max) {
                let block = Block { jc, nc, panels, kb, kbl: kb_max.min(k - kb) };
                pack_block::<NR, R>(product.rhs, block, store, threads, workers);
                if workers.should_stop() {
                    return;
                }
                // Rows split first (each unit packs its own A; B is shared), then columns.
                let wanted = if threads <= 1 { 1 } else { threads * UNITS_PER_THREAD };
                let row_units = tiles.div_ceil((MC / MR).max(1)).max(wanted.min(tiles));
                let units = [row_units, wanted.div_ceil(row_units).clamp(1, panels)];
                compute_block::<MR, NR, K, R>(kernel, product, block, Some(store), out, ldc, units, threads, workers);
                if workers.should_stop() {
                    return;
                }
            }
        }
    });
}

/// Packs `block` of B into `store`, the panels shared out among `threads`.
fn pack_block<const NR: usize, R: RightSide<NR>>(rhs: &R, block: Block, store: &mut PackedB, threads: usize, workers: Workers<'_>) {
    let rows = block.panels * block.kbl;
    let steps = block.kbl.div_ceil(KC);
    store.data.resize(rows * NR, 0.0);
    store.masks.resize(if R::MASKED { rows } else { 0 }, 0);
    store.full.resize(steps * block.panels, true);
    // Pieces of a few panels each, so that every thread gets several.
    let group = block.panels.div_ceil(threads * UNITS_PER_THREAD).max(1);
    let mut items = Vec::new();
    let (mut data, mut masks, mut full) = (store.data.as_chunks_mut::<NR>().0, store.masks.as_mut_slice(), store.full.as_mut_slice());
    for (_, pc, kc) in block.steps() {
        for q0 in (0..block.panels).step_by(group) {
            let count = group.min(block.panels - q0);
            let (d, rest_d) = std::mem::take(&mut data).split_at_mut(count * kc);
            let (mk, rest_m) = std::mem::take(&mut masks).split_at_mut(if R::MASKED { count * kc } else { 0 });
            let (f, rest_f) = std::mem::take(&mut full).split_at_mut(count);
            (data, masks, full) = (rest_d, rest_m, rest_f);
            items.push((pc, kc, block.jc + q0 * NR, d, mk, f));
        }
    }
    pool::for_each(threads, items, |_, (pc, kc, j0, d, mk, f)| {
        if !workers.should_stop() {
            rhs.pack(pc, kc, j0, d, mk, f);
        }
    });
}

/// Computes `block`'s part of every chain, the output cut into `row_units x col_units`
/// rectangles (at most one per row tile and per panel) that `threads` take from a queue. B
/// comes packed in `store`, or, without one, each unit packs its panels as it goes.
#[allow(clippy::too_many_arguments)]
fn compute_block<const MR: usize, const NR: usize, K: Micro<MR, NR>, R: RightSide<NR>>(
    kernel: K,
    product: &Product<'_, R>,
    block: Block,
    store: Option<&PackedB>,
    out: &mut [f32],
    ldc: usize,
    [row_units, col_units]: [usize; 2],
    threads: usize,
    workers: Workers<'_>,
) {
    let m = product.m;
    let tiles = m.div_ceil(MR);
    let row_bounds: Vec<usize> = (0..=row_units).map(|r| (r * tiles / row_units * MR).min(m)).collect();
    let panel_bounds: Vec<usize> = (0..=col_units).map(|c| c * block.panels / col_units).collect();
    let col_bounds: Vec<usize> = panel_bounds.iter().map(|&q| product.cols.out_start((block.jc + q * NR).min(block.jc + block.nc))).collect();
    let rects = out::rects(out, ldc, &row_bounds, &col_bounds);
    let units: Vec<_> = row_bounds
        .windows(2)
        .flat_map(|r| panel_bounds.windows(2).map(move |c| (r[0]..r[1], c[0]..c[1])))
        .zip(rects)
        .map(|((rows, panels), rect)| (rows, panels, rect))
        .collect();
    pool::for_each(threads, units, |_, (rows, panels, rect)| {
        PACKED_A.with_borrow_mut(|packed_a| compute_unit::<MR, NR, K, R>(kernel, product, block, store, rect, rows, panels, packed_a, workers));
    });
}

/// One rectangle: rows `rows` x the product columns of panels `panels` of `block`, whose
/// output is `rect`; B packed in `store`, or packed here panel by panel.
#[allow(clippy::too_many_arguments)]
fn compute_unit<const MR: usize, const NR: usize, K: Micro<MR, NR>, R: RightSide<NR>>(
    kernel: K,
    product: &Product<'_, R>,
    block: Block,
    store: Option<&PackedB>,
    mut rect: Rect<'_>,
    rows: Range<usize>,
    panels: Range<usize>,
    packed_a: &mut Vec<f32>,
    workers: Workers<'_>,
) {
    let (n, k, cols) = (product.n, product.k, product.cols);
    let j0 = block.jc + panels.start * NR;
    let o0 = cols.out_start(j0);
    let mut own = PackedB::default();
    for (s, pc, kc) in block.steps() {
        if workers.should_stop() {
            return;
        }
        let first = pc == 0;
        let a_panels = pack_a::<MR>(product.a, k, rows.start, rows.len(), pc, kc, packed_a);
        for q in panels.clone() {
            // A panel is at most `MC * 2 x KC x NR` multiply-adds (some 30 µs): stops come soon.
            if workers.should_stop() {
                return;
            }
            let jr = block.jc + q * NR;
            let nr = NR.min(n - jr);
            let (packed, at, full) = match store {
                Some(store) => (store, block.panel_at(s, q, kc), store.full[s * block.panels + q]),
                None => {
                    own.data.resize(kc * NR, 0.0);
                    own.masks.resize(if R::MASKED { kc } else { 0 }, 0);
                    own.full.resize(1, true);
                    product.rhs.pack(pc, kc, jr, own.data.as_chunks_mut::<NR>().0, &mut own.masks, &mut own.full);
                    (&own, 0, own.full[0])
                }
            };
            let b = &packed.data.as_chunks::<NR>().0[at..at + kc];
            let masks = if R::MASKED { &packed.masks[at..at + kc] } else { &[][..] };
            // Where each lane of this panel lands in the rectangle's rows, for edge tiles.
            let lanes: [Option<usize>; NR] = std::array::from_fn(|l| if l < nr { cols.out_col(jr + l).map(|o| o - o0) } else { None });
            let direct = nr == NR && cols == Cols::Identity;
            for (ip, ir) in (0..rows.len()).step_by(MR).enumerate() {
                let mr = MR.min(rows.len() - ir);
                let a = &a_panels[ip * kc..(ip + 1) * kc];
                if direct && mr == MR {
                    let c = rect.tile::<NR>(ir, jr - j0, MR);
                    if full {
                        kernel.tile(a, b, c, first)
                    } else {
                        kernel.tile_masked(a, b, masks, c, first)
                    }
                    continue;
                }
                // A tile cut by an edge, or whose columns do not map one to one: run it on a
                // full-size scratch tile and copy the lanes that exist.
                let mut tmp = [[0.0f32; NR]; MR];
                if !first {
                    for (i, t) in tmp.iter_mut().enumerate().take(mr) {
                        let row = rect.row(ir + i);
                        for (v, lane) in t.iter_mut().zip(&lanes) {
                            if let Some(o) = *lane {
                                *v = row[o];
                            }
                        }
                    }
                }
                let c = TileOut::array(&mut tmp);
                if full {
                    kernel.tile(a, b, c, first)
                } else {
                    kernel.tile_masked(a, b, masks, c, first)
                }
                for (i, t) in tmp.iter().enumerate().take(mr) {
                    let row = rect.row(ir + i);
                    for (v, lane) in t.iter().zip(&lanes) {
                        if let Some(o) = *lane {
                            row[o] = *v;
                        }
                    }
                }
            }
        }
        if pc + kc == k {
            // These chains are complete: canonical NaNs, bias, while the rows are in cache.
            for (i, row) in rows.clone().enumerate() {
                (product.finish)(row, rect.row(i));
            }
        }
    }
}

/// Packs `a[ic..ic+mc, pc..pc+kc]` (row-major, rows of `k`) as `ceil(mc / MR)` panels of `kc`
/// columns of `MR`, zero-filled past row `mc` (those rows' results are never stored).
fn pack_a<'p, const MR: usize>(a: &[f32], k: usize, ic: usize, mc: usize, pc: usize, kc: usize, dst: &'p mut Vec<f32>) -> &'p [[f32; MR]] {
    let panels = mc.div_ceil(MR);
    dst.resize(panels * kc * MR, 0.0);
    let dst = &mut dst.as_chunks_mut::<MR>().0[..panels * kc];
    for (p, panel) in dst.chunks_exact_mut(kc).enumerate() {
        let r0 = ic + p * MR;
        let rows = MR.min(ic + mc - r0);
        if rows == MR {
            // MR row streams in, contiguous panel slots out.
            let src: [&[f32]; MR] = std::array::from_fn(|i| &a[(r0 + i) * k + pc..(r0 + i) * k + pc + kc]);
            for (kk, slot) in panel.iter_mut().enumerate() {
                for (s, row) in slot.iter_mut().zip(&src) {
                    *s = row[kk];
                }
            }
        } else {
            for (i, slot_i) in (0..MR).map(|i| (i, i < rows)) {
                for (kk, slot) in panel.iter_mut().enumerate() {
                    slot[i] = if slot_i { a[(r0 + i) * k + pc + kk] } else { 0.0 };
                }
            }
        }
    }
    dst
}

//! conv2d's right side: the im2col matrix of one image, packed straight from the image block by
//! block (never built whole, so its memory is the packing buffer's), with a lane mask per
//! packed row for the taps that land in the padding.
//!
//! Row `r` of the matrix is the tap `(c, ky, kx)` with `r = (c * KH + ky) * KW + kx`, the
//! spec's order; column `q` is an output position. Where the strides are 1 and the output is
//! at least 7/8 as wide as the input (and no wider), the columns run over the input's row pitch
//! `W` (`q = y * W + x`, the columns `x >= Wout` computed and dropped), so that tap
//! `(c, ky, kx)` of columns `q..q + NR` reads the input plane `c` from
//! `q + (ky - ph) * W + (kx - pw)` on: one contiguous copy per packed row. Otherwise the columns
//! are the output positions (`q = y * Wout + x`) and each lane is fetched on its own.

use super::Geometry;
#[cfg(target_arch = "x86_64")]
use super::x86::Simd;
use crate::cpu::gemm::RightSide;

/// Most mask-table entries kept per image (taps x panels), 4 MiB.
const MASK_TABLE_MAX: usize = 1 << 20;

/// The im2col matrix of one image `[C, H, W]`.
pub(super) struct Im2col<'a> {
    /// The image, `C x H x W`.
    x: &'a [f32],
    geo: Geometry,
    /// Columns per output row: `W` when packed rows are contiguous copies, `Wout` otherwise.
    pitch: usize,
    /// Columns in all: `Hout x pitch`.
    n: usize,
    /// Lanes per panel.
    lanes: usize,
    /// The mask of every tap over every panel (`panel * taps + tap`), when small enough; else
    /// each is made when packed.
    masks: Option<Vec<u32>>,
    /// Which compilation of the packing loops runs.
    #[cfg(target_arch = "x86_64")]
    simd: Option<Simd>,
}

impl<'a> Im2col<'a> {
    /// The im2col matrix of image `x` for panels of `lanes` columns (`lanes <= 32`).
    pub(super) fn new(x: &'a [f32], geo: Geometry, lanes: usize) -> Im2col<'a> {
        let pitch = if Im2col::contiguous(&geo) { geo.w } else { geo.wout };
        let mut this = Im2col {
            x,
            geo,
            pitch,
            n: geo.hout * pitch,
            lanes,
            masks: None,
            #[cfg(target_arch = "x86_64")]
            simd: Simd::detect(),
        };
        let (taps, panels) = (geo.kh * geo.kw, this.n.div_ceil(lanes));
        if taps.saturating_mul(panels) <= MASK_TABLE_MAX {
            let mut table = Vec::with_capacity(taps * panels);
            for p in 0..panels {
                this.panel_masks(p * lanes, &mut table);
            }
            this.masks = Some(table);
        }
        this
    }

    /// Appends the masks of every tap, in order, over columns `q0..q0 + lanes`. A tap's mask is
    /// the lanes whose row is inside for its `ky` and whose column is inside for its `kx`, plus
    /// the lanes never stored: `KH + KW` lane loops, not `KH x KW`.
    fn panel_masks(&self, q0: usize, table: &mut Vec<u32>) {
        let g = &self.geo;
        let (mut y, mut x) = (q0 / self.pitch, q0 % self.pitch);
        let mut lanes = Vec::with_capacity(self.lanes);
        let mut dropped = 0u32;
        for l in 0..self.lanes {
            if q0 + l < self.n && x < g.wout {
                lanes.push(Some((y, x)));
            } else {
                lanes.push(None);
                dropped |= 1 << l;
            }
            x += 1;
            if x == self.pitch {
                (y, x) = (y + 1, 0);
            }
        }
        let inside = |pos: usize, stride: usize, tap: usize, pad: usize, size: usize| {
            (0..size as i128).contains(&((pos as i128) * (stride as i128) + tap as i128 - pad as i128))
        };
        let bits = |keep: &dyn Fn(usize, usize) -> bool| {
            lanes.iter().enumerate().filter(|(_, yx)| yx.is_some_and(|(y, x)| keep(y, x))).fold(0u32, |m, (l, _)| m | 1 << l)
        };
        let rows: Vec<u32> = (0..g.kh).map(|ky| bits(&|y, _| inside(y, g.stride_h, ky, g.pad_h, g.h))).collect();
        let cols: Vec<u32> = (0..g.kw).map(|kx| bits(&|_, x| inside(x, g.stride_w, kx, g.pad_w, g.w))).collect();
        for row in &rows {
            table.extend(cols.iter().map(|col| row & col | dropped));
        }
    }

    /// Whether the columns can run over the input's pitch (see the module docs): strides 1, and
    /// at most an eighth of the columns computed and dropped (`W - Wout = KW - 1 - 2 pw`; a wide
    /// kernel on a wide image must not make the product many times the work its fuel paid for).
    pub(super) fn contiguous(geo: &Geometry) -> bool {
        geo.stride_h == 1 && geo.stride_w == 1 && geo.wout <= geo.w && (geo.w - geo.wout) * 8 <= geo.w
    }

    /// Columns per output row (see [`Im2col::new`]).
    pub(super) fn pitch(&self) -> usize {
        self.pitch
    }

    /// Columns in all.
    pub(super) fn columns(&self) -> usize {
        self.n
    }

    /// The input position `(iy, ix)` that tap `(ky, kx)` of output position `(y, x)` reads, or
    /// `None` in the padding. Exact for any sizes (i128: `y * stride + tap` may pass `isize`).
    fn source(&self, (y, x): (usize, usize), ky: usize, kx: usize) -> Option<(usize, usize)> {
        let g = &self.geo;
        let iy = (y as i128) * (g.stride_h as i128) + ky as i128 - g.pad_h as i128;
        let ix = (x as i128) * (g.stride_w as i128) + kx as i128 - g.pad_w as i128;
        let inside = (0..g.h as i128).contains(&iy) && (0..g.w as i128).contains(&ix);
        inside.then_some((iy as usize, ix as usize))
    }

    /// Column `q`'s output position `(y, x)`, if its result is stored: columns past the end
    /// and, over the input's pitch, `x >= Wout` are computed and dropped, so any value may go
    /// there.
    fn stored(&self, q: usize) -> Option<(usize, usize)> {
        let (y, x) = (q / self.pitch, q % self.pitch);
        (q < self.n && x < self.geo.wout).then_some((y, x))
    }

    /// The mask of tap `(ky, kx)` over columns `q0..q0 + lanes`: bit `l` set when the tap is
    /// inside the input for column `q0 + l`, or that column is never stored.
    fn mask(&self, q0: usize, ky: usize, kx: usize) -> u32 {
        (0..self.lanes).filter(|&l| self.stored(q0 + l).is_none_or(|yx| self.source(yx, ky, kx).is_some())).fold(0, |m, l| m | 1 << l)
    }
}

impl<const NR: usize> RightSide<NR> for Im2col<'_> {
    const MASKED: bool = true;

    fn pack(&self, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]], masks: &mut [u32], full: &mut [bool]) {
        // The same loops compiled for the widest vectors the CPU has: a packed row is a 64- or
        // 128-byte copy, which baseline x86-64 does 16 bytes at a time.
        #[cfg(target_arch = "x86_64")]
        match self.simd {
            Some(Simd::Avx512(token)) => return token.pack(self, pc, kc, j0, panels, masks, full),
            Some(Simd::Avx2Fma(token)) => return token.pack(self, pc, kc, j0, panels, masks, full),
            None => {}
        }
        self.pack_rows(pc, kc, j0, panels, masks, full);
    }
}

impl Im2col<'_> {
    /// [`RightSide::pack`], inlined into each compilation of it.
    #[inline(always)]
    pub(super) fn pack_rows<const NR: usize>(&self, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]], masks: &mut [u32], full: &mut [bool]) {
        const { assert!(NR <= 32, "masks are u32") };
        assert_eq!(self.lanes, NR, "packed with the lanes it was made for");
        let g = &self.geo;
        let (taps, plane) = (g.kh * g.kw, g.h * g.w);
        let all = if NR == 32 { u32::MAX } else { (1u32 << NR) - 1 };
        let contiguous = self.pitch == g.w && Im2col::contiguous(g);
        // The tap of row `pc`; rows then step through the taps in order (no division per row).
        let (c0, t0) = (pc / taps, pc % taps);
        for (p, ((panel, masks), full)) in panels.chunks_exact_mut(kc).zip(masks.chunks_exact_mut(kc)).zip(full.iter_mut()).enumerate() {
            let q0 = j0 + p * NR;
            // Lane l of tap (c, ky, kx) reads plane c at start + ky * W + kx + l (contiguous
            // case); i128, as padding times pitch may pass isize.
            let start = q0 as i128 - (g.pad_h as i128 * g.w as i128 + g.pad_w as i128);
            // The output position of each lane, for the lane-by-lane case.
            let stored: [Option<(usize, usize)>; NR] = if contiguous { [None; NR] } else { std::array::from_fn(|l| self.stored(q0 + l)) };
            let table = self.masks.as_ref().map(|t| &t[q0 / NR * taps..(q0 / NR + 1) * taps]);
            let (mut c, mut t, mut ky, mut kx) = (c0, t0, t0 / g.kw, t0 % g.kw);
            let mut every = all;
            for (row, mask) in panel.iter_mut().zip(masks.iter_mut()) {
                *mask = match table {
                    Some(table) => table[t],
                    None => self.mask(q0, ky, kx),
                };
                every &= *mask;
                let src = &self.x[c * plane..(c + 1) * plane];
                if contiguous {
                    let at = start + (ky * g.w + kx) as i128;
                    if at >= 0 && at + NR as i128 <= plane as i128 {
                        row.copy_from_slice(&src[at as usize..at as usize + NR]);
                    } else {
                        for (l, v) in row.iter_mut().enumerate() {
                            let at = at + l as i128;
                            *v = if *mask >> l & 1 == 1 && (0..plane as i128).contains(&at) { src[at as usize] } else { 0.0 };
                        }
                    }
                } else {
                    for (v, yx) in row.iter_mut().zip(&stored) {
                        *v = match yx.and_then(|yx| self.source(yx, ky, kx)) {
                            Some((iy, ix)) => src[iy * g.w + ix],
                            None => 0.0,
                        };
                    }
                }
                (t, kx) = (t + 1, kx + 1);
                if kx == g.kw {
                    (ky, kx) = (ky + 1, 0);
                    if ky == g.kh {
                        (c, t, ky) = (c + 1, 0, 0);
                    }
                }
            }
            *full = every == all;
        }
    }
}

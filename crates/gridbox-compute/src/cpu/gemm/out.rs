//! The output matrix of one product, shared by the threads that fill it: each work unit
//! writes a rectangle of it that no other unit touches, and rectangles are not contiguous in
//! memory, so they cannot be made by splitting a slice. This module is the one place that hands
//! them out; everything above it uses safe row slices.
#![allow(unsafe_code)]

use std::marker::PhantomData;

/// Cuts the row-major matrix `out` (rows of `ldc`) into the rectangles of the grid whose row
/// boundaries are `rows` and column boundaries `cols` (each non-decreasing, inside the matrix):
/// `(rows.len() - 1) x (cols.len() - 1)` rectangles, row by row. They are disjoint by
/// construction, so each can go to its own thread. Panics on boundaries outside the matrix.
pub(crate) fn rects<'a>(out: &'a mut [f32], ldc: usize, rows: &[usize], cols: &[usize]) -> Vec<Rect<'a>> {
    let height = out.len().checked_div(ldc).unwrap_or(0);
    let inside = |b: &[usize], max: usize| b.windows(2).all(|w| w[0] <= w[1]) && b.iter().all(|&v| v <= max);
    assert!(inside(rows, height) && inside(cols, ldc), "rectangles outside the output");
    let ptr = out.as_mut_ptr();
    let mut all = Vec::with_capacity(rows.len().saturating_sub(1) * cols.len().saturating_sub(1));
    for r in rows.windows(2) {
        for c in cols.windows(2) {
            all.push(Rect {
                // SAFETY: `r[0] * ldc + c[0] <= height * ldc <= out.len()`: inside the slice, or
                // one past its end for an empty rectangle.
                ptr: unsafe { ptr.add(r[0] * ldc + c[0]) },
                rows: r[1] - r[0],
                width: c[1] - c[0],
                ldc,
                _owner: PhantomData,
            });
        }
    }
    all
}

/// One rectangle of [`rects`]: the only handle to its elements while it lives.
pub(crate) struct Rect<'a> {
    ptr: *mut f32,
    rows: usize,
    width: usize,
    ldc: usize,
    _owner: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `Rect` is a part of a `&mut [f32]` that no other `Rect` overlaps (`rects` makes
// them from one grid), like a `&mut [f32]` from `split_at_mut`, which is `Send`.
unsafe impl Send for Rect<'_> {}

impl Rect<'_> {
    /// Row `i` of the rectangle (`width` elements).
    pub(crate) fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row outside the rectangle");
        // SAFETY: row `i < rows` of the rectangle lies inside the matrix (`rects` checked the
        // boundaries); no other rectangle overlaps it, and `&mut self` keeps this the only live
        // slice of it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.ldc), self.width) }
    }

    /// The `MR x NR` tile whose top left corner is at row `i`, column `j` of the rectangle.
    pub(crate) fn tile<const NR: usize>(&mut self, i: usize, j: usize, mr: usize) -> TileOut<'_, NR> {
        assert!(i + mr <= self.rows && j + NR <= self.width, "tile outside the rectangle");
        TileOut {
            // SAFETY: inside the rectangle, checked just above.
            ptr: unsafe { self.ptr.add(i * self.ldc + j) },
            rows: mr,
            ldc: self.ldc,
            _owner: PhantomData,
        }
    }
}

/// Where a microkernel reads and writes its tile: `rows` rows of `NR` elements, `ldc` apart.
pub(crate) struct TileOut<'a, const NR: usize> {
    ptr: *mut f32,
    rows: usize,
    ldc: usize,
    _owner: PhantomData<&'a mut [f32]>,
}

impl<'a, const NR: usize> TileOut<'a, NR> {
    /// A tile held in a plain array (edges, scratch).
    pub(crate) fn array<const MR: usize>(tile: &'a mut [[f32; NR]; MR]) -> Self {
        TileOut { ptr: tile.as_flattened_mut().as_mut_ptr(), rows: MR, ldc: NR, _owner: PhantomData }
    }

    /// Row `i` of the tile. Panics when the tile has no row `i`.
    #[inline(always)]
    pub(crate) fn row(&mut self, i: usize) -> &mut [f32; NR] {
        assert!(i < self.rows, "row outside the tile");
        // SAFETY: rows `0..rows` of `NR` elements at `ldc` apart were checked to lie inside the
        // array or rectangle this tile borrows, which no one else touches while it lives.
        unsafe { &mut *self.ptr.add(i * self.ldc).cast::<[f32; NR]>() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_and_tiles_address_the_right_elements() {
        let mut m: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let mut all = rects(&mut m, 10, &[0, 2, 5], &[0, 3, 9]);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].row(1), &[10.0, 11.0, 12.0]);
        let mut r = all.pop().unwrap();
        assert_eq!(r.row(0), &[23.0, 24.0, 25.0, 26.0, 27.0, 28.0]);
        assert_eq!(r.row(2)[5], 48.0);
        let mut t = r.tile::<4>(1, 2, 2);
        assert_eq!(t.row(0), &[35.0, 36.0, 37.0, 38.0]);
        t.row(1)[3] = -1.0;
        drop(all);
        assert_eq!(m[48], -1.0);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_tile_past_the_rectangle_panics() {
        let mut m = vec![0.0; 60];
        let mut all = rects(&mut m, 10, &[0, 6], &[0, 10]);
        let _ = all[0].tile::<4>(0, 7, 1);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn boundaries_past_the_matrix_panic() {
        let mut m = vec![0.0; 60];
        let _ = rects(&mut m, 10, &[0, 7], &[0, 10]);
    }
}

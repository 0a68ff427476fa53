//! The tiled kernels behind the input-columns lowering of [`super::conv2d`].
//!
//! A stride-1 convolution is `out[O, P] = W[O, C·k²] · cols[C·k², P]` over the output pixels `P`.
//! Instead of building `cols` for the whole image (19 MB for 128 channels at 64×64, allocated,
//! faulted in and zeroed at every call, and kept until the backward), the output rows are cut into
//! tiles whose columns fit a core's cache ([`TILE_ELEMENTS`]). Each tile's columns are built in a
//! reused buffer and multiplied at once; the tiles are spread over the rayon threads with a
//! single-threaded GEMM each, or, when there are too few of them, run one after another with the GEMM
//! itself threaded. The weight gradient accumulates `dY · colsᵀ` tile by tile in a fixed number of
//! groups ([`WEIGHT_GRADIENT_GROUPS`]) summed in order, so no value depends on the thread count.
//!
//! Products run in f32 (f64 for f64 tensors): bf16 and f16 are widened while their columns are built,
//! as candle widens bf16 for its own matmul.

use std::borrow::Cow;
use std::ops::{Add, Mul, Range, Sub};

use gemm::Parallelism;
use rayon::prelude::*;

use super::product::{multiply, threaded, Strided};
use super::Geometry;

/// Most elements of one tile's columns (512 KiB in f32): the tile and the GEMM's packed copy of it stay
/// in a core's L2 cache.
pub(super) const TILE_ELEMENTS: usize = 1 << 17;

/// Fewest output pixels in a tile (whole rows are taken, so at least one row): narrower products
/// starve the GEMM's micro-kernel.
pub(super) const MIN_TILE_PIXELS: usize = 128;

/// The weight gradient's tiles are summed in this many groups, whatever the thread count.
const WEIGHT_GRADIENT_GROUPS: usize = 4;

/// The type a product is computed in: f32 or f64.
pub(super) trait Accumulator: Copy + Send + Sync + 'static + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> {
    const ZERO: Self;
    const HALF: Self;
    const ONE: Self;
}

impl Accumulator for f32 {
    const ZERO: f32 = 0.0;
    const HALF: f32 = 0.5;
    const ONE: f32 = 1.0;
}

impl Accumulator for f64 {
    const ZERO: f64 = 0.0;
    const HALF: f64 = 0.5;
    const ONE: f64 = 1.0;
}

/// A tensor element type the kernels read, and the type its products are computed in.
pub(super) trait TileElement: candle_core::WithDType {
    /// f64 for f64, f32 for every other type.
    type Acc: Accumulator + TileElement<Acc = Self::Acc>;
    /// One element in the product type.
    fn widen(self) -> Self::Acc;
    /// A slice in the product type, borrowed when it already is.
    fn widen_slice(s: &[Self]) -> Cow<'_, [Self::Acc]>;
    /// Products back in the tensor's type (the same buffer when the types are the same).
    fn narrow_vec(v: Vec<Self::Acc>) -> Vec<Self>;
}

macro_rules! computed_in_itself {
    ($t:ty) => {
        impl TileElement for $t {
            type Acc = $t;
            fn widen(self) -> $t {
                self
            }
            fn widen_slice(s: &[$t]) -> Cow<'_, [$t]> {
                Cow::Borrowed(s)
            }
            fn narrow_vec(v: Vec<$t>) -> Vec<$t> {
                v
            }
        }
    };
}

macro_rules! computed_in_f32 {
    ($t:ty) => {
        impl TileElement for $t {
            type Acc = f32;
            fn widen(self) -> f32 {
                self.to_f32()
            }
            fn widen_slice(s: &[$t]) -> Cow<'_, [f32]> {
                Cow::Owned(s.iter().map(|v| v.to_f32()).collect())
            }
            fn narrow_vec(v: Vec<f32>) -> Vec<$t> {
                v.into_iter().map(<$t>::from_f32).collect()
            }
        }
    };
}

computed_in_itself!(f32);
computed_in_itself!(f64);
computed_in_f32!(half::bf16);
computed_in_f32!(half::f16);

/// Writes the `k²` column rows of one `h × w` input plane for the output rows `rows` into `out`
/// (`[k², rows.len()·wo]`, tap `(ky, kx)` at row `g.tap_row(ky, kx)`): the plane shifted by the tap,
/// zero where the tap falls outside it, in the product type.
fn plane_columns<T: TileElement>(plane: &[T], (h, w): (usize, usize), g: Geometry, rows: Range<usize>, out: &mut [T::Acc]) {
    let zero = T::Acc::ZERO;
    let (_, wo) = g.out_size(h, w);
    let pixels = rows.len() * wo;
    for ky in 0..g.k {
        for kx in 0..g.k {
            let r = g.tap_row(ky, kx);
            let row = &mut out[r * pixels..(r + 1) * pixels];
            let xs = g.valid_range(kx, w, wo);
            for (t, oy) in rows.clone().enumerate() {
                let dst = &mut row[t * wo..(t + 1) * wo];
                if oy + ky < g.pad || oy + ky - g.pad >= h || xs.is_empty() {
                    dst.fill(zero);
                    continue;
                }
                let src = (oy + ky - g.pad) * w + xs.start + kx - g.pad;
                dst[..xs.start].fill(zero);
                dst[xs.end..].fill(zero);
                for (d, s) in dst[xs.clone()].iter_mut().zip(&plane[src..src + xs.len()]) {
                    *d = s.widen();
                }
            }
        }
    }
}

/// How a convolution's output is cut into tiles: `(sample, output rows)`, in order.
#[derive(Debug, Clone)]
pub(super) struct TilePlan {
    tiles: Vec<(usize, Range<usize>)>,
}

impl TilePlan {
    /// Tiles of whole output rows, for `n` samples of `ho × wo` outputs whose columns have `depth`
    /// rows: as many rows as keep a tile within `max_elements`, but at least `min_pixels` pixels.
    pub(super) fn new(n: usize, (ho, wo): (usize, usize), depth: usize, max_elements: usize, min_pixels: usize) -> Self {
        let by_size = max_elements / (depth * wo).max(1);
        let rows = by_size.max(min_pixels.div_ceil(wo.max(1))).clamp(1, ho.max(1));
        let tiles = (0..n).flat_map(|b| (0..ho).step_by(rows).map(move |r| (b, r..(r + rows).min(ho)))).collect();
        Self { tiles }
    }

    /// The plan the convolution uses ([`TILE_ELEMENTS`], [`MIN_TILE_PIXELS`]).
    pub(super) fn for_conv(n: usize, out: (usize, usize), depth: usize) -> Self {
        Self::new(n, out, depth, TILE_ELEMENTS, MIN_TILE_PIXELS)
    }

    /// The tiles: `(sample, rows)` in order.
    pub(super) fn tiles(&self) -> &[(usize, Range<usize>)] {
        &self.tiles
    }
}

/// Whether tiles run side by side (each with a one-thread GEMM) or one after another with the GEMM
/// threaded. The arithmetic is the same either way: the GEMM splits its output, not its sums.
pub(super) fn schedule(tiles: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if threads > 1 && tiles >= 2 * threads {
        (true, Parallelism::None)
    } else {
        (false, threaded())
    }
}

/// Runs `run(scratch, item)` on every item: side by side over the rayon threads when `side_by_side`
/// (one scratch value per task), else one after another with a single scratch value.
pub(super) fn for_each_with<I: Sync, S: Default + Send>(items: &[I], side_by_side: bool, run: impl Fn(&mut S, &I) + Sync + Send) {
    if side_by_side {
        items.par_iter().for_each_init(S::default, run);
    } else {
        let mut scratch = S::default();
        items.iter().for_each(|item| run(&mut scratch, item));
    }
}

/// A raw pointer into a buffer that the tasks of one call share: `*mut` where each task writes its own
/// disjoint part, `*const` where they only read.
#[derive(Clone, Copy)]
pub(super) struct Shared<P>(pub(super) P);
// SAFETY: the tasks of one call write disjoint parts of the buffer (or only read it), and the buffer
// outlives the call.
unsafe impl<P> Send for Shared<P> {}
unsafe impl<P> Sync for Shared<P> {}

impl<A> Shared<*mut A> {
    /// The pointer at `offset` (a method, so that closures capture the whole `Sync` wrapper).
    pub(super) fn at(self, offset: usize) -> *mut A {
        self.0.wrapping_add(offset)
    }
}

impl<A> Shared<*const A> {
    /// The pointer at `offset` (a method, so that closures capture the whole `Sync` wrapper).
    pub(super) fn at(self, offset: usize) -> *const A {
        self.0.wrapping_add(offset)
    }
}

/// Builds the columns of tile `(b, rows)` of `x: [N, C, H, W]` into `cols` (`[C·k², pixels]`) and
/// returns the tile's pixel count.
fn tile_columns<T: TileElement>(x: &[T], (_, c, h, w): (usize, usize, usize, usize), g: Geometry, (b, rows): &(usize, Range<usize>), cols: &mut Vec<T::Acc>) -> usize {
    let (_, wo) = g.out_size(h, w);
    let pixels = rows.len() * wo;
    let taps = g.k * g.k;
    cols.resize(c * taps * pixels, T::Acc::ZERO);
    let sample = &x[b * c * h * w..(b + 1) * c * h * w];
    for (plane, out) in sample.chunks_exact(h * w).zip(cols.chunks_exact_mut(taps * pixels)) {
        plane_columns(plane, (h, w), g, rows.clone(), out);
    }
    pixels
}

/// The convolution of `x: [N, C, H, W]` with `weight: [O, C·k²]` (rows ordered `(c, ky, kx)` as
/// stored, the taps read through `g`), as `[N, O, Ho·Wo]` in the product type.
pub(super) fn convolve<T: TileElement>(x: &[T], dims: (usize, usize, usize, usize), weight: &[T::Acc], o: usize, g: Geometry, plan: &TilePlan) -> Vec<T::Acc> {
    let (n, c, h, w) = dims;
    let (ho, wo) = g.out_size(h, w);
    let (depth, plane_out) = (c * g.k * g.k, ho * wo);
    let mut out = vec![T::Acc::ZERO; n * o * plane_out];
    let dst = Shared(out.as_mut_ptr());
    let (side_by_side, parallelism) = schedule(plan.tiles.len());
    let run = |cols: &mut Vec<T::Acc>, tile: &(usize, Range<usize>)| {
        let pixels = tile_columns(x, dims, g, tile, cols);
        let (b, rows) = tile;
        // SAFETY: out[b, :, rows] is `o` rows of `pixels` elements, `plane_out` apart, inside `out`
        // and written by this tile only; `weight` is [o, depth] and `cols` [depth, pixels], both
        // row-major.
        unsafe {
            multiply(
                Strided::rows(dst.at(b * o * plane_out + rows.start * wo), plane_out),
                false,
                Strided::rows(weight.as_ptr(), depth),
                Strided::rows(cols.as_ptr(), pixels),
                (o, pixels, depth),
                parallelism,
            );
        }
    };
    for_each_with(&plan.tiles, side_by_side, run);
    out
}

/// The weight gradient `dW[O, C·k²] = Σ dY · colsᵀ` over every sample and output pixel, for
/// `x: [N, C, H, W]` and the output gradient `dy: [N, O, Ho·Wo]` (product type).
pub(super) fn weight_gradient<T: TileElement>(x: &[T], dims: (usize, usize, usize, usize), dy: &[T::Acc], o: usize, g: Geometry, plan: &TilePlan) -> Vec<T::Acc> {
    let (_, c, h, w) = dims;
    let (ho, wo) = g.out_size(h, w);
    let (depth, plane_out) = (c * g.k * g.k, ho * wo);
    let (side_by_side, parallelism) = schedule(plan.tiles.len());
    let group = |tiles: &[(usize, Range<usize>)]| {
        let mut sum = vec![T::Acc::ZERO; o * depth];
        let mut cols = Vec::new();
        for (i, tile) in tiles.iter().enumerate() {
            let pixels = tile_columns(x, dims, g, tile, &mut cols);
            let (b, rows) = tile;
            // SAFETY: `sum` is [o, depth] row-major; dY's tile is `o` rows of `pixels`, `plane_out`
            // apart; colsᵀ reads `cols: [depth, pixels]` with swapped strides.
            unsafe {
                multiply(
                    Strided::rows(sum.as_mut_ptr(), depth),
                    i > 0,
                    Strided::rows(dy.as_ptr().add(b * o * plane_out + rows.start * wo), plane_out),
                    Strided::columns(cols.as_ptr(), pixels),
                    (o, depth, pixels),
                    parallelism,
                );
            }
        }
        sum
    };
    let per_group = plan.tiles.len().div_ceil(WEIGHT_GRADIENT_GROUPS).max(1);
    let sums: Vec<Vec<T::Acc>> = if side_by_side {
        plan.tiles.par_chunks(per_group).map(group).collect()
    } else {
        plan.tiles.chunks(per_group).map(group).collect()
    };
    let mut sums = sums.into_iter();
    let mut total = sums.next().unwrap_or_else(|| vec![T::Acc::ZERO; o * depth]);
    for sum in sums {
        for (t, s) in total.iter_mut().zip(sum) {
            *t += s;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::super::direct::{direct, max_diff, values};
    use super::*;

    #[test]
    fn every_tiling_matches_the_direct_definition() {
        let (n, c, h, w, o) = (2, 3, 9, 7, 4);
        let x = values(n * c * h * w, 1);
        for (k, pad) in [(3, 1), (3, 0), (1, 0), (2, 1), (5, 2)] {
            let g = Geometry { k, pad, flipped: false };
            let (ho, wo) = g.out_size(h, w);
            let wt = values(o * c * k * k, 2);
            let dy = values(n * o * ho * wo, 3);
            let (want_y, want_dw, _) = direct(&x, (n, c, h, w), &wt, o, k, pad, &dy);
            // One row per tile (many tiles and several gradient groups), two rows, one tile per sample.
            for (max_elements, min_pixels) in [(1, 1), (2 * c * k * k * wo, 1), (usize::MAX, 1)] {
                let plan = TilePlan::new(n, (ho, wo), c * k * k, max_elements, min_pixels);
                let y = convolve::<f64>(&x, (n, c, h, w), &wt, o, g, &plan);
                let dw = weight_gradient::<f64>(&x, (n, c, h, w), &dy, o, g, &plan);
                let tiles = plan.tiles.len();
                assert!(max_diff(&y, &want_y) < 1e-12, "k {k} pad {pad}, {tiles} tiles: output off by {}", max_diff(&y, &want_y));
                assert!(max_diff(&dw, &want_dw) < 1e-12, "k {k} pad {pad}, {tiles} tiles: weight gradient off by {}", max_diff(&dw, &want_dw));
            }
        }
    }

    #[test]
    fn plans_cover_every_row_once_within_the_budget() {
        for (ho, wo, depth) in [(64, 64, 576), (64, 64, 1152), (8, 8, 4608), (13, 17, 9), (1, 1, 1)] {
            let plan = TilePlan::for_conv(2, (ho, wo), depth);
            for b in 0..2 {
                let rows: Vec<usize> = plan.tiles.iter().filter(|t| t.0 == b).flat_map(|t| t.1.clone()).collect();
                assert_eq!(rows, (0..ho).collect::<Vec<_>>(), "{ho}x{wo} depth {depth}");
            }
            // Every tile but the last of a sample has the plan's height.
            for (_, rows) in plan.tiles.iter().filter(|(_, rows)| rows.end < ho) {
                let pixels = rows.len() * wo;
                assert!(pixels >= MIN_TILE_PIXELS, "{ho}x{wo}: {pixels}-pixel tile");
                assert!(rows.len() == 1 || pixels < MIN_TILE_PIXELS + wo || depth * pixels <= TILE_ELEMENTS, "{ho}x{wo} depth {depth}: tile of {} elements", depth * pixels);
            }
        }
    }

    #[test]
    fn thread_count_does_not_change_any_bit() {
        let (n, c, h, w, o) = (2, 16, 40, 40, 8);
        let g = Geometry { k: 3, pad: 1, flipped: false };
        let x: Vec<f32> = values(n * c * h * w, 4).into_iter().map(|v| v as f32).collect();
        let wt: Vec<f32> = values(o * c * 9, 5).into_iter().map(|v| v as f32).collect();
        let dy: Vec<f32> = values(n * o * h * w, 6).into_iter().map(|v| v as f32).collect();
        // One row per tile: the tiles run side by side; one tile per sample: one after another, with the
        // GEMM threaded.
        for plan in [TilePlan::new(n, (h, w), c * 9, 1, 1), TilePlan::new(n, (h, w), c * 9, usize::MAX, 1)] {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| (convolve::<f32>(&x, (n, c, h, w), &wt, o, g, &plan), weight_gradient::<f32>(&x, (n, c, h, w), &dy, o, g, &plan)))
            };
            let one = run(1);
            for threads in [2, 3] {
                assert!(run(threads) == one, "{} tiles: {threads} threads changed the result", plan.tiles.len());
            }
        }
    }
}

//! Winograd's minimal filtering F(2×2, 3×3) for the 3×3, padding-1 convolutions (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! The output is cut into 2×2 tiles; tile `t` reads the 4×4 input patch `d` around it (zero outside
//! the image). With the transforms `Bᵀ`, `G` and `Aᵀ` of F(2, 3), per output channel `o` and input
//! channel `c`:
//!
//! - forward: `Y = Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A`;
//! - weight gradient: `dW = Gᵀ [ Σ_t (A dY Aᵀ) ⊙ (Bᵀ d B) ] G` (the same bilinear form, transposed);
//! - input gradient: the forward of `dY` with the weight's channels swapped and its taps flipped.
//!
//! The sums over channels (forward) and over tiles (weight gradient) are 16 GEMMs, one per position of
//! the transformed 4×4 tile, with 16 products per tile and channel pair where im2col has 36: 2.25×
//! fewer multiplications. The transforms only add, subtract and halve, so the rounding stays that of
//! a few more additions (tested against the direct definition in f64, against candle's convolution,
//! by finite differences, and in bf16 against f32).
//!
//! Layouts, chosen so that every transform task owns one contiguous chunk and every GEMM operand is a
//! strided view: transformed weights `U: [O][16][C]`, transformed input `V: [C][16][tiles]`,
//! transformed output gradient `Ŷ` and products `M`: `[O][16][tiles]`, weight-gradient sums
//! `P: [O][16][C]`, each channel's chunk followed by [`SKEW`] unused elements. The forward works a
//! block of whole tile rows of one sample at a time ([`TilePlan`]); the weight gradient takes every
//! tile of a sample at once and a block of input channels at a time.

use std::ops::Range;

use gemm::Parallelism;
use rayon::prelude::*;

use super::product::{multiply, Strided};
use super::tiles::{for_each_with, schedule, Accumulator, Shared, TileElement, TilePlan};
use super::Geometry;

/// Positions of a transformed 4×4 tile.
const POSITIONS: usize = 16;

/// Padding after each channel's 16 rows of a transformed buffer: without it, rows of neighbouring
/// channels lie a power of two apart (64 KiB for 1024 tiles) and the GEMMs' reads across them all
/// fall into the same few cache sets.
const SKEW: usize = 16;

/// Elements of one channel's chunk of a transformed buffer with `len` values per position.
fn chunk_len(len: usize) -> usize {
    POSITIONS * len + SKEW
}

/// Most elements of one block's transformed input and products (1 MiB in f32).
const BLOCK_ELEMENTS: usize = 1 << 18;

/// Fewest tiles in a block (whole tile rows are taken): narrower GEMMs starve the micro-kernel.
const MIN_BLOCK_TILES: usize = 64;

/// Most elements of the transformed input of one block of channels in the weight gradient (4 MiB in
/// f32).
const CHANNEL_BLOCK_ELEMENTS: usize = 1 << 20;

/// Fewest 2×2 tiles per image for the forward and the input gradient to run here (16×16 pixels):
/// with fewer, each position's GEMM has too few rows for the micro-kernel, and the transforms of a
/// wide weight cost more than they save (measured with `cargo bench -p flmm-nn --bench conv`: at 8×8,
/// 512 → 512 takes 2.2 ms by im2col and 4.4 ms here).
const MIN_TILES: usize = 64;

/// Fewest tiles per image for the weight gradient to run here (32×32 pixels): its GEMMs sum over the
/// tiles, and the transformed sums are 16/9 the size of the weight, so a short sum over a wide layer
/// spends its time writing them (at 16×16, 512 → 256 forward + backward took 15.0 ms all here and
/// 13.8 ms all by im2col).
const MIN_WEIGHT_GRADIENT_TILES: usize = 256;

/// Whether the forward (or input gradient) of a convolution of geometry `g` producing `h × w` outputs
/// runs here: a 3×3 kernel with padding 1 on a large enough image.
pub(super) fn applies(g: Geometry, (h, w): (usize, usize)) -> bool {
    g.k == 3 && g.pad == 1 && tile_count((h, w)) >= MIN_TILES
}

/// Whether the weight gradient of a convolution of geometry `g` with `h × w` outputs runs here.
pub(super) fn applies_to_weight_gradient(g: Geometry, (h, w): (usize, usize)) -> bool {
    g.k == 3 && g.pad == 1 && tile_count((h, w)) >= MIN_WEIGHT_GRADIENT_TILES
}

/// How the 3×3 kernel of output channel `o` and input channel `c` is read from a stored weight.
#[derive(Debug, Clone, Copy)]
pub(super) struct KernelView {
    /// Output channels of the convolution run here.
    pub outs: usize,
    /// Input channels of the convolution run here.
    pub ins: usize,
    /// The stored weight is `[ins, outs, 3, 3]` (the input gradient's view of a forward weight)
    /// instead of `[outs, ins, 3, 3]`.
    pub swapped: bool,
    /// Tap `(ky, kx)` is stored at `(2 − ky, 2 − kx)`.
    pub flipped: bool,
}

impl KernelView {
    /// The view of a convolution's own weight `[O, C, 3, 3]` under geometry `g`.
    pub(super) fn forward(o: usize, c: usize, g: Geometry) -> Self {
        Self { outs: o, ins: c, swapped: false, flipped: g.flipped }
    }

    /// The view that makes the forward weight `[O, C, 3, 3]` of geometry `g` compute the input
    /// gradient (from `O` channels to `C`).
    pub(super) fn input_gradient(o: usize, c: usize, g: Geometry) -> Self {
        Self { outs: c, ins: o, swapped: true, flipped: !g.flipped }
    }

    /// Offset of tap `(ky, kx)` of kernel `(o, c)` in the stored weight.
    fn offset(&self, o: usize, c: usize, ky: usize, kx: usize) -> usize {
        let (ky, kx) = if self.flipped { (2 - ky, 2 - kx) } else { (ky, kx) };
        let pair = if self.swapped { c * self.outs + o } else { o * self.ins + c };
        pair * 9 + ky * 3 + kx
    }
}

/// `G u` for a 3-vector: the 4 values F(2, 3) multiplies by.
fn kernel_transform<A: Accumulator>([u0, u1, u2]: [A; 3]) -> [A; 4] {
    let half = A::HALF;
    [u0, (u0 + u1 + u2) * half, (u0 - u1 + u2) * half, u2]
}

/// `Gᵀ p` for a 4-vector: the 3 taps a transformed product contributes to.
fn kernel_transform_adjoint<A: Accumulator>([p0, p1, p2, p3]: [A; 4]) -> [A; 3] {
    let half = A::HALF;
    [p0 + (p1 + p2) * half, (p1 - p2) * half, (p1 + p2) * half + p3]
}

/// `U[o][p][c] = (G g Gᵀ)[p]` for every kernel of the view, in `[outs][16][ins]`.
fn transform_weights<A: Accumulator>(weight: &[A], view: KernelView) -> Vec<A> {
    let mut u = vec![A::ZERO; view.outs * chunk_len(view.ins)];
    u.par_chunks_mut(chunk_len(view.ins)).enumerate().for_each(|(o, chunk)| {
        for c in 0..view.ins {
            let tap = |ky, kx| weight[view.offset(o, c, ky, kx)];
            // G g: columns of the kernel transformed, giving 4 rows of 3.
            let cols: [[A; 4]; 3] = std::array::from_fn(|kx| kernel_transform([tap(0, kx), tap(1, kx), tap(2, kx)]));
            for r in 0..4 {
                let row = kernel_transform([cols[0][r], cols[1][r], cols[2][r]]);
                for (s, v) in row.into_iter().enumerate() {
                    chunk[(4 * r + s) * view.ins + c] = v;
                }
            }
        }
    });
    u
}

/// The weight gradient `[outs, ins, 3, 3]` from the transformed sums `P: [outs][16][ins]`, the taps
/// stored as geometry `g` reads them.
fn untransform_weight_gradient<A: Accumulator>(p: &[A], outs: usize, ins: usize, g: Geometry) -> Vec<A> {
    let view = KernelView::forward(outs, ins, g);
    let mut dw = vec![A::ZERO; outs * ins * 9];
    dw.par_chunks_mut(ins * 9).zip(p.par_chunks(chunk_len(ins))).enumerate().for_each(|(o, (out, sums))| {
        for c in 0..ins {
            let at = |r: usize, s: usize| sums[(4 * r + s) * ins + c];
            // Gᵀ P: the 4 columns reduced to 3 rows, then each row's 4 values to 3 taps.
            let cols: [[A; 3]; 4] = std::array::from_fn(|s| kernel_transform_adjoint([at(0, s), at(1, s), at(2, s), at(3, s)]));
            for ky in 0..3 {
                let taps = kernel_transform_adjoint([cols[0][ky], cols[1][ky], cols[2][ky], cols[3][ky]]);
                for (kx, v) in taps.into_iter().enumerate() {
                    out[view.offset(o, c, ky, kx) - o * ins * 9] = v;
                }
            }
        }
    });
    dw
}

/// Grid of 2×2 output tiles over an `ho × wo` output.
fn tile_grid((ho, wo): (usize, usize)) -> (usize, usize) {
    (ho.div_ceil(2), wo.div_ceil(2))
}

/// Tiles over an `ho × wo` output.
fn tile_count(out: (usize, usize)) -> usize {
    let (th, tw) = tile_grid(out);
    th * tw
}

/// One block: tile rows `rows` of sample `sample`, in a grid `tw` tiles wide.
#[derive(Debug, Clone)]
struct Block {
    sample: usize,
    rows: Range<usize>,
    tw: usize,
}

impl Block {
    fn tiles(&self) -> usize {
        self.rows.len() * self.tw
    }
}

/// The blocks of a convolution with `n` samples, `ho × wo` outputs and `depth` transformed values per
/// tile (16 per input and output channel).
fn plan(n: usize, out: (usize, usize), depth: usize) -> Vec<Block> {
    let (th, tw) = tile_grid(out);
    TilePlan::new(n, (th, tw), depth, BLOCK_ELEMENTS, MIN_BLOCK_TILES).tiles().iter().map(|(b, rows)| Block { sample: *b, rows: rows.clone(), tw }).collect()
}

/// A 1-D rule of a separable tile transform: the 4 transformed values from the `TAPS` values of one
/// row or column of a tile's patch, which starts `PAD` pixels before the tile.
trait TileRule<A: Accumulator> {
    const TAPS: usize;
    const PAD: usize;
    fn apply(d: &[A]) -> [A; 4];
}

/// `Bᵀ d`: the input patch (4 values from one pixel before the 2×2 tile).
struct InputRule;

impl<A: Accumulator> TileRule<A> for InputRule {
    const TAPS: usize = 4;
    const PAD: usize = 1;
    fn apply(d: &[A]) -> [A; 4] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    }
}

/// `A dY`: the output gradient's 2×2 tile itself.
struct GradientRule;

impl<A: Accumulator> TileRule<A> for GradientRule {
    const TAPS: usize = 2;
    const PAD: usize = 0;
    fn apply(d: &[A]) -> [A; 4] {
        [d[0], d[0] + d[1], d[0] - d[1], A::ZERO - d[1]]
    }
}

/// `R d Rᵀ` for rule `R` of every tile of `block` in one `h × w` plane, into `out: [16][tiles]`
/// (position `4·k + l`: rule output `k` along the rows, `l` along the columns). Pixels outside the
/// plane read as zero.
fn transform_plane<T: TileElement, R: TileRule<T::Acc>>(plane: &[T], (h, w): (usize, usize), block: &Block, out: &mut [T::Acc], scratch: &mut Vec<T::Acc>) {
    let zero = T::Acc::ZERO;
    let tiles = block.tiles();
    // Padded rows: column x holds pixel x − PAD.
    let width = 2 * block.tw + R::TAPS - 2;
    scratch.resize((R::TAPS + 4) * width, zero);
    let (rows, combined) = scratch.split_at_mut(R::TAPS * width);
    for (i, a) in block.rows.clone().enumerate() {
        for (r, row) in rows.chunks_exact_mut(width).enumerate() {
            row.fill(zero);
            let y = (2 * a + r) as isize - R::PAD as isize;
            if (0..h as isize).contains(&y) {
                let src = &plane[y as usize * w..][..w];
                let dst = &mut row[R::PAD..];
                let n = dst.len().min(w);
                for (d, s) in dst[..n].iter_mut().zip(src) {
                    *d = s.widen();
                }
            }
        }
        // The rule down each column of the patch rows, then along each tile's columns.
        for x in 0..width {
            let mut column = [zero; 4];
            for (r, v) in column.iter_mut().take(R::TAPS).enumerate() {
                *v = rows[r * width + x];
            }
            for (k, v) in R::apply(&column).into_iter().enumerate() {
                combined[k * width + x] = v;
            }
        }
        let base = i * block.tw;
        for (k, e) in combined.chunks_exact(width).enumerate() {
            for b in 0..block.tw {
                for (l, v) in R::apply(&e[2 * b..2 * b + R::TAPS]).into_iter().enumerate() {
                    out[(4 * k + l) * tiles + base + b] = v;
                }
            }
        }
    }
}

/// `Aᵀ M A` of every tile of `block` from the products `m: [16][tiles]` of one output channel, written
/// to its `ho × wo` plane at `plane` (rows of other blocks untouched).
///
/// # Safety
/// `plane` must point to a live `ho × wo` buffer whose rows of this block nothing else touches.
unsafe fn untransform_output_plane<A: Accumulator>(m: &[A], (ho, wo): (usize, usize), block: &Block, plane: Shared<*mut A>) {
    let tiles = block.tiles();
    let at = |p: usize, t: usize| m[p * tiles + t];
    for (i, a) in block.rows.clone().enumerate() {
        for b in 0..block.tw {
            let t = i * block.tw + b;
            // Aᵀ over rows: s0 = m0 + m1 + m2, s1 = m1 − m2 − m3 (per column l).
            let s0: [A; 4] = std::array::from_fn(|l| at(l, t) + at(4 + l, t) + at(8 + l, t));
            let s1: [A; 4] = std::array::from_fn(|l| at(4 + l, t) - at(8 + l, t) - at(12 + l, t));
            for (r, s) in [s0, s1].into_iter().enumerate() {
                let y = 2 * a + r;
                if y >= ho {
                    continue;
                }
                let values = [s[0] + s[1] + s[2], s[1] - s[2] - s[3]];
                for (dx, v) in values.into_iter().enumerate() {
                    let x = 2 * b + dx;
                    if x < wo {
                        // SAFETY: (y, x) lies in the plane, in a row of this block.
                        unsafe { *plane.at(y * wo + x) = v };
                    }
                }
            }
        }
    }
}

/// Runs `f(index, chunk)` on every `size`-element chunk of `buf`, side by side when `parallel`.
fn each_chunk<A: Send>(buf: &mut [A], size: usize, parallel: bool, f: impl Fn(usize, &mut [A]) + Sync + Send) {
    if parallel {
        buf.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        buf.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Runs `f(out_chunk, plane, scratch)` on every `size`-element chunk of `out` with its plane of
/// `planes` (`plane`-element chunks), side by side when `parallel`; each task reuses one scratch buffer.
fn each_plane<A: Send, B: Sync, S: Default + Send>(out: &mut [A], size: usize, planes: &[B], plane: usize, parallel: bool, f: impl Fn(&mut [A], &[B], &mut S) + Sync + Send) {
    if parallel {
        out.par_chunks_mut(size).zip(planes.par_chunks(plane)).for_each_init(S::default, |s, (o, p)| f(o, p, s));
    } else {
        let mut s = S::default();
        out.chunks_mut(size).zip(planes.chunks(plane)).for_each(|(o, p)| f(o, p, &mut s));
    }
}

/// Runs `f(p)` for the 16 positions, side by side when `parallel`.
fn each_position(parallel: bool, f: impl Fn(usize) + Sync + Send) {
    if parallel {
        (0..POSITIONS).into_par_iter().for_each(f);
    } else {
        (0..POSITIONS).for_each(f);
    }
}

/// Per-block buffers, reused from block to block: the transformed input `V`, and the products `M`
/// (forward) or the transformed output gradient `Ŷ` (weight gradient).
struct Buffers<A> {
    input: Vec<A>,
    other: Vec<A>,
}

impl<A> Default for Buffers<A> {
    fn default() -> Self {
        Self { input: Vec::new(), other: Vec::new() }
    }
}

impl<A: Accumulator> Buffers<A> {
    /// `V: [C][16][tiles]`, the transformed input of `block` from `x: [N, C, H, W]`; `other` sized for
    /// `o` channels.
    fn prepare<T: TileElement<Acc = A>>(&mut self, x: &[T], (_, c, h, w): (usize, usize, usize, usize), o: usize, block: &Block, parallel: bool) {
        let size = chunk_len(block.tiles());
        self.input.resize(c * size, A::ZERO);
        self.other.resize(o * size, A::ZERO);
        let sample = &x[block.sample * c * h * w..][..c * h * w];
        each_plane(&mut self.input, size, sample, h * w, parallel, |out, plane, scratch| transform_plane::<T, InputRule>(plane, (h, w), block, out, scratch));
    }
}

/// The convolution of `x: [N, C, H, W]` with a 3×3, padding-1 kernel read through `view` from `weight`,
/// as `[N, outs, H, W]` in the product type.
pub(super) fn convolve<T: TileElement>(x: &[T], dims: (usize, usize, usize, usize), weight: &[T::Acc], view: KernelView) -> Vec<T::Acc> {
    let (n, c, h, w) = dims;
    let o = view.outs;
    let u = transform_weights(weight, view);
    let mut out = vec![T::Acc::ZERO; n * o * h * w];
    let dst = Shared(out.as_mut_ptr());
    let blocks = plan(n, (h, w), POSITIONS * (c + o));
    let (side_by_side, _) = schedule(blocks.len());
    let inner = !side_by_side;
    let u = Shared(u.as_ptr());
    let run = |bufs: &mut Buffers<T::Acc>, block: &Block| {
        let tiles = block.tiles();
        bufs.prepare(x, dims, o, block, inner);
        let (v, m, stride) = (Shared(bufs.input.as_ptr()), Shared(bufs.other.as_mut_ptr()), chunk_len(tiles));
        each_position(inner, |p| {
            // SAFETY: M[·][p][·] ([o, tiles], rows `stride` apart) is written by position p only;
            // U[·][p][·] is [o, c] with rows chunk_len(c) apart, V[·][p][·] [c, tiles] with rows `stride` apart.
            unsafe {
                multiply(
                    Strided::rows(m.at(p * tiles), stride),
                    false,
                    Strided::rows(u.at(p * c), chunk_len(c)),
                    Strided::rows(v.at(p * tiles), stride),
                    (o, tiles, c),
                    Parallelism::None,
                );
            }
        });
        let plane = |oc: usize| Shared(dst.at((block.sample * o + oc) * h * w));
        // SAFETY: each output channel's plane rows of this block are written by its own chunk only.
        each_chunk(&mut bufs.other, stride, inner, |oc, m| unsafe { untransform_output_plane(m, (h, w), block, plane(oc)) });
    };
    for_each_with(&blocks, side_by_side, run);
    out
}

/// The weight gradient `[O, C, 3, 3]` (taps as geometry `g` stores them) of the 3×3, padding-1
/// convolution of `x: [N, C, H, W]`, for the output gradient `dy: [N, O, H·W]` in the product type.
///
/// The sum over tiles is the GEMMs' inner dimension, so each GEMM takes every tile of a sample at once
/// (a handful of tiles per GEMM would leave it reading and writing `P` for little work); the input is
/// transformed a block of channels at a time ([`CHANNEL_BLOCK_ELEMENTS`]), and each block owns its
/// columns of `P`, so no sum depends on the thread count.
pub(super) fn weight_gradient<T: TileElement>(x: &[T], dims: (usize, usize, usize, usize), dy: &[T::Acc], o: usize, g: Geometry) -> Vec<T::Acc> {
    let (n, c, h, w) = dims;
    let (th, tw) = tile_grid((h, w));
    let (tiles, stride) = (th * tw, chunk_len(th * tw));
    // Whole vectors of channels (16) per block where the budget allows: the GEMM's rows.
    let fit = CHANNEL_BLOCK_ELEMENTS / stride;
    let per_block = if fit >= 16 { fit / 16 * 16 } else { fit }.clamp(1, c.max(1));
    let channel_blocks: Vec<Range<usize>> = (0..c).step_by(per_block).map(|s| s..(s + per_block).min(c)).collect();
    let (side_by_side, _) = schedule(channel_blocks.len());
    let inner = !side_by_side;
    let mut sums = vec![T::Acc::ZERO; o * chunk_len(c)];
    let mut yhat = vec![T::Acc::ZERO; o * stride];
    for b in 0..n {
        let whole = Block { sample: b, rows: 0..th, tw };
        let planes = &dy[b * o * h * w..][..o * h * w];
        each_plane(&mut yhat, stride, planes, h * w, true, |out, plane, scratch| transform_plane::<T::Acc, GradientRule>(plane, (h, w), &whole, out, scratch));
        let (yh, dst) = (Shared(yhat.as_ptr()), Shared(sums.as_mut_ptr()));
        let run = |v: &mut Vec<T::Acc>, channels: &Range<usize>| {
            v.resize(channels.len() * stride, T::Acc::ZERO);
            let planes = &x[(b * c + channels.start) * h * w..][..channels.len() * h * w];
            each_plane(v, stride, planes, h * w, inner, |out, plane, scratch| transform_plane::<T, InputRule>(plane, (h, w), &whole, out, scratch));
            let v = Shared(v.as_ptr());
            each_position(inner, |p| {
                // SAFETY: P[·][p][channels] ([o, channels], rows chunk_len(c) apart) is written by this block and
                // position only; Ŷ[·][p][·] is [o, tiles] and V[·][p][·] [channels, tiles], both with rows
                // `stride` apart (Vᵀ read with swapped strides).
                unsafe {
                    multiply(
                        Strided::rows(dst.at(p * c + channels.start), chunk_len(c)),
                        b > 0,
                        Strided::rows(yh.at(p * tiles), stride),
                        Strided::columns(v.at(p * tiles), stride),
                        (o, channels.len(), tiles),
                        Parallelism::None,
                    );
                }
            });
        };
        for_each_with(&channel_blocks, side_by_side, run);
    }
    untransform_weight_gradient(&sums, o, c, g)
}

#[cfg(test)]
mod tests {
    use super::super::direct::{direct, max_diff, values};
    use super::*;

    /// Sizes with odd sides (partial tiles), one-pixel sides, and several blocks per sample.
    const SIZES: [(usize, usize); 5] = [(9, 7), (6, 8), (1, 1), (2, 5), (40, 38)];

    #[test]
    fn forward_and_weight_gradient_match_the_direct_definition() {
        let (n, c, o) = (2, 3, 4);
        let g = Geometry { k: 3, pad: 1, flipped: false };
        for (h, w) in SIZES {
            let x = values(n * c * h * w, 7);
            let wt = values(o * c * 9, 8);
            let dy = values(n * o * h * w, 9);
            let (want_y, want_dw, want_dx) = direct(&x, (n, c, h, w), &wt, o, 3, 1, &dy);
            let y = convolve::<f64>(&x, (n, c, h, w), &wt, KernelView::forward(o, c, g));
            assert!(max_diff(&y, &want_y) < 1e-12, "{h}x{w}: output off by {}", max_diff(&y, &want_y));
            let dw = weight_gradient::<f64>(&x, (n, c, h, w), &dy, o, g);
            assert!(max_diff(&dw, &want_dw) < 1e-12, "{h}x{w}: weight gradient off by {}", max_diff(&dw, &want_dw));
            // The input gradient: dY through the forward weight's swapped, flipped view.
            let dx = convolve::<f64>(&dy, (n, o, h, w), &wt, KernelView::input_gradient(o, c, g));
            assert!(max_diff(&dx, &want_dx) < 1e-12, "{h}x{w}: input gradient off by {}", max_diff(&dx, &want_dx));
        }
    }

    #[test]
    fn flipped_geometry_reads_and_writes_flipped_taps() {
        let (n, c, o, h, w) = (1, 2, 3, 5, 6);
        let x = values(n * c * h * w, 10);
        let wt = values(o * c * 9, 11);
        let flip = |v: &[f64]| -> Vec<f64> { v.chunks(9).flat_map(|k| k.iter().rev().copied().collect::<Vec<_>>()).collect() };
        let dy = values(n * o * h * w, 12);
        let (want_y, want_dw, _) = direct(&x, (n, c, h, w), &wt, o, 3, 1, &dy);
        let g = Geometry { k: 3, pad: 1, flipped: true };
        let y = convolve::<f64>(&x, (n, c, h, w), &flip(&wt), KernelView::forward(o, c, g));
        assert!(max_diff(&y, &want_y) < 1e-12);
        let dw = weight_gradient::<f64>(&x, (n, c, h, w), &dy, o, g);
        assert!(max_diff(&flip(&dw), &want_dw) < 1e-12);
    }

    #[test]
    fn thread_count_does_not_change_any_bit() {
        // 64×64 has enough blocks to run them side by side; 8×8 runs its one block with the positions
        // side by side.
        for (h, w) in [(64, 64), (8, 8)] {
            let (n, c, o) = (1, 16, 8);
            let g = Geometry { k: 3, pad: 1, flipped: false };
            let x: Vec<f32> = values(n * c * h * w, 13).into_iter().map(|v| v as f32).collect();
            let wt: Vec<f32> = values(o * c * 9, 14).into_iter().map(|v| v as f32).collect();
            let dy: Vec<f32> = values(n * o * h * w, 15).into_iter().map(|v| v as f32).collect();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| (convolve::<f32>(&x, (n, c, h, w), &wt, KernelView::forward(o, c, g)), weight_gradient::<f32>(&x, (n, c, h, w), &dy, o, g)))
            };
            let one = run(1);
            for threads in [2, 3] {
                assert!(run(threads) == one, "{h}x{w}: {threads} threads changed the result");
            }
        }
    }
}

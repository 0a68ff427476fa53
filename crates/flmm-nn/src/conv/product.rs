//! One matrix product on strided views: the `gemm` crate's positional arguments, named.

use gemm::{gemm, Parallelism};

use super::tiles::Accumulator;

/// A matrix in memory: element `(i, j)` at `ptr + i·row + j·col` (strides in elements).
#[derive(Debug, Clone, Copy)]
pub(super) struct Strided<P> {
    /// Element `(0, 0)`.
    pub ptr: P,
    /// Distance between rows.
    pub row: usize,
    /// Distance between columns.
    pub col: usize,
}

impl<P> Strided<P> {
    /// A row-major matrix whose rows are `row` elements apart.
    pub fn rows(ptr: P, row: usize) -> Self {
        Self { ptr, row, col: 1 }
    }

    /// A matrix whose columns are contiguous and `col` elements apart (the transpose of a row-major
    /// matrix with rows `col` apart).
    pub fn columns(ptr: P, col: usize) -> Self {
        Self { ptr, row: 1, col }
    }
}

/// `dst[m, n] = lhs[m, k] · rhs[k, n]`, added to `dst`'s values when `accumulate`.
///
/// The GEMM splits its output over the threads of `parallelism`, never its sums, so no value depends
/// on the thread count.
///
/// # Safety
/// Every element the shapes reach through the three views must lie in live buffers; `dst`'s elements
/// must be distinct, must not overlap the operands, and nothing else may touch them during the call.
pub(super) unsafe fn multiply<A: Accumulator>(
    dst: Strided<*mut A>,
    accumulate: bool,
    lhs: Strided<*const A>,
    rhs: Strided<*const A>,
    (m, n, k): (usize, usize, usize),
    parallelism: Parallelism,
) {
    let stride = |s: usize| s as isize;
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.ptr,
            stride(dst.col),
            stride(dst.row),
            accumulate,
            lhs.ptr,
            stride(lhs.col),
            stride(lhs.row),
            rhs.ptr,
            stride(rhs.col),
            stride(rhs.row),
            A::ONE,
            A::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The GEMM threaded over every rayon thread of the current pool (none when it has one).
pub(super) fn threaded() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        threads => Parallelism::Rayon(threads),
    }
}

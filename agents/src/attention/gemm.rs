//! Dense matrix products on slices through the `gemm` crate: single-threaded for the
//! chunked CPU kernel (it already runs one head per rayon task) and for acting's host
//! path (which splits its own work), on the rayon pool for the fused linear maps' and
//! large attention products. The crate's `x86-v4` feature gives AVX-512 kernels where
//! the CPU has them (chosen at run time; AVX2 or narrower otherwise).

use super::recurrence::Real;

/// A read-only strided matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a, F> {
    data: &'a [F],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, F> View<'a, F> {
    /// The row-major `rows x cols` matrix at the start of `data`.
    pub fn rows(data: &'a [F], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// The `rows x cols` matrix at the start of `data`, rows `rs` apart.
    pub fn strided(data: &'a [F], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs: 1,
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a b` (or `dst += a b` with `accumulate`), `dst` row-major `a.rows x b.cols`
/// at the start of the slice.
///
/// # Panics
/// If the inner sizes differ or a matrix does not fit its slice (a bug in the kernel).
pub(crate) fn matmul<F: Real>(dst: &mut [F], a: View<F>, b: View<F>, accumulate: bool) {
    product(dst, b.cols, a, b, accumulate, gemm::Parallelism::None);
}

/// [`matmul`] split over the threads of the current rayon pool (as dfdx's own `Cpu`
/// matmul runs it).
///
/// # Panics
/// As [`matmul`].
pub(crate) fn matmul_parallel<F: Real>(dst: &mut [F], a: View<F>, b: View<F>, accumulate: bool) {
    let threads = rayon::current_num_threads();
    product(
        dst,
        b.cols,
        a,
        b,
        accumulate,
        gemm::Parallelism::Rayon(threads),
    );
}

/// `a b` as a new row-major `a.rows x b.cols` buffer, split over the threads of the
/// current rayon pool. The product writes every value, so the buffer is not zeroed
/// first (a zero-fill is a pass over memory as long as a small product).
///
/// # Panics
/// As [`matmul`].
pub(crate) fn matmul_parallel_new<F: Real>(a: View<F>, b: View<F>) -> Vec<F> {
    let len = a.rows * b.cols;
    if a.cols == 0 || len == 0 {
        let mut dst = vec![F::zero(); len];
        matmul_parallel(&mut dst, a, b, false);
        return dst;
    }
    let mut dst: Vec<F> = Vec::with_capacity(len);
    let threads = rayon::current_num_threads();
    // SAFETY: `product`'s checks below cover `a` and `b`; `dst` has room for the
    // `a.rows x b.cols` values (row stride `b.cols`). With `accumulate` false and a
    // non-empty inner size, gemm writes every value of `dst` before it reads any (its
    // first pass over the inner dimension overwrites, later passes add), so every value
    // is initialised when the length is set.
    unsafe {
        let spare = std::slice::from_raw_parts_mut(dst.as_mut_ptr(), len);
        product(
            spare,
            b.cols,
            a,
            b,
            false,
            gemm::Parallelism::Rayon(threads),
        );
        dst.set_len(len);
    }
    dst
}

/// `dst = a b` (or `+=`) with the given parallelism; `dst` holds `a.rows` rows of
/// `b.cols` values, `dst_rs` apart.
///
/// # Panics
/// If the inner sizes differ or a matrix does not fit its slice (a bug in the caller).
pub(crate) fn product<F: Real>(
    dst: &mut [F],
    dst_rs: usize,
    a: View<F>,
    b: View<F>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    if !checked(dst, dst_rs, a, b, accumulate) {
        return;
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: every index the product reads or writes is in bounds (checked above), `dst`
    // is exclusively borrowed and does not overlap the shared `a` and `b`, and `F` is f32
    // or f64 (the only types `gemm` takes; `Real` is implemented for the CPU float types).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            F::one(),
            F::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Checks the sizes of `dst = a b` (`dst` rows `dst_rs` apart) and handles the empty
/// cases (`dst` zeroed without `accumulate` when the inner size is 0); true when a
/// product is left to do.
///
/// # Panics
/// If the inner sizes differ or a matrix does not fit its slice (a bug in the caller).
fn checked<F: Real>(
    dst: &mut [F],
    dst_rs: usize,
    a: View<F>,
    b: View<F>,
    accumulate: bool,
) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner sizes differ");
    let dst_fits = m == 0 || n == 0 || (n <= dst_rs && (m - 1) * dst_rs + n <= dst.len());
    assert!(
        a.in_bounds() && b.in_bounds() && dst_fits,
        "matmul: a matrix does not fit its slice"
    );
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 {
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(m) {
                row[..n].fill(F::zero());
            }
        }
        return false;
    }
    true
}

//! The exponential over slices for the tiled softmax kernel: `f32` through a polynomial
//! written with plain arithmetic and bit operations (sixteen values at a time with
//! AVX-512 when the CPU has it, otherwise a loop the compiler vectorises), `f64` through
//! libm, accurately. The vector and scalar `f32` paths do the same operations in the same
//! order (the same fused multiply-adds), so they give the same bits, sums included.

use super::recurrence::Real;

/// Float types with an exponential over slices.
pub(crate) trait SliceExp: Real {
    /// Replaces every `x` by `exp(x - shift)`.
    fn exp_shifted(x: &mut [Self], shift: Self);

    /// Replaces every `x` by `exp(x - shift)` and returns their sum, taken in sixteen
    /// partial sums (element `i` into sum `i % 16`) added pairwise in a fixed order.
    fn exp_shifted_sum(x: &mut [Self], shift: Self) -> Self;

    /// Largest value, `-inf` for an empty slice (the same for any order of the values
    /// unless one is NaN).
    fn slice_max(x: &[Self]) -> Self;
}

/// [`SliceExp::slice_max`] in eight partial maxima (a loop the compiler vectorises).
#[inline(always)]
fn max_of<F: Real>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(F::neg_infinity(), |a, &v| a.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().fold(tail, |a, &v| a.max(v))
}

/// Whether the CPU runs the AVX-512 path (detected once, then a cached load).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The logistic function `1 / (1 + exp(-x))` of every value in place, through
/// [`exp_f32`]: sixteen values at a time under AVX-512, one at a time otherwise, with
/// the same bits either way. NaN stays NaN.
pub(crate) fn logistic_f32(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { avx512::logistic(x) };
    }
    for v in x.iter_mut() {
        *v = 1.0 / (1.0 + exp_f32(0.0 - *v));
    }
}

impl SliceExp for f32 {
    #[inline(always)]
    fn exp_shifted(x: &mut [f32], shift: f32) {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512::exp_shifted(x, shift) };
        }
        for v in x.iter_mut() {
            *v = exp_f32(*v - shift);
        }
    }

    #[inline(always)]
    fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512::exp_shifted_sum(x, shift) };
        }
        let mut acc = [0.0; LANES];
        let mut chunks = x.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (a, v) in acc.iter_mut().zip(chunk) {
                *v = exp_f32(*v - shift);
                *a += *v;
            }
        }
        for (a, v) in acc.iter_mut().zip(chunks.into_remainder()) {
            *v = exp_f32(*v - shift);
            *a += *v;
        }
        fold_lanes(acc)
    }

    #[inline(always)]
    fn slice_max(x: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if avx512() {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512::max(x) };
        }
        max_of(x)
    }
}

impl SliceExp for f64 {
    #[inline(always)]
    fn exp_shifted(x: &mut [f64], shift: f64) {
        for v in x.iter_mut() {
            *v = (*v - shift).exp();
        }
    }

    #[inline(always)]
    fn exp_shifted_sum(x: &mut [f64], shift: f64) -> f64 {
        let mut acc = [0.0; LANES];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (*v - shift).exp();
            acc[i % LANES] += *v;
        }
        fold_lanes(acc)
    }

    #[inline(always)]
    fn slice_max(x: &[f64]) -> f64 {
        max_of(x)
    }
}

/// Partial sums of [`SliceExp::exp_shifted_sum`].
const LANES: usize = 16;

/// `acc[j] + acc[j + 8]`, then `+ [j + 4]`, `+ [j + 2]`, `+ [j + 1]`: the sum of the lanes.
#[inline(always)]
fn fold_lanes<F: Real>(mut acc: [F; LANES]) -> F {
    let mut half = LANES;
    while half > 1 {
        half /= 2;
        for j in 0..half {
            acc[j] += acc[j + half];
        }
    }
    acc[0]
}

/// Below this the result would be subnormal: it is flushed to 0 (`-126 ln 2`).
const LOWEST_F32: f32 = -87.336_55;
/// Above this the result is `inf` (`127.5 ln 2`, a little before `f32::MAX`'s logarithm).
const HIGHEST_F32: f32 = 88.3762;
/// `1.5 * 2^23`: adding it rounds an `f32` of magnitude below `2^22` to an integer, which
/// then sits in the low bits of the sum's representation.
const ROUND_F32: f32 = 12_582_912.0;
/// `ln 2` split into a part with few significant bits (so `n * LN2_HI` is exact for the
/// integers `n` used) and the rest.
const LN2_HI_F32: f32 = 0.693_359_4;
/// `ln 2 - LN2_HI_F32`.
const LN2_LO_F32: f32 = -2.121_944_4e-4;
/// Coefficients of the Taylor polynomial of `exp` from degree 7 down to 0 (Horner order).
const TAYLOR_F32: [f32; 8] = [
    1.0 / 5040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// `exp(x)` within one ulp of the correctly rounded value: `x = n ln 2 + r` with
/// `|r| <= ln 2 / 2`, `exp(r)` by its Taylor polynomial of degree 7 (truncation below
/// 1e-8 relative) in fused multiply-adds, times `2^n` built from its bits. Results below
/// the smallest normal `f32` are 0, `x > 88.3762` gives `inf`, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(LOWEST_F32, HIGHEST_F32);
    let t = xc.mul_add(std::f32::consts::LOG2_E, ROUND_F32);
    let n = t - ROUND_F32;
    let r = n.mul_add(-LN2_LO_F32, n.mul_add(-LN2_HI_F32, xc));
    let mut p = TAYLOR_F32[0];
    for &c in &TAYLOR_F32[1..] {
        p = p.mul_add(r, c);
    }
    // The low bits of `t` hold `n` (two's complement, offset by those of ROUND_F32); the
    // exponent field of 2^n is n + 127, in [1, 254] for the clamped range.
    let bits = t
        .to_bits()
        .wrapping_sub(ROUND_F32.to_bits())
        .wrapping_add(127)
        << 23;
    // A NaN went through every step above as NaN.
    let y = p * f32::from_bits(bits);
    if x < LOWEST_F32 {
        0.0
    } else if x > HIGHEST_F32 {
        f32::INFINITY
    } else {
        y
    }
}

/// [`exp_f32`] sixteen values at a time.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{fold_lanes, LANES, LN2_HI_F32, LN2_LO_F32, ROUND_F32, TAYLOR_F32};
    use super::{HIGHEST_F32, LOWEST_F32};
    use std::arch::x86_64::*;

    /// [`super::exp_f32`] of every lane, the same operations in the same order (the
    /// product by `2^n` as `scalef`, which rounds it as the product does).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp(x: __m512) -> __m512 {
        let (lowest, highest) = (_mm512_set1_ps(LOWEST_F32), _mm512_set1_ps(HIGHEST_F32));
        // max/min return their second operand when one is NaN: NaN goes on, as in clamp.
        let xc = _mm512_min_ps(highest, _mm512_max_ps(lowest, x));
        let round = _mm512_set1_ps(ROUND_F32);
        let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E), round);
        let n = _mm512_sub_ps(t, round);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI_F32), xc);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO_F32), r);
        let mut p = _mm512_set1_ps(TAYLOR_F32[0]);
        for &c in &TAYLOR_F32[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        // Below the range: 0 (zeroed lanes); above it: inf.
        let low = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lowest);
        let high = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, highest);
        let y = _mm512_maskz_scalef_ps(!low, p, n);
        _mm512_mask_blend_ps(high, y, _mm512_set1_ps(f32::INFINITY))
    }

    /// The mask of the first `n < 16` lanes.
    #[inline(always)]
    fn first(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// Replaces every vector of 16 values of `x` by `f(vector, mask)`, the last,
    /// shorter one loaded with zeros in the lanes beyond `x` and stored through `mask`
    /// (all lanes set for the full vectors).
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn map_lanes(x: &mut [f32], mut f: impl FnMut(__m512, __mmask16) -> __m512) {
        let mut chunks = x.chunks_exact_mut(LANES);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 values.
            unsafe {
                let v = f(_mm512_loadu_ps(c.as_ptr()), !0);
                _mm512_storeu_ps(c.as_mut_ptr(), v);
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let k = first(rest.len());
            // SAFETY: the masked lanes are the `rest.len()` values of `rest`.
            unsafe {
                let v = f(_mm512_maskz_loadu_ps(k, rest.as_ptr()), k);
                _mm512_mask_storeu_ps(rest.as_mut_ptr(), k, v);
            }
        }
    }

    /// See [`super::SliceExp::exp_shifted`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted(x: &mut [f32], shift: f32) {
        let s = _mm512_set1_ps(shift);
        // SAFETY: the caller's CPU has AVX-512F.
        unsafe { map_lanes(x, |v, _| exp(_mm512_sub_ps(v, s))) }
    }

    /// `1 / (1 + exp(0 - v))` of a vector (the scalar path's operations).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn logistic_lanes(v: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_div_ps(one, _mm512_add_ps(one, e))
    }

    /// See [`super::logistic_f32`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn logistic(x: &mut [f32]) {
        // SAFETY: the caller's CPU has AVX-512F.
        unsafe { map_lanes(x, |v, _| logistic_lanes(v)) }
    }

    /// See [`super::SliceExp::slice_max`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max(x: &[f32]) -> f32 {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let chunks = x.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            // SAFETY: `c` holds 16 values.
            acc = _mm512_max_ps(acc, unsafe { _mm512_loadu_ps(c.as_ptr()) });
        }
        if !rest.is_empty() {
            // SAFETY: the masked lanes are the `rest.len()` values of `rest`.
            let v = unsafe { _mm512_maskz_loadu_ps(first(rest.len()), rest.as_ptr()) };
            acc = _mm512_mask_max_ps(acc, first(rest.len()), acc, v);
        }
        _mm512_reduce_max_ps(acc)
    }

    /// See [`super::SliceExp::exp_shifted_sum`].
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        let s = _mm512_set1_ps(shift);
        let mut acc = _mm512_setzero_ps();
        // SAFETY: the caller's CPU has AVX-512F.
        unsafe {
            map_lanes(x, |v, k| {
                let v = exp(_mm512_sub_ps(v, s));
                acc = _mm512_mask_add_ps(acc, k, acc, v);
                v
            })
        };
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` holds 16 values.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        fold_lanes(lanes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite non-negative `f32`s.
    fn ulps(a: f32, b: f32) -> u32 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn f32_exp_is_within_one_ulp_of_the_rounded_exact_value() {
        let mut worst = (0, 0.0f32);
        let n = 2_000_000;
        let grid = (0..=n).map(|i| LOWEST_F32 + (HIGHEST_F32 - LOWEST_F32) * i as f32 / n as f32);
        let special = [
            0.0, -0.0, 1e-8, -1e-8, 1e-30, -1e-30, -1.0, 1.0, -0.3466, 0.3466,
        ];
        for x in grid.chain(special) {
            let err = ulps(exp_f32(x), f64::from(x).exp() as f32);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 1, "exp_f32({}) is {} ulp off", worst.1, worst.0);
    }

    #[test]
    fn f32_exp_edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-88.0), 0.0);
        assert_eq!(exp_f32(-1e30), 0.0);
        assert!(exp_f32(-87.3) >= f32::MIN_POSITIVE && exp_f32(LOWEST_F32) > 0.0);
        assert!(exp_f32(HIGHEST_F32).is_finite());
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    /// Values over the whole range, special values, in slices of every length up to 40
    /// (whole vectors and a masked rest).
    fn samples() -> Vec<f32> {
        let mut x: Vec<f32> = (0..997).map(|i| -100.0 + 0.19 * i as f32).collect();
        x.extend([f32::NEG_INFINITY, f32::INFINITY, f32::NAN, 0.0, -0.0, 1e-30]);
        x
    }

    #[test]
    fn slice_paths_equal_the_scalar_exp_bit_for_bit() {
        let x = samples();
        for len in 0..=40 {
            for start in (0..x.len() - len).step_by(37) {
                let piece = &x[start..start + len];
                let shift = 0.25;
                let want: Vec<f32> = piece.iter().map(|&v| exp_f32(v - shift)).collect();
                let mut lanes = [0.0f32; LANES];
                for (i, &w) in want.iter().enumerate() {
                    lanes[i % LANES] += w;
                }
                let total = fold_lanes(lanes);
                let mut a = piece.to_vec();
                f32::exp_shifted(&mut a, shift);
                let mut b = piece.to_vec();
                let sum = f32::exp_shifted_sum(&mut b, shift);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let nan = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
                if want.iter().any(|v| v.is_nan()) {
                    assert_eq!(nan(&a), nan(&want));
                    assert_eq!(nan(&b), nan(&want));
                    assert!(sum.is_nan());
                } else {
                    assert_eq!(bits(&a), bits(&want), "len {len} start {start}");
                    assert_eq!(bits(&b), bits(&want), "len {len} start {start}");
                    assert_eq!(sum.to_bits(), total.to_bits(), "len {len} start {start}");
                }
            }
        }
    }

    #[test]
    fn max_is_the_largest_value_for_every_length() {
        let x = samples();
        let finite: Vec<f32> = x.iter().copied().filter(|v| !v.is_nan()).collect();
        assert_eq!(f32::slice_max(&[]), f32::NEG_INFINITY);
        assert_eq!(f64::slice_max(&[]), f64::NEG_INFINITY);
        for len in 1..=40 {
            for start in (0..finite.len() - len).step_by(29) {
                let piece = &finite[start..start + len];
                let want = piece.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                assert_eq!(f32::slice_max(piece), want, "len {len} start {start}");
                assert_eq!(max_of(piece), want, "len {len} start {start}");
                let wide: Vec<f64> = piece.iter().map(|&v| f64::from(v)).collect();
                assert_eq!(
                    f64::slice_max(&wide),
                    f64::from(want),
                    "len {len} start {start}"
                );
            }
        }
    }

    #[test]
    fn logistic_paths_equal_the_scalar_formula_bit_for_bit() {
        let x = samples();
        for n in [0, 1, 15, 16, 17, 40, x.len()] {
            let mut y = x[..n].to_vec();
            logistic_f32(&mut y);
            for (&v, &s) in x.iter().zip(&y) {
                let expected = 1.0 / (1.0 + exp_f32(0.0 - v));
                assert!(
                    s.to_bits() == expected.to_bits() || (s.is_nan() && expected.is_nan()),
                    "logistic({v}) = {s}, expected {expected} (length {n})"
                );
            }
        }
    }

    #[test]
    fn f64_slices_use_libm() {
        let mut y = [1.0f64, -700.0, 3.0];
        let sum = f64::exp_shifted_sum(&mut y, 1.0);
        let want = [1.0, (-701.0f64).exp(), 2.0f64.exp()];
        assert_eq!(y, want);
        assert_eq!(sum, (want[0] + want[2]) + want[1]);
        f64::exp_shifted(&mut y, 0.0);
        assert_eq!(y, want.map(f64::exp));
    }
}

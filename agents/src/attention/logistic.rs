//! The logistic function over slices, through vector exponentials instead of one libm
//! `exp` call per value (`f32`: the crate's own exponential, sixteen values at a time
//! under AVX-512; `f64`: `wide`'s, four at a time): the Flow-Attention feature map
//! applies it to every query and key.

use wide::f64x4;

/// Applies `f` to `x` in arrays of `N` values; the last, shorter piece is padded with
/// zeros, so a value's result does not depend on where it sits in the slice.
fn by_lanes<T: Copy + Default, const N: usize>(x: &mut [T], f: impl Fn([T; N]) -> [T; N]) {
    let mut chunks = x.chunks_exact_mut(N);
    for chunk in &mut chunks {
        let mut lanes = [T::default(); N];
        lanes.copy_from_slice(chunk);
        chunk.copy_from_slice(&f(lanes));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut lanes = [T::default(); N];
        lanes[..rest.len()].copy_from_slice(rest);
        let out = f(lanes);
        rest.copy_from_slice(&out[..rest.len()]);
    }
}

/// Largest `|x|` passed to `wide`'s `f64` exponential (it ends at 708.39; `sigmoid(-708)`
/// already rounds to the smallest normal `f64`s).
const LIMIT_F64: f64 = 708.0;

/// `1 / (1 + exp(-v))`, NaN kept.
fn logistic_f64(v: f64x4) -> f64x4 {
    let limit = f64x4::splat(LIMIT_F64);
    let e = (-v).max(-limit).min(limit).exp();
    v.is_nan().blend(v, f64x4::ONE / (f64x4::ONE + e))
}

/// Replaces every `f32` by its sigmoid ([`super::exp::logistic_f32`]: sixteen at a time
/// under AVX-512).
pub(crate) fn sigmoid_f32(x: &mut [f32]) {
    super::exp::logistic_f32(x);
}

/// Replaces every `f64` by its sigmoid, four at a time.
pub(crate) fn sigmoid_f64(x: &mut [f64]) {
    by_lanes(x, |a: [f64; 4]| logistic_f64(f64x4::from(a)).to_array());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::recurrence::sigmoid;

    /// Inputs across the range, both saturated tails and lengths that are not a
    /// multiple of the lane count.
    fn inputs(n: usize) -> Vec<f64> {
        let mut x: Vec<f64> = (0..n).map(|i| -30.0 + 60.0 * i as f64 / n as f64).collect();
        x.extend([
            0.0, -0.0, 1e-8, -1e-8, 50.0, -50.0, 100.0, -100.0, 1e4, -1e4,
        ]);
        x
    }

    #[test]
    fn f32_lanes_match_the_scalar_logistic() {
        for n in [0, 1, 7, 8, 9, 131] {
            let x: Vec<f32> = inputs(n).iter().map(|&v| v as f32).collect();
            let mut y = x.clone();
            sigmoid_f32(&mut y);
            for (&a, &s) in x.iter().zip(&y) {
                let exact = 1.0 / (1.0 + (-f64::from(a)).exp());
                let err = (f64::from(s) - exact).abs();
                assert!(
                    err <= 2e-7 * exact.max(1e-30) || err < 1e-37,
                    "sigmoid({a}) = {s}, expected {exact}"
                );
            }
        }
    }

    #[test]
    fn f64_lanes_match_the_scalar_logistic() {
        for n in [0, 1, 3, 4, 5, 131] {
            let mut x = inputs(n);
            let expected: Vec<f64> = x.iter().map(|&a| sigmoid(a)).collect();
            sigmoid_f64(&mut x);
            for (&s, &e) in x.iter().zip(&expected) {
                assert!(
                    (s - e).abs() <= 1e-15 * e || (s - e).abs() < 1e-300,
                    "{s} vs {e}"
                );
            }
        }
    }

    #[test]
    fn nan_stays_nan_and_infinities_saturate() {
        let mut x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0];
        sigmoid_f32(&mut x);
        assert!(x[0].is_nan());
        assert_eq!(&x[1..], &[1.0, x[2], 0.5]);
        assert!(x[2] >= 0.0 && x[2] < 1e-37, "sigmoid(-inf) = {}", x[2]);
        let mut y = [f64::NAN, f64::INFINITY, -1.0];
        sigmoid_f64(&mut y);
        assert!(y[0].is_nan());
        assert_eq!(y[1], 1.0);
        assert!((y[2] - sigmoid(-1.0)).abs() < 1e-16);
    }
}

//! The exponential over slices for the tiled softmax kernel: `f32` through a polynomial
//! written with plain arithmetic and bit operations, so a loop over a slice compiles to
//! vector instructions (a libm call per value does not); `f64` through libm, accurately.
//! No fused multiply-add is used, so the results do not depend on the instruction set a
//! caller is compiled for.

use super::recurrence::Real;

/// Float types with an exponential over slices.
pub(crate) trait SliceExp: Real {
    /// Replaces every `x` by `exp(x - shift)`.
    fn exp_shifted(x: &mut [Self], shift: Self);
}

impl SliceExp for f32 {
    #[inline(always)]
    fn exp_shifted(x: &mut [f32], shift: f32) {
        for v in x.iter_mut() {
            *v = exp_f32(*v - shift);
        }
    }
}

impl SliceExp for f64 {
    #[inline(always)]
    fn exp_shifted(x: &mut [f64], shift: f64) {
        for v in x.iter_mut() {
            *v = (*v - shift).exp();
        }
    }
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

/// `exp(x)` within a few ulp of the correctly rounded value: `x = n ln 2 + r` with
/// `|r| <= ln 2 / 2`, `exp(r)` by its Taylor polynomial of degree 7 (truncation below
/// 1e-8 relative), times `2^n` built from its bits. Results below the smallest normal
/// `f32` are 0, `x > 88.3762` gives `inf`, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(LOWEST_F32, HIGHEST_F32);
    let t = xc * std::f32::consts::LOG2_E + ROUND_F32;
    let n = t - ROUND_F32;
    let r = (xc - n * LN2_HI_F32) - n * LN2_LO_F32;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // The low bits of `t` hold `n` (two's complement, offset by those of ROUND_F32); the
    // exponent field of 2^n is n + 127, in [1, 254] for the clamped range.
    let bits = t
        .to_bits()
        .wrapping_sub(ROUND_F32.to_bits())
        .wrapping_add(127)
        << 23;
    let y = p * f32::from_bits(bits);
    if x < LOWEST_F32 {
        0.0
    } else if x > HIGHEST_F32 {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
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
    fn f32_exp_is_within_two_ulp_of_the_rounded_exact_value() {
        let mut worst = (0, 0.0f32);
        let n = 2_000_000;
        for i in 0..=n {
            let x = LOWEST_F32 + (HIGHEST_F32 - LOWEST_F32) * i as f32 / n as f32;
            let exact = f64::from(x).exp() as f32;
            let err = ulps(exp_f32(x), exact);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        for x in [
            0.0, -0.0, 1e-8, -1e-8, 1e-30, -1e-30, -1.0, 1.0, -0.3466, 0.3466,
        ] {
            let err = ulps(exp_f32(x), f64::from(x).exp() as f32);
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 2, "exp_f32({}) is {} ulp off", worst.1, worst.0);
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

    #[test]
    fn slices_are_shifted() {
        let mut x = [1.0f32, 2.0, -3.0, f32::NEG_INFINITY, 0.5];
        f32::exp_shifted(&mut x, 0.5);
        let want = [0.5f32, 1.5, -3.5].map(|v| f64::from(v).exp() as f32);
        for (g, w) in x.iter().zip(want) {
            assert!(ulps(*g, w) <= 2, "{g} vs {w}");
        }
        assert_eq!(&x[3..], &[0.0, 1.0]);
        let mut y = [1.0f64, -700.0];
        f64::exp_shifted(&mut y, 1.0);
        assert_eq!(y, [1.0, (-701.0f64).exp()]);
    }
}

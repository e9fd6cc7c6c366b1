//! numpy's `random_standard_normal`: the 256-layer ziggurat with its tail and wedge tests.

use super::ziggurat_tables::{FI, KI, NOR_INV_R, NOR_R, WI};
use super::Pcg64;

/// The low 52 bits.
const MANTISSA_MASK: u64 = 0x000f_ffff_ffff_ffff;

/// One standard normal draw, as numpy computes it: usually one `next_uint64`; the tail and
/// the wedge take further `next_double` draws, and a rejected wedge starts again.
pub(super) fn standard_normal(rng: &mut Pcg64) -> f64 {
    loop {
        let mut r = rng.next_uint64();
        let idx = (r & 0xff) as usize;
        r >>= 8;
        let negative = r & 1 == 1;
        let rabs = (r >> 1) & MANTISSA_MASK;
        // rabs < 2^52, so the conversion is exact.
        let mut x = rabs as f64 * WI[idx];
        if negative {
            x = -x;
        }
        if rabs < KI[idx] {
            return x;
        }
        if idx == 0 {
            // The tail beyond NOR_R (Marsaglia's method, with 1 - U to avoid log(0)).
            loop {
                let xx = -NOR_INV_R * (-rng.next_double()).ln_1p();
                let yy = -(-rng.next_double()).ln_1p();
                if yy + yy > xx * xx {
                    return if (rabs >> 8) & 1 == 1 {
                        -(NOR_R + xx)
                    } else {
                        NOR_R + xx
                    };
                }
            }
        }
        let wedge = (FI[idx - 1] - FI[idx]) * rng.next_double() + FI[idx];
        if wedge < (-0.5 * x * x).exp() {
            return x;
        }
    }
}

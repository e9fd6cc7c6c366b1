//! numpy's `Generator` methods on a PCG64 bit generator.

use super::{ziggurat, Pcg64, Pcg64State, SeedSequence};

/// numpy's `Generator(PCG64(SeedSequence(seed)))`, which Gymnasium's `np_random(seed)`
/// (and `numpy.random.default_rng(seed)`) builds. Every method draws exactly as numpy's
/// scalar call does; array calls are these calls element by element, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generator {
    bit_generator: Pcg64,
}

impl Generator {
    /// `Generator(PCG64(seed))` for a non-negative integer seed.
    pub fn seeded(seed: u64) -> Generator {
        Self::from_seed_sequence(&SeedSequence::new(seed))
    }

    /// `Generator(PCG64(seed_seq))`, for seeds of any size (see [`SeedSequence::from_decimal`]).
    pub fn from_seed_sequence(seed_seq: &SeedSequence) -> Generator {
        Generator {
            bit_generator: Pcg64::new(seed_seq),
        }
    }

    /// A generator in exactly `state`.
    pub fn from_state(state: Pcg64State) -> Generator {
        Generator {
            bit_generator: Pcg64::from_state(state),
        }
    }

    /// The bit generator's state (`generator.bit_generator.state`).
    pub fn state(&self) -> Pcg64State {
        self.bit_generator.state()
    }

    /// The next raw 64 bits (`bit_generator.random_raw()`).
    pub fn next_uint64(&mut self) -> u64 {
        self.bit_generator.next_uint64()
    }

    /// The next 32 bits, through PCG64's one-word buffer (see [`Pcg64::next_uint32`]).
    pub fn next_uint32(&mut self) -> u32 {
        self.bit_generator.next_uint32()
    }

    /// `random()`: `(next_uint64 >> 11) * 2^-53`, uniform in `[0, 1)`.
    pub fn random(&mut self) -> f64 {
        self.bit_generator.next_double()
    }

    /// `uniform(low, high)`: `low + (high - low) * random()`, multiplied and added
    /// separately (numpy's build fuses nothing). One 64-bit draw.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let u = self.random();
        low + (high - low) * u
    }

    /// `standard_normal()`: numpy's 256-layer ziggurat (one 64-bit draw on the fast path,
    /// more in the wedge and the tail).
    pub fn standard_normal(&mut self) -> f64 {
        ziggurat::standard_normal(&mut self.bit_generator)
    }

    /// `integers(low, high)` (`endpoint=False`, `dtype=int64`): uniform in `[low, high)`,
    /// drawn as numpy's `random_bounded_uint64_fill` (Lemire's method without masking):
    /// - a single value (`high - low == 1`) draws nothing;
    /// - a range of at most 2^32 values uses buffered 32-bit draws (a range of exactly 2^32
    ///   is one raw `next_uint32`), so two calls can share one 64-bit draw;
    /// - a larger range uses Lemire's method on 64-bit draws.
    ///
    /// # Panics
    /// When `low >= high`, where numpy raises `ValueError: low >= high`.
    pub fn integers(&mut self, low: i64, high: i64) -> i64 {
        assert!(low < high, "integers: low >= high ({low} >= {high})");
        // The inclusive range, exact as u64 for any i64 bounds.
        let rng = (high as u64).wrapping_sub(low as u64) - 1;
        let offset = if rng == 0 {
            0
        } else if rng < u64::from(u32::MAX) {
            u64::from(self.bounded_lemire_u32(rng as u32))
        } else if rng == u64::from(u32::MAX) {
            u64::from(self.next_uint32())
        } else {
            // rng < u64::MAX here, since high - low <= 2^64 - 1.
            self.bounded_lemire_u64(rng)
        };
        low.wrapping_add(offset as i64)
    }

    /// numpy's `buffered_bounded_lemire_uint32`: uniform in `[0, rng]`, `rng < 2^32 - 1`.
    fn bounded_lemire_u32(&mut self, rng: u32) -> u32 {
        let rng_excl = u64::from(rng) + 1;
        let mut m = u64::from(self.next_uint32()) * rng_excl;
        let mut leftover = m & 0xffff_ffff;
        if leftover < rng_excl {
            let threshold = u64::from((u32::MAX - rng) % (rng + 1));
            while leftover < threshold {
                m = u64::from(self.next_uint32()) * rng_excl;
                leftover = m & 0xffff_ffff;
            }
        }
        (m >> 32) as u32
    }

    /// numpy's `bounded_lemire_uint64`: uniform in `[0, rng]`, `rng < 2^64 - 1`.
    fn bounded_lemire_u64(&mut self, rng: u64) -> u64 {
        let rng_excl = u128::from(rng) + 1;
        let mut m = u128::from(self.next_uint64()) * rng_excl;
        let mut leftover = m & u128::from(u64::MAX);
        if leftover < rng_excl {
            let threshold = u128::from((u64::MAX - rng) % (rng + 1));
            while leftover < threshold {
                m = u128::from(self.next_uint64()) * rng_excl;
                leftover = m & u128::from(u64::MAX);
            }
        }
        (m >> 64) as u64
    }
}

//! numpy's PCG64 bit generator (`pcg_setseq_128_xsl_rr_64`), with its buffered 32-bit draws.

use super::SeedSequence;

/// The 128-bit LCG multiplier of PCG64.
const MULTIPLIER: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

/// PCG64's full state, as numpy's `bit_generator.state` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pcg64State {
    /// The 128-bit LCG state (`state["state"]`).
    pub state: u128,
    /// The LCG increment, always odd (`state["inc"]`).
    pub inc: u128,
    /// Whether a buffered 32-bit half is waiting to be returned.
    pub has_uint32: bool,
    /// The buffered upper 32 bits of the last 64-bit draw split by `next_uint32`.
    pub uinteger: u32,
}

/// numpy's `PCG64` bit generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcg64 {
    state: Pcg64State,
}

impl Pcg64 {
    /// `PCG64(seed_seq)`: seeded from `generate_state(4, np.uint64)` as
    /// `initstate = s0 << 64 | s1`, `initseq = s2 << 64 | s3`.
    pub fn new(seed_seq: &SeedSequence) -> Pcg64 {
        let s = seed_seq.generate_state_u64(4);
        let initstate = (u128::from(s[0]) << 64) | u128::from(s[1]);
        let initseq = (u128::from(s[2]) << 64) | u128::from(s[3]);
        let mut rng = Pcg64 {
            state: Pcg64State {
                state: 0,
                inc: (initseq << 1) | 1,
                has_uint32: false,
                uinteger: 0,
            },
        };
        rng.step();
        rng.state.state = rng.state.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    /// A generator in exactly `state` (numpy's `bit_generator.state = ...`).
    pub fn from_state(state: Pcg64State) -> Pcg64 {
        Pcg64 { state }
    }

    /// The current state.
    pub fn state(&self) -> Pcg64State {
        self.state
    }

    fn step(&mut self) {
        self.state.state = self
            .state
            .state
            .wrapping_mul(MULTIPLIER)
            .wrapping_add(self.state.inc);
    }

    /// The next 64 bits: one LCG step, then XSL-RR of the new state. Leaves the 32-bit
    /// buffer alone.
    pub fn next_uint64(&mut self) -> u64 {
        self.step();
        let s = self.state.state;
        let xored = ((s >> 64) as u64) ^ (s as u64);
        xored.rotate_right((s >> 122) as u32)
    }

    /// The next 32 bits, buffered: the buffered half if there is one, otherwise the low
    /// half of a fresh 64-bit draw, keeping its high half for the next call.
    pub fn next_uint32(&mut self) -> u32 {
        if self.state.has_uint32 {
            self.state.has_uint32 = false;
            return self.state.uinteger;
        }
        let next = self.next_uint64();
        self.state.has_uint32 = true;
        self.state.uinteger = (next >> 32) as u32;
        next as u32
    }

    /// numpy's `next_double`: `(next_uint64 >> 11) * 2^-53`, in `[0, 1)`.
    pub fn next_double(&mut self) -> f64 {
        (self.next_uint64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }
}

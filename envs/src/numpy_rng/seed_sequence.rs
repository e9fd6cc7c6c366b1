//! numpy's `SeedSequence` without spawn keys, as PCG64 uses it.

/// Number of 32-bit words in the entropy pool (numpy's default `pool_size`).
const POOL_SIZE: usize = 4;
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// numpy's `SeedSequence(entropy)` (no spawn key, pool of four 32-bit words): hashes the
/// entropy into a pool from which generator states are drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

/// numpy's `hashmix`: mixes `value` with the running hash constant, which it advances.
fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

/// numpy's `mix`.
fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

impl SeedSequence {
    /// `SeedSequence(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> SeedSequence {
        Self::from_u128(u128::from(seed))
    }

    /// `SeedSequence(seed)` for a seed of up to 128 bits.
    pub fn from_u128(seed: u128) -> SeedSequence {
        let mut words = Vec::new();
        let mut rest = seed;
        while rest > 0 {
            words.push(rest as u32);
            rest >>= 32;
        }
        Self::from_words(&words)
    }

    /// `SeedSequence(seed)` for a non-negative integer of any size written in decimal
    /// (Python's `int`); `None` when `digits` is empty or holds anything but ASCII digits.
    pub fn from_decimal(digits: &str) -> Option<SeedSequence> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Little-endian 32-bit words, multiplied by ten and added to digit by digit.
        let mut words: Vec<u32> = Vec::new();
        for b in digits.bytes() {
            let mut carry = u64::from(b - b'0');
            for w in &mut words {
                let v = u64::from(*w) * 10 + carry;
                *w = v as u32;
                carry = v >> 32;
            }
            if carry > 0 {
                words.push(carry as u32);
            }
        }
        Some(Self::from_words(&words))
    }

    /// `SeedSequence` from an entropy integer already split into little-endian 32-bit words
    /// (numpy's `_coerce_to_uint32_array`). No words means the integer 0, as does `[0]`.
    pub fn from_words(entropy: &[u32]) -> SeedSequence {
        let entropy: &[u32] = if entropy.is_empty() { &[0] } else { entropy };
        let mut hash_const = INIT_A;
        let mut pool = [0u32; POOL_SIZE];
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
        }
        for src in 0..POOL_SIZE {
            for dst in 0..POOL_SIZE {
                if src != dst {
                    let h = hashmix(pool[src], &mut hash_const);
                    pool[dst] = mix(pool[dst], h);
                }
            }
        }
        for &word in entropy.iter().skip(POOL_SIZE) {
            for slot in &mut pool {
                let h = hashmix(word, &mut hash_const);
                *slot = mix(*slot, h);
            }
        }
        SeedSequence { pool }
    }

    /// The mixed entropy pool (numpy's `SeedSequence.pool`).
    pub fn pool(&self) -> [u32; POOL_SIZE] {
        self.pool
    }

    /// `generate_state(n_words, np.uint32)`.
    pub fn generate_state_u32(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut v = self.pool[i % POOL_SIZE] ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hash_const);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint64)`: twice as many 32-bit words, paired
    /// little-endian (low word first).
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        self.generate_state_u32(2 * n_words)
            .chunks_exact(2)
            .map(|pair| u64::from(pair[0]) | (u64::from(pair[1]) << 32))
            .collect()
    }
}

//! A port of numpy's random generator, bit for bit: `Generator(PCG64(SeedSequence(seed)))`,
//! which is what Gymnasium's `np_random(seed)` builds for every environment.
//!
//! - [`SeedSequence`]: numpy's entropy pool (4 words of 32 bits) and `generate_state`.
//! - [`Pcg64`]: the PCG64 bit generator (128-bit LCG, XSL-RR output) with numpy's buffered
//!   32-bit draws; [`Pcg64State`] is its `bit_generator.state`.
//! - [`Generator`]: `random`, `uniform`, `integers` and `standard_normal` (numpy's 256-layer
//!   ziggurat, tables in [`ziggurat_tables`]).
//!
//! numpy's array draws (`uniform(low, high, size=n)`, also with array bounds) are the scalar
//! draws made element by element in order, so `n` calls here give the same values and leave
//! the same state. The parity fixtures live in `tests/fixtures/numpy_rng/`.

mod generator;
mod pcg64;
mod seed_sequence;
mod ziggurat;
pub mod ziggurat_tables;

pub use generator::Generator;
pub use pcg64::{Pcg64, Pcg64State};
pub use seed_sequence::SeedSequence;

//! MuJoCo locomotion (Hopper, HalfCheetah, Walker2d; v5 and v4), bit-exact with
//! Gymnasium 1.4 on MuJoCo 3.17.0 from `reset(seed)` on.
//!
//! libmujoco is loaded at run time from the folder `flowrl setup mujoco` fills
//! ([`Install`]); building flowrl needs nothing of MuJoCo. Each environment owns
//! its model and data, and draws its reset noise from numpy's generator seeded as
//! Gymnasium seeds it.

mod install;
mod library;
mod locomotion;
mod simulation;

pub use install::{
    flowrl_cache_dir, Install, LIBRARY_FILE, MODEL_FILES, MUJOCO_DIR_VAR, MUJOCO_VERSION,
    MUJOCO_VERSION_NUMBER,
};
pub use locomotion::{
    Locomotion, LocomotionInfo, LocomotionSpec, Robot, Version, LOCOMOTION_STEPS,
};

/// The locomotion ids.
pub const MUJOCO_IDS: [&str; 6] = [
    "Hopper-v5",
    "HalfCheetah-v5",
    "Walker2d-v5",
    "Hopper-v4",
    "HalfCheetah-v4",
    "Walker2d-v4",
];

/// Whether MuJoCo is set up and loads (the library opens and has the right
/// version); the error says what is missing and which command fixes it.
pub fn available() -> Result<(), crate::EnvError> {
    library::api().map(|_| ())
}

/// For tests that need MuJoCo: whether it is usable. When it is not, says why on
/// standard error (naming `what` is skipped) and returns false, or panics when the
/// environment variable `FLOWRL_REQUIRE_MUJOCO` is `1` (CI sets it after
/// `flowrl setup mujoco`, so a missing install fails instead of skipping).
pub fn ready_or_skip(what: &str) -> bool {
    match available() {
        Ok(()) => true,
        Err(e) if std::env::var("FLOWRL_REQUIRE_MUJOCO").is_ok_and(|v| v == "1") => {
            panic!("FLOWRL_REQUIRE_MUJOCO=1 but MuJoCo is not usable: {e}")
        }
        Err(e) => {
            eprintln!("skipping {what}: {e}");
            false
        }
    }
}

//! Long-memory tasks whose memory length `L` is part of the id.

mod key_to_door;
mod tmaze;

pub use key_to_door::{KeyToDoor, DOOR_STEPS, KEY_STEPS};
pub use tmaze::TMaze;

pub(crate) use tmaze::random_return as tmaze_random_return;

/// Checks a memory length: at least 1.
fn check_length(task: &str, length: usize) -> Result<usize, crate::EnvError> {
    if length >= 1 {
        Ok(length)
    } else {
        Err(crate::EnvError::BadArgument {
            what: format!("{task} memory length"),
            expected: "at least 1".into(),
            found: length.to_string(),
        })
    }
}

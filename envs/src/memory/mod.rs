//! Long-memory tasks whose memory length `L` is part of the id.

mod key_to_door;
mod tmaze;

pub use key_to_door::{KeyToDoor, DOOR_STEPS, KEY_STEPS};
pub use tmaze::TMaze;

pub(crate) use tmaze::random_return as tmaze_random_return;

//! flowrl environments.

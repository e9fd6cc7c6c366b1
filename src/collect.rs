//! Dataset collection with behaviour policies.

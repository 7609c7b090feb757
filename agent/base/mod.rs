//! Leaf helpers every layer may use; this module imports nothing from the
//! rest of the crate.

pub mod backoff;
pub mod secret;

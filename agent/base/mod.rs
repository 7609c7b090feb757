//! Leaf helpers every layer may use (backoff, secrets, diagnostics, log
//! throttling); this module imports nothing from the rest of the crate.

pub mod backoff;
pub mod diag;
pub mod secret;
pub mod throttle;

//! Leaf building blocks shared by modules that must not depend on each other
//! (config and rules). Nothing here imports another module of the crate.

pub mod diag;

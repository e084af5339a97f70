//! End-to-end tests of the `slipway` binary, one module per file in one test binary.

// A test that cannot go on panics: that is its failure report, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

mod aws;
mod cli;
mod deploy;
mod hosts;
mod rollback;

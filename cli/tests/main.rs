//! End-to-end tests of the `slipway` binary, one module per file in one test binary.

// A test that cannot go on panics: that is its failure report, helpers included.
#![allow(clippy::unwrap_used)]

mod common;

mod aws;
mod check;
mod cli;
mod conventions;
mod deploy;
mod docs;
mod hosts;
mod init;
mod rollback;
mod send;

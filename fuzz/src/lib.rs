//! Fuzz targets for every parser and verifier slipway exposes to the outside: the three git
//! hosts, the CI callback, Slack interactions, the deploy callback, approval and rollback
//! tokens, the configuration file and the local secrets file.
//!
//! The targets are the tests in `fuzz/tests/targets.rs`. Each one replays its seeds, then runs
//! [`arbitrary`] inputs ([`mutate::Fuzzed`] mutations of the seeds, forged headers, random
//! bytes) through [arbtest](https://docs.rs/arbtest) on stable Rust under `cargo test`: for one
//! second by default, `ARBTEST_BUDGET_MS` to fuzz longer, `ARBTEST_SEED` to replay a failure.
//! docs/development.md (Fuzzing) says how. This library holds what the targets share: the
//! mutations ([`mutate`]), the corpus ([`seeds`]) and slipway as the targets drive it
//! ([`harness`]).

pub mod harness;
pub mod mutate;
pub mod seeds;

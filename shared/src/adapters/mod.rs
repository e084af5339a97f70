//! Implementations of the [`ports`](crate::ports).
//!
//! - [`aws`]: S3, SQS and SSM, for Lambda and for `serve --backend aws`.
//! - [`local`]: the embedded backend — one SQLite file, a TOML secrets file.
//! - [`memory`]: in-memory fakes for tests, able to inject faults.
//! - [`command`], [`http_checker`], [`notify`]: the real deploy target, HTTP checker and
//!   notification channels, shared by every backend.

pub mod aws;
pub mod cache;
pub mod command;
pub mod http_checker;
pub mod local;
pub mod memory;
pub mod notify;

use jiff::Timestamp;

use crate::ports::Clock;

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

//! Implementations of the [`ports`](crate::ports).
//!
//! - [`aws`]: S3, SQS and SSM, for Lambda and for `serve --backend aws`.
//! - [`local`]: the embedded backend — one SQLite file, a TOML secrets file.
//! - [`memory`]: in-memory fakes for tests, able to inject faults.
//! - [`command`], [`http_checker`], [`notify`]: the real deploy target, HTTP checker and
//!   notification channels, shared by every backend.
//! - [`trackers`]: the issue trackers ticket watchers comment on (Jira, GitHub, GitLab, webhook).

pub mod aws;
pub mod cache;
pub mod command;
pub mod health;
pub mod http_checker;
pub mod local;
pub mod memory;
pub mod notify;
pub mod targets;
pub mod trackers;
pub mod webhook_target;

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

/// The backing services a backend provides: where state, queues and secrets live.
#[derive(Debug)]
pub struct Backend {
    pub store: std::sync::Arc<dyn crate::ports::StateStore>,
    pub queue: std::sync::Arc<dyn crate::ports::Queue>,
    pub secrets: std::sync::Arc<dyn crate::ports::SecretStore>,
    /// The first pause after losing a write race, about one round trip of `store`: a writer
    /// that lost waits for the winner's write to be readable, no longer. Too long, and under
    /// many writers of one record (a burst of runs joining an environment's line) the one
    /// whose write matters (the deploy giving the environment back) keeps losing to fresh
    /// writers while it waits.
    pub write_backoff: std::time::Duration,
}

/// An [`App`](crate::app::App) over `backend` with the real everything else — system clock,
/// `command` deploy target, HTTP checker, the configured notification channels — as every
/// backend runs in production.
pub fn wire(config: crate::config::Config, backend: Backend, public_url: url::Url) -> crate::app::App {
    use std::sync::Arc;
    crate::app::App {
        notifiers: notify::channels(&config.notify, backend.secrets.clone()),
        config: Arc::new(config),
        store: backend.store.clone(),
        queue: backend.queue,
        secrets: backend.secrets,
        clock: Arc::new(SystemClock),
        deployer: Arc::new(targets::Targets::new(backend.store.clone())),
        checker: Arc::new(http_checker::ReqwestChecker::new()),
        health: Arc::new(health::HealthSources::new()),
        public_url,
        tuning: crate::app::Tuning {
            write_backoff: backend.write_backoff,
            ..Default::default()
        },
        seen: Default::default(),
        release_log: Default::default(),
        shown_runs: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::adapters::memory::{MemoryQueue, MemorySecrets, MemoryStore};

    #[test]
    fn an_app_waits_after_a_lost_write_race_about_as_long_as_its_store_takes_to_write() {
        let config = crate::config::Config::parse(
            include_str!("../../../slipway.example.toml"),
            std::path::Path::new("slipway.example.toml"),
        )
        .unwrap();
        let backend = |write_backoff| Backend {
            store: Arc::new(MemoryStore::new()),
            queue: Arc::new(MemoryQueue::new(Arc::new(SystemClock))),
            secrets: Arc::new(MemorySecrets::new()),
            write_backoff,
        };
        let url = url::Url::parse("http://127.0.0.1:8080/").unwrap();
        for backoff in [Duration::from_millis(1), Duration::from_millis(20)] {
            let app = wire(config.clone(), backend(backoff), url.clone());
            assert_eq!(app.tuning.write_backoff, backoff);
            // The rest is the store's business only through that: unavailability and
            // abandonment are timed the same on every backend.
            let defaults = crate::app::Tuning::default();
            assert_eq!(app.tuning.unavailable_backoff, defaults.unavailable_backoff);
            assert_eq!(app.tuning.max_write_attempts, defaults.max_write_attempts);
        }
    }
}

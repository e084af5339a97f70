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
        tuning: crate::app::Tuning::default(),
        seen: Default::default(),
        release_log: Default::default(),
        shown_runs: Default::default(),
    }
}

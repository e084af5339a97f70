//! What slipway needs from the world, in slipway's own words.
//!
//! Each port has an embedded implementation (`adapters::local`), an in-memory one for tests
//! (`adapters::memory`), and — from the AWS issue on — an AWS one. Nothing here mentions a
//! cloud SDK; adapters convert at the edge.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::domain::{ParamName, RunId};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

// ---------------------------------------------------------------------------------------
// State store
// ---------------------------------------------------------------------------------------

/// A key in the state store. Built only from validated ids, so no request can name an
/// arbitrary object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(String);

impl StoreKey {
    /// Where a run lives: `runs/<run id>.json`.
    pub fn run(id: &RunId) -> Self {
        Self(format!("{}{id}.json", Self::RUNS))
    }

    /// The marker of notice `notice_id`'s deliveries (to each recipient, on each channel).
    pub fn notice_sent(notice_id: &str) -> Self {
        debug_assert!(
            notice_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        );
        Self(format!("notices/{notice_id}"))
    }

    /// The marker of a piece of a tracker's work about `run`'s release in `env` (see
    /// [`crate::trackers`]): `notices/trackers/<run>/<env>/<event>/<tracker>/<work>`, `event`
    /// being `released` or `rolled_back`, `work` being `comment/<ticket>`,
    /// `transition/<ticket>` or `release`.
    pub fn tracker_done(run: &RunId, env: &crate::domain::EnvName, event: &str, tracker: &str, work: &str) -> Self {
        let safe = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && !s.contains("..")
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b) || extra.contains(&b))
        };
        debug_assert!(safe(event, b"") && safe(tracker, b"") && safe(work, b"/."));
        Self(format!("notices/trackers/{run}/{env}/{event}/{tracker}/{work}"))
    }

    /// A marker that a git host's delivery `id` was handled. `None` if `id` is not a
    /// delivery id (1-128 of `A-Z a-z 0-9 - _ .`): it is then not used as a key at all.
    pub fn delivery(provider: &str, id: &str) -> Option<Self> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        ok.then(|| Self(format!("deliveries/{provider}/{id}")))
    }

    /// An environment's record — lease, queue of waiting runs, releases:
    /// `environments/<pipeline>/<env>.json`.
    pub fn environment(pipeline: &crate::domain::PipelineName, env: &crate::domain::EnvName) -> Self {
        Self(format!("{}{pipeline}/{env}.json", Self::ENVIRONMENTS))
    }

    /// A webhook deploy target's signed completion callback for one phase:
    /// `deploy-callbacks/<run>/<env>/<phase>.json` for `run`'s own deploy, and
    /// `deploy-callbacks/<run>/<env>/<phase>.rollback.<rolling back>.json` when run
    /// `rolling_back`'s rollback stage (re)deploys `run`'s release or restores its backup — so
    /// a rollback to an earlier release never meets that release's own deploy callback.
    pub fn deploy_callback(
        run: &RunId,
        env: &crate::domain::EnvName,
        phase: crate::domain::Phase,
        purpose: DeployPurpose<'_>,
    ) -> Self {
        Self(format!("deploy-callbacks/{run}/{env}/{phase}{}.json", purpose.suffix()))
    }

    /// A marker that run `id` is unfinished: `open-runs/<run id>`. The sweep lists these
    /// instead of every run ever made, and removes a marker once its run has finished.
    pub fn open_run(id: &RunId) -> Self {
        Self(format!("{}{id}", Self::OPEN_RUNS))
    }

    /// Set once the index of unfinished runs holds every run made before it existed.
    pub fn open_runs_indexed() -> Self {
        Self("index/open-runs.json".to_owned())
    }

    /// What slipway learned of a pipeline's git history from its pushes:
    /// `lineage/<pipeline>.json` ([`crate::domain::Lineage`]).
    pub fn lineage(pipeline: &crate::domain::PipelineName) -> Self {
        Self(format!("{}{pipeline}.json", Self::LINEAGE))
    }

    /// A chunk of a pipeline's index of runs (the read model, [`crate::views::run_index`]):
    /// `views/runs/<pipeline>/<chunk>.json`.
    pub fn run_chunk(pipeline: &crate::domain::PipelineName, chunk: i64) -> Self {
        Self(format!("{}runs/{pipeline}/{chunk}.json", Self::VIEWS))
    }

    /// One month (UTC) of an environment's release log ([`crate::views::release_log`]):
    /// `views/releases/<pipeline>/<env>/<yyyy>-<mm>.json`.
    pub fn release_log(
        pipeline: &crate::domain::PipelineName,
        env: &crate::domain::EnvName,
        year: i16,
        month: i8,
    ) -> Self {
        Self(format!(
            "{}releases/{pipeline}/{env}/{year:04}-{month:02}.json",
            Self::VIEWS
        ))
    }

    /// A pipeline's release cadence episode ([`crate::views::cadence`]):
    /// `views/cadence/<pipeline>.json`.
    pub fn cadence(pipeline: &crate::domain::PipelineName) -> Self {
        Self(format!("{}cadence/{pipeline}.json", Self::VIEWS))
    }

    /// Set once the index of runs holds every run made before it existed.
    pub fn views_indexed() -> Self {
        Self(format!("{}indexed.json", Self::VIEWS))
    }

    /// The prefix of the read model's projections.
    pub const VIEWS: &'static str = "views/";

    /// The prefix of the pipelines' lineages.
    pub const LINEAGE: &'static str = "lineage/";

    /// The prefix under which all runs live.
    pub const RUNS: &'static str = "runs/";

    /// The prefix of the unfinished-run markers.
    pub const OPEN_RUNS: &'static str = "open-runs/";

    /// Every prefix slipway stores under. `infra/template.yaml` grants each one to the
    /// functions that need it; a test holds the template to this list.
    pub const PREFIXES: [&'static str; 9] = [
        Self::RUNS,
        Self::ENVIRONMENTS,
        Self::LINEAGE,
        Self::VIEWS,
        Self::OPEN_RUNS,
        "index/",
        "notices/",
        "deliveries/",
        "deploy-callbacks/",
    ];

    /// The prefix under which environment records live.
    pub const ENVIRONMENTS: &'static str = "environments/";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a key an adapter listed. Only keys under known prefixes are accepted.
    pub fn from_listed(raw: &str) -> Option<Self> {
        let known = Self::PREFIXES.iter().any(|prefix| raw.starts_with(prefix));
        let clean = !raw.contains("..") && !raw.starts_with('/');
        (known && clean).then(|| Self(raw.to_owned()))
    }

    /// The run id of a `runs/<id>.json` key.
    pub fn run_id(&self) -> Option<RunId> {
        let id = self.0.strip_prefix(Self::RUNS)?.strip_suffix(".json")?;
        RunId::parse(id).ok()
    }

    /// The run id of an `open-runs/<id>` marker.
    pub fn open_run_id(&self) -> Option<RunId> {
        RunId::parse(self.0.strip_prefix(Self::OPEN_RUNS)?).ok()
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An opaque version of a stored object: an S3 ETag, a SQLite row version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version(pub String);

/// A value with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: Version,
}

/// State-store failures, by what the caller does about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` found something already there: someone else created it first.
    #[error("{0} already exists")]
    AlreadyExists(StoreKey),
    /// `replace` found another version (or nothing): someone else wrote first. Re-read,
    /// re-decide, retry.
    #[error("{0} was changed by someone else")]
    Conflict(StoreKey),
    /// The store could not be reached or refused for a transient reason. Retry later.
    #[error("the state store is unavailable")]
    Unavailable(#[source] BoxError),
}

/// Durable, versioned key-value storage with conditional writes — exactly the semantics of
/// S3 `If-None-Match: *` and `If-Match: <etag>`.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// The object at `key` with its current version, or `None` if there is none.
    async fn get(&self, key: &StoreKey) -> Result<Option<Versioned<Bytes>>, StoreError>;

    /// Stores `value` at `key` only if nothing is there yet. Never overwrites: if an object
    /// exists, fails with [`StoreError::AlreadyExists`] and changes nothing.
    async fn create(&self, key: &StoreKey, value: Bytes) -> Result<Version, StoreError>;

    /// Replaces the object at `key` only if its version is still `expected`. If another
    /// writer got there first (or the object is gone), fails with [`StoreError::Conflict`]
    /// and changes nothing: concurrent writers are detected, never lost.
    async fn replace(&self, key: &StoreKey, value: Bytes, expected: &Version) -> Result<Version, StoreError>;

    /// Every key that starts with `prefix`, in lexical order.
    async fn list(&self, prefix: &str) -> Result<Vec<StoreKey>, StoreError>;

    /// Removes the object at `key`; nothing there is not an error. Only index markers are
    /// ever removed (see [`StoreKey::open_run`]): runs and environment records never are.
    async fn remove(&self, key: &StoreKey) -> Result<(), StoreError>;
}

// ---------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------

/// The work queues that chain slipway's handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueName {
    Deploy,
    Smoke,
    Notify,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [QueueName::Deploy, QueueName::Smoke, QueueName::Notify];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Deploy => "deploy",
            QueueName::Smoke => "smoke",
            QueueName::Notify => "notify",
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handle to one receipt of one message, used to ack or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt(pub String);

/// A message handed to a consumer. It stays invisible to other consumers until its
/// visibility timeout runs out; unless acked by then, it is delivered again.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub receipt: Receipt,
    pub body: String,
    /// How many times this message has been delivered, this time included.
    pub receive_count: u32,
}

/// A message that was delivered the maximum number of times without being acked.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub queue: QueueName,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: Timestamp,
    pub dead_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue could not be reached. Retry later.
    #[error("the {0} queue is unavailable")]
    Unavailable(QueueName, #[source] BoxError),
    /// The receipt is unknown or expired (the message was redelivered to someone else).
    #[error("receipt for a {0} message is no longer valid")]
    StaleReceipt(QueueName),
}

/// At-least-once work queues with visibility timeouts and dead-lettering, like SQS with a
/// redrive policy.
#[async_trait]
pub trait Queue: Send + Sync + fmt::Debug {
    /// Enqueues `body`; it becomes visible after `delay`.
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> Result<(), QueueError>;

    /// Enqueues several bodies at once (SQS `SendMessageBatch`). By default, one by one.
    async fn send_many(&self, queue: QueueName, bodies: &[String]) -> Result<(), QueueError> {
        for body in bodies {
            self.send(queue, body, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Takes up to `max` visible messages, hiding each for `visibility`. A message already
    /// delivered the adapter's maximum number of times moves to the dead-letter store instead
    /// of being delivered again.
    async fn receive(&self, queue: QueueName, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Deletes a delivered message: it is done.
    async fn ack(&self, queue: QueueName, receipt: &Receipt) -> Result<(), QueueError>;

    /// Gives a delivered message back: it becomes visible again after `delay` (it counts as
    /// a failed attempt) and the receipt is spent.
    async fn release(&self, queue: QueueName, receipt: &Receipt, delay: Duration) -> Result<(), QueueError>;

    /// Keeps a delivered message hidden for `visibility` from now, while its handler is still
    /// at work; the receipt stays valid (SQS `ChangeMessageVisibility`). Fails with
    /// [`QueueError::StaleReceipt`] if the message was delivered again meanwhile.
    async fn extend(&self, queue: QueueName, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError>;

    /// Messages that exhausted their deliveries, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;

    /// How many messages `queue` holds now, waiting or being handled (SQS: approximately,
    /// `ApproximateNumberOfMessages` and `…NotVisible` and `…Delayed`).
    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError>;

    /// Waits, after a [`Queue::receive`] found nothing, until `queue` may have a message: at
    /// most `at_most`. By default that is all it does (SQS's receive already long-polls); a
    /// queue in this process ends the wait as soon as a message is sent, so the next step of
    /// a run does not wait out a polling interval.
    async fn idle(&self, queue: QueueName, at_most: Duration) {
        let _ = queue;
        tokio::time::sleep(at_most).await;
    }

    /// Whether a message should carry the run its sender just wrote, so that its handler need
    /// not read it (see `app::Message`). Yes by default: where the store is a network away
    /// (S3), a read costs a request and its round trip. A queue beside a local store says no:
    /// there a read costs microseconds, while a message the size of a run costs the one
    /// writer more than the read it saves.
    fn carries_runs(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No parameter of that name: a configuration mistake. Tell an operator.
    #[error("secret parameter {0} does not exist")]
    NotFound(ParamName),
    /// The parameter store could not be reached. Retry later (HTTP callers answer 503).
    #[error("the secret store is unavailable while reading {0}")]
    Unavailable(ParamName, #[source] BoxError),
}

/// Named secrets, shaped like SSM Parameter Store paths. Values are only ever handled as
/// [`SecretString`], which neither prints nor logs.
#[async_trait]
pub trait SecretStore: Send + Sync + fmt::Debug {
    async fn get(&self, name: &ParamName) -> Result<SecretString, SecretError>;
}

// ---------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------

/// The current time. Everything time-dependent asks this, so tests can move time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

// ---------------------------------------------------------------------------------------
// Notifier
// ---------------------------------------------------------------------------------------

/// One notification, rendered for one recipient. The `file` channel writes exactly this
/// object as one JSON line; other channels format it their own way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `approval_requested`, `released`, `failed`, `rejected` or `approval_expired`.
    pub kind: String,
    /// Unique per notice and recipient, stable across redeliveries.
    pub id: String,
    pub run_id: RunId,
    pub pipeline: String,
    pub repo: String,
    pub sha: String,
    pub branch: String,
    pub commit_message: String,
    pub author: String,
    pub environment: Option<String>,
    /// One line a person reads first.
    pub title: String,
    /// More detail: why it failed, who decided.
    pub text: String,
    /// The failed stage, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// `true` when the pipeline's own branch is red: fixing it comes first.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub alert: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// Where to reach the approver (an email address, a chat handle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approve_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_url: Option<String>,
    /// On `released`: this approver's signed link to roll the environment back from this
    /// run (the run page, with a rollback action). Works until `expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_url: Option<String>,
    /// When the approval links (or the rollback link) stop working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// For an approver: their own link to sign in to slipway's pages (the control room and
    /// run pages), valid as long as the approval or rollback links beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in_url: Option<String>,
    pub run_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth trying again later (network error, 5xx, secret store down).
    #[error("notification channel {channel} failed, will retry")]
    Transient {
        channel: String,
        #[source]
        source: BoxError,
    },
    /// Trying again will not help (bad configuration, 4xx).
    #[error("notification channel {channel} refused the message")]
    Permanent {
        channel: String,
        #[source]
        source: BoxError,
    },
}

/// A channel that delivers notifications to people.
#[async_trait]
pub trait Notifier: Send + Sync + fmt::Debug {
    /// A short name for logs: `stdout`, `file:/path`, `slack`.
    fn name(&self) -> String;
    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError>;
}

// ---------------------------------------------------------------------------------------
// Deploy target
// ---------------------------------------------------------------------------------------

/// One action of a deploy target. A forward deploy runs `Backup` → `Migrate` → `Release`
/// (the smoke stage is the `verify` phase); an automatic rollback runs `Restore` (with the
/// backup's reference) and then `Release` of the previous artifact.
pub use crate::domain::Phase;

/// Everything a deploy target needs to carry out one phase for one environment.
#[derive(Debug)]
pub struct DeployRequest<'a> {
    pub phase: Phase,
    /// The run whose commit and artifact this phase deploys. In a rollback's redeploy that is
    /// the *earlier* run being put back, not the run rolling back: see `purpose`.
    pub run: &'a RunId,
    /// Which stage asked for this phase: `run`'s own deploy, or a rollback. Together with
    /// `run`, `env` and `phase` it names the phase uniquely, so a target that keys anything on
    /// the phase (the webhook target's delivery id and callback) must include it.
    pub purpose: DeployPurpose<'a>,
    pub repo: &'a str,
    pub sha: &'a str,
    pub env: &'a str,
    pub artifact: Option<&'a str>,
    /// For [`Phase::Restore`]: the reference the backup phase returned.
    pub backup: Option<&'a str>,
    /// The environment's secrets, resolved from the secret store, by the variable name the
    /// target expects them under.
    pub secrets: Vec<(String, SecretString)>,
    pub target: &'a crate::config::DeployTargetConfig,
}

/// Which stage asked a deploy target for a phase.
///
/// | stage | phases | `run` | `purpose` |
/// |---|---|---|---|
/// | run R's deploy | backup, migrate, release | R | `Deploy` |
/// | run B's automatic rollback to A | restore | B | `Rollback { rolling_back: B }` |
/// | | release | A | `Rollback { rolling_back: B }` |
/// | run B's rollback to A, asked for by hand | backup, migrate, release | A | `Rollback { rolling_back: B }` |
/// | | restore (when one of those fails) | B | `Rollback { rolling_back: B }` |
///
/// A rollback redeploys an earlier run A's release, so `run` alone does not tell A's own
/// deploy from B rolling back to it; the rolling-back run does. And B may roll back in one
/// environment more than once (an automatic rollback that failed, then one asked for by
/// hand): `attempt` counts them, so a retry never finds the first attempt's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployPurpose<'a> {
    /// The run's own deploy stage: `run` deploys its own commit.
    Deploy,
    /// The run's own deploy stage again, after someone retried it: attempt 2, 3, … of it.
    /// Its requests never find the earlier attempts' answers.
    Redeploy { attempt: u32 },
    /// The rollback stage of run `rolling_back` — the run whose release is being undone, and
    /// on which the rollback stage is recorded. It restores that run's backup and (re)deploys
    /// an earlier release, whose run is then the request's `run`.
    Rollback {
        rolling_back: &'a RunId,
        /// 1 for B's first rollback in this environment, 2 for the next, …
        attempt: u32,
    },
}

impl<'a> DeployPurpose<'a> {
    /// The run rolling back, for a rollback; `None` for a deploy.
    pub fn rolling_back(self) -> Option<&'a RunId> {
        match self {
            Self::Deploy | Self::Redeploy { .. } => None,
            Self::Rollback { rolling_back, .. } => Some(rolling_back),
        }
    }

    /// Which of the rolling-back run's rollbacks in this environment, for a rollback; which
    /// attempt of the deploy, for a retried one; `None` for a first deploy.
    pub fn attempt(self) -> Option<u32> {
        match self {
            Self::Deploy => None,
            Self::Redeploy { attempt } | Self::Rollback { attempt, .. } => Some(attempt),
        }
    }

    /// The run's own deploy, as its `attempt`-th try (1: the first, which says no attempt).
    pub fn deploy(attempt: u32) -> Self {
        if attempt > 1 {
            Self::Redeploy { attempt }
        } else {
            Self::Deploy
        }
    }

    /// What tells this stage's requests apart from the run's own deploy in delivery ids and
    /// callback keys: nothing for a deploy, `.attempt.<n>` for a retried one,
    /// `.rollback.<rolling_back>` for a first rollback, `.rollback.<rolling_back>.<attempt>`
    /// for a later one.
    pub fn suffix(self) -> String {
        match self {
            Self::Deploy => String::new(),
            Self::Redeploy { attempt } => format!(".attempt.{attempt}"),
            Self::Rollback {
                rolling_back,
                attempt: 0 | 1,
            } => format!(".rollback.{rolling_back}"),
            Self::Rollback { rolling_back, attempt } => format!(".rollback.{rolling_back}.{attempt}"),
        }
    }

    /// The stage's name as the webhook target sends it: `deploy` or `rollback`.
    pub fn stage(self) -> &'static str {
        match self {
            Self::Deploy | Self::Redeploy { .. } => "deploy",
            Self::Rollback { .. } => "rollback",
        }
    }
}

/// What a finished phase printed (secrets masked) and returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeployReport {
    pub output: String,
    /// [`Phase::Backup`]: the reference [`Phase::Restore`] needs. [`Phase::Release`]: what now
    /// runs, when the target knows (a Lambda version, an S3 release prefix).
    pub reference: Option<String>,
    /// The target has nothing to do for this phase (no migrate command configured, …).
    pub skipped: bool,
}

impl DeployReport {
    /// A phase the target has no action for.
    pub fn skipped(why: impl Into<String>) -> Self {
        Self {
            output: why.into(),
            reference: None,
            skipped: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The phase ran and failed. `output` is what it printed, secrets masked.
    #[error("{reason}")]
    Failed { reason: String, output: String },
    /// The phase could not even start (missing program, permission denied, bad config).
    #[error("the deploy could not start: {reason}")]
    CouldNotStart { reason: String },
}

/// Carries out deploy phases for an environment.
#[async_trait]
pub trait DeployTarget: Send + Sync + fmt::Debug {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError>;
}

// ---------------------------------------------------------------------------------------
// Health source (post-deploy bake)
// ---------------------------------------------------------------------------------------

/// What a health source said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// What was seen, in words a person can act on (`error_rate 0.7 > 0.05`, `alarm
    /// checkout-5xx is ALARM`).
    pub detail: String,
}

/// Reads an environment's health during a post-deploy bake.
#[async_trait]
pub trait HealthSource: Send + Sync + fmt::Debug {
    /// `Err` is a fault of the source itself (unreachable, malformed answer), which the
    /// bake treats as unhealthy after repeated failures.
    async fn check(&self, source: &crate::config::HealthSourceConfig) -> Result<Health, String>;
}

// ---------------------------------------------------------------------------------------
// HTTP checker
// ---------------------------------------------------------------------------------------

/// One HTTP request a smoke check makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    pub status: u16,
    /// The body as text, cut to at most 64 KiB.
    pub body: String,
}

/// Makes the HTTP requests smoke checks need. One call, one request: retries and
/// assertions belong to the smoke handler.
#[async_trait]
pub trait HttpChecker: Send + Sync + fmt::Debug {
    /// The response, or why there was none (refused, timed out, TLS failure), in words.
    async fn fetch(&self, probe: &Probe) -> Result<ProbeResponse, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_deploy_never_shares_a_key_with_an_earlier_attempt_or_a_rollback() {
        let b = RunId::parse("shop-b2c3d4e5f60718293a4b5c6d7e8f901234567890").unwrap();
        let suffixes = [
            DeployPurpose::deploy(1),
            DeployPurpose::deploy(2),
            DeployPurpose::deploy(3),
            DeployPurpose::Rollback {
                rolling_back: &b,
                attempt: 1,
            },
            DeployPurpose::Rollback {
                rolling_back: &b,
                attempt: 2,
            },
        ]
        .map(DeployPurpose::suffix);
        assert_eq!(suffixes[0], "", "a first deploy keeps the keys it always had");
        assert_eq!(suffixes[1], ".attempt.2");
        let distinct: std::collections::HashSet<_> = suffixes.iter().collect();
        assert_eq!(distinct.len(), suffixes.len(), "{suffixes:?}");
        assert_eq!(DeployPurpose::deploy(2).stage(), "deploy");
        assert_eq!(DeployPurpose::deploy(2).attempt(), Some(2));
        assert_eq!(DeployPurpose::deploy(1).attempt(), None);
    }
}

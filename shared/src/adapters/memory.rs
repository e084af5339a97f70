//! In-memory implementations of every port, for tests. Each can inject the faults the real
//! ones produce (a conflicting writer, an unreachable store, a failing deploy), so the
//! engine's handling of them is tested without a cloud.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::ParamName;
use crate::ports::{
    Clock, DeadLetter, Delivery, DeployError, DeployReport, DeployRequest, DeployTarget, Health, HealthSource,
    HttpChecker, Notification, Notifier, NotifyError, Phase, Probe, ProbeResponse, Queue, QueueError, QueueName,
    Receipt, SecretError, SecretStore, StateStore, StoreError, StoreKey, Version, Versioned,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another test thread panicked; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fault to inject into the next matching call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails as if the backing service were unreachable.
    Unavailable,
    /// A `replace` fails as if someone else had written first.
    Conflict,
}

#[derive(Debug)]
struct Injected(&'static str);
impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected fault: {}", self.0)
    }
}
impl std::error::Error for Injected {}

// ---------------------------------------------------------------------------------------

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = lock(&self.0);
        *now = now.checked_add(by).expect("time stays in range");
    }

    pub fn set(&self, to: Timestamp) {
        *lock(&self.0) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *lock(&self.0)
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct PlannedFault {
    op: &'static str,
    fault: Fault,
    /// Matching calls to let through first.
    skip: usize,
}

/// A versioned key-value store in memory, with the same conditional-write semantics as S3.
///
/// Besides planned faults, it can make its caller *crash* (see [`MemoryStore::crash_at`]) and
/// can make concurrent callers interleave at every operation (see [`MemoryStore::interleave`]).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<StoreKey, (Bytes, u64)>>>,
    faults: Arc<Mutex<Vec<PlannedFault>>>,
    writes: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    /// Operations to let through before the planned crash; `None`: no crash planned.
    crash_after: Arc<Mutex<Option<usize>>>,
    crashed: Arc<tokio::sync::Notify>,
    interleave: Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next call of `op` (`"get"`, `"create"`, `"replace"` or `"list"`) fail.
    /// Faults queue up and are used in order.
    pub fn fail_next(&self, op: &'static str, fault: Fault) {
        self.fail_later(op, 0, fault);
    }

    /// Lets `skip` calls of `op` through, then makes the next one fail. Planned faults for
    /// the same operation count their skips from the same calls.
    pub fn fail_later(&self, op: &'static str, skip: usize, fault: Fault) {
        lock(&self.faults).push(PlannedFault { op, fault, skip });
    }

    /// Makes the caller of the operation after the next `n` (of any kind; 0: the very next)
    /// "crash": that call never returns and changes nothing, as if the process died while
    /// waiting for the store. Drop the caller's future once [`crashed`](Self::crashed)
    /// resolves; a queue message it was handling comes back after its visibility timeout.
    pub fn crash_at(&self, n: usize) {
        *lock(&self.crash_after) = Some(n);
    }

    /// Resolves once a crash planned with [`crash_at`](Self::crash_at) has happened.
    pub async fn crashed(&self) {
        self.crashed.notified().await;
    }

    /// Forgets a planned crash that has not happened yet. `true` if there was one.
    pub fn cancel_crash(&self) -> bool {
        lock(&self.crash_after).take().is_some()
    }

    /// While `true`, every operation first yields to the async runtime once, so callers
    /// running concurrently on one thread (`tokio::join!`) interleave at every store call —
    /// the races two workers or two approvers produce.
    pub fn interleave(&self, on: bool) {
        self.interleave.store(on, Ordering::SeqCst);
    }

    /// Where every operation starts: yields if interleaving, and crashes if one is due.
    async fn enter(&self) {
        if self.interleave.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let crash = {
            let mut after = lock(&self.crash_after);
            match *after {
                Some(0) => {
                    *after = None;
                    true
                }
                Some(n) => {
                    *after = Some(n - 1);
                    false
                }
                None => false,
            }
        };
        if crash {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
    }

    /// How many reads (gets and lists) reached this store: what a test of a page's cost counts.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// How many successful writes there were.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        lock(&self.objects).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fault(&self, op: &'static str, key: &StoreKey) -> Result<(), StoreError> {
        let mut faults = lock(&self.faults);
        let mut due = None;
        for (i, planned) in faults.iter_mut().enumerate().filter(|(_, f)| f.op == op) {
            if planned.skip == 0 {
                due.get_or_insert(i);
            } else {
                planned.skip -= 1;
            }
        }
        if let Some(i) = due {
            let fault = faults.remove(i).fault;
            return Err(match fault {
                Fault::Unavailable => StoreError::Unavailable(Box::new(Injected("state store unavailable"))),
                Fault::Conflict => StoreError::Conflict(key.clone()),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &StoreKey) -> Result<Option<Versioned<Bytes>>, StoreError> {
        self.enter().await;
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.fault("get", key)?;
        Ok(lock(&self.objects).get(key).map(|(value, v)| Versioned {
            value: value.clone(),
            version: Version(v.to_string()),
        }))
    }

    async fn create(&self, key: &StoreKey, value: Bytes) -> Result<Version, StoreError> {
        self.enter().await;
        self.fault("create", key)?;
        let mut objects = lock(&self.objects);
        if objects.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        objects.insert(key.clone(), (value, 1));
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(Version("1".into()))
    }

    async fn replace(&self, key: &StoreKey, value: Bytes, expected: &Version) -> Result<Version, StoreError> {
        self.enter().await;
        self.fault("replace", key)?;
        let mut objects = lock(&self.objects);
        match objects.get_mut(key) {
            Some((stored, v)) if v.to_string() == expected.0 => {
                *stored = value;
                *v += 1;
                self.writes.fetch_add(1, Ordering::SeqCst);
                Ok(Version(v.to_string()))
            }
            _ => Err(StoreError::Conflict(key.clone())),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StoreKey>, StoreError> {
        self.enter().await;
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(key) = StoreKey::from_listed(prefix) {
            self.fault("list", &key)?;
        }
        Ok(lock(&self.objects)
            .keys()
            .filter(|k| k.as_str().starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn remove(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.enter().await;
        self.fault("remove", key)?;
        if lock(&self.objects).remove(key).is_some() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Message {
    id: String,
    queue: QueueName,
    body: String,
    sent_at: Timestamp,
    visible_at: Timestamp,
    receive_count: u32,
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: Vec<Message>,
    dead: Vec<DeadLetter>,
    next_id: u64,
    sent: u64,
    fail_sends: u32,
}

/// Queues in memory, timed by a [`Clock`] so tests can let visibility timeouts run out.
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    state: Arc<Mutex<QueueState>>,
    clock: Arc<dyn Clock>,
    max_receives: u32,
}

impl MemoryQueue {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::default(),
            clock,
            max_receives: 5,
        }
    }

    pub fn with_max_receives(mut self, n: u32) -> Self {
        self.max_receives = n;
        self
    }

    /// Makes the next `n` sends fail as if the queue were unreachable.
    pub fn fail_next_sends(&self, n: u32) {
        lock(&self.state).fail_sends = n;
    }

    /// Bodies of the messages in `queue` that are not yet acked (visible or not).
    pub fn pending(&self, queue: QueueName) -> Vec<String> {
        lock(&self.state)
            .messages
            .iter()
            .filter(|m| m.queue == queue)
            .map(|m| m.body.clone())
            .collect()
    }

    /// How many messages were ever sent.
    pub fn sent_count(&self) -> u64 {
        lock(&self.state).sent
    }

    /// Sends a copy of every pending message of `queue`, as an at-least-once queue may.
    pub fn duplicate_pending(&self, queue: QueueName) {
        let mut state = lock(&self.state);
        let copies: Vec<Message> = state.messages.iter().filter(|m| m.queue == queue).cloned().collect();
        for mut m in copies {
            state.next_id += 1;
            m.id = format!("m{}", state.next_id);
            m.receipt = None;
            m.receive_count = 0;
            state.messages.push(m);
        }
    }
}

impl MemoryQueue {
    /// Hides a delivered message until `for_` from now; `spend` voids its receipt.
    fn hide(&self, queue: QueueName, receipt: &Receipt, for_: Duration, spend: bool) -> Result<(), QueueError> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let m = state
            .messages
            .iter_mut()
            .find(|m| m.queue == queue && m.receipt.as_deref() == Some(receipt.0.as_str()))
            .ok_or(QueueError::StaleReceipt(queue))?;
        m.visible_at = after(now, for_);
        if spend {
            m.receipt = None;
        }
        Ok(())
    }
}

fn after(at: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    at.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> Result<(), QueueError> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if state.fail_sends > 0 {
            state.fail_sends -= 1;
            return Err(QueueError::Unavailable(queue, Box::new(Injected("queue unavailable"))));
        }
        state.next_id += 1;
        state.sent += 1;
        let id = format!("m{}", state.next_id);
        state.messages.push(Message {
            id,
            queue,
            body: body.to_owned(),
            sent_at: now,
            visible_at: after(now, delay),
            receive_count: 0,
            receipt: None,
        });
        Ok(())
    }

    async fn receive(&self, queue: QueueName, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let state = &mut *state;
        let mut out = Vec::new();
        let mut i = 0;
        while i < state.messages.len() && out.len() < max {
            let m = &mut state.messages[i];
            if m.queue != queue || m.visible_at > now {
                i += 1;
                continue;
            }
            if m.receive_count >= self.max_receives {
                let m = state.messages.remove(i);
                state.dead.push(DeadLetter {
                    message_id: m.id,
                    queue: m.queue,
                    body: m.body,
                    receive_count: m.receive_count,
                    sent_at: m.sent_at,
                    dead_at: now,
                });
                continue;
            }
            state.next_id += 1;
            let receipt = format!("r{}", state.next_id);
            m.receive_count += 1;
            m.receipt = Some(receipt.clone());
            m.visible_at = after(now, visibility);
            out.push(Delivery {
                message_id: m.id.clone(),
                receipt: Receipt(receipt),
                body: m.body.clone(),
                receive_count: m.receive_count,
            });
            i += 1;
        }
        Ok(out)
    }

    async fn ack(&self, queue: QueueName, receipt: &Receipt) -> Result<(), QueueError> {
        let mut state = lock(&self.state);
        let before = state.messages.len();
        state
            .messages
            .retain(|m| !(m.queue == queue && m.receipt.as_deref() == Some(receipt.0.as_str())));
        if state.messages.len() == before {
            return Err(QueueError::StaleReceipt(queue));
        }
        Ok(())
    }

    async fn release(&self, queue: QueueName, receipt: &Receipt, delay: Duration) -> Result<(), QueueError> {
        self.hide(queue, receipt, delay, true)
    }

    async fn extend(&self, queue: QueueName, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.hide(queue, receipt, visibility, false)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(lock(&self.state).dead.clone())
    }

    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError> {
        let state = lock(&self.state);
        Ok(state.messages.iter().filter(|m| m.queue == queue).count() as u64)
    }
}

// ---------------------------------------------------------------------------------------

/// Secrets in memory; can be made unreachable.
#[derive(Debug, Clone, Default)]
pub struct MemorySecrets {
    values: Arc<Mutex<HashMap<ParamName, SecretString>>>,
    unavailable: Arc<Mutex<bool>>,
    reads: Arc<AtomicU64>,
}

impl MemorySecrets {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding one secret.
    pub fn holding(name: &str, value: &str) -> Self {
        let secrets = Self::new();
        secrets.set(name, value);
        secrets
    }

    /// A store that cannot be reached.
    pub fn unreachable() -> Self {
        let secrets = Self::new();
        secrets.set_unavailable(true);
        secrets
    }

    pub fn set(&self, name: &str, value: &str) {
        let name = ParamName::parse(name).expect("tests use valid parameter names");
        lock(&self.values).insert(name, SecretString::from(value.to_owned()));
    }

    /// Every value held, in the clear: what a test looks for where no secret may appear.
    pub fn values(&self) -> Vec<String> {
        use secrecy::ExposeSecret as _;
        lock(&self.values)
            .values()
            .map(|v| v.expose_secret().to_owned())
            .collect()
    }

    /// While `true`, every read fails as if the parameter store were unreachable.
    pub fn set_unavailable(&self, unavailable: bool) {
        *lock(&self.unavailable) = unavailable;
    }

    /// How many reads reached this store.
    pub fn read_count(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretStore for MemorySecrets {
    async fn get(&self, name: &ParamName) -> Result<SecretString, SecretError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if *lock(&self.unavailable) {
            return Err(SecretError::Unavailable(
                name.clone(),
                Box::new(Injected("parameter store unreachable")),
            ));
        }
        lock(&self.values)
            .get(name)
            .map(|v| SecretString::from(v.expose_secret().to_owned()))
            .ok_or_else(|| SecretError::NotFound(name.clone()))
    }
}

// ---------------------------------------------------------------------------------------

/// A notification channel that records what it was given.
#[derive(Debug, Clone, Default)]
pub struct RecordingNotifier {
    sent: Arc<Mutex<Vec<Notification>>>,
    fail_next: Arc<Mutex<u32>>,
}

impl RecordingNotifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    /// Makes the next `n` deliveries fail transiently.
    pub fn fail_next(&self, n: u32) {
        *lock(&self.fail_next) = n;
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    fn name(&self) -> String {
        "memory".into()
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        {
            let mut fail = lock(&self.fail_next);
            if *fail > 0 {
                *fail -= 1;
                return Err(NotifyError::Transient {
                    channel: self.name(),
                    source: Box::new(Injected("channel down")),
                });
            }
        }
        lock(&self.sent).push(notification.clone());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------

/// One deploy phase a [`FakeDeployTarget`] carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDeploy {
    pub phase: Phase,
    pub env: String,
    /// The run whose commit the phase deploys (for a rollback's release, the earlier run).
    pub run: String,
    pub sha: String,
    pub artifact: Option<String>,
    /// For a restore: the backup reference it was given.
    pub backup: Option<String>,
    /// For a phase a rollback asked for: the run rolling back ([`crate::ports::DeployPurpose::Rollback`]).
    pub rolling_back: Option<String>,
    /// For a phase a rollback asked for: which of that run's rollbacks of the environment;
    /// for a retried deploy, which attempt (2, 3, …).
    pub attempt: Option<u32>,
    /// The secrets it was given, by variable name, exposed for assertions.
    pub secrets: Vec<(String, String)>,
    /// It failed, as scripted with [`FakeDeployTarget::fail_phase`].
    pub failed: bool,
}

/// Scripted failures, per environment and phase.
type PhaseFailures = HashMap<(String, Phase), VecDeque<String>>;

/// A deploy target that records every phase and fails on request. A backup answers with
/// the reference `backup-<n>` (n counts backups); every other phase succeeds unless told.
#[derive(Debug, Clone, Default)]
pub struct FakeDeployTarget {
    deploys: Arc<Mutex<Vec<RecordedDeploy>>>,
    takes: Arc<Mutex<Duration>>,
    failures: Arc<Mutex<PhaseFailures>>,
}

impl FakeDeployTarget {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every release so far (the `release` phase), in order: what ran where.
    pub fn deploys(&self) -> Vec<RecordedDeploy> {
        self.phases()
            .into_iter()
            .filter(|d| d.phase == Phase::Release)
            .collect()
    }

    /// Every phase so far, in order.
    pub fn phases(&self) -> Vec<RecordedDeploy> {
        lock(&self.deploys).clone()
    }

    /// The phases carried out for `env`, as words: `["backup", "migrate", "release"]`.
    pub fn phases_of(&self, env: &str) -> Vec<&'static str> {
        self.phases()
            .into_iter()
            .filter(|d| d.env == env)
            .map(|d| d.phase.as_str())
            .collect()
    }

    /// Releases to `env`, in order.
    pub fn deploys_to(&self, env: &str) -> Vec<RecordedDeploy> {
        self.deploys().into_iter().filter(|d| d.env == env).collect()
    }

    /// Makes every phase take `d` (on tokio's clock) before it finishes.
    pub fn take(&self, d: Duration) {
        *lock(&self.takes) = d;
    }

    /// Makes the next release to `env` fail with `reason`.
    pub fn fail_next(&self, env: &str, reason: &str) {
        self.fail_phase(env, Phase::Release, reason);
    }

    /// Makes the next `phase` for `env` fail with `reason`.
    pub fn fail_phase(&self, env: &str, phase: Phase, reason: &str) {
        lock(&self.failures)
            .entry((env.to_owned(), phase))
            .or_default()
            .push_back(reason.to_owned());
    }
}

#[async_trait]
impl DeployTarget for FakeDeployTarget {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        let failure = lock(&self.failures)
            .get_mut(&(request.env.to_owned(), request.phase))
            .and_then(VecDeque::pop_front);
        let backups = {
            let mut deploys = lock(&self.deploys);
            deploys.push(RecordedDeploy {
                phase: request.phase,
                env: request.env.to_owned(),
                run: request.run.to_string(),
                sha: request.sha.to_owned(),
                artifact: request.artifact.map(str::to_owned),
                backup: request.backup.map(str::to_owned),
                rolling_back: request.purpose.rolling_back().map(ToString::to_string),
                attempt: request.purpose.attempt(),
                secrets: request
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose_secret().to_owned()))
                    .collect(),
                failed: failure.is_some(),
            });
            deploys.iter().filter(|d| d.phase == Phase::Backup).count()
        };
        let takes = *lock(&self.takes);
        if !takes.is_zero() {
            tokio::time::sleep(takes).await;
        }
        if let Some(reason) = failure {
            return Err(DeployError::Failed {
                reason,
                output: format!("fake {} failed", request.phase),
            });
        }
        Ok(DeployReport {
            output: format!("fake {} of {} to {}", request.phase, request.sha, request.env),
            reference: (request.phase == Phase::Backup).then(|| format!("backup-{backups}")),
            skipped: false,
        })
    }
}

/// A health source answering from a script: a queue of readings, the last one repeating.
/// Healthy when nothing was scripted.
#[derive(Debug, Clone, Default)]
pub struct FakeHealth {
    readings: Arc<Mutex<VecDeque<Result<Health, String>>>>,
    checks: Arc<Mutex<u32>>,
}

impl FakeHealth {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a reading.
    pub fn then(&self, healthy: bool, detail: &str) -> &Self {
        lock(&self.readings).push_back(Ok(Health {
            healthy,
            detail: detail.to_owned(),
        }));
        self
    }

    /// Queues a fault of the source itself.
    pub fn then_fail(&self, error: &str) -> &Self {
        lock(&self.readings).push_back(Err(error.to_owned()));
        self
    }

    /// How many times the source was read.
    pub fn checks(&self) -> u32 {
        *lock(&self.checks)
    }
}

#[async_trait]
impl HealthSource for FakeHealth {
    async fn check(&self, _source: &crate::config::HealthSourceConfig) -> Result<Health, String> {
        *lock(&self.checks) += 1;
        let mut readings = lock(&self.readings);
        let reading = if readings.len() > 1 {
            readings.pop_front()
        } else {
            readings.front().cloned()
        };
        reading.unwrap_or_else(|| {
            Ok(Health {
                healthy: true,
                detail: "healthy".into(),
            })
        })
    }
}

// ---------------------------------------------------------------------------------------

type Answer = Result<ProbeResponse, String>;

/// An HTTP checker answering from a script: per URL, a queue of answers; the last one
/// repeats. Unknown URLs are refused.
#[derive(Debug, Clone, Default)]
pub struct FakeHttpChecker {
    answers: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
    probes: Arc<Mutex<Vec<Probe>>>,
}

impl FakeHttpChecker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an answer for `url`.
    pub fn answer(&self, url: &str, status: u16, body: &str) {
        lock(&self.answers)
            .entry(url.to_owned())
            .or_default()
            .push_back(Ok(ProbeResponse {
                status,
                body: body.to_owned(),
            }));
    }

    /// Forgets every queued answer for `url`.
    pub fn reset(&self, url: &str) {
        lock(&self.answers).remove(url);
    }

    /// Every request made, in order.
    pub fn probes(&self) -> Vec<Probe> {
        lock(&self.probes).clone()
    }
}

#[async_trait]
impl HttpChecker for FakeHttpChecker {
    async fn fetch(&self, probe: &Probe) -> Result<ProbeResponse, String> {
        lock(&self.probes).push(probe.clone());
        let mut answers = lock(&self.answers);
        let Some(queue) = answers.get_mut(&probe.url) else {
            return Err(format!("connection refused: {}", probe.url));
        };
        if queue.len() > 1 {
            queue.pop_front().expect("len > 1")
        } else {
            queue
                .front()
                .cloned()
                .unwrap_or_else(|| Err(format!("connection refused: {}", probe.url)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunId;

    fn key() -> StoreKey {
        StoreKey::run(&RunId::parse("shop-0123456789abcdef0123456789abcdef01234567").unwrap())
    }

    #[tokio::test]
    async fn store_has_conditional_write_semantics() {
        let store = MemoryStore::new();
        let v1 = store.create(&key(), Bytes::from_static(b"1")).await.unwrap();
        assert!(matches!(
            store.create(&key(), Bytes::from_static(b"x")).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let v2 = store.replace(&key(), Bytes::from_static(b"2"), &v1).await.unwrap();
        assert!(matches!(
            store.replace(&key(), Bytes::from_static(b"3"), &v1).await,
            Err(StoreError::Conflict(_))
        ));
        let got = store.get(&key()).await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (Bytes::from_static(b"2"), v2));
        store.fail_next("get", Fault::Unavailable);
        assert!(matches!(store.get(&key()).await, Err(StoreError::Unavailable(_))));
        assert!(store.get(&key()).await.is_ok(), "a fault is used once");
    }

    #[tokio::test]
    async fn a_planned_crash_stops_the_caller_at_its_nth_call_and_writes_nothing() {
        let store = MemoryStore::new();
        store.crash_at(1);
        let work = async {
            store.create(&key(), Bytes::from_static(b"1")).await.unwrap();
            store
                .replace(&key(), Bytes::from_static(b"2"), &Version("1".into()))
                .await
        };
        tokio::select! {
            _ = work => panic!("the second call must never return"),
            () = store.crashed() => {}
        }
        let got = store.get(&key()).await.unwrap().unwrap();
        assert_eq!(got.value, Bytes::from_static(b"1"), "the crashed write changed nothing");
        assert!(!store.cancel_crash(), "the crash was used");
        store.crash_at(5);
        assert!(store.cancel_crash());
        assert!(store.get(&key()).await.is_ok(), "a cancelled crash never happens");
    }

    #[tokio::test]
    async fn interleaving_lets_concurrent_callers_race_for_a_conditional_write() {
        let store = MemoryStore::new();
        let v1 = store.create(&key(), Bytes::from_static(b"1")).await.unwrap();
        store.interleave(true);
        // Both read version 1 before either writes: exactly one write wins.
        let key = key();
        let (a, b) = tokio::join!(
            store.replace(&key, Bytes::from_static(b"a"), &v1),
            store.replace(&key, Bytes::from_static(b"b"), &v1),
        );
        assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1, "{a:?} {b:?}");
    }

    #[tokio::test]
    async fn queue_redelivers_and_dead_letters() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let q = MemoryQueue::new(Arc::new(clock.clone())).with_max_receives(2);
        q.send(QueueName::Deploy, "a", Duration::ZERO).await.unwrap();
        let vis = Duration::from_secs(30);
        assert_eq!(q.receive(QueueName::Deploy, 10, vis).await.unwrap().len(), 1);
        assert!(
            q.receive(QueueName::Deploy, 10, vis).await.unwrap().is_empty(),
            "hidden while in flight"
        );
        clock.advance(SignedDuration::from_secs(31));
        let again = q.receive(QueueName::Deploy, 10, vis).await.unwrap();
        assert_eq!(again[0].receive_count, 2);
        clock.advance(SignedDuration::from_secs(31));
        assert!(q.receive(QueueName::Deploy, 10, vis).await.unwrap().is_empty());
        let dead = q.dead_letters().await.unwrap();
        assert_eq!((dead.len(), dead[0].body.as_str(), dead[0].receive_count), (1, "a", 2));
    }

    #[tokio::test]
    async fn stale_receipts_cannot_ack() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let q = MemoryQueue::new(Arc::new(clock.clone()));
        q.send(QueueName::Smoke, "a", Duration::ZERO).await.unwrap();
        let first = q
            .receive(QueueName::Smoke, 1, Duration::from_secs(1))
            .await
            .unwrap()
            .remove(0);
        clock.advance(SignedDuration::from_secs(2));
        let second = q
            .receive(QueueName::Smoke, 1, Duration::from_secs(1))
            .await
            .unwrap()
            .remove(0);
        assert!(matches!(
            q.ack(QueueName::Smoke, &first.receipt).await,
            Err(QueueError::StaleReceipt(_))
        ));
        assert!(matches!(
            q.extend(QueueName::Smoke, &first.receipt, Duration::from_secs(9)).await,
            Err(QueueError::StaleReceipt(_))
        ));
        q.extend(QueueName::Smoke, &second.receipt, Duration::from_secs(60))
            .await
            .unwrap();
        clock.advance(SignedDuration::from_secs(30));
        assert!(
            q.receive(QueueName::Smoke, 1, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty(),
            "extended"
        );
        q.ack(QueueName::Smoke, &second.receipt).await.unwrap();
        assert!(q.pending(QueueName::Smoke).is_empty());
    }
}

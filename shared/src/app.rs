//! The engine: slipway's dependencies in one place, and the one way runs change —
//! read, decide with the pure state machine, write conditionally, then send the commands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use bytes::Bytes;
use secrecy::SecretString;
use url::Url;

use crate::approvals::{self, TokenError};
use crate::config::{Config, PipelineConfig, PreviousSecret};
use crate::domain::{
    self, Command, EnvName, Environment, Ignored, Input, Lineage, NewRun, Outcome, ParamName, PipelineName, Run, RunId,
};
use crate::open_runs;
use crate::ports::{
    Clock, DeployTarget, HealthSource, HttpChecker, Notifier, Queue, QueueError, QueueName, SecretError, SecretStore,
    StateStore, StoreError, StoreKey, Version,
};
use crate::signature::{Retiring, Rotation};
use crate::views::run_index;

/// Knobs that tests turn down and production leaves alone.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long a received message stays hidden from other workers.
    pub visibility: Duration,
    /// How many times a conditional write is re-decided after losing a race.
    pub max_write_attempts: u32,
    /// The first pause before re-deciding after losing a write race; it doubles, with
    /// jitter. About one round trip of the store: the backend sets it
    /// ([`Backend::write_backoff`](crate::adapters::Backend::write_backoff)).
    pub write_backoff: Duration,
    /// The first pause before trying again while the store is unavailable; it quadruples.
    pub unavailable_backoff: Duration,
    /// How long past its own deadline a claimed stage may stay silent before it is
    /// declared abandoned.
    pub abandon_grace: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(60),
            max_write_attempts: 8,
            write_backoff: Duration::from_millis(20),
            unavailable_backoff: Duration::from_millis(100),
            abandon_grace: Duration::from_secs(60),
        }
    }
}

/// Everything a handler needs. Built once per process (or Lambda container) and shared.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub queue: Arc<dyn Queue>,
    pub secrets: Arc<dyn SecretStore>,
    pub clock: Arc<dyn Clock>,
    pub notifiers: Vec<Arc<dyn Notifier>>,
    pub deployer: Arc<dyn DeployTarget>,
    pub checker: Arc<dyn HttpChecker>,
    /// Where post-deploy bakes read health from.
    pub health: Arc<dyn HealthSource>,
    /// Where people reach slipway; links in notifications start here.
    pub public_url: Url,
    pub tuning: Tuning,
    /// Facts about the store that, once true, stay true, remembered so they are read once.
    pub seen: Seen,
    /// The release log's months this process wrote last, so the next release there does not
    /// read its month again.
    pub release_log: crate::views::release_log::LastWritten,
    /// The runs this process showed on approval pages, so the decision posted from one does
    /// not read its run again.
    pub shown_runs: ShownRuns,
}

/// The runs this process read to show an approval page, with the version each was read at:
/// the decision posted from that page (moments later, usually to the same process) starts
/// from the run as the page showed it instead of reading it again. The run is carried, not
/// trusted: a decision written over an old version is refused and the run read as usual,
/// and one the old run would ignore is decided again on the run as stored
/// ([`App::apply_from`]), so a run kept here only ever saves a read. What a page shows is
/// always read, never taken from here. At most [`SHOWN_RUNS_KEPT`], the least recent
/// forgotten first.
#[derive(Debug, Clone)]
pub struct ShownRuns(Arc<Mutex<lru::LruCache<RunId, Shown>>>);

/// A run as an approval page showed it, with the version it was read at; and the record of
/// the environment the approval is for, as the page read it too (with its version), when
/// it had been written: the deploy an approval queues carries it to its lease claim, which
/// writes over that version instead of reading the record again.
#[derive(Debug, Clone)]
pub struct Shown {
    pub run: Run,
    pub version: Version,
    pub environment: Option<(Environment, Version)>,
}

/// How many runs [`ShownRuns`] keeps: the approval pages a few approvers have open at once.
pub const SHOWN_RUNS_KEPT: std::num::NonZeroUsize = std::num::NonZeroUsize::new(16).expect("not zero");

impl Default for ShownRuns {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(lru::LruCache::new(SHOWN_RUNS_KEPT))))
    }
}

impl ShownRuns {
    /// Keeps what a page showed.
    pub fn keep(&self, shown: Shown) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(shown.run.id.clone(), shown);
    }

    /// The run `id` as a page of this process showed it, if it was kept; no longer kept
    /// after (a second decision from the same page reads the run).
    pub fn take(&self, id: &RunId) -> Option<Shown> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).pop(id)
    }
}

/// What this process has seen of the store that never becomes false again, so it is read
/// only until it is true: the marks the sweep sets once an older install's history is indexed.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    open_runs_indexed: Arc<AtomicBool>,
    views_indexed: Arc<AtomicBool>,
}

/// A mark that, once in the store, stays there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The index of unfinished runs holds every run made before it existed
    /// ([`StoreKey::open_runs_indexed`]).
    OpenRunsIndexed,
    /// The index of runs holds every run made before it existed ([`StoreKey::views_indexed`]).
    ViewsIndexed,
}

impl Seen {
    /// Whether `mark` is set: known without a read once this process has seen it.
    pub async fn is_set(&self, mark: Mark, store: &dyn StateStore) -> Result<bool, StoreError> {
        if self.flag(mark).load(Ordering::Relaxed) {
            return Ok(true);
        }
        let key = match mark {
            Mark::OpenRunsIndexed => StoreKey::open_runs_indexed(),
            Mark::ViewsIndexed => StoreKey::views_indexed(),
        };
        let set = store.get(&key).await?.is_some();
        if set {
            self.set(mark);
        }
        Ok(set)
    }

    /// Remembers that `mark` is set (this process just set it).
    pub fn set(&self, mark: Mark) {
        self.flag(mark).store(true, Ordering::Relaxed);
    }

    fn flag(&self, mark: Mark) -> &AtomicBool {
        match mark {
            Mark::OpenRunsIndexed => &self.open_runs_indexed,
            Mark::ViewsIndexed => &self.views_indexed,
        }
    }
}

/// Engine failures, by what the caller does about them.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A backing service is down or throttling. Retry later; HTTP callers answer 503.
    #[error("a backing service is unavailable; try again shortly")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Too many writers raced for the same run. Retry later.
    #[error("run {0} is being changed by others; try again shortly")]
    Contended(RunId),
    /// A stored run could not be read back: a bug or manual tampering. Tell an operator.
    #[error("stored run {key} is unreadable")]
    Corrupt {
        key: StoreKey,
        #[source]
        source: serde_json::Error,
    },
    /// A required secret does not exist: a configuration mistake. Tell an operator.
    #[error("secret parameter {0} is missing from the secret store")]
    MissingSecret(ParamName),
    /// The run's change was stored, but sending the work it started to the queues failed.
    /// The work waits in the run's outbox: the same request again (a redelivered webhook, a
    /// retried message) sends it at once, and the sweep sends it otherwise. Retry.
    #[error("run {run} was updated, but sending the work it started failed")]
    Unsent {
        run: RunId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl EngineError {
    /// A send that failed after `run` was written: the change stands, its work is unsent.
    pub(crate) fn unsent(self, run: &RunId) -> Self {
        match self {
            EngineError::Unavailable(source) => EngineError::Unsent {
                run: run.clone(),
                source,
            },
            other => other,
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Unavailable(Box::new(e))
    }
}

impl From<QueueError> for EngineError {
    fn from(e: QueueError) -> Self {
        EngineError::Unavailable(Box::new(e))
    }
}

impl From<SecretError> for EngineError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::NotFound(name) => EngineError::MissingSecret(name),
            other => EngineError::Unavailable(Box::new(other)),
        }
    }
}

/// What became of an event.
#[derive(Debug)]
pub enum Applied {
    /// The run changed and its commands were sent.
    Changed(Run),
    /// The event changed nothing; here is why, and the run as it stands.
    Ignored(Ignored, Run),
}

/// What became of a push.
#[derive(Debug)]
pub enum Opened {
    Created(Run),
    /// A run for this commit already existed (a redelivered webhook, or the same commit
    /// pushed again).
    Existing(Run),
}

impl App {
    /// The same slipway over another state store. What it remembers of its store (`seen`,
    /// `release_log`, `shown_runs`) starts empty: it says nothing of the other one.
    pub fn over_store(&self, store: Arc<dyn StateStore>) -> App {
        App {
            store,
            seen: Seen::default(),
            release_log: Default::default(),
            shown_runs: Default::default(),
            ..self.clone()
        }
    }

    /// Reads a run and the version it was read at.
    pub async fn load(&self, id: &RunId) -> Result<Option<(Run, Version)>, EngineError> {
        load_run(self.store.as_ref(), id).await
    }

    /// Every run, newest first; only those of `repo` if given.
    pub async fn list_runs(&self, repo: Option<&str>) -> Result<Vec<Run>, EngineError> {
        list_runs(self.store.as_ref(), repo).await
    }

    /// Opens a run for a pushed commit, once: a second push of the same commit finds the
    /// existing run and re-sends its outbox, in case the first attempt failed after writing.
    pub async fn open_run(&self, new: NewRun) -> Result<Opened, EngineError> {
        let mut run = domain::open(new, self.clock.now());
        let key = StoreKey::run(&run.id);
        // Git's order learned first, so no decision ever sees the run without its place; in
        // the same write the run gets its place in the pipeline's index of runs, which also
        // holds it in the index of unfinished runs until the sweep marks it there (see
        // `open_runs`). Indexed first: a run is never in the store without being in the
        // indexes.
        let seq = self.learn_lineage(&run).await?;
        run.seq = Some(seq);
        match self.store.create(&key, to_bytes(&run)).await {
            Ok(written) => {
                // Logged by the caller, which knows the delivery that opened it.
                self.dispatch_carrying(&run.outbox, Carrying::run(&run, &written))
                    .await
                    .map_err(|e| e.unsent(&run.id))?;
                Ok(Opened::Created(run))
            }
            Err(StoreError::AlreadyExists(_)) => {
                let (existing, _) = self
                    .load(&run.id)
                    .await?
                    .ok_or_else(|| EngineError::Contended(run.id.clone()))?;
                if existing.seq != Some(seq) {
                    // Pushed again after its place was forgotten: it keeps its first place.
                    run_index::forget(self.store.as_ref(), &self.tuning, &run.pipeline, &run.id, seq).await?;
                }
                self.dispatch(&domain::resendable(&existing)).await?;
                Ok(Opened::Existing(existing))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Applies one event to a run: read, decide, write if the run is still as read, send
    /// the commands. Losing a race re-reads and re-decides, with jittered backoff, a bounded
    /// number of times. `None` if there is no such run.
    pub async fn apply(&self, id: &RunId, input: impl Fn() -> Input) -> Result<Option<Applied>, EngineError> {
        Ok(self.apply_from(id, None, input).await?.map(|(applied, _)| applied))
    }

    /// [`App::apply`], deciding first from `known` — the run as this caller last read or wrote
    /// it, and that state's version — instead of reading it again: when nobody wrote since,
    /// that is one request fewer; when somebody did, the write is refused and the run is read
    /// as usual. Also returns the version of the state the answer stands on, so the caller
    /// can go on from it.
    pub async fn apply_from(
        &self,
        id: &RunId,
        known: Option<(Run, Version)>,
        input: impl Fn() -> Input,
    ) -> Result<Option<(Applied, Version)>, EngineError> {
        self.apply_carrying(id, known, None, input).await
    }

    /// [`App::apply_from`], whose commands about environment `env` of the run also carry
    /// `env`'s record as the caller read it (and its version): the deploy an approval queues
    /// claims the environment's lease over that version instead of reading the record again.
    pub async fn apply_carrying(
        &self,
        id: &RunId,
        known: Option<(Run, Version)>,
        environment: Option<(&EnvName, &Environment, &Version)>,
        input: impl Fn() -> Input,
    ) -> Result<Option<(Applied, Version)>, EngineError> {
        let Some((applied, version, unsent)) = self.apply_held(id, known, input).await? else {
            return Ok(None);
        };
        if let Applied::Changed(run) = &applied {
            let carrying = Carrying {
                run: Some((run, &version)),
                environment,
            };
            self.dispatch_carrying(&unsent, carrying)
                .await
                .map_err(|e| e.unsent(id))?;
        }
        Ok(Some((applied, version)))
    }

    /// [`App::apply_from`], except that the commands of the change are handed back unsent, for
    /// the caller to send once it has done what must come first (and to carry what that
    /// wrote). They must be sent: until they are, only the sweep's resending of a run's
    /// [resendable](domain::resendable) commands would.
    pub async fn apply_held(
        &self,
        id: &RunId,
        known: Option<(Run, Version)>,
        input: impl Fn() -> Input,
    ) -> Result<Option<(Applied, Version, Vec<Command>)>, EngineError> {
        let key = &StoreKey::run(id);
        let input = &input;
        // A carried state is decided on first, without waiting: when it turns out old (the
        // event is ignored on it, or its write is refused), the run is read as usual.
        if let Some(known) = known {
            match self.try_apply(id, key, known, input, true).await {
                Ok(done) => return Ok(done),
                Err(Race::Failed(e)) => return Err(e),
                Err(Race::Lost) => {}
            }
        }
        (|| async move {
            let Some(found) = self.load(id).await? else {
                return Ok(None);
            };
            self.try_apply(id, key, found, input, false).await
        })
        .retry(write_races(&self.tuning))
        .sleep(tokio::time::sleep)
        .when(|e| matches!(e, Race::Lost))
        .notify(|_, pause| tracing::debug!(run = %id, ?pause, "lost a write race; re-reading"))
        .await
        .map_err(|e| e.into_engine(|| EngineError::Contended(id.clone())))
    }

    /// One attempt of [`App::apply_held`] on the run as read (or carried) at `version`.
    async fn try_apply(
        &self,
        id: &RunId,
        key: &StoreKey,
        (run, version): (Run, Version),
        input: &impl Fn() -> Input,
        carried: bool,
    ) -> Result<Option<(Applied, Version, Vec<Command>)>, Race> {
        let (next, commands) = match domain::apply(&run, &input()) {
            Outcome::Applied { run, commands } => (*run, commands),
            Outcome::Ignored(why) if carried => {
                // Perhaps only because the carried state is old: decide on the stored one.
                tracing::debug!(run = %id, "ignored on the state carried over ({why}); re-reading");
                return Err(Race::Lost);
            }
            Outcome::Ignored(why) => return Ok(Some((Applied::Ignored(why, run), version, Vec::new()))),
        };
        // A finished run that moves again (a manual rollback of a release) goes back
        // into the index of open runs: before the write, and after it too, in case the
        // sweep dropped its marker in between (see `open_runs`).
        let reopened = run.status().is_finished() && !next.status().is_finished();
        if reopened {
            open_runs::mark(self.store.as_ref(), id, self.clock.now()).await?;
        }
        match self.store.replace(key, to_bytes(&next), &version).await {
            Ok(written) => {
                if !run.status().is_finished() && next.status().is_finished() {
                    crate::metrics::run_finished(next.status());
                }
                if reopened {
                    open_runs::mark(self.store.as_ref(), id, self.clock.now()).await?;
                    // The index said it had finished; it moves again.
                    run_index::refresh(self.store.as_ref(), &self.tuning, &next).await?;
                }
                Ok(Some((Applied::Changed(next), written, commands)))
            }
            Err(StoreError::Conflict(_)) if carried => {
                tracing::debug!(run = %id, "the run changed since it was carried over; re-reading");
                Err(Race::Lost)
            }
            Err(StoreError::Conflict(_)) => Err(Race::Lost),
            Err(e) => Err(Race::Failed(e.into())),
        }
    }

    /// Sends commands to their queues, one batch per queue.
    pub async fn dispatch(&self, commands: &[Command]) -> Result<(), EngineError> {
        self.dispatch_carrying(commands, Carrying::default()).await
    }

    /// [`App::dispatch`], each message about the carried run carrying it and the version it
    /// was just written at (and the environment's record, for a message about that
    /// environment), so its handler starts from them instead of reading them again (see
    /// [`Message`]).
    pub(crate) async fn dispatch_carrying(
        &self,
        commands: &[Command],
        carrying: Carrying<'_>,
    ) -> Result<(), EngineError> {
        let carrying = if self.queue.carries_runs() {
            carrying
        } else {
            Carrying::default()
        };
        for queue in QueueName::ALL {
            let bodies: Vec<String> = commands
                .iter()
                .filter(|c| queue_of(c) == queue)
                .map(|c| Message::encode(c, carrying))
                .collect();
            if !bodies.is_empty() {
                self.queue.send_many(queue, &bodies).await?;
            }
        }
        Ok(())
    }

    /// A record stored as JSON under `key`, and the version it was read at; the default
    /// record (and no version) when it was never written.
    pub(crate) async fn record<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &StoreKey,
    ) -> Result<(T, Option<Version>), EngineError> {
        read_record(self.store.as_ref(), key).await
    }

    /// Reads the record under `key`, lets `decide` change it, and writes it back if it is
    /// still as read: see [`update_record`].
    pub(crate) async fn update_record<T, R>(
        &self,
        key: &StoreKey,
        what: &str,
        decide: impl Fn(&mut T) -> R,
    ) -> Result<R, EngineError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + PartialEq,
    {
        update_record(self.store.as_ref(), &self.tuning, key, what, decide).await
    }

    /// `pipeline`'s record: its lineage, and the head of its index of runs.
    pub async fn pipeline_record(&self, pipeline: &PipelineName) -> Result<crate::views::PipelineRecord, EngineError> {
        Ok(crate::views::PipelineRecord::read(self.store.as_ref(), pipeline)
            .await?
            .0)
    }

    /// What slipway learned of `pipeline`'s git history: which of two commits is newer.
    pub async fn lineage(&self, pipeline: &PipelineName) -> Result<Lineage, EngineError> {
        Ok(self.record(&StoreKey::lineage(pipeline)).await?.0)
    }

    /// Learns that `run`'s pipeline's branch moved to its commit after its parents, gives it
    /// its place in the pipeline's index of runs (the same place again for a push delivered
    /// again) and keeps its entry there, in one conditional write. Writes only what is new.
    /// Pushes that arrive together share one write, and a full chunk of the index is written
    /// out once by whoever filled it ([`crate::views::group_commit`]).
    pub async fn learn_lineage(&self, run: &Run) -> Result<i64, EngineError> {
        // Pushes of the pipeline waiting for the record at the same time share the write.
        crate::views::group_commit::open(self, run).await
    }

    /// Reads a secret by name.
    pub async fn secret(&self, name: &ParamName) -> Result<SecretString, EngineError> {
        Ok(self.secrets.get(name).await?)
    }

    /// The secrets an inbound request may be signed with: the one under `current` and, while
    /// a rotation is configured, the previous one (read even after its `until`, so a request
    /// signed with it is logged as such when refused).
    pub async fn rotation(
        &self,
        current: &ParamName,
        previous: Option<&PreviousSecret>,
    ) -> Result<Rotation, EngineError> {
        let current = self.secret(current).await?;
        let previous = match previous {
            Some(p) => Some(Retiring {
                secret: self.secret(&p.param).await?,
                param: p.param.clone(),
                until: p.until,
            }),
            None => None,
        };
        Ok(Rotation { current, previous })
    }

    /// Checks an approval or rollback link with the key its key id names (a link without one:
    /// the key configured without an id). The outer error is the secret store's; the inner one
    /// is the link's fault, and an id no key is configured for is [`TokenError::UnknownKey`].
    pub async fn verify_link(
        &self,
        token: &str,
        expected: approvals::Action,
    ) -> Result<Result<approvals::ApprovalClaim, TokenError>, EngineError> {
        Ok(self
            .open_token::<approvals::ApprovalClaim>(token)
            .await?
            .and_then(|claim| {
                if claim.action == expected {
                    Ok(claim)
                } else {
                    Err(TokenError::WrongAction {
                        expected,
                        found: claim.action,
                    })
                }
            }))
    }

    /// Checks any token signed with the link-signing keys (approval, rollback and sign-in
    /// links, sessions) with the key its key id names, and parses its claim as a `T`. Errors
    /// as [`App::verify_link`]'s.
    pub async fn open_token<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<Result<T, TokenError>, EngineError> {
        let param = approvals::key_id(token)
            .and_then(|id| self.config.approvals.key_for(id.as_ref()).ok_or(TokenError::UnknownKey));
        let param = match param {
            Ok(param) => param,
            Err(e) => return Ok(Err(e)),
        };
        let key = self.secret(param).await?;
        Ok(approvals::open(&key, token))
    }

    /// Signs a claim with the current link-signing key, carrying its id.
    pub async fn seal_token<T: serde::Serialize>(&self, claim: &T) -> Result<String, EngineError> {
        let key = self.secret(&self.config.approvals.signing_key).await?;
        Ok(approvals::seal(&key, self.config.approvals.key_id.as_ref(), claim))
    }

    /// The pipeline a run belongs to, if it is still configured.
    pub fn pipeline_of(&self, run: &Run) -> Option<&PipelineConfig> {
        self.config.pipeline(&run.pipeline)
    }

    /// The page at `segments` under the public URL, below any path prefix it has (with a
    /// `public_url` of `https://ci.example.com/slipway`, `["runs", id]` is
    /// `https://ci.example.com/slipway/runs/<id>`). Each segment is percent-encoded as one path
    /// segment, so a value can never add a segment, a query or a fragment.
    pub fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.public_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        // `public_url` is an http(s) URL (checked when the configuration is read), which always
        // has a path to extend.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// An absolute link under the public URL for a fixed `path` of slipway's own (`/`,
    /// `/approvals`, `/runs/<id>?token=…`): [`App::url`] of its segments, with its query.
    /// `""` is the public URL without a trailing slash, for pages that append paths to it.
    pub fn link(&self, path: &str) -> String {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        if path.is_empty() && query.is_none() {
            return self.public_url.as_str().trim_end_matches('/').to_owned();
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut url = self.url(&segments);
        url.set_query(query);
        url.into()
    }
}

/// A record stored as JSON under `key`, and the version it was read at; the default record
/// (and no version) when it was never written.
pub async fn read_record<T: serde::de::DeserializeOwned + Default>(
    store: &dyn StateStore,
    key: &StoreKey,
) -> Result<(T, Option<Version>), EngineError> {
    match store.get(key).await? {
        None => Ok((T::default(), None)),
        Some(found) => {
            let record = serde_json::from_slice(&found.value).map_err(|source| EngineError::Corrupt {
                key: key.clone(),
                source,
            })?;
            Ok((record, Some(found.version)))
        }
    }
}

/// Reads the record under `key`, lets `decide` change it, and writes it back if it is still
/// as read (created if it was never written); a lost race reads and decides again, with
/// backoff. Nothing is written when `decide` leaves the record as it was. `what` names the
/// record in the error when others keep winning.
pub async fn update_record<T, R>(
    store: &dyn StateStore,
    tuning: &Tuning,
    key: &StoreKey,
    what: &str,
    decide: impl Fn(&mut T) -> R,
) -> Result<R, EngineError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + PartialEq,
{
    Ok(update_record_from(store, tuning, key, what, None, decide).await?.0)
}

/// A record as read or written, with the version of that state (`None`: never written).
pub type Carried<T> = (T, Option<Version>);

/// [`update_record`], deciding first from `known` (the record as this caller last read or
/// wrote it) instead of reading it again; a refused write reads it as usual. Returns what
/// `decide` said, and the record as it now stands with its version, to carry on from.
pub async fn update_record_from<T, R>(
    store: &dyn StateStore,
    tuning: &Tuning,
    key: &StoreKey,
    what: &str,
    known: Option<Carried<T>>,
    decide: impl Fn(&mut T) -> R,
) -> Result<(R, Carried<T>), EngineError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + PartialEq,
{
    let decide = &decide;
    // A carried record is decided on first, without waiting: when it turns out old (nothing
    // to change in it, or its write is refused), the record is read as usual.
    if let Some(known) = known {
        match try_record(store, key, known, decide, true).await {
            Ok(done) => return Ok(done),
            Err(Race::Failed(e)) => return Err(e),
            Err(Race::Lost) => {}
        }
    }
    (|| async move {
        let read = read_record::<T>(store, key).await?;
        try_record(store, key, read, decide, false).await
    })
    .retry(write_races(tuning))
    .sleep(tokio::time::sleep)
    .when(|e| matches!(e, Race::Lost))
    .notify(|_, pause| tracing::debug!(%key, ?pause, "lost a write race; re-reading"))
    .await
    .map_err(|e| e.into_engine(|| EngineError::Unavailable(format!("{what} is being changed by others").into())))
}

/// One attempt of [`update_record_from`] on the record as read (or carried).
async fn try_record<T, R>(
    store: &dyn StateStore,
    key: &StoreKey,
    (before, version): Carried<T>,
    decide: &impl Fn(&mut T) -> R,
    carried: bool,
) -> Result<(R, Carried<T>), Race>
where
    T: serde::Serialize + Clone + PartialEq,
{
    let mut after = before.clone();
    let decided = decide(&mut after);
    if after == before {
        if carried {
            // What was carried may be old: decide on the stored record.
            return Err(Race::Lost);
        }
        return Ok((decided, (after, version)));
    }
    let bytes = Bytes::from(serde_json::to_vec(&after).expect("a record always serialises"));
    let written = match &version {
        None => store.create(key, bytes).await,
        Some(version) => store.replace(key, bytes, version).await,
    };
    match written {
        Ok(version) => Ok((decided, (after, Some(version)))),
        Err(StoreError::Conflict(_) | StoreError::AlreadyExists(_)) => Err(Race::Lost),
        Err(e) => Err(Race::Failed(e.into())),
    }
}

/// How one attempt at a conditional write ended when it did not succeed: another writer got
/// there first (read again and retry), or something else failed (give up).
enum Race {
    Lost,
    Failed(EngineError),
}

impl Race {
    /// The engine's error: `lost` says what losing every race means.
    fn into_engine(self, lost: impl FnOnce() -> EngineError) -> EngineError {
        match self {
            Race::Lost => lost(),
            Race::Failed(e) => e,
        }
    }
}

impl From<EngineError> for Race {
    fn from(e: EngineError) -> Self {
        Race::Failed(e)
    }
}

/// The pauses between write races: `write_backoff`, doubling up to 2 s, each lengthened by a
/// random part of itself (up to as much again) so racing writers spread out; at most
/// `max_write_attempts` attempts in all.
fn write_races(tuning: &Tuning) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(tuning.write_backoff)
        .with_factor(2.0)
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .with_max_times(usize::try_from(tuning.max_write_attempts.saturating_sub(1)).unwrap_or(usize::MAX))
}

/// Reads a run and the version it was read at from any state store.
pub async fn load_run(store: &dyn StateStore, id: &RunId) -> Result<Option<(Run, Version)>, EngineError> {
    let key = StoreKey::run(id);
    let Some(found) = store.get(&key).await? else {
        return Ok(None);
    };
    let run = serde_json::from_slice(&found.value).map_err(|source| EngineError::Corrupt { key, source })?;
    Ok(Some((run, found.version)))
}

/// Every run in a state store, newest first; only those of `repo` if given.
pub async fn list_runs(store: &dyn StateStore, repo: Option<&str>) -> Result<Vec<Run>, EngineError> {
    let mut runs = Vec::new();
    for key in store.list(StoreKey::RUNS).await? {
        let Some(id) = key.run_id() else { continue };
        if let Some((run, _)) = load_run(store, &id).await?
            && repo.is_none_or(|r| run.repo.as_str().eq_ignore_ascii_case(r))
        {
            runs.push(run);
        }
    }
    runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
    Ok(runs)
}

/// A queue message: a command and, when its sender had just written the run it is about,
/// that run and the version of the write. The handler decides from the carried run and writes
/// over that version, so it reads the run only when somebody wrote it since (the write is
/// refused, and the run read as usual) — or when the message is delivered again, since a
/// redelivery's copy is likely old. A message about an environment may likewise carry that
/// environment's record as its sender just wrote it (a smoke check, the record the deploy
/// left, which the check's end gives the lease back in). Slipways before the fields ignore
/// them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Message {
    #[serde(flatten)]
    pub command: Command,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<CarriedRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<CarriedEnvironment>,
}

/// The run a [`Message`] carries, as written at `version`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CarriedRun {
    pub version: Version,
    pub run: Run,
}

/// The record of environment `env` (of the carried run's pipeline) a [`Message`] carries, as
/// written at `version`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CarriedEnvironment {
    pub env: EnvName,
    pub version: Version,
    pub record: Environment,
}

/// What the messages of one dispatch may carry (see [`Message`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Carrying<'a> {
    /// The run just written, and the version of that write.
    pub run: Option<(&'a Run, &'a Version)>,
    /// A record of an environment of that run's pipeline, as just written, and its version.
    pub environment: Option<(&'a EnvName, &'a Environment, &'a Version)>,
}

impl<'a> Carrying<'a> {
    /// Carrying `run` as written at `version`.
    pub fn run(run: &'a Run, version: &'a Version) -> Self {
        Self {
            run: Some((run, version)),
            environment: None,
        }
    }
}

/// What a [`Message`] hands its handler: the command, and what the message carried that is
/// the command's own (its run; its environment's record).
pub type Parts = (Command, Option<(Run, Version)>, Option<(Environment, Version)>);

/// The largest message body that carries its run: SQS takes 256 KiB per batch of messages,
/// and a run with a long history is read instead.
const CARRY_AT_MOST: usize = 48 * 1024;

impl Message {
    /// The body of `command`'s message, carrying the run if it is the command's, and the
    /// environment's record if the command is about that environment of that run, when small.
    pub fn encode(command: &Command, carrying: Carrying<'_>) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(flatten)]
            command: &'a Command,
            carried: CarryingRun<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            environment: Option<CarryingEnvironment<'a>>,
        }
        #[derive(serde::Serialize)]
        struct CarryingRun<'a> {
            version: &'a Version,
            run: &'a Run,
        }
        #[derive(serde::Serialize)]
        struct CarryingEnvironment<'a> {
            env: &'a EnvName,
            version: &'a Version,
            record: &'a Environment,
        }
        if let Some((run, version)) = carrying.run.filter(|(run, _)| command.run() == &run.id) {
            let environment = carrying
                .environment
                .filter(|(env, _, _)| command.env() == Some(*env))
                .map(|(env, record, version)| CarryingEnvironment { env, version, record });
            let body = serde_json::to_string(&Body {
                command,
                carried: CarryingRun { version, run },
                environment,
            })
            .expect("commands, runs and records always serialise");
            if body.len() <= CARRY_AT_MOST {
                return body;
            }
        }
        serde_json::to_string(command).expect("commands always serialise")
    }

    /// The command, and what the message carries that is the command's own: its run, and —
    /// only with its run — the record of the environment it is about.
    pub fn into_parts(self) -> Parts {
        let run = self
            .carried
            .filter(|c| &c.run.id == self.command.run())
            .map(|c| (c.run, c.version));
        let environment = self
            .environment
            .filter(|e| run.is_some() && self.command.env() == Some(&e.env))
            .map(|e| (e.record, e.version));
        (self.command, run, environment)
    }
}

/// The queue a command goes to.
pub fn queue_of(command: &Command) -> QueueName {
    match command {
        // The deploy queue carries everything that coordinates an environment.
        Command::Deploy { .. } | Command::Rollback { .. } | Command::Supersede { .. } => QueueName::Deploy,
        Command::Smoke { .. } | Command::Bake { .. } => QueueName::Smoke,
        Command::Notify(_) => QueueName::Notify,
    }
}

fn to_bytes(run: &Run) -> Bytes {
    Bytes::from(serde_json::to_vec(run).expect("a run always serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::run_index::tests::opened;

    fn deploy(run: &Run) -> Command {
        Command::Deploy {
            run: run.id.clone(),
            env: "staging".parse().unwrap(),
        }
    }

    #[test]
    fn a_message_carries_its_own_run_and_the_version_written() {
        let run = opened("shop", 1, 0);
        let version = Version("7".into());
        let body = Message::encode(&deploy(&run), Carrying::run(&run, &version));
        let message: Message = serde_json::from_str(&body).unwrap();
        let (command, carried, environment) = message.into_parts();
        assert_eq!(command, deploy(&run));
        assert_eq!(carried, Some((run.clone(), version.clone())));
        assert_eq!(environment, None);
        // Older slipways read the command and ignore what it carries.
        assert_eq!(serde_json::from_str::<Command>(&body).unwrap(), deploy(&run));
    }

    #[test]
    fn a_message_about_another_run_or_too_large_carries_nothing() {
        let run = opened("shop", 1, 0);
        let other = opened("shop", 2, 1);
        let version = Version("7".into());
        let body = Message::encode(&deploy(&other), Carrying::run(&run, &version));
        assert_eq!(body, serde_json::to_string(&deploy(&other)).unwrap());

        let mut long = run.clone();
        long.commit.message = "x".repeat(CARRY_AT_MOST);
        let body = Message::encode(&deploy(&long), Carrying::run(&long, &version));
        assert_eq!(body, serde_json::to_string(&deploy(&long)).unwrap());
    }

    #[test]
    fn a_bare_command_is_a_message_that_carries_nothing() {
        let run = opened("shop", 1, 0);
        let body = serde_json::to_string(&deploy(&run)).unwrap();
        let parts = serde_json::from_str::<Message>(&body).unwrap().into_parts();
        assert_eq!(parts, (deploy(&run), None, None));
    }

    #[test]
    fn a_message_about_an_environment_carries_its_record_with_its_run() {
        let run = opened("shop", 1, 0);
        let version = Version("7".into());
        let staging: EnvName = "staging".parse().unwrap();
        let production: EnvName = "production".parse().unwrap();
        let record = Environment::default();
        let record_version = Version("3".into());
        let carrying = Carrying {
            run: Some((&run, &version)),
            environment: Some((&staging, &record, &record_version)),
        };
        let smoke = |env: &EnvName| Command::Smoke {
            run: run.id.clone(),
            env: env.clone(),
        };

        let body = Message::encode(&smoke(&staging), carrying);
        let (_, carried, environment) = serde_json::from_str::<Message>(&body).unwrap().into_parts();
        assert_eq!(carried, Some((run.clone(), version.clone())));
        assert_eq!(environment, Some((record.clone(), record_version.clone())));

        // Another environment's command carries the run only.
        let body = Message::encode(&smoke(&production), carrying);
        let (_, carried, environment) = serde_json::from_str::<Message>(&body).unwrap().into_parts();
        assert!(carried.is_some());
        assert_eq!(environment, None);

        // A record that arrives without its run, or for another environment, is not used.
        let mut message: Message = serde_json::from_str(&Message::encode(&smoke(&staging), carrying)).unwrap();
        message.carried = None;
        assert_eq!(message.into_parts().2, None);
        let mut message: Message = serde_json::from_str(&Message::encode(&smoke(&production), carrying)).unwrap();
        message.environment = Some(CarriedEnvironment {
            env: staging.clone(),
            version: record_version,
            record,
        });
        assert_eq!(message.into_parts().2, None);
    }
}

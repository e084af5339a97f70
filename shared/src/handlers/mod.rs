//! Queue handlers: one per queue message. Each is idempotent — a redelivered or duplicated
//! message does nothing twice — because deploy and rollback work is claimed through the state
//! machine before it starts, a smoke check only reads (the deploy's result starts it, and a
//! second result is ignored), and each notice is marked as delivered by one conditional
//! create.

pub mod deploy;
pub mod envs;
pub mod notify;
pub mod retry;
pub mod smoke;

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};

use crate::app::{App, Applied, Carrying, EngineError, Message};
use crate::domain::{self, Actor, Command, EnvName, Environment, Event, Ignored, Input, RunId, StageKind, StageStatus};
use crate::ports::{QueueName, Version};

/// Why a message was not done. Either way it is not acked: it comes back after `retry_in`,
/// and after the queue's maximum receives it goes to the dead-letter store.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Not a slipway message, or one for the wrong queue, or about a run that does not exist.
    /// Retrying will not help; it will end in the dead-letter store.
    #[error("bad message: {0}")]
    BadMessage(String),
    /// Something transient failed. Try again later.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The work is in somebody else's hands until `after`; look again then.
    #[error("{reason}")]
    NotYet { after: Duration, reason: String },
    /// A notification channel failed transiently.
    #[error("notification channel failed: {0}")]
    Channel(String),
}

impl HandlerError {
    /// How long to wait before the message is delivered again.
    pub fn retry_in(&self, receive_count: u32) -> Duration {
        match self {
            HandlerError::NotYet { after, .. } => *after,
            _ => Duration::from_secs(2u64.saturating_pow(receive_count.min(8))),
        }
    }
}

/// The run a handler starts from and the version it was written at: as its message carried
/// it ([`Message::into_parts`] keeps only the run the command is about), or as the handler
/// read it. `None` when it has neither yet.
pub type Known = Option<(domain::Run, Version)>;

/// Handles one message from `queue`, delivered for the first time.
pub async fn handle(app: &App, queue: QueueName, body: &str) -> Result<(), HandlerError> {
    handle_delivery(app, queue, body, 1).await
}

/// Handles one message from `queue` on its `receive_count`th delivery. A first delivery
/// starts from the run the message carries (see [`Message`]); a redelivery reads it, since
/// its copy is likely old.
pub async fn handle_delivery(app: &App, queue: QueueName, body: &str, receive_count: u32) -> Result<(), HandlerError> {
    let message: Message =
        serde_json::from_str(body).map_err(|e| HandlerError::BadMessage(format!("not a slipway message: {e}")))?;
    let (command, carried, environment) = message.into_parts();
    let first = receive_count <= 1;
    let known = carried.filter(|_| first);
    let environment = environment.filter(|_| first);
    match (queue, command) {
        (QueueName::Deploy, Command::Deploy { run, env }) => deploy::handle(app, &run, &env, known, environment).await,
        (QueueName::Deploy, Command::Rollback { run, env }) => deploy::rollback(app, &run, &env, known).await,
        (QueueName::Deploy, Command::Supersede { run, env }) => {
            deploy::supersede(app, &run, &env, known).await.map(|_| ())
        }
        (QueueName::Smoke, Command::Smoke { run, env }) => smoke::handle(app, &run, &env, known, environment).await,
        (QueueName::Smoke, Command::Bake { run, env }) => smoke::bake(app, &run, &env, known).await,
        (QueueName::Notify, Command::Notify(notice)) => notify::handle(app, &notice, known).await,
        (queue, other) => Err(HandlerError::BadMessage(format!(
            "{other:?} does not belong on the {queue} queue"
        ))),
    }
}

/// The run a message is about: as the message carried it, else read; a message about no
/// run is a bad message.
async fn run_of(app: &App, run_id: &RunId, known: Known) -> Result<domain::Run, HandlerError> {
    Ok(known_run(app, run_id, known).await?.0)
}

/// A run and the version it was read at (or carried with), to carry into the handler's
/// first write.
async fn known_run(app: &App, run_id: &RunId, known: Known) -> Result<(domain::Run, Version), HandlerError> {
    if let Some(known) = known {
        return Ok(known);
    }
    match app.load(run_id).await? {
        Some(found) => Ok(found),
        None => Err(HandlerError::BadMessage(format!("run {run_id} does not exist"))),
    }
}

impl App {
    /// An input from slipway's own workers, stamped now.
    pub fn input(&self, actor: Actor, event: Event) -> Input {
        Input {
            at: self.clock.now(),
            actor,
            event,
        }
    }
}

/// The shared life of a claimed stage (a deploy, a rollback, or a smoke check an older
/// slipway queued): claim it through the state machine
/// — which only one delivery of a message can do — do the work, record the result. A stage
/// another worker claimed is left alone until its deadline; past that it is failed loudly,
/// since nobody knows whether the work happened.
async fn claim_and_run<W, F>(
    app: &App,
    known: Known,
    run_id: &RunId,
    kind: StageKind,
    env: &EnvName,
    work: W,
) -> Result<Option<Recorded>, HandlerError>
where
    W: FnOnce(domain::Run) -> F,
    F: Future<Output = Event>,
{
    let claim = match kind {
        StageKind::Deploy => Event::DeployStarted { env: env.clone() },
        StageKind::Rollback => Event::RollbackStarted { env: env.clone() },
        StageKind::Bake => Event::BakeStarted { env: env.clone() },
        _ => Event::SmokeStarted { env: env.clone() },
    };
    let (run, version) = match app
        .apply_from(run_id, known, || app.input(Actor::Slipway, claim.clone()))
        .await?
    {
        None => return Err(HandlerError::BadMessage(format!("run {run_id} does not exist"))),
        // The claim itself may end the stage (a deploy refusing a different artifact).
        Some((Applied::Changed(run), _))
            if run
                .stage(kind, Some(env))
                .is_some_and(|s| s.status != StageStatus::Running) =>
        {
            return Ok(None);
        }
        Some((Applied::Changed(run), version)) => (run, version),
        Some((
            Applied::Ignored(
                Ignored::AlreadyDone {
                    status: StageStatus::Running,
                    ..
                },
                run,
            ),
            _,
        )) => {
            return still_running(app, &run, kind, env).await.map(|()| None);
        }
        Some((Applied::Ignored(why, run), _)) => {
            tracing::info!(run = %run_id, %env, stage = kind.label(), "nothing to do: {why}");
            // The earlier delivery may have written state and then failed to send.
            app.dispatch(&domain::resendable(&run)).await?;
            return Ok(None);
        }
    };
    // The result is written over the claim's own write, unless someone wrote in between.
    run_and_record(app, (run, version), kind, env, work).await
}

/// Does a started stage's `work` and records its result over `known` (the run as the caller
/// last wrote or read it, and its version), re-deciding if someone wrote in between: the end
/// of [`claim_and_run`], and all of a smoke check, which its deploy's result starts.
async fn run_and_record<W, F>(
    app: &App,
    (run, version): (domain::Run, Version),
    kind: StageKind,
    env: &EnvName,
    work: W,
) -> Result<Option<Recorded>, HandlerError>
where
    W: FnOnce(domain::Run) -> F,
    F: Future<Output = Event>,
{
    let run_id = run.id.clone();
    let finished = work(run.clone()).await;
    let recorded = record_held(app, &run_id, finished, Some((run, version))).await?;
    if let Some(recorded) = &recorded {
        crate::metrics::stage_finished(&recorded.run, kind, env);
    }
    Ok(recorded)
}

/// A result written, with the commands it gave still to send ([`Recorded::send`]), so the
/// environment's record is brought up to date first and their messages can carry it.
#[derive(Debug)]
pub(crate) struct Recorded {
    /// The run as it stands after the result, and its version.
    pub run: domain::Run,
    pub version: Version,
    unsent: Vec<Command>,
}

impl Recorded {
    /// Sends the result's commands, carrying the run, and `environment`'s record as written
    /// at its version to a command about that environment.
    ///
    /// Superseding at an approval gate is done here instead of sent to the deploy queue: it
    /// only reads and writes runs, and reads the records every queue worker may, so its
    /// message would only cost a request more per run. If it fails, the handler fails: the
    /// redelivered message finds the result written and sends all its commands, superseding
    /// included, to their queues ([`domain::resendable`]).
    pub async fn send(
        &self,
        app: &App,
        environment: Option<(&EnvName, &Environment, &Version)>,
    ) -> Result<(), HandlerError> {
        let mut rewrote_run = false;
        for command in &self.unsent {
            if let Command::Supersede { run, env } = command {
                let known = (*run == self.run.id).then(|| (self.run.clone(), self.version.clone()));
                // Boxed: superseding records results of its own, which are sent through here.
                rewrote_run |= Box::pin(deploy::supersede(app, run, env, known)).await?;
            }
        }
        let unsent: Vec<Command> = self
            .unsent
            .iter()
            .filter(|c| !matches!(c, Command::Supersede { .. }))
            .cloned()
            .collect();
        // A run superseding rewrote (it gave way at the gate) is not carried as it was: the
        // approval notice's handler reads it, and does not ask for an approval no longer
        // pending.
        let carrying = Carrying {
            run: (!rewrote_run).then_some((&self.run, &self.version)),
            environment,
        };
        app.dispatch_carrying(&unsent, carrying)
            .await
            .map_err(|e| HandlerError::Engine(e.unsent(&self.run.id)))
    }
}

/// Records a stage's result. Lost races are re-decided inside `apply`; an unreachable store
/// is retried here a few times before the message is left to the queue.
pub(crate) async fn record(app: &App, run_id: &RunId, event: Event) -> Result<Option<domain::Run>, HandlerError> {
    record_from(app, run_id, event, None).await
}

/// [`record`], starting from `known` (the run as the handler last wrote it) instead of
/// reading it again. Returns the run as it stands after the result, if there is one.
pub(crate) async fn record_from(
    app: &App,
    run_id: &RunId,
    event: Event,
    known: Known,
) -> Result<Option<domain::Run>, HandlerError> {
    let Some(recorded) = record_held(app, run_id, event, known).await? else {
        return Ok(None);
    };
    recorded.send(app, None).await?;
    Ok(Some(recorded.run))
}

/// [`record_from`], handing the result's commands back unsent ([`Recorded::send`]).
async fn record_held(
    app: &App,
    run_id: &RunId,
    event: Event,
    mut known: Known,
) -> Result<Option<Recorded>, HandlerError> {
    // While the store is unavailable: 4 attempts, waiting 1, 4 then 16 unavailable backoffs.
    let backoff = ExponentialBuilder::new()
        .with_min_delay(app.tuning.unavailable_backoff)
        .with_factor(4.0)
        .without_max_delay()
        .with_max_times(3);
    let event = &event;
    let applied = (|| {
        // The carried state is for the first attempt only.
        let carried = known.take();
        // Boxed: the retried future nests apply_held's own retries, and a debug build's
        // stack (2 MiB on a tokio worker) would not hold both.
        async move { Box::pin(app.apply_held(run_id, carried, || app.input(Actor::Slipway, event.clone()))).await }
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(|e| matches!(e, EngineError::Unavailable(_)))
    .notify(|e, pause| tracing::warn!(run = %run_id, error = %e, ?pause, "could not record a result; retrying"))
    .await?;
    let Some((applied, version, unsent)) = applied else {
        return Ok(None);
    };
    let run = match applied {
        Applied::Ignored(why, run) => {
            tracing::warn!(run = %run_id, "result not recorded: {why}");
            run
        }
        Applied::Changed(run) => run,
    };
    Ok(Some(Recorded { run, version, unsent }))
}

pub fn stage_budget(app: &App, run: &domain::Run, kind: StageKind, env: &EnvName) -> Duration {
    let environment = app.pipeline_of(run).and_then(|p| p.environment(env));
    let budget = match kind {
        StageKind::Deploy => environment.map(|e| e.deploy.timeout().unsigned_abs()),
        StageKind::Smoke => {
            environment.and_then(|e| e.smoke.iter().map(|c| (c.deadline + c.timeout).unsigned_abs()).max())
        }
        StageKind::Bake => app
            .pipeline_of(run)
            .and_then(|p| p.environment(env))
            .and_then(|e| e.bake.as_ref())
            .map(|b| (b.duration + b.interval * 2).unsigned_abs()),
        // A rollback runs at most three phases and the verify checks.
        StageKind::Rollback => environment.map(|e| e.deploy.timeout().unsigned_abs() * 3),
        StageKind::Build | StageKind::Approval => None,
    };
    budget.unwrap_or(Duration::from_secs(60))
}

/// When a claimed stage whose worker went silent is given up on: its start, plus its
/// budget, plus the grace period. `None` if the stage is not claimed.
pub fn give_up_at(app: &App, run: &domain::Run, kind: StageKind, env: &EnvName) -> Option<jiff::Timestamp> {
    let stage = run
        .stage(kind, Some(env))
        .filter(|s| s.status == StageStatus::Running)?;
    let started = stage.started_at.unwrap_or(run.updated_at);
    let wait = jiff::SignedDuration::try_from(stage_budget(app, run, kind, env) + app.tuning.abandon_grace).ok()?;
    started.checked_add(wait).ok()
}

/// Fails a claimed stage whose worker vanished: nobody knows whether its work happened, so
/// it is never redone — a person is told to check. Smoke checks are checked again whenever
/// their message comes back; one failed here is one that no check reported by its deadline.
pub async fn abandon(app: &App, run: &domain::Run, kind: StageKind, env: &EnvName) -> Result<(), HandlerError> {
    let reason = match kind {
        StageKind::Smoke => format!(
            "no smoke check of {} reported by its deadline (its worker stopped, or its message went to the dead letters); whether {env} works is unknown — check it by hand",
            run.sha.short()
        ),
        _ => format!(
            "the worker stopped without reporting; whether the {} of {} happened is unknown — check {env} by hand",
            kind.label(),
            run.sha.short()
        ),
    };
    record(
        app,
        &run.id,
        Event::StageAbandoned {
            kind,
            env: env.clone(),
            reason,
        },
    )
    .await
    .map(|_| ())
}

async fn still_running(app: &App, run: &domain::Run, kind: StageKind, env: &EnvName) -> Result<(), HandlerError> {
    let now = app.clock.now();
    match give_up_at(app, run, kind, env) {
        Some(at) if now < at => Err(HandlerError::NotYet {
            after: now.duration_until(at).unsigned_abs().max(Duration::from_secs(1)),
            reason: format!("{} for {env} is being worked on; giving it until {at}", kind.label()),
        }),
        _ => abandon(app, run, kind, env).await,
    }
}

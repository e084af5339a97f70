//! Environment records in the state store: the lease one run holds while it works on an
//! environment, the line of waiting runs, and what the environment runs. Every change is a
//! conditional write, re-decided on a lost race, so two runs never both hold a lease.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::app::{App, Carried, EngineError, update_record_from};
use crate::domain::{Claim, Command, EnvName, EnvOutcome, Environment, Lineage, PipelineName, Run, RunId};
use crate::ports::{StoreKey, Version};
use crate::views::group_commit::{self, Lines};
use crate::views::release_log;
use crate::views::run_index::PipelineRecord;

/// How long a lease lasts without renewal.
pub const LEASE_TTL: SignedDuration = SignedDuration::from_mins(10);

/// How often a worker renews the lease while it works.
pub const LEASE_RENEW: Duration = Duration::from_secs(120);

impl App {
    /// An environment's record and the version it was read at (`None`: never written).
    pub async fn environment(
        &self,
        pipeline: &PipelineName,
        env: &EnvName,
    ) -> Result<(Environment, Option<Version>), EngineError> {
        self.record(&StoreKey::environment(pipeline, env)).await
    }

    /// Reads an environment's record, lets `decide` change it, and writes it back if it is
    /// still as read; a lost race reads and decides again. Nothing is written when
    /// `decide` leaves the record as it was.
    pub async fn update_environment<R>(
        &self,
        pipeline: &PipelineName,
        env: &EnvName,
        decide: impl Fn(&mut Environment) -> R,
    ) -> Result<R, EngineError> {
        let key = StoreKey::environment(pipeline, env);
        let _turn = turn(self, &key).await;
        self.update_record(&key, &format!("environment {pipeline}/{env}"), decide)
            .await
    }
}

/// Settling compares commits and the lineage was not read yet.
#[derive(Debug)]
struct NeedsLineage;

/// What a deploy carries from its lease claim to the rest of its work instead of reading
/// it again: the environment's record as the claim left it, and the pipeline's record.
#[derive(Debug, Default)]
pub struct Carry {
    pub environment: Option<Carried<Environment>>,
    /// The pipeline's record (its lineage, and its index's head), as the claim read it: what
    /// settling compares commits by, and what logging the release needs to find the runs it
    /// ships.
    pub head: Option<PipelineRecord>,
}

/// `run` asks for `env`'s lease to deploy there (newer-first rules apply), deciding first on
/// `known`, the record as someone read it (and its version), when given: a record written
/// since makes the write fail and the record read. Also hands back what it read and wrote,
/// so the deploy needs no second read of them (the environment's current release is the one
/// the deploy replaces). Claims of the environment that this process makes at the same time
/// share one write (see [`CLAIMS`]).
pub async fn claim(
    app: &App,
    run: &Run,
    env: &EnvName,
    known: Option<(Environment, Version)>,
) -> Result<(Claim, Carry), EngineError> {
    let now = app.clock.now();
    let head = app.pipeline_record(&run.pipeline).await?;
    let key = StoreKey::environment(&run.pipeline, env);
    let what = format!("environment {}/{env}", run.pipeline);
    let asking = Arc::new(Asking {
        run: run.id.clone(),
        opened_at: run.created_at,
        // How many times a worker started this deploy: a retry's claim is a new attempt.
        attempt: run
            .stage(crate::domain::StageKind::Deploy, Some(env))
            .map_or(0, |s| s.attempts),
        now,
        head,
    });
    let line = group_commit::line(&CLAIMS, app, &key);
    let (claim, record) = match known {
        // A record carried from elsewhere is decided on alone: its version is its own.
        Some((record, version)) => {
            let _turn = line.turn().await;
            update_record_from(
                app.store.as_ref(),
                &app.tuning,
                &key,
                &what,
                Some((record, Some(version))),
                |record: &mut Environment| asking.claim(record),
            )
            .await?
        }
        None => {
            line.together(&asking, |claims: Vec<Arc<Asking>>| {
                let (key, what) = (&key, &what);
                async move {
                    let (decided, written) = update_record_from(
                        app.store.as_ref(),
                        &app.tuning,
                        key,
                        what,
                        None,
                        |record: &mut Environment| claims.iter().map(|c| c.claim(record)).collect::<Vec<_>>(),
                    )
                    .await?;
                    Ok(decided.into_iter().map(|claim| (claim, written.clone())).collect())
                }
            })
            .await?
        }
    };
    // The claim's own again once decided (a copy only if it were still shared).
    let head = Arc::try_unwrap(asking).map_or_else(|shared| shared.head.clone(), |asking| asking.head);
    Ok((
        claim,
        Carry {
            environment: Some(record),
            head: Some(head),
        },
    ))
}

/// A claim of an environment's lease, waiting its turn (see [`CLAIMS`]).
#[derive(Debug)]
struct Asking {
    run: RunId,
    opened_at: Timestamp,
    attempt: u32,
    now: Timestamp,
    /// The pipeline's record, for its lineage: handed back to the claim once decided.
    head: PipelineRecord,
}

impl Asking {
    fn claim(&self, record: &mut Environment) -> Claim {
        record.claim(
            &self.run,
            self.opened_at,
            self.attempt,
            self.now,
            LEASE_TTL,
            &self.head.lineage,
        )
    }
}

/// What a claim came to, and the record as the write that decided it left it.
type Claimed = (Claim, Carried<Environment>);

/// Within one process, the writers of one environment's record take turns, and the claims
/// that wait together share one write ([`group_commit::Line`]).
///
/// In a burst of pushes every run's deploy claims the same record: each registers in the
/// line of waiting runs or finds itself superseded. Racing one another they lost most of
/// their writes (about 500 lost races for 500 runs in the engine benchmark), re-read and
/// backed off, and the deploy settling the record — freeing the lease for the next release —
/// lost with them. Now the claims waiting when the record is free are decided one after the
/// other on the record as read, in one conditional write, by whichever of them gets the turn
/// first; a settle, a renewal or any other change of the record waits for that one write at
/// most, never for a race. Across processes (Lambda containers) the conditional write still
/// decides, as before.
static CLAIMS: Lines<Arc<Asking>, Claimed> = LazyLock::new(Default::default);

/// The turn to write `key`, an environment's record, when no other writer of this process
/// has it: held until dropped.
async fn turn(app: &App, key: &StoreKey) -> tokio::sync::OwnedMutexGuard<()> {
    group_commit::line(&CLAIMS, app, key).turn().await
}

/// `run` asks for `env`'s lease to roll it back: no newer-first rule, only the lease. If
/// another run's release reached `env` since the rollback was decided on
/// ([`still_as_decided`]), the rollback is overtaken instead (`Claim::Superseded`, the
/// record left as it was): going back now would undo that release too. Decided in the
/// claim's write, so no release can come between the look and the lease.
pub async fn claim_for_rollback(app: &App, run: &Run, env: &EnvName) -> Result<Claim, EngineError> {
    let now = app.clock.now();
    let as_decided = still_as_decided(run, env);
    app.update_environment(&run.pipeline, env, |record| {
        if let Some(operator) = record.operator_at(now) {
            return Claim::Wait {
                holder: crate::domain::environment::Holder::Operator {
                    by: operator.by.clone(),
                    sha: operator.sha.clone(),
                },
                until: operator.expires_at,
                overtaken: Vec::new(),
            };
        }
        match &record.lease {
            Some(lease) if lease.run != run.id && lease.expires_at > now => Claim::Wait {
                holder: crate::domain::environment::Holder::Run(lease.run.clone()),
                until: lease.expires_at,
                overtaken: Vec::new(),
            },
            // A rollback puts back what ran; it does not compete with deploys, so only the
            // lease itself counts, not the newer-first rules of `claim`.
            _ => {
                let overtaking = record
                    .current
                    .as_ref()
                    .filter(|c| as_decided.as_ref().is_some_and(|runs| !runs.contains(&c.run)));
                if let Some(current) = overtaking {
                    return Claim::Superseded {
                        by: current.run.clone(),
                    };
                }
                record.waiting.retain(|w| w.run != run.id);
                let acquired_at = record
                    .lease
                    .as_ref()
                    .filter(|l| l.run == run.id)
                    .map_or(now, |l| l.acquired_at);
                record.lease = Some(crate::domain::Lease {
                    run: run.id.clone(),
                    opened_at: run.created_at,
                    acquired_at,
                    expires_at: now.checked_add(LEASE_TTL).unwrap_or(jiff::Timestamp::MAX),
                });
                Claim::Granted
            }
        }
    })
    .await
}

/// The runs whose release may be what `env` runs when `run`'s queued rollback there claims
/// the lease, if nothing happened there since the rollback was decided on; any other run's
/// release came since, and overtakes the rollback. One asked for by hand was asked of the
/// run `env` ran then: only `run` itself. An automatic one follows `run`'s own deploy, which
/// took the lease over the release it goes back to (its plan's `to`) and may have been
/// recorded over it: `run` or that release. Another run's release can only have come after
/// `run`'s lease ran out. (`None`: no rollback plan, nothing to overtake.)
fn still_as_decided(run: &Run, env: &EnvName) -> Option<Vec<RunId>> {
    let plan = run
        .stage(crate::domain::StageKind::Rollback, Some(env))?
        .rollback
        .as_ref()?;
    let mut runs = vec![run.id.clone()];
    if !plan.manual {
        runs.extend(plan.to.as_ref().map(|to| to.run.clone()));
    }
    Some(runs)
}

/// Runs `work` while renewing `run`'s lease on `env` every [`LEASE_RENEW`].
pub async fn holding<F: Future>(app: &App, pipeline: &PipelineName, run: &RunId, env: &EnvName, work: F) -> F::Output {
    renewing(
        app,
        pipeline,
        env,
        run.as_ref(),
        |record, now| record.renew(run, now, LEASE_TTL),
        work,
    )
    .await
}

/// Runs `work` while calling `renew` on `env`'s record every [`LEASE_RENEW`]: a run's lease
/// ([`holding`]) or an operator's ([`crate::manual_deploy`]). `holder` names it in the log.
pub async fn renewing<F: Future>(
    app: &App,
    pipeline: &PipelineName,
    env: &EnvName,
    holder: &str,
    renew: impl Fn(&mut Environment, Timestamp) -> bool,
    work: F,
) -> F::Output {
    let mut work = std::pin::pin!(work);
    // The first renewal is one period from now, without awaiting an immediate first tick
    // (which would hold every deploy up until the timer's next millisecond tick).
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + LEASE_RENEW, LEASE_RENEW);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let now = app.clock.now();
                match app.update_environment(pipeline, env, |record| renew(record, now)).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(holder, %env, "lost the environment's lease while working"),
                    Err(e) => tracing::warn!(holder, %env, error = %e, "could not renew the environment's lease"),
                }
            }
        }
    }
}

/// Brings `env`'s record up to date with `run`: what it runs now, and — once the run's
/// work there is over — the lease given up and the newest waiting run woken. Safe to call
/// any number of times.
pub async fn settle(app: &App, run_id: &RunId, env: &EnvName) -> Result<(), EngineError> {
    settle_from(app, run_id, env, None, Carry::default()).await.map(drop)
}

/// [`settle`], from the run as the handler last wrote it and what it carried from its claim,
/// instead of reading them again (a refused write reads the record as usual). Returns the
/// environment's record as it now stands, to carry on from (`None`: there is no such run).
pub async fn settle_from(
    app: &App,
    run_id: &RunId,
    env: &EnvName,
    run: Option<&Run>,
    carry: Carry,
) -> Result<Option<Carried<Environment>>, EngineError> {
    let loaded;
    let run = match run {
        Some(run) => run,
        None => match app.load(run_id).await? {
            Some((run, _)) => {
                loaded = run;
                &loaded
            }
            None => return Ok(None),
        },
    };
    let outcome = outcome_of(run, env);
    let key = StoreKey::environment(&run.pipeline, env);
    let what = format!("environment {}/{env}", run.pipeline);
    // The lineage is read only if settling compares commits (see `settle_compares`): first
    // without it, then — if the record turns out to need it — with it.
    let carry_head = carry.head;
    let mut read_lineage: Option<Lineage> = None;
    let mut known = carry.environment;
    let turn = turn(app, &key).await;
    let (wake, released, record) = loop {
        let (decided, state) = update_record_from(
            app.store.as_ref(),
            &app.tuning,
            &key,
            &what,
            known.take(),
            |record: &mut Environment| {
                let before = record.current.clone();
                let lineage = read_lineage.as_ref().or(carry_head.as_ref().map(|head| &head.lineage));
                let wake = match lineage {
                    Some(lineage) => record.settle(&run.id, &outcome, lineage),
                    None if record.settle_compares(&run.id, &outcome) => return Err(NeedsLineage),
                    None => record.settle(&run.id, &outcome, &Lineage::default()),
                };
                Ok((wake, record.current != before))
            },
        )
        .await?;
        match decided {
            Ok((wake, released)) => break (wake, released, state),
            Err(NeedsLineage) => {
                read_lineage = Some(app.lineage(&run.pipeline).await?);
                known = Some(state);
            }
        }
    };
    drop(turn);
    // The release log takes a release as the record does, and a failure when the run found
    // one; the sweep logs again what a failed write here left out, so it never holds up a
    // deploy.
    if (released || release_log::facts(run, env).failed_at.is_some())
        && let Err(e) = release_log::record(app, run, env, &record.0, carry_head.as_ref()).await
    {
        tracing::warn!(run = %run.id, %env, error = %e, "could not write the release log; the sweep writes it later");
    }
    if let Some(next) = wake {
        tracing::info!(run = %next, %env, "environment free; waking the next run in line");
        // The others in line are woken too: each is older than the next, so its claim finds
        // itself superseded at once, instead of when it would have looked again.
        let mut wake = vec![Command::Deploy {
            run: next.clone(),
            env: env.clone(),
        }];
        wake.extend(
            record
                .0
                .waiting
                .iter()
                .filter(|w| w.run != next)
                .map(|w| Command::Deploy {
                    run: w.run.clone(),
                    env: env.clone(),
                }),
        );
        app.dispatch(&wake).await?;
    }
    Ok(Some(record))
}

/// What `run`'s work in `env` came to.
fn outcome_of(run: &Run, env: &EnvName) -> EnvOutcome {
    use crate::domain::{StageKind, StageStatus};
    let deploy = run.stage(StageKind::Deploy, Some(env));
    // While its rollback is under way, the environment runs the run's release (the rollback
    // has not started, or died before its release phase) or what the rollback puts back:
    // `current_release_of` names neither, and the run stays in doubt until the rollback's
    // own settle says which. The sweep frees the lease of a rollback whose worker vanished
    // and must not forget that the run's release may still be running.
    let rolling_back = run
        .stage(StageKind::Rollback, Some(env))
        .is_some_and(|s| !s.status.is_terminal());
    EnvOutcome {
        release: current_release_of(run, env),
        busy: run.busy_in(env),
        // A deploy that never ran did not release; one that ended with its phases recorded
        // says whether it did. One still running, or that failed with no phases recorded
        // (abandoned by a vanished worker), may have released. So may an earlier attempt of
        // one that has not run again yet (a retry queued, waiting or superseded): the stage
        // no longer says how that attempt ended, and its mark, if still there, is kept.
        known: !rolling_back
            && deploy.is_none_or(|s| match s.status {
                StageStatus::Pending | StageStatus::Queued | StageStatus::Skipped | StageStatus::Superseded => {
                    s.attempts == 0
                }
                StageStatus::Running => false,
                _ => !s.phases.is_empty(),
            }),
    }
}

/// What `env` runs because of `run`: the release a successful rollback put back; else its
/// own release, once its deploy there succeeded — also after a rollback that had nothing to
/// redeploy (the backup restored, the code left as it was) or that failed. Nothing while a
/// rollback is under way, or for one called off because a newer release came first.
fn current_release_of(run: &Run, env: &EnvName) -> Option<crate::domain::Release> {
    use crate::domain::{StageKind, StageStatus};
    let rollback = run.stage(StageKind::Rollback, Some(env));
    match rollback.map(|stage| (stage.status, stage.rollback.as_ref().and_then(|p| p.to.clone()))) {
        Some((StageStatus::Succeeded, Some(to))) => Some(to),
        None | Some((StageStatus::Succeeded | StageStatus::Failed, _)) => run.release_in(env),
        Some(_) => None,
    }
}

/// Frees leases whose holder is done, gone, or silent past expiry, and wakes who waits.
/// Returns how many leases it freed.
pub async fn sweep(app: &App) -> Result<usize, EngineError> {
    let now = app.clock.now();
    let mut freed = 0;
    for key in app.store.list(StoreKey::ENVIRONMENTS).await? {
        let Some((pipeline, env)) = key
            .as_str()
            .strip_prefix(StoreKey::ENVIRONMENTS)
            .and_then(|rest| rest.strip_suffix(".json"))
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(p, e)| Some((PipelineName::parse(p).ok()?, EnvName::parse(e).ok()?)))
        else {
            continue;
        };
        let (record, _) = app.environment(&pipeline, &env).await?;
        let Some(lease) = record.lease else { continue };
        let holder = app.load(&lease.run).await?.map(|(run, _)| run);
        let stale = lease.expires_at <= now || holder.as_ref().is_none_or(|run| !run.busy_in(&env));
        if !stale {
            continue;
        }
        let lineage = app.lineage(&pipeline).await?;
        // What the holder did here is recorded before its lease goes, so a release whose
        // worker died before settling is not forgotten (and no older commit goes over it).
        let outcome = holder.as_ref().map_or(
            EnvOutcome {
                release: None,
                busy: false,
                known: true,
            },
            |run| EnvOutcome {
                busy: false,
                ..outcome_of(run, &env)
            },
        );
        let wake = app
            .update_environment(&pipeline, &env, |record| {
                let same = record.lease.as_ref().is_some_and(|l| l.run == lease.run);
                if same {
                    record.settle(&lease.run, &outcome, &lineage)
                } else {
                    None
                }
            })
            .await?;
        tracing::warn!(%pipeline, %env, holder = %lease.run, "freed a lease whose holder is done or silent");
        freed += 1;
        if let Some(next) = wake {
            app.dispatch(&[Command::Deploy {
                run: next,
                env: env.clone(),
            }])
            .await?;
        }
    }
    Ok(freed)
}

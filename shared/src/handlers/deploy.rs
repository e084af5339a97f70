//! The deploy queue: everything that changes what an environment runs — deploys,
//! rollbacks, and older runs giving way to newer ones.
//!
//! A deploy goes through, in order: the environment's deploy windows and freezes (read
//! now, so a freeze holds runs created before it too), the environment's lease (one run at
//! a time, newest first, never an older commit over a newer one), the claim of the stage
//! (once, whatever the redeliveries), and the target's phases — backup, migrate, release —
//! with the lease renewed while they run.

use std::time::Duration;

use secrecy::SecretString;

use super::{HandlerError, Known, claim_and_run, envs};
use crate::app::{App, Applied, EngineError};
use crate::config::{DeployTargetConfig, EnvironmentConfig};
use crate::domain::{
    self, Actor, Claim, CommitSha, EnvName, Event, Phase, PhaseOutcome, PhaseStatus, Release, Run, RunId, StageKind,
    StageStatus,
};
use crate::policy::Verdict;
use crate::ports::{DeployError, DeployPurpose, DeployRequest, Version};

/// The longest a held deploy waits before looking again (a freeze lifted early, a window
/// changed in the configuration).
const HOLD_RECHECK: Duration = Duration::from_secs(15 * 60);

/// The longest a deploy waiting for a busy environment waits before asking again; it is
/// also woken as soon as the environment frees.
const BUSY_RECHECK: Duration = Duration::from_secs(60);

/// A queued deploy of `run_id` to `env`. `environment` is `env`'s record as the message's
/// sender read it (an approval page), which the lease claim writes over instead of reading.
pub async fn handle(
    app: &App,
    run_id: &RunId,
    env: &EnvName,
    known: Known,
    environment: Option<(domain::Environment, Version)>,
) -> Result<(), HandlerError> {
    let (run, version) = super::known_run(app, run_id, known).await?;
    let config = app.pipeline_of(&run).and_then(|p| p.environment(env)).cloned();
    let queued = run
        .stage(StageKind::Deploy, Some(env))
        .is_some_and(|s| s.status == StageStatus::Queued);
    let mut carry = envs::Carry::default();
    if queued {
        if let Some(config) = &config {
            hold_outside_windows(app, &run, &version, env, config).await?;
        }
        let (claim, carried) = envs::claim(app, &run, env, environment).await?;
        carry = carried;
        match claim {
            Claim::Granted => {}
            Claim::Wait {
                holder,
                until,
                overtaken,
            } => {
                let reason = format!("waiting for {env}: {holder} is working there");
                record_hold(app, run_id, env, &reason, false, Some((run, version))).await?;
                overtake(app, run_id, env, overtaken).await;
                return Err(not_yet(app, Some(until), BUSY_RECHECK, reason));
            }
            Claim::Superseded { by } => {
                tracing::info!(run = %run_id, %env, newer = %by, "a newer commit has the environment; superseded");
                let event = Event::Superseded { env: env.clone(), by };
                super::record_from(app, run_id, event, Some((run, version))).await?;
                return Ok(());
            }
        }
    }
    let target = config.as_ref().map(|e| e.deploy.clone());
    let secrets = resolve_secrets(app, target.as_ref()).await?;
    // What the environment runs now, as the lease claim left the record (read only when
    // this delivery did not claim: a redelivery of a deploy already claimed).
    let previous = match &carry.environment {
        Some((record, _)) => record.current.clone(),
        None => app.environment(&run.pipeline, env).await?.0.current,
    }
    .filter(|r| r.run != run.id);
    let pipeline = run.pipeline.clone();
    let known = Some((run, version));
    let finished = claim_and_run(app, known, run_id, StageKind::Deploy, env, |run| async move {
        let (phases, output, result) = match (&target, secrets) {
            (None, _) => (
                Vec::new(),
                String::new(),
                Err(format!("pipeline {} has no environment {env} any more", run.pipeline)),
            ),
            (Some(_), Err(missing)) => (Vec::new(), String::new(), Err(missing)),
            (Some(target), Ok(secrets)) => {
                tracing::info!(run = %run.id, %env, sha = %run.sha, "deploying");
                let steps = [Phase::Backup, Phase::Migrate, Phase::Release].map(|phase| Step {
                    phase,
                    sha: &run.sha,
                    run: &run.id,
                    artifact: run.build.artifact.as_deref(),
                    backup: None,
                });
                envs::holding(
                    app,
                    &pipeline,
                    &run.id,
                    env,
                    run_steps(
                        app,
                        run.repo.as_str(),
                        env,
                        target,
                        &secrets,
                        deploy_purpose(&run, env),
                        &steps,
                    ),
                )
                .await
            }
        };
        Event::DeployFinished {
            env: env.clone(),
            output,
            result,
            phases,
            previous,
        }
    })
    .await?;
    // The environment's record first, so the smoke check's message carries the record the
    // check's end will give the lease back in.
    let settled = envs::settle_from(app, run_id, env, finished.as_ref().map(|r| &r.run), carry).await?;
    if let Some(finished) = finished {
        let environment = settled
            .as_ref()
            .and_then(|(record, version)| Some((env, record, version.as_ref()?)));
        finished.send(app, environment).await?;
    }
    Ok(())
}

/// A queued rollback: restore the backup and redeploy the previous release (automatic), or
/// redeploy an earlier release through backup, migrate, release and verify (on request).
pub async fn rollback(app: &App, run_id: &RunId, env: &EnvName, known: Known) -> Result<(), HandlerError> {
    let run = super::run_of(app, run_id, known).await?;
    let queued = run
        .stage(StageKind::Rollback, Some(env))
        .is_some_and(|s| s.status == StageStatus::Queued);
    if queued {
        match envs::claim_for_rollback(app, &run, env).await? {
            Claim::Granted => {}
            Claim::Wait { holder, until, .. } => {
                return Err(not_yet(
                    app,
                    Some(until),
                    BUSY_RECHECK,
                    format!("rollback waits for {env}: {holder} is working there"),
                ));
            }
            // Another run's release reached the environment since the rollback was decided
            // on (asked for by hand, or this run's lease ran out and a newer run released):
            // going back now would undo that one too, so nothing is deployed.
            Claim::Superseded { by } => {
                tracing::warn!(run = %run_id, %env, now = %by, "another release came first; rollback called off");
                super::record(app, run_id, Event::RollbackOvertaken { env: env.clone(), by }).await?;
                envs::settle(app, run_id, env).await?;
                return Ok(());
            }
        }
    }
    let config = app.pipeline_of(&run).and_then(|p| p.environment(env)).cloned();
    let target = config.as_ref().map(|e| e.deploy.clone());
    let secrets = resolve_secrets(app, target.as_ref()).await?;
    let pipeline = run.pipeline.clone();
    let finished = claim_and_run(app, None, run_id, StageKind::Rollback, env, |run| async move {
        let plan = run
            .stage(StageKind::Rollback, Some(env))
            .and_then(|s| s.rollback.clone());
        let (phases, result) = match (plan, &target, secrets) {
            (None, _, _) => (Vec::new(), Err("the rollback has no plan".to_owned())),
            (_, None, _) => (
                Vec::new(),
                Err(format!("pipeline {} has no environment {env} any more", run.pipeline)),
            ),
            (_, _, Err(missing)) => (Vec::new(), Err(missing)),
            (Some(plan), Some(target), Ok(secrets)) => {
                let work = async {
                    if plan.manual {
                        manual_rollback(app, &run, env, target, &secrets, config.as_ref(), plan.to.as_ref()).await
                    } else {
                        automatic_rollback(
                            app,
                            &run,
                            env,
                            target,
                            &secrets,
                            plan.backup.as_deref(),
                            plan.to.as_ref(),
                        )
                        .await
                    }
                };
                envs::holding(app, &pipeline, &run.id, env, work).await
            }
        };
        Event::RollbackFinished {
            env: env.clone(),
            phases,
            result,
        }
    })
    .await?;
    if let Some(finished) = finished {
        finished.send(app, None).await?;
    }
    envs::settle(app, run_id, env).await?;
    Ok(())
}

/// Restore the backup, then redeploy what ran before.
async fn automatic_rollback(
    app: &App,
    run: &Run,
    env: &EnvName,
    target: &DeployTargetConfig,
    secrets: &[(String, SecretString)],
    backup: Option<&str>,
    to: Option<&Release>,
) -> (Vec<PhaseOutcome>, Result<(), String>) {
    let mut steps = Vec::new();
    if let Some(backup) = backup {
        steps.push(Step {
            phase: Phase::Restore,
            sha: &run.sha,
            run: &run.id,
            artifact: run.build.artifact.as_deref(),
            backup: Some(backup),
        });
    }
    if let Some(to) = to {
        steps.push(Step {
            phase: Phase::Release,
            sha: &to.sha,
            run: &to.run,
            artifact: to.artifact.as_deref(),
            backup: None,
        });
    }
    let purpose = rollback_purpose(run, env);
    let (phases, _, result) = run_steps(app, run.repo.as_str(), env, target, secrets, purpose, &steps).await;
    (phases, result)
}

/// What `run`'s deploy to `env` asks targets for: its first attempt, or a retried one (each
/// claim of the stage is an attempt; only a retry queues it again).
fn deploy_purpose<'a>(run: &Run, env: &EnvName) -> DeployPurpose<'a> {
    let attempts = run.stage(StageKind::Deploy, Some(env)).map_or(1, |s| s.attempts);
    DeployPurpose::deploy(attempts)
}

/// What the rollback stage `run` has queued in `env` asks targets for: which run rolls back,
/// and which of its rollbacks there this is — counting those a retry set aside.
fn rollback_purpose<'a>(run: &'a Run, env: &EnvName) -> DeployPurpose<'a> {
    let attempt = run.rollbacks_in(env).count();
    DeployPurpose::Rollback {
        rolling_back: &run.id,
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX).max(1),
    }
}

/// Redeploy an earlier release through the same phases, then verify it with the
/// environment's smoke checks; a failure after the backup restores it.
async fn manual_rollback(
    app: &App,
    run: &Run,
    env: &EnvName,
    target: &DeployTargetConfig,
    secrets: &[(String, SecretString)],
    config: Option<&EnvironmentConfig>,
    to: Option<&Release>,
) -> (Vec<PhaseOutcome>, Result<(), String>) {
    let Some(to) = to else {
        return (Vec::new(), Err("no release to roll back to".into()));
    };
    let steps = [Phase::Backup, Phase::Migrate, Phase::Release].map(|phase| Step {
        phase,
        sha: &to.sha,
        run: &to.run,
        artifact: to.artifact.as_deref(),
        backup: None,
    });
    let purpose = rollback_purpose(run, env);
    let (mut phases, _, mut result) = run_steps(app, run.repo.as_str(), env, target, secrets, purpose, &steps).await;
    if result.is_ok()
        && let Some(checks) = config.map(|c| &c.smoke).filter(|c| !c.is_empty())
    {
        let results = crate::smoke::run_checks(app.checker.as_ref(), checks, to.sha.as_str()).await;
        let failed: Vec<String> = results
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if !failed.is_empty() {
            result = Err(format!(
                "verify failed after redeploying {}: {}",
                to.sha.short(),
                failed.join("; ")
            ));
        }
    }
    let backup = phases
        .iter()
        .find(|p| p.phase == Phase::Backup && p.status == PhaseStatus::Succeeded)
        .and_then(|p| p.reference.clone());
    let changed = phases
        .iter()
        .any(|p| matches!(p.phase, Phase::Migrate | Phase::Release) && p.status != PhaseStatus::Skipped);
    if let (Err(reason), Some(backup), true) = (&result, backup, changed) {
        let restore = [Step {
            phase: Phase::Restore,
            sha: &run.sha,
            run: &run.id,
            artifact: run.build.artifact.as_deref(),
            backup: Some(&backup),
        }];
        let (more, _, restored) = run_steps(app, run.repo.as_str(), env, target, secrets, purpose, &restore).await;
        phases.extend(more);
        result = Err(match restored {
            Ok(()) => format!("{reason}; backup {backup} restored"),
            Err(e) => format!("{reason}; restoring backup {backup} failed too: {e}"),
        });
    }
    (phases, result)
}

/// Older runs pending approval for `env` give way to `run`; or `run` gives way, if a newer
/// run already reached the gate. `true` if `run` gave way (its record was written).
///
/// Done by the worker whose result brought `run` to the gate ([`super::Recorded::send`]), or
/// from the deploy queue for a `Supersede` message (one sent again, or by an older slipway).
pub async fn supersede(app: &App, run_id: &RunId, env: &EnvName, known: Known) -> Result<bool, HandlerError> {
    let run = super::run_of(app, run_id, known).await?;
    // Only unfinished runs can be pending; a newer run that already finished matters only
    // if it is what the environment runs now, which its record says.
    let head = app.pipeline_record(&run.pipeline).await?;
    let others: Vec<Run> = crate::open_runs::open_runs_of(app, &run.pipeline, Some(&head), Some(&run.id)).await?;
    let lineage = &head.lineage;
    let newer = |a: &Run, b: &Run| lineage.is_newer(a.place(), b.place());
    let gate = |o: &Run| o.stage(StageKind::Approval, Some(env)).map(|s| s.status);
    for older in others
        .iter()
        .filter(|o| newer(&run, o) && gate(o) == Some(StageStatus::Waiting))
    {
        tracing::info!(run = %older.id, %env, newer = %run.id, "pending approval superseded");
        let event = Event::Superseded {
            env: env.clone(),
            by: run.id.clone(),
        };
        super::record(app, &older.id, event).await?;
    }
    if gate(&run) != Some(StageStatus::Waiting) {
        return Ok(false);
    }
    let reached = |o: &&Run| matches!(gate(o), Some(StageStatus::Waiting | StageStatus::Succeeded));
    let in_flight = others.iter().filter(|o| newer(o, &run)).filter(reached).map(Run::place);
    let (record, _) = app.environment(&run.pipeline, env).await?;
    let released = record
        .current
        .as_ref()
        .map(Release::place)
        .filter(|current| lineage.is_newer(*current, run.place()));
    if let Some(newest) = lineage.newest(in_flight.chain(released), |p| *p) {
        let event = Event::Superseded {
            env: env.clone(),
            by: newest.run.clone(),
        };
        super::record(app, run_id, event).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Asks for a rollback of `env` in `pipeline` to `to` (a run released there before), or to
/// the default target, [`domain::Environment::rollback_target`] — the same rule as a rollback
/// link's: the newest release of an older commit, refused once `env` was rolled back already.
/// Applied to the run `env` runs now; the rollback itself happens on the deploy queue.
/// Returns that run.
pub async fn request_rollback(
    app: &App,
    pipeline: &domain::PipelineName,
    env: &EnvName,
    to: Option<&RunId>,
    by: &str,
) -> Result<Run, RollbackRefused> {
    rollback_request(app, pipeline, env, None, to, by).await
}

/// Where a rollback of `env` in `pipeline` asked for without a target goes now: what runs
/// there, and the release it would go back to ([`domain::Environment::rollback_target`]).
/// The CLI and rollback links both ask this, so they never disagree.
pub async fn default_rollback_target(
    app: &App,
    pipeline: &domain::PipelineName,
    env: &EnvName,
) -> Result<(Release, Release), RollbackRefused> {
    let (record, _) = app.environment(pipeline, env).await?;
    let lineage = app.lineage(pipeline).await?;
    let to = record
        .rollback_target(&lineage)
        .map_err(|why| RollbackRefused::Nothing(why.in_env(env.as_str())))?
        .clone();
    let current = record.current.clone().ok_or_else(|| {
        RollbackRefused::Nothing(domain::environment::NoRollback::NothingReleased.in_env(env.as_str()))
    })?;
    Ok((current, to))
}

/// Asks for a rollback of `env` in `pipeline` from `from` to the default target (the newest
/// release of an older commit, [`domain::Environment::rollback_target`]), only if `env` still runs `from`
/// ([`RollbackRefused::NotCurrent`] otherwise): a request made for one release — a signed
/// link, a page someone kept open — never rolls back a newer one, nor goes back further
/// than its sender meant once the rollback has happened. The check is made on the same read
/// as the target; the rollback itself is applied to `from`'s run, which refuses a second
/// one while the first is queued or running.
pub async fn request_rollback_from(
    app: &App,
    pipeline: &domain::PipelineName,
    env: &EnvName,
    from: &RunId,
    by: &str,
) -> Result<Run, RollbackRefused> {
    rollback_request(app, pipeline, env, Some(from), None, by).await
}

/// Asks for a rollback of `env` from `from` to `to`, a release someone chose (on the
/// pipeline's page), only if `env` still runs `from` ([`RollbackRefused::NotCurrent`]
/// otherwise): a page kept open never rolls back a release it did not show.
pub async fn request_rollback_chosen(
    app: &App,
    pipeline: &domain::PipelineName,
    env: &EnvName,
    from: &RunId,
    to: &RunId,
    by: &str,
) -> Result<Run, RollbackRefused> {
    rollback_request(app, pipeline, env, Some(from), Some(to), by).await
}

/// The newest release of `record` of an older commit than `from`:
/// [`domain::Environment::release_before`].
pub fn release_before<'a>(
    record: &'a domain::Environment,
    from: &Release,
    lineage: &domain::Lineage,
) -> Option<&'a Release> {
    record.release_before(from, lineage)
}

async fn rollback_request(
    app: &App,
    pipeline: &domain::PipelineName,
    env: &EnvName,
    expected_current: Option<&RunId>,
    to: Option<&RunId>,
    by: &str,
) -> Result<Run, RollbackRefused> {
    let (record, _) = app.environment(pipeline, env).await?;
    if let Some(expected) = expected_current
        && record.current.as_ref().map(|c| &c.run) != Some(expected)
    {
        return Err(RollbackRefused::NotCurrent {
            env: env.clone(),
            expected: expected.clone(),
            current: record.current.map(|c| c.run),
        });
    }
    let current = record
        .current
        .clone()
        .ok_or_else(|| RollbackRefused::Nothing(format!("nothing was ever released to {env} in {pipeline}")))?;
    let target = match to {
        Some(id) => record
            .release_of(id)
            .cloned()
            .ok_or_else(|| RollbackRefused::Refused(format!("run {id} was never released to {env}")))?,
        None => record
            .rollback_target(&app.lineage(pipeline).await?)
            .cloned()
            .map_err(|why| RollbackRefused::Nothing(why.in_env(env.as_str())))?,
    };
    let event = Event::RollbackRequested {
        env: env.clone(),
        to: target,
        by: by.to_owned(),
    };
    match app
        .apply(&current.run, || app.input(Actor::Slipway, event.clone()))
        .await?
    {
        None => Err(RollbackRefused::Refused(format!(
            "run {} that {env} runs no longer exists",
            current.run
        ))),
        Some(Applied::Changed(run)) => Ok(run),
        Some(Applied::Ignored(why, _)) => Err(RollbackRefused::Refused(why.to_string())),
    }
}

/// Why a rollback was not queued.
#[derive(Debug, thiserror::Error)]
pub enum RollbackRefused {
    /// It does not make sense as asked; the message says why.
    #[error("{0}")]
    Refused(String),
    /// There is nothing to roll back: nothing released, no older release, or the
    /// environment was rolled back already ([`domain::environment::NoRollback`]).
    #[error("{0}")]
    Nothing(String),
    /// The environment no longer runs the release the request was made for (a newer one
    /// was released, or it was already rolled back); nothing was changed.
    #[error("{env} no longer runs {expected}{}; nothing was rolled back", match current {
        Some(current) => format!(": it runs {current} now"),
        None => String::new(),
    })]
    NotCurrent {
        env: EnvName,
        expected: RunId,
        current: Option<RunId>,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One phase to run: which, for which commit and artifact.
pub(crate) struct Step<'a> {
    pub(crate) phase: Phase,
    pub(crate) sha: &'a CommitSha,
    pub(crate) run: &'a RunId,
    pub(crate) artifact: Option<&'a str>,
    pub(crate) backup: Option<&'a str>,
}

/// Runs `steps` of a commit of `repo` in order, stopping at the first failure. `purpose`
/// says which stage they belong to: a run's deploy, or its rollback of `env`. Returns each phase's outcome,
/// the combined output, and the result.
pub(crate) async fn run_steps(
    app: &App,
    repo: &str,
    env: &EnvName,
    target: &DeployTargetConfig,
    secrets: &[(String, SecretString)],
    purpose: DeployPurpose<'_>,
    steps: &[Step<'_>],
) -> (Vec<PhaseOutcome>, String, Result<(), String>) {
    let mut phases = Vec::new();
    let mut output = String::new();
    for step in steps {
        let answer = app
            .deployer
            .deploy(DeployRequest {
                phase: step.phase,
                run: step.run,
                purpose,
                repo,
                sha: step.sha.as_str(),
                env: env.as_str(),
                artifact: step.artifact,
                backup: step.backup,
                secrets: secrets.to_vec(),
                target,
            })
            .await;
        let at = app.clock.now();
        let (status, detail, reference, text, failure) = match answer {
            Ok(report) if report.skipped => {
                let why = first_line(&report.output, "nothing to do");
                (PhaseStatus::Skipped, why, None, report.output, None)
            }
            Ok(report) => {
                let what = first_line(&report.output, "done");
                (PhaseStatus::Succeeded, what, report.reference, report.output, None)
            }
            Err(DeployError::Failed { reason, output }) => {
                (PhaseStatus::Failed, reason.clone(), None, output, Some(reason))
            }
            Err(DeployError::CouldNotStart { reason }) => {
                let reason = format!("could not start: {reason}");
                (PhaseStatus::Failed, reason.clone(), None, String::new(), Some(reason))
            }
        };
        if !text.is_empty() {
            output.push_str(&format!("== {} ==\n{}\n", step.phase, text.trim_end()));
        }
        phases.push(PhaseOutcome {
            phase: step.phase,
            status,
            detail,
            reference,
            at,
        });
        if let Some(reason) = failure {
            return (phases, output, Err(reason));
        }
    }
    (phases, output, Ok(()))
}

fn first_line(text: &str, otherwise: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(otherwise);
    line.chars().take(200).collect()
}

/// The target's secrets, read before any claim: an unreachable store leaves the message
/// for later; a missing secret is a configuration mistake that fails the stage loudly.
pub(crate) async fn resolve_secrets(
    app: &App,
    target: Option<&DeployTargetConfig>,
) -> Result<Result<Vec<(String, SecretString)>, String>, HandlerError> {
    let mut secrets = Vec::new();
    if let Some(target) = target {
        for (var, param) in target.secrets() {
            match app.secret(&param).await {
                Ok(value) => secrets.push((var, value)),
                Err(EngineError::MissingSecret(name)) => {
                    return Ok(Err(format!("secret parameter {name} is missing from the secret store")));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Ok(secrets))
}

/// Holds the deploy while `env` is outside its windows or frozen.
async fn hold_outside_windows(
    app: &App,
    run: &Run,
    version: &Version,
    env: &EnvName,
    config: &EnvironmentConfig,
) -> Result<(), HandlerError> {
    let now = app.clock.now();
    if let Verdict::Held { reason, until } = config.verdict(now) {
        let reason = format!("held before {env}: {reason}");
        let known = Some((run.clone(), version.clone()));
        record_hold(app, &run.id, env, &reason, true, known).await?;
        return Err(not_yet(app, until, HOLD_RECHECK, reason));
    }
    Ok(())
}

/// The older runs `run_id` overtook in `env`'s line are superseded by it. They left the line
/// in the claim's write; one this does not supersede (it stopped, or the write failed) finds
/// `run_id` ahead of it at its own next look (its message comes back while it waits) and
/// supersedes itself. So a failure here is only logged: failing `run_id`'s message would not
/// do it again (the line no longer holds the older run), and would hold up `run_id`.
async fn overtake(app: &App, run_id: &RunId, env: &EnvName, overtaken: Vec<RunId>) {
    for older in overtaken {
        tracing::info!(run = %older, %env, newer = %run_id, "a newer commit joined the line; superseded");
        let event = Event::Superseded {
            env: env.clone(),
            by: run_id.clone(),
        };
        if let Err(e) = super::record(app, &older, event).await {
            tracing::warn!(run = %older, %env, error = %e, "could not supersede the overtaken run; it will find out when it looks again");
        }
    }
}

/// Records why a deploy waits, on the run as the handler read it (`known`) if nobody wrote it
/// since.
async fn record_hold(
    app: &App,
    run_id: &RunId,
    env: &EnvName,
    reason: &str,
    notify: bool,
    known: Known,
) -> Result<(), HandlerError> {
    let event = Event::DeployHeld {
        env: env.clone(),
        reason: reason.to_owned(),
        notify,
    };
    app.apply_from(run_id, known, || app.input(Actor::Slipway, event.clone()))
        .await?;
    Ok(())
}

/// Look again at `until` (at most `cap` from now, at least a second).
fn not_yet(app: &App, until: Option<jiff::Timestamp>, cap: Duration, reason: String) -> HandlerError {
    let now = app.clock.now();
    let wait = until
        .map(|u| now.duration_until(u).unsigned_abs())
        .unwrap_or(cap)
        .clamp(Duration::from_secs(1), cap);
    HandlerError::NotYet { after: wait, reason }
}

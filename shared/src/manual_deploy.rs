//! Manual deploys (`slipway deploy`): an operator runs an environment's deploy phases from
//! their own machine, in this process — to rehearse deploy scripts before the pipeline runs
//! them, or to put a commit in place by hand.
//!
//! A manual deploy is held to the environment's rules as a pipeline deploy is, but never
//! queued and never retried:
//! - the environment's deploy windows and freezes, read now: outside them it is refused, with
//!   when deploying is allowed again;
//! - every environment but the pipeline's first needs an explicit confirmation (`--yes`);
//! - the environment's lease: refused while a run works there, and held (as the operator
//!   lease, [`Environment::operator`]) while the phases run, so no pipeline deploy or
//!   rollback starts meanwhile — they wait for it in line, and the newest is woken at the end;
//! - the phases get what the workers would give them: the target's configuration, its
//!   secrets from the secret store (the secrets file, or SSM), `SLIPWAY_RUN` = the run id of
//!   the commit, and as artifact the one given, else the one the commit's run built.
//!
//! It is recorded in the environment's record as a [`ManualRelease`] (who, which commit and
//! phases, how it ended), apart from the pipeline's own releases: "never an older commit over
//! a newer one" is a rule for the pipeline's runs, and a manual deploy is an operator's
//! explicit act that it does not stop. The environment's `current` release — what the
//! pipeline counts as running, and where rollbacks go from — stays as it was, so the
//! pipeline's next deploy there goes ahead as usual and replaces the manual release.
//!
//! To a deploy target a manual deploy is an attempt numbered from [`MANUAL_ATTEMPT_BASE`] of
//! the commit's deploy stage, so its delivery ids and callback keys never meet the ones of the
//! pipeline's own attempts (a retry numbers them 2, 3, …).

use std::future::Future;

use jiff::Timestamp;
use secrecy::SecretString;

use crate::app::{App, EngineError};
use crate::config::DeployTargetConfig;
use crate::domain::environment::{Holder, ManualRelease};
use crate::domain::{Command, CommitSha, EnvName, Environment, Phase, PhaseOutcome, PipelineName, RunId};
use crate::handlers::deploy::{Step, resolve_secrets, run_steps};
use crate::handlers::envs::{self, LEASE_TTL};
use crate::policy::Verdict;
use crate::ports::DeployPurpose;

/// A manual deploy is attempt `MANUAL_ATTEMPT_BASE + n` of its commit's deploy stage, for
/// the `n`-th manual deploy of that commit to the environment the record remembers.
pub const MANUAL_ATTEMPT_BASE: u32 = 1000;

/// The phases a deploy runs, in order.
pub const DEPLOY_PHASES: [Phase; 3] = [Phase::Backup, Phase::Migrate, Phase::Release];

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct ManualDeploy {
    pub pipeline: PipelineName,
    pub env: EnvName,
    pub sha: CommitSha,
    /// Default: the artifact the commit's run built, if there is such a run.
    pub artifact: Option<String>,
    /// Which of the target's phases to run (in the usual order whatever the order given).
    /// `None`: backup, migrate, release, as the workers run them.
    pub phases: Option<Vec<Phase>>,
    /// Who deploys, for the environment's record.
    pub by: String,
    /// The operator confirmed a deploy to an environment past the first (`--yes`).
    pub confirmed: bool,
}

/// Why a manual deploy did not start. Nothing ran, and nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no pipeline {0} is configured")]
    UnknownPipeline(PipelineName),
    #[error("pipeline {pipeline} has no environment {env}")]
    UnknownEnvironment { pipeline: PipelineName, env: EnvName },
    #[error("{env}'s deploy target has no {phase} phase (it has: {has})")]
    NoSuchPhase { env: EnvName, phase: Phase, has: String },
    #[error("{env} is not the first environment of pipeline {pipeline}: deploying to it by hand needs --yes")]
    NeedsConfirmation { pipeline: PipelineName, env: EnvName },
    #[error("{env} may not be deployed to now: {reason}{}", until_words(*until))]
    Held {
        env: EnvName,
        reason: String,
        until: Option<Timestamp>,
    },
    #[error("{env} is busy: {holder} holds it until {until}; nothing was deployed, try again then")]
    Busy {
        env: EnvName,
        holder: Holder,
        until: Timestamp,
    },
    /// A secret the target names is not in the secret store.
    #[error("{0}")]
    MissingSecret(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn until_words(until: Option<Timestamp>) -> String {
    match until {
        Some(at) => format!("; deploying is allowed again from {at}"),
        None => String::new(),
    }
}

/// Where a manual deploy is, phase by phase, for progress shown to people.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// The phase started.
    Started(Phase),
    /// The phase ended so.
    Finished(&'a PhaseOutcome),
}

/// How a manual deploy ended: its record (as the environment's record keeps it), and what
/// its phases printed (secrets masked).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub record: ManualRelease,
    pub output: String,
}

/// The phases `target` has: backup and migrate when a command target names them (the
/// workers skip them otherwise), all three for targets that answer each phase themselves.
pub fn target_phases(target: &DeployTargetConfig) -> Vec<Phase> {
    match target {
        DeployTargetConfig::Command { backup, migrate, .. } => {
            let mut phases = Vec::new();
            if backup.is_some() {
                phases.push(Phase::Backup);
            }
            if migrate.is_some() {
                phases.push(Phase::Migrate);
            }
            phases.push(Phase::Release);
            phases
        }
        _ => DEPLOY_PHASES.to_vec(),
    }
}

/// Checks `request` against the configuration and the environment's policy at `now`,
/// without touching the store: the phases to run, or why not.
fn plan(app: &App, request: &ManualDeploy, now: Timestamp) -> Result<(Vec<Phase>, DeployTargetConfig), Refused> {
    let pipeline = app
        .config
        .pipeline(&request.pipeline)
        .ok_or_else(|| Refused::UnknownPipeline(request.pipeline.clone()))?;
    let position = pipeline
        .environments
        .iter()
        .position(|e| e.name == request.env)
        .ok_or_else(|| Refused::UnknownEnvironment {
            pipeline: request.pipeline.clone(),
            env: request.env.clone(),
        })?;
    let config = &pipeline.environments[position];
    let phases = match &request.phases {
        None => DEPLOY_PHASES.to_vec(),
        Some(asked) => {
            let has = target_phases(&config.deploy);
            if let Some(missing) = asked.iter().find(|p| !has.contains(p)) {
                return Err(Refused::NoSuchPhase {
                    env: request.env.clone(),
                    phase: *missing,
                    has: has.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                });
            }
            DEPLOY_PHASES.into_iter().filter(|p| asked.contains(p)).collect()
        }
    };
    if position > 0 && !request.confirmed {
        return Err(Refused::NeedsConfirmation {
            pipeline: request.pipeline.clone(),
            env: request.env.clone(),
        });
    }
    if let Verdict::Held { reason, until } = config.verdict(now) {
        return Err(Refused::Held {
            env: request.env.clone(),
            reason,
            until,
        });
    }
    Ok((phases, config.deploy.clone()))
}

/// Runs a manual deploy: checks it ([`Refused`] if it may not start), holds the
/// environment, runs its phases in this process, stopping at the first failure, and records
/// it in the environment's record. `progress` hears of each phase as it starts and ends.
/// A failed phase is an [`Outcome`] whose record says why (`failed`), not an error.
pub async fn deploy(
    app: &App,
    request: &ManualDeploy,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Outcome, Refused> {
    let started_at = app.clock.now();
    let (phases, target) = plan(app, request, started_at)?;
    let secrets = resolve_secrets(app, Some(&target))
        .await
        .map_err(|e| match e {
            crate::handlers::HandlerError::Engine(e) => Refused::Engine(e),
            other => Refused::MissingSecret(other.to_string()),
        })?
        .map_err(Refused::MissingSecret)?;
    let run = RunId::new(&request.pipeline, &request.sha);
    let artifact = match &request.artifact {
        Some(artifact) => Some(artifact.clone()),
        None => app.load(&run).await?.and_then(|(run, _)| run.build.artifact.clone()),
    };
    let (by, sha) = (request.by.as_str(), &request.sha);
    let claimed = app
        .update_environment(&request.pipeline, &request.env, |record| {
            record
                .claim_for_operator(by, sha, started_at, LEASE_TTL)
                .map(|()| record.manual.iter().filter(|m| m.sha == *sha).count())
        })
        .await?;
    let earlier = claimed.map_err(|(holder, until)| Refused::Busy {
        env: request.env.clone(),
        holder,
        until,
    })?;
    tracing::info!(pipeline = %request.pipeline, env = %request.env, %sha, by, "manual deploy");
    let attempt = MANUAL_ATTEMPT_BASE + u32::try_from(earlier).unwrap_or(u32::MAX - MANUAL_ATTEMPT_BASE - 1) + 1;
    let repo = app
        .config
        .pipeline(&request.pipeline)
        .map(|p| p.repo.to_string())
        .unwrap_or_default();
    let with = Phases {
        repo: &repo,
        env: &request.env,
        target: &target,
        secrets: &secrets,
        run: &run,
        sha,
        artifact: artifact.as_deref(),
        purpose: DeployPurpose::deploy(attempt),
    };
    let work = run_phases(app, &with, &phases, progress);
    let (outcomes, output, result) = holding(app, request, work).await;
    let record = ManualRelease {
        sha: sha.clone(),
        artifact,
        by: by.to_owned(),
        started_at,
        at: app.clock.now(),
        phases: outcomes,
        failed: result.err(),
    };
    finish(app, request, &record).await?;
    Ok(Outcome { record, output })
}

/// What every phase of one manual deploy shares.
struct Phases<'a> {
    repo: &'a str,
    env: &'a EnvName,
    target: &'a DeployTargetConfig,
    secrets: &'a [(String, SecretString)],
    run: &'a RunId,
    sha: &'a CommitSha,
    artifact: Option<&'a str>,
    purpose: DeployPurpose<'a>,
}

/// Runs `phases` one by one (to report each), stopping at the first failure.
async fn run_phases(
    app: &App,
    with: &Phases<'_>,
    phases: &[Phase],
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> (Vec<PhaseOutcome>, String, Result<(), String>) {
    let mut outcomes = Vec::new();
    let mut output = String::new();
    for phase in phases {
        progress(Progress::Started(*phase));
        let step = [Step {
            phase: *phase,
            sha: with.sha,
            run: with.run,
            artifact: with.artifact,
            backup: None,
        }];
        let (done, text, result) =
            run_steps(app, with.repo, with.env, with.target, with.secrets, with.purpose, &step).await;
        output.push_str(&text);
        for outcome in &done {
            progress(Progress::Finished(outcome));
        }
        outcomes.extend(done);
        if let Err(reason) = result {
            return (outcomes, output, Err(format!("{phase} failed: {reason}")));
        }
    }
    (outcomes, output, Ok(()))
}

/// Runs `work` while renewing the operator lease.
async fn holding<F: Future>(app: &App, request: &ManualDeploy, work: F) -> F::Output {
    let holder = format!("{}'s manual deploy", request.by);
    envs::renewing(
        app,
        &request.pipeline,
        &request.env,
        &holder,
        |record, now| record.renew_operator(&request.by, &request.sha, now, LEASE_TTL),
        work,
    )
    .await
}

/// Records `manual` in the environment's record, gives the operator lease up, and wakes the
/// runs that waited for it (the newest first; the older ones find themselves superseded).
async fn finish(app: &App, request: &ManualDeploy, manual: &ManualRelease) -> Result<(), EngineError> {
    let lineage = app.lineage(&request.pipeline).await?;
    let (next, waiting) = app
        .update_environment(&request.pipeline, &request.env, |record: &mut Environment| {
            let next = record.finish_manual(manual.clone(), &lineage);
            let waiting: Vec<RunId> = record.waiting.iter().map(|w| w.run.clone()).collect();
            (next, waiting)
        })
        .await?;
    if let Some(next) = next {
        let mut wake = vec![Command::Deploy {
            run: next.clone(),
            env: request.env.clone(),
        }];
        wake.extend(waiting.into_iter().filter(|w| *w != next).map(|run| Command::Deploy {
            run,
            env: request.env.clone(),
        }));
        app.dispatch(&wake).await?;
    }
    Ok(())
}

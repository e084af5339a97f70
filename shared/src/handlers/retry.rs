//! Retrying a run that failed at a deploy, its smoke checks or its bake: `slipway retry RUN`
//! and the Retry button. The rule that matters is the pipeline's first: never an older commit
//! over a newer one. The environment's record says whether a newer run has passed the
//! environment since ([`newer_than`]); the state machine refuses the retry if so, and the
//! retried deploy still claims the lease like any other, so a newer commit that gets there
//! first supersedes it.

use crate::app::{App, Applied, EngineError};
use crate::domain::{Actor, EnvName, Event, Run, RunId, StageKind, StageStatus};

/// Why a retry was not queued.
#[derive(Debug, thiserror::Error)]
pub enum RetryRefused {
    #[error("there is no run {0}")]
    NoSuchRun(RunId),
    /// It does not apply to this run as it stands; the message says why.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The environment `run` failed in, at a deploy, smoke checks or a bake.
pub fn failed_env(run: &Run) -> Option<&EnvName> {
    run.stages
        .iter()
        .find(|s| {
            matches!(s.kind, StageKind::Deploy | StageKind::Smoke | StageKind::Bake) && s.status == StageStatus::Failed
        })
        .and_then(|s| s.env.as_ref())
}

/// Asks for `run_id`'s work in `env` (default: where it failed) to be tried again, on behalf
/// of `actor` (`by` names them in the run's history). Returns the run as the retry left it.
pub async fn request_retry(
    app: &App,
    run_id: &RunId,
    env: Option<&EnvName>,
    actor: Actor,
    by: &str,
) -> Result<Run, RetryRefused> {
    let (run, _) = app
        .load(run_id)
        .await?
        .ok_or_else(|| RetryRefused::NoSuchRun(run_id.clone()))?;
    let env = match env.or_else(|| failed_env(&run)) {
        Some(env) => env.clone(),
        None => {
            return Err(RetryRefused::Refused(format!(
                "{} did not fail at a deploy, smoke checks or bake; only those can be retried",
                run.sha.short()
            )));
        }
    };
    let newer = newer_than(app, &run, &env).await?;
    let event = Event::RetryRequested {
        env: env.clone(),
        by: by.to_owned(),
        newer,
    };
    match app.apply(run_id, || app.input(actor.clone(), event.clone())).await? {
        None => Err(RetryRefused::NoSuchRun(run_id.clone())),
        Some(Applied::Changed(run)) => {
            tracing::info!(run = %run.id, %env, by, "retry queued");
            Ok(run)
        }
        Some(Applied::Ignored(why, _)) => Err(RetryRefused::Refused(why.to_string())),
    }
}

/// A newer run than `run` that has passed `env`, if any: one it runs, holds its lease, may
/// have released there without slipway knowing (`in_doubt`), or released there at any time
/// kept in its record — even if that release was rolled back since, or its rollback failed
/// and the environment still runs it.
pub async fn newer_than(app: &App, run: &Run, env: &EnvName) -> Result<Option<RunId>, EngineError> {
    use crate::domain::Place;
    let (record, _) = app.environment(&run.pipeline, env).await?;
    let candidates: Vec<(RunId, Place<'_>)> = record
        .current
        .iter()
        .chain(record.releases.iter())
        .map(|r| (r.run.clone(), r.place()))
        .chain(
            record
                .lease
                .iter()
                .map(|l| (l.run.clone(), Place::new(&l.run, l.opened_at))),
        )
        .chain(
            record
                .in_doubt
                .iter()
                .map(|m| (m.run.clone(), Place::new(&m.run, m.opened_at))),
        )
        .filter(|(id, _)| *id != run.id)
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let lineage = app.lineage(&run.pipeline).await?;
    Ok(candidates
        .into_iter()
        .find(|(_, place)| lineage.is_newer(*place, run.place()))
        .map(|(id, _)| id))
}

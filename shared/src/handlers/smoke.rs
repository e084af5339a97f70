//! The smoke queue: check a freshly deployed environment through its real dependencies.

use std::time::Duration;

use super::{HandlerError, Known, claim_and_run, envs, run_and_record};
use crate::app::{App, Applied};
use crate::domain::{self, Actor, CheckResult, EnvName, Environment, Event, RunId, StageKind, StageStatus};
use crate::ports::Version;

/// `environment`: the environment's record as the deploy left it, if the message carried it.
pub async fn handle(
    app: &App,
    run_id: &RunId,
    env: &EnvName,
    known: Known,
    environment: Option<(Environment, Version)>,
) -> Result<(), HandlerError> {
    let (run, version) = super::known_run(app, run_id, known).await?;
    let checks = app
        .pipeline_of(&run)
        .and_then(|p| p.environment(env))
        .map(|e| e.smoke.clone());
    // Started by the deploy's own write (see `domain::transition`'s `advance`): nothing to
    // claim. A smoke stage still queued was written by an older slipway and is claimed.
    let started = run
        .stage(StageKind::Smoke, Some(env))
        .is_some_and(|s| s.status == StageStatus::Running);
    let known = (run, version);
    let check = |run: domain::Run| async move {
        let results = match &checks {
            Some(checks) => crate::smoke::run_checks(app.checker.as_ref(), checks, run.sha.as_str()).await,
            None => vec![CheckResult {
                name: "configuration".into(),
                passed: false,
                attempts: 0,
                detail: format!("pipeline {} has no environment {env} any more", run.pipeline),
            }],
        };
        Event::SmokeFinished {
            env: env.clone(),
            checks: results,
        }
    };
    let finished = if started {
        run_and_record(app, known, StageKind::Smoke, env, check).await?
    } else {
        claim_and_run(app, Some(known), run_id, StageKind::Smoke, env, check).await?
    };
    let carry = envs::Carry {
        environment: environment.map(|(record, version)| (record, Some(version))),
        head: None,
    };
    envs::settle_from(app, run_id, env, finished.as_ref().map(|r| &r.run), carry).await?;
    if let Some(finished) = finished {
        finished.send(app, None).await?;
    }
    Ok(())
}

/// The post-deploy bake: one reading of the environment's health per delivery. Unhealthy
/// ends the bake (and rolls the environment back); healthy until the bake's duration has
/// passed ends it well; in between, the message comes back after the interval.
pub async fn bake(app: &App, run_id: &RunId, env: &EnvName, known: Known) -> Result<(), HandlerError> {
    let run = super::run_of(app, run_id, known).await?;
    let Some(bake) = app
        .pipeline_of(&run)
        .and_then(|p| p.environment(env))
        .and_then(|e| e.bake.clone())
    else {
        let reason = format!("pipeline {} has no bake for {env} any more", run.pipeline);
        return finish(app, run_id, env, Err(reason)).await;
    };
    let run = match run.stage(StageKind::Bake, Some(env)).map(|s| s.status) {
        Some(StageStatus::Queued) => {
            match app
                .apply(run_id, || {
                    app.input(Actor::Slipway, Event::BakeStarted { env: env.clone() })
                })
                .await?
            {
                Some(Applied::Changed(run)) => run,
                Some(Applied::Ignored(_, run)) => run,
                None => return Err(HandlerError::BadMessage(format!("run {run_id} does not exist"))),
            }
        }
        Some(StageStatus::Running) => run,
        _ => {
            app.dispatch(&domain::resendable(&run)).await?;
            return Ok(());
        }
    };
    let now = app.clock.now();
    app.update_environment(&run.pipeline, env, |record| record.renew(run_id, now, envs::LEASE_TTL))
        .await?;
    let started = run
        .stage(StageKind::Bake, Some(env))
        .and_then(|s| s.started_at)
        .unwrap_or(now);
    let over = started.checked_add(bake.duration).is_ok_and(|end| end <= now);
    match app.health.check(&bake.source).await {
        Ok(health) if !health.healthy => finish(app, run_id, env, Err(health.detail)).await,
        Ok(health) if over => {
            finish(
                app,
                run_id,
                env,
                Ok(format!("{} for {:#}", health.detail, bake.duration)),
            )
            .await
        }
        Err(fault) if over => {
            let reason = format!("the health source could not be read at the end of the bake: {fault}");
            finish(app, run_id, env, Err(reason)).await
        }
        Ok(_) | Err(_) => {
            let left = now
                .duration_until(started.checked_add(bake.duration).unwrap_or(now))
                .unsigned_abs();
            let after = bake.interval.unsigned_abs().min(left).max(Duration::from_secs(1));
            Err(HandlerError::NotYet {
                after,
                reason: format!("baking {env}: next health reading in {}s", after.as_secs()),
            })
        }
    }
}

async fn finish(app: &App, run_id: &RunId, env: &EnvName, result: Result<String, String>) -> Result<(), HandlerError> {
    let recorded = super::record(
        app,
        run_id,
        Event::BakeFinished {
            env: env.clone(),
            result,
        },
    )
    .await?;
    if let Some(run) = &recorded {
        crate::metrics::stage_finished(run, StageKind::Bake, env);
    }
    envs::settle(app, run_id, env).await?;
    Ok(())
}

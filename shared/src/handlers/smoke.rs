//! The smoke queue: check a freshly deployed environment through its real dependencies.

use super::{HandlerError, claim_and_run};
use crate::app::App;
use crate::domain::{CheckResult, EnvName, Event, RunId, StageKind};

pub async fn handle(app: &App, run_id: &RunId, env: &EnvName) -> Result<(), HandlerError> {
    let run = super::run_of(app, run_id).await?;
    let checks = app
        .pipeline_of(&run)
        .and_then(|p| p.environment(env))
        .map(|e| e.smoke.clone());
    claim_and_run(app, run_id, StageKind::Smoke, env, |run| async move {
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
    })
    .await
}

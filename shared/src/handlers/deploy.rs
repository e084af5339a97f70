//! The deploy queue: release a run's artifact to one environment, exactly once.

use secrecy::SecretString;

use super::{HandlerError, claim_and_run};
use crate::app::{App, EngineError};
use crate::domain::{EnvName, Event, RunId, StageKind};
use crate::ports::{DeployError, DeployRequest};

pub async fn handle(app: &App, run_id: &RunId, env: &EnvName) -> Result<(), HandlerError> {
    let run = super::run_of(app, run_id).await?;
    let target = app
        .pipeline_of(&run)
        .and_then(|p| p.environment(env))
        .map(|e| e.deploy.clone());
    // Secrets are read before the claim: an unreachable store must not leave a claimed,
    // never-started deploy behind. A missing secret is a configuration mistake that fails
    // the stage below, loudly.
    let mut secrets: Vec<(String, SecretString)> = Vec::new();
    let mut missing = None;
    if let Some(target) = &target {
        for (var, param) in target.secrets() {
            match app.secret(&param).await {
                Ok(value) => secrets.push((var.clone(), value)),
                Err(EngineError::MissingSecret(name)) => missing = Some(name),
                Err(e) => return Err(e.into()),
            }
        }
    }
    claim_and_run(app, run_id, StageKind::Deploy, env, |run| async move {
        let result = match (&target, missing) {
            (None, _) => Err(DeployError::CouldNotStart {
                reason: format!("pipeline {} has no environment {env} any more", run.pipeline),
            }),
            (Some(_), Some(name)) => Err(DeployError::CouldNotStart {
                reason: format!("secret parameter {name} is missing from the secret store"),
            }),
            (Some(target), None) => {
                tracing::info!(run = %run.id, %env, sha = %run.sha, "deploying");
                app.deployer
                    .deploy(DeployRequest {
                        phase: crate::ports::Phase::Release,
                        backup: None,
                        run: &run.id,
                        repo: run.repo.as_str(),
                        sha: run.sha.as_str(),
                        env: env.as_str(),
                        artifact: run.build.artifact.as_deref(),
                        secrets,
                        target,
                    })
                    .await
            }
        };
        let (output, result) = match result {
            Ok(report) => (report.output, Ok(())),
            Err(DeployError::Failed { reason, output }) => (output, Err(reason)),
            Err(DeployError::CouldNotStart { reason }) => (String::new(), Err(reason)),
        };
        Event::DeployFinished {
            env: env.clone(),
            output,
            result,
        }
    })
    .await
}

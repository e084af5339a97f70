//! `slipway rollback`: put an environment back to an earlier release. The rollback is
//! queued like any deploy and carried out by the workers (`slipway serve`, or the deploy
//! function on AWS) through the target's phases: backup, migrate, release, verify.

use anyhow::{Context as _, bail};
use slipway::domain::{EnvName, PipelineName, RunId};

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The environment to roll back, e.g. production.
    #[arg(long)]
    env: EnvName,
    /// The run to go back to (it must have been released to ENV). Default: the release
    /// before the current one.
    #[arg(long)]
    to: Option<RunId>,
    /// The pipeline; may be left out when the configuration has only one.
    #[arg(long)]
    pipeline: Option<PipelineName>,
    /// Who asks, for the run's history. Default: $USER.
    #[arg(long, env = "USER", default_value = "someone")]
    by: String,
    #[command(flatten)]
    stack: crate::stack::StackArgs,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let app = args.stack.open(true).await?;
    let pipeline = match &args.pipeline {
        Some(p) => p.clone(),
        None => match app.config.pipelines.as_slice() {
            [only] => only.name.clone(),
            _ => bail!("the configuration has several pipelines: say which with --pipeline"),
        },
    };
    let known = app
        .config
        .pipeline(&pipeline)
        .with_context(|| format!("no pipeline {pipeline} in {}", args.stack.config.display()))?;
    if known.environment(&args.env).is_none() {
        bail!("pipeline {pipeline} has no environment {}", args.env);
    }
    let run = slipway::handlers::deploy::request_rollback(&app, &pipeline, &args.env, args.to.as_ref(), &args.by)
        .await
        .map_err(|e| anyhow::anyhow!("not rolled back: {e}"))?;
    let to = run
        .stage(slipway::domain::StageKind::Rollback, Some(&args.env))
        .and_then(|s| s.rollback.as_ref())
        .and_then(|p| p.to.as_ref())
        .map(|r| r.sha.short().to_owned())
        .unwrap_or_default();
    println!(
        "rollback of {} from {} to {to} queued; follow it with: slipway run {}",
        args.env,
        run.sha.short(),
        run.id
    );
    Ok(())
}

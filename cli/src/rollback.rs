//! `slipway rollback`: put an environment back to an earlier release. The rollback is
//! queued like any deploy and carried out by the workers (`slipway serve`, or the deploy
//! function on AWS) through the target's phases: backup, migrate, release, verify.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use slipway::domain::{EnvName, PipelineName, RunId};
use slipway::embedded::Paths;

use crate::Backend;

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
    #[arg(long, default_value = "slipway.toml")]
    config: PathBuf,
    #[arg(long, default_value = ".slipway", env = "SLIPWAY_DATA_DIR")]
    data_dir: PathBuf,
    #[arg(long)]
    secrets: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    #[command(flatten)]
    aws: crate::aws::AwsArgs,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let paths = Paths {
        secrets: args
            .secrets
            .clone()
            .unwrap_or_else(|| Paths::default_secrets(&args.config)),
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
    };
    let fallback = url::Url::parse("http://127.0.0.1:8080")?;
    let app = match args.backend {
        Backend::Embedded => {
            if !paths.database().exists() {
                bail!(
                    "no slipway data in {}: nothing was ever deployed from here (set --data-dir)",
                    args.data_dir.display()
                );
            }
            slipway::embedded::open(&paths, None, fallback).await?
        }
        Backend::Aws => {
            let config = slipway::config::Config::load(&paths.config)?;
            let public_url = config.public_url.clone().unwrap_or(fallback);
            let (settings, sdk) = crate::aws::settings(&args.aws, public_url).await?;
            slipway::cloud::app(&settings, &sdk, Some(config)).await?
        }
    };
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
        .with_context(|| format!("no pipeline {pipeline} in {}", args.config.display()))?;
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

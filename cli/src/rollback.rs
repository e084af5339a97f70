//! `slipway rollback`: put an environment back to an earlier release. The rollback is
//! queued like any deploy and carried out by the workers (`slipway serve`, or the deploy
//! function on AWS) through the target's phases: backup, migrate, release, verify.
//!
//! Without `--to` it goes where a rollback link goes ([`Environment::rollback_target`]):
//! the newest release of an older commit than the one running — and nowhere once the
//! environment was rolled back already, so running it twice never flips back and forth.
//!
//! [`Environment::rollback_target`]: slipway::domain::Environment::rollback_target

use std::time::Duration;

use serde_json::json;
use slipway::domain::{EnvName, PipelineName, Release, Run, RunId, StageKind, StageStatus};
use slipway::handlers::deploy::RollbackRefused;

use crate::exit::Failure;
use crate::progress::Progress;

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The environment to roll back, e.g. production.
    #[arg(long)]
    env: EnvName,
    /// The run to go back to (it must have been released to ENV). Default: the newest
    /// release of an older commit than the one ENV runs; refused when ENV was rolled back
    /// already (it runs an older commit than its newest release) or has nothing older.
    #[arg(long)]
    to: Option<RunId>,
    /// The pipeline; may be left out when the configuration has only one.
    #[arg(long)]
    pipeline: Option<PipelineName>,
    /// Who asks, for the run's history. Default: $USER.
    #[arg(long, env = "USER", default_value = "someone")]
    by: String,
    /// Follow the rollback until the workers finish it (a spinner on a terminal, a line per
    /// change otherwise); exit 6 if it failed. Without it, the command returns once the
    /// rollback is queued.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits at most.
    #[arg(long, default_value = "30m", requires = "wait")]
    timeout: jiff::SignedDuration,
    /// Print one JSON document: the queued rollback (run, pipeline, env, from, to, status).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: crate::stack::StackArgs,
}

/// The pipeline named, or the configuration's only one.
pub(crate) fn pipeline_of(app: &slipway::app::App, named: Option<&PipelineName>) -> anyhow::Result<PipelineName> {
    match named {
        Some(p) if app.config.pipeline(p).is_some() => Ok(p.clone()),
        Some(p) => Err(Failure::not_found(format!("no pipeline {p} is configured")).into()),
        None => match app.config.pipelines.as_slice() {
            [only] => Ok(only.name.clone()),
            [] => Err(Failure::config("the configuration has no pipeline").into()),
            _ => Err(Failure::new(
                crate::exit::Kind::Usage,
                "the configuration has several pipelines: say which with --pipeline",
            )
            .into()),
        },
    }
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let app = args.stack.open(true).await?;
    let pipeline = pipeline_of(&app, args.pipeline.as_ref())?;
    let known = app.config.pipeline(&pipeline).and_then(|p| p.environment(&args.env));
    if known.is_none() {
        return Err(Failure::not_found(format!("pipeline {pipeline} has no environment {}", args.env)).into());
    }
    let run = slipway::handlers::deploy::request_rollback(&app, &pipeline, &args.env, args.to.as_ref(), &args.by)
        .await
        .map_err(|e| match e {
            RollbackRefused::Engine(e) => anyhow::Error::from(Failure::unavailable(
                "not rolled back: slipway's store did not answer",
                e,
            )),
            other => Failure::refused(format!("not rolled back: {other}")).into(),
        })?;
    let to = planned_to(&run, &args.env);
    let to_sha = to.map(|r| r.sha.short().to_owned()).unwrap_or_default();
    let mut status = StageStatus::Queued;
    if !args.json {
        println!(
            "rollback of {} from {} to {to_sha} queued{}",
            args.env,
            run.sha.short(),
            if args.wait {
                String::new()
            } else {
                format!("; follow it with: slipway watch {}", run.id)
            }
        );
    }
    let mut last = run.clone();
    if args.wait {
        let mut progress = Progress::new(args.json);
        progress.start(format!("{}: rolling back to {to_sha}", args.env));
        let (ended, finished) = follow(&app, &run.id, &args.env, args.timeout, &mut progress).await?;
        status = finished;
        last = ended;
        progress.finish(format!("{}: rollback {}", args.env, status.as_str()));
    }
    if args.json {
        let release = |r: Option<&Release>| r.map(|r| json!({ "run": r.run, "sha": r.sha }));
        let doc = json!({
            "run": run.id,
            "pipeline": pipeline,
            "env": args.env,
            "from": { "run": run.id, "sha": run.sha },
            "to": release(to),
            "by": args.by,
            "status": status.as_str(),
            "reason": rollback_reason(&last, &args.env),
        });
        println!("{doc:#}");
    }
    match status {
        StageStatus::Queued | StageStatus::Succeeded => Ok(()),
        StageStatus::Superseded => Err(Failure::refused(format!(
            "the rollback of {} was called off: a newer release reached it first",
            args.env
        ))
        .into()),
        _ => Err(Failure::failed(format!(
            "the rollback of {} {}: {}",
            args.env,
            status.as_str(),
            rollback_reason(&last, &args.env).unwrap_or_default()
        ))
        .into()),
    }
}

/// Where `run`'s rollback of `env` goes, as its plan says.
fn planned_to<'a>(run: &'a Run, env: &EnvName) -> Option<&'a Release> {
    run.stage(StageKind::Rollback, Some(env))
        .and_then(|s| s.rollback.as_ref())
        .and_then(|p| p.to.as_ref())
}

/// Why the rollback stage of `run` in `env` ended as it did, if it says.
fn rollback_reason(run: &Run, env: &EnvName) -> Option<String> {
    run.stage(StageKind::Rollback, Some(env))
        .and_then(|s| s.summary.clone())
}

/// Reads the run until its rollback of `env` ends (or `timeout` passes), telling `progress`
/// of each change. Returns the run as it ended and the stage's status.
async fn follow(
    app: &slipway::app::App,
    id: &RunId,
    env: &EnvName,
    timeout: jiff::SignedDuration,
    progress: &mut Progress,
) -> anyhow::Result<(Run, StageStatus)> {
    let deadline = tokio::time::Instant::now() + Duration::try_from(timeout).unwrap_or(Duration::from_secs(1800));
    let mut said = None;
    loop {
        let Some((run, _)) = app
            .load(id)
            .await
            .map_err(|e| Failure::unavailable("cannot read the run", e))?
        else {
            return Err(Failure::not_found(format!("run {id} no longer exists")).into());
        };
        let stage = run.stage(StageKind::Rollback, Some(env));
        let status = stage.map_or(StageStatus::Queued, |s| s.status);
        let phases = stage.map_or(0, |s| s.phases.len());
        if said != Some((status, phases)) {
            let done: Vec<String> = stage
                .map(|s| {
                    s.phases
                        .iter()
                        .map(|p| format!("{} {:?}", p.phase, p.status).to_lowercase())
                        .collect()
                })
                .unwrap_or_default();
            progress.line(format!(
                "{env}: rollback {}{}",
                status.as_str(),
                if done.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", done.join(", "))
                }
            ));
            said = Some((status, phases));
        }
        if status.is_terminal() {
            return Ok((run, status));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::unavailable(
                format!("the rollback of {env} did not end within {timeout:#}; it goes on: slipway watch {id}"),
                anyhow::anyhow!("no worker finished it in time (is `slipway serve` running?)"),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

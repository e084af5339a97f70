//! `slipway approvals`, `slipway retry RUN`, `slipway watch RUN`: the control room's views
//! and actions from a shell. Like `slipway rollback`, they act on the stack directly (the
//! embedded data directory, or `--backend aws`), with the same checks as the pages.

use std::time::Duration;

use slipway::app::App;
use slipway::domain::{Actor, EnvName, RunId, RunStatus};
use slipway::views::control_room;

use crate::exit::{Failure, Kind};
use crate::progress::Progress;
use crate::stack::StackArgs;

/// The one run `prefix` names (a run id, `<pipeline>-<sha prefix>`, or a SHA prefix).
async fn resolve(app: &App, prefix: &str) -> anyhow::Result<RunId> {
    let matches = slipway::views::run_index::resolve(app.store.as_ref(), prefix).await?;
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Failure::not_found(format!("no run matches {prefix:?}; `slipway runs` lists them")).into()),
        many => Err(Failure::new(
            Kind::Usage,
            format!("{prefix:?} matches {} runs; give more of the SHA", many.len()),
        )
        .into()),
    }
}

#[derive(Debug, clap::Args)]
pub struct ApprovalsArgs {
    /// Print the same object as `GET /api/approvals`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: StackArgs,
}

/// `slipway approvals`: every approval waiting for people, the soonest to expire first.
pub async fn approvals(args: ApprovalsArgs) -> anyhow::Result<()> {
    let app = args.stack.open(true).await?;
    let pending = control_room::pending_approvals(&app).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "approvals": pending }))?
        );
        return Ok(());
    }
    if pending.is_empty() {
        println!("nothing waits for an approval");
        return Ok(());
    }
    let now = app.clock.now();
    println!(
        "{:<28} {:<12} {:<9} {:<20} {:<8} ASKED",
        "RUN", "TO", "APPROVED", "EXPIRES", "BRINGS"
    );
    for p in &pending {
        let left = now.duration_until(p.expires_at);
        println!(
            "{:<28} {:<12} {:<9} {:<20} {:<8} {}",
            crate::inspect::short_id(&p.run.id),
            p.env.as_str(),
            format!("{} of {}", p.approved_by.len(), p.required),
            format!("in {:#}", jiff::SignedDuration::from_secs(left.as_secs() / 60 * 60)),
            format!(
                "{} run{}",
                p.brings.runs.len(),
                if p.brings.runs.len() == 1 { "" } else { "s" }
            ),
            p.asked.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The run: its id, `<pipeline>-<sha prefix>`, or the start of its commit SHA.
    run: String,
    /// The environment whose approval this is; default: the one the run waits for.
    #[arg(long)]
    env: Option<EnvName>,
    /// The approver deciding (an approver of the run's pipeline).
    #[arg(long = "as", value_name = "ID")]
    who: slipway::domain::ApproverId,
    /// Reject instead of approving.
    #[arg(long)]
    reject: bool,
    /// A comment for the run's history.
    #[arg(long)]
    comment: Option<String>,
    /// Print `{"run", "decided"}` as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: StackArgs,
}

/// `slipway approve RUN --as ID`: decides as that approver, with every check a link has.
pub async fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let app = args.stack.open(true).await?;
    let id = resolve(&app, &args.run).await?;
    let comment = args.comment.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    let done =
        slipway::http::actions::decide_from_shell(&app, &id, args.env.as_ref(), &args.who, !args.reject, comment)
            .await
            .map_err(|why| Failure::refused(format!("nothing was decided: {why}")))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "run": id, "decided": done, "approved": !args.reject })
        );
    } else {
        println!("{done}; follow it with: slipway watch {id}");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct RetryArgs {
    /// The run: its id, `<pipeline>-<sha prefix>`, or the start of its commit SHA.
    run: String,
    /// The environment to deploy again; default: where it failed.
    #[arg(long)]
    env: Option<EnvName>,
    /// Who asks, for the run's history. Default: $USER.
    #[arg(long, env = "USER", default_value = "someone")]
    by: String,
    /// Print the queued retry (`{"run", "sha", "env"}`) as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: StackArgs,
}

/// `slipway retry RUN`: deploys a run that failed at a deploy, smoke checks or bake again.
pub async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    let app = args.stack.open(true).await?;
    let id = resolve(&app, &args.run).await?;
    let run = slipway::handlers::retry::request_retry(&app, &id, args.env.as_ref(), Actor::Slipway, &args.by)
        .await
        .map_err(|e| match e {
            slipway::handlers::retry::RetryRefused::NoSuchRun(_) => Failure::not_found(format!("not retried: {e}")),
            slipway::handlers::retry::RetryRefused::Refused(_) => Failure::refused(format!("not retried: {e}")),
            slipway::handlers::retry::RetryRefused::Engine(_) => Failure::unavailable("not retried", e),
        })?;
    if args.json {
        let env = args.env.as_ref().or_else(|| slipway::handlers::retry::failed_env(&run));
        println!(
            "{}",
            serde_json::json!({ "run": run.id, "sha": run.sha, "env": env, "queued": true })
        );
    } else {
        println!(
            "retry of {} queued; the workers deploy it again. Follow it with: slipway watch {}",
            run.sha.short(),
            run.id
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The run: its id, `<pipeline>-<sha prefix>`, or the start of its commit SHA.
    run: String,
    /// How often to look.
    #[arg(long, default_value = "1s")]
    every: jiff::SignedDuration,
    /// Print the stages as they change on stderr, then the finished run (its stages and
    /// history) as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: StackArgs,
}

/// `slipway watch RUN`: prints each stage as it changes until the run ends (a spinner shows
/// the stage under way on a terminal); exits 0 when it was released, 6 when it ended any other
/// way.
pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let app = args.stack.open(true).await?;
    let id = resolve(&app, &args.run).await?;
    let every = Duration::try_from(args.every)
        .ok()
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(1));
    // With --json, the lines go to stderr and stdout carries only the finished run.
    let mut progress = Progress::new(args.json);
    progress.start(format!("watching {id}"));
    let mut seen: Vec<String> = Vec::new();
    let mut said = 0;
    loop {
        let Some((run, _)) = app.load(&id).await? else {
            return Err(Failure::not_found(format!("run {id} no longer exists")).into());
        };
        let now: Vec<String> = run
            .stages
            .iter()
            .map(|s| format!("{:<22} {}", s.label(), s.status.as_str()))
            .collect();
        if said == 0 {
            progress.line(format!(
                "{} — {}",
                run.id,
                run.commit.message.lines().next().unwrap_or("")
            ));
        }
        for line in now.iter().filter(|l| !seen.contains(l)) {
            progress.line(format!("  {line}"));
        }
        for entry in run.history.iter().skip(said) {
            progress.line(format!(
                "    {}  {}: {}",
                entry.at.strftime("%H:%M:%S"),
                entry.actor,
                entry.what
            ));
        }
        said = run.history.len();
        seen = now;
        if let Some(stage) = run
            .stages
            .iter()
            .find(|s| !s.status.is_terminal() && s.status != slipway::domain::StageStatus::Pending)
        {
            progress.status(format!("{}: {}", stage.label(), stage.status.as_str()));
        }
        let status = run.status();
        if status.is_finished() {
            progress.finish(format!("{} {}", run.id, status.as_str()));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            }
            return if status == RunStatus::Released {
                Ok(())
            } else {
                Err(Failure::failed(format!("run {} ended {}, not released", run.id, status.as_str())).into())
            };
        }
        tokio::time::sleep(every).await;
    }
}

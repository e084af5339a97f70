//! `slipway deploy`: run an environment's deploy phases from this machine, in this process,
//! as the workers would run them (`slipway::manual_deploy` has the rules), and record it in
//! the environment's history as a manual release by the caller.

use serde_json::json;
use slipway::domain::{CommitSha, EnvName, Phase, PhaseStatus, PipelineName};
use slipway::manual_deploy::{self, ManualDeploy, Progress as Step, Refused};

use crate::exit::{Failure, Kind};
use crate::progress::Progress;

/// How many of a failed phase's last output lines the error shows.
const TAIL_LINES: usize = 20;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The environment to deploy to, e.g. staging.
    #[arg(long)]
    env: EnvName,
    /// The commit to deploy (its full 40-character SHA).
    #[arg(long)]
    sha: CommitSha,
    /// The artifact to deploy (SLIPWAY_ARTIFACT). Default: the one the commit's run built,
    /// if slipway has a run of it; else none.
    #[arg(long)]
    artifact: Option<String>,
    /// Run only these of the target's phases, e.g. `backup,migrate` (always in the order
    /// backup, migrate, release). Default: all three, as the workers run them.
    #[arg(long, value_delimiter = ',', value_parser = parse_phase)]
    phases: Option<Vec<Phase>>,
    /// The pipeline; may be left out when the configuration has only one.
    #[arg(long)]
    pipeline: Option<PipelineName>,
    /// Who deploys, for the environment's history. Default: $USER.
    #[arg(long, env = "USER", default_value = "someone")]
    by: String,
    /// Confirm a deploy to an environment past the pipeline's first (production, …).
    #[arg(long)]
    yes: bool,
    /// Print one JSON document: the manual release (env, sha, by, phases, result).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: crate::stack::StackArgs,
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    manual_deploy::DEPLOY_PHASES
        .into_iter()
        .find(|p| p.as_str() == s.trim())
        .ok_or_else(|| format!("unknown phase {s:?}: a deploy's phases are backup, migrate and release"))
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let app = args.stack.open(false).await?;
    let pipeline = crate::rollback::pipeline_of(&app, args.pipeline.as_ref())?;
    let request = ManualDeploy {
        pipeline,
        env: args.env.clone(),
        sha: args.sha.clone(),
        artifact: args.artifact.clone(),
        phases: args.phases.clone(),
        by: args.by.clone(),
        confirmed: args.yes,
    };
    let mut progress = Progress::new(args.json);
    progress.start(format!("{}: deploying {} by hand", args.env, args.sha.short()));
    let mut report = |step: Step<'_>| match step {
        Step::Started(phase) => progress.status(format!("{}: {phase}…", args.env)),
        Step::Finished(outcome) => {
            let status = match outcome.status {
                PhaseStatus::Succeeded => "done",
                PhaseStatus::Skipped => "skipped",
                PhaseStatus::Failed => "FAILED",
            };
            progress.line(format!("{}: {} {status}: {}", args.env, outcome.phase, outcome.detail));
        }
    };
    let outcome = match manual_deploy::deploy(&app, &request, &mut report).await {
        Ok(outcome) => outcome,
        Err(refused) => {
            progress.clear();
            let kind = match &refused {
                Refused::UnknownPipeline(_) | Refused::UnknownEnvironment { .. } => Kind::NotFound,
                Refused::NoSuchPhase { .. } | Refused::MissingSecret(_) => Kind::Config,
                Refused::NeedsConfirmation { .. } | Refused::Held { .. } | Refused::Busy { .. } => Kind::Refused,
                Refused::Engine(_) => Kind::Unavailable,
            };
            return Err(Failure::because(kind, "nothing was deployed", refused).into());
        }
    };
    let record = &outcome.record;
    progress.finish(format!("{}: {}", args.env, record.describe()));
    if args.json {
        let doc = json!({
            "pipeline": request.pipeline,
            "env": args.env,
            "sha": record.sha,
            "artifact": record.artifact,
            "by": record.by,
            "started_at": record.started_at,
            "at": record.at,
            "phases": record.phases,
            "released": record.released(),
            "result": if record.failed.is_none() { "succeeded" } else { "failed" },
            "reason": record.failed,
            "output": outcome.output,
        });
        println!("{doc:#}");
    }
    match &record.failed {
        None => Ok(()),
        Some(reason) => Err(Failure::failed(format!(
            "the manual deploy of {} to {} failed: {reason}\n{}",
            record.sha.short(),
            args.env,
            tail(&outcome.output, TAIL_LINES)
        ))
        .into()),
    }
}

/// The last `n` non-empty lines of `text`, indented.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

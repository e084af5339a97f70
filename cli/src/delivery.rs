//! `slipway metrics`: DORA's four keys per pipeline, from the release log — the figures
//! `GET /api/pipelines/{name}/metrics` answers, read from the stack like `slipway approvals`.

use anyhow::bail;
use slipway::domain::PipelineName;
use slipway::views::delivery::{self, Figures, MAX_DAYS, Spread};

use crate::stack::StackArgs;

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Only this pipeline (default: every pipeline).
    #[arg(long)]
    pipeline: Option<PipelineName>,
    /// The window, in days up to now.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
    days: u32,
    /// Print the same objects as `GET /api/pipelines/{name}/metrics`, one per pipeline.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: StackArgs,
}

/// `slipway metrics`.
pub async fn metrics(args: MetricsArgs) -> anyhow::Result<()> {
    let app = args.stack.open(true).await?;
    let pipelines: Vec<_> = app
        .config
        .pipelines
        .iter()
        .filter(|p| args.pipeline.as_ref().is_none_or(|name| &p.name == name))
        .collect();
    if let (Some(name), true) = (&args.pipeline, pipelines.is_empty()) {
        bail!("no pipeline is named {name}; the configuration has {}", names(&app));
    }
    for pipeline in pipelines {
        let figures = delivery::pipeline_figures(&app, pipeline, args.days).await?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "pipeline": pipeline.name, "metrics": figures }))?
            );
            continue;
        }
        match figures {
            Some(f) => print!("{}", text(pipeline.name.as_str(), &f)),
            None => println!("{}: no environments", pipeline.name),
        }
    }
    Ok(())
}

fn names(app: &slipway::app::App) -> String {
    app.config
        .pipelines
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The four keys as lines a person reads.
pub fn text(pipeline: &str, f: &Figures) -> String {
    let spread = |s: &Option<Spread>, what: &str| match s {
        Some(s) => format!(
            "median {:#}, p90 {:#} ({} {what})",
            round(s.median),
            round(s.p90),
            s.count
        ),
        None => format!("no {what}"),
    };
    let rate = match f.change_failure_rate {
        Some(rate) => format!(
            "{:.0}% ({} of {} deploys)",
            rate * 100.0,
            f.failed_deployments,
            f.deployments
        ),
        None => "no deploys".to_owned(),
    };
    let mut out = format!("{pipeline} → {}, last {} days\n", f.env, f.days);
    out += &format!(
        "  deployment frequency  {:.2} a day ({} deploys)\n",
        f.deployments_per_day, f.deployments
    );
    out += &format!("  lead time for changes {}\n", spread(&f.lead_time, "commits"));
    if f.commits_without_time > 0 {
        out += &format!(
            "                        ({} commits without a time left out)\n",
            f.commits_without_time
        );
    }
    out += &format!("  change failure rate   {rate}\n");
    out += &format!("  time to restore       {}\n", spread(&f.time_to_restore, "restored"));
    if f.unrestored > 0 {
        out += &format!(
            "                        ({} failing deploys not restored yet)\n",
            f.unrestored
        );
    }
    out
}

/// A duration to the minute, for reading.
fn round(d: jiff::SignedDuration) -> jiff::SignedDuration {
    jiff::SignedDuration::from_secs(d.as_secs() / 60 * 60)
}

//! `slipway runs`, `slipway run ID`, `slipway dead-letters`: read the state and queues
//! directly — the embedded database, or with `--backend aws` the stack's bucket and
//! dead-letter queues; no server needs to be running.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use std::sync::Arc;

use slipway::adapters::aws::s3::S3Store;
use slipway::adapters::aws::sqs::SqsQueues;
use slipway::adapters::local::sqlite::SqliteBackend;
use slipway::app;
use slipway::domain::{PipelineName, RepoName, RunId, StageStatus};
use slipway::ports::{Queue, StateStore};
use slipway::views::{Cursor, RunEntry, run_index};

#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Where the embedded database lives.
    #[arg(long, default_value = ".slipway", env = "SLIPWAY_DATA_DIR")]
    data_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Read the embedded database, or (`aws`) the stack's bucket and queues.
    #[arg(long, value_enum, default_value_t = crate::Backend::Embedded)]
    backend: crate::Backend,
    #[command(flatten)]
    aws: crate::aws::AwsArgs,
}

/// Where runs and dead letters are read from.
type Stores = (Arc<dyn StateStore>, Arc<dyn Queue>);

async fn open(data: &DataArgs) -> anyhow::Result<Stores> {
    if data.backend == crate::Backend::Aws {
        let placeholder = url::Url::parse("http://127.0.0.1/")?;
        let (settings, sdk) = crate::aws::settings(&data.aws, placeholder).await?;
        let store = S3Store::new(slipway::adapters::aws::s3_client(&sdk), settings.bucket.clone());
        let queues = SqsQueues::new(aws_sdk_sqs::Client::new(&sdk), settings.queues.clone());
        return Ok((Arc::new(store), Arc::new(queues)));
    }
    let path = data.data_dir.join(slipway::embedded::DB_FILE);
    if !path.exists() {
        bail!(
            "no slipway database at {}: start `slipway serve` first, or pass --data-dir",
            path.display()
        );
    }
    let db = SqliteBackend::open(&path)?;
    Ok((Arc::new(db.clone()), Arc::new(db)))
}

/// Which page of runs `slipway runs` shows.
#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// Only runs of this repository (owner/name).
    #[arg(long)]
    repo: Option<String>,
    /// Only runs of this pipeline.
    #[arg(long)]
    pipeline: Option<String>,
    /// How many runs to show, newest first (1-200).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=200))]
    limit: u16,
    /// Show the runs older than these: the `next` a previous page printed.
    #[arg(long)]
    before: Option<String>,
}

pub async fn runs(data: &DataArgs, page: &PageArgs) -> anyhow::Result<()> {
    let (store, _) = open(data).await?;
    let repo = page
        .repo
        .as_deref()
        .map(RepoName::parse)
        .transpose()
        .context("--repo")?;
    let cursor: Cursor = match &page.before {
        Some(b) => b.parse().map_err(|e: String| anyhow::anyhow!("--before: {e}"))?,
        None => Cursor::default(),
    };
    // An install upgraded from before the index of runs: index its history once, as the
    // server's first sweep would.
    let tuning = slipway::app::Tuning::default();
    if run_index::backfill(store.as_ref(), &tuning, jiff::Timestamp::now()).await? {
        eprintln!("indexed the runs made before this version of slipway (once)");
    }
    let pipelines = match &page.pipeline {
        Some(p) => vec![PipelineName::parse(p).context("--pipeline")?],
        None => run_index::pipelines(store.as_ref()).await?,
    };
    let (runs, next) = run_index::newest(store.as_ref(), &pipelines, repo.as_ref(), &cursor, page.limit.into()).await?;
    if data.json {
        let list: Vec<_> = runs.iter().map(RunEntry::summary).collect();
        let answer = serde_json::json!({"runs": list, "next": next.map(|c| c.to_string())});
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    println!(
        "{:<28} {:<18} {:<22} {:<20} MESSAGE",
        "RUN", "STATUS", "STAGE", "CREATED"
    );
    for run in &runs {
        println!(
            "{:<28} {:<18} {:<22} {:<20} {}",
            short_id(&run.id),
            run.status.to_string(),
            run.current_stage.as_deref().unwrap_or("-"),
            run.created_at.strftime("%Y-%m-%d %H:%M:%S").to_string(),
            run.message
        );
    }
    if let Some(next) = next {
        println!("\nolder runs: slipway runs --before {next}");
    }
    Ok(())
}

pub async fn run(data: &DataArgs, id: &str) -> anyhow::Result<()> {
    let (store, _) = open(data).await?;
    let matches = run_index::resolve(store.as_ref(), id).await?;
    let id = match matches.as_slice() {
        [one] => one.clone(),
        [] => bail!("no run matches {id:?}; `slipway runs` lists them"),
        many => bail!("{id:?} matches {} runs; give more of the SHA", many.len()),
    };
    let Some((run, _)) = app::load_run(store.as_ref(), &id).await? else {
        bail!("run {id} was listed but could not be read; try again");
    };
    let run = &run;
    if data.json {
        println!("{}", serde_json::to_string_pretty(&slipway::http::detail(run))?);
        return Ok(());
    }
    println!("{} — {}", run.id, run.status());
    println!("  {} {} by {}", run.repo, run.branch, run.commit.author_name);
    println!("  {}", run.commit.message.lines().next().unwrap_or(""));
    if let Some(artifact) = &run.build.artifact {
        println!("  artifact {artifact}");
    }
    println!("\nstages:");
    for stage in &run.stages {
        println!(
            "  {:<22} {:<10} {}",
            stage.label(),
            stage.status.to_string(),
            stage.summary.as_deref().unwrap_or("")
        );
        for check in &stage.checks {
            println!(
                "  {:<22} {} {}: {}",
                "",
                if check.passed { "✔" } else { "✘" },
                check.name,
                check.detail
            );
        }
        if stage.status == StageStatus::Failed
            && let Some(output) = stage.output.as_deref().filter(|o| !o.trim().is_empty())
        {
            let (shown, lines) = tail(output, OUTPUT_LINES);
            let whole = if shown < lines {
                format!("its last {shown} of {lines} lines")
            } else {
                "its output".to_owned()
            };
            println!("  {:<22} {whole} (secrets masked):", "");
            for line in output.lines().skip(lines - shown) {
                println!("  {:<22} │ {line}", "");
            }
        }
    }
    println!("\nhistory:");
    for h in &run.history {
        println!("  {}  {}: {}", h.at.strftime("%Y-%m-%d %H:%M:%S"), h.actor, h.what);
    }
    Ok(())
}

pub async fn dead_letters(data: &DataArgs) -> anyhow::Result<()> {
    let (_, queue) = open(data).await?;
    let dead = queue.dead_letters().await.context("reading dead letters")?;
    if data.json {
        println!("{}", serde_json::to_string_pretty(&dead)?);
        return Ok(());
    }
    if dead.is_empty() {
        println!("no dead letters: every message was handled");
        return Ok(());
    }
    for d in &dead {
        println!(
            "{}  {} queue, {} receives, sent {}: {}",
            d.dead_at, d.queue, d.receive_count, d.sent_at, d.body
        );
    }
    Ok(())
}

/// How many lines of a failed stage's output `slipway run` shows.
const OUTPUT_LINES: usize = 20;

/// How many of `output`'s last lines to show (at most `limit`), and how many it has.
fn tail(output: &str, limit: usize) -> (usize, usize) {
    let lines = output.lines().count();
    (lines.min(limit), lines)
}

pub(crate) fn short_id(id: &RunId) -> String {
    format!("{}-{}", id.pipeline(), id.sha().short())
}

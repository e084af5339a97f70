//! slipway's benchmarks (issue 11): each prints one line — the figure, a baseline measured in
//! the same run on the same machine, their ratio, and the target. `scripts/bench`
//! builds everything in release and runs them all; `scripts/bench webhook` runs one.

mod coldstart;
mod control_room;
mod engine;
mod load;
mod metrics;
mod pages;
mod pages_embedded;
mod report;
mod requests;
mod server;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::report::Outcome;

#[derive(Debug, Parser)]
#[command(
    name = "slipway-bench",
    about = "slipway's benchmarks: figures as ratios to a baseline measured in the same run"
)]
struct Cli {
    /// Print the results as JSON lines instead of text lines.
    #[arg(long, global = true)]
    json: bool,
    /// Where the release binaries `slipway` and `deploy` are. Default: beside this binary.
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// The benchmark to run; all of them when left out.
    #[command(subcommand)]
    bench: Option<Bench>,
}

#[derive(Debug, Clone, Subcommand)]
enum Bench {
    /// Webhook ack latency of `slipway serve` under 200 concurrent signed pushes, vs /healthz.
    Webhook(webhook::Args),
    /// Runs per second end to end in deployment mode, vs the cost of spawning /bin/true.
    Engine(engine::Args),
    /// Cold start time and memory of a Lambda function, vs a Python + boto3 function.
    Coldstart(coldstart::Args),
    /// AWS requests per complete delivery-mode run, vs the floor of 21.
    Requests,
    /// AWS requests and time of the runs list and the approval page at 10,000 runs, vs at 100.
    Pages(pages::Args),
    /// Time of the runs list on `slipway serve` (embedded) at 10,000 runs, vs at 100.
    PagesEmbedded(pages_embedded::Args),
    /// Time of `/` and `/approvals` on `slipway serve` (embedded) at 10,000 runs, vs at 100.
    ControlRoom(control_room::Args),
    /// Time of a pipeline's DORA figures over 90 days at 10,000 runs and releases, vs at 100.
    Metrics(metrics::Args),
}

impl Bench {
    fn all() -> Vec<Bench> {
        vec![
            Bench::Webhook(webhook::Args::default()),
            Bench::Engine(engine::Args::default()),
            Bench::Coldstart(coldstart::Args::default()),
            Bench::Requests,
            Bench::Pages(pages::Args::default()),
            Bench::PagesEmbedded(pages_embedded::Args::default()),
            Bench::ControlRoom(control_room::Args::default()),
            Bench::Metrics(metrics::Args::default()),
        ]
    }
}

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
}

impl Bins {
    pub fn get(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        anyhow::ensure!(
            path.is_file(),
            "{} is missing: build it first (scripts/bench builds everything in release)",
            path.display()
        );
        Ok(path)
    }
}

async fn run(bench: Bench, bins: &Bins) -> anyhow::Result<Outcome> {
    match bench {
        Bench::Webhook(args) => webhook::run(&args, bins).await,
        Bench::Engine(args) => engine::run(&args, bins).await,
        Bench::Coldstart(args) => coldstart::run(&args, bins).await,
        Bench::Requests => requests::run().await,
        Bench::Pages(args) => pages::run(&args).await,
        Bench::PagesEmbedded(args) => pages_embedded::run(&args, bins).await,
        Bench::ControlRoom(args) => control_room::run(&args, bins).await,
        Bench::Metrics(args) => metrics::run(&args, bins).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bins = match cli.bin_dir.map_or_else(
        || {
            std::env::current_exe()
                .context("cannot find this program's own path")
                .map(|exe| exe.parent().map(PathBuf::from).unwrap_or_default())
        },
        Ok,
    ) {
        Ok(dir) => Bins { dir },
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let benches = cli.bench.map_or_else(Bench::all, |b| vec![b]);
    let mut failed = false;
    for bench in benches {
        match run(bench.clone(), &bins).await {
            Ok(outcome) => outcome.print(cli.json),
            Err(e) => {
                failed = true;
                eprintln!("error: {bench:?} failed: {e:#}");
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

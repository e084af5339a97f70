//! `control-room`: the wall time of `GET /` and `GET /approvals` on the real `slipway serve`
//! (embedded backend) with `--runs` runs of history, next to the same pages at 100 runs. The
//! history is what a pipeline has after months: signed pushes whose builds CI reports red,
//! tidied by the server's own sweep, and one run waiting for production's approval.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::Bins;
use crate::load;
use crate::pages_embedded::page_ms;
use crate::report::{Outcome, ratio};
use crate::server::{self, Server};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many runs of history the pages are measured at.
    #[arg(long, default_value_t = 10_000)]
    pub runs: usize,
    /// How many pushes are in flight at once while the history is made.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How many times each page is read at each size (the median is shown).
    #[arg(long, default_value_t = 50)]
    pub reads: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            runs: 10_000,
            concurrency: 16,
            reads: 50,
        }
    }
}

const BASELINE_RUNS: usize = 100;
/// Both pages render in under this, at any history.
const TARGET_MS: f64 = 20.0;

pub async fn run(args: &Args, bins: &Bins) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.runs > BASELINE_RUNS, "--runs must be more than {BASELINE_RUNS}");
    let server = Server::start_with(&bins.get("slipway")?, server::DELIVERY_CONFIG).await?;
    let client = load::client(args.concurrency)?;
    let base = server.base.as_str();

    history(&client, base, 0..BASELINE_RUNS - 1, args.concurrency).await?;
    waiting(&client, base, BASELINE_RUNS - 1).await?;
    swept().await;
    let small = [
        page_ms(&client, base, "/", args.reads).await?,
        page_ms(&client, base, "/approvals", args.reads).await?,
    ];

    let seeding = Instant::now();
    history(&client, base, BASELINE_RUNS..args.runs - 1, args.concurrency).await?;
    waiting(&client, base, args.runs - 1).await?;
    swept().await;
    let seeded_s = seeding.elapsed().as_secs_f64();
    let large = [
        page_ms(&client, base, "/", args.reads).await?,
        page_ms(&client, base, "/approvals", args.reads).await?,
    ];

    let ratios = [ratio(large[0], small[0]), ratio(large[1], small[1])];
    let met = large.iter().all(|ms| *ms < TARGET_MS);
    Ok(Outcome {
        name: "control-room",
        figure: format!(
            "at {} runs: / {:.1} ms, /approvals {:.1} ms",
            args.runs, large[0], large[1]
        ),
        baseline: format!(
            "at {BASELINE_RUNS} runs: / {:.1} ms, /approvals {:.1} ms",
            small[0], small[1]
        ),
        ratio: format!("{:.1}x, {:.1}x", ratios[0], ratios[1]),
        target: format!("each < {TARGET_MS} ms median at {} runs", args.runs),
        met,
        values: json!({
            "runs": args.runs, "baseline_runs": BASELINE_RUNS,
            "home_ms": large[0], "approvals_ms": large[1],
            "baseline_home_ms": small[0], "baseline_approvals_ms": small[1],
            "reads": args.reads, "seconds_to_seed": seeded_s,
        }),
    })
}

/// Commits `range`, each pushed and then reported red by CI, `concurrency` at a time.
pub(crate) async fn history(
    client: &reqwest::Client,
    base: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<()> {
    crate::pages_embedded::push(client, base, range.clone(), concurrency).await?;
    let (client, base) = (client.clone(), base.to_owned());
    crate::load::each_index(range, concurrency, move |i| {
        let (client, base) = (client.clone(), base.clone());
        async move { ci(&client, &base, i, "failure").await }
    })
    .await
}

async fn ci(client: &reqwest::Client, base: &str, i: usize, status: &str) -> anyhow::Result<()> {
    let signed = server::signed_ci(&server::sha(i), status);
    crate::engine::send(|| server::ci_request(client, base, &signed), StatusCode::OK).await?;
    Ok(())
}

/// Commit `i` pushed and built green: it deploys to staging and waits for production's
/// approval, which is what `/approvals` shows.
async fn waiting(client: &reqwest::Client, base: &str, i: usize) -> anyhow::Result<()> {
    crate::pages_embedded::push(client, base, i..i + 1, 1).await?;
    ci(client, base, i, "success").await?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let answer = client
            .get(format!("{base}/api/approvals"))
            .bearer_auth(server::API_TOKEN)
            .send()
            .await?;
        let body: serde_json::Value = answer.json().await?;
        if body["approvals"].as_array().is_some_and(|a| !a.is_empty()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("run {i} did not reach production's approval within 30 s")
}

/// Waits until the server's sweep (every 30 s) has dropped the finished runs from the index of
/// unfinished runs, as it does in any install: `/approvals` reads the unfinished ones.
async fn swept() {
    // The sweep runs on its own clock; two periods always include a whole pass.
    tokio::time::sleep(2 * slipway::worker::SWEEP_EVERY + Duration::from_secs(5)).await;
}

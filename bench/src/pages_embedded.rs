//! `pages-embedded`: the wall time of `GET /api/runs?limit=50` on the real `slipway serve`
//! (embedded backend) with `--runs` runs of history, next to the same page at 100 runs. The
//! history is made by signed pushes through the server, as GitHub makes it.

use std::time::Instant;

use reqwest::StatusCode;
use serde_json::json;

use crate::Bins;
use crate::load;
use crate::report::{Outcome, median, ratio};
use crate::server::{self, Server};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many runs of history the page is measured at.
    #[arg(long, default_value_t = 10_000)]
    pub runs: usize,
    /// How many pushes are in flight at once while the history is made.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How many times the page is read at each size (the median is shown).
    #[arg(long, default_value_t = 20)]
    pub reads: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            runs: 10_000,
            concurrency: 16,
            reads: 20,
        }
    }
}

const BASELINE_RUNS: usize = 100;
/// Flat: at most this many times the time at 100 runs.
const TARGET_RATIO: f64 = 2.0;

pub async fn run(args: &Args, bins: &Bins) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.runs > BASELINE_RUNS, "--runs must be more than {BASELINE_RUNS}");
    let server = Server::start(&bins.get("slipway")?).await?;
    let client = load::client(args.concurrency)?;
    push(&client, &server.base, 0..BASELINE_RUNS, args.concurrency).await?;
    let small = page_ms(&client, &server.base, RUNS_PAGE, args.reads).await?;
    let seeding = Instant::now();
    push(&client, &server.base, BASELINE_RUNS..args.runs, args.concurrency).await?;
    let seeded_s = seeding.elapsed().as_secs_f64();
    let large = page_ms(&client, &server.base, RUNS_PAGE, args.reads).await?;
    let r = ratio(large, small);
    Ok(Outcome {
        name: "pages-embedded",
        figure: format!("runs list at {} runs {large:.1} ms", args.runs),
        baseline: format!("at {BASELINE_RUNS} runs {small:.1} ms"),
        ratio: format!("{r:.1}x"),
        target: format!("flat (<= {TARGET_RATIO}x)"),
        met: r <= TARGET_RATIO,
        values: json!({
            "runs": args.runs, "baseline_runs": BASELINE_RUNS, "ms": large, "baseline_ms": small,
            "ratio": r, "reads": args.reads, "seconds_to_seed": seeded_s,
        }),
    })
}

/// The page this benchmark times.
const RUNS_PAGE: &str = "/api/runs?limit=50";

/// The median time of `GET path` (with the API token), read `reads` times one after another.
pub(crate) async fn page_ms(client: &reqwest::Client, base: &str, path: &str, reads: usize) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(reads);
    for _ in 0..reads.max(1) {
        let started = Instant::now();
        let answer = client
            .get(format!("{base}{path}"))
            .bearer_auth(server::API_TOKEN)
            .send()
            .await?;
        let status = answer.status();
        let body = answer.bytes().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            status == StatusCode::OK,
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(median(&mut times))
}

/// Pushes commits `range`, `concurrency` at a time; each opens a run.
pub(crate) async fn push(
    client: &reqwest::Client,
    base: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (client, base) = (client.clone(), base.to_owned());
    crate::load::each_index(range, concurrency, move |i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let signed = server::signed_push(&server::sha(i));
            let delivery = format!("history-{i}");
            crate::engine::send(
                || server::push_request(&client, &base, &delivery, &signed),
                StatusCode::CREATED,
            )
            .await?;
            Ok(())
        }
    })
    .await
}

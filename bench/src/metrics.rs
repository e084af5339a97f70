//! `metrics`: the wall time of a pipeline's DORA figures over 90 days
//! (`GET /api/pipelines/shop/metrics?days=90`) on the real `slipway serve` (embedded backend),
//! with `--runs` runs of history and as many production releases in those 90 days — every
//! run released, three commits each: more than any team ships — next to the same at 100.
//!
//! The runs are signed pushes whose builds CI reports red, as in `control-room`. The releases
//! are written into the release log's records as slipway writes them (one record per month),
//! in the server's own database, since deploying 10,000 runs for real would take hours; the
//! figures read that log and nothing else.

use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::Bins;
use crate::load;
use crate::pages_embedded::page_ms;
use crate::report::{Outcome, ratio};
use crate::server::{self, Server};
use slipway::app::{Tuning, update_record};
use slipway::domain::{EnvName, PipelineName, RunId};
use slipway::ports::StoreKey;
use slipway::views::release_log::{Logged, Month, Shipped, month_of};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many runs of history, and production releases in the last 90 days.
    #[arg(long, default_value_t = 10_000)]
    pub runs: usize,
    /// How many pushes are in flight at once while the history is made.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How many times the figures are read at each size (the median is shown).
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
/// The figures compute in under this, at any history.
const TARGET_MS: f64 = 50.0;
const PAGE: &str = "/api/pipelines/shop/metrics?days=90";

pub async fn run(args: &Args, bins: &Bins) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.runs > BASELINE_RUNS, "--runs must be more than {BASELINE_RUNS}");
    let server = Server::start_with(&bins.get("slipway")?, server::DELIVERY_CONFIG).await?;
    let client = load::client(args.concurrency)?;
    let base = server.base.as_str();
    let database = server.data_dir().join(slipway::embedded::DB_FILE);

    crate::control_room::history(&client, base, 0..BASELINE_RUNS, args.concurrency).await?;
    releases(&database, 0..BASELINE_RUNS, BASELINE_RUNS).await?;
    let small = figures_ms(&client, base, args.reads, BASELINE_RUNS).await?;

    crate::control_room::history(&client, base, BASELINE_RUNS..args.runs, args.concurrency).await?;
    releases(&database, 0..args.runs, args.runs).await?;
    let large = figures_ms(&client, base, args.reads, args.runs).await?;

    Ok(Outcome {
        name: "metrics",
        figure: format!("at {} runs and releases: {large:.1} ms", args.runs),
        baseline: format!("at {BASELINE_RUNS}: {small:.1} ms"),
        ratio: format!("{:.1}x", ratio(large, small)),
        target: format!(
            "< {TARGET_MS} ms median at {} runs (DORA's four keys over 90 days)",
            args.runs
        ),
        met: large < TARGET_MS,
        values: json!({
            "runs": args.runs, "baseline_runs": BASELINE_RUNS,
            "ms": large, "baseline_ms": small, "reads": args.reads,
        }),
    })
}

/// The median time of the figures, checked to count `releases` deploys.
async fn figures_ms(client: &reqwest::Client, base: &str, reads: usize, releases: usize) -> anyhow::Result<f64> {
    let answer: serde_json::Value = client
        .get(format!("{base}{PAGE}"))
        .bearer_auth(server::API_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        answer["metrics"]["deployments"] == json!(releases),
        "the figures count {} deploys, not {releases}: {answer}",
        answer["metrics"]["deployments"]
    );
    page_ms(client, base, PAGE, reads).await
}

/// Production's release log holding releases of runs `range`, `of` of them spread evenly
/// over the last 89 days, each shipping its run's commit and two more; every tenth found
/// failing, and put back by the release before it an hour later.
async fn releases(database: &Path, range: std::ops::Range<usize>, of: usize) -> anyhow::Result<()> {
    let store = slipway::adapters::local::sqlite::SqliteBackend::open(database)?;
    let pipeline: PipelineName = "shop".parse()?;
    let env: EnvName = "production".parse()?;
    let now = Timestamp::now();
    let span = SignedDuration::from_hours(24 * 89);
    let step = span / i32::try_from(of.max(1))?;
    let mut months: std::collections::BTreeMap<(i16, i8), Vec<Logged>> = Default::default();
    for i in range {
        let sha = server::sha(i);
        let at = now - span + step * i32::try_from(i)?;
        let run: RunId = format!("shop-{sha}").parse()?;
        let commit = |n: usize| -> anyhow::Result<Shipped> {
            Ok(Shipped {
                sha: format!("{:02x}{}", n, &sha[2..]).parse()?,
                at: Some(at - SignedDuration::from_mins(30 * i64::try_from(n)? + 10)),
            })
        };
        let failing = i % 10 == 9;
        months.entry(month_of(at)).or_default().push(Logged {
            run: run.clone(),
            sha: sha.parse()?,
            opened_at: at - SignedDuration::from_mins(20),
            at,
            put_back_by: None,
            failed_at: failing.then(|| at + SignedDuration::from_mins(5)),
            shipped: vec![commit(2)?, commit(1)?, commit(0)?],
            shipped_more: false,
        });
        if failing && i > 0 {
            let back = at + SignedDuration::from_hours(1);
            let before = server::sha(i - 1);
            months.entry(month_of(back)).or_default().push(Logged {
                run: format!("shop-{before}").parse()?,
                sha: before.parse()?,
                opened_at: at - SignedDuration::from_mins(40),
                at: back,
                put_back_by: Some(run),
                failed_at: None,
                shipped: Vec::new(),
                shipped_more: false,
            });
        }
    }
    for ((year, month), mut entries) in months {
        entries.sort_by_key(|e| e.at);
        let key = StoreKey::release_log(&pipeline, &env, year, month);
        update_record(&store, &Tuning::default(), &key, "the release log", |m: &mut Month| {
            m.releases = entries.clone();
        })
        .await?;
    }
    Ok(())
}

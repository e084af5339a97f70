//! `requests`: how many AWS requests slipway's functions make for one complete delivery-mode
//! run — push → CI → staging deployed and smoke-tested → approval → production → released —
//! counted by a proxy in front of moto, on warm containers (the test `aws_requests` holds the
//! same count to a limit). The baseline is the floor issue 11 names: one read, one write and
//! one send for each of the run's 7 steps.

use serde_json::json;
use slipway_tests::aws_run::CountedStack;
use slipway_tests::{CONFIG, SHA, SHA2};

use crate::report::{Outcome, ratio};

/// One read, one write, one send per step; 7 steps.
const FLOOR: u64 = 21;
const TARGET: u64 = 25;

pub async fn run() -> anyhow::Result<Outcome> {
    let stack = CountedStack::start(CONFIG).await;
    // As on an install, the sweeper has run once (it runs every minute).
    slipway::sweep::run_once(&stack.functions.queues)
        .await
        .map_err(|e| anyhow::anyhow!("the first sweep: {e}"))?;
    stack.proxy.take();
    // The first run fills the containers' secret caches; the second is a warm run.
    stack.complete_run(SHA, "bench-1").await;
    let first = stack.proxy.take();
    // The sweeper passes between the two, as it does every minute on an install (and in the
    // test `aws_requests`): the first run, finished, leaves the index of unfinished runs.
    slipway::sweep::run_once(&stack.functions.queues)
        .await
        .map_err(|e| anyhow::anyhow!("the sweep after the first run: {e}"))?;
    let swept = stack.proxy.take();
    stack.complete_run(SHA2, "bench-2").await;
    let warm = stack.proxy.take();
    let count = warm.total();
    let r = ratio(count as f64, FLOOR as f64);
    Ok(Outcome {
        name: "requests",
        figure: format!(
            "{count} AWS requests per run (warm; {} on cold containers; a sweep pass {})",
            first.total(),
            swept.total()
        ),
        baseline: format!("floor {FLOOR} (read + write + send x 7 steps)"),
        ratio: format!("{r:.1}x"),
        target: format!("<= {TARGET} requests"),
        met: count <= TARGET,
        values: json!({
            "requests": count, "cold_requests": first.total(), "sweep_pass": swept.total(),
            "floor": FLOOR, "ratio": r,
            "by_operation": warm.0,
        }),
    })
}

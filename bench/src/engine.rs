//! `engine`: runs per second end to end through the real `slipway serve` — a signed push and a
//! signed CI success per run, the workers deploying with `/bin/true` — from the first push to
//! the last run finished, next to the cost of spawning `/bin/true` from Rust.
//!
//! The configuration is in deployment mode (no approvals) with ONE environment and no smoke
//! checks, so a released run is exactly one deploy. A newer run supersedes an older one still
//! waiting for the environment: runs end `released` or `superseded`, and both count as runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jiff::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::Bins;
use crate::load;
use crate::report::{Outcome, ratio};
use crate::server::{self, Server};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many runs (each a distinct commit).
    #[arg(long, default_value_t = 500)]
    pub runs: usize,
    /// How many runs are being pushed and reported at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How many times /bin/true is spawned for the baseline.
    #[arg(long, default_value_t = 500)]
    pub spawns: usize,
    /// How long, in seconds, the runs may take to finish after the last CI callback.
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            runs: 500,
            concurrency: 16,
            spawns: 500,
            wait: 120,
        }
    }
}

const TARGET_RUNS_PER_S: f64 = 1_000.0;
const TARGET_RATIO: f64 = 1.5;
/// How often the runs list is read while waiting: rarely enough not to compete with the work.
const POLL_EVERY: Duration = Duration::from_millis(250);

pub async fn run(args: &Args, bins: &Bins) -> anyhow::Result<Outcome> {
    let spawn_ms = spawn_cost(args.spawns)?;

    let server = Server::start(&bins.get("slipway")?).await?;
    let client = load::client(args.concurrency)?;
    let shas: Vec<String> = (0..args.runs).map(server::sha).collect();
    let prepared: Arc<Vec<_>> = Arc::new(
        shas.iter()
            .map(|sha| (server::signed_push(sha), server::signed_ci_success(sha)))
            .collect(),
    );

    let started = Timestamp::now();
    let clock = Instant::now();
    let base = server.base.clone();
    // Each client pushes a commit, then reports its build green.
    let retried = Arc::new(AtomicUsize::new(0));
    load::each_index(0..prepared.len(), args.concurrency, {
        let (client, base, retried) = (client.clone(), base.clone(), retried.clone());
        move |i| {
            let (client, base, prepared, retried) = (client.clone(), base.clone(), prepared.clone(), retried.clone());
            async move {
                let (push, ci) = &prepared[i];
                let delivery = format!("engine-{i}");
                let push = send(
                    || server::push_request(&client, &base, &delivery, push),
                    StatusCode::CREATED,
                )
                .await?;
                let ci = send(|| server::ci_request(&client, &base, ci), StatusCode::OK).await?;
                retried.fetch_add(push + ci, Ordering::Relaxed);
                Ok(())
            }
        }
    })
    .await?;
    let sent = clock.elapsed();

    // Wait until every run has finished; read the list rarely.
    let runs = loop {
        let runs = every_run(&client, &base).await?;
        let finished = runs
            .iter()
            .filter(|r| !matches!(r["status"].as_str(), Some("in_progress" | "awaiting_approval")))
            .count();
        if runs.len() >= args.runs && finished == runs.len() {
            break runs;
        }
        let wait = Duration::from_secs(args.wait);
        if clock.elapsed() > sent + wait {
            let stuck: Vec<&Value> = runs
                .iter()
                .filter(|r| matches!(r["status"].as_str(), Some("in_progress" | "awaiting_approval")))
                .collect();
            let first = match stuck.first().and_then(|r| r["id"].as_str()) {
                Some(id) => {
                    client
                        .get(format!("{base}/api/runs/{id}"))
                        .bearer_auth(server::API_TOKEN)
                        .send()
                        .await?
                        .text()
                        .await?
                }
                None => String::new(),
            };
            anyhow::bail!(
                "only {finished} of {} runs ({} listed) finished within {wait:?} of the last CI callback; the first unfinished:\n{first}",
                args.runs,
                runs.len()
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    };

    // The end is when the last run finished by its own record, not when the poll saw it.
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut last = started;
    for run in &runs {
        *by_status
            .entry(run["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        let updated: Timestamp = run["updated_at"]
            .as_str()
            .context("a run without updated_at")?
            .parse()?;
        last = last.max(updated);
    }
    let elapsed = (last - started).total(jiff::Unit::Second)?;
    let released = by_status.get("released").copied().unwrap_or(0);
    let superseded = by_status.get("superseded").copied().unwrap_or(0);
    let ended = released + superseded;
    anyhow::ensure!(
        ended == runs.len(),
        "runs ended other than released or superseded: {by_status:?}\n{}",
        crate::webhook::tail(&server.log())
    );
    let runs_per_s = ended as f64 / elapsed;
    let releases_per_s = released as f64 / elapsed;
    let ms_per_release = elapsed * 1000.0 / released.max(1) as f64;
    let r = ratio(ms_per_release, spawn_ms);
    Ok(Outcome {
        name: "engine",
        figure: format!(
            "{runs_per_s:.0} runs/s, {releases_per_s:.0} releases/s ({released} released, {superseded} superseded of {} in {elapsed:.2} s), {ms_per_release:.2} ms per release",
            runs.len()
        ),
        baseline: format!("spawn /bin/true {spawn_ms:.2} ms"),
        ratio: format!("{r:.1}x"),
        target: format!(">= {TARGET_RUNS_PER_S:.0} runs/s and <= {TARGET_RATIO}x spawn cost per release"),
        met: runs_per_s >= TARGET_RUNS_PER_S && r <= TARGET_RATIO,
        values: json!({
            "runs": runs.len(), "released": released, "superseded": superseded,
            "seconds": elapsed, "runs_per_s": runs_per_s, "releases_per_s": releases_per_s,
            "ms_per_release": ms_per_release, "spawn_ms": spawn_ms, "ratio": r,
            "environments_per_run": 1, "requests_retried": retried.load(Ordering::Relaxed),
        }),
    })
}

/// Every run, read page by page (`{"runs": [...], "next": <cursor or null>}`; an API that
/// answers every run at once has no `next`).
async fn every_run(client: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Value>> {
    let mut runs = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{base}/api/runs"))
            .bearer_auth(server::API_TOKEN)
            .query(&[("limit", "200")]);
        if let Some(cursor) = &before {
            request = request.query(&[("before", cursor)]);
        }
        let page: Value = request.send().await?.error_for_status()?.json().await?;
        runs.extend(page["runs"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(cursor) if before.as_deref() != Some(cursor) => before = Some(cursor.to_owned()),
            _ => return Ok(runs),
        }
    }
}

/// Sends a request until it is answered `expected`, as a git host or CI that retries does:
/// a 503 (the run is being changed by others) is sent again after a moment. Returns how many
/// times it was sent again.
pub(crate) async fn send(request: impl Fn() -> reqwest::RequestBuilder, expected: StatusCode) -> anyhow::Result<usize> {
    for retries in 0..20 {
        let answer = request().send().await?;
        let status = answer.status();
        if status == expected {
            return Ok(retries);
        }
        let body = answer.text().await.unwrap_or_default();
        anyhow::ensure!(
            status == StatusCode::SERVICE_UNAVAILABLE,
            "answered {status}, not {expected}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("still refused after 20 attempts")
}

/// The mean cost of spawning `/bin/true` and waiting for it (fork, exec, wait), in ms.
fn spawn_cost(times: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..times {
        let status = std::process::Command::new("/bin/true")
            .status()
            .context("cannot run /bin/true")?;
        anyhow::ensure!(status.success(), "/bin/true failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / times.max(1) as f64)
}

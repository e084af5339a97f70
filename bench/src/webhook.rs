//! `webhook`: how long `slipway serve` takes to acknowledge a signed GitHub push (each opens a
//! run), under `concurrency` concurrent deliveries, next to `GET /healthz` on the same server
//! at the same concurrency.
//!
//! One load of 2,000 pushes lasts about 0.15 s on two cores, so its p99 is its 20 slowest
//! pushes and one pause of the machine decides it: consecutive loads of the same build gave
//! p99s from 11 to 43 ms. So the benchmark makes `loads` of them, each on a server of its own
//! started afresh (the same history for each), and its figures are the quantiles of every
//! latency of all of them together — of 10,000 pushes and 10,000 `/healthz` requests by
//! default — with each load's own p99 shown beside.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use reqwest::StatusCode;
use serde_json::json;

use crate::Bins;
use crate::load::{self, ms};
use crate::report::{Outcome, ratio};
use crate::server::{self, Server};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many pushes (each a distinct commit) and how many /healthz requests in one load.
    #[arg(long, default_value_t = 2_000)]
    pub requests: usize,
    /// How many are in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// How many loads, each on a server started afresh; the figures pool all their latencies.
    #[arg(long, default_value_t = 5)]
    pub loads: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            requests: 2_000,
            concurrency: 200,
            loads: 5,
        }
    }
}

/// The targets: p99 at most 15 ms, and at most 3× the p99 of /healthz.
const TARGET_P99_MS: f64 = 15.0;
const TARGET_RATIO: f64 = 3.0;

/// What one load on a fresh server got back.
struct Load {
    health: load::Answered,
    acks: load::Answered,
}

pub async fn run(args: &Args, bins: &Bins) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.loads > 0, "--loads must be at least 1");
    let bin = bins.get("slipway")?;
    // Signed once, before any clock starts: the loads measure slipway, not the client's HMACs.
    // Every load's server is new and shares the benchmarks' secret, so each takes the same.
    let pushes: Arc<Vec<_>> = Arc::new(
        (0..args.requests)
            .map(|i| server::signed_push(&server::sha(i)))
            .collect(),
    );
    let mut each_p99 = Vec::with_capacity(args.loads);
    let mut each_h99 = Vec::with_capacity(args.loads);
    let (mut health, mut acks) = (load::Answered::empty()?, load::Answered::empty()?);
    for _ in 0..args.loads {
        let one = one_load(args, &bin, pushes.clone()).await?;
        each_p99.push(ms(&one.acks.latencies, 0.99));
        each_h99.push(ms(&one.health.latencies, 0.99));
        health.add(one.health)?;
        acks.add(one.acks)?;
    }
    // A push refused (503 when its run could not be opened in time) is a failed delivery:
    // GitHub does not send it again by itself.
    let refused = acks.refused(StatusCode::CREATED);
    let (health, statuses, first_refusal) = (health.latencies, acks.statuses, acks.first_refusal);
    let acks = acks.latencies;
    let total = args.requests * args.loads;

    let (p50, p99) = (ms(&acks, 0.50), ms(&acks, 0.99));
    let (h50, h99) = (ms(&health, 0.50), ms(&health, 0.99));
    let r = ratio(p99, h99);
    Ok(Outcome {
        name: "webhook",
        figure: format!(
            "ack p99 {p99:.1} ms (p50 {p50:.1} ms; {total} pushes in {} loads, each load's p99 {}){}",
            args.loads,
            span(&each_p99),
            if refused == 0 {
                String::new()
            } else {
                format!(", {refused} of {total} refused")
            }
        ),
        baseline: format!(
            "healthz p99 {h99:.1} ms (p50 {h50:.1} ms; each load's p99 {})",
            span(&each_h99)
        ),
        ratio: format!("{r:.1}x"),
        target: format!("p99 <= {TARGET_P99_MS} ms and <= {TARGET_RATIO}x"),
        met: refused == 0 && p99 <= TARGET_P99_MS && r <= TARGET_RATIO,
        values: json!({
            "requests": args.requests, "concurrency": args.concurrency, "loads": args.loads,
            "ack_p50_ms": p50, "ack_p99_ms": p99, "ack_max_ms": ms(&acks, 1.0),
            "each_load_ack_p99_ms": each_p99, "each_load_healthz_p99_ms": each_h99,
            "statuses": statuses, "refused": refused,
            "first_refusal": first_refusal,
            "healthz_p50_ms": h50, "healthz_p99_ms": h99, "ratio_p99": r,
        }),
    })
}

/// One load on a server of its own: `/healthz`, then `pushes` (signed bodies and signatures).
async fn one_load(args: &Args, bin: &std::path::Path, pushes: Arc<Vec<(Bytes, String)>>) -> anyhow::Result<Load> {
    let server = Server::start(bin).await?;

    // Warm up: the server's threads and caches, so neither measurement pays for them.
    let healthz = |_| get("/healthz");
    load::closed_loop(&server.base, args.concurrency, args.concurrency, healthz).await?;

    let health = load::closed_loop(&server.base, args.requests, args.concurrency, healthz).await?;
    anyhow::ensure!(
        health.refused(StatusCode::OK) == 0,
        "/healthz answered {:?}",
        health.statuses
    );

    let acks = load::closed_loop(&server.base, args.requests, args.concurrency, move |i| {
        let (body, signature) = &pushes[i];
        server::push_headers(&format!("bench-{i}"), signature)
            .into_iter()
            .fold(http::Request::post(server::PUSH_PATH), |request, (name, value)| {
                request.header(name, value)
            })
            .body(Full::new(body.clone()))
            .expect("a valid request")
    })
    .await
    .map_err(|e| e.context(format!("server log:\n{}", tail(&server.log()))))?;
    Ok(Load { health, acks })
}

/// The least and the greatest of `values`, in milliseconds: `11.2-43.1 ms`.
fn span(values: &[f64]) -> String {
    let least = values.iter().copied().fold(f64::INFINITY, f64::min);
    let most = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{least:.1}-{most:.1} ms")
}

/// The last lines of a log, for an error message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A GET of `path` with no body.
fn get(path: &str) -> load::Request {
    http::Request::get(path).body(Full::default()).expect("a valid request")
}

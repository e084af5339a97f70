//! `webhook`: how long `slipway serve` takes to acknowledge a signed GitHub push (each opens a
//! run), under `concurrency` concurrent deliveries, next to `GET /healthz` on the same server
//! at the same concurrency.

use std::sync::Arc;

use http_body_util::Full;
use reqwest::StatusCode;
use serde_json::json;

use crate::Bins;
use crate::load::{self, ms};
use crate::report::{Outcome, ratio};
use crate::server::{self, Server};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many pushes (each a distinct commit) and how many /healthz requests.
    #[arg(long, default_value_t = 2_000)]
    pub requests: usize,
    /// How many are in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            requests: 2_000,
            concurrency: 200,
        }
    }
}

/// The targets: p99 at most 15 ms, and at most 3× the p99 of /healthz.
const TARGET_P99_MS: f64 = 15.0;
const TARGET_RATIO: f64 = 3.0;

pub async fn run(args: &Args, bins: &Bins) -> anyhow::Result<Outcome> {
    let server = Server::start(&bins.get("slipway")?).await?;

    // Signed before the clock starts: the load measures slipway, not the client's HMACs.
    let pushes: Arc<Vec<_>> = Arc::new(
        (0..args.requests)
            .map(|i| server::signed_push(&server::sha(i)))
            .collect(),
    );

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
    // A push refused (503 when its run could not be opened in time) is a failed delivery:
    // GitHub does not send it again by itself.
    let refused = acks.refused(StatusCode::CREATED);
    let (health, acks_answered) = (health.latencies, &acks);
    let acks = &acks_answered.latencies;

    let (p50, p99) = (ms(acks, 0.50), ms(acks, 0.99));
    let (h50, h99) = (ms(&health, 0.50), ms(&health, 0.99));
    let r = ratio(p99, h99);
    Ok(Outcome {
        name: "webhook",
        figure: format!(
            "ack p99 {p99:.1} ms (p50 {p50:.1} ms){}",
            if refused == 0 {
                String::new()
            } else {
                format!(", {refused} of {} refused", args.requests)
            }
        ),
        baseline: format!("healthz p99 {h99:.1} ms (p50 {h50:.1} ms)"),
        ratio: format!("{r:.1}x"),
        target: format!("p99 <= {TARGET_P99_MS} ms and <= {TARGET_RATIO}x"),
        met: refused == 0 && p99 <= TARGET_P99_MS && r <= TARGET_RATIO,
        values: json!({
            "requests": args.requests, "concurrency": args.concurrency,
            "ack_p50_ms": p50, "ack_p99_ms": p99, "ack_max_ms": ms(acks, 1.0),
            "statuses": acks_answered.statuses, "refused": refused,
            "first_refusal": acks_answered.first_refusal,
            "healthz_p50_ms": h50, "healthz_p99_ms": h99, "ratio_p99": r,
        }),
    })
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

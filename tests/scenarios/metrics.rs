//! Operational metrics: `GET /metrics` answers Prometheus text exposition to a scraper with
//! the `[metrics] token`, and nobody else; what it counts is what the pipeline did.
//!
//! The counters and histograms are per process (one recorder for every app of this test
//! binary, see `slipway::metrics`), and other tests run beside these: what is checked of them
//! is how much they grew while this test worked, at least. The gauges are read from the
//! scraped app's own store and queue, and are checked exactly.

use axum::body::Body;
use http::{Request, StatusCode};
use jiff::SignedDuration;
use prometheus_parse::{Sample, Scrape, Value};
use slipway::metrics::{DEAD_LETTERS, NOTIFICATION_FAILURES, QUEUE_MESSAGES, RUNS, STAGE_DURATION, WEBHOOK_DELIVERIES};
use slipway::ports::QueueName;
use slipway_tests::{CONFIG, Pipeline, SHA};

const TOKEN: &str = "scrape-me-8f3a";

/// `CONFIG` with a `[metrics]` section, the token's parameter set.
async fn with_metrics() -> Pipeline {
    let config = CONFIG.replacen(
        "[[pipelines]]",
        "[metrics]\ntoken = \"/slipway/metrics-token\"\n\n[[pipelines]]",
        1,
    );
    let p = Pipeline::with_config(&config).await;
    p.secrets.set("/slipway/metrics-token", TOKEN);
    p
}

fn scrape_request(authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::get("/metrics");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.body(Body::empty()).expect("valid request")
}

/// Scrapes `/metrics` with the token and parses the answer as Prometheus text.
async fn scrape(p: &Pipeline) -> Vec<Sample> {
    let answer = p.send(scrape_request(Some(&format!("Bearer {TOKEN}")))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let content_type = answer.headers["content-type"].to_str().expect("ASCII");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let lines = answer.body.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines).expect("Prometheus text exposition").samples
}

fn find<'a>(samples: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// A counter's or gauge's value (0 when the series is not there yet).
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(samples, metric, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{metric} is not a single number: {other:?}"),
    }
}

/// How many observations a histogram series holds (its `+Inf` bucket; 0 when not there yet).
fn observations(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(samples, metric, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Histogram(buckets)) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .expect("a +Inf bucket"),
        Some(other) => panic!("{metric} is not a histogram: {other:?}"),
    }
}

#[tokio::test]
async fn a_scraper_with_the_token_reads_what_the_pipeline_did() {
    let p = with_metrics().await;
    // The sweep indexes the runs (slipway serve sweeps at start): only then are unfinished
    // runs counted, from that index.
    slipway::sweep::run_once(&p.app).await.expect("the sweep runs");
    let before = scrape(&p).await;
    assert_eq!(value(&before, RUNS, &[("status", "awaiting_approval")]), 0.0);

    // A push, a delivery with a wrong signature, CI, and the workers take it to the approval;
    // one notification fails once on the way.
    assert_eq!(
        p.github("push", "bad-1", b"{}", "not-the-secret").await.status,
        StatusCode::UNAUTHORIZED
    );
    p.notifier.fail_next(1);
    p.to_approval(SHA).await;

    let after = scrape(&p).await;
    let grew = |metric: &str, labels: &[(&str, &str)]| value(&after, metric, labels) - value(&before, metric, labels);
    assert!(grew(WEBHOOK_DELIVERIES, &[("provider", "github"), ("code", "201")]) >= 1.0);
    assert!(grew(WEBHOOK_DELIVERIES, &[("provider", "github"), ("code", "401")]) >= 1.0);
    assert!(grew(NOTIFICATION_FAILURES, &[("channel", "memory"), ("kind", "transient")]) >= 1.0);
    assert!(grew(QUEUE_MESSAGES, &[("queue", "deploy"), ("outcome", "done")]) >= 1.0);
    assert!(grew(QUEUE_MESSAGES, &[("queue", "notify"), ("outcome", "failed")]) >= 1.0);
    for stage in ["deploy", "smoke"] {
        let labels = [("stage", stage), ("env", "staging"), ("status", "succeeded")];
        assert!(
            observations(&after, STAGE_DURATION, &labels) - observations(&before, STAGE_DURATION, &labels) >= 1.0,
            "{stage} took no time on record"
        );
    }
    // The gauges are this app's own: its one run waits for the production approval, and
    // nothing is dead-lettered.
    assert_eq!(value(&after, RUNS, &[("status", "awaiting_approval")]), 1.0);
    assert_eq!(value(&after, RUNS, &[("status", "in_progress")]), 0.0);
    for queue in ["deploy", "smoke", "notify"] {
        let dead = find(&after, DEAD_LETTERS, &[("queue", queue)]).expect("every queue has a dead-letter gauge");
        assert_eq!(dead.value, Value::Gauge(0.0), "{queue}");
    }
}

#[tokio::test]
async fn runs_that_end_are_counted_by_their_final_status() {
    let p = with_metrics().await;
    let before = scrape(&p).await;
    // A push whose build CI reports red ends failed, once, whatever the redeliveries.
    assert_eq!(p.push(SHA).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA, "failure").await.status, StatusCode::OK);
    assert_eq!(p.ci(SHA, "failure").await.status, StatusCode::OK);
    let after = scrape(&p).await;
    let failed = [("status", "failed")];
    let ended = "slipway_runs_finished_total";
    assert!(value(&after, ended, &failed) - value(&before, ended, &failed) >= 1.0);
}

#[tokio::test(start_paused = true)]
async fn dead_letters_are_counted_by_queue() {
    let p = with_metrics().await;
    // A message that is not slipway's fails on every delivery until the queue gives up on it.
    p.app
        .queue
        .send(QueueName::Deploy, "{\"hello\":1}", std::time::Duration::ZERO)
        .await
        .expect("the memory queue takes it");
    for _ in 0..8 {
        p.run_queues().await;
        p.advance(SignedDuration::from_mins(10));
    }
    let dead = p.app.queue.dead_letters().await.expect("the memory queue answers");
    assert_eq!(dead.len(), 1);
    let samples = scrape(&p).await;
    assert_eq!(value(&samples, DEAD_LETTERS, &[("queue", "deploy")]), 1.0);
    assert_eq!(value(&samples, DEAD_LETTERS, &[("queue", "notify")]), 0.0);
    // A dead letter left its queue.
    assert_eq!(value(&samples, "slipway_queue_depth", &[("queue", "deploy")]), 0.0);
}

#[tokio::test]
async fn queue_depth_counts_what_waits() {
    let p = with_metrics().await;
    for body in ["{\"a\":1}", "{\"b\":2}"] {
        p.app
            .queue
            .send(QueueName::Notify, body, std::time::Duration::ZERO)
            .await
            .expect("the memory queue takes it");
    }
    let samples = scrape(&p).await;
    assert_eq!(value(&samples, "slipway_queue_depth", &[("queue", "notify")]), 2.0);
    assert_eq!(value(&samples, "slipway_queue_depth", &[("queue", "smoke")]), 0.0);
}

#[tokio::test]
async fn without_the_token_metrics_answer_401_and_never_echo_it() {
    let p = with_metrics().await;
    for authorization in [
        None,
        Some("Bearer nope"),
        Some("Bearer "),
        Some(TOKEN),
        Some("Basic c2NyYXBlOm1l"),
    ] {
        let answer = p.send(scrape_request(authorization)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
        assert!(!answer.body.contains(TOKEN), "{}", answer.body);
        assert!(!answer.body.contains("slipway_"), "no metrics without the token");
    }
    // A parameter left blank is no token at all.
    p.secrets.set("/slipway/metrics-token", "");
    assert_eq!(
        p.send(scrape_request(Some("Bearer "))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_a_metrics_section_there_is_no_metrics_endpoint() {
    let p = Pipeline::start().await;
    let answer = p.send(scrape_request(Some(&format!("Bearer {TOKEN}")))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    assert!(!answer.body.contains("slipway_"), "{}", answer.body);
}

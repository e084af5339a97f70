//! Operational metrics, in the formats the ecosystem reads.
//!
//! The call sites record through the [`metrics`] facade (the helpers below, so each name and
//! its labels are spelled once); which backend receives them depends on how slipway runs:
//!
//! - **`slipway serve`**: a Prometheus recorder ([`prometheus`]), rendered as text exposition
//!   at `GET /metrics` (see `http::metrics`). On each scrape the figures that are read rather
//!   than counted — unfinished runs by status, dead letters by queue — are read from the store
//!   and the queue ([`render`]).
//! - **Lambda**: a CloudWatch Embedded Metric Format collector ([`emf`]); the entry points in
//!   [`crate::lambda`] write what one invocation recorded to standard output when it ends
//!   ([`flush_emf`]), and CloudWatch Logs turns those lines into metrics.
//!
//! # One recorder per process
//!
//! The facade has one global recorder per process, and it can be set only once. Both
//! backends are therefore installed at most once, behind a [`OnceLock`], by whichever comes
//! first; the other then reports itself unavailable (`None`) rather than failing. A test
//! binary that builds many routers shares one Prometheus recorder among them: its counters and
//! histograms are per process, which for `slipway serve` (one app per process) is exactly per
//! app. The gauges read at scrape time are never written to the global recorder: each scrape
//! records them into a recorder of its own and appends its text, so they are always the
//! scraped app's own, even when several apps share the process.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::StatusCode;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_cloudwatch_embedded::Collector;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::app::{App, EngineError, Mark};
use crate::domain::{EnvName, Run, RunStatus, StageKind, StageStatus};
use crate::ports::QueueName;

/// Webhook deliveries from git hosts, by `provider` and the HTTP status answered (`code`).
pub const WEBHOOK_DELIVERIES: &str = "slipway_webhook_deliveries_total";
/// Notifications a channel did not take, by `channel` kind and `kind` of failure.
pub const NOTIFICATION_FAILURES: &str = "slipway_notification_failures_total";
/// How long the stages slipway's workers run took, by `stage`, `env` and final `status`.
pub const STAGE_DURATION: &str = "slipway_stage_duration_seconds";
/// Queue messages handled, by `queue` and `outcome` (`done`, `later`, `failed`).
pub const QUEUE_MESSAGES: &str = "slipway_queue_messages_total";
/// Runs that ended, by final `status` (`released`, `failed`, …), counted as they end.
pub const RUNS_FINISHED: &str = "slipway_runs_finished_total";
/// Unfinished runs by `status` (read at scrape time from the index of unfinished runs).
pub const RUNS: &str = "slipway_runs";
/// Messages in the dead-letter store, by `queue` (read at scrape time).
pub const DEAD_LETTERS: &str = "slipway_dead_letters";
/// Messages each queue holds, waiting or being handled, by `queue` (read at scrape time).
pub const QUEUE_DEPTH: &str = "slipway_queue_depth";

/// The histogram buckets of [`STAGE_DURATION`], in seconds: smoke checks take seconds,
/// deploys minutes, bakes up to an hour or so.
pub const STAGE_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// The CloudWatch namespace of the Embedded Metric Format lines.
pub const EMF_NAMESPACE: &str = "slipway";

/// Describes every counted metric to the current recorder: its unit (CloudWatch's `Unit`)
/// and help text (Prometheus's `# HELP`).
pub fn describe() {
    describe_counter!(
        WEBHOOK_DELIVERIES,
        Unit::Count,
        "Webhook deliveries from git hosts, by provider and the HTTP status slipway answered."
    );
    describe_counter!(
        NOTIFICATION_FAILURES,
        Unit::Count,
        "Notifications a channel did not take: transient (retried) or permanent (given up)."
    );
    describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "How long deploy, smoke, bake and rollback stages took, from claim to result."
    );
    describe_counter!(
        QUEUE_MESSAGES,
        Unit::Count,
        "Queue messages handled: done, sent again for later, or failed (to be retried)."
    );
    describe_counter!(
        RUNS_FINISHED,
        Unit::Count,
        "Runs that ended, by final status, counted by the write that ended them."
    );
}

/// A write ended a run with `status`. Counted once per ending: a run that moves again (a
/// manual rollback of a release) and ends again counts again.
pub fn run_finished(status: RunStatus) {
    counter!(RUNS_FINISHED, "status" => status.as_str()).increment(1);
}

/// A git host's delivery was answered with `status`.
pub fn webhook_delivery(provider: &'static str, status: StatusCode) {
    counter!(WEBHOOK_DELIVERIES, "provider" => provider, "code" => status.as_str().to_owned()).increment(1);
}

/// A notification channel refused a notification: for good (`permanent`) or for now.
/// `channel` is the notifier's name; only its kind (`slack`, `webhook`, `file`, …) becomes
/// the label, so no URL or path reaches the metrics.
pub fn notification_failed(channel: &str, permanent: bool) {
    let kind = channel.split(':').next().unwrap_or(channel).to_owned();
    let failure = if permanent { "permanent" } else { "transient" };
    counter!(NOTIFICATION_FAILURES, "channel" => kind, "kind" => failure).increment(1);
}

/// A worker recorded the result of `run`'s `kind` stage for `env`: its duration, if the
/// stage is over and has both ends.
pub fn stage_finished(run: &Run, kind: StageKind, env: &EnvName) {
    let Some(stage) = run.stage(kind, Some(env)) else {
        return;
    };
    if matches!(
        stage.status,
        StageStatus::Pending | StageStatus::Queued | StageStatus::Running | StageStatus::Waiting
    ) {
        return;
    }
    if let (Some(started), Some(finished)) = (stage.started_at, stage.finished_at) {
        let seconds = started.duration_until(finished).as_secs_f64().max(0.0);
        stage_took(kind, env, stage.status, seconds);
    }
}

/// A `kind` stage for `env` ended `status` after `seconds`.
pub fn stage_took(kind: StageKind, env: &EnvName, status: StageStatus, seconds: f64) {
    histogram!(
        STAGE_DURATION,
        "stage" => kind.label(),
        "env" => env.to_string(),
        "status" => status.as_str()
    )
    .record(seconds);
}

/// What became of a queue message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled; acked.
    Done,
    /// Waiting for something (a lease, a freeze, a bake reading): sent again for later.
    Later,
    /// Failed; the queue delivers it again (and dead-letters it after its last receive).
    Failed,
}

/// A message of `queue` was handled with `outcome`.
pub fn queue_message(queue: QueueName, outcome: Outcome) {
    let outcome = match outcome {
        Outcome::Done => "done",
        Outcome::Later => "later",
        Outcome::Failed => "failed",
    };
    counter!(QUEUE_MESSAGES, "queue" => queue.as_str(), "outcome" => outcome).increment(1);
}

// ---------------------------------------------------------------------------------------
// Prometheus (`slipway serve`)
// ---------------------------------------------------------------------------------------

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed as the global recorder on first use. `None`
/// if another recorder was installed first (a Lambda function's EMF collector).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(STAGE_DURATION.to_owned()), STAGE_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: no Prometheus recorder (another recorder is installed)");
                    None
                }
            }
        })
        .as_ref()
}

/// The text exposition of `handle`'s counters and histograms, followed by the gauges read
/// from `app` now. A figure that cannot be read is left out of this scrape (and logged); the
/// others are still answered.
pub async fn render(app: &App, handle: &PrometheusHandle) -> String {
    let runs = match unfinished_runs(app).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: could not read the unfinished runs; left out of this scrape");
            None
        }
    };
    let dead = match app.queue.dead_letters().await {
        Ok(dead) => {
            let mut by_queue: BTreeMap<QueueName, u64> = QueueName::ALL.iter().map(|q| (*q, 0)).collect();
            for letter in dead {
                *by_queue.entry(letter.queue).or_default() += 1;
            }
            Some(by_queue)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: could not read the dead letters; left out of this scrape");
            None
        }
    };
    let mut depths: BTreeMap<QueueName, u64> = BTreeMap::new();
    for queue in QueueName::ALL {
        match app.queue.depth(queue).await {
            Ok(depth) => {
                depths.insert(queue, depth);
            }
            Err(e) => {
                tracing::warn!(%queue, error = %e, "metrics: could not read a queue's depth; left out of this scrape")
            }
        }
    }
    // The gauges go to a recorder of this scrape's own, never the global one (see the module
    // documentation).
    let now = PrometheusBuilder::new().build_recorder();
    let gauges = now.handle();
    metrics::with_local_recorder(&now, || {
        describe_gauge!(
            RUNS,
            Unit::Count,
            "Unfinished runs by status, from the index of unfinished runs."
        );
        describe_gauge!(
            DEAD_LETTERS,
            Unit::Count,
            "Messages in the dead-letter store, by queue."
        );
        for (status, count) in runs.iter().flatten() {
            gauge!(RUNS, "status" => *status).set(*count as f64);
        }
        for (queue, count) in dead.iter().flatten() {
            gauge!(DEAD_LETTERS, "queue" => queue.as_str()).set(*count as f64);
        }
        describe_gauge!(
            QUEUE_DEPTH,
            Unit::Count,
            "Messages each queue holds now, waiting or being handled."
        );
        for (queue, depth) in &depths {
            gauge!(QUEUE_DEPTH, "queue" => queue.as_str()).set(*depth as f64);
        }
    });
    handle.run_upkeep();
    let mut text = handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&gauges.render());
    text
}

/// Unfinished runs by status, from the index of unfinished runs: the handful of runs still
/// moving, never the history. `None` until the index holds the runs made before it existed
/// (the first sweep does that): until then counting them would mean reading every run.
async fn unfinished_runs(app: &App) -> Result<Option<BTreeMap<&'static str, u64>>, EngineError> {
    if !app.seen.is_set(Mark::OpenRunsIndexed, app.store.as_ref()).await? {
        return Ok(None);
    }
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::from([("in_progress", 0), ("awaiting_approval", 0)]);
    for run in crate::open_runs::all_open_runs(app).await? {
        *counts.entry(run.status().as_str()).or_default() += 1;
    }
    Ok(Some(counts))
}

// ---------------------------------------------------------------------------------------
// CloudWatch Embedded Metric Format (Lambda)
// ---------------------------------------------------------------------------------------

static EMF: OnceLock<Option<&'static Collector>> = OnceLock::new();

/// The process's EMF collector, installed as the global recorder on first use, with the
/// function's name (`AWS_LAMBDA_FUNCTION_NAME`) as a dimension of every metric. `None` if
/// another recorder was installed first.
pub fn emf() -> Option<&'static Collector> {
    *EMF.get_or_init(|| {
        let mut builder = metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(EMF_NAMESPACE);
        if let Ok(function) = std::env::var("AWS_LAMBDA_FUNCTION_NAME") {
            builder = builder.with_dimension("function", function);
        }
        match builder.init() {
            Ok(collector) => {
                describe();
                Some(collector)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: no EMF collector (another recorder is installed)");
                None
            }
        }
    })
}

/// Writes what was recorded since the last flush as EMF lines: one JSON object per set of
/// dimensions, each on a line of its own, written to standard output at once (so no log line
/// lands inside one). Nothing when nothing was recorded or no collector is installed.
pub fn flush_emf() {
    let Some(collector) = EMF.get().copied().flatten() else {
        return;
    };
    let mut lines = Vec::new();
    if let Err(e) = collector.flush(&mut lines) {
        tracing::warn!(error = %e, "metrics: could not write the EMF lines");
        return;
    }
    if lines.is_empty() {
        return;
    }
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&lines).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "metrics: could not write the EMF lines");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The units CloudWatch accepts (`MetricDatum.Unit`), as the EMF specification lists them.
    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];

    /// Checks one EMF document against the specification: the root member `_aws` with an
    /// integer `Timestamp` and `CloudWatchMetrics` directives (a `Namespace`, `Dimensions` as
    /// arrays of at most 30 strings each naming a string member of the root, `Metrics` whose
    /// names are 1–255 characters, units from the list, and values that are numbers or arrays
    /// of at most 100 numbers). Returns the names of the metrics it declares.
    fn check_document(doc: &Value) -> Vec<String> {
        let root = doc.as_object().expect("an EMF document is a JSON object");
        let aws = root["_aws"].as_object().expect("_aws is an object");
        let timestamp = aws["Timestamp"]
            .as_u64()
            .expect("_aws.Timestamp is a non-negative integer");
        assert!(
            timestamp > 1_600_000_000_000,
            "Timestamp is in milliseconds since the epoch: {timestamp}"
        );
        let directives = aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics is an array");
        assert!(!directives.is_empty(), "at least one metric directive");
        let mut names = Vec::new();
        for directive in directives {
            let namespace = directive["Namespace"].as_str().expect("Namespace is a string");
            assert!((1..=255).contains(&namespace.len()));
            for set in directive["Dimensions"].as_array().expect("Dimensions is an array") {
                let set = set.as_array().expect("a dimension set is an array");
                assert!(set.len() <= 30, "at most 30 dimensions in a set");
                for key in set {
                    let key = key.as_str().expect("a dimension is named by a string");
                    assert!(
                        root.get(key).is_some_and(Value::is_string),
                        "dimension {key} is a string member of the root: {doc}"
                    );
                }
            }
            let metrics = directive["Metrics"].as_array().expect("Metrics is an array");
            assert!(!metrics.is_empty() && metrics.len() <= 100);
            for metric in metrics {
                let name = metric["Name"].as_str().expect("a metric has a Name");
                assert!((1..=255).contains(&name.len()));
                if let Some(unit) = metric.get("Unit") {
                    let unit = unit.as_str().expect("Unit is a string");
                    assert!(UNITS.contains(&unit), "{unit} is not a CloudWatch unit");
                }
                match root.get(name) {
                    Some(Value::Number(_)) => {}
                    Some(Value::Array(values)) => {
                        assert!(!values.is_empty() && values.len() <= 100);
                        assert!(values.iter().all(Value::is_number), "{name}: {values:?}");
                    }
                    other => panic!("metric {name} has no numeric value at the root: {other:?}"),
                }
                names.push(name.to_owned());
            }
        }
        names
    }

    /// Through the process's collector, as on Lambda. Other tests of this binary may record
    /// through it meanwhile, so this one uses label values of its own and checks every
    /// document the flush wrote against the specification, its own by value.
    #[test]
    fn emf_lines_follow_the_embedded_metric_format_specification() {
        let collector = emf().expect("nothing else installs a recorder in the library's tests");
        let env: EnvName = "emf-test".parse().expect("a name");
        webhook_delivery("emf-test-host", StatusCode::CREATED);
        webhook_delivery("emf-test-host", StatusCode::CREATED);
        webhook_delivery("emf-test-host", StatusCode::UNAUTHORIZED);
        notification_failed("emf-test-channel:hooks.example.com", false);
        stage_took(StageKind::Deploy, &env, StageStatus::Succeeded, 12.5);
        stage_took(StageKind::Deploy, &env, StageStatus::Succeeded, 3.0);
        queue_message(QueueName::Deploy, Outcome::Done);
        let mut out = Vec::new();
        collector.flush(&mut out).expect("flushes to memory");
        let text = String::from_utf8(out).expect("UTF-8");
        let docs: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect();
        let mut declared = Vec::new();
        for doc in &docs {
            declared.extend(check_document(doc));
            assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], EMF_NAMESPACE);
        }
        let one = |provider: &str, code: &str| {
            docs.iter()
                .find(|d| d["provider"] == provider && d["code"] == code)
                .unwrap_or_else(|| panic!("a document for {provider} {code}: {text}"))
        };
        let created = one("emf-test-host", "201");
        assert_eq!(created[WEBHOOK_DELIVERIES], 2);
        let metric = &created["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metric["Metrics"][0]["Name"], WEBHOOK_DELIVERIES);
        assert_eq!(metric["Metrics"][0]["Unit"], "Count");
        let dimensions = metric["Dimensions"][0].as_array().expect("a dimension set");
        assert!(dimensions.contains(&Value::from("provider")) && dimensions.contains(&Value::from("code")));
        assert_eq!(one("emf-test-host", "401")[WEBHOOK_DELIVERIES], 1);
        let failures = docs
            .iter()
            .find(|d| d["channel"] == "emf-test-channel")
            .unwrap_or_else(|| panic!("the notification failure, without the host: {text}"));
        assert_eq!(failures[NOTIFICATION_FAILURES], 1);
        assert_eq!(failures["kind"], "transient");
        let stage = docs
            .iter()
            .find(|d| d["env"] == "emf-test")
            .unwrap_or_else(|| panic!("the stage durations: {text}"));
        assert_eq!(stage[STAGE_DURATION], serde_json::json!([12.5, 3.0]));
        assert_eq!(stage["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"], "Seconds");
        assert!(declared.iter().any(|n| n == QUEUE_MESSAGES), "{text}");
        // A flush writes each count once: these documents are not written again.
        let mut again = Vec::new();
        collector.flush(&mut again).expect("flushes to memory");
        let again = String::from_utf8_lossy(&again);
        assert!(!again.contains("emf-test"), "{again}");
    }
}

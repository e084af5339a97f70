//! Smoke checks: what a check's answer must look like ([`evaluate`], pure) and how long to
//! keep asking ([`run_check`]).
//!
//! `{sha}` in a check's URL, `body_contains` and JSON string values is replaced by the
//! deployed commit's SHA, so a check can prove the new version is the one answering.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use serde_json::Value as Json;
use tokio::time::Instant;

use crate::config::SmokeCheckConfig;
use crate::domain::CheckResult;
use crate::ports::{HttpChecker, Probe, ProbeResponse};

/// The longest wait between two attempts of one check.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The shortest wait between two attempts, so a zero `backoff` does not spin.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How much longer than its own timeout a probe may take before the loop gives up on it (in
/// case a checker does not honour the timeout).
const FETCH_GRACE: Duration = Duration::from_secs(5);

/// Values and needles longer than this are shortened in failure messages.
const SHOWN: usize = 120;

/// The request `check` makes for commit `sha`: `{sha}` in the URL is replaced.
pub fn probe_for(check: &SmokeCheckConfig, sha: &str) -> Probe {
    Probe {
        method: check.method.clone(),
        url: check.url.replace("{sha}", sha),
        headers: check
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("{sha}", sha)))
            .collect(),
        timeout: check.timeout.unsigned_abs(),
    }
}

/// Whether `response` is what `check` expects for commit `sha`.
///
/// `Ok` says briefly what passed (`200, body and 2 JSON values as expected`); `Err` lists every
/// failed assertion, joined with `"; "` (`expected status 200, got 503; /version is missing`).
/// JSON values compare by value: numbers numerically (`1` equals `1.0`), `{sha}` substituted in
/// expected strings.
pub fn evaluate(check: &SmokeCheckConfig, sha: &str, response: &ProbeResponse) -> Result<String, String> {
    let mut failures = Vec::new();
    if response.status != check.expect_status {
        failures.push(format!(
            "expected status {}, got {}",
            check.expect_status, response.status
        ));
    }
    if let Some(needle) = &check.body_contains {
        let needle = needle.replace("{sha}", sha);
        if !response.body.contains(&needle) {
            failures.push(format!("body does not contain {}", shorten(&format!("{needle:?}"))));
        }
    }
    if !check.json.is_empty() {
        match serde_json::from_str::<Json>(&response.body) {
            Err(e) => failures.push(format!("body is not JSON ({e})")),
            Ok(document) => {
                for (pointer, expected) in &check.json {
                    let expected = toml_to_json(expected, sha);
                    let label = if pointer.is_empty() { "the JSON body" } else { pointer };
                    match document.pointer(pointer) {
                        None => failures.push(format!("{label} is missing")),
                        Some(actual) if json_eq(actual, &expected) => {}
                        Some(actual) => failures.push(format!(
                            "{label} is {}, expected {}",
                            shorten(&actual.to_string()),
                            shorten(&expected.to_string())
                        )),
                    }
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }

    let mut passed = vec![response.status.to_string()];
    if check.body_contains.is_some() {
        passed.push("body".into());
    }
    match check.json.len() {
        0 => {}
        1 => passed.push("1 JSON value".into()),
        n => passed.push(format!("{n} JSON values")),
    }
    let described = match passed.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => passed.join(""),
    };
    Ok(format!("{described} as expected"))
}

/// Runs one check until it passes or its deadline leaves no room for another attempt.
///
/// After a failure (no answer, or the wrong one) it waits `backoff`, doubling each time up to
/// [`MAX_BACKOFF`], and tries again if that attempt would start before `deadline` (counted
/// from the first attempt). `detail` is what passed, or the last failure prefixed with
/// `after N attempts: `.
pub async fn run_check(checker: &dyn HttpChecker, check: &SmokeCheckConfig, sha: &str) -> CheckResult {
    let probe = probe_for(check, sha);
    let started = Instant::now();
    let deadline = started + check.deadline.unsigned_abs();
    let backoff = ExponentialBuilder::new()
        .with_min_delay(check.backoff.unsigned_abs().clamp(MIN_BACKOFF, MAX_BACKOFF))
        .with_factor(2.0)
        .with_max_delay(MAX_BACKOFF)
        .without_max_times();
    let attempts = AtomicU32::new(0);
    let outcome = (|| async {
        attempts.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(probe.timeout + FETCH_GRACE, checker.fetch(&probe)).await {
            Ok(Ok(response)) => evaluate(check, sha, &response),
            Ok(Err(transport)) => Err(transport),
            Err(_) => Err(format!("{} {} gave no answer in time", probe.method, probe.url)),
        }
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    // Another attempt only if it would start before the deadline.
    .adjust(|_, pause| pause.filter(|pause| Instant::now() + *pause < deadline))
    .notify(|reason, pause| {
        tracing::info!(
            check = %check.name,
            attempt = attempts.load(Ordering::Relaxed),
            retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            "smoke check attempt failed: {reason}"
        );
    })
    .await;
    let attempts = attempts.into_inner();
    match outcome {
        Ok(detail) => {
            tracing::info!(check = %check.name, attempts, "smoke check passed: {detail}");
            CheckResult {
                name: check.name.clone(),
                passed: true,
                attempts,
                detail,
            }
        }
        Err(reason) => {
            let plural = if attempts == 1 { "" } else { "s" };
            tracing::warn!(check = %check.name, attempts, "smoke check failed, giving up: {reason}");
            CheckResult {
                name: check.name.clone(),
                passed: false,
                attempts,
                detail: format!("after {attempts} attempt{plural}: {reason}"),
            }
        }
    }
}

/// Runs every check concurrently; results come back in the order of `checks`.
pub async fn run_checks(checker: &dyn HttpChecker, checks: &[SmokeCheckConfig], sha: &str) -> Vec<CheckResult> {
    type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;
    let mut running: Vec<CheckFuture<'_>> = checks
        .iter()
        .map(|check| Box::pin(run_check(checker, check, sha)) as CheckFuture<'_>)
        .collect();
    let mut results: Vec<Option<CheckResult>> = vec![None; running.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in running.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(done) => *result = Some(done),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// A TOML value as JSON, with `{sha}` substituted in strings. Datetimes become strings; a
/// float JSON cannot hold (NaN, infinity) becomes `null`.
fn toml_to_json(value: &toml::Value, sha: &str) -> Json {
    match value {
        toml::Value::String(s) => Json::String(s.replace("{sha}", sha)),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(|v| toml_to_json(v, sha)).collect()),
        toml::Value::Table(table) => {
            Json::Object(table.iter().map(|(k, v)| (k.clone(), toml_to_json(v, sha))).collect())
        }
    }
}

/// Structural equality where numbers compare numerically.
fn json_eq(actual: &Json, expected: &Json) -> bool {
    match (actual, expected) {
        (Json::Number(a), Json::Number(b)) => number_eq(a, b),
        (Json::Array(a), Json::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y)),
        (Json::Object(a), Json::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, x)| b.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => actual == expected,
    }
}

fn number_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if a.is_f64() || b.is_f64() {
        return a.as_f64() == b.as_f64();
    }
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a.as_u64().is_some() && a.as_u64() == b.as_u64(),
    }
}

/// `text`, cut to [`SHOWN`] chars with `…` if longer.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

    fn check(toml_text: &str) -> SmokeCheckConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn response(status: u16, body: &str) -> ProbeResponse {
        ProbeResponse {
            status,
            body: body.into(),
        }
    }

    #[test]
    fn the_probe_substitutes_the_sha_and_carries_method_headers_and_timeout() {
        let c = check(
            r#"
name = "version"
url = "https://shop.example.com/version?sha={sha}"
method = "HEAD"
headers = { Authorization = "Bearer x" }
timeout = "3s"
"#,
        );
        assert_eq!(
            probe_for(&c, SHA),
            Probe {
                method: "HEAD".into(),
                url: format!("https://shop.example.com/version?sha={SHA}"),
                headers: vec![("Authorization".into(), "Bearer x".into())],
                timeout: Duration::from_secs(3),
            }
        );
    }

    #[test]
    fn evaluation_table() {
        let status_only = check("name = \"h\"\nurl = \"http://x/\"");
        let body = check("name = \"h\"\nurl = \"http://x/\"\nbody_contains = \"version {sha}\"");
        let json = check(
            r#"
name = "h"
url = "http://x/"
expect_status = 200
body_contains = "{sha}"
[json]
"/checks/database" = "ok"
"/version" = "{sha}"
"/replicas" = 3
"/ratio" = 1.0
"/ready" = true
"#,
        );
        let good_json = format!(
            r#"{{"checks": {{"database": "ok"}}, "version": "{SHA}", "replicas": 3.0, "ratio": 1, "ready": true}}"#
        );
        let body_text = format!("running version {SHA}");
        let cases: Vec<(&str, &SmokeCheckConfig, ProbeResponse, Result<String, String>)> = vec![
            (
                "status ok",
                &status_only,
                response(200, ""),
                Ok("200 as expected".into()),
            ),
            (
                "status mismatch",
                &status_only,
                response(503, "down"),
                Err("expected status 200, got 503".into()),
            ),
            (
                "body with sha",
                &body,
                response(200, &body_text),
                Ok("200 and body as expected".into()),
            ),
            (
                "body without sha",
                &body,
                response(200, "running version 0000"),
                Err(format!("body does not contain \"version {SHA}\"")),
            ),
            (
                "json equal, numbers numerically",
                &json,
                response(200, &good_json),
                Ok("200, body and 5 JSON values as expected".into()),
            ),
            (
                "json different",
                &json,
                response(
                    200,
                    &good_json.replace("\"database\": \"ok\"", "\"database\": \"down\""),
                ),
                Err("/checks/database is \"down\", expected \"ok\"".into()),
            ),
            (
                "json missing",
                &json,
                response(200, &good_json.replace("\"version\"", "\"vers\"")),
                Err("/version is missing".into()),
            ),
            (
                "number vs float differs",
                &json,
                response(200, &good_json.replace("\"replicas\": 3.0", "\"replicas\": 2.5")),
                Err("/replicas is 2.5, expected 3".into()),
            ),
            (
                "bool differs",
                &json,
                response(200, &good_json.replace("\"ready\": true", "\"ready\": \"true\"")),
                Err("/ready is \"true\", expected true".into()),
            ),
            (
                "not json",
                &json,
                response(200, &format!("<html>{SHA}</html>")),
                Err("body is not JSON (expected value at line 1 column 1)".into()),
            ),
            (
                "several failures together",
                &json,
                response(
                    500,
                    r#"{"checks": {"database": "down"}, "version": "old", "replicas": 3, "ratio": 1.0}"#,
                ),
                Err(format!(
                    "expected status 200, got 500; body does not contain \"{SHA}\"; \
                     /checks/database is \"down\", expected \"ok\"; /ready is missing; \
                     /version is \"old\", expected \"{SHA}\""
                )),
            ),
        ];
        for (name, c, r, expected) in cases {
            assert_eq!(evaluate(c, SHA, &r), expected, "case: {name}");
        }
    }

    #[test]
    fn whole_body_and_structured_values_compare_by_value() {
        let c = check(
            r#"
name = "h"
url = "http://x/"
[json]
"" = { status = "ok", sizes = [1, 2.0] }
"#,
        );
        assert_eq!(
            evaluate(&c, SHA, &response(200, r#"{"sizes": [1.0, 2], "status": "ok"}"#)),
            Ok("200 and 1 JSON value as expected".into())
        );
        assert_eq!(
            evaluate(&c, SHA, &response(200, r#"{"sizes": [1], "status": "ok"}"#)),
            Err(r#"the JSON body is {"sizes":[1],"status":"ok"}, expected {"sizes":[1,2.0],"status":"ok"}"#.into())
        );
    }

    #[test]
    fn json_numbers() {
        let n = |s: &str| serde_json::from_str::<Json>(s).unwrap();
        assert!(json_eq(&n("1"), &n("1.0")));
        assert!(json_eq(&n("-3"), &n("-3")));
        assert!(json_eq(&n("18446744073709551615"), &n("18446744073709551615")));
        assert!(!json_eq(&n("-1"), &n("18446744073709551615")));
        assert!(!json_eq(&n("1"), &n("\"1\"")));
    }

    /// Answers from a script; the last answer repeats. Records when each call came.
    #[derive(Debug)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<ProbeResponse, String>>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<ProbeResponse, String>>) -> Self {
            Self {
                answers: Mutex::new(answers.into()),
                calls: Mutex::new(Vec::new()),
            }
        }

        fn offsets(&self, from: Instant) -> Vec<u64> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .map(|t| (*t - from).as_secs())
                .collect()
        }
    }

    #[async_trait]
    impl HttpChecker for Scripted {
        async fn fetch(&self, _probe: &Probe) -> Result<ProbeResponse, String> {
            self.calls.lock().unwrap().push(Instant::now());
            let mut answers = self.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.pop_front().unwrap()
            } else {
                answers.front().cloned().unwrap()
            }
        }
    }

    fn retrying() -> SmokeCheckConfig {
        check(
            r#"
name = "health"
url = "http://x/health"
deadline = "10s"
backoff = "1s"
"#,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_it_passes() {
        let checker = Scripted::new(vec![
            Ok(response(503, "")),
            Ok(response(503, "")),
            Ok(response(200, "")),
        ]);
        let start = Instant::now();
        let result = run_check(&checker, &retrying(), SHA).await;
        assert_eq!(
            result,
            CheckResult {
                name: "health".into(),
                passed: true,
                attempts: 3,
                detail: "200 as expected".into(),
            }
        );
        assert_eq!(checker.offsets(start), vec![0, 1, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_with_the_last_reason() {
        let checker = Scripted::new(vec![Err("connection refused".into()), Ok(response(502, ""))]);
        let start = Instant::now();
        let result = run_check(&checker, &retrying(), SHA).await;
        // Attempts at 0, 1, 3 and 7 s; the next would start at 15 s, after the 10 s deadline.
        assert_eq!(checker.offsets(start), vec![0, 1, 3, 7]);
        assert_eq!(
            result,
            CheckResult {
                name: "health".into(),
                passed: false,
                attempts: 4,
                detail: "after 4 attempts: expected status 200, got 502".into(),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_capped_at_30_seconds() {
        let c = check("name = \"h\"\nurl = \"http://x/\"\ndeadline = \"2m\"\nbackoff = \"10s\"");
        let checker = Scripted::new(vec![Ok(response(500, ""))]);
        let start = Instant::now();
        let result = run_check(&checker, &c, SHA).await;
        assert_eq!(checker.offsets(start), vec![0, 10, 30, 60, 90]);
        assert_eq!(result.attempts, 5);
        assert!(!result.passed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transport_error_then_success_passes() {
        let checker = Scripted::new(vec![
            Err("GET http://x/health: connection refused".into()),
            Ok(response(200, "")),
        ]);
        let result = run_check(&checker, &retrying(), SHA).await;
        assert!(result.passed);
        assert_eq!(result.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_deadline_means_one_attempt() {
        let c = check("name = \"h\"\nurl = \"http://x/\"\ndeadline = \"0s\"");
        let checker = Scripted::new(vec![Err("timed out after 10s".into())]);
        let result = run_check(&checker, &c, SHA).await;
        assert_eq!(result.attempts, 1);
        assert_eq!(result.detail, "after 1 attempt: timed out after 10s");
    }

    /// Passes for URLs containing "good", fails otherwise; takes one second per request.
    #[derive(Debug)]
    struct ByUrl;

    #[async_trait]
    impl HttpChecker for ByUrl {
        async fn fetch(&self, probe: &Probe) -> Result<ProbeResponse, String> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let status = if probe.url.contains("good") { 200 } else { 500 };
            Ok(response(status, ""))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_concurrently_and_report_in_order() {
        let checks: Vec<SmokeCheckConfig> = ["good-1", "bad", "good-2"]
            .iter()
            .map(|name| {
                check(&format!(
                    "name = \"{name}\"\nurl = \"http://{name}/\"\ndeadline = \"0s\""
                ))
            })
            .collect();
        let start = Instant::now();
        let results = run_checks(&ByUrl, &checks, SHA).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1), "the three requests overlapped");
        let summary: Vec<(&str, bool)> = results.iter().map(|r| (r.name.as_str(), r.passed)).collect();
        assert_eq!(summary, vec![("good-1", true), ("bad", false), ("good-2", true)]);
    }
}

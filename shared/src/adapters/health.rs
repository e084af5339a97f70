//! The real [`HealthSource`]: reads an environment's health during a post-deploy bake, from
//! an HTTP endpoint serving JSON or from a CloudWatch alarm.
//!
//! - **http**: `GET url` (with `headers`, within `timeout`); the body must be JSON, and the
//!   number at JSON pointer `pointer` (a JSON number, or a string holding one) must not exceed
//!   `max`. Healthy: `/error_rate = 0.01 ≤ max 0.05`; unhealthy: `/error_rate = 0.07 > max
//!   0.05`. A non-2xx answer, a body that is not JSON, or no number at `pointer` is a fault
//!   of the source (`Err`), not an unhealthy reading.
//! - **cloudwatch_alarm**: `DescribeAlarms` for the alarm (metric or composite). `ALARM` is
//!   unhealthy, with the alarm's state reason; `OK` and `INSUFFICIENT_DATA` are healthy. The
//!   AWS configuration (credentials, region) is loaded from the environment the first time an
//!   alarm is read; `endpoint_url` and `region` override it per source.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_cloudwatch::error::DisplayErrorContext;
use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
use jiff::SignedDuration;

use super::aws::SharedConfig;
use crate::config::HealthSourceConfig;
use crate::ports::{Health, HealthSource};

/// How much of a health endpoint's body is read: 1 MiB.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long one `DescribeAlarms` call, retries included, may take.
const CLOUDWATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How many redirects a health request follows.
const MAX_REDIRECTS: usize = 5;

/// Reads health from whichever source an environment's bake names.
#[derive(Debug)]
pub struct HealthSources {
    /// The HTTP client, or why it could not be built.
    http: Result<reqwest::Client, String>,
    /// The AWS configuration, loaded on first use.
    sdk: SharedConfig,
    cloudwatch: Mutex<Clients>,
}

/// CloudWatch clients by the (endpoint, region) overrides they were built with.
type Clients = HashMap<(Option<String>, Option<String>), aws_sdk_cloudwatch::Client>;

impl HealthSources {
    /// Health sources with one shared HTTP client (rustls, user agent `slipway/<version>`,
    /// at most 5 redirects) and the AWS configuration loaded from the environment when an
    /// alarm is first read.
    pub fn new() -> Self {
        Self::with(SharedConfig::from_env())
    }

    /// Health sources reading CloudWatch with `sdk` instead of the environment's AWS
    /// configuration (an emulator's, in tests). Per-source `endpoint_url` and `region` still
    /// apply on top.
    pub fn with_sdk(sdk: SdkConfig) -> Self {
        Self::with(SharedConfig::given(sdk))
    }

    fn with(sdk: SharedConfig) -> Self {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(|e| format!("the HTTP client for health checks cannot be built: {e}"));
        Self {
            http,
            sdk,
            cloudwatch: Mutex::new(HashMap::new()),
        }
    }

    /// Reads an `http` source.
    async fn http(
        &self,
        url: &str,
        pointer: &str,
        max: f64,
        headers: &std::collections::BTreeMap<String, String>,
        timeout: SignedDuration,
    ) -> Result<Health, String> {
        let client = self.http.as_ref().map_err(Clone::clone)?;
        let what = format!("GET {url}");
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "{pointer:?} is not a JSON pointer: it starts with / (such as \"/error_rate\")"
            ));
        }
        let limit = Duration::try_from(timeout).map_err(|_| format!("the timeout {timeout:#} is negative"))?;

        let mut request = client.get(url).timeout(limit);
        if !headers.keys().any(|name| name.eq_ignore_ascii_case("accept")) {
            request = request.header(reqwest::header::ACCEPT, "application/json");
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(|e| describe(&e, &what, timeout))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{} (while reading the body)", describe(&e, &what, timeout)))?
        {
            if body.len() + chunk.len() > BODY_LIMIT {
                if status.is_success() {
                    return Err(format!("{what}: the body is larger than {} KiB", BODY_LIMIT / 1024));
                }
                break;
            }
            body.extend_from_slice(&chunk);
        }

        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let text = excerpt(text.trim());
            return Err(if text.is_empty() {
                format!("{what} answered {status}")
            } else {
                format!("{what} answered {status}: {text}")
            });
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{what}: the body is not JSON ({e})"))?;
        let label = if pointer.is_empty() { "the body" } else { pointer };
        let found = json
            .pointer(pointer)
            .ok_or_else(|| format!("{what}: the body has no value at {pointer}"))?;
        let (value, shown) =
            number(found).ok_or_else(|| format!("{what}: {label} is {}, not a number", excerpt(&found.to_string())))?;

        let healthy = value <= max;
        let op = if healthy { "≤" } else { ">" };
        Ok(Health {
            healthy,
            detail: format!("{label} = {shown} {op} max {max}"),
        })
    }

    /// Reads a `cloudwatch_alarm` source.
    async fn alarm(&self, alarm: &str, endpoint: Option<&url::Url>, region: Option<&str>) -> Result<Health, String> {
        let client = self.cloudwatch_client(endpoint, region).await;
        let call = client
            .describe_alarms()
            .alarm_names(alarm)
            .alarm_types(AlarmType::MetricAlarm)
            .alarm_types(AlarmType::CompositeAlarm)
            .send();
        let output = tokio::time::timeout(CLOUDWATCH_TIMEOUT, call)
            .await
            .map_err(|_| {
                format!(
                    "reading CloudWatch alarm {alarm:?} timed out after {:#}",
                    SignedDuration::try_from(CLOUDWATCH_TIMEOUT).unwrap_or_default()
                )
            })?
            .map_err(|e| format!("reading CloudWatch alarm {alarm:?} failed: {}", DisplayErrorContext(&e)))?;

        let metric = output
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(alarm))
            .map(|a| (a.state_value(), a.state_reason()));
        let composite = || {
            output
                .composite_alarms()
                .iter()
                .find(|a| a.alarm_name() == Some(alarm))
                .map(|a| (a.state_value(), a.state_reason()))
        };
        let (state, reason) = metric.or_else(composite).ok_or_else(|| {
            let region = client.config().region().map(|r| format!(" in {r}")).unwrap_or_default();
            format!("no CloudWatch alarm named {alarm:?}{region}")
        })?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        let healthy = match state {
            Some(StateValue::Alarm) => false,
            Some(StateValue::Ok | StateValue::InsufficientData) => true,
            Some(other) => return Err(format!("CloudWatch alarm {alarm:?} is in an unknown state {other}")),
            None => return Err(format!("CloudWatch alarm {alarm:?} has no state")),
        };
        let state = state.map(StateValue::as_str).unwrap_or_default();
        Ok(Health {
            healthy,
            detail: match reason {
                Some(reason) if !healthy => format!("alarm {alarm} is {state}: {reason}"),
                _ => format!("alarm {alarm} is {state}"),
            },
        })
    }

    /// The CloudWatch client for these overrides, built once.
    async fn cloudwatch_client(&self, endpoint: Option<&url::Url>, region: Option<&str>) -> aws_sdk_cloudwatch::Client {
        let key = (endpoint.map(|u| u.as_str().to_owned()), region.map(str::to_owned));
        if let Some(client) = self.clients().get(&key) {
            return client.clone();
        }
        let config = self
            .sdk
            .service::<aws_sdk_cloudwatch::config::Builder>(endpoint, region)
            .await
            .build();
        let client = aws_sdk_cloudwatch::Client::from_conf(config);
        self.clients().insert(key, client.clone());
        client
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.cloudwatch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for HealthSources {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl HealthSource for HealthSources {
    async fn check(&self, source: &HealthSourceConfig) -> Result<Health, String> {
        match source {
            HealthSourceConfig::Http {
                url,
                pointer,
                max,
                headers,
                timeout,
            } => self.http(url, pointer, *max, headers, *timeout).await,
            HealthSourceConfig::CloudwatchAlarm {
                alarm,
                endpoint_url,
                region,
            } => self.alarm(alarm, endpoint_url.as_ref(), region.as_deref()).await,
        }
    }
}

/// A JSON number, or a string holding a finite one, with the text it was written as.
fn number(value: &serde_json::Value) -> Option<(f64, String)> {
    let (parsed, text) = match value {
        serde_json::Value::Number(n) => (n.as_f64()?, n.to_string()),
        serde_json::Value::String(s) => (s.trim().parse::<f64>().ok()?, s.trim().to_owned()),
        _ => return None,
    };
    parsed.is_finite().then_some((parsed, text))
}

/// At most 200 characters of `text`, on one line.
fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

/// A request failure in words, naming the request.
fn describe(e: &reqwest::Error, what: &str, timeout: SignedDuration) -> String {
    let mut innermost = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        innermost = cause.to_string();
        source = cause.source();
    }
    if e.is_timeout() {
        format!("{what} timed out after {timeout:#}")
    } else if e.is_builder() {
        format!("{what} is not a valid request: {innermost}")
    } else if e.is_redirect() {
        format!("{what} redirected more than {MAX_REDIRECTS} times")
    } else if e.is_connect() {
        format!("{what}: could not connect: {innermost}")
    } else {
        format!("{what} failed: {innermost}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    use super::*;

    /// Serves a small metrics app on a random loopback port; returns its base URL.
    async fn serve() -> String {
        let app = Router::new()
            .route("/calm", get(|| async { r#"{"error_rate": 0.01, "p99": {"ms": 120}}"# }))
            .route("/busy", get(|| async { r#"{"error_rate": 0.07}"# }))
            .route("/quoted", get(|| async { r#"{"error_rate": " 0.05 "}"# }))
            .route("/label", get(|| async { r#"{"error_rate": "low"}"# }))
            .route("/html", get(|| async { "<html>maintenance</html>" }))
            .route(
                "/broken",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database down\n") }),
            )
            .route(
                "/private",
                get(|headers: HeaderMap| async move {
                    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                        Some("Bearer t0ken") => (StatusCode::OK, r#"{"error_rate": 0}"#),
                        _ => (StatusCode::UNAUTHORIZED, ""),
                    }
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "{}"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn http(url: String, pointer: &str, max: f64) -> HealthSourceConfig {
        HealthSourceConfig::Http {
            url,
            pointer: pointer.into(),
            max,
            headers: BTreeMap::new(),
            timeout: SignedDuration::from_secs(5),
        }
    }

    fn healthy(detail: &str) -> Result<Health, String> {
        Ok(Health {
            healthy: true,
            detail: detail.into(),
        })
    }

    fn unhealthy(detail: &str) -> Result<Health, String> {
        Ok(Health {
            healthy: false,
            detail: detail.into(),
        })
    }

    #[tokio::test]
    async fn http_readings() {
        let base = serve().await;
        let sources = HealthSources::new();
        let cases = [
            ("/calm", "/error_rate", 0.05, healthy("/error_rate = 0.01 ≤ max 0.05")),
            ("/busy", "/error_rate", 0.05, unhealthy("/error_rate = 0.07 > max 0.05")),
            ("/quoted", "/error_rate", 0.05, healthy("/error_rate = 0.05 ≤ max 0.05")),
            ("/calm", "/p99/ms", 100.0, unhealthy("/p99/ms = 120 > max 100")),
        ];
        for (path, pointer, max, expected) in cases {
            let got = sources.check(&http(format!("{base}{path}"), pointer, max)).await;
            assert_eq!(got, expected, "{path} {pointer}");
        }
    }

    #[tokio::test]
    async fn http_faults_are_errors_that_say_what_went_wrong() {
        let base = serve().await;
        let sources = HealthSources::new();
        let cases = [
            (
                "/calm",
                "/errors",
                format!("GET {base}/calm: the body has no value at /errors"),
            ),
            (
                "/label",
                "/error_rate",
                format!("GET {base}/label: /error_rate is \"low\", not a number"),
            ),
            (
                "/calm",
                "/p99",
                format!("GET {base}/calm: /p99 is {{\"ms\":120}}, not a number"),
            ),
            ("/html", "/error_rate", format!("GET {base}/html: the body is not JSON")),
            (
                "/broken",
                "/error_rate",
                format!("GET {base}/broken answered 500 Internal Server Error: database down"),
            ),
            (
                "/private",
                "/error_rate",
                format!("GET {base}/private answered 401 Unauthorized"),
            ),
            ("/calm", "error_rate", "\"error_rate\" is not a JSON pointer".to_owned()),
        ];
        for (path, pointer, expected) in cases {
            let got = sources.check(&http(format!("{base}{path}"), pointer, 1.0)).await;
            let err = got.expect_err(path);
            assert!(err.starts_with(&expected), "{path}: {err}");
        }
    }

    #[tokio::test]
    async fn http_sends_the_configured_headers() {
        let base = serve().await;
        let mut source = http(format!("{base}/private"), "/error_rate", 0.05);
        if let HealthSourceConfig::Http { headers, .. } = &mut source {
            headers.insert("Authorization".into(), "Bearer t0ken".into());
        }
        let got = HealthSources::new().check(&source).await;
        assert_eq!(got, healthy("/error_rate = 0 ≤ max 0.05"));
    }

    #[tokio::test]
    async fn http_times_out_and_says_after_how_long() {
        let base = serve().await;
        let mut source = http(format!("{base}/slow"), "/error_rate", 0.05);
        if let HealthSourceConfig::Http { timeout, .. } = &mut source {
            *timeout = SignedDuration::from_millis(200);
        }
        let err = HealthSources::new().check(&source).await.unwrap_err();
        assert_eq!(err, format!("GET {base}/slow timed out after 200ms"));
    }

    #[tokio::test]
    async fn http_connection_refused_is_an_error() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/metrics");
        let err = HealthSources::new()
            .check(&http(url.clone(), "/error_rate", 0.05))
            .await
            .unwrap_err();
        assert!(err.starts_with(&format!("GET {url}: could not connect")), "{err}");
    }

    #[test]
    fn numbers_and_numeric_strings() {
        use serde_json::json;
        assert_eq!(number(&json!(0.5)), Some((0.5, "0.5".into())));
        assert_eq!(number(&json!(3)), Some((3.0, "3".into())));
        assert_eq!(number(&json!("1e-3")), Some((0.001, "1e-3".into())));
        assert_eq!(number(&json!("NaN")), None);
        assert_eq!(number(&json!("inf")), None);
        assert_eq!(number(&json!(true)), None);
        assert_eq!(number(&json!(null)), None);
    }
}

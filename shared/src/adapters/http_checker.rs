//! The real [`HttpChecker`]: one `reqwest` client, built once, making one request per probe.
//!
//! Failures come back in words a person can act on — connection refused, timed out, DNS,
//! TLS — each naming the URL.

use std::error::Error as _;
use std::time::Duration;

use async_trait::async_trait;

use crate::ports::{HttpChecker, Probe, ProbeResponse};

/// How much of a response body is read: 64 KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How many redirects a probe follows.
const MAX_REDIRECTS: usize = 5;

/// Makes smoke-check requests with `reqwest` over rustls.
#[derive(Debug, Clone)]
pub struct ReqwestChecker {
    client: reqwest::Client,
}

impl ReqwestChecker {
    /// A checker with one shared client: rustls, user agent `slipway/<version>`, at most 5
    /// redirects. Timeouts are per probe.
    ///
    /// # Panics
    ///
    /// If the TLS backend cannot be initialised, which only happens on a broken system.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .expect("the rustls HTTP client can be built");
        Self { client }
    }
}

impl Default for ReqwestChecker {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl HttpChecker for ReqwestChecker {
    async fn fetch(&self, probe: &Probe) -> Result<ProbeResponse, String> {
        let method = reqwest::Method::from_bytes(probe.method.as_bytes())
            .map_err(|_| format!("{:?} is not an HTTP method", probe.method))?;
        let mut request = self.client.request(method, &probe.url).timeout(probe.timeout);
        for (name, value) in &probe.headers {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(|e| describe(&e, probe))?;
        let status = response.status().as_u16();

        let mut body = Vec::new();
        while body.len() < BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(format!("{} (while reading the body)", describe(&e, probe))),
            }
        }
        Ok(ProbeResponse {
            status,
            body: cut(String::from_utf8_lossy(&body).into_owned(), BODY_LIMIT),
        })
    }
}

/// `text` cut to at most `limit` bytes, on a char boundary.
fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// `10s`, `1m 30s`, `250ms`.
fn human(d: Duration) -> String {
    match jiff::SignedDuration::try_from(d) {
        Ok(d) => format!("{d:#}"),
        Err(_) => format!("{}s", d.as_secs()),
    }
}

/// A request failure in words, naming the URL.
fn describe(e: &reqwest::Error, probe: &Probe) -> String {
    let url = &probe.url;
    let what = format!("{} {url}", probe.method);
    let mut chain: Vec<String> = Vec::new();
    let mut refused = false;
    let mut invalid_data = false;
    let mut source = e.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            invalid_data |= io.kind() == std::io::ErrorKind::InvalidData;
        }
        let text = cause.to_string();
        if chain.last().is_none_or(|last| *last != text) {
            chain.push(text);
        }
        source = cause.source();
    }
    let all = chain.join(": ").to_lowercase();
    let innermost = chain.last().cloned().unwrap_or_else(|| e.to_string());
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| url.clone());

    if e.is_timeout() {
        format!("{what} timed out after {}", human(probe.timeout))
    } else if e.is_builder() {
        format!("{what} is not a valid request: {innermost}")
    } else if e.is_redirect() {
        format!("{what} redirected more than {MAX_REDIRECTS} times")
    } else if refused || all.contains("connection refused") {
        format!("{what}: connection refused by {host} (is the service listening?)")
    } else if all.contains("dns error")
        || all.contains("failed to lookup address")
        || all.contains("name or service not known")
        || all.contains("no address associated")
        || all.contains("nodename nor servname")
    {
        format!("{what}: could not resolve the host name (DNS): {innermost}")
    } else if (invalid_data && e.is_connect() && url.starts_with("https:"))
        || [
            "certificate",
            "tls",
            "handshake",
            "invalid peer",
            "corrupt message",
            "fatal alert",
            "peer is incompatible",
            "peer misbehaved",
        ]
        .iter()
        .any(|marker| all.contains(marker))
    {
        format!("{what}: TLS failed: {innermost}")
    } else if e.is_connect() {
        format!("{what}: could not connect to {host}: {innermost}")
    } else {
        format!("{what} failed: {innermost}")
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::routing::{any, get};

    use super::*;

    /// Serves a small test app on a random loopback port; returns its base URL.
    async fn serve() -> String {
        let app = Router::new()
            .route("/ok", get(|| async { "hello a1b2c3" }))
            .route(
                "/down",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "database down") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/big", get(|| async { "é".repeat(BODY_LIMIT) }))
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [("location", "/redirect")]) }),
            )
            .route(
                "/echo",
                any(|method: Method, headers: HeaderMap| async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    format!("{method} {} {}", header("x-probe"), header("user-agent"))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn probe(url: String) -> Probe {
        Probe {
            method: "GET".into(),
            url,
            headers: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_200_comes_back_with_its_body() {
        let base = serve().await;
        let response = ReqwestChecker::new().fetch(&probe(format!("{base}/ok"))).await.unwrap();
        assert_eq!(
            response,
            ProbeResponse {
                status: 200,
                body: "hello a1b2c3".into()
            }
        );
    }

    #[tokio::test]
    async fn a_503_is_a_response_not_an_error() {
        let base = serve().await;
        let response = ReqwestChecker::new()
            .fetch(&probe(format!("{base}/down")))
            .await
            .unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.body, "database down");
    }

    #[tokio::test]
    async fn method_headers_and_user_agent_are_sent() {
        let base = serve().await;
        let mut p = probe(format!("{base}/echo"));
        p.method = "POST".into();
        p.headers.push(("X-Probe".into(), "smoke".into()));
        let response = ReqwestChecker::new().fetch(&p).await.unwrap();
        assert_eq!(
            response.body,
            format!("POST smoke slipway/{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_and_says_so() {
        let base = serve().await;
        let mut p = probe(format!("{base}/slow"));
        p.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = ReqwestChecker::new().fetch(&p).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(err, format!("GET {base}/slow timed out after 200ms"));
    }

    #[tokio::test]
    async fn a_closed_port_is_connection_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}/health");
        let err = ReqwestChecker::new().fetch(&probe(url.clone())).await.unwrap_err();
        assert!(err.contains("connection refused"), "{err}");
        assert!(err.contains(&url), "{err}");
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_is_a_tls_failure() {
        let base = serve().await;
        let url = format!("{}/ok", base.replace("http://", "https://"));
        let err = ReqwestChecker::new().fetch(&probe(url.clone())).await.unwrap_err();
        assert!(err.starts_with(&format!("GET {url}: TLS failed")), "{err}");
    }

    #[tokio::test]
    async fn big_bodies_are_cut_to_64_kib_on_a_char_boundary() {
        let base = serve().await;
        let response = ReqwestChecker::new()
            .fetch(&probe(format!("{base}/big")))
            .await
            .unwrap();
        assert_eq!(response.body.len(), BODY_LIMIT);
        assert!(response.body.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn redirect_loops_stop() {
        let base = serve().await;
        let err = ReqwestChecker::new()
            .fetch(&probe(format!("{base}/redirect")))
            .await
            .unwrap_err();
        assert!(err.contains("redirected more than 5 times"), "{err}");
    }

    #[tokio::test]
    async fn a_bad_method_is_refused_in_words() {
        let mut p = probe("http://127.0.0.1:1/".into());
        p.method = "GE T".into();
        let err = ReqwestChecker::new().fetch(&p).await.unwrap_err();
        assert_eq!(err, "\"GE T\" is not an HTTP method");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("ééé".into(), 5), "éé");
        assert_eq!(cut("abc".into(), 5), "abc");
    }
}

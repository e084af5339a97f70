//! A request-counting HTTP proxy in front of moto, so a test can say how many AWS requests
//! slipway's functions made — and fail when that number grows. With
//! `SLIPWAY_TRACE_REQUESTS=1` in the environment it also prints each request, in order, with
//! its whole key (and `aws_run` prints where each step of a run starts), to see where a
//! count comes from.
//!
//! ```ignore
//! let moto = Moto::start().await;
//! let proxy = CountingProxy::start(&moto.endpoint()).await;
//! let counted = sdk_for(&proxy.endpoint()).await; // clients built on this are counted
//! // … work …
//! let requests = proxy.take();                     // and the counter starts again from zero
//! assert!(requests.total() <= 25, "{requests}");
//! ```
//!
//! Each request is named by its service and operation (`sqs SendMessageBatch`,
//! `ssm GetParameter`, `s3 PUT runs/`), the S3 ones with the first segment of their key, so a
//! failing count says where the requests went.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How many requests of each kind went through the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests(pub BTreeMap<String, u64>);

impl Requests {
    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Requests whose name starts with `prefix` (`"s3 "`, `"sqs SendMessage"`).
    pub fn matching(&self, prefix: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for Requests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} requests:", self.total())?;
        for (what, n) in &self.0 {
            writeln!(f, "  {n:>4}  {what}")?;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: Client<HttpConnector, Body>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

/// A proxy on a free loopback port that forwards every request to `upstream` and counts it.
/// Stops when dropped.
#[derive(Debug)]
pub struct CountingProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Starts forwarding to `upstream` (`http://127.0.0.1:<port>`).
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(upstream: &str) -> Self {
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            counts: counts.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(shared);
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap_or_else(|e| panic!("cannot bind a loopback port for the counting proxy: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("no local address: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, counts, task }
    }

    /// Where clients send requests to be counted.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What was counted since the last `take`; the counter starts again from zero.
    pub fn take(&self) -> Requests {
        Requests(std::mem::take(
            &mut *self.counts.lock().unwrap_or_else(PoisonError::into_inner),
        ))
    }

    /// What was counted since the last `take`, leaving the counter as it is.
    pub fn peek(&self) -> Requests {
        Requests(self.counts.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The name a request is counted under.
fn operation(request: &Request) -> String {
    if let Some(target) = request.headers().get("x-amz-target").and_then(|t| t.to_str().ok()) {
        // JSON protocols: `AmazonSQS.SendMessageBatch`, `AmazonSSM.GetParameter`.
        let (service, op) = target.split_once('.').unwrap_or(("", target));
        let service = match service {
            "AmazonSQS" => "sqs",
            "AmazonSSM" => "ssm",
            other => other,
        };
        return format!("{service} {op}");
    }
    // S3, path style: /<bucket>/<key>.
    let path = request.uri().path().trim_start_matches('/');
    let key = path.split_once('/').map(|(_, key)| key).unwrap_or("");
    let query = request.uri().query().unwrap_or("");
    let method = request.method().as_str();
    if key.is_empty() {
        if query.contains("list-type=2") {
            let prefix = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("prefix="))
                .map(|p| p.replace("%2F", "/"))
                .unwrap_or_default();
            let first = prefix.split_inclusive('/').next().unwrap_or("");
            return format!("s3 LIST {first}");
        }
        return format!("s3 {method} (bucket)");
    }
    let first = key.split_inclusive('/').next().unwrap_or(key);
    format!("s3 {method} {first}")
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let name = operation(&request);
    if std::env::var_os("SLIPWAY_TRACE_REQUESTS").is_some() {
        eprintln!("REQ {name} {}", request.uri().path());
    }
    *shared
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name)
        .or_default() += 1;
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = match format!("{}{path}", shared.upstream).parse() {
        Ok(uri) => uri,
        Err(e) => return failure(format!("bad upstream URI: {e}")),
    };
    parts.uri = uri;
    // The SDK signs the Host header; moto does not check signatures, so it can stay as sent.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return failure(format!("reading the request body: {e}")),
    };
    match shared
        .client
        .request(http::Request::from_parts(parts, Body::from(body)))
        .await
    {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            match body.collect().await {
                Ok(collected) => Response::from_parts(parts, Body::from(collected.to_bytes())),
                Err(e) => failure(format!("reading moto's answer: {e}")),
            }
        }
        Err(e) => failure(format!("forwarding to moto: {e}")),
    }
}

fn failure(why: String) -> Response {
    let mut response = Response::new(Body::from(why));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

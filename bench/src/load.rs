//! Closed-loop HTTP load: `concurrency` clients, each sending its next request as soon as the
//! last was answered, until `total` were sent; every latency recorded in an HDR histogram.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// Latencies, in microseconds.
pub type Latencies = Histogram<u64>;

/// What a load got back.
#[derive(Debug)]
pub struct Answered {
    /// How long each request took to be answered in full, whatever the answer.
    pub latencies: Latencies,
    /// How many answers of each status code.
    pub statuses: BTreeMap<u16, usize>,
    /// The body of the first answer that was not a success, to show why.
    pub first_refusal: Option<String>,
}

impl Answered {
    /// Nothing answered yet.
    pub fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            latencies: histogram()?,
            statuses: BTreeMap::new(),
            first_refusal: None,
        })
    }

    /// Takes in what `other` got back: its latencies, its statuses, its first refusal if this
    /// had none.
    pub fn add(&mut self, other: Answered) -> anyhow::Result<()> {
        self.latencies.add(other.latencies)?;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.first_refusal = self.first_refusal.take().or(other.first_refusal);
        Ok(())
    }

    /// How many answers were not `expected`.
    pub fn refused(&self, expected: reqwest::StatusCode) -> usize {
        self.statuses
            .iter()
            .filter(|(status, _)| **status != expected.as_u16())
            .map(|(_, n)| n)
            .sum()
    }
}

/// Runs `job(i)` for every `i` of `range`, on `concurrency` tasks that each take the next `i`
/// as soon as their last job is done. The first job that fails fails the whole.
pub async fn each_index<F, Fut>(range: std::ops::Range<usize>, concurrency: usize, job: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (job, next, end) = (job.clone(), next.clone(), range.end);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                job(i).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// A request for [`closed_loop`]: its method, path, headers and body (the `Host` header is
/// added).
pub type Request = http::Request<Full<Bytes>>;

/// Sends requests `0..total` (built by `request`) to the server at `base`
/// (`http://127.0.0.1:<port>`), `concurrency` at a time, and records how long each took to be
/// answered in full and with what status. A request that gets no answer at all fails the load.
///
/// Each of the `concurrency` clients has one HTTP/1.1 connection of its own, opened before
/// its first request is timed, and sends its next request on it as soon as the last was
/// answered — a plain hyper connection, not a pooled client: the load shares the machine's
/// cores with the server, and the less of them it takes, the more the latencies measure the
/// server rather than the load.
pub async fn closed_loop<F>(base: &str, total: usize, concurrency: usize, request: F) -> anyhow::Result<Answered>
where
    F: Fn(usize) -> Request + Send + Sync + 'static,
{
    let authority = base
        .strip_prefix("http://")
        .with_context(|| format!("{base} is not a plain http:// address"))?
        .trim_end_matches('/')
        .to_owned();
    let host = http::HeaderValue::from_str(&authority)?;
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (request, next, authority, host) = (request.clone(), next.clone(), authority.clone(), host.clone());
        clients.spawn(async move {
            let mut answered = Answered::empty()?;
            let stream = tokio::net::TcpStream::connect(&authority)
                .await
                .with_context(|| format!("cannot connect to {authority}"))?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(connection);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let mut req = request(i);
                req.headers_mut().insert(http::header::HOST, host.clone());
                let started = Instant::now();
                sender
                    .ready()
                    .await
                    .with_context(|| format!("request {i}: the connection closed"))?;
                let answer = sender.send_request(req).await.with_context(|| format!("request {i}"))?;
                let status = answer.status();
                let body = answer
                    .into_body()
                    .collect()
                    .await
                    .with_context(|| format!("request {i}'s answer"))?
                    .to_bytes();
                let took = started.elapsed();
                answered
                    .latencies
                    .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX))?;
                *answered.statuses.entry(status.as_u16()).or_default() += 1;
                if !status.is_success() && answered.first_refusal.is_none() {
                    answered.first_refusal = Some(format!("{status}: {}", String::from_utf8_lossy(&body)));
                }
            }
            drop(sender);
            driver.abort();
            Ok::<_, anyhow::Error>(answered)
        });
    }
    let mut all = Answered::empty()?;
    while let Some(done) = clients.join_next().await {
        all.add(done??)?;
    }
    Ok(all)
}

fn histogram() -> anyhow::Result<Latencies> {
    // 1 µs to 60 s, three significant digits.
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// A quantile of `latencies`, in milliseconds.
pub fn ms(latencies: &Latencies, quantile: f64) -> f64 {
    latencies.value_at_quantile(quantile) as f64 / 1000.0
}

/// A client with room for `concurrency` kept-alive connections.
pub fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .no_proxy()
        .build()?)
}

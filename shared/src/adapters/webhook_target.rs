//! The `webhook` deploy target: each phase is a signed JSON request to your own deploy
//! service, which answers at once or later.
//!
//! ```toml
//! deploy = { type = "webhook", url = "https://deployer.example.com/slipway", secret = "/slipway/shop/deploy-hook", poll_interval = "5s", timeout = "15m" }
//! ```
//!
//! # The request
//!
//! For each phase (`backup`, `migrate`, `release`, `restore`) slipway POSTs to `url`:
//!
//! ```json
//! {"phase":"release","run":"shop-a1b2…","repo":"acme/shop","sha":"a1b2…","env":"production",
//!  "artifact":"registry.example.com/shop@sha256:…","backup":null,
//!  "stage":"deploy","rolling_back":null,"attempt":null,
//!  "callback_path":"/hooks/deploy","callback_url":null}
//! ```
//!
//! - `run`, `sha`, `artifact`: the run whose commit and artifact this phase deploys; `artifact`
//!   is what CI built, or `null`. `backup`: for `restore`, the reference the backup phase
//!   returned, else `null`.
//! - `stage`: which stage asked. `deploy`: `run`'s own deploy (`rolling_back` is `null`).
//!   `rollback`: the rollback of run `rolling_back`, which restores that run's backup and
//!   redeploys an earlier release — so `run` is then the *earlier* run whose release is put
//!   back (the rolling-back run itself for `restore`). The same `run`, `env` and `phase` can
//!   thus come twice, once for that run's deploy and once for a later run rolling back to it:
//!   `rolling_back` tells them apart. `attempt`: for a rollback, which of that run's rollbacks
//!   in this environment it is (1, then 2 if it is rolled back again, for instance by hand
//!   after an automatic rollback failed); for a deploy, `null` the first time and 2, 3, …
//!   when someone retried it (`slipway retry`, the Retry button).
//! - `callback_path`: always `/hooks/deploy`; a receiver that answers `accepted` without a
//!   `status_url` reports the result by POSTing to slipway's public URL + this path.
//!   `callback_url`: that full URL when slipway was told its public URL
//!   ([`WebhookTarget::with_public_url`]), else `null`.
//!
//! Headers:
//!
//! - `Content-Type: application/json`
//! - `X-Slipway-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body under the target's
//!   `secret` ([`crate::signature::sign`]). Check it over the raw bytes, in constant time,
//!   before parsing.
//! - `X-Slipway-Delivery`: `<run>.<env>.<phase>` for a deploy (`….attempt.<n>` for a retried one),
//!   `<run>.<env>.<phase>.rollback.<rolling_back>` for a first rollback and
//!   `….rollback.<rolling_back>.<attempt>` for a later one. The same on every retry of
//!   this phase, so a receiver can drop duplicates (delivery is at least once); a rollback
//!   redeploying an earlier run's release never repeats that run's own delivery id.
//!
//! # The answer
//!
//! A 2xx answer carries JSON with a `status`:
//!
//! | answer | meaning |
//! |---|---|
//! | `{"status":"succeeded","reference":"…","output":"…"}` | done; `reference` and `output` optional |
//! | `{"status":"skipped","output":"…"}` | nothing to do for this phase (recorded as skipped) |
//! | `{"status":"failed","reason":"…","output":"…"}` | the phase failed; the run stops (or rolls back) |
//! | `{"status":"accepted","status_url":"https://…"}` | under way: slipway polls `status_url` |
//! | `{"status":"accepted"}` | under way: slipway waits for the signed callback |
//!
//! `reference` matters for `backup` (the `restore` phase gets it back as `backup`; a backup
//! that names none gets the run id) and, for `release`, says what now runs. `output` is shown
//! on the run page (its last 64 KiB, the secret masked). `status_url` may be relative to `url`.
//!
//! **Polling**: every `poll_interval` slipway GETs `status_url`, signed the same way over an
//! empty body (`X-Slipway-Signature: sha256=<hex HMAC of "">`, same `X-Slipway-Delivery`).
//! It answers like the POST; `running` or `accepted` means keep waiting (its `output`, if any,
//! is kept as progress). 5xx, 408, 429 and network errors are retried at the next poll; any
//! other non-2xx answer fails the phase.
//!
//! **Callback**: the receiver POSTs to slipway's `/hooks/deploy` (see
//! [`crate::http::deploy_callback`]):
//! `{"run":"…","env":"…","phase":"release","rolling_back":…,"attempt":…,"status":"succeeded|skipped|failed","reference":…,"output":…,"reason":…}`,
//! signed `X-Slipway-Signature: sha256=<hex>` with the same secret. `run`, `env`, `phase`,
//! `rolling_back` and `attempt` are the request's (`rolling_back` and `attempt` may be left
//! out for a deploy; a rollback must give `rolling_back`, and `attempt` when it is not 1).
//! slipway stores it under `deploy-callbacks/<run>/<env>/<phase><suffix>.json`, the suffix
//! being the delivery id's (empty for a deploy) and the waiting target picks it up within one `poll_interval`. The first callback
//! for a phase stands; the callback may even arrive before the `accepted` answer.
//!
//! # Failures
//!
//! - 4xx (but 408 and 429) or a 3xx (redirects are not followed): the phase fails with the status
//!   and the start of the answer; not retried.
//! - 5xx, 408, 429 or a network error: the POST is retried (up to 4 times in all, 1 s, 2 s, 4 s
//!   apart), then the phase fails.
//! - A 2xx answer that is not JSON with a known `status`: the phase fails.
//! - Everything — retries, polls, the wait for a callback — is bounded by `timeout`; then the
//!   phase fails with `timed out after <timeout>`.
//! - No resolved `secret`: the phase cannot start; nothing unsigned is ever sent.
//!
//! The secret is never logged nor put into a reason; URLs appear in reasons and logs by host
//! only, since paths and queries may hold a receiver's own token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable as _};
use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::DeployTargetConfig;
use crate::domain::{EnvName, Phase, RunId};
use crate::ports::{DeployError, DeployPurpose, DeployReport, DeployRequest, DeployTarget, StateStore, StoreKey};

/// Where receivers POST completion callbacks, under slipway's public URL.
pub const CALLBACK_PATH: &str = "/hooks/deploy";
/// The header carrying `sha256=<hex>` of the body.
pub const SIGNATURE_HEADER: &str = "x-slipway-signature";
/// The header carrying the phase's delivery id ([`delivery_id`]), stable across retries.
pub const DELIVERY_HEADER: &str = "x-slipway-delivery";

/// How long one request may take, connecting included (the phase's `timeout` still bounds
/// the whole).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers longer than this are cut here.
const MAX_ANSWER: usize = 1024 * 1024;
/// How much of an unexpected answer is quoted in a reason.
const SNIPPET: usize = 200;

/// How often the target retries and polls. Production uses [`Pacing::default`]; tests turn
/// it down.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Polls (of a status URL or the state store) never come closer together than this,
    /// whatever `poll_interval` says.
    pub min_poll: Duration,
    /// The pause before the first re-POST after a 5xx or network error; it doubles.
    pub first_retry: Duration,
    /// The longest pause between re-POSTs.
    pub max_retry: Duration,
    /// How many times the request is POSTed at most, the first time included.
    pub max_posts: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            min_poll: Duration::from_secs(1),
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(15),
            max_posts: 4,
        }
    }
}

/// Carries out deploy phases by calling a webhook. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    store: Arc<dyn StateStore>,
    client: reqwest::Client,
    pacing: Pacing,
    public_url: Option<url::Url>,
}

impl WebhookTarget {
    /// A webhook target that finds callbacks in `store` (where `POST /hooks/deploy` leaves them).
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            client: super::notify::outbound_client(REQUEST_TIMEOUT),
            pacing: Pacing::default(),
            public_url: None,
        }
    }

    /// The same target, retrying and polling at `pacing`.
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    /// The same target, sending receivers the full `callback_url` under `public_url`.
    pub fn with_public_url(mut self, public_url: url::Url) -> Self {
        self.public_url = Some(public_url);
        self
    }
}

/// The stored (and POSTed) completion of one phase: the body of `POST /hooks/deploy`, kept
/// under [`StoreKey::deploy_callback`] exactly as [`serde_json::to_vec`] writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployCallback {
    pub run: RunId,
    pub env: EnvName,
    pub phase: Phase,
    /// The request's `rolling_back`: the run whose rollback asked for the phase, or `None`
    /// for `run`'s own deploy. Left out of the record when `None`, so a deploy's record is the
    /// same as before rollbacks were told apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_back: Option<RunId>,
    /// The request's `attempt`, for a rollback; left out, it is the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub status: Finished,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl DeployCallback {
    /// The stage the callback answers for, as its request named it.
    pub fn purpose(&self) -> DeployPurpose<'_> {
        match &self.rolling_back {
            None => DeployPurpose::deploy(self.attempt.unwrap_or(1)),
            Some(rolling_back) => DeployPurpose::Rollback {
                rolling_back,
                attempt: self.attempt.unwrap_or(1),
            },
        }
    }
}

/// How a phase ended, as a receiver says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finished {
    Succeeded,
    Skipped,
    Failed,
}

/// The request body.
#[derive(Debug, Serialize)]
struct Outgoing<'a> {
    phase: Phase,
    run: &'a RunId,
    repo: &'a str,
    sha: &'a str,
    env: &'a str,
    artifact: Option<&'a str>,
    backup: Option<&'a str>,
    /// `deploy` or `rollback`.
    stage: &'static str,
    /// For a rollback, the run rolling back; else `null`.
    rolling_back: Option<&'a RunId>,
    /// For a rollback, which of that run's rollbacks in this environment (1, 2, …); else `null`.
    attempt: Option<u32>,
    callback_path: &'static str,
    callback_url: Option<String>,
}

/// An answer to the POST or to a status poll.
#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    status_url: Option<String>,
}

/// A phase's end, from whichever way it came.
#[derive(Debug)]
struct Outcome {
    status: Finished,
    reference: Option<String>,
    output: Option<String>,
    reason: Option<String>,
}

/// What an answer says to do next.
#[derive(Debug)]
enum Step {
    Done(Outcome),
    /// Under way; poll `status_url` if given, else wait for the callback.
    Wait {
        status_url: Option<String>,
        output: Option<String>,
    },
}

/// One phase's call: everything the requests share.
struct Call<'a> {
    url: &'a url::Url,
    secret: &'a SecretString,
    delivery: HeaderValue,
    key: StoreKey,
    poll: Duration,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("host", &host(self.url))
            .field("delivery", &self.delivery)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// What a request came back with, read whole (up to [`MAX_ANSWER`]).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Bytes,
}

fn failed(reason: impl Into<String>) -> DeployError {
    DeployError::Failed {
        reason: reason.into(),
        output: String::new(),
    }
}

fn could_not_start(reason: impl Into<String>) -> DeployError {
    DeployError::CouldNotStart { reason: reason.into() }
}

#[async_trait]
impl DeployTarget for WebhookTarget {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        let DeployTargetConfig::Webhook {
            url,
            poll_interval,
            timeout,
            ..
        } = request.target
        else {
            return Err(could_not_start(format!(
                "the webhook target was given a {} target",
                request.target.kind()
            )));
        };
        if !matches!(url.scheme(), "https" | "http") {
            return Err(could_not_start(format!(
                "the webhook URL {} is not an http(s) URL",
                host(url)
            )));
        }
        let env = EnvName::parse(request.env).map_err(|e| could_not_start(e.to_string()))?;
        let Some(secret) = request
            .secrets
            .iter()
            .find(|(name, _)| name == "secret")
            .map(|(_, value)| value)
        else {
            return Err(could_not_start(
                "the webhook target's signing secret was not resolved; nothing was sent",
            ));
        };
        let delivery = delivery_id(request.run, &env, request.phase, request.purpose);
        let delivery = HeaderValue::from_str(&delivery).map_err(|e| could_not_start(e.to_string()))?;
        let rolling_back = request.purpose.rolling_back();
        let body = Outgoing {
            phase: request.phase,
            run: request.run,
            repo: request.repo,
            sha: request.sha,
            env: request.env,
            artifact: request.artifact,
            backup: request.backup,
            stage: request.purpose.stage(),
            rolling_back,
            attempt: request.purpose.attempt(),
            callback_path: CALLBACK_PATH,
            callback_url: self.public_url.as_ref().map(|base| {
                let base = base.as_str().trim_end_matches('/');
                format!("{base}{CALLBACK_PATH}")
            }),
        };
        let body =
            serde_json::to_vec(&body).map_err(|e| could_not_start(format!("the request could not be encoded: {e}")))?;
        let call = Call {
            url,
            secret,
            delivery,
            key: StoreKey::deploy_callback(request.run, &env, request.phase, request.purpose),
            poll: poll_interval.unsigned_abs().max(self.pacing.min_poll),
        };

        let started = std::time::Instant::now();
        let mut progress = String::new();
        let ended = tokio::time::timeout(timeout.unsigned_abs(), self.carry_out(&call, body, &mut progress)).await;
        let result = match ended {
            Ok(Ok(outcome)) => finish(outcome, &request, secret),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DeployError::Failed {
                reason: format!("timed out after {timeout:#}"),
                output: clean_output(&progress, secret),
            }),
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let rolling_back = rolling_back.map(RunId::as_str);
        match &result {
            Ok(report) => tracing::info!(
                run = %request.run, env = request.env, phase = %request.phase, rolling_back, host = host(url),
                skipped = report.skipped, duration_ms, "webhook deploy phase done"
            ),
            Err(e) => tracing::warn!(
                run = %request.run, env = request.env, phase = %request.phase, rolling_back, host = host(url),
                duration_ms, reason = %e, "webhook deploy phase failed"
            ),
        }
        result
    }
}

impl WebhookTarget {
    /// POSTs, then follows the answer to the phase's end. `progress` keeps the last output a
    /// running phase reported, for the timeout's reason.
    async fn carry_out(&self, call: &Call<'_>, body: Vec<u8>, progress: &mut String) -> Result<Outcome, DeployError> {
        let answer = self.post(call, Bytes::from(body)).await?;
        match step(answer, "the webhook")? {
            Step::Done(outcome) => Ok(outcome),
            Step::Wait { status_url, output } => {
                if let Some(output) = output {
                    *progress = output;
                }
                match status_url {
                    Some(status_url) => {
                        let status_url = call.url.join(&status_url).map_err(|e| {
                            failed(format!("the webhook answered with a status_url that is not a URL: {e}"))
                        })?;
                        if !matches!(status_url.scheme(), "https" | "http") {
                            return Err(failed(format!(
                                "the webhook's status_url on {} is not an http(s) URL",
                                host(&status_url)
                            )));
                        }
                        tracing::info!(delivery = ?call.delivery, host = host(&status_url), "webhook accepted the phase; polling its status URL");
                        self.poll_status(call, &status_url, progress).await
                    }
                    None => {
                        tracing::info!(delivery = ?call.delivery, "webhook accepted the phase; waiting for its callback");
                        self.wait_for_callback(call).await
                    }
                }
            }
        }
    }

    /// POSTs the request, retrying 5xx, 408, 429 and network errors with backoff: at most
    /// `max_posts` attempts, waiting `first_retry` after the first, doubling up to `max_retry`.
    async fn post(&self, call: &Call<'_>, body: Bytes) -> Result<Answer, DeployError> {
        /// Why one attempt failed: worth another ([`Post::Retry`], what went wrong), or not.
        enum Post {
            Retry(String),
            Fail(DeployError),
        }
        let signature = signature_of(call.secret, &body)?;
        let posts = self.pacing.max_posts.max(1);
        let backoff = ExponentialBuilder::new()
            .with_min_delay(self.pacing.first_retry)
            .with_factor(2.0)
            .with_max_delay(self.pacing.max_retry)
            .with_max_times(usize::try_from(posts - 1).unwrap_or(usize::MAX));
        let attempts = AtomicU32::new(0);
        let answer = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            let request = self
                .client
                .post(call.url.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header(SIGNATURE_HEADER, signature.clone())
                .body(body.clone());
            match self.send(call, request).await {
                Ok(reply) if reply.status.is_success() => parse(&reply, "the webhook").map_err(Post::Fail),
                Ok(reply) if retryable(reply.status) => Err(Post::Retry(said("the webhook", &reply))),
                Ok(reply) => Err(Post::Fail(failed(said("the webhook", &reply)))),
                Err(e) => Err(Post::Retry(format!(
                    "the webhook on {}: {}",
                    host(call.url),
                    describe(&e)
                ))),
            }
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| matches!(e, Post::Retry(_)))
        .notify(|e, _| {
            if let Post::Retry(problem) = e {
                let attempt = attempts.load(Ordering::Relaxed);
                tracing::warn!(delivery = ?call.delivery, attempt, %problem, "webhook deploy request failed; retrying");
            }
        })
        .await;
        answer.map_err(|e| match e {
            Post::Fail(e) => e,
            Post::Retry(problem) => failed(format!(
                "{problem} (after {} attempts)",
                attempts.load(Ordering::Relaxed)
            )),
        })
    }

    /// GETs `status_url` every poll interval until it says the phase ended.
    async fn poll_status(
        &self,
        call: &Call<'_>,
        status_url: &url::Url,
        progress: &mut String,
    ) -> Result<Outcome, DeployError> {
        let signature = signature_of(call.secret, b"")?;
        loop {
            tokio::time::sleep(call.poll).await;
            let request = self
                .client
                .get(status_url.clone())
                .header(SIGNATURE_HEADER, signature.clone());
            match self.send(call, request).await {
                Ok(reply) if reply.status.is_success() => {
                    match step(parse(&reply, "the status URL")?, "the status URL")? {
                        Step::Done(outcome) => return Ok(outcome),
                        Step::Wait { output, .. } => {
                            if let Some(output) = output {
                                *progress = output;
                            }
                        }
                    }
                }
                Ok(reply) if retryable(reply.status) => {
                    tracing::warn!(delivery = ?call.delivery, problem = %said("the status URL", &reply), "status poll failed; polling again");
                }
                Ok(reply) => return Err(failed(said("the status URL", &reply))),
                Err(e) => {
                    tracing::warn!(delivery = ?call.delivery, problem = %describe(&e), "status poll failed; polling again");
                }
            }
        }
    }

    /// Looks for the phase's callback in the state store every poll interval.
    async fn wait_for_callback(&self, call: &Call<'_>) -> Result<Outcome, DeployError> {
        loop {
            match self.store.get(&call.key).await {
                Ok(Some(found)) => {
                    let callback: DeployCallback = serde_json::from_slice(&found.value)
                        .map_err(|e| failed(format!("the stored callback {} is unreadable: {e}", call.key)))?;
                    return Ok(Outcome {
                        status: callback.status,
                        reference: callback.reference,
                        output: callback.output,
                        reason: callback.reason,
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key = %call.key, error = %e, "could not look for the deploy callback; looking again");
                }
            }
            tokio::time::sleep(call.poll).await;
        }
    }

    /// Sends one request with the headers every request carries, and reads the answer.
    async fn send(&self, call: &Call<'_>, request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
        let mut response = request
            .timeout(REQUEST_TIMEOUT)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("slipway"))
            .header(DELIVERY_HEADER, call.delivery.clone())
            .send()
            .await
            .map_err(reqwest::Error::without_url)?;
        let status = response.status();
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(reqwest::Error::without_url)? {
            let room = MAX_ANSWER.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_ANSWER {
                break;
            }
        }
        Ok(Reply {
            status,
            body: body.freeze(),
        })
    }
}

/// The `X-Slipway-Delivery` id of one phase: `<run>.<env>.<phase>` for `run`'s own deploy,
/// `<run>.<env>.<phase>.rollback.<rolling back>` for a rollback, so a rollback redeploying an
/// earlier run's release never repeats that run's own delivery.
pub fn delivery_id(run: &RunId, env: &EnvName, phase: Phase, purpose: DeployPurpose<'_>) -> String {
    format!("{run}.{env}.{phase}{}", purpose.suffix())
}

fn signature_of(secret: &SecretString, body: &[u8]) -> Result<HeaderValue, DeployError> {
    let signature = crate::signature::sign(secret.expose_secret().as_bytes(), body);
    HeaderValue::from_str(&signature).map_err(|e| could_not_start(format!("the signature is not a header value: {e}")))
}

/// Worth asking again: the receiver is down, overloaded or slow.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// `<who> answered <status>: <start of the body>`.
fn said(who: &str, reply: &Reply) -> String {
    let text = String::from_utf8_lossy(&reply.body);
    let text = super::notify::slack::truncate(text.trim(), SNIPPET);
    let redirect = if reply.status.is_redirection() {
        " (redirects are not followed)"
    } else {
        ""
    };
    if text.is_empty() {
        format!("{who} answered {}{redirect}", reply.status.as_u16())
    } else {
        format!("{who} answered {}{redirect}: {text}", reply.status.as_u16())
    }
}

/// A 2xx answer's JSON.
fn parse(reply: &Reply, who: &str) -> Result<Answer, DeployError> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        let text = String::from_utf8_lossy(&reply.body);
        let text = super::notify::slack::truncate(text.trim(), SNIPPET);
        failed(format!(
            "{who} answered {} without {{\"status\": \"succeeded|skipped|failed|accepted\", …}} ({e}): {text}",
            reply.status.as_u16()
        ))
    })
}

/// What an answer's status means.
fn step(answer: Answer, who: &str) -> Result<Step, DeployError> {
    let Answer {
        status,
        reference,
        output,
        reason,
        status_url,
    } = answer;
    let status = match status.as_str() {
        "succeeded" => Finished::Succeeded,
        "skipped" => Finished::Skipped,
        "failed" => Finished::Failed,
        "accepted" | "running" => return Ok(Step::Wait { status_url, output }),
        other => {
            return Err(failed(format!(
                "{who} answered with status {:?}; expected succeeded, skipped, failed, accepted or running",
                super::notify::slack::truncate(other, 40)
            )));
        }
    };
    Ok(Step::Done(Outcome {
        status,
        reference,
        output,
        reason,
    }))
}

/// The phase's result as the engine records it.
fn finish(outcome: Outcome, request: &DeployRequest<'_>, secret: &SecretString) -> Result<DeployReport, DeployError> {
    let output = clean_output(outcome.output.as_deref().unwrap_or_default(), secret);
    match outcome.status {
        Finished::Succeeded => {
            let reference = outcome.reference.filter(|r| !r.trim().is_empty());
            let reference = match request.phase {
                // A restore needs something to name the backup by.
                Phase::Backup => Some(reference.unwrap_or_else(|| request.run.to_string())),
                _ => reference,
            };
            Ok(DeployReport {
                output,
                reference,
                skipped: false,
            })
        }
        Finished::Skipped => Ok(DeployReport::skipped(output)),
        Finished::Failed => Err(DeployError::Failed {
            reason: outcome
                .reason
                .filter(|r| !r.trim().is_empty())
                .map(|r| clean_output(&r, secret))
                .unwrap_or_else(|| format!("the webhook reported that the {} phase failed", request.phase)),
            output,
        }),
    }
}

/// A receiver's output as slipway keeps it: the secret masked, the last 64 KiB.
fn clean_output(output: &str, secret: &SecretString) -> String {
    let secret = secret.expose_secret();
    let masked = if secret.is_empty() {
        output.to_owned()
    } else {
        output.replace(secret, super::command::MASK)
    };
    let limit = super::command::OUTPUT_LIMIT;
    if masked.len() <= limit {
        return masked;
    }
    let mut start = masked.len() - limit;
    while !masked.is_char_boundary(start) {
        start += 1;
    }
    masked[start..].to_owned()
}

/// A URL's host and port, without the path or query (which may hold a token).
fn host(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "?".to_owned(),
    }
}

/// A request failure in words, without the URL.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read"
    } else {
        "the request failed"
    };
    let mut innermost = None;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    match innermost {
        Some(cause) => format!("{what}: {cause}"),
        None => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    use axum::response::{IntoResponse, Response};
    use jiff::SignedDuration;
    use serde_json::{Value, json};

    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::ParamName;

    const SECRET: &str = "deploy-hook-s3cr3t";
    const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

    /// One request as the receiver saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Seen {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }

        /// Checks the signature the way a receiver must: over the raw bytes.
        fn signed_with(&self, secret: &str) -> bool {
            let signature = self.headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
            crate::signature::verify(secret.as_bytes(), signature, &self.body).is_ok()
        }
    }

    /// A deploy endpoint answering from a script: each request takes the next answer; the
    /// last one repeats.
    #[derive(Clone, Default)]
    struct Receiver {
        answers: Arc<Mutex<VecDeque<(u16, String)>>>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Receiver {
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn answer(State(r): State<Receiver>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        r.seen.lock().unwrap().push(Seen {
            method,
            path: uri.path().to_owned(),
            headers,
            body,
        });
        let (status, body) = {
            let mut answers = r.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.pop_front().unwrap()
            } else {
                answers.front().cloned().unwrap()
            }
        };
        (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response()
    }

    /// Starts a receiver answering `answers` in turn; returns its base URL.
    async fn serve(answers: &[(u16, Value)]) -> (url::Url, Receiver) {
        let receiver = Receiver::default();
        *receiver.answers.lock().unwrap() = answers.iter().map(|(s, b)| (*s, b.to_string())).collect();
        let app = axum::Router::new().fallback(answer).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/deploy?token=receivers-own", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), receiver)
    }

    fn target_config(url: url::Url, timeout: SignedDuration) -> DeployTargetConfig {
        DeployTargetConfig::Webhook {
            url,
            secret: ParamName::parse("/slipway/shop/deploy-hook").unwrap(),
            previous_secret: None,
            poll_interval: SignedDuration::from_millis(5),
            timeout,
        }
    }

    fn fast(store: &MemoryStore) -> WebhookTarget {
        WebhookTarget::new(Arc::new(store.clone())).with_pacing(Pacing {
            min_poll: Duration::ZERO,
            first_retry: Duration::from_millis(5),
            max_retry: Duration::from_millis(20),
            max_posts: 4,
        })
    }

    fn run() -> RunId {
        RunId::parse(&format!("shop-{SHA}")).unwrap()
    }

    async fn deploy_with(
        target: &WebhookTarget,
        config: &DeployTargetConfig,
        phase: Phase,
        secrets: Vec<(String, SecretString)>,
    ) -> Result<DeployReport, DeployError> {
        deploy_as(target, config, phase, &run(), DeployPurpose::Deploy, secrets).await
    }

    /// Deploys `phase` of `run`'s release for `purpose`.
    async fn deploy_as(
        target: &WebhookTarget,
        config: &DeployTargetConfig,
        phase: Phase,
        run: &RunId,
        purpose: DeployPurpose<'_>,
        secrets: Vec<(String, SecretString)>,
    ) -> Result<DeployReport, DeployError> {
        target
            .deploy(DeployRequest {
                phase,
                run,
                purpose,
                repo: "acme/shop",
                sha: SHA,
                env: "production",
                artifact: Some("registry.example.com/shop@sha256:abc"),
                backup: (phase == Phase::Restore).then_some("dump-7"),
                secrets,
                target: config,
            })
            .await
    }

    fn secrets() -> Vec<(String, SecretString)> {
        vec![("secret".to_owned(), SecretString::from(SECRET.to_owned()))]
    }

    /// Deploys `phase` against a receiver answering `answers`, with a 5 s timeout.
    async fn deploy(answers: &[(u16, Value)], phase: Phase) -> (Result<DeployReport, DeployError>, Receiver) {
        let (url, receiver) = serve(answers).await;
        let config = target_config(url, SignedDuration::from_secs(5));
        let result = deploy_with(&fast(&MemoryStore::new()), &config, phase, secrets()).await;
        (result, receiver)
    }

    /// Display and Debug of a result, to check that the secret is in neither.
    fn everything_said<T: std::fmt::Debug>(r: &Result<T, DeployError>) -> String {
        match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("{e} {e:?}"),
        }
    }

    #[tokio::test]
    async fn succeeded_synchronously_with_a_signed_request() {
        let (result, receiver) = deploy(
            &[(
                200,
                json!({"status": "succeeded", "reference": "v42", "output": "deployed v42"}),
            )],
            Phase::Release,
        )
        .await;
        assert_eq!(
            result.unwrap(),
            DeployReport {
                output: "deployed v42".into(),
                reference: Some("v42".into()),
                skipped: false
            }
        );
        let seen = receiver.seen();
        assert_eq!(seen.len(), 1);
        let request = &seen[0];
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/deploy");
        assert!(request.signed_with(SECRET), "the receiver can verify the signature");
        assert!(!request.signed_with("another secret"));
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(
            request.headers[DELIVERY_HEADER],
            format!("shop-{SHA}.production.release").as_str()
        );
        assert_eq!(
            request.json(),
            json!({
                "phase": "release",
                "run": format!("shop-{SHA}"),
                "repo": "acme/shop",
                "sha": SHA,
                "env": "production",
                "artifact": "registry.example.com/shop@sha256:abc",
                "backup": null,
                "stage": "deploy",
                "rolling_back": null,
                "attempt": null,
                "callback_path": "/hooks/deploy",
                "callback_url": null,
            })
        );
        assert!(!String::from_utf8_lossy(&request.body).contains(SECRET));
    }

    #[tokio::test]
    async fn a_restore_carries_the_backup_reference_and_the_callback_url_when_known() {
        let (url, receiver) = serve(&[(200, json!({"status": "succeeded"}))]).await;
        let config = target_config(url, SignedDuration::from_secs(5));
        let target = fast(&MemoryStore::new()).with_public_url("https://slipway.example.com/".parse().unwrap());
        let report = deploy_with(&target, &config, Phase::Restore, secrets()).await.unwrap();
        assert_eq!(report.reference, None);
        let body = receiver.seen()[0].json();
        assert_eq!(body["phase"], "restore");
        assert_eq!(body["backup"], "dump-7");
        assert_eq!(body["callback_url"], "https://slipway.example.com/hooks/deploy");
        assert_eq!(
            receiver.seen()[0].headers[DELIVERY_HEADER],
            format!("shop-{SHA}.production.restore").as_str()
        );
    }

    #[tokio::test]
    async fn a_backup_without_a_reference_is_named_by_the_run() {
        let (result, _) = deploy(&[(200, json!({"status": "succeeded"}))], Phase::Backup).await;
        assert_eq!(result.unwrap().reference, Some(format!("shop-{SHA}")));
    }

    #[tokio::test]
    async fn failed_synchronously() {
        let (result, receiver) = deploy(
            &[(
                200,
                json!({"status": "failed", "reason": "migration 42 failed", "output": "ERROR: relation exists"}),
            )],
            Phase::Migrate,
        )
        .await;
        match result {
            Err(DeployError::Failed { reason, output }) => {
                assert_eq!(reason, "migration 42 failed");
                assert_eq!(output, "ERROR: relation exists");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(receiver.seen().len(), 1, "a reported failure is not retried");
    }

    #[tokio::test]
    async fn skipped() {
        let (result, _) = deploy(
            &[(200, json!({"status": "skipped", "output": "no migrations"}))],
            Phase::Migrate,
        )
        .await;
        assert_eq!(result.unwrap(), DeployReport::skipped("no migrations"));
    }

    #[tokio::test]
    async fn accepted_then_the_status_url_is_polled_until_it_ends() {
        let (url, receiver) = serve(&[]).await;
        let status_url = url.join("/status/77").unwrap();
        *receiver.answers.lock().unwrap() = [
            json!({"status": "accepted", "status_url": status_url.as_str()}),
            json!({"status": "running", "output": "step 1"}),
            json!({"status": "running", "output": "step 2"}),
            json!({"status": "succeeded", "reference": "v43", "output": "done"}),
        ]
        .iter()
        .map(|b| (200, b.to_string()))
        .collect();
        let config = target_config(url, SignedDuration::from_secs(5));
        let report = deploy_with(&fast(&MemoryStore::new()), &config, Phase::Release, secrets())
            .await
            .unwrap();
        assert_eq!(report.reference.as_deref(), Some("v43"));
        assert_eq!(report.output, "done");

        let seen = receiver.seen();
        let calls: Vec<(Method, &str)> = seen.iter().map(|s| (s.method.clone(), s.path.as_str())).collect();
        assert_eq!(
            calls,
            [
                (Method::POST, "/deploy"),
                (Method::GET, "/status/77"),
                (Method::GET, "/status/77"),
                (Method::GET, "/status/77"),
            ]
        );
        for poll in &seen[1..] {
            assert!(poll.body.is_empty());
            assert!(poll.signed_with(SECRET), "polls are signed over the empty body");
            assert_eq!(poll.headers[DELIVERY_HEADER], seen[0].headers[DELIVERY_HEADER]);
        }
    }

    #[tokio::test]
    async fn a_relative_status_url_is_resolved_against_the_webhook_url() {
        let (result, receiver) = deploy(
            &[
                (202, json!({"status": "accepted", "status_url": "/status/8"})),
                (200, json!({"status": "failed", "reason": "health check failed"})),
            ],
            Phase::Release,
        )
        .await;
        assert!(
            matches!(&result, Err(DeployError::Failed { reason, .. }) if reason == "health check failed"),
            "{result:?}"
        );
        assert_eq!(receiver.seen()[1].path, "/status/8");
    }

    #[tokio::test]
    async fn a_status_url_that_goes_away_fails_the_phase() {
        let (result, _) = deploy(
            &[
                (200, json!({"status": "accepted", "status_url": "/status/9"})),
                (404, json!({"error": "no such job"})),
            ],
            Phase::Release,
        )
        .await;
        match result {
            Err(DeployError::Failed { reason, .. }) => {
                assert!(reason.contains("the status URL answered 404"), "{reason}");
                assert!(reason.contains("no such job"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn accepted_then_the_callback_in_the_store_ends_it() {
        let store = MemoryStore::new();
        let (url, receiver) = serve(&[(202, json!({"status": "accepted"}))]).await;
        let config = target_config(url, SignedDuration::from_secs(5));
        let env = EnvName::parse("production").unwrap();
        let key = StoreKey::deploy_callback(&run(), &env, Phase::Release, DeployPurpose::Deploy);
        let callback = DeployCallback {
            run: run(),
            env,
            phase: Phase::Release,
            rolling_back: None,
            attempt: None,
            status: Finished::Succeeded,
            reference: Some("v44".into()),
            output: Some(format!("released with {SECRET}")),
            reason: None,
        };
        let writer = {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                store
                    .create(&key, Bytes::from(serde_json::to_vec(&callback).unwrap()))
                    .await
                    .unwrap();
            })
        };
        let target = fast(&store);
        let result = deploy_with(&target, &config, Phase::Release, secrets()).await;
        writer.await.unwrap();
        let report = result.unwrap();
        assert_eq!(report.reference.as_deref(), Some("v44"));
        assert_eq!(report.output, "released with ***", "the secret is masked");
        assert_eq!(receiver.seen().len(), 1, "only the store is polled");
    }

    #[tokio::test]
    async fn a_failed_callback_fails_the_phase() {
        let store = MemoryStore::new();
        let (url, _) = serve(&[(200, json!({"status": "accepted"}))]).await;
        let config = target_config(url, SignedDuration::from_secs(5));
        let env = EnvName::parse("production").unwrap();
        let callback = DeployCallback {
            run: run(),
            env: env.clone(),
            phase: Phase::Backup,
            rolling_back: None,
            attempt: None,
            status: Finished::Failed,
            reference: None,
            output: Some("pg_dump: disk full".into()),
            reason: None,
        };
        // A callback may come before the `accepted` answer: it is found at once.
        store
            .create(
                &StoreKey::deploy_callback(&run(), &env, Phase::Backup, DeployPurpose::Deploy),
                Bytes::from(serde_json::to_vec(&callback).unwrap()),
            )
            .await
            .unwrap();
        match deploy_with(&fast(&store), &config, Phase::Backup, secrets()).await {
            Err(DeployError::Failed { reason, output }) => {
                assert_eq!(reason, "the webhook reported that the backup phase failed");
                assert_eq!(output, "pg_dump: disk full");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_client_error_fails_at_once_with_what_the_receiver_said() {
        let (result, receiver) = deploy(&[(422, json!({"error": "unknown environment"}))], Phase::Release).await;
        match &result {
            Err(DeployError::Failed { reason, .. }) => {
                assert!(reason.contains("the webhook answered 422"), "{reason}");
                assert!(reason.contains("unknown environment"), "{reason}");
                assert!(
                    !reason.contains("receivers-own"),
                    "no path or query in reasons: {reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(receiver.seen().len(), 1, "4xx is not retried");
        assert!(!everything_said(&result).contains(SECRET));
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let (result, receiver) = deploy(&[(307, json!({}))], Phase::Release).await;
        assert!(
            matches!(&result, Err(DeployError::Failed { reason, .. }) if reason.contains("307") && reason.contains("redirects are not followed")),
            "{result:?}"
        );
        assert_eq!(receiver.seen().len(), 1);
    }

    #[tokio::test]
    async fn a_server_error_is_retried_with_the_same_delivery_id() {
        let (result, receiver) = deploy(
            &[
                (503, json!({"error": "warming up"})),
                (500, json!({"error": "oops"})),
                (200, json!({"status": "succeeded", "output": "third time"})),
            ],
            Phase::Release,
        )
        .await;
        assert_eq!(result.unwrap().output, "third time");
        let seen = receiver.seen();
        assert_eq!(seen.len(), 3);
        for retry in &seen[1..] {
            assert_eq!(retry.body, seen[0].body);
            assert_eq!(retry.headers[DELIVERY_HEADER], seen[0].headers[DELIVERY_HEADER]);
            assert!(retry.signed_with(SECRET));
        }
    }

    #[tokio::test]
    async fn server_errors_give_up_after_the_last_attempt() {
        let (result, receiver) = deploy(&[(502, json!({"error": "bad gateway"}))], Phase::Release).await;
        match result {
            Err(DeployError::Failed { reason, .. }) => {
                assert!(reason.contains("the webhook answered 502"), "{reason}");
                assert!(reason.contains("after 4 attempts"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(receiver.seen().len(), 4);
    }

    #[tokio::test]
    async fn network_errors_are_retried_then_fail() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: url::Url = format!("http://{}/deploy", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let config = target_config(url, SignedDuration::from_secs(5));
        let result = deploy_with(&fast(&MemoryStore::new()), &config, Phase::Release, secrets()).await;
        match &result {
            Err(DeployError::Failed { reason, .. }) => {
                assert!(reason.contains("could not connect"), "{reason}");
                assert!(reason.contains("after 4 attempts"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!everything_said(&result).contains(SECRET));
    }

    #[tokio::test]
    async fn waiting_longer_than_the_timeout_fails() {
        let (url, _) = serve(&[
            (200, json!({"status": "accepted", "status_url": "/status/1"})),
            (200, json!({"status": "running", "output": "still copying"})),
        ])
        .await;
        let config = target_config(url, SignedDuration::from_millis(150));
        let started = std::time::Instant::now();
        let result = deploy_with(&fast(&MemoryStore::new()), &config, Phase::Release, secrets()).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        match result {
            Err(DeployError::Failed { reason, output }) => {
                assert_eq!(reason, "timed out after 150ms");
                assert_eq!(output, "still copying", "the last progress is kept");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_callback_that_never_comes_times_out() {
        let (url, _) = serve(&[(202, json!({"status": "accepted"}))]).await;
        let config = target_config(url, SignedDuration::from_millis(100));
        let result = deploy_with(&fast(&MemoryStore::new()), &config, Phase::Release, secrets()).await;
        assert!(
            matches!(&result, Err(DeployError::Failed { reason, .. }) if reason == "timed out after 100ms"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn answers_that_are_not_the_protocol_fail() {
        for (status, body) in [
            (200, json!({"state": "ok"})),
            (200, json!({"status": "exploded"})),
            (204, Value::String(String::new())),
        ] {
            let (result, _) = deploy(&[(status, body.clone())], Phase::Release).await;
            assert!(matches!(result, Err(DeployError::Failed { .. })), "{body}: {result:?}");
        }
    }

    #[tokio::test]
    async fn without_the_secret_nothing_is_sent() {
        let (url, receiver) = serve(&[(200, json!({"status": "succeeded"}))]).await;
        let config = target_config(url, SignedDuration::from_secs(5));
        let result = deploy_with(&fast(&MemoryStore::new()), &config, Phase::Release, Vec::new()).await;
        assert!(matches!(result, Err(DeployError::CouldNotStart { .. })), "{result:?}");
        assert!(receiver.seen().is_empty());
    }

    #[tokio::test]
    async fn the_callback_record_is_the_documented_json() {
        let callback: DeployCallback = serde_json::from_value(json!({
            "run": format!("shop-{SHA}"), "env": "production", "phase": "release", "status": "skipped",
        }))
        .unwrap();
        assert_eq!(callback.status, Finished::Skipped);
        assert_eq!(callback.reference, None);
        let unknown = serde_json::from_value::<DeployCallback>(json!({
            "run": format!("shop-{SHA}"), "env": "production", "phase": "release", "status": "running",
        }));
        assert!(unknown.is_err());
    }

    /// Run B, rolling back, redeploys the release of the earlier run A (`run()`).
    fn rolling_back_run() -> RunId {
        RunId::parse("shop-b2c3d4e5f60718293a4b5c6d7e8f901234567890").unwrap()
    }

    async fn store_callback(store: &MemoryStore, callback: &DeployCallback) -> StoreKey {
        let key = StoreKey::deploy_callback(&callback.run, &callback.env, callback.phase, callback.purpose());
        store
            .create(&key, Bytes::from(serde_json::to_vec(callback).unwrap()))
            .await
            .unwrap();
        key
    }

    #[tokio::test]
    async fn a_rollback_redeploying_an_earlier_release_is_a_delivery_of_its_own() {
        let (url, receiver) = serve(&[(200, json!({"status": "succeeded"}))]).await;
        let config = target_config(url, SignedDuration::from_secs(5));
        let target = fast(&MemoryStore::new());
        let (a, b) = (run(), rolling_back_run());
        // A's own release, then B's rollback putting A's release back.
        deploy_as(&target, &config, Phase::Release, &a, DeployPurpose::Deploy, secrets())
            .await
            .unwrap();
        let rollback = DeployPurpose::Rollback {
            rolling_back: &b,
            attempt: 1,
        };
        deploy_as(&target, &config, Phase::Release, &a, rollback, secrets())
            .await
            .unwrap();

        let seen = receiver.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0].headers[DELIVERY_HEADER],
            format!("{a}.production.release").as_str()
        );
        assert_eq!(
            seen[1].headers[DELIVERY_HEADER],
            format!("{a}.production.release.rollback.{b}").as_str()
        );
        assert_ne!(
            seen[0].headers[DELIVERY_HEADER], seen[1].headers[DELIVERY_HEADER],
            "a receiver dropping repeated delivery ids must not drop the rollback"
        );
        let (deploy, rollback_body) = (seen[0].json(), seen[1].json());
        assert_eq!(
            (&deploy["stage"], &deploy["rolling_back"]),
            (&json!("deploy"), &Value::Null)
        );
        assert_eq!(
            (&rollback_body["stage"], &rollback_body["rolling_back"]),
            (&json!("rollback"), &json!(b.as_str()))
        );
        assert_eq!(rollback_body["run"], a.as_str(), "run is still the release put back");

        let env = EnvName::parse("production").unwrap();
        let first = DeployPurpose::Rollback {
            rolling_back: &b,
            attempt: 1,
        };
        let second = DeployPurpose::Rollback {
            rolling_back: &b,
            attempt: 2,
        };
        assert_eq!(rollback_body["attempt"], 1);
        assert_eq!(deploy["attempt"], Value::Null);
        assert_ne!(
            StoreKey::deploy_callback(&a, &env, Phase::Release, DeployPurpose::Deploy),
            StoreKey::deploy_callback(&a, &env, Phase::Release, first)
        );
        assert_eq!(
            StoreKey::deploy_callback(&a, &env, Phase::Release, first).as_str(),
            format!("deploy-callbacks/{a}/production/release.rollback.{b}.json")
        );
        // B rolled back again (its first rollback failed; someone asked by hand): the retry
        // never reads the first attempt's answer.
        assert_eq!(
            StoreKey::deploy_callback(&a, &env, Phase::Release, second).as_str(),
            format!("deploy-callbacks/{a}/production/release.rollback.{b}.2.json")
        );
        assert_eq!(
            delivery_id(&a, &env, Phase::Release, second),
            format!("{a}.production.release.rollback.{b}.2")
        );
    }

    #[tokio::test]
    async fn a_callback_for_a_release_does_not_complete_a_rollback_to_it_nor_the_other_way() {
        let env = EnvName::parse("production").unwrap();
        let (a, b) = (run(), rolling_back_run());
        let callback = |rolling_back: Option<RunId>, status, reason: &str| DeployCallback {
            run: a.clone(),
            env: env.clone(),
            phase: Phase::Release,
            rolling_back,
            attempt: None,
            status,
            reference: None,
            output: None,
            reason: Some(reason.to_owned()),
        };

        // A's own release was reported long ago; B's rollback to it is then accepted, and its
        // own callback (a failure) is the one that ends it.
        let store = MemoryStore::new();
        let own = callback(None, Finished::Succeeded, "A released");
        let own_key = store_callback(&store, &own).await;
        let (url, _) = serve(&[(202, json!({"status": "accepted"}))]).await;
        let config = target_config(url, SignedDuration::from_secs(5));
        let writer = {
            let store = store.clone();
            let rollback = callback(Some(b.clone()), Finished::Failed, "B's rollback failed");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                store_callback(&store, &rollback).await
            })
        };
        let rollback = DeployPurpose::Rollback {
            rolling_back: &b,
            attempt: 1,
        };
        let result = deploy_as(&fast(&store), &config, Phase::Release, &a, rollback, secrets()).await;
        let rollback_key = writer.await.unwrap();
        assert!(
            matches!(&result, Err(DeployError::Failed { reason, .. }) if reason == "B's rollback failed"),
            "{result:?}"
        );
        assert_ne!(own_key, rollback_key);
        let kept: DeployCallback = serde_json::from_slice(&store.get(&own_key).await.unwrap().unwrap().value).unwrap();
        assert_eq!(kept, own, "A's own record is untouched");

        // And the other way: a stored rollback callback never completes A's own deploy.
        let store = MemoryStore::new();
        store_callback(&store, &callback(Some(b.clone()), Finished::Succeeded, "rolled back")).await;
        let (url, _) = serve(&[(202, json!({"status": "accepted"}))]).await;
        let config = target_config(url, SignedDuration::from_millis(100));
        let result = deploy_as(
            &fast(&store),
            &config,
            Phase::Release,
            &a,
            DeployPurpose::Deploy,
            secrets(),
        )
        .await;
        assert!(
            matches!(&result, Err(DeployError::Failed { reason, .. }) if reason == "timed out after 100ms"),
            "{result:?}"
        );
    }

    #[test]
    fn a_deploy_callback_record_has_no_rolling_back_and_a_rollback_one_does() {
        let deploy: DeployCallback = serde_json::from_value(json!({
            "run": format!("shop-{SHA}"), "env": "production", "phase": "release", "status": "succeeded",
        }))
        .unwrap();
        assert_eq!(deploy.rolling_back, None);
        assert!(
            !serde_json::to_string(&deploy).unwrap().contains("rolling_back"),
            "a deploy's record is written as before"
        );
        let rollback: DeployCallback = serde_json::from_value(json!({
            "run": format!("shop-{SHA}"), "env": "production", "phase": "release",
            "rolling_back": rolling_back_run().as_str(), "status": "succeeded",
        }))
        .unwrap();
        assert_eq!(rollback.rolling_back, Some(rolling_back_run()));
        let not_a_run = serde_json::from_value::<DeployCallback>(json!({
            "run": format!("shop-{SHA}"), "env": "production", "phase": "release",
            "rolling_back": "../../etc", "status": "succeeded",
        }));
        assert!(not_a_run.is_err());
    }
}

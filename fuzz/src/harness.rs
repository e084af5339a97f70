//! slipway as the fuzz targets drive it: the real router over the in-memory App of
//! `slipway-tests`, with every git host, Slack and a webhook deploy target configured, and the
//! properties every answer must have.

use std::future::Future;

use arbitrary::Arbitrary;
use axum::body::Body;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Request};
use sha2::Sha256;
use slipway_tests::{Answer, CONFIG, Pipeline, SHA};

use crate::mutate::{Mutation, mutate};

pub const GITLAB_TOKEN: &str = "gitlab-token";
/// A Standard Webhooks secret: `whsec_` and a base64 key.
pub const GITLAB_SIGNING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const BITBUCKET_SECRET: &str = "bitbucket-secret";
pub const SLACK_SECRET: &str = "slack-signing-secret";
pub const DEPLOY_SECRET: &str = "qa-deploy-hook-secret";
pub const APPROVAL_KEY: &str = "approval-signing-key";

/// No webhook answer to any input is longer than this: values echoed from a request are
/// clipped (issue 10, item 4), so an answer is a short message whatever the request held.
pub const MAX_ANSWER: usize = 4096;

/// No page answered to a link is longer than this: a page shows the run, never more of the
/// request than a clipped token.
pub const MAX_PAGE: usize = 64 * 1024;

/// The scenario pipeline (`slipway_tests::CONFIG`: acme/shop main, staging then production,
/// approvers alice, bob and dev) with GitLab, Bitbucket and Slack hooks configured, alice
/// known to Slack, and a third environment, `qa`, that deploys through a webhook target so
/// `/hooks/deploy` has a secret to check.
pub fn config() -> String {
    CONFIG
        .replace(
            "id = \"alice\"\naddress = \"alice@example.com\"",
            "id = \"alice\"\naddress = \"alice@example.com\"\nslack = \"U0ALICE\"",
        )
        .replace("name = \"production\"", "name = \"production\"\napproval = true")
        + r#"
[[pipelines.environments]]
name = "qa"
approval = false
deploy = { type = "webhook", url = "http://127.0.0.1:9/deploy", secret = "/slipway/shop/qa-hook" }

[gitlab]
token = "/slipway/gitlab/token"
signing_key = "/slipway/gitlab/signing-key"

[bitbucket]
secret = "/slipway/bitbucket/secret"

[slack]
signing_secret = "/slipway/slack/signing-secret"
"#
}

/// How long each target fuzzes, in milliseconds: `ARBTEST_BUDGET_MS`, else one second.
pub fn budget_ms() -> u64 {
    std::env::var("ARBTEST_BUDGET_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1000)
}

/// Runs `case` on arbitrary inputs for [`budget_ms`]; on a failure arbtest prints the seed
/// to replay it with (`ARBTEST_SEED=0x… cargo test -p slipway-fuzz <target>`).
pub fn fuzz<T: for<'a> Arbitrary<'a>>(mut case: impl FnMut(&T)) {
    arbtest::arbtest(|u| {
        let input = T::arbitrary(u)?;
        case(&input);
        Ok(())
    })
    // Enough random bytes that an input holds several mutations and forged headers, not so
    // many that most inputs are noise.
    .size_min(256)
    .size_max(16 * 1024)
    .budget_ms(budget_ms())
    .run();
}

/// Runs the async router from the synchronous fuzz loop: one single-threaded runtime per
/// target, with tokio's clock paused so retries' back-off sleeps take no time.
#[derive(Debug)]
pub struct Harness {
    runtime: tokio::runtime::Runtime,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a single-threaded tokio runtime starts");
        Self { runtime }
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// A fresh slipway over fakes (nothing shared between inputs, so a failure replays alone).
pub async fn slipway() -> Pipeline {
    let p = Pipeline::with_config(&config()).await;
    p.secrets.set("/slipway/gitlab/token", GITLAB_TOKEN);
    p.secrets.set("/slipway/gitlab/signing-key", GITLAB_SIGNING);
    p.secrets.set("/slipway/bitbucket/secret", BITBUCKET_SECRET);
    p.secrets.set("/slipway/slack/signing-secret", SLACK_SECRET);
    p.secrets.set("/slipway/shop/qa-hook", DEPLOY_SECRET);
    p
}

/// A fresh slipway with a run of [`SHA`] open (pushed to acme/shop main), so CI results and
/// deploy callbacks for it reach past the "no such run" answer.
pub async fn slipway_with_run() -> Pipeline {
    let p = slipway().await;
    let opened = p.push(SHA).await;
    assert_eq!(opened.status, http::StatusCode::CREATED, "{}", opened.body);
    p
}

/// A header value from any bytes: bytes a header cannot hold (controls other than tab, DEL)
/// become `?`, so the value is still sent, as a proxy would pass it on.
pub fn header_value(bytes: &[u8]) -> HeaderValue {
    let cleaned: Vec<u8> = bytes
        .iter()
        .map(|&b| if (b < 0x20 && b != b'\t') || b == 0x7f { b'?' } else { b })
        .collect();
    HeaderValue::from_bytes(&cleaned).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

/// What a header's value reads as to slipway (`None` when it is not visible ASCII).
pub fn as_read(value: &Option<HeaderValue>) -> Option<&str> {
    value.as_ref().and_then(|v| v.to_str().ok())
}

/// POSTs `body` to `path` with `headers` (a `None` value leaves the header out).
pub async fn post(p: &Pipeline, path: &str, headers: &[(&str, Option<HeaderValue>)], body: Vec<u8>) -> Answer {
    let mut request = Request::post(path);
    for (name, value) in headers {
        if let Some(value) = value {
            request = request.header(*name, value.clone());
        }
    }
    p.send(request.body(Body::from(body)).expect("a valid request")).await
}

/// The answer a webhook must give when its signature is refused: 413 for a body over the cap
/// (refused before it is read whole, so before any signature check), else 401.
pub fn refused(body: &[u8]) -> http::StatusCode {
    if body.len() > slipway::http::MAX_WEBHOOK_BODY {
        http::StatusCode::PAYLOAD_TOO_LARGE
    } else {
        http::StatusCode::UNAUTHORIZED
    }
}

/// What a forger puts in a signature or token header instead of the real value.
#[derive(Debug, Clone, Arbitrary)]
pub enum Forgery {
    /// The real value, changed.
    Mutated(#[arbitrary(with = crate::mutate::some_mutations)] Vec<Mutation>),
    /// Any bytes at all.
    Any(Vec<u8>),
    /// No header.
    Absent,
    /// The real value of another body (the seed before mutation).
    OtherBody,
    /// Made the right way with another secret.
    OtherSecret(Vec<u8>),
}

impl Forgery {
    /// The forged header: `real` is the genuine value, `of_other_body` and `with_secret` make
    /// the genuine value of the unmutated seed and under another secret.
    pub fn header(
        &self,
        real: &str,
        of_other_body: impl FnOnce() -> String,
        with_secret: impl FnOnce(&[u8]) -> String,
    ) -> Option<HeaderValue> {
        match self {
            Forgery::Mutated(mutations) => Some(header_value(&mutate(real.as_bytes().to_vec(), mutations, &[]))),
            Forgery::Any(bytes) => Some(header_value(bytes)),
            Forgery::Absent => None,
            Forgery::OtherBody => Some(header_value(of_other_body().as_bytes())),
            Forgery::OtherSecret(secret) => Some(header_value(with_secret(secret).as_bytes())),
        }
    }
}

/// Slack's `X-Slack-Signature` for `body` sent at `timestamp`.
pub fn slack_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Slack's interaction body: the JSON document as the `payload` form field.
pub fn slack_form(json: &[u8]) -> Vec<u8> {
    let mut form = b"payload=".to_vec();
    form.extend(url::form_urlencoded::byte_serialize(json).flat_map(str::bytes));
    form
}

/// The properties every answer to fuzzed input has: never a 5xx (nothing here makes a
/// backing service unavailable, so none is excused), and at most `limit` bytes
/// ([`MAX_ANSWER`] for webhooks, [`MAX_PAGE`] for pages).
pub fn check_answer(what: &str, answer: &Answer, limit: usize) {
    assert!(
        !answer.status.is_server_error(),
        "{what}: answered {}: {}",
        answer.status,
        preview(&answer.body)
    );
    assert!(
        answer.body.len() <= limit,
        "{what}: answered {} with {} bytes (more than {limit}): {}",
        answer.status,
        answer.body.len(),
        preview(&answer.body)
    );
}

/// The start of a long text, for failure messages.
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
        None => text.to_owned(),
    }
}

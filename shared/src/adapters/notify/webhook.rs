//! The `webhook` channel: each [`Notification`] as JSON, POSTed to a URL and signed.
//!
//! The body is exactly `serde_json::to_vec(&notification)` (the `file` channel's line format).
//! Headers:
//!
//! - `X-Slipway-Signature: sha256=<hex>`: the HMAC-SHA256 of the body under the shared
//!   secret ([`crate::signature::sign`]); receivers check it over the raw bytes, in constant
//!   time, before parsing.
//! - `X-Slipway-Event: <kind>`: `approval_requested`, `released`, `failed`, …
//! - `X-Slipway-Delivery: <id>`: the notification id, the same on every retry, so receivers
//!   can drop duplicates (delivery is at least once).
//!
//! The secret is read from the [`SecretStore`] at send time and never logged nor put into
//! an error.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use secrecy::ExposeSecret;

use crate::domain::ParamName;
use crate::ports::{BoxError, Notification, Notifier, NotifyError, SecretError, SecretStore};

/// How long one post may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The header carrying `sha256=<hex>` of the body.
pub const SIGNATURE_HEADER: &str = "x-slipway-signature";
/// The header carrying the notification's kind.
pub const EVENT_HEADER: &str = "x-slipway-event";
/// The header carrying the notification's id, stable across retries.
pub const DELIVERY_HEADER: &str = "x-slipway-delivery";

/// Posts signed notifications to `url`, with the HMAC secret stored under `secret`.
///
/// Answers map to [`NotifyError`] by what a retry would do: 2xx is delivered; 429, 5xx and
/// network errors are transient (the notify queue retries, then dead-letters); any other
/// answer is permanent; a missing secret is permanent and an unreachable secret store
/// transient.
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    url: url::Url,
    secret: ParamName,
    secrets: Arc<dyn SecretStore>,
    client: reqwest::Client,
}

impl WebhookNotifier {
    /// A notifier posting to `url`, signing with the secret stored under `secret`.
    pub fn new(url: url::Url, secret: ParamName, secrets: Arc<dyn SecretStore>) -> Self {
        let client = super::outbound_client(TIMEOUT);
        Self {
            url,
            secret,
            secrets,
            client,
        }
    }

    /// `webhook:<host>`: enough to tell channels apart in logs, without path or query, which
    /// may hold a receiver's own token.
    fn channel(&self) -> String {
        format!("webhook:{}", self.url.host_str().unwrap_or("?"))
    }

    fn transient(&self, source: impl Into<BoxError>) -> NotifyError {
        NotifyError::Transient {
            channel: self.channel(),
            source: source.into(),
        }
    }

    fn permanent(&self, source: impl Into<BoxError>) -> NotifyError {
        NotifyError::Permanent {
            channel: self.channel(),
            source: source.into(),
        }
    }
}

/// Why a webhook receiver did not take a notification.
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("the webhook URL is not an http(s) URL")]
    NotHttp,
    #[error("the notification could not be encoded")]
    Encode(#[source] serde_json::Error),
    #[error("the notification's kind or id cannot be sent as a header")]
    Header(#[source] reqwest::header::InvalidHeaderValue),
    #[error("the request to the webhook failed")]
    Request(#[source] reqwest::Error),
    #[error("the webhook answered {status}: {body}")]
    Status { status: u16, body: String },
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> String {
        self.channel()
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        if !matches!(self.url.scheme(), "https" | "http") {
            return Err(self.permanent(WebhookError::NotHttp));
        }
        let body = serde_json::to_vec(notification).map_err(|e| self.permanent(WebhookError::Encode(e)))?;
        let event = HeaderValue::from_str(&notification.kind).map_err(|e| self.permanent(WebhookError::Header(e)))?;
        let delivery = HeaderValue::from_str(&notification.id).map_err(|e| self.permanent(WebhookError::Header(e)))?;
        let secret = self.secrets.get(&self.secret).await.map_err(|e| match e {
            SecretError::NotFound(_) => self.permanent(e),
            SecretError::Unavailable(..) => self.transient(e),
        })?;
        let signature = crate::signature::sign(secret.expose_secret().as_bytes(), &body);
        let signature = HeaderValue::from_str(&signature).map_err(|e| self.permanent(WebhookError::Header(e)))?;

        let response = self
            .client
            .post(self.url.clone())
            .timeout(TIMEOUT)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("slipway"))
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_HEADER, event)
            .header(DELIVERY_HEADER, delivery)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transient(WebhookError::Request(e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            tracing::debug!(channel = %self.channel(), kind = %notification.kind, id = %notification.id, "posted to webhook");
            return Ok(());
        }
        // Keep a bit of what the receiver said about why.
        let body = response.text().await.unwrap_or_default();
        let error = WebhookError::Status {
            status: status.as_u16(),
            body: super::slack::truncate(body.trim(), 200),
        };
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(self.transient(error))
        } else {
            Err(self.permanent(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::adapters::memory::MemorySecrets;
    use std::error::Error;
    use std::sync::Mutex;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::super::fixtures::notification;
    use super::*;
    use crate::config::ChannelConfig;

    const SECRET: &str = "wh-s3cr3t-value";
    const PATH: &str = "/hooks/slipway";

    /// One request as the receiver saw it.
    #[derive(Debug, Clone)]
    struct Received {
        headers: HeaderMap,
        body: Bytes,
    }

    #[derive(Clone)]
    struct Receiver {
        status: StatusCode,
        received: Arc<Mutex<Vec<Received>>>,
    }

    async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
        r.received.lock().unwrap().push(Received { headers, body });
        (r.status, if r.status.is_success() { "ok" } else { "nope" })
    }

    /// Starts a receiver answering `status`; returns its URL and what it received.
    async fn serve(status: StatusCode) -> (url::Url, Arc<Mutex<Vec<Received>>>) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().route(PATH, post(receive)).with_state(Receiver {
            status,
            received: received.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{PATH}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), received)
    }

    fn notifier_with(url: url::Url, secrets: MemorySecrets) -> WebhookNotifier {
        WebhookNotifier::new(
            url,
            ParamName::parse("/slipway/webhook/secret").unwrap(),
            Arc::new(secrets),
        )
    }

    fn notifier(url: url::Url) -> WebhookNotifier {
        notifier_with(url, MemorySecrets::holding("/slipway/webhook/secret", SECRET))
    }

    /// Display and Debug of `err` and of every source under it.
    fn everything_said(err: &NotifyError) -> String {
        let mut said = format!("{err} {err:?}");
        let mut source = err.source();
        while let Some(e) = source {
            said.push_str(&format!(" {e} {e:?}"));
            source = e.source();
        }
        said
    }

    #[tokio::test]
    async fn posts_the_notification_signed_with_its_headers() {
        let (url, received) = serve(StatusCode::NO_CONTENT).await;
        let webhook = notifier(url);
        assert_eq!(webhook.name(), "webhook:127.0.0.1");
        let n = notification("approval_requested");
        webhook.deliver(&n).await.unwrap();

        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let Received { headers, body } = &received[0];
        let parsed: Notification = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed, n);
        assert_eq!(body.as_ref(), serde_json::to_vec(&n).unwrap());
        let signature = headers.get("X-Slipway-Signature").and_then(|v| v.to_str().ok());
        assert_eq!(crate::signature::verify(SECRET.as_bytes(), signature, body), Ok(()));
        assert_eq!(
            crate::signature::verify(b"another secret", signature, body),
            Err(crate::signature::SignatureError::Mismatch)
        );
        assert_eq!(headers["X-Slipway-Event"], "approval_requested");
        assert_eq!(headers["X-Slipway-Delivery"], "approval_requested-1-alice");
        assert_eq!(headers["content-type"], "application/json");
    }

    #[tokio::test]
    async fn the_delivery_id_is_the_same_on_every_retry() {
        let (url, received) = serve(StatusCode::SERVICE_UNAVAILABLE).await;
        let webhook = notifier(url);
        let n = notification("released");
        for _ in 0..2 {
            webhook.deliver(&n).await.unwrap_err();
        }
        let received = received.lock().unwrap();
        let ids: Vec<_> = received
            .iter()
            .map(|r| r.headers["X-Slipway-Delivery"].clone())
            .collect();
        assert_eq!(ids, ["released-1-team", "released-1-team"]);
        assert_eq!(received[0].body, received[1].body);
    }

    #[tokio::test]
    async fn server_errors_and_rate_limits_are_transient() {
        for status in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::TOO_MANY_REQUESTS] {
            let (url, received) = serve(status).await;
            let err = notifier(url).deliver(&notification("released")).await.unwrap_err();
            assert!(
                matches!(&err, NotifyError::Transient { channel, .. } if channel == "webhook:127.0.0.1"),
                "{err:?}"
            );
            assert!(everything_said(&err).contains(&status.as_u16().to_string()), "{err:?}");
            assert!(!everything_said(&err).contains(SECRET));
            assert_eq!(received.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn other_client_errors_are_permanent() {
        for status in [StatusCode::NOT_FOUND, StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED] {
            let (url, _) = serve(status).await;
            let err = notifier(url).deliver(&notification("released")).await.unwrap_err();
            assert!(matches!(err, NotifyError::Permanent { .. }), "{err:?}");
            assert!(everything_said(&err).contains(&status.as_u16().to_string()), "{err:?}");
            assert!(!everything_said(&err).contains(SECRET));
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (url, _) = serve(StatusCode::PERMANENT_REDIRECT).await;
        let err = notifier(url).deliver(&notification("released")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn network_errors_are_transient() {
        // A port nobody listens on any more.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: url::Url = format!("http://{}{PATH}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let err = notifier(url).deliver(&notification("released")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Transient { .. }), "{err:?}");
        assert!(!everything_said(&err).contains(SECRET));
    }

    #[tokio::test]
    async fn secret_store_failures() {
        let (url, received) = serve(StatusCode::OK).await;
        let err = notifier_with(url.clone(), MemorySecrets::unreachable())
            .deliver(&notification("released"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Transient { .. }), "{err:?}");
        let err = notifier_with(url, MemorySecrets::new())
            .deliver(&notification("released"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Permanent { .. }), "{err:?}");
        assert!(received.lock().unwrap().is_empty(), "nothing unsigned is sent");
    }

    #[tokio::test]
    async fn a_non_http_url_is_permanent() {
        let err = notifier("ftp://hooks.example/x".parse().unwrap())
            .deliver(&notification("released"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Permanent { .. }), "{err:?}");
    }

    #[test]
    fn the_channel_is_configured_with_a_url_and_a_secret() {
        #[derive(Debug, serde::Deserialize)]
        struct Config {
            notify: Vec<ChannelConfig>,
        }
        let config: Config = toml::from_str(
            r#"
            [[notify]]
            type = "webhook"
            url = "https://hooks.example.com/slipway"
            secret = "/slipway/webhook/secret"
            "#,
        )
        .unwrap();
        match &config.notify[..] {
            [ChannelConfig::Webhook { url, secret }] => {
                assert_eq!(url.as_str(), "https://hooks.example.com/slipway");
                assert_eq!(secret.as_str(), "/slipway/webhook/secret");
            }
            other => panic!("{other:?}"),
        }
        let bad = toml::from_str::<Config>(
            r#"
            [[notify]]
            type = "webhook"
            url = "not a url"
            secret = "/slipway/webhook/secret"
            "#,
        );
        assert!(bad.is_err());
    }
}

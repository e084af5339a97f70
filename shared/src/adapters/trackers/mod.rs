//! Issue trackers over HTTP: the [`Tracker`] port of [`crate::trackers`].
//!
//! - [`jira`]: a comment per ticket (Cloud REST v3 with an ADF body and basic auth; Server /
//!   Data Center REST v2 with a bearer token), then a transition by name.
//! - [`github`]: a comment per issue (`POST /repos/{owner}/{repo}/issues/{n}/comments`).
//! - [`gitlab`]: a note per issue (`POST /api/v4/projects/{path}/issues/{iid}/notes`).
//! - [`webhook`]: one signed POST per release, listing its tickets and commits.
//!
//! Tokens are read from the [`SecretStore`] on each delivery (a rotated token is picked up),
//! sent only in a header marked sensitive, and never logged nor put into an error. Answers
//! map to [`NotifyError`] by what a retry would do: 2xx is done; 429, 5xx and network errors
//! are transient; any other answer, and a missing token, are permanent; an unreachable secret
//! store is transient. Redirects are not followed.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use secrecy::SecretString;

use crate::config::TrackerConfig;
use crate::domain::ParamName;
use crate::ports::{BoxError, NotifyError, SecretError, SecretStore};
use crate::trackers::Tracker;

pub mod github;
pub mod gitlab;
pub mod jira;
pub mod webhook;

/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The tracker `config` describes, reading its token from `secrets`.
pub fn tracker(config: &TrackerConfig, secrets: Arc<dyn SecretStore>) -> Arc<dyn Tracker> {
    let http = Http::new(config, secrets);
    match config {
        TrackerConfig::Jira { api, email, .. } => Arc::new(jira::Jira::new(http, *api, email.clone())),
        TrackerConfig::Github { .. } => Arc::new(github::Github::new(http)),
        TrackerConfig::Gitlab { .. } => Arc::new(gitlab::Gitlab::new(http)),
        TrackerConfig::Webhook { .. } => Arc::new(webhook::Webhook::new(http)),
    }
}

/// What every tracker adapter shares: where it posts, its token, and a client.
#[derive(Debug, Clone)]
pub struct Http {
    base: url::Url,
    token: ParamName,
    secrets: Arc<dyn SecretStore>,
    client: reqwest::Client,
    describe: String,
}

/// Why a tracker did not take a request.
#[derive(Debug, thiserror::Error)]
enum TrackerError {
    #[error("the tracker URL is not an http(s) URL")]
    NotHttp,
    #[error("{0} cannot be put into a URL")]
    Path(String),
    #[error("the token cannot be sent as a header")]
    Header,
    #[error("the request to the tracker failed")]
    Request(#[source] reqwest::Error),
    #[error("the tracker answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the tracker's answer is not what was expected")]
    Answer(#[source] reqwest::Error),
}

impl Http {
    fn new(config: &TrackerConfig, secrets: Arc<dyn SecretStore>) -> Self {
        Self {
            base: config.url().clone(),
            token: config.token().clone(),
            secrets,
            client: super::notify::outbound_client(TIMEOUT),
            describe: format!("tracker-{}:{}", config.kind(), config.url().host_str().unwrap_or("?")),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn transient(&self, source: impl Into<BoxError>) -> NotifyError {
        NotifyError::Transient {
            channel: self.describe(),
            source: source.into(),
        }
    }

    fn permanent(&self, source: impl Into<BoxError>) -> NotifyError {
        NotifyError::Permanent {
            channel: self.describe(),
            source: source.into(),
        }
    }

    /// The base URL with `path` (already escaped) appended to its own path.
    fn url(&self, path: &str) -> Result<url::Url, NotifyError> {
        if !matches!(self.base.scheme(), "https" | "http") {
            return Err(self.permanent(TrackerError::NotHttp));
        }
        let joined = format!("{}{path}", self.base.as_str().trim_end_matches('/'));
        url::Url::parse(&joined).map_err(|_| self.permanent(TrackerError::Path(path.to_owned())))
    }

    /// The token (or signing secret).
    async fn token(&self) -> Result<SecretString, NotifyError> {
        self.secrets.get(&self.token).await.map_err(|e| match e {
            SecretError::NotFound(_) => self.permanent(e),
            SecretError::Unavailable(..) => self.transient(e),
        })
    }

    /// A header value carrying a credential: marked sensitive, so it is never printed.
    fn credential(&self, value: &str) -> Result<HeaderValue, NotifyError> {
        let mut header = HeaderValue::from_str(value).map_err(|_| self.permanent(TrackerError::Header))?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// A request with the headers every tracker gets.
    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.client
            .request(method, url)
            .timeout(TIMEOUT)
            .header(USER_AGENT, HeaderValue::from_static("slipway"))
    }

    /// Posts `body` as JSON with the `auth` header (name, value).
    async fn post_json(
        &self,
        url: url::Url,
        auth: (reqwest::header::HeaderName, HeaderValue),
        extra: &[(&'static str, &'static str)],
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, NotifyError> {
        let mut request = self
            .request(reqwest::Method::POST, url)
            .header(auth.0, auth.1)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in extra {
            request = request.header(*name, HeaderValue::from_static(value));
        }
        self.send(request.body(body.to_string())).await
    }

    /// Sends `request`; a 2xx answer is returned, any other is an error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, NotifyError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.transient(TrackerError::Request(e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // Keep a bit of what the tracker said about why.
        let body = response.text().await.unwrap_or_default();
        let error = TrackerError::Status {
            status: status.as_u16(),
            body: super::notify::slack::truncate(body.trim(), 200),
        };
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(self.transient(error))
        } else {
            Err(self.permanent(error))
        }
    }

    /// The bearer-token `Authorization` header.
    async fn bearer(&self) -> Result<(reqwest::header::HeaderName, HeaderValue), NotifyError> {
        use secrecy::ExposeSecret as _;
        let token = self.token().await?;
        Ok((
            AUTHORIZATION,
            self.credential(&format!("Bearer {}", token.expose_secret()))?,
        ))
    }

    fn answer_error(&self, e: reqwest::Error) -> NotifyError {
        self.transient(TrackerError::Answer(e.without_url()))
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake tracker on 127.0.0.1 that records each request and answers what it is told.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::http::{HeaderMap, Method, StatusCode};

    use crate::adapters::memory::MemorySecrets;

    /// One request as the tracker saw it.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub method: Method,
        /// The path and query, as sent (escapes kept).
        pub path: String,
        pub headers: HeaderMap,
        pub body: Bytes,
    }

    impl Received {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).expect("a JSON body")
        }
    }

    #[derive(Clone, Default)]
    pub struct Fake {
        pub received: Arc<Mutex<Vec<Received>>>,
        /// Answers to give, in order; `200 {}` once they run out.
        pub answers: Arc<Mutex<VecDeque<(StatusCode, String)>>>,
    }

    async fn receive(State(f): State<Fake>, request: Request) -> (StatusCode, String) {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        f.received.lock().unwrap().push(Received {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts.headers,
            body,
        });
        f.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or((StatusCode::OK, "{}".into()))
    }

    /// Starts a fake tracker; its base URL (with `prefix` as its path) and its handle.
    pub async fn serve(prefix: &str) -> (url::Url, Fake) {
        let fake = Fake::default();
        let app = axum::Router::new().fallback(receive).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{prefix}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), fake)
    }

    impl Fake {
        pub fn answer(&self, status: StatusCode, body: &str) {
            self.answers.lock().unwrap().push_back((status, body.to_owned()));
        }

        pub fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    pub const TOKEN: &str = "tr4cker-t0ken-value";

    pub fn secrets() -> MemorySecrets {
        MemorySecrets::holding("/slipway/tracker/token", TOKEN)
    }

    /// Everything an error says, with its sources.
    pub fn everything_said(err: &crate::ports::NotifyError) -> String {
        let mut said = format!("{err} {err:?}");
        let mut source = std::error::Error::source(err);
        while let Some(e) = source {
            said.push_str(&format!(" {e} {e:?}"));
            source = e.source();
        }
        said
    }

    /// A ticket, a comment and an announcement to deliver in tests.
    pub fn announcement() -> crate::trackers::Announcement {
        crate::trackers::Announcement {
            event: crate::trackers::Event::Released,
            id: "shop-a1b2c3d4e5f60718293a4b5c6d7e8f9012345678.12".into(),
            env: "production".parse().unwrap(),
            pipeline: "shop".into(),
            repo: "acme/shop".into(),
            environment: "production".into(),
            run: "shop-a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".parse().unwrap(),
            sha: "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".into(),
            run_url: "https://slipway.example.com/runs/shop-a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".into(),
            at: "2026-11-21T09:20:00Z".parse().unwrap(),
            reason: None,
            commits: vec![crate::trackers::AnnouncedCommit {
                sha: "1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a".into(),
                subject: "SHOP-1 Add the basket (#12)".into(),
                author: "bob".into(),
                message: "SHOP-1 Add the basket (#12)\n\nIt holds items.".into(),
            }],
            commits_more: false,
            tickets: vec!["SHOP-1".into()],
        }
    }
}

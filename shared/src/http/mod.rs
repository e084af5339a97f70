//! The one HTTP router. `slipway serve` serves it on a socket; the Lambda functions of the
//! AWS issue serve it unchanged. Webhook and API routes answer JSON; page routes answer HTML.
//! Every error says what went wrong and what to do, with the status code that fits.

pub mod actions;
mod api;
mod approvals;
pub mod auth;
mod charts;
mod ci;
mod control_room;
pub mod deploy_callback;
mod hooks;
mod metrics;
mod pages;
mod rollback;
mod slack;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::app::{App, EngineError};

pub use api::{detail, summary};

/// Webhook bodies larger than this are refused with 413 before they are read whole.
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;
/// Approval form bodies larger than this are refused with 413.
pub const MAX_FORM_BODY: usize = 16 * 1024;

/// The router over an [`App`].
pub fn router(app: App) -> Router {
    let app = Arc::new(app);
    let hooks = Router::new()
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitlab", post(hooks::gitlab))
        .route("/hooks/bitbucket", post(hooks::bitbucket))
        .route("/hooks/slack/interactions", post(slack::interactions))
        .route("/hooks/ci", post(ci::callback))
        .route("/hooks/deploy", post(deploy_callback::receive))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY));
    let pages = Router::new()
        .route(
            "/approvals/{token}",
            get(approvals::confirm_page).post(approvals::decide),
        )
        .route("/runs/{id}", get(api::run_page))
        .route("/", get(control_room::overview_page))
        .route("/approvals", get(control_room::approvals_page))
        .route("/pipelines/{name}", get(control_room::pipeline_page))
        .route("/pipelines/{name}/releases/{env}/{n}", get(control_room::release_page))
        .route("/login", get(auth::login_page))
        .route("/login/{token}", get(auth::confirm_login).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/runs/{id}/decision", post(actions::decide))
        .route("/runs/{id}/retry", post(actions::retry))
        .route(
            "/pipelines/{name}/environments/{env}/rollback",
            post(actions::roll_back),
        )
        .route(
            "/rollback/{token}",
            get(rollback::confirm_page).post(rollback::roll_back),
        )
        .layer(DefaultBodyLimit::max(MAX_FORM_BODY))
        .layer(axum::middleware::map_response(private_page));
    Router::new()
        .merge(hooks)
        .merge(pages)
        .route("/api/runs", get(api::list_runs))
        .route("/api/runs/{id}", get(api::get_run))
        .route("/api/pipelines", get(control_room::api_overview))
        .route("/api/pipelines/{name}", get(control_room::api_pipeline))
        .route("/api/pipelines/{name}/metrics", get(control_room::api_metrics))
        .route("/api/environments", get(control_room::api_environments))
        .route("/api/approvals", get(control_room::api_approvals))
        .route("/healthz", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route("/metrics", metrics::route(&app))
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed; see docs/http-api.md",
            )
        })
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see docs/http-api.md") })
        .layer(axum::middleware::map_response(security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(app)
}

type AppState = axum::extract::State<Arc<App>>;

/// The span every request's log lines carry: the method and the route it matched
/// (`/approvals/{token}`), never the path or the query — page paths and queries carry
/// approval and rollback tokens, which would let anyone who reads the logs use them.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("(no route)", |m| m.as_str());
    tracing::debug_span!("request", method = %request.method(), route)
}

/// Every answer: `nosniff`, and a Content-Security-Policy that lets a page load nothing and
/// run no script — only its own inline style (allowed by hash), forms posting back to
/// slipway, and no framing. JSON answers get the same policy; it costs nothing there.
async fn security_headers(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(policy) = HeaderValue::from_str(pages::content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// Page URLs carry approval and rollback tokens (`/approvals/…`, `/rollback/…`,
/// `/runs/…?token=…`): never send them on as a `Referer` when a person follows a link to the
/// commit or the build, and never keep them in a shared cache.
async fn private_page(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A webhook body, or the JSON error for one that could not be read (413 when it is over the
/// cap: it is refused before it is read whole).
pub(crate) fn webhook_body(body: Result<axum::body::Bytes, BytesRejection>) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_WEBHOOK_BODY} bytes; nothing was read or stored"),
        ),
        status => ApiError::new(status, rejection.body_text()),
    })
}

/// An error answered as JSON: `{"error": "…"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.message}))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, message) = engine_error(&e);
        ApiError::new(status, message)
    }
}

/// How an engine failure is answered: transient ones as 503 (git hosts disable hooks that
/// answer 4xx), configuration mistakes as 500 with what to fix.
fn engine_error(e: &EngineError) -> (StatusCode, String) {
    match e {
        EngineError::Unavailable(source) => {
            tracing::warn!(error = %e, source = %source, "answering 503");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "a backing service is unavailable; nothing was changed — retry shortly".into(),
            )
        }
        EngineError::Unsent { run, source } => {
            tracing::warn!(%run, source = %source, "change stored, its work unsent; answering 503");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this was recorded in run {run}, but sending the work it started failed (a queue is unavailable); \
                     retry this delivery and the work is sent at once — otherwise slipway's sweep sends it within about three minutes"
                ),
            )
        }
        EngineError::Contended(_) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}")),
        EngineError::MissingSecret(_) | EngineError::Corrupt { .. } => {
            tracing::error!(error = %e, "answering 500");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("slipway is misconfigured: {e}"),
            )
        }
    }
}

/// An error answered as an HTML page.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
    /// A page to go on to, `(href, label)`: the run that took this one's place, say.
    pub link: Option<(String, String)>,
}

impl PageError {
    pub fn new(status: StatusCode, title: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            title: title.into(),
            message: message.into(),
            link: None,
        }
    }

    /// The same page, with a link to go on to.
    pub fn with_link(mut self, href: impl Into<String>, label: impl Into<String>) -> Self {
        self.link = Some((href.into(), label.into()));
        self
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = match &self.link {
            None => pages::message(&self.title, &self.message),
            Some((href, label)) => pages::message_with_link(&self.title, &self.message, href, label),
        };
        (self.status, Html(body.into_string())).into_response()
    }
}

impl From<EngineError> for PageError {
    fn from(e: EngineError) -> Self {
        let (status, message) = engine_error(&e);
        if let EngineError::Unsent { run, .. } = &e {
            // A person cannot "retry the delivery": the sweep sends the work for them.
            return PageError::new(
                status,
                "Recorded; on its way shortly",
                format!(
                    "This was recorded in run {run}, but sending the work it started failed (a queue is \
                     unavailable). slipway's sweep sends it within about three minutes; there is nothing more to do."
                ),
            );
        }
        PageError::new(status, "Try again shortly", message)
    }
}

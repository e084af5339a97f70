//! `GET /metrics`: Prometheus text exposition of slipway's operational metrics
//! ([`crate::metrics`]), for `slipway serve`.
//!
//! - Not exposed (404) unless `[metrics] token` names a parameter, nor where the process
//!   records metrics for CloudWatch instead (the Lambda functions).
//! - Answers only `Authorization: Bearer <token>`, the value of that parameter, compared in
//!   constant time; a parameter left blank matches nothing. Anything else: 401. The token
//!   never reaches a log (the request span names the route, never the headers).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use super::AppState;
use crate::app::App;

/// The Prometheus text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The route, with the process's Prometheus recorder installed now when the configuration
/// asks for metrics, so that what happens before the first scrape is counted too.
pub(super) fn route(app: &App) -> MethodRouter<std::sync::Arc<App>> {
    if app.config.metrics.is_some() {
        let _ = crate::metrics::prometheus();
    }
    get(scrape)
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

async fn scrape(axum::extract::State(app): AppState, headers: HeaderMap) -> Response {
    let Some(config) = &app.config.metrics else {
        return plain(
            StatusCode::NOT_FOUND,
            "metrics are not exposed: set [metrics] token in slipway.toml\n",
        );
    };
    let Some(handle) = crate::metrics::prometheus() else {
        return plain(
            StatusCode::NOT_FOUND,
            "metrics are not exposed here: this process writes them to CloudWatch (EMF)\n",
        );
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(sent) = sent else {
        return unauthorized();
    };
    let token = match app.secret(&config.token).await {
        Ok(token) => token,
        Err(e) => {
            let (status, message) = super::engine_error(&e);
            return (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message + "\n",
            )
                .into_response();
        }
    };
    let (ours, sent) = (token.expose_secret().trim(), sent.trim());
    // An empty token (a parameter left blank) matches nothing.
    if ours.is_empty() || !bool::from(ours.as_bytes().ct_eq(sent.as_bytes())) {
        return unauthorized();
    }
    let body = crate::metrics::render(&app, handle).await;
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unauthorized() -> Response {
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        "send Authorization: Bearer <the token in [metrics] token's parameter>\n",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

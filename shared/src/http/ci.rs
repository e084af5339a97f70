//! `POST /hooks/ci`: any CI reports a build result with one signed `curl`.
//!
//! The body is signed with the pipeline's CI secret (`X-Slipway-Signature: sha256=<hex>`).
//! The signature is checked against each pipeline's secret before the body is parsed; the
//! pipeline whose secret matches is the one the result may speak for.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::hooks::header;
use super::{ApiError, AppState};
use crate::app::{Applied, EngineError};
use crate::config::PipelineConfig;
use crate::domain::{self, Actor, BuildInfo, BuildStatus, CommitSha, Event, RepoName, RunId, WebUrl, clip_quoted};
use crate::signature;

/// The callback body.
#[derive(Debug, Deserialize)]
struct CiResult {
    repo: RepoName,
    sha: CommitSha,
    status: BuildStatus,
    /// Checked into a [`WebUrl`] after parsing, so a bad one is refused naming the field.
    #[serde(default)]
    build_url: Option<String>,
    #[serde(default)]
    artifact: Option<String>,
    #[serde(default)]
    coverage: Option<f64>,
}

pub(super) async fn callback(
    axum::extract::State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::webhook_body(body)?;
    let sig = header(&headers, "x-slipway-signature");
    if sig.is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing X-Slipway-Signature header: sign the body with the pipeline's CI secret (sha256=<hex HMAC>)",
        ));
    }
    let mut signed_by: Vec<&PipelineConfig> = Vec::new();
    let now = app.clock.now();
    for pipeline in &app.config.pipelines {
        let secrets = match app
            .rotation(&pipeline.ci_secret, pipeline.previous_ci_secret.as_ref())
            .await
        {
            Ok(s) => s,
            Err(EngineError::MissingSecret(name)) => {
                tracing::error!(pipeline = %pipeline.name, %name, "CI secret missing; this pipeline cannot accept results");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let what = format!("CI secret of pipeline {}", pipeline.name);
        if secrets
            .check(&what, now, |secret| signature::verify(secret.as_bytes(), sig, &body))
            .is_ok()
        {
            signed_by.push(pipeline);
        }
    }
    if signed_by.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "X-Slipway-Signature does not match the body under any pipeline's CI secret",
        ));
    }
    let result: CiResult = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"repo\", \"sha\", \"status\": \"success|failure|error\", \"build_url\"?, \"artifact\"?, \"coverage\"?}}: {}",
                clip_quoted(&e.to_string())
            ),
        )
    })?;
    let build_url = result
        .build_url
        .as_deref()
        .map(WebUrl::parse)
        .transpose()
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("build_url must be an absolute http(s) link: {e}"),
            )
        })?;
    if let Some(c) = result.coverage
        && !(0.0..=100.0).contains(&c)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("coverage {c} is not a percentage (0-100)"),
        ));
    }
    if result
        .artifact
        .as_ref()
        .is_some_and(|a| a.len() > 1024 || a.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "artifact must be one line of at most 1024 bytes",
        ));
    }
    let pipelines: Vec<&PipelineConfig> = signed_by
        .into_iter()
        .filter(|p| p.repo.as_str().eq_ignore_ascii_case(result.repo.as_str()))
        .collect();
    if pipelines.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this CI secret belongs to no pipeline of {}", result.repo),
        ));
    }
    let build = BuildInfo {
        url: build_url,
        artifact: result.artifact,
        coverage: result.coverage,
        ..BuildInfo::default()
    };
    // One commit may be followed by several pipelines of the repository (say `main` and
    // `release`); the result belongs to every run of it.
    let mut answers = Vec::new();
    for pipeline in pipelines {
        let run_id = RunId::new(&pipeline.name, &result.sha);
        let event = Event::BuildFinished {
            status: result.status,
            build: build.clone(),
        };
        match app.apply(&run_id, || app.input(Actor::Ci, event.clone())).await? {
            None => {}
            Some(Applied::Changed(run)) => answers.push(json!({
                "run_id": run.id,
                "status": run.status(),
                "message": run.history.last().map(|h| &h.what),
            })),
            Some(Applied::Ignored(why, run)) => {
                app.dispatch(&domain::resendable(&run)).await?;
                answers.push(json!({"run_id": run.id, "status": run.status(), "ignored": why.to_string()}));
            }
        }
    }
    match answers.len() {
        0 => {}
        1 => return Ok(Json(answers.remove(0)).into_response()),
        _ => return Ok(Json(json!({"runs": answers})).into_response()),
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no run for commit {} of {}: runs open when the push webhook arrives — check that it is configured and was delivered before CI reported",
            result.sha, result.repo
        ),
    ))
}

//! Git host webhooks: verify the signature over the raw bytes, then parse into a domain
//! event, then act. Answers after one state write and at most a few queue sends.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;

use super::{ApiError, AppState};
use crate::app::{App, Opened};
use crate::domain::{CommitInfo, NewRun};
use crate::providers::{GitRef, HostEvent, Push, github};
use crate::signature;

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /hooks/github`.
pub(super) async fn github(
    axum::extract::State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::webhook_body(body)?;
    let Some(gh) = &app.config.github else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "GitHub webhooks are not configured: add [github] webhook_secret to slipway.toml",
        ));
    };
    let secret = app.secret(&gh.webhook_secret).await?;
    signature::verify(
        secret.expose_secret().as_bytes(),
        header(&headers, "x-hub-signature-256"),
        &body,
    )
    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, format!("X-Hub-Signature-256: {e}")))?;
    let event = header(&headers, "x-github-event")
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header"))?;
    let delivery = header(&headers, "x-github-delivery").unwrap_or("-");
    let parsed = github::parse(event, &body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    tracing::info!(delivery, event, "GitHub webhook verified");
    match parsed {
        HostEvent::Ping => Ok(Json(json!({"message": "pong: slipway received the ping"})).into_response()),
        HostEvent::Ignored { event } => Ok(ignored(format!("slipway does not act on {event:?} events"))),
        HostEvent::Push(push) => accept_push(&app, *push, delivery).await,
    }
}

fn ignored(reason: String) -> Response {
    tracing::info!(%reason, "webhook ignored");
    (StatusCode::ACCEPTED, Json(json!({"ignored": reason}))).into_response()
}

/// Opens a run for a push to a followed branch; answers 2xx for every push it ignores, so
/// git hosts keep the hook enabled.
pub(super) async fn accept_push(app: &App, push: Push, delivery: &str) -> Result<Response, ApiError> {
    let branch = match &push.git_ref {
        GitRef::Branch(branch) => branch.clone(),
        GitRef::Tag(tag) => return Ok(ignored(format!("tag {tag} pushed; slipway deploys branches, not tags"))),
        GitRef::Other(r) => return Ok(ignored(format!("{r} is not a branch"))),
    };
    let Some(sha) = push.after.clone().filter(|_| !push.deleted) else {
        return Ok(ignored(format!("branch {branch} was deleted; nothing to deploy")));
    };
    let Some(pipeline) = app.config.pipeline_for(&push.repo, &branch) else {
        return Ok(ignored(format!("no pipeline follows {} {branch}", push.repo)));
    };
    let commit = push.head_commit.clone().unwrap_or_else(|| CommitInfo {
        message: String::new(),
        author_login: None,
        author_name: "unknown".into(),
        author_email: None,
        url: None,
        pushed_by: "unknown".into(),
    });
    let new = NewRun {
        pipeline: pipeline.name.clone(),
        repo: pipeline.repo.clone(),
        branch,
        sha,
        commit,
        plan: pipeline.plan(),
    };
    match app.open_run(new).await? {
        Opened::Created(run) => {
            tracing::info!(delivery, run = %run.id, forced = push.forced, commits = push.commit_count, "run opened");
            let body = json!({"run_id": run.id, "status": "opened", "url": app.link(&format!("/runs/{}", run.id))});
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
        Opened::Existing(run) => {
            tracing::info!(delivery, run = %run.id, "push for a commit that already has a run");
            let body = json!({
                "run_id": run.id,
                "status": "duplicate",
                "message": "a run for this commit already exists; nothing new was started",
            });
            Ok((StatusCode::OK, Json(body)).into_response())
        }
    }
}

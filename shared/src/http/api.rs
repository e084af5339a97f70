//! `GET /api/runs`, `GET /api/runs/{id}` (JSON) and `GET /runs/{id}` (HTML). Runs never hold
//! secrets or approval tokens, so nothing here can leak them; the run page shows a rollback
//! token only to whoever opened it with that token (`?token=`).

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages;
use super::{ApiError, AppState, PageError};
use crate::domain::{RepoName, Run, RunId};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    repo: Option<String>,
}

/// One line per run.
pub fn summary(run: &Run) -> Value {
    json!({
        "id": run.id,
        "pipeline": run.pipeline,
        "repo": run.repo,
        "branch": run.branch,
        "sha": run.sha,
        "message": run.commit.message.lines().next().unwrap_or(""),
        "status": run.status(),
        "current_stage": run.current_stage().map(|s| s.label()),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    })
}

/// The whole run, with its derived status.
pub fn detail(run: &Run) -> Value {
    let mut value = serde_json::to_value(run).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("outbox");
        obj.insert("status".into(), json!(run.status()));
    }
    value
}

pub(super) async fn list_runs(
    axum::extract::State(app): AppState,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(repo) = &q.repo {
        RepoName::parse(repo).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    }
    let runs = app.list_runs(q.repo.as_deref()).await?;
    Ok(Json(json!({"runs": runs.iter().map(summary).collect::<Vec<_>>()})))
}

pub(super) async fn get_run(
    axum::extract::State(app): AppState,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = RunId::parse(&id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (run, _) = app
        .load(&id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no run {id}")))?;
    Ok(Json(detail(&run)))
}

#[derive(Debug, Deserialize)]
pub(super) struct RunPageQuery {
    /// A rollback link's token, from a `released` notification.
    token: Option<String>,
}

pub(super) async fn run_page(
    axum::extract::State(app): AppState,
    Path(id): Path<String>,
    Query(q): Query<RunPageQuery>,
) -> Result<Html<String>, PageError> {
    let id = RunId::parse(&id).map_err(|e| PageError::new(StatusCode::BAD_REQUEST, "Bad run id", e.to_string()))?;
    let (run, _) = app
        .load(&id)
        .await?
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "Unknown run", format!("There is no run {id}.")))?;
    let token = q.token.as_deref().filter(|t| !t.is_empty());
    let rollback = super::rollback::run_page_section(&app, &run, token).await?;
    Ok(Html(pages::run_page(&run, &rollback).into_string()))
}

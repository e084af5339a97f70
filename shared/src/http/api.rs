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
use crate::domain::{PipelineName, RepoName, Run, RunId};
use crate::views::{RunEntry, run_index};

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    repo: Option<String>,
    pipeline: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// How many runs a page shows unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 50;

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

/// `GET /api/runs?pipeline=&repo=&limit=&before=`: the newest runs first, `limit` of them
/// (default 50, at most 200), read from the index of runs; `next` is the `before` of the next
/// (older) page, `null` on the last one.
pub(super) async fn list_runs(
    axum::extract::State(app): AppState,
    _caller: super::auth::ApiCaller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let repo = match q.repo.as_deref().filter(|r| !r.is_empty()) {
        Some(repo) => Some(RepoName::parse(repo).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let (limit, cursor) =
        super::control_room::page_of(q.limit.as_deref(), q.before.as_deref(), DEFAULT_PAGE).map_err(bad)?;
    let pipelines: Vec<PipelineName> = match q.pipeline.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            let name = PipelineName::parse(p).map_err(|e| bad(e.to_string()))?;
            if app.config.pipeline(&name).is_none() {
                return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no pipeline {name}")));
            }
            vec![name]
        }
        None => app
            .config
            .pipelines
            .iter()
            .filter(|p| {
                repo.as_ref()
                    .is_none_or(|r| p.repo.as_str().eq_ignore_ascii_case(r.as_str()))
            })
            .map(|p| p.name.clone())
            .collect(),
    };
    let (runs, next) = run_index::newest(app.store.as_ref(), &pipelines, repo.as_ref(), &cursor, limit).await?;
    Ok(Json(json!({
        "runs": runs.iter().map(RunEntry::summary).collect::<Vec<_>>(),
        "next": next.map(|c| c.to_string()),
    })))
}

pub(super) async fn get_run(
    axum::extract::State(app): AppState,
    _caller: super::auth::ApiCaller,
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

/// `GET /runs/{id}`: for people who signed in, or whoever holds a rollback link of this run
/// (`?token=`, from a `released` notice); anyone else gets the sign-in page.
pub(super) async fn run_page(
    axum::extract::State(app): AppState,
    parts: axum::http::request::Parts,
    Path(id): Path<String>,
    Query(q): Query<RunPageQuery>,
) -> Result<axum::response::Response, PageError> {
    use axum::response::IntoResponse as _;
    let caller = super::auth::identify(&app, &parts.headers, super::auth::peer_of(&parts)).await?;
    let id = RunId::parse(&id).map_err(|e| PageError::new(StatusCode::BAD_REQUEST, "Bad run id", e.to_string()))?;
    let Some((run, _)) = app.load(&id).await? else {
        if caller.is_none() {
            return Ok(super::auth::sign_in_required(&app, &format!("/runs/{id}")));
        }
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown run",
            format!("There is no run {id}."),
        ));
    };
    let token = q.token.as_deref().filter(|t| !t.is_empty());
    let rollback = super::rollback::run_page_section(&app, &run, token).await?;
    let holds_link = matches!(
        rollback.link,
        Some(
            pages::RollbackLink::Usable { .. }
                | pages::RollbackLink::Moved { .. }
                | pages::RollbackLink::NothingOlder { .. }
                | pages::RollbackLink::Expired { .. }
        )
    );
    if caller.is_none() && !holds_link {
        return Ok(super::auth::sign_in_required(&app, &format!("/runs/{id}")));
    }
    let pipeline = app.pipeline_of(&run);
    let approver = caller.as_ref().and_then(|c| match &c.who {
        super::auth::Who::Person(who) => pipeline.and_then(|p| p.approver(who)).filter(|a| !a.is_bot()),
        super::auth::Who::ApiToken => None,
    });
    let retriable = run.status().is_finished() && crate::handlers::retry::failed_env(&run).is_some();
    let viewer = pages::RunViewer {
        now: app.clock.now(),
        nav: caller.as_ref().map(|c| super::control_room::nav(&app, c)),
        retry: match (caller.as_ref().and_then(|c| c.csrf.as_deref()), approver, retriable) {
            (Some(csrf), Some(_), true) => Some((csrf, app.link(&format!("/runs/{id}/retry")))),
            _ => None,
        },
        asked: pipeline
            .map(|p| {
                p.approvers
                    .iter()
                    .filter(|a| !a.is_bot())
                    .map(|a| a.id.to_string())
                    .collect()
            })
            .unwrap_or_default(),
        json: app.link(&format!("/api/runs/{id}")),
    };
    Ok(Html(pages::run_page(&run, &rollback, &viewer).into_string()).into_response())
}

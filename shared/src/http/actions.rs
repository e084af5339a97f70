//! What a signed-in approver can do from the control room, each a POST carrying the page's
//! CSRF token, each with the same checks and history as the links and the CLI:
//!
//! - `POST /runs/{id}/decision` (`env`, `decision=approve|reject`, `comment`): approve or
//!   reject a pending approval — also the **Release** button of a gated environment, which
//!   approves the newest run waiting for it (older ones were superseded by it);
//! - `POST /runs/{id}/retry` (`env`, optional): deploy a run that failed at a deploy, smoke
//!   checks or bake again;
//! - `POST /pipelines/{name}/environments/{env}/rollback` (`from`, `to`): put the environment
//!   back to a chosen earlier release, if it still runs `from`.
//!
//! Viewers, the API token and approvers of other pipelines are refused (403). Each answers
//! with a redirect to the run it changed, so reloading the page never sends it again; a
//! second click of the same button (the first already did it) lands there too.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::approvals::{Link, decide_link};
use super::auth::{Caller, SignedIn, Who, csrf_refused};
use super::{AppState, PageError};
use crate::app::App;
use crate::approvals::{Action, ApprovalClaim};
use crate::config::{ApproverConfig, PipelineConfig};
use crate::domain::{Actor, EnvName, PipelineName, RunId, StageKind, StageStatus};
use crate::handlers::deploy::{RollbackRefused, request_rollback_chosen};
use crate::handlers::retry::{RetryRefused, request_retry};

/// `slipway approve`: `who` decides on `run`'s approval for `env` (default: the one waiting),
/// with the same checks as a link or a button. `Err` says why nothing was recorded.
pub async fn decide_from_shell(
    app: &App,
    run: &RunId,
    env: Option<&EnvName>,
    who: &crate::domain::ApproverId,
    approve: bool,
    comment: Option<String>,
) -> Result<String, String> {
    let refused = |e: PageError| format!("{}: {}", e.title, e.message);
    let (loaded, version) = app
        .load(run)
        .await
        .map_err(|e| refused(e.into()))?
        .ok_or_else(|| format!("there is no run {run}"))?;
    let pipeline = app
        .pipeline_of(&loaded)
        .ok_or_else(|| format!("pipeline {} is no longer configured", loaded.pipeline))?;
    let approver = pipeline
        .approver(who)
        .ok_or_else(|| format!("{who} is not an approver of pipeline {}", pipeline.name))?;
    let env = match env {
        Some(env) => env.clone(),
        None => loaded
            .stages
            .iter()
            .find(|s| s.kind == StageKind::Approval && s.status == StageStatus::Waiting)
            .and_then(|s| s.env.clone())
            .ok_or_else(|| format!("{} waits for no approval", loaded.sha.short()))?,
    };
    let sha = loaded.sha.short().to_owned();
    decide_as(app, loaded, version, pipeline, approver, &env, approve, comment)
        .await
        .map_err(refused)?;
    Ok(format!(
        "{} {sha} for {env} as {who}",
        if approve { "approved" } else { "rejected" }
    ))
}

/// The approver `caller` is for `pipeline`, if the form is this session's and they may act
/// there.
fn acting<'a>(caller: &Caller, csrf: &str, pipeline: &'a PipelineConfig) -> Result<&'a ApproverConfig, PageError> {
    if !caller.csrf_matches(csrf) {
        return Err(csrf_refused());
    }
    let refused = |why: String| PageError::new(StatusCode::FORBIDDEN, "You may not do this", why);
    let Who::Person(id) = &caller.who else {
        return Err(refused("The API token reads; it never acts.".into()));
    };
    match pipeline.approver(id) {
        Some(approver) if !approver.is_bot() => Ok(approver),
        Some(_) => Err(refused(format!("{id} is a bot account: it never approves or acts."))),
        None => Err(refused(format!(
            "{id} is not an approver of pipeline {}; only its approvers act on it.",
            pipeline.name
        ))),
    }
}

fn form_error(e: &FormRejection) -> PageError {
    super::approvals::form_error(e, "The form is not one of slipway's")
}

/// Run `id`, the version it was read at, and its pipeline's configuration; 404 for either
/// missing.
async fn run_and_pipeline<'a>(
    app: &'a App,
    id: &RunId,
) -> Result<(crate::domain::Run, crate::ports::Version, &'a PipelineConfig), PageError> {
    let (run, version) = app
        .load(id)
        .await?
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "Unknown run", format!("There is no run {id}.")))?;
    let pipeline = app.pipeline_of(&run).ok_or_else(|| {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown pipeline",
            format!("Pipeline {} is no longer configured.", run.pipeline),
        )
    })?;
    Ok((run, version, pipeline))
}

fn parse_run(id: &str) -> Result<RunId, PageError> {
    RunId::parse(id).map_err(|e| PageError::new(StatusCode::BAD_REQUEST, "Bad run id", e.to_string()))
}

fn parse_env(env: &str) -> Result<EnvName, PageError> {
    env.parse::<EnvName>()
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, "Bad environment", e.to_string()))
}

fn to_run(app: &App, id: &RunId) -> Response {
    Redirect::to(&app.link(&format!("/runs/{id}"))).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    env: String,
    decision: String,
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /runs/{id}/decision`: the signed-in approver approves or rejects.
pub(super) async fn decide(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(|e| form_error(&e))?;
    let id = parse_run(&id)?;
    let env = parse_env(&form.env)?;
    let (approve, comment) = super::approvals::decision(&form.decision, form.comment)?;
    let (run, version, pipeline) = run_and_pipeline(&app, &id).await?;
    let approver = acting(&caller, &form.csrf, pipeline)?;
    decide_as(&app, run, version, pipeline, approver, &env, approve, comment).await
}

/// Records `approver`'s decision on `run`'s approval for `env` with every check a link has,
/// and answers a second identical click as the first: a redirect to the run.
#[allow(clippy::too_many_arguments)] // the decision and what it is about, each one thing
async fn decide_as(
    app: &App,
    run: crate::domain::Run,
    version: crate::ports::Version,
    pipeline: &PipelineConfig,
    approver: &ApproverConfig,
    env: &EnvName,
    approve: bool,
    comment: Option<String>,
) -> Result<Response, PageError> {
    let id = run.id.clone();
    let env = env.clone();
    let stage = run.stage(StageKind::Approval, Some(&env));
    let expires_at = stage
        .and_then(|s| s.approval.as_ref())
        .map_or(jiff::Timestamp::MAX, |a| a.expires_at);
    let link = Link {
        claim: ApprovalClaim {
            action: Action::Approve,
            run: id.clone(),
            env: env.clone(),
            approver: approver.id.clone(),
            expires_at,
        },
        run,
        version,
        pipeline,
        approver,
        environment: None,
    };
    match decide_link(app, &link, approve, comment).await {
        Ok(_) => Ok(to_run(app, &id)),
        Err(refusal) if refusal.status == StatusCode::CONFLICT => {
            // A second click: the first one's decision stands, and it was this person's.
            let (now, _) = app.load(&id).await?.ok_or(refusal)?;
            let stage = now.stage(StageKind::Approval, Some(&env));
            let mine = stage.and_then(|s| s.approval.as_ref()).is_some_and(|a| {
                if approve {
                    a.approvals.iter().any(|g| g.by == approver.id)
                } else {
                    a.decided_by.as_ref() == Some(&approver.id)
                }
            });
            let same = stage.is_some_and(|s| {
                if approve {
                    s.status != StageStatus::Rejected
                } else {
                    s.status == StageStatus::Rejected
                }
            });
            if mine && same {
                return Ok(to_run(app, &id));
            }
            Err(PageError::new(
                StatusCode::CONFLICT,
                decision_conflict_title(stage.map(|s| s.status)),
                stage
                    .and_then(|s| s.summary.clone())
                    .unwrap_or_else(|| format!("The approval for {env} is no longer open.")),
            )
            .with_link(app.link(&format!("/runs/{id}")), "See the run"))
        }
        Err(refusal) => Err(refusal),
    }
}

fn decision_conflict_title(status: Option<StageStatus>) -> &'static str {
    match status {
        Some(StageStatus::Succeeded) => "Already approved",
        Some(StageStatus::Rejected) => "Already rejected",
        Some(StageStatus::Superseded) => "Superseded",
        _ => "No longer open",
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RetryForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    env: Option<String>,
}

/// `POST /runs/{id}/retry`: deploys a run that failed at a deploy, smoke checks or bake again.
pub(super) async fn retry(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
    form: Result<Form<RetryForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(|e| form_error(&e))?;
    let id = parse_run(&id)?;
    let env = form
        .env
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(parse_env)
        .transpose()?;
    let (_, _, pipeline) = run_and_pipeline(&app, &id).await?;
    let approver = acting(&caller, &form.csrf, pipeline)?;
    let by = approver.id.to_string();
    match request_retry(&app, &id, env.as_ref(), Actor::Approver(approver.id.clone()), &by).await {
        Ok(_) => Ok(to_run(&app, &id)),
        Err(RetryRefused::Engine(e)) => Err(e.into()),
        Err(RetryRefused::NoSuchRun(_)) => Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown run",
            format!("There is no run {id}."),
        )),
        Err(RetryRefused::Refused(why)) => {
            // A second click: the first one's retry is under way.
            let (now, _) = app
                .load(&id)
                .await?
                .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, "Unknown run", ""))?;
            let retried = now
                .history
                .last()
                .is_some_and(|h| h.actor == Actor::Approver(approver.id.clone()) && h.what.contains("asked to retry"));
            if retried && !now.status().is_finished() {
                return Ok(to_run(&app, &id));
            }
            Err(PageError::new(
                StatusCode::CONFLICT,
                "Not retried",
                format!("Nothing was changed: {why}."),
            )
            .with_link(app.link(&format!("/runs/{id}")), "See the run"))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RollbackForm {
    #[serde(default)]
    csrf: String,
    /// The run the environment ran when the page was shown.
    from: String,
    /// The release to go back to.
    to: String,
}

/// `POST /pipelines/{name}/environments/{env}/rollback`: back to the chosen release.
pub(super) async fn roll_back(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
    Path((name, env)): Path<(String, String)>,
    form: Result<Form<RollbackForm>, FormRejection>,
) -> Result<Response, PageError> {
    let Form(form) = form.map_err(|e| form_error(&e))?;
    let name = PipelineName::parse(&name)
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, "Bad pipeline", e.to_string()))?;
    let env = parse_env(&env)?;
    let (from, to) = (parse_run(&form.from)?, parse_run(&form.to)?);
    let pipeline = app.config.pipeline(&name).ok_or_else(|| {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown pipeline",
            format!("No pipeline {name} is configured."),
        )
    })?;
    if pipeline.environment(&env).is_none() {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown environment",
            format!("Pipeline {name} has no environment {env}."),
        ));
    }
    let approver = acting(&caller, &form.csrf, pipeline)?;
    match request_rollback_chosen(&app, &name, &env, &from, &to, approver.id.as_str()).await {
        Ok(run) => Ok(to_run(&app, &run.id)),
        Err(RollbackRefused::Engine(e)) => Err(e.into()),
        Err(refused) => {
            // A second click: the first one's rollback to `to` is queued or done.
            let (record, _) = app.environment(&name, &env).await?;
            if let Some((run, _)) = app.load(&from).await?
                && run.stage(StageKind::Rollback, Some(&env)).is_some_and(|s| {
                    s.rollback.as_ref().and_then(|p| p.to.as_ref()).map(|r| &r.run) == Some(&to)
                        && s.status != StageStatus::Failed
                })
                && record.current.as_ref().is_none_or(|c| c.run == from || c.run == to)
            {
                return Ok(to_run(&app, &from));
            }
            Err(PageError::new(
                StatusCode::CONFLICT,
                "Not rolled back",
                format!("Nothing was changed: {refused}."),
            )
            .with_link(app.link(&format!("/pipelines/{name}")), "Back to the pipeline"))
        }
    }
}

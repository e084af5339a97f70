//! Git host webhooks: verify the signature over the raw bytes, then parse into a domain
//! event, then act. Answers after one state write and at most a few queue sends.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::app::{App, Applied, EngineError, Opened};
use crate::domain::{self, Actor, CommitInfo, Event, NewRun, RunId, clip};
use crate::ports::{StoreError, StoreKey};
use crate::providers::{BuildReport, GitRef, HostEvent, Push, bitbucket, github, gitlab};
use crate::signature;

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What a webhook answers: a status and a JSON body.
type Answer = (StatusCode, Value);

fn respond((status, body): Answer) -> Response {
    (status, Json(body)).into_response()
}

/// An event slipway does not act on: 202, so git hosts keep the hook enabled.
fn ignored(reason: String) -> Answer {
    tracing::info!(%reason, "webhook ignored");
    (StatusCode::ACCEPTED, json!({"ignored": reason}))
}

fn unauthorized(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, format!("{what}: {e}"))
}

fn not_configured(provider: &str, table: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{provider} webhooks are not configured: add {table} to slipway.toml"),
    )
}

/// A delivery's answer, counted by provider and status (`slipway_webhook_deliveries_total`).
fn counted(provider: &'static str, answer: Result<Response, ApiError>) -> Response {
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    crate::metrics::webhook_delivery(provider, response.status());
    response
}

/// Acts on one verified, parsed event.
async fn act(app: &App, event: HostEvent, delivery: &str) -> Result<Answer, ApiError> {
    match event {
        HostEvent::Ping => Ok((StatusCode::OK, json!({"message": "pong: slipway received the ping"}))),
        HostEvent::Ignored { event } => Ok(ignored(format!("slipway does not act on {:?} events", clip(&event)))),
        HostEvent::Push(push) => accept_push(app, *push, delivery).await,
        HostEvent::Build(report) => accept_build(app, *report).await,
    }
}

/// Acts on every event of one delivery (a Bitbucket push can touch several branches). One
/// event answers as itself; several answer 201 if any opened a run, with every result.
async fn act_all(app: &App, events: Vec<HostEvent>, delivery: &str) -> Result<Answer, ApiError> {
    let mut answers = Vec::new();
    for event in events {
        answers.push(act(app, event, delivery).await?);
    }
    if answers.len() == 1 {
        return Ok(answers.remove(0));
    }
    let status = answers.iter().map(|(s, _)| *s).min_by_key(|s| match *s {
        StatusCode::CREATED => 0,
        StatusCode::OK => 1,
        _ => 2,
    });
    let results: Vec<Value> = answers.into_iter().map(|(_, body)| body).collect();
    Ok((status.unwrap_or(StatusCode::ACCEPTED), json!({"results": results})))
}

/// Handles a delivery once. A delivery id already marked as handled answers 200
/// `duplicate` without acting; the mark is written only after a 2xx answer, so a delivery
/// whose first attempt failed is handled in full when the host sends it again.
async fn once(
    app: &App,
    provider: &str,
    delivery: Option<&str>,
    work: impl std::future::Future<Output = Result<Answer, ApiError>>,
) -> Result<Response, ApiError> {
    let marker = delivery.and_then(|id| StoreKey::delivery(provider, id));
    if let Some(marker) = &marker
        && app.store.get(marker).await.map_err(EngineError::from)?.is_some()
    {
        tracing::info!(provider, delivery = ?delivery.map(clip), "delivery already handled");
        let body = json!({"status": "duplicate", "message": "this delivery was already handled"});
        return Ok(respond((StatusCode::OK, body)));
    }
    let answer = work.await?;
    if let Some(marker) = marker
        && answer.0.is_success()
    {
        match app.store.create(&marker, Bytes::from_static(b"handled")).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => {
                tracing::warn!(provider, delivery = ?delivery.map(clip), error = %e, "could not mark the delivery handled")
            }
        }
    }
    Ok(respond(answer))
}

/// `POST /hooks/github`: `X-Hub-Signature-256` over the raw body. Redelivered pushes find
/// their run by the commit, so no delivery marker is needed.
pub(super) async fn github(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    counted("github", github_delivery(state, headers, body).await)
}

async fn github_delivery(
    axum::extract::State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::webhook_body(body)?;
    let Some(gh) = &app.config.github else {
        return Err(not_configured("GitHub", "[github] webhook_secret"));
    };
    let secrets = app
        .rotation(&gh.webhook_secret, gh.previous_webhook_secret.as_ref())
        .await?;
    secrets
        .check("GitHub webhook secret", app.clock.now(), |secret| {
            signature::verify(secret.as_bytes(), header(&headers, "x-hub-signature-256"), &body)
        })
        .map_err(|e| unauthorized("X-Hub-Signature-256", e))?;
    let event = header(&headers, "x-github-event")
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header"))?;
    let delivery = header(&headers, "x-github-delivery").unwrap_or("-");
    let parsed = github::parse(event, &body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    tracing::info!(delivery = %clip(delivery), event = %clip(event), "GitHub webhook verified");
    Ok(respond(act(&app, parsed, delivery).await?))
}

/// `POST /hooks/gitlab`: `X-Gitlab-Token` in constant time, and the Standard Webhooks
/// signature (5-minute window) when a signing key is configured; deliveries deduplicated by
/// `Idempotency-Key` / `X-Gitlab-Event-UUID`.
pub(super) async fn gitlab(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    counted("gitlab", gitlab_delivery(state, headers, body).await)
}

async fn gitlab_delivery(
    axum::extract::State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::webhook_body(body)?;
    let Some(gl) = &app.config.gitlab else {
        return Err(not_configured("GitLab", "[gitlab] token"));
    };
    let now = app.clock.now();
    let tokens = app.rotation(&gl.token, gl.previous_token.as_ref()).await?;
    tokens
        .check("GitLab token", now, |token| {
            gitlab::verify_token(token, header(&headers, "x-gitlab-token"))
        })
        .map_err(|e| unauthorized("X-Gitlab-Token", e))?;
    if let Some(signing_key) = &gl.signing_key {
        let keys = app.rotation(signing_key, gl.previous_signing_key.as_ref()).await?;
        keys.check("GitLab signing key", now, |key| {
            gitlab::verify_signature(
                key,
                header(&headers, "webhook-id"),
                header(&headers, "webhook-timestamp"),
                header(&headers, "webhook-signature"),
                &body,
                now,
            )
        })
        .map_err(|e| match e {
            // Our key is unusable: a configuration mistake, not the sender's fault.
            gitlab::VerifyError::BadSecret => {
                tracing::error!(parameter = %signing_key, "the GitLab signing key is not a whsec_<base64> secret");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "slipway is misconfigured: the GitLab signing key {signing_key} is not a whsec_<base64> secret"
                    ),
                )
            }
            e => unauthorized("webhook-signature", e),
        })?;
    }
    let delivery = header(&headers, "idempotency-key").or_else(|| header(&headers, "x-gitlab-event-uuid"));
    let event = header(&headers, "x-gitlab-event");
    let parsed = gitlab::parse(event, &body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    tracing::info!(delivery = ?delivery.map(clip), event = ?event.map(clip), "GitLab webhook verified");
    once(&app, "gitlab", delivery, act(&app, parsed, delivery.unwrap_or("-"))).await
}

/// `POST /hooks/bitbucket`: `X-Hub-Signature: sha256=<hex>` over the raw body (the header
/// GitHub uses for SHA-1; only SHA-256 is accepted); deliveries deduplicated by
/// `X-Request-UUID`, and runs by repository, branch and commit.
pub(super) async fn bitbucket(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    counted("bitbucket", bitbucket_delivery(state, headers, body).await)
}

async fn bitbucket_delivery(
    axum::extract::State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::webhook_body(body)?;
    let Some(bb) = &app.config.bitbucket else {
        return Err(not_configured("Bitbucket", "[bitbucket] secret"));
    };
    let secrets = app.rotation(&bb.secret, bb.previous_secret.as_ref()).await?;
    secrets
        .check("Bitbucket webhook secret", app.clock.now(), |secret| {
            bitbucket::verify(secret.as_bytes(), header(&headers, "x-hub-signature"), &body)
        })
        .map_err(|e| unauthorized("X-Hub-Signature", e))?;
    let delivery = header(&headers, "x-request-uuid");
    let event = header(&headers, "x-event-key");
    let parsed = bitbucket::parse(event, &body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    tracing::info!(delivery = ?delivery.map(clip), event = ?event.map(clip), "Bitbucket webhook verified");
    once(
        &app,
        "bitbucket",
        delivery,
        act_all(&app, parsed, delivery.unwrap_or("-")),
    )
    .await
}

/// Opens a run for a push to a followed branch; answers 2xx for every push it ignores, so
/// git hosts keep the hook enabled.
async fn accept_push(app: &App, push: Push, delivery: &str) -> Result<Answer, ApiError> {
    let branch = match &push.git_ref {
        GitRef::Branch(branch) => branch.clone(),
        GitRef::Tag(tag) => {
            return Ok(ignored(format!(
                "tag {} pushed; slipway deploys branches, not tags",
                clip(tag)
            )));
        }
        GitRef::Other(r) => return Ok(ignored(format!("{} is not a branch", clip(r)))),
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
        parents: push.parents(),
        carried: push.carried(),
    };
    match app.open_run(new).await? {
        Opened::Created(run) => {
            tracing::info!(delivery = %clip(delivery), run = %run.id, forced = push.forced, commits = push.commit_count, "run opened");
            let body = json!({"run_id": run.id, "status": "opened", "url": app.link(&format!("/runs/{}", run.id))});
            Ok((StatusCode::CREATED, body))
        }
        Opened::Existing(run) => {
            tracing::info!(delivery = %clip(delivery), run = %run.id, "push for a commit that already has a run");
            let body = json!({
                "run_id": run.id,
                "status": "duplicate",
                "message": "a run for this commit already exists; nothing new was started",
            });
            Ok((StatusCode::OK, body))
        }
    }
}

/// Records a build result a git host reported for one named check, in every run of the
/// commit whose pipeline requires that check. Answers 2xx for what it ignores: hosts send
/// results for every branch and pull request.
async fn accept_build(app: &App, report: BuildReport) -> Result<Answer, ApiError> {
    let Some(status) = report.status else {
        return Ok(ignored(format!(
            "{} for {} is still running",
            clip(&report.check),
            report.sha.short()
        )));
    };
    let pipelines = app.config.pipelines.iter().filter(|p| {
        p.repo.as_str().eq_ignore_ascii_case(report.repo.as_str())
            && p.required_checks.contains(&report.check)
            && report.branch.as_ref().is_none_or(|b| b == &p.branch)
    });
    let mut answers = Vec::new();
    for pipeline in pipelines {
        let run_id = RunId::new(&pipeline.name, &report.sha);
        let event = Event::CheckReported {
            check: report.check.clone(),
            status,
            url: report.url.clone(),
            coverage: report.coverage,
        };
        match app.apply(&run_id, || app.input(Actor::Ci, event.clone())).await? {
            None => {}
            Some(Applied::Changed(run)) => answers.push(json!({"run_id": run.id, "status": run.status()})),
            Some(Applied::Ignored(why, run)) => {
                app.dispatch(&domain::resendable(&run)).await?;
                answers.push(json!({"run_id": run.id, "status": run.status(), "ignored": why.to_string()}));
            }
        }
    }
    if answers.is_empty() {
        return Ok(ignored(format!(
            "no run of a pipeline requiring {:?} for {} {}",
            clip(&report.check),
            report.repo,
            report.sha.short()
        )));
    }
    Ok((StatusCode::OK, json!({"runs": answers})))
}

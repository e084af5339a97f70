//! Rollback links. A `released` notification gives each approver who is not a bot a signed
//! link to the run page (`/runs/{id}?token=…`), which then offers "Roll back <env>": the
//! confirmation page `GET /rollback/{token}`, which changes nothing (chat unfurlers and mail
//! scanners fetch every link), and its button, `POST /rollback/{token}`, which queues the
//! rollback of the environment from the link's run to the release before it.
//!
//! A link only ever rolls back the release it was sent for: once the environment runs
//! something else — a newer release, or the older one after the rollback — it answers 409
//! naming what runs there now, so a second click never goes back further. Where it goes is
//! the rule `slipway rollback` follows too ([`crate::domain::Environment::rollback_target`]):
//! the newest release of an older commit, and nothing once the environment was rolled back.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Html;

use super::pages::{self, RollbackConfirm, RollbackLink, RunRollback};
use super::{AppState, PageError};
use crate::app::App;
use crate::approvals::{Action, ApprovalClaim, TokenError};
use crate::config::ApproverConfig;
use crate::domain::{EnvName, Release, Run, RunId};
use crate::handlers::deploy::{self, RollbackRefused};

/// A verified rollback link and the run it is for.
struct Link<'a> {
    claim: ApprovalClaim,
    run: Run,
    approver: &'a ApproverConfig,
}

/// Why a rollback token does not work, in a person's words.
fn invalid(e: &TokenError) -> String {
    match e {
        TokenError::Malformed => "it is not a slipway rollback link (was it copied whole?)".into(),
        TokenError::BadSignature => "it has been altered, or was not issued by this slipway".into(),
        TokenError::UnknownKey => "it was signed with a key this slipway no longer holds".into(),
        TokenError::WrongAction { .. } => format!("{e}: an approval link cannot roll anything back"),
    }
}

/// Why a rollback token does not open, as the page answering it.
fn refused(e: &TokenError) -> PageError {
    let (status, title) = match e {
        TokenError::Malformed => (StatusCode::NOT_FOUND, "Unknown link"),
        TokenError::BadSignature | TokenError::UnknownKey => (StatusCode::FORBIDDEN, "Invalid link"),
        TokenError::WrongAction { .. } => (StatusCode::FORBIDDEN, "Not a rollback link"),
    };
    let message = format!("This link does not work: {}. Nothing was changed.", invalid(e));
    PageError::new(status, title, message)
}

/// Verifies `token` as an unexpired rollback link and finds its run and approver.
async fn open<'a>(app: &'a App, token: &str) -> Result<Link<'a>, PageError> {
    let claim = app
        .verify_link(token, Action::Rollback)
        .await?
        .map_err(|e| refused(&e))?;
    let gone = || {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown run",
            "The run this link is for no longer exists.",
        )
    };
    let (run, _) = app.load(&claim.run).await?.ok_or_else(gone)?;
    let pipeline = app.pipeline_of(&run).ok_or_else(gone)?;
    let approver = pipeline
        .approver(&claim.approver)
        .filter(|a| !a.is_bot())
        .ok_or_else(|| {
            PageError::new(
                StatusCode::FORBIDDEN,
                "Not an approver",
                format!(
                    "{} is no longer an approver of pipeline {}, so their rollback link no longer works.",
                    claim.approver, pipeline.name
                ),
            )
        })?;
    let link = Link { claim, run, approver };
    if app.clock.now() >= link.claim.expires_at {
        return Err(expired(&link));
    }
    Ok(link)
}

/// The CLI command that rolls `env` of `run`'s pipeline back.
fn cli(run: &Run, env: &str) -> String {
    format!("slipway rollback --env {env} --pipeline {}", run.pipeline)
}

fn expired(link: &Link<'_>) -> PageError {
    PageError::new(
        StatusCode::GONE,
        "Link expired",
        format!(
            "This rollback link expired at {}; nothing was changed. To roll back, run: {}",
            link.claim.expires_at,
            cli(&link.run, link.claim.env.as_str())
        ),
    )
}

/// `env` runs `current` now, not the link's run: say so, and link to what runs there.
fn moved_on(app: &App, link: &Link<'_>, current: Option<&RunId>) -> PageError {
    let env = &link.claim.env;
    let short = link.run.sha.short();
    match current {
        Some(current) => PageError::new(
            StatusCode::CONFLICT,
            "No longer current",
            format!(
                "{env} no longer runs {short}: it runs run {current} now, so this link rolls nothing back. Nothing was changed."
            ),
        )
        .with_link(app.link(&format!("/runs/{current}")), format!("Run {current}, what {env} runs now")),
        None => PageError::new(
            StatusCode::CONFLICT,
            "Nothing released",
            format!("{env} runs nothing slipway released; nothing was changed."),
        ),
    }
}

/// The release a rollback through `link` goes back to, if `env` still runs the link's run.
async fn target(app: &App, link: &Link<'_>) -> Result<Release, PageError> {
    let env = &link.claim.env;
    let (record, _) = app.environment(&link.run.pipeline, env).await?;
    match &record.current {
        Some(current) if current.run == link.run.id => {}
        other => return Err(moved_on(app, link, other.as_ref().map(|c| &c.run))),
    }
    if link.run.busy_in(env) {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "Under way",
            format!(
                "{} is still at work on {env} (a rollback may already be queued); nothing was changed.",
                link.run.sha.short()
            ),
        )
        .with_link(
            app.link(&format!("/runs/{}", link.run.id)),
            "See how it goes on the run page",
        ));
    }
    let lineage = app.lineage(&link.run.pipeline).await?;
    record.rollback_target(&lineage).cloned().map_err(|why| {
        PageError::new(
            StatusCode::CONFLICT,
            "Nothing to go back to",
            format!("{}; nothing was changed.", why.in_env(env.as_str())),
        )
    })
}

/// `GET /rollback/{token}`: what a rollback would do, and the button. Changes nothing.
pub(super) async fn confirm_page(
    axum::extract::State(app): AppState,
    Path(token): Path<String>,
) -> Result<Html<String>, PageError> {
    let link = open(&app, &token).await?;
    let to = target(&app, &link).await?;
    let to_run = app.load(&to.run).await?.map(|(run, _)| run);
    let base = app.link("");
    let page = pages::rollback_confirm(&RollbackConfirm {
        base: &base,
        run: &link.run,
        env: &link.claim.env,
        to: &to,
        to_run: to_run.as_ref(),
        approver: link.approver.id.as_str(),
        expires_at: link.claim.expires_at,
    });
    Ok(Html(page.into_string()))
}

/// `POST /rollback/{token}`: queues the rollback, once. The form carries nothing; the token
/// is the authority.
pub(super) async fn roll_back(
    axum::extract::State(app): AppState,
    Path(token): Path<String>,
) -> Result<Html<String>, PageError> {
    let link = open(&app, &token).await?;
    // Read here for the page; the request checks again next to its own read.
    let to = target(&app, &link).await?;
    let env = &link.claim.env;
    let by = link.approver.id.as_str();
    match deploy::request_rollback_from(&app, &link.run.pipeline, env, &link.run.id, by).await {
        Ok(run) => {
            tracing::info!(run = %run.id, %env, to = %to.run, approver = by, "rollback requested through a link");
            let text = format!(
                "Rollback queued: {env} goes back from {} to {}. The workers redeploy it through backup, migrate and release, then run the smoke checks; the run page shows how it goes.",
                run.sha.short(),
                to.sha.short()
            );
            let page = pages::outcome("Rollback queued", &text, &super::approvals::onward(&app, &run.id));
            Ok(Html(page.into_string()))
        }
        Err(RollbackRefused::NotCurrent { current, .. }) => Err(moved_on(&app, &link, current.as_ref())),
        Err(RollbackRefused::Refused(why) | RollbackRefused::Nothing(why)) => Err(PageError::new(
            StatusCode::CONFLICT,
            "Not rolled back",
            format!("{why}; nothing was changed."),
        )
        .with_link(app.link(&format!("/runs/{}", link.run.id)), "The run page")),
        Err(RollbackRefused::Engine(e)) => Err(e.into()),
    }
}

/// What the run page of `run` says about rolling back: the CLI command for each environment
/// `run` is the current release of, and — opened with `?token=` — the rollback action, or
/// why the link does not work.
pub(super) async fn run_page_section(app: &App, run: &Run, token: Option<&str>) -> Result<RunRollback, PageError> {
    let mut current_in = Vec::new();
    let lineage = app.lineage(&run.pipeline).await?;
    for env in run.deployed_to() {
        let (record, _) = app.environment(&run.pipeline, env).await?;
        if record.current.as_ref().is_some_and(|c| c.run == run.id) {
            current_in.push((env.clone(), record.rollback_target(&lineage).ok().cloned()));
        }
    }
    let link = match token {
        None => None,
        Some(token) => Some(link_state(app, run, token, &current_in).await?),
    };
    Ok(RunRollback {
        base: app.link(""),
        pipeline: run.pipeline.clone(),
        current_in,
        link,
    })
}

async fn link_state(
    app: &App,
    run: &Run,
    token: &str,
    current_in: &[(EnvName, Option<Release>)],
) -> Result<RollbackLink, PageError> {
    let claim = match app.verify_link(token, Action::Rollback).await? {
        Ok(claim) => claim,
        Err(e) => return Ok(RollbackLink::Invalid { why: invalid(&e) }),
    };
    if claim.run != run.id {
        return Ok(RollbackLink::Invalid {
            why: format!("it is for run {}, not this one", claim.run),
        });
    }
    let approver = app
        .pipeline_of(run)
        .and_then(|p| p.approver(&claim.approver))
        .filter(|a| !a.is_bot());
    if approver.is_none() {
        return Ok(RollbackLink::Invalid {
            why: format!(
                "{} is no longer an approver of pipeline {}",
                claim.approver, run.pipeline
            ),
        });
    }
    if app.clock.now() >= claim.expires_at {
        return Ok(RollbackLink::Expired {
            env: claim.env,
            at: claim.expires_at,
        });
    }
    let Some((_, previous)) = current_in.iter().find(|(env, _)| *env == claim.env) else {
        let (record, _) = app.environment(&run.pipeline, &claim.env).await?;
        return Ok(RollbackLink::Moved {
            env: claim.env,
            current: record.current.map(|c| c.run),
        });
    };
    let Some(previous) = previous else {
        return Ok(RollbackLink::NothingOlder { env: claim.env });
    };
    Ok(RollbackLink::Usable {
        confirm: app.link(&format!("/rollback/{token}")),
        previous: previous.clone(),
        approver: claim.approver.to_string(),
        expires_at: claim.expires_at,
        env: claim.env,
    })
}

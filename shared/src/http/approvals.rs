//! `GET /approvals/{token}` shows a confirmation page and changes nothing — chat unfurlers
//! and mail scanners fetch every link. `POST /approvals/{token}` with `decision=approve|reject`
//! decides, once: a replay answers 409, an expired link 410, a forged one 403.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query};
use axum::http::StatusCode;
use axum::response::Html;
use serde::Deserialize;

use super::pages::{self, Confirm};
use super::{AppState, PageError};
use crate::app::{App, Applied, Shown};
use crate::approvals::{Action, ApprovalClaim, TokenError};
use crate::config::{ApproverConfig, PipelineConfig};
use crate::domain::{Actor, Environment, Event, Ignored, Run, Stage, StageKind, StageStatus};
use crate::ports::Version;
use crate::views::control_room;

#[derive(Debug, Deserialize)]
pub(super) struct Preselect {
    decision: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct DecisionForm {
    decision: String,
    #[serde(default)]
    comment: Option<String>,
}

/// Where a person goes on to after deciding: the run, and the control room.
pub(super) fn onward(app: &App, run: &crate::domain::RunId) -> [(String, &'static str); 2] {
    [
        (app.link(&format!("/runs/{run}")), "See the run"),
        (app.link("/"), "All pipelines"),
    ]
}

/// The answer to a form that could not be read: 413 when it is too large, else 400 saying
/// `what` to send.
pub(super) fn form_error(e: &FormRejection, what: &str) -> PageError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return PageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "The form is larger than slipway accepts.",
        );
    }
    PageError::new(
        StatusCode::BAD_REQUEST,
        "Bad request",
        format!("{what}: {}", crate::domain::clip_quoted(&e.body_text())),
    )
}

/// A form's `decision` and `comment`: approve or not, and the comment if there is one (at
/// most 2,000 characters).
pub(super) fn decision(decision: &str, comment: Option<String>) -> Result<(bool, Option<String>), PageError> {
    let approve = match decision {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "Bad request",
                format!(
                    "decision must be approve or reject, not {:?}",
                    crate::domain::clip(other)
                ),
            ));
        }
    };
    let comment = comment.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    if comment.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Comment too long",
            "Keep the comment under 2000 characters.",
        ));
    }
    Ok((approve, comment))
}

/// A verified link and what it points at.
pub(super) struct Link<'a> {
    pub(super) claim: ApprovalClaim,
    pub(super) run: Run,
    /// The version `run` was read at: the decision is written over it without reading again.
    pub(super) version: Version,
    pub(super) pipeline: &'a PipelineConfig,
    /// Who decides: the link's approver, or the approver a Slack user maps to.
    pub(super) approver: &'a ApproverConfig,
    /// The record of the environment the approval is for, with its version, as this
    /// process's page read it: the deploy the decision queues carries it to its lease claim.
    /// `None` when the run was not taken from a page (read, a Slack button, the dashboard).
    pub(super) environment: Option<(Environment, Version)>,
}

impl Link<'_> {
    fn stage(&self) -> Option<&Stage> {
        self.run.stage(StageKind::Approval, Some(&self.claim.env))
    }
}

/// The link `token`, with its run as stored: what a page shows.
pub(super) async fn open<'a>(app: &'a App, token: &str) -> Result<Link<'a>, PageError> {
    open_link(app, token, false).await
}

/// The link `token`, for a decision posted from its page: with its run as this process's
/// page showed it if it kept it ([`crate::app::ShownRuns`]), read otherwise. The decision is
/// written over that run's version, so an old one is read again then; the checks made here
/// only read what a run never changes (its pipeline, its commit's author).
async fn open_to_decide<'a>(app: &'a App, token: &str) -> Result<Link<'a>, PageError> {
    open_link(app, token, true).await
}

async fn open_link<'a>(app: &'a App, token: &str, as_shown: bool) -> Result<Link<'a>, PageError> {
    let claim = app.verify_link(token, Action::Approve).await?.map_err(|e| match e {
        TokenError::Malformed => PageError::new(StatusCode::NOT_FOUND, "Unknown link", e.to_string()),
        TokenError::BadSignature | TokenError::UnknownKey | TokenError::WrongAction { .. } => {
            PageError::new(StatusCode::FORBIDDEN, "Invalid link", e.to_string())
        }
    })?;
    let gone = || {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown run",
            "The run this link is for no longer exists.",
        )
    };
    let shown = if as_shown {
        app.shown_runs.take(&claim.run)
    } else {
        None
    };
    let (run, version, environment) = match shown {
        Some(Shown {
            run,
            version,
            environment,
        }) => (run, version, environment),
        None => {
            let (run, version) = app.load(&claim.run).await?.ok_or_else(gone)?;
            (run, version, None)
        }
    };
    let pipeline = app.pipeline_of(&run).ok_or_else(gone)?;
    let approver = pipeline.approver(&claim.approver).ok_or_else(|| {
        PageError::new(
            StatusCode::FORBIDDEN,
            "Not an approver",
            format!(
                "{} is no longer an approver of pipeline {}.",
                claim.approver, pipeline.name
            ),
        )
    })?;
    Ok(Link {
        claim,
        run,
        version,
        pipeline,
        approver,
        environment,
    })
}

/// Why this approver may not decide on this run, if so.
fn self_approval(link: &Link<'_>) -> Option<PageError> {
    let commit = &link.run.commit;
    let same_login = commit
        .author_login
        .as_deref()
        .is_some_and(|l| l.eq_ignore_ascii_case(link.approver.id.as_str()));
    let same_email = commit
        .author_email
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case(&link.approver.address));
    ((same_login || same_email) && !link.pipeline.allow_self_approval).then(|| {
        PageError::new(
            StatusCode::FORBIDDEN,
            "You wrote this commit",
            format!(
                "Pipeline {} does not allow approving your own commits; another approver must decide.",
                link.pipeline.name
            ),
        )
    })
}

/// The answer for a link whose approval is no longer open.
fn closed(link: &Link<'_>, stage: Option<&Stage>) -> PageError {
    let env = &link.claim.env;
    let Some(stage) = stage else {
        return PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown approval",
            format!("This run has no approval for {env}."),
        );
    };
    let by = stage
        .approval
        .as_ref()
        .and_then(|a| a.decided_by.as_ref())
        .map(|b| b.to_string())
        .unwrap_or_default();
    match stage.status {
        StageStatus::Succeeded => PageError::new(
            StatusCode::CONFLICT,
            "Already approved",
            format!("{by} already approved promotion to {env}."),
        ),
        StageStatus::Rejected => PageError::new(
            StatusCode::CONFLICT,
            "Already rejected",
            format!("{by} already rejected promotion to {env}."),
        ),
        StageStatus::Expired => expired(link),
        StageStatus::Superseded => superseded(stage.superseded_by.as_ref(), env),
        StageStatus::Pending => PageError::new(
            StatusCode::CONFLICT,
            "Not ready",
            format!("This run has not reached the approval for {env} yet."),
        ),
        _ => PageError::new(
            StatusCode::CONFLICT,
            "Run ended",
            format!("This run ended before the approval for {env}; there is nothing to decide."),
        ),
    }
}

/// A newer run took this approval's place: say which, with a link to it.
fn superseded(by: Option<&crate::domain::RunId>, env: &crate::domain::EnvName) -> PageError {
    let text = match by {
        Some(by) => format!(
            "A newer commit reached the approval for {env} and took this one's place: see /runs/{by} (its own approval request has been sent)."
        ),
        None => format!("A newer commit took this one's place at the approval for {env}."),
    };
    PageError::new(StatusCode::CONFLICT, "Superseded", text)
}

fn expired(link: &Link<'_>) -> PageError {
    PageError::new(
        StatusCode::GONE,
        "Link expired",
        format!(
            "This approval link expired at {}; nothing was changed.",
            link.claim.expires_at
        ),
    )
}

pub(super) async fn confirm_page(
    axum::extract::State(app): AppState,
    Path(token): Path<String>,
    Query(pre): Query<Preselect>,
) -> Result<Html<String>, PageError> {
    let link = open(&app, &token).await?;
    let stage = link.stage();
    if stage.map(|s| s.status) != Some(StageStatus::Waiting) {
        return Err(closed(&link, stage));
    }
    if app.clock.now() >= link.claim.expires_at {
        return Err(expired(&link));
    }
    if let Some(refusal) = self_approval(&link) {
        return Err(refusal);
    }
    let (record, record_version) = app.environment(&link.run.pipeline, &link.claim.env).await?;
    let brings = control_room::brings(&app, &link.run, &link.claim.env, record.clone()).await?;
    // The decision posted from this page starts from the run it shows, and the deploy it
    // queues from the environment's record the page read.
    app.shown_runs.keep(Shown {
        run: link.run.clone(),
        version: link.version.clone(),
        environment: record_version.map(|version| (record, version)),
    });
    let base = app.link("");
    let page = pages::confirm(&Confirm {
        base: &base,
        run: &link.run,
        env: &link.claim.env,
        approver: link.approver.id.as_str(),
        expires_at: link.claim.expires_at,
        preselect: pre.decision.as_deref().filter(|d| matches!(*d, "approve" | "reject")),
        current: brings.current.as_ref(),
        carries: &brings.runs,
        carries_more: brings.more,
        newer_upstream: brings.newer_upstream.as_ref().map(|(env, release)| (env, release)),
    });
    Ok(Html(page.into_string()))
}

pub(super) async fn decide(
    axum::extract::State(app): AppState,
    Path(token): Path<String>,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Result<Html<String>, PageError> {
    let link = open_to_decide(&app, &token).await?;
    let Form(form) = form.map_err(|e| form_error(&e, "Send decision=approve or decision=reject"))?;
    let (approve, comment) = decision(&form.decision, form.comment)?;
    decide_link(&app, &link, approve, comment).await
}

/// Records `link.approver`'s decision, once: refuses self-approval and expired links (and
/// records the expiry), and answers a replay or a race lost to another approver with the
/// decision that stands. The same checks for a click in a browser and a click in Slack.
pub(super) async fn decide_link(
    app: &App,
    link: &Link<'_>,
    approve: bool,
    comment: Option<String>,
) -> Result<Html<String>, PageError> {
    if let Some(refusal) = self_approval(link) {
        return Err(refusal);
    }
    let env = link.claim.env.clone();
    let actor = Actor::Approver(link.approver.id.clone());
    if app.clock.now() >= link.claim.expires_at {
        // Record the expiry if it is due (the POST is allowed to change state); answer 410.
        app.apply(&link.run.id, || {
            app.input(Actor::Slipway, Event::ApprovalExpired { env: env.clone() })
        })
        .await?;
        return Err(expired(link));
    }
    let event = Event::ApprovalDecided {
        env: env.clone(),
        approver: link.approver.id.clone(),
        approve,
        comment,
        bot: link.approver.is_bot(),
    };
    // Decided on the run as the link was opened; a write in between makes it read again.
    // The deploy it queues carries the environment's record as the page read it; one
    // written since is read again by the deploy's claim.
    let known = Some((link.run.clone(), link.version.clone()));
    let environment = link
        .environment
        .as_ref()
        .map(|(record, version)| (&env, record, version));
    match app
        .apply_carrying(&link.run.id, known, environment, || {
            app.input(actor.clone(), event.clone())
        })
        .await?
        .map(|(applied, _)| applied)
    {
        None => Err(PageError::new(
            StatusCode::NOT_FOUND,
            "Unknown run",
            "The run this link is for no longer exists.",
        )),
        Some(Applied::Changed(run)) => {
            let gate = run.stage(StageKind::Approval, Some(&env));
            let pending = gate
                .filter(|s| s.status == StageStatus::Waiting)
                .and_then(|s| s.approval.as_ref());
            if let (true, Some(info)) = (approve, pending) {
                let text = format!(
                    "Thank you. {} of {} approvals for {env} are in; {} goes on when the rest approve.",
                    info.approvals.len(),
                    info.required,
                    run.sha.short()
                );
                tracing::info!(run = %run.id, %env, approver = %link.approver.id, "approval counted");
                return Ok(Html(
                    pages::outcome("Approval counted", &text, &onward(app, &run.id)).into_string(),
                ));
            }
            let (title, text) = if approve {
                (
                    "Approved",
                    format!("Thank you. {} is on its way to {env}.", run.sha.short()),
                )
            } else {
                (
                    "Rejected",
                    format!(
                        "{} will not be promoted to {env}. The team has been told.",
                        run.sha.short()
                    ),
                )
            };
            tracing::info!(run = %run.id, %env, approver = %link.approver.id, approve, "approval decided");
            Ok(Html(pages::outcome(title, &text, &onward(app, &run.id)).into_string()))
        }
        Some(Applied::Ignored(Ignored::ApprovalExpired { .. }, _)) => Err(expired(link)),
        Some(Applied::Ignored(Ignored::Superseded { by, .. }, _)) => Err(superseded(Some(&by), &env)),
        Some(Applied::Ignored(Ignored::Bot(who), _)) => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Bots do not approve",
            format!("{who} is a bot account: it is told about approvals, but its decisions never count."),
        )),
        Some(Applied::Ignored(Ignored::AlreadyApproved(who), _)) => Err(PageError::new(
            StatusCode::CONFLICT,
            "Already approved",
            format!("{who} already approved; another approver must approve too."),
        )),
        Some(Applied::Ignored(_, run)) => Err(closed(link, run.stage(StageKind::Approval, Some(&env)))),
    }
}

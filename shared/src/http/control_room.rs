//! The control room: `GET /` (every pipeline and environment), `GET /approvals` (what waits
//! for people), `GET /pipelines/{name}` (a pipeline's history and releases), and the same as
//! JSON under `/api/`. Only for people who signed in ([`super::auth`]); each page reads the
//! projections it shows ([`crate::views::control_room`]), never the history.

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Html;
use jiff::Timestamp;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiCaller, Caller, SignedIn};
use super::pages::{self, Nav};
use super::{ApiError, AppState, PageError};
use crate::app::App;
use crate::config::{PipelineConfig, Role};
use crate::domain::{EnvName, PipelineName, StageKind, StageStatus, clip};
use crate::views::Cursor;
use crate::views::control_room::{self, EnvHistory, EnvView, History, Overview, Pending, PipelineView, RunView};
use crate::views::{delivery, release_log, run_index};

/// How many runs a pipeline's page shows unless `limit` says otherwise.
pub const HISTORY_PAGE: usize = 25;

pub(super) fn nav<'a>(app: &App, caller: &'a Caller) -> Nav<'a> {
    Nav {
        who: caller.who.to_string(),
        role: match caller.role {
            Role::Approver => "approver",
            Role::Viewer => "viewer",
        },
        csrf: caller.csrf.as_deref(),
        home: app.link("/"),
        approvals: app.link("/approvals"),
        logout: app.link("/logout"),
    }
}

/// `GET /`: every pipeline as a row of stage boxes for its newest runs, and every
/// environment: what runs there, what waits for it, how far it is ahead of the next.
pub(super) async fn overview_page(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
) -> Result<Html<String>, PageError> {
    let overview = control_room::overview(&app).await?;
    let now = app.clock.now();
    let page = pages::control_room(
        "Pipelines",
        &nav(&app, &caller),
        overview_markup(&app, now, &overview, acts(&caller)),
    );
    Ok(Html(page.into_string()))
}

/// The session's CSRF token when the caller is an approver: the buttons are theirs to press
/// (the server still checks each one). Viewers and the API token get no buttons.
fn acts(caller: &Caller) -> Option<&str> {
    match caller.role {
        Role::Approver => caller.csrf.as_deref(),
        Role::Viewer => None,
    }
}

fn overview_markup(app: &App, now: Timestamp, overview: &Overview, csrf: Option<&str>) -> Markup {
    html! {
        h1 { "Pipelines" }
        @for pipeline in &overview.pipelines {
            (pipeline_section(app, now, pipeline, csrf))
        }
    }
}

/// The newest of `p`'s runs shown whose approval for `env` waits: what Release releases.
fn waiting_for<'a>(p: &'a PipelineView, env: &EnvName) -> Option<&'a RunView> {
    p.runs.iter().find(|r| {
        r.stages
            .iter()
            .any(|s| s.kind == StageKind::Approval && s.env.as_ref() == Some(env) && s.status == StageStatus::Waiting)
    })
}

fn pipeline_section(app: &App, now: Timestamp, p: &PipelineView, csrf: Option<&str>) -> Markup {
    html! {
        section {
            h2 {
                a href=(app.link(&format!("/pipelines/{}", p.name))) { (p.name) }
                " " span.muted { (p.repo) " · " (p.branch) " · " (mode_words(p.mode)) }
            }
            @if let Some(episode) = &p.cadence {
                @if let (Some(raised_at), Some(lag)) = (episode.raised_at, &episode.lag) {
                    p.warning.bad {
                        strong { "Release cadence: " }
                        (lag.commits) " commits not in " (p.environments.last().map(|e| e.name.as_str()).unwrap_or(""))
                        " since " (pages::moment(now, lag.since))
                        "; alarm raised " (pages::moment(now, raised_at)) "."
                    }
                }
            }
            div.envs {
                @for env in &p.environments { (env_card(app, now, p, env, csrf)) }
            }
            h3 { "Newest runs" }
            @if p.runs.is_empty() {
                p.muted { "No runs yet: the first push to " (p.branch) " opens one." }
            } @else {
                table {
                    tr { th { "Commit" } th { "Stages" } th { "Status" } th { "Pushed" } }
                    @for run in &p.runs { (run_row(app, now, run, csrf)) }
                }
            }
        }
    }
}

fn mode_words(mode: crate::domain::Mode) -> &'static str {
    match mode {
        crate::domain::Mode::Delivery => "continuous delivery (approval before production)",
        crate::domain::Mode::Deployment => "continuous deployment",
    }
}

fn env_card(app: &App, now: Timestamp, p: &PipelineView, env: &EnvView, csrf: Option<&str>) -> Markup {
    let release = waiting_for(p, &env.name);
    html! {
        div.env {
            h3 { (env.name) }
            @match &env.current {
                Some(current) => {
                    p {
                        "Runs " a href=(app.link(&format!("/runs/{}", current.release.run))) { code { (current.release.sha.short()) } }
                        @if let Some(message) = &current.message { " " (message) }
                        @if let Some(author) = &current.author { " " span.muted { "— " (author) } }
                    }
                    p.muted {
                        "Since " (pages::moment(now, current.release.at))
                        @if let Some(artifact) = &current.release.artifact { " · " code { (artifact) } }
                        @if !current.approved_by.is_empty() {
                            " · approved by " (current.approved_by.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "))
                        }
                    }
                    p {
                        @if let Some(smoke) = current.smoke { span class={ "box " (smoke.as_str()) } { "smoke " (smoke.as_str()) } " " }
                        @if let Some(bake) = current.bake { span class={ "box " (bake.as_str()) } { "bake " (bake.as_str()) } }
                    }
                }
                None => { p.muted { "Nothing released here yet." } }
            }
            @if let Some(manual) = &env.manual {
                p.warning { "Runs a " (manual.describe()) ", " (pages::moment(now, manual.at))
                    " (slipway deploy); the pipeline's next deploy replaces it." }
            }
            @if let Some(lease) = &env.lease {
                p { "Deploying: " a href=(app.link(&format!("/runs/{}", lease.run))) { (lease.run) } }
            }
            @if let Some(operator) = &env.operator {
                p { "Deploying by hand: " (operator.by) " deploys " code { (operator.sha.short()) } " from their machine (slipway deploy)" }
            }
            @if !env.waiting.is_empty() {
                p { (env.waiting.len()) " waiting: "
                    @for (i, w) in env.waiting.iter().enumerate() {
                        @if i > 0 { ", " }
                        a href=(app.link(&format!("/runs/{}", w.run))) { (w.run) }
                    }
                }
            }
            @if let Some(held) = &env.held {
                p.warning { "Held: " (held.reason)
                    @if let Some(until) = held.until { " — until " time datetime=(until) { (until) } }
                }
            }
            @if let Some(ahead) = &env.ahead_of_next {
                p.muted { (ahead.runs) " run" @if ahead.runs != 1 { "s" } " ahead of the next environment ("
                    (pages::span_words(ahead.age)) " newer)" }
            }
            @if let (Some(csrf), Some(run)) = (csrf, release) {
                form method="post" action=(app.link(&format!("/runs/{}/decision", run.entry.id))) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="env" value=(env.name);
                    input type="hidden" name="decision" value="approve";
                    button type="submit" class="approve" { "Release " (run.entry.sha.short()) " to " (env.name) }
                }
            }
            @if let (Some(csrf), Some(current), Some(previous)) = (csrf, &env.current, &env.previous) {
                form method="post" action=(app.link(&format!("/pipelines/{}/environments/{}/rollback", p.name, env.name))) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="from" value=(current.release.run);
                    input type="hidden" name="to" value=(previous.run);
                    button type="submit" class="reject" { "Roll back to " (previous.sha.short()) }
                }
            }
        }
    }
}

fn run_row(app: &App, now: Timestamp, run: &RunView, csrf: Option<&str>) -> Markup {
    let e = &run.entry;
    html! {
        tr {
            td { a href=(app.link(&format!("/runs/{}", e.id))) { code { (e.sha.short()) } } " " (e.message) br; span.muted { (e.author) } }
            td { ul.stages { @for s in &run.stages { li class={ "box " (s.status.as_str()) } title=(s.status.as_str()) { (s.label) } } } }
            td.nowrap {
                (e.status.as_str().replace('_', " "))
                @if let (Some(csrf), true) = (csrf, run.retriable) {
                    (retry_form(app, &e.id, csrf))
                }
            }
            td { (pages::moment(now, e.created_at)) }
        }
    }
}

/// The Retry button of a run that failed at a deploy, smoke checks or bake.
pub(super) fn retry_form(app: &App, run: &crate::domain::RunId, csrf: &str) -> Markup {
    html! {
        form method="post" action=(app.link(&format!("/runs/{run}/retry"))) {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { "Retry" }
        }
    }
}

/// `GET /approvals`: every approval waiting for people.
pub(super) async fn approvals_page(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
) -> Result<Html<String>, PageError> {
    let pending = control_room::pending_approvals(&app).await?;
    let now = app.clock.now();
    let csrf = acts(&caller);
    let body = html! {
        h1 { "Waiting for approval" }
        @if pending.is_empty() { p.muted { "Nothing waits for an approval now." } }
        @for p in &pending { (pending_section(&app, now, p, csrf)) }
        @if csrf.is_none() && !pending.is_empty() { p.muted { "You can see these, but only approvers decide." } }
    };
    Ok(Html(
        pages::control_room("Approvals", &nav(&app, &caller), body).into_string(),
    ))
}

fn pending_section(app: &App, now: Timestamp, p: &Pending, csrf: Option<&str>) -> Markup {
    let run = &p.run;
    html! {
        section.env {
            h2 {
                (run.pipeline()) ": " a href=(app.link(&format!("/runs/{}", run.id))) { code { (run.sha.short()) } }
                " to " (p.env)
            }
            p { (run.message) " " span.muted { "— " (run.author) } }
            p {
                strong { (p.approved_by.len()) " of " (p.required) } " approvals"
                @if !p.approved_by.is_empty() {
                    " (" (p.approved_by.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")) ")"
                }
                " · asked: " (p.asked.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "))
                " · requested " (pages::moment(now, p.requested_at))
                " · expires " time datetime=(p.expires_at) title=(p.expires_at) { "in " (pages::span_words(now.duration_until(p.expires_at))) }
            }
            @if let Some((up, newer)) = &p.brings.newer_upstream {
                p.warning { (up) " already runs a newer commit, " code { (newer.sha.short()) } "." }
            }
            p {
                @match &p.brings.current {
                    Some(c) => { (p.env) " runs " code { (c.sha.short()) } " now. Approving brings:" }
                    None => { "Nothing was released to " (p.env) " yet. Approving brings:" }
                }
            }
            ul {
                @if p.brings.more { li.muted { "… and older commits, too many to list here" } }
                @for r in &p.brings.runs { li { code { (r.sha.short()) } " " (r.message) " — " (r.author) } }
            }
            @if let Some(csrf) = csrf {
                form method="post" action=(app.link(&format!("/runs/{}/decision", run.id))) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="env" value=(p.env);
                    p { label { "Comment (optional)" br; textarea name="comment" maxlength="2000" {} } }
                    button type="submit" name="decision" value="approve" class="approve" { "Approve" }
                    button type="submit" name="decision" value="reject" class="reject" { "Reject" }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// The page `limit` and `before` ask for (`default` runs when no limit is given), or what is
/// wrong with them.
pub(super) fn page_of(limit: Option<&str>, before: Option<&str>, default: usize) -> Result<(usize, Cursor), String> {
    let limit = match limit.filter(|l| !l.is_empty()) {
        None => default,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=run_index::MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(format!(
                    "limit must be a number from 1 to {}, not {}",
                    run_index::MAX_PAGE,
                    crate::domain::clip(l)
                ));
            }
        },
    };
    let cursor = match before.filter(|b| !b.is_empty()) {
        None => Cursor::default(),
        Some(b) => b.parse().map_err(|e: String| format!("before: {e}"))?,
    };
    Ok((limit, cursor))
}

fn pipeline_named<'a>(app: &'a App, name: &str) -> Result<&'a PipelineConfig, (StatusCode, String)> {
    let name = PipelineName::parse(name).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    app.config
        .pipeline(&name)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no pipeline {name} is configured")))
}

/// `GET /pipelines/{name}?limit=&before=`: a page of the pipeline's runs, newest first, and
/// each environment's releases and rollbacks.
pub(super) async fn pipeline_page(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Html<String>, PageError> {
    let config = pipeline_named(&app, &name).map_err(|(status, e)| PageError::new(status, "No such pipeline", e))?;
    let (limit, cursor) = page_of(q.limit.as_deref(), q.before.as_deref(), HISTORY_PAGE)
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, "Bad page", e))?;
    let history = control_room::history(&app, config, &cursor, limit).await?;
    // The delivery figures head the first page only: older pages read what they show.
    let figures = if cursor.0.is_empty() {
        delivery::pipeline_windows(&app, config, &DELIVERY_WINDOWS).await?
    } else {
        Vec::new()
    };
    let now = app.clock.now();
    let title = format!("Pipeline {}", history.name);
    Ok(Html(
        pages::control_room(
            &title,
            &nav(&app, &caller),
            history_markup(
                &app,
                now,
                &history,
                limit,
                acts(&caller),
                html! { @if !figures.is_empty() { (delivery_markup(&app, &history.name, &figures)) } },
            ),
        )
        .into_string(),
    ))
}

/// The windows, in days, a pipeline's page shows its delivery figures over.
const DELIVERY_WINDOWS: [u32; 3] = [7, 30, 90];

/// DORA's four keys over each window, and the 30 days' deploys drawn.
fn delivery_markup(app: &App, pipeline: &PipelineName, figures: &[delivery::Figures]) -> Markup {
    let spread = |s: &Option<delivery::Spread>| match s {
        Some(s) => html! { (pages::span_words(s.median)) span.muted { " (p90 " (pages::span_words(s.p90)) ")" } },
        None => html! { span.muted { "—" } },
    };
    let env = &figures[0].env;
    html! {
        h2 { "Delivery to " (env) }
        table {
            tr { th { "Last" } th { "Deploys a day" } th { "Lead time for changes" } th { "Change failure rate" } th { "Time to restore" } }
            @for f in figures {
                tr {
                    td.nowrap { (f.days) " days" }
                    td { (format!("{:.2}", f.deployments_per_day)) span.muted { " (" (f.deployments) ")" } }
                    td { (spread(&f.lead_time)) }
                    td { @match f.change_failure_rate {
                        Some(rate) => { (format!("{:.0}%", rate * 100.0)) span.muted { " (" (f.failed_deployments) " of " (f.deployments) ")" } },
                        None => span.muted { "—" },
                    } }
                    td { (spread(&f.time_to_restore)) @if f.unrestored > 0 { " " span.bad { (f.unrestored) " not restored" } } }
                }
            }
        }
        @if let Some(month) = figures.iter().find(|f| f.days == 30) {
            figure {
                (super::charts::daily_deploys(&month.daily))
                figcaption.muted { "Deploys to " (env) " each day, the last 30 days. "
                    a href=(app.link(&format!("/api/pipelines/{pipeline}/metrics?days=30"))) { "As JSON" } }
            }
        }
    }
}

/// A pipeline's page: `delivery` (its figures, on the first page), its runs, its releases.
fn history_markup(
    app: &App,
    now: Timestamp,
    h: &History,
    limit: usize,
    csrf: Option<&str>,
    delivery: Markup,
) -> Markup {
    html! {
        h1 { (h.name) " " span.muted { (h.repo) " · " (h.branch) } }
        (delivery)
        h2 { "Runs" }
        @if h.runs.is_empty() { p.muted { "No runs yet." } }
        @else {
            table {
                tr { th { "Commit" } th { "Status" } th { "At" } th { "Pushed" } th { "Took" } }
                @for r in &h.runs {
                    tr {
                        td { a href=(app.link(&format!("/runs/{}", r.id))) { code { (r.sha.short()) } } " " (r.message) br; span.muted { (r.author) } }
                        td.nowrap class=(status_class(r.status)) { (r.status.as_str().replace('_', " ")) }
                        td.nowrap { (r.current_stage.as_deref().unwrap_or("")) }
                        td { (pages::moment(now, r.created_at)) }
                        td.nowrap { @if r.status.is_finished() { (pages::span_words(r.created_at.duration_until(r.updated_at))) } }
                    }
                }
            }
            @if let Some(next) = &h.next {
                p { a href=(app.link(&format!("/pipelines/{}?limit={limit}&before={next}", h.name))) { "Older runs →" } }
            }
        }
        h2 { "Releases" }
        div.envs { @for env in &h.environments { (releases_card(app, now, &h.name, env, csrf)) } }
    }
}

fn status_class(status: crate::domain::RunStatus) -> &'static str {
    use crate::domain::RunStatus::*;
    match status {
        Released => "ok",
        Failed | Rejected | Expired | RolledBack => "bad",
        _ => "muted",
    }
}

fn releases_card(app: &App, now: Timestamp, pipeline: &PipelineName, env: &EnvHistory, csrf: Option<&str>) -> Markup {
    let action = app.link(&format!("/pipelines/{pipeline}/environments/{}/rollback", env.name));
    html! {
        div.env {
            h3 { (env.name) }
            @if env.releases.is_empty() { p.muted { "Nothing released here yet." } }
            ul {
                @for line in &env.releases {
                    li {
                        a href=(app.link(&format!("/pipelines/{pipeline}/releases/{}/{}", env.name, line.release.at.as_second()))) { code { (line.release.sha.short()) } }
                        @if line.rollback { " " span.bad { "rollback" } }
                        @let is_current = env.current.as_ref().is_some_and(|c| c.run == line.release.run);
                        @if is_current && env.current.as_ref().is_some_and(|c| c.at == line.release.at) { " " strong { "now" } }
                        " " span.muted { (pages::moment(now, line.release.at)) }
                        @if let (Some(csrf), Some(current), false) = (csrf, &env.current, is_current) {
                            form.inline method="post" action=(action) {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="from" value=(current.run);
                                input type="hidden" name="to" value=(line.release.run);
                                button type="submit" class="small" { "Roll back to this" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /pipelines/{name}/releases/{env}/{n}`: one release of `env` — the one that began
/// to run there in second `n` of the Unix epoch (the links carry it): the commits it
/// shipped, who approved it, its deploy's phases and checks, and whether it failed or was
/// rolled back. Reads the release log's month, the run, and the runs it shipped.
pub(super) async fn release_page(
    axum::extract::State(app): AppState,
    SignedIn(caller): SignedIn,
    Path((name, env, n)): Path<(String, String, String)>,
) -> Result<Html<String>, PageError> {
    let config = pipeline_named(&app, &name).map_err(|(status, e)| PageError::new(status, "No such pipeline", e))?;
    let not_found = |what: String| PageError::new(StatusCode::NOT_FOUND, "No such release", what);
    let env = EnvName::parse(&env)
        .ok()
        .filter(|e| config.environments.iter().any(|c| &c.name == e))
        .ok_or_else(|| not_found(format!("{} has no environment {}", config.name, clip(&env))))?;
    let second: i64 = n.parse().map_err(|_| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Bad release",
            format!("a release is named by the second it began, not {}", clip(&n)),
        )
    })?;
    let logged = release_log::release_at(&app, &config.name, &env, second)
        .await?
        .ok_or_else(|| not_found(format!("{env} began no release at {second}")))?;
    let run = app
        .load(&logged.run)
        .await?
        .map(|(run, _)| run)
        .ok_or_else(|| not_found(format!("run {} is gone", logged.run)))?;
    let now = app.clock.now();
    // The commits it shipped, with their messages from the runs that carried them.
    let (record, _) = app.environment(&config.name, &env).await?;
    let others = match run.release_in(&env).filter(|r| r.at == logged.at && logged.is_deploy()) {
        Some(release) => release_log::shipped_runs(&app, &run, &record, &release, None).await?.0,
        None => Vec::new(),
    };
    let commits: Vec<&crate::domain::PushedCommit> = others
        .iter()
        .chain(std::iter::once(&run))
        .flat_map(|r| r.carried.commits.iter())
        .filter(|c| logged.shipped.iter().any(|s| s.sha == c.sha))
        .collect();
    let messages: Vec<&str> = commits.iter().map(|c| c.message.as_str()).collect();
    let tickets = crate::trackers::mentioned(config, &messages);
    let title = format!("{} to {env}", run.sha.short());
    let body = html! {
        h1 { (config.name) ": " code { (run.sha.short()) } " to " (env) " "
            span.muted { (pages::moment(now, logged.at)) } }
        @if let Some(by) = &logged.put_back_by {
            p.warning { "A rollback put this release back: run " a href=(app.link(&format!("/runs/{by}"))) { (by) } " was rolled back." }
        }
        @if let Some(failed) = logged.failed_at {
            p.warning.bad { "Found failing " (pages::moment(now, failed)) ": its checks failed or it was rolled back." }
        }
        table {
            tr { th { "Run" } td { a href=(app.link(&format!("/runs/{}", run.id))) { (run.id) } } }
            tr { th { "Artifact" } td { code { (run.build.artifact.as_deref().unwrap_or("—")) } } }
            @if let Some(approval) = run.stage(StageKind::Approval, Some(&env)).and_then(|s| s.approval.as_ref()) {
                tr { th { "Approved by" } td { (approval.approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>().join(", ")) } }
            }
        }
        @if logged.is_deploy() {
            h2 { "What shipped (" (logged.shipped.len()) @if logged.shipped_more { "+" }
                @if logged.shipped.len() == 1 && !logged.shipped_more { " commit)" } @else { " commits)" } }
            ul {
                @for commit in commits.iter().rev() {
                    li { code { (commit.sha.short()) } " " (commit.message.lines().next().unwrap_or(""))
                        span.muted { " — " (commit.author) } }
                }
            }
            @if logged.shipped.len() > commits.len() || logged.shipped_more {
                p.muted { "Older commits it shipped are not listed here"
                    @if let Some(url) = run.carried.compare_url.as_ref() { ": " a href=(url) { "compare on the git host" } } "." }
            }
            @if !tickets.is_empty() {
                h2 { "Tickets" }
                p { (tickets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")) }
            }
            h2 { "Deploy and checks" }
            table {
                tr { th { "Stage" } th { "Status" } th { "Details" } }
                @for stage in run.stages.iter().filter(|s| s.env.as_ref() == Some(&env) && s.kind != StageKind::Approval) {
                    tr {
                        td.nowrap { (stage.label()) }
                        td.nowrap { span class={ "box " (stage.status.as_str()) } { (stage.status.as_str()) } }
                        td {
                            (stage.summary.as_deref().unwrap_or(""))
                            @if !stage.phases.is_empty() {
                                ul { @for phase in &stage.phases { li { (phase.phase) ": " (format!("{:?}", phase.status).to_lowercase()) " — " (phase.detail) } } }
                            }
                        }
                    }
                }
            }
        }
        p.muted { a href=(app.link(&format!("/pipelines/{}", config.name))) { "All of " (config.name) "'s releases" } }
    };
    Ok(Html(
        pages::control_room(&title, &nav(&app, &caller), body).into_string(),
    ))
}

/// `GET /api/pipelines`: what `/` shows.
pub(super) async fn api_overview(
    axum::extract::State(app): AppState,
    _caller: ApiCaller,
) -> Result<Json<Overview>, ApiError> {
    Ok(Json(control_room::overview(&app).await?))
}

/// `GET /api/pipelines/{name}?limit=&before=`: what `/pipelines/{name}` shows.
pub(super) async fn api_pipeline(
    axum::extract::State(app): AppState,
    _caller: ApiCaller,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<History>, ApiError> {
    let config = pipeline_named(&app, &name).map_err(|(status, e)| ApiError::new(status, e))?;
    let (limit, cursor) = page_of(q.limit.as_deref(), q.before.as_deref(), HISTORY_PAGE)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(control_room::history(&app, config, &cursor, limit).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct MetricsQuery {
    days: Option<String>,
}

/// The window `days` asks for (30 when not given), or what is wrong with it.
pub(super) fn days_of(days: Option<&str>) -> Result<u32, String> {
    match days.filter(|d| !d.is_empty()) {
        None => Ok(30),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=delivery::MAX_DAYS).contains(d))
            .ok_or_else(|| {
                format!(
                    "days must be a number from 1 to {}, not {}",
                    delivery::MAX_DAYS,
                    clip(raw)
                )
            }),
    }
}

/// `GET /api/pipelines/{name}/metrics?days=30`: DORA's four keys for the pipeline's last
/// environment over the last `days` days ([`delivery`]).
pub(super) async fn api_metrics(
    axum::extract::State(app): AppState,
    _caller: ApiCaller,
    Path(name): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> Result<Json<Value>, ApiError> {
    let config = pipeline_named(&app, &name).map_err(|(status, e)| ApiError::new(status, e))?;
    let days = days_of(q.days.as_deref()).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let figures = delivery::pipeline_figures(&app, config, days).await?;
    Ok(Json(json!({ "pipeline": config.name, "metrics": figures })))
}

/// `GET /api/environments`: every environment of every pipeline, as `/` shows them.
pub(super) async fn api_environments(
    axum::extract::State(app): AppState,
    _caller: ApiCaller,
) -> Result<Json<Value>, ApiError> {
    let mut all = Vec::new();
    for pipeline in &app.config.pipelines {
        for env in control_room::environments(&app, pipeline, &[]).await? {
            let mut value = serde_json::to_value(&env).unwrap_or(Value::Null);
            if let Some(obj) = value.as_object_mut() {
                obj.insert("pipeline".into(), json!(pipeline.name));
            }
            all.push(value);
        }
    }
    Ok(Json(json!({ "environments": all })))
}

/// `GET /api/approvals`: every approval waiting for people, the soonest to expire first.
pub(super) async fn api_approvals(
    axum::extract::State(app): AppState,
    _caller: ApiCaller,
) -> Result<Json<Value>, ApiError> {
    let pending = control_room::pending_approvals(&app).await?;
    Ok(Json(json!({ "approvals": pending })))
}

//! HTML pages. maud escapes every interpolated value, so commit messages and names from
//! git hosts cannot inject markup.

use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};

use crate::domain::{EnvName, Run, StageKind, StageStatus};

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd}\
code{background:#f3f3f3;padding:0 .25rem;overflow-wrap:anywhere}td{overflow-wrap:anywhere}.ok{color:#116329}.bad{color:#a40e26}.muted{color:#57606a}\
button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem;border-radius:6px;border:1px solid #888;cursor:pointer}\
.approve{background:#1f883d;color:#fff;border-color:#1f883d}.reject{background:#cf222e;color:#fff;border-color:#cf222e}\
.chosen{outline:3px solid #0969da}textarea{width:100%;min-height:4rem}";

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                meta name="referrer" content="no-referrer";
                title { (title) " · slipway" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
}

/// A page that only says something: errors and outcomes.
pub(super) fn message(title: &str, message: &str) -> Markup {
    layout(title, html! { h1 { (title) } p { (message) } })
}

fn status_class(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Succeeded => "ok",
        StageStatus::Failed | StageStatus::Rejected | StageStatus::Expired => "bad",
        _ => "muted",
    }
}

fn commit_summary(run: &Run) -> Markup {
    html! {
        table {
            tr { th { "Repository" } td { (run.repo) " " span.muted { "(" (run.branch) ")" } } }
            tr { th { "Commit" } td {
                @if let Some(url) = &run.commit.url { a href=(url) { code { (run.sha.short()) } } } @else { code { (run.sha.short()) } }
            } }
            tr { th { "Author" } td { (run.commit.author_name) @if let Some(login) = &run.commit.author_login { " (" (login) ")" } } }
            tr { th { "Message" } td { (run.commit.message.lines().next().unwrap_or("")) } }
            @if let Some(artifact) = &run.build.artifact { tr { th { "Artifact" } td { code { (artifact) } } } }
            @if let Some(url) = &run.build.url { tr { th { "Build" } td { a href=(url) { (url) } } } }
        }
    }
}

fn environments_and_checks(run: &Run) -> Markup {
    let deployed = run.deployed_to();
    html! {
        h2 { "Where it runs now" }
        @if deployed.is_empty() { p.muted { "Not deployed anywhere yet." } }
        @else { p { "This commit is running on " @for (i, env) in deployed.iter().enumerate() { @if i > 0 { ", " } strong { (env) } } "." } }
        @for stage in run.stages.iter().filter(|s| s.kind == StageKind::Smoke && !s.checks.is_empty()) {
            h3 { "Smoke checks on " (stage.env.as_ref().map(EnvName::as_str).unwrap_or("")) }
            table {
                @for check in &stage.checks {
                    tr {
                        td class=(if check.passed { "ok" } else { "bad" }) { @if check.passed { "✔ " } @else { "✘ " } (check.name) }
                        td { (check.detail) }
                    }
                }
            }
        }
    }
}

/// What the approver sees on opening a link. The buttons POST; the GET changes nothing.
pub(super) struct Confirm<'a> {
    pub run: &'a Run,
    pub env: &'a EnvName,
    pub approver: &'a str,
    pub expires_at: Timestamp,
    /// The decision the link was for (`?decision=`), highlighted.
    pub preselect: Option<&'a str>,
    /// What the environment runs now.
    pub current: Option<&'a crate::domain::Release>,
    /// The runs this promotion brings to the environment since its current release, oldest
    /// first, this one last.
    pub carries: &'a [Run],
}

pub(super) fn confirm(c: &Confirm<'_>) -> Markup {
    let chosen = |d: &str| if c.preselect == Some(d) { " chosen" } else { "" };
    layout(
        &format!("Promote {} to {}?", c.run.sha.short(), c.env),
        html! {
            h1 { "Promote " code { (c.run.sha.short()) } " of " (c.run.repo) " to " (c.env) "?" }
            (commit_summary(c.run))
            (environments_and_checks(c.run))
            h2 { "What this brings to " (c.env) }
            p {
                @match c.current {
                    Some(current) => { (c.env) " runs " code { (current.sha.short()) } " now. Approving brings these commits:" }
                    None => { "Nothing was released to " (c.env) " yet. Approving brings these commits:" }
                }
            }
            ul {
                @for run in c.carries {
                    li { code { (run.sha.short()) } " " (run.commit.message.lines().next().unwrap_or("")) " — " (run.commit.author_login.as_deref().unwrap_or(&run.commit.author_name)) }
                }
            }
            h2 { "Your decision, " (c.approver) }
            form method="post" {
                p { label { "Comment (optional)" br; textarea name="comment" maxlength="2000" {} } }
                button type="submit" name="decision" value="approve" class={ "approve" (chosen("approve")) } { "Approve" }
                button type="submit" name="decision" value="reject" class={ "reject" (chosen("reject")) } { "Reject" }
            }
            p.muted { "This link is yours alone and works until " (c.expires_at) ". Opening it changes nothing; only a button does." }
        },
    )
}

/// A run's stages and history.
pub(super) fn run_page(run: &Run) -> Markup {
    let status = run.status().as_str();
    layout(
        &format!("Run {}", run.sha.short()),
        html! {
            h1 { (run.pipeline) ": " code { (run.sha.short()) } " — " (status.replace('_', " ")) }
            (commit_summary(run))
            h2 { "Stages" }
            table {
                tr { th { "Stage" } th { "Status" } th { "Details" } }
                @for stage in &run.stages {
                    tr {
                        td { (stage.label()) }
                        td class=(status_class(stage.status)) { (stage.status.as_str()) }
                        td { (stage.summary.as_deref().unwrap_or("")) }
                    }
                }
            }
            (environments_and_checks(run))
            @for stage in run.stages.iter().filter(|s| s.output.as_deref().is_some_and(|o| !o.is_empty())) {
                details { summary { "Output of " (stage.label()) } pre { (stage.output.as_deref().unwrap_or("")) } }
            }
            h2 { "History" }
            ul { @for entry in &run.history { li { span.muted { (entry.at) } " — " (entry.actor) ": " (entry.what) } } }
            p.muted { a href={ "/api/runs/" (run.id) } { "This run as JSON" } }
        },
    )
}

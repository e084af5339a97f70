//! HTML pages. maud escapes every interpolated value, so commit messages and names from
//! git hosts cannot inject markup.

use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};

use crate::domain::{EnvName, PipelineName, Release, Run, RunId, StageKind, StageStatus};

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd}\
code{background:#f3f3f3;padding:0 .25rem;overflow-wrap:anywhere}td{overflow-wrap:anywhere}.ok{color:#116329}.bad{color:#a40e26}.muted{color:#57606a}\
button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.5rem;border-radius:6px;border:1px solid #888;cursor:pointer}\
.approve{background:#1f883d;color:#fff;border-color:#1f883d}.reject{background:#cf222e;color:#fff;border-color:#cf222e}\
.chosen{outline:3px solid #0969da}textarea{width:100%;min-height:4rem}\
.warning{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .75rem;border-radius:6px}";

/// The Content-Security-Policy sent with every answer: nothing may load, no script may run;
/// the one inline stylesheet ([`STYLE`]) is allowed by its SHA-256; forms post only to
/// slipway; no page may be framed.
pub(super) fn content_security_policy() -> &'static str {
    static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let style = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE.as_bytes()));
        format!(
            "default-src 'none'; style-src 'sha256-{style}'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
    });
    &POLICY
}

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

/// A page that says something and links to where to go on.
pub(super) fn message_with_link(title: &str, message: &str, href: &str, label: &str) -> Markup {
    layout(
        title,
        html! { h1 { (title) } p { (message) } p { a href=(href) { (label) } } },
    )
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
    /// first, this one last (from the index of runs).
    pub carries: &'a [crate::views::RunEntry],
    /// Older runs it brings were not looked at: too many to list.
    pub carries_more: bool,
    /// The environment before this one, when it already runs a newer commit than this run:
    /// approving then releases an older commit than it runs.
    pub newer_upstream: Option<(&'a EnvName, &'a Release)>,
}

pub(super) fn confirm(c: &Confirm<'_>) -> Markup {
    let chosen = |d: &str| if c.preselect == Some(d) { " chosen" } else { "" };
    layout(
        &format!("Promote {} to {}?", c.run.sha.short(), c.env),
        html! {
            h1 { "Promote " code { (c.run.sha.short()) } " of " (c.run.repo) " to " (c.env) "?" }
            @if let Some((upstream, newer)) = c.newer_upstream {
                div.warning role="alert" {
                    strong { (upstream) " already runs a newer commit: " }
                    a href={ "/runs/" (newer.run) } { code { (newer.sha.short()) } }
                    ". Approving releases " code { (c.run.sha.short()) } " to " (c.env)
                    ", an older commit than " (upstream) " runs now. To release the newer one, wait for its own approval request."
                }
            }
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
                @if c.carries_more {
                    li.muted { "… and older commits, too many to list here" }
                }
                @for run in c.carries {
                    li { code { (run.sha.short()) } " " (run.message) " — " (run.author) }
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

/// What the rollback confirmation page shows: the environment, what runs there now, and
/// the release a rollback goes back to. The button POSTs; the GET changes nothing.
pub(super) struct RollbackConfirm<'a> {
    /// The run the environment runs now: the link's.
    pub run: &'a Run,
    pub env: &'a EnvName,
    /// The release before it, where the rollback goes.
    pub to: &'a Release,
    /// That release's run, if it is still stored.
    pub to_run: Option<&'a Run>,
    pub approver: &'a str,
    pub expires_at: Timestamp,
}

fn subject(run: &Run) -> &str {
    run.commit.message.lines().next().unwrap_or("")
}

pub(super) fn rollback_confirm(c: &RollbackConfirm<'_>) -> Markup {
    let (env, now, to) = (c.env, c.run.sha.short(), c.to.sha.short());
    layout(
        &format!("Roll {env} back to {to}?"),
        html! {
            h1 { "Roll " (env) " of " (c.run.repo) " back?" }
            table {
                tr { th { "Environment" } td { (env) " " span.muted { "(pipeline " (c.run.pipeline) ")" } } }
                tr { th { "Runs now" } td { a href={ "/runs/" (c.run.id) } { code { (now) } } " " (subject(c.run)) } }
                tr { th { "Goes back to" } td {
                    a href={ "/runs/" (c.to.run) } { code { (to) } }
                    @if let Some(run) = c.to_run { " " (subject(run)) }
                    " " span.muted { "(released there " (c.to.at) ")" }
                } }
                @if let Some(artifact) = &c.to.artifact { tr { th { "Artifact" } td { code { (artifact) } } } }
            }
            p {
                "slipway redeploys " code { (to) } " to " (env) " through backup, migrate and release, then runs "
                (env) "'s smoke checks; if they fail, the backup is restored. The run of " code { (now) } " ends rolled back."
            }
            form method="post" {
                button type="submit" class="reject" { "Roll " (env) " back to " (to) }
            }
            p.muted { "This link is " (c.approver) "'s and works until " (c.expires_at) ". Opening it changes nothing; only the button does." }
        },
    )
}

/// What the run page says about rolling back.
pub(super) struct RunRollback {
    pub pipeline: PipelineName,
    /// The environments the run is the current release of, each with the release a rollback
    /// goes back to.
    pub current_in: Vec<(EnvName, Option<Release>)>,
    /// What the rollback link the page was opened with (`?token=`) allows.
    pub link: Option<RollbackLink>,
}

/// A rollback link opened on the run page.
pub(super) enum RollbackLink {
    /// A valid link for this run, and the environment still runs it: offer the action.
    Usable {
        env: EnvName,
        /// The confirmation page.
        confirm: String,
        /// Where the rollback goes.
        previous: Release,
        approver: String,
        expires_at: Timestamp,
    },
    /// A valid link, but the environment runs something else now.
    Moved {
        env: EnvName,
        current: Option<RunId>,
    },
    /// A valid link, but the environment has no release of an older commit to go back to.
    NothingOlder {
        env: EnvName,
    },
    Expired {
        env: EnvName,
        at: Timestamp,
    },
    /// Not a rollback link of this run: the reason.
    Invalid {
        why: String,
    },
}

fn rollback_section(r: &RunRollback) -> Markup {
    let command = |env: &str| format!("slipway rollback --env {env} --pipeline {}", r.pipeline);
    // Named explicitly: without `--to`, the CLI goes to the release before the current one,
    // which may be a newer commit that was rolled back.
    let command_to = |env: &EnvName, to: &Release| format!("{} --to {}", command(env.as_str()), to.run);
    // An unusable link names the CLI command itself when the list below does not.
    let fallback = match &r.link {
        Some(RollbackLink::Expired { env, .. }) if !r.current_in.iter().any(|(e, _)| e == env) => {
            Some(command(env.as_str()))
        }
        Some(RollbackLink::Invalid { .. }) if r.current_in.is_empty() => Some(command("ENV")),
        _ => None,
    };
    html! {
        @if r.link.is_some() || !r.current_in.is_empty() {
            h2 { "Roll back" }
            @match &r.link {
                Some(RollbackLink::Usable { env, confirm, previous, approver, expires_at }) => {
                    p {
                        a href=(confirm) { strong { "Roll back " (env) } }
                        " to " code { (previous.sha.short()) }
                        " — opens a confirmation page; nothing changes until you confirm there."
                    }
                    p.muted { "This rollback link is " (approver) "'s and works until " (expires_at) "." }
                }
                Some(RollbackLink::Moved { env, current }) => {
                    p.bad {
                        "This rollback link no longer applies: " (env) " does not run this commit any more"
                        @if let Some(current) = current { " (it runs " a href={ "/runs/" (current) } { (current) } " now)" }
                        ". Nothing can be rolled back from here."
                    }
                }
                Some(RollbackLink::NothingOlder { env }) => {
                    p.muted { (env) " has no release of an older commit to go back to, so there is nothing to roll back to." }
                }
                Some(RollbackLink::Expired { env, at }) => {
                    p.bad { "This rollback link expired at " (at) ", so it can no longer roll " (env) " back. Roll back with the CLI instead." }
                }
                Some(RollbackLink::Invalid { why }) => {
                    p.bad { "This rollback link is not valid: " (why) ". Roll back with the CLI instead." }
                }
                None => {}
            }
            @if let Some(fallback) = &fallback { pre { code { (fallback) } } }
            @for (env, previous) in &r.current_in {
                @match previous {
                    Some(previous) => {
                        p {
                            "This commit is what " strong { (env) } " runs now. To roll it back to "
                            code { (previous.sha.short()) } " from a shell where slipway is set up:"
                        }
                        pre { code { (command_to(env, previous)) } }
                    }
                    None => {
                        p.muted { "This commit is what " strong { (env) } " runs now; there is no release of an older commit to roll back to." }
                    }
                }
            }
        }
    }
}

/// A run's stages and history, and how to roll back where it is the current release.
pub(super) fn run_page(run: &Run, rollback: &RunRollback) -> Markup {
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
            (rollback_section(rollback))
            @for stage in run.stages.iter().filter(|s| s.output.as_deref().is_some_and(|o| !o.is_empty())) {
                details { summary { "Output of " (stage.label()) } pre { (stage.output.as_deref().unwrap_or("")) } }
            }
            h2 { "History" }
            ul { @for entry in &run.history { li { span.muted { (entry.at) } " — " (entry.actor) ": " (entry.what) } } }
            p.muted { a href={ "/api/runs/" (run.id) } { "This run as JSON" } }
        },
    )
}

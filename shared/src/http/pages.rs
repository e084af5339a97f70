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
.warning{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .75rem;border-radius:6px}\
body.wide{max-width:78rem}nav{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;border-bottom:1px solid #ddd;padding-bottom:.5rem}\
nav form{margin-left:auto}nav button{font-size:.85rem;padding:.2rem .7rem}\
.stages{display:flex;flex-wrap:wrap;gap:.25rem;list-style:none;padding:0;margin:0}\
.box{border:1px solid #bbb;border-radius:4px;padding:0 .4rem;font-size:.8rem;white-space:nowrap;background:#f6f8fa}\
.box.succeeded{background:#dafbe1;border-color:#1f883d}.box.failed,.box.rejected,.box.expired{background:#ffebe9;border-color:#cf222e}\
.box.running,.box.queued{background:#ddf4ff;border-color:#0969da}.box.waiting{background:#fff8c5;border-color:#d4a72c}\
.box.superseded,.box.skipped,.box.pending{color:#57606a}.nowrap{white-space:nowrap}\
.envs{display:grid;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr));gap:.75rem}\
.env{border:1px solid #ddd;border-radius:6px;padding:.5rem .75rem}.env h3{margin:.2rem 0}\
h1 .muted,h2 .muted{font-size:1rem;font-weight:normal}form.inline{display:inline}\
button.small,td button{font-size:.8rem;padding:.1rem .5rem;margin:.2rem 0}";

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

/// Who is signed in, for the bar at the top of the control room's pages.
pub(super) struct Nav<'a> {
    pub who: String,
    /// `approver` or `viewer`.
    pub role: &'a str,
    /// The session's CSRF token, for the sign-out form (none for the API token).
    pub csrf: Option<&'a str>,
    /// Links are made absolute from `public_url` (`App::link`).
    pub home: String,
    pub approvals: String,
    pub logout: String,
}

/// A control-room page: wide, with the bar linking the pages and signing out.
pub(super) fn control_room(title: &str, nav: &Nav<'_>, body: Markup) -> Markup {
    control_room_refreshing(title, nav, body, false)
}

/// A control-room page that reloads itself every few seconds while `refresh` (a run still
/// moving): no script, an HTTP-equivalent refresh the policy allows.
pub(super) fn control_room_refreshing(title: &str, nav: &Nav<'_>, body: Markup, refresh: bool) -> Markup {
    page(
        title,
        refresh,
        html! {
            body.wide {
                nav {
                    a href=(nav.home) { strong { "slipway" } }
                    a href=(nav.home) { "Pipelines" }
                    a href=(nav.approvals) { "Approvals" }
                    @if let Some(csrf) = nav.csrf {
                        form method="post" action=(nav.logout) {
                            span.muted { (nav.who) " (" (nav.role) ") " }
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    } @else {
                        span.muted { (nav.who) " (" (nav.role) ")" }
                    }
                }
                (body)
            }
        },
    )
}

/// How often a page of a run still moving reloads itself.
pub const REFRESH_SECONDS: u32 = 5;

/// How long ago `then` was, in words ("3h 5m ago"), to the minute.
pub(super) fn ago(now: Timestamp, then: Timestamp) -> String {
    let elapsed = then.duration_until(now);
    if elapsed < jiff::SignedDuration::from_secs(60) {
        return if elapsed < jiff::SignedDuration::ZERO {
            "in the future".into()
        } else {
            "just now".into()
        };
    }
    format!("{} ago", span_words(elapsed))
}

/// A duration in words, to the minute: "2d 3h 5m".
pub(super) fn span_words(d: jiff::SignedDuration) -> String {
    let rounded = jiff::Span::try_from(d)
        .and_then(|s| {
            s.round(
                jiff::SpanRound::new()
                    .largest(jiff::Unit::Hour)
                    .smallest(jiff::Unit::Minute),
            )
        })
        .unwrap_or_default();
    let (hours, minutes) = (rounded.get_hours(), rounded.get_minutes());
    match (hours / 24, hours % 24, minutes) {
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (days, h, _) => format!("{days}d {h}h"),
    }
}

/// A moment as a `<time>`: relative words, the exact UTC instant on hover.
pub(super) fn moment(now: Timestamp, at: Timestamp) -> Markup {
    html! { time.nowrap datetime=(at) title=(at) { (ago(now, at)) } }
}

/// The sign-in page: anonymous visitors see this and nothing else.
pub(super) fn sign_in(continue_to: &str) -> Markup {
    layout(
        "Sign in",
        html! {
            h1 { "Sign in to slipway" }
            p {
                "These pages show what runs where and can release to production, so they are for the approvers and "
                "viewers named in slipway's configuration."
            }
            p {
                "Open the sign-in link you were sent. To get one, ask whoever runs slipway to run:"
            }
            pre { code { "slipway login-link --as <your id>" } }
            p.muted {
                "Signed in already? Your browser holds the session back on links from other sites: "
                a href=(continue_to) { "continue here" } "."
            }
        },
    )
}

/// What a sign-in link shows: who it signs in, and the button that does.
pub(super) fn confirm_sign_in(who: &str) -> Markup {
    layout(
        "Sign in",
        html! {
            h1 { "Sign in as " (who) "?" }
            p { "This link signs you in to slipway's pages in this browser." }
            form method="post" {
                button type="submit" class="approve" { "Sign in as " (who) }
            }
            p.muted { "Opening the link changes nothing; only the button signs you in." }
        },
    )
}

fn layout(title: &str, body: Markup) -> Markup {
    page(title, false, html! { body { (body) } })
}

/// A whole page: the head every page shares (and, with `refresh`, a reload every
/// [`REFRESH_SECONDS`]), then `body`, which is the `<body>` element.
fn page(title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                meta name="referrer" content="no-referrer";
                @if refresh { meta http-equiv="refresh" content=(REFRESH_SECONDS); }
                title { (title) " · slipway" }
                style { (maud::PreEscaped(STYLE)) }
            }
            (body)
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

/// An outcome page with the places to go on to: the run, the pipelines.
pub(super) fn outcome(title: &str, message: &str, links: &[(String, &str)]) -> Markup {
    layout(
        title,
        html! {
            h1 { (title) }
            p { (message) }
            p { @for (i, (href, label)) in links.iter().enumerate() { @if i > 0 { " · " } a href=(href) { (label) } } }
        },
    )
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

/// The commits the run's push carried, newest first, when there is more than its own.
fn carried_commits(now: Timestamp, run: &Run) -> Markup {
    let carried = &run.carried;
    if carried.commits.len() < 2 && !carried.truncated {
        return html! {};
    }
    html! {
        details open[carried.commits.len() <= 10] {
            summary { "Commits this push carried (" (carried.commits.len()) @if carried.truncated { " listed, more not" } ")" }
            ul {
                @for commit in carried.commits.iter().rev() {
                    li {
                        code { (commit.sha.short()) } " "
                        (commit.message.lines().next().unwrap_or(""))
                        span.muted { " — " (commit.author) @if let Some(at) = commit.at { ", " (moment(now, at)) } }
                    }
                }
            }
            @if carried.truncated {
                p.muted { "The push carried more commits than the git host listed."
                    @if let Some(url) = &carried.compare_url { " " a href=(url) { "Compare on the git host" } } }
            }
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
    /// `public_url` without its trailing slash: every link starts with it.
    pub base: &'a str,
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
                    a href={ (c.base) "/runs/" (newer.run) } { code { (newer.sha.short()) } }
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
    /// `public_url` without its trailing slash: every link starts with it.
    pub base: &'a str,
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
                tr { th { "Runs now" } td { a href={ (c.base) "/runs/" (c.run.id) } { code { (now) } } " " (subject(c.run)) } }
                tr { th { "Goes back to" } td {
                    a href={ (c.base) "/runs/" (c.to.run) } { code { (to) } }
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
    /// `public_url` without its trailing slash: every link starts with it.
    pub base: String,
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
    // Named explicitly, so the command does what this page says even if the environment's
    // releases change before it is run.
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
                        @if let Some(current) = current { " (it runs " a href={ (r.base) "/runs/" (current) } { (current) } " now)" }
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

/// Who is looking at a run's page, and what they may do there.
pub(super) struct RunViewer<'a> {
    pub now: Timestamp,
    /// Signed in: the bar at the top.
    pub nav: Option<Nav<'a>>,
    /// The Retry button's form token, for an approver of the run's pipeline when the run
    /// failed at a deploy, smoke checks or bake.
    pub retry: Option<(&'a str, String)>,
    /// Who an approval waiting on this run asks: the pipeline's approvers who are not bots.
    pub asked: Vec<String>,
    /// The run as JSON.
    pub json: String,
}

fn stage_times(now: Timestamp, stage: &crate::domain::Stage) -> Markup {
    html! {
        td { @if let Some(at) = stage.started_at { (moment(now, at)) } }
        td { @if let Some(at) = stage.finished_at { (moment(now, at)) } }
        td.nowrap {
            @match (stage.started_at, stage.finished_at) {
                (Some(from), Some(to)) => { (duration_words(from.duration_until(to))) }
                (Some(from), None) if !stage.status.is_terminal() => { span.muted { (duration_words(from.duration_until(now))) " so far" } }
                _ => {}
            }
        }
    }
}

/// A duration in words, to the second under a minute.
fn duration_words(d: jiff::SignedDuration) -> String {
    if d < jiff::SignedDuration::from_secs(60) {
        format!("{}s", d.as_secs().max(0))
    } else {
        span_words(d)
    }
}

/// A run's stages as a timeline, its history, and how to roll back or retry.
pub(super) fn run_page(run: &Run, rollback: &RunRollback, viewer: &RunViewer<'_>) -> Markup {
    let status = run.status();
    let now = viewer.now;
    let body = html! {
        h1 { (run.pipeline) ": " code { (run.sha.short()) } " — " span.nowrap { (status.as_str().replace('_', " ")) } }
        (commit_summary(run))
        (carried_commits(now, run))
        @if let Some((csrf, action)) = &viewer.retry {
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                p { "This run failed at a deploy, its smoke checks or its bake. "
                    button type="submit" { "Retry" } }
            }
        }
        h2 { "Stages" }
        table {
            tr { th { "Stage" } th { "Status" } th { "Started" } th { "Ended" } th { "Took" } th { "Details" } }
            @for stage in &run.stages {
                tr {
                    td.nowrap { (stage.label()) }
                    td.nowrap { span class={ "box " (stage.status.as_str()) } { (stage.status.as_str()) } }
                    (stage_times(now, stage))
                    td {
                        (stage.summary.as_deref().unwrap_or(""))
                        @if let (StageStatus::Waiting, Some(info)) = (stage.status, &stage.approval) {
                            strong { (info.approvals.len()) " of " (info.required) } " approvals"
                            @if !info.approvals.is_empty() {
                                " (" (info.approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>().join(", ")) ")"
                            }
                            @if !viewer.asked.is_empty() { "; asked: " (viewer.asked.join(", ")) }
                            "; until " time datetime=(info.expires_at) title=(info.expires_at) {
                                (info.expires_at) " (in " (span_words(now.duration_until(info.expires_at))) ")"
                            }
                        }
                    }
                }
            }
        }
        @if !run.retired.is_empty() {
            details { summary { "Earlier attempts (" (run.retired.len()) ")" }
                ul { @for stage in &run.retired { li { (stage.label()) ": " (stage.status.as_str()) " — " (stage.summary.as_deref().unwrap_or("")) } } }
            }
        }
        (environments_and_checks(run))
        (rollback_section(rollback))
        @for stage in run.stages.iter().filter(|s| s.output.as_deref().is_some_and(|o| !o.is_empty())) {
            details { summary { "Output of " (stage.label()) } pre { (stage.output.as_deref().unwrap_or("")) } }
        }
        h2 { "History" }
        ul { @for entry in &run.history { li { (moment(now, entry.at)) " — " (entry.actor) ": " (entry.what) } } }
        @if !status.is_finished() { p.muted { "This page reloads itself every " (REFRESH_SECONDS) " seconds until the run ends." } }
        p.muted { a href=(viewer.json) { "This run as JSON" } }
    };
    let title = format!("Run {}", run.sha.short());
    match &viewer.nav {
        Some(nav) => control_room_refreshing(&title, nav, body, !status.is_finished()),
        None => layout(&title, body),
    }
}

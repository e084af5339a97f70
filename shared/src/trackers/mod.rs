//! Ticket watchers: each ticket a release's commits mention hears what shipped, to which
//! environment, when, with the run's link — and again if the release is rolled back.
//!
//! Driven by the notify queue ([`crate::handlers::notify`]): the `released` notice (a run
//! reached its pipeline's last environment) and the `rolled_back` notice of that environment.
//! For each `[[pipelines.trackers]]` of the run's pipeline, [`announce`] finds the tickets
//! in the messages of the commits the release shipped (since the environment's release before
//! it) and hands each tracker its [`Work`]: a comment per ticket (then a Jira transition, if
//! configured), or one signed POST listing them all (`webhook`).
//!
//! Each piece of work has its own marker in the state store,
//! `notices/trackers/<run>/<env>/<released|rolled_back>/<tracker>/<comment|transition>/<ticket>`
//! (and `…/<tracker>/release` for a webhook), written once the tracker took it (or refused it
//! for good). Work whose marker exists is never sent again, so a redelivered notice, or one
//! retried because another tracker failed, comments on each ticket once per release. A
//! rollback's follow-up goes only where the release's own comment went: a release rolled back
//! before its checks passed was never announced, and is not un-announced either. A tracker that fails
//! transiently makes the notice fail: the queue retries it and, after its maximum receives,
//! puts it in the dead letters. The release itself was stored long before and never waits.
//! A worker that dies between a tracker's answer and writing the marker leaves that one
//! comment to be posted again: at least once, like every delivery.

pub mod tickets;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;

use crate::app::{App, EngineError};
use crate::config::TrackerConfig;
use crate::domain::{EnvName, Notice, NoticeKind, Release, Run, RunId};
use crate::ports::{NotifyError, StoreError, StoreKey};

pub use tickets::Ticket;

/// The most tickets one release comments on; past that the rest are left out, loudly.
pub const MAX_TICKETS: usize = 50;

/// What happened to the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Released,
    RolledBack,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Released => "released",
            Event::RolledBack => "rolled_back",
        }
    }
}

/// A release, as the trackers hear of it (and as the `webhook` tracker posts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Announcement {
    pub event: Event,
    /// The notice's id, the same on every retry.
    pub id: String,
    /// Where the release happened; with `run`, it names the release in the markers.
    #[serde(skip)]
    pub env: EnvName,
    pub pipeline: String,
    pub repo: String,
    pub environment: String,
    pub run: RunId,
    pub sha: String,
    pub run_url: String,
    /// When it was released (or rolled back).
    pub at: Timestamp,
    /// Why it was rolled back, and what runs there again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The commits it shipped, oldest first.
    pub commits: Vec<AnnouncedCommit>,
    /// It shipped more commits than are listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub commits_more: bool,
    /// The tickets they mention (for this tracker), in order of first mention.
    pub tickets: Vec<String>,
}

/// A commit a release shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnouncedCommit {
    pub sha: String,
    /// The first line of its message.
    pub subject: String,
    pub author: String,
    /// The whole message, to find tickets in; not posted.
    #[serde(skip)]
    pub message: String,
}

/// A comment on one ticket: paragraphs of plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub paragraphs: Vec<String>,
}

impl Comment {
    /// The paragraphs as plain text, separated by blank lines.
    pub fn text(&self) -> String {
        self.paragraphs.join("\n\n")
    }
}

/// One piece of work for a tracker.
#[derive(Debug, Clone, Copy)]
pub enum Work<'a> {
    /// Comment on `ticket`.
    Comment { ticket: &'a Ticket, comment: &'a Comment },
    /// Move `ticket` through the transition named `name` (Jira), if it is available.
    Transition { ticket: &'a Ticket, name: &'a str },
    /// Tell of the whole release at once (`webhook`).
    Announce(&'a Announcement),
}

/// An issue tracker, in slipway's words. Implementations are in
/// [`crate::adapters::trackers`]; errors say whether a retry may help
/// ([`NotifyError::Transient`]) or not ([`NotifyError::Permanent`]), and never carry a token.
#[async_trait]
pub trait Tracker: Send + Sync + fmt::Debug {
    /// `<kind>:<host>`, for logs.
    fn describe(&self) -> String;

    /// Does `work`. Work a tracker does not do (a transition on GitHub) is done at once.
    async fn deliver(&self, work: Work<'_>) -> Result<(), NotifyError>;
}

/// Whether `notice` is one the trackers of `run`'s pipeline hear of: a release of, or a
/// rollback in, the pipeline's last environment, with at least one tracker configured.
pub fn watches(app: &App, run: &Run, notice: &Notice) -> bool {
    let Some(pipeline) = app.pipeline_of(run).filter(|p| !p.trackers.is_empty()) else {
        return false;
    };
    let last = pipeline.environments.last().map(|e| &e.name);
    match &notice.kind {
        NoticeKind::Released { env } | NoticeKind::RolledBack { env, .. } => Some(env) == last,
        _ => false,
    }
}

/// Tells every tracker of `run`'s pipeline about `notice` (see [`watches`]): each piece of
/// work not marked done yet. Returns the trackers that failed and should be retried.
pub async fn announce(app: &App, run: &Run, notice: &Notice) -> Result<Vec<String>, EngineError> {
    if !watches(app, run, notice) {
        return Ok(Vec::new());
    }
    let Some(pipeline) = app.pipeline_of(run) else {
        return Ok(Vec::new());
    };
    let (event, env, reason) = match &notice.kind {
        NoticeKind::Released { env } => (Event::Released, env, None),
        NoticeKind::RolledBack { env, to, reason } => (
            Event::RolledBack,
            env,
            Some(match to {
                Some(to) => format!("{reason}. {env} runs {} again.", to.short()),
                None => format!("{reason}. The backup was restored."),
            }),
        ),
        _ => return Ok(Vec::new()),
    };
    let Some(release) = run.release_in(env) else {
        // Rolled back before it ever released there: nobody was told it shipped.
        return Ok(Vec::new());
    };
    let (commits, commits_more) = shipped(app, run, env, &release).await?;
    let at = match event {
        Event::Released => release.at,
        Event::RolledBack => run.history.get(notice.seq).map_or_else(|| app.clock.now(), |h| h.at),
    };
    let base = Announcement {
        event,
        id: notice.id(),
        env: env.clone(),
        pipeline: run.pipeline.to_string(),
        repo: run.repo.to_string(),
        environment: env.to_string(),
        run: run.id.clone(),
        sha: run.sha.to_string(),
        run_url: app.link(&format!("/runs/{}", run.id)),
        at,
        reason,
        commits,
        commits_more,
        tickets: Vec::new(),
    };
    let mut failed = Vec::new();
    for config in &pipeline.trackers {
        let tracker = crate::adapters::trackers::tracker(config, Arc::clone(&app.secrets));
        let mut tickets = tickets_for(config, &base);
        if tickets.len() > MAX_TICKETS {
            tracing::warn!(tracker = config.name(), run = %run.id, found = tickets.len(), "a release mentions more tickets than are commented on; leaving the rest out");
            tickets.truncate(MAX_TICKETS);
        }
        if tickets.is_empty() {
            continue;
        }
        let announcement = Announcement {
            tickets: tickets.iter().map(ToString::to_string).collect(),
            ..base.clone()
        };
        let ok = deliver_all(app, config, tracker.as_ref(), &announcement, &tickets).await;
        if !ok {
            failed.push(config.name().to_owned());
        }
    }
    Ok(failed)
}

/// Does every piece of `config`'s work not yet marked done; `false` if any failed
/// transiently (the rest is still tried).
async fn deliver_all(
    app: &App,
    config: &TrackerConfig,
    tracker: &dyn Tracker,
    announcement: &Announcement,
    tickets: &[Ticket],
) -> bool {
    let name = config.name();
    let marker = |event: Event, work: &str| {
        StoreKey::tracker_done(&announcement.run, &announcement.env, event.as_str(), name, work)
    };
    let rollback = announcement.event == Event::RolledBack;
    if let TrackerConfig::Webhook { .. } = config {
        if rollback && !was_sent(app, &marker(Event::Released, "release")).await {
            return true;
        }
        let key = marker(announcement.event, "release");
        return deliver_once(app, &key, name, tracker, Work::Announce(announcement)).await;
    }
    let transition = match (config, announcement.event) {
        (TrackerConfig::Jira { transition, .. }, Event::Released) => transition.as_deref(),
        _ => None,
    };
    let mut ok = true;
    for ticket in tickets {
        let work = format!("comment/{}", ticket.slug());
        if rollback && !was_sent(app, &marker(Event::Released, &work)).await {
            continue;
        }
        let comment = comment(announcement, ticket);
        let key = marker(announcement.event, &work);
        let commented = deliver_once(
            app,
            &key,
            name,
            tracker,
            Work::Comment {
                ticket,
                comment: &comment,
            },
        )
        .await;
        ok &= commented;
        if let (true, Some(transition)) = (commented, transition) {
            let key = marker(announcement.event, &format!("transition/{}", ticket.slug()));
            ok &= deliver_once(
                app,
                &key,
                name,
                tracker,
                Work::Transition {
                    ticket,
                    name: transition,
                },
            )
            .await;
        }
    }
    ok
}

/// A piece of work's marker.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Done {
    /// `sent`, or `refused` (for good: not retried).
    state: String,
    at: Timestamp,
}

/// Whether the work `key` marks was taken by the tracker (an unreadable store says no: the
/// follow-up is left out rather than sent about something never announced).
async fn was_sent(app: &App, key: &StoreKey) -> bool {
    match app.store.get(key).await {
        Ok(Some(found)) => serde_json::from_slice::<Done>(&found.value).is_ok_and(|d| d.state == "sent"),
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(marker = %key, error = %e, "could not read a tracker marker");
            false
        }
    }
}

/// Does `work` unless its marker `key` says it was done; marks it done once the tracker took
/// it or refused it for good. `false` if it failed and should be retried.
async fn deliver_once(app: &App, key: &StoreKey, tracker_name: &str, tracker: &dyn Tracker, work: Work<'_>) -> bool {
    match app.store.get(key).await {
        Ok(Some(_)) => return true,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(tracker = tracker_name, marker = %key, error = %e, "could not read a tracker marker; will retry");
            return false;
        }
    }
    let state = match tracker.deliver(work).await {
        Ok(()) => {
            tracing::info!(tracker = tracker_name, marker = %key, "tracker told");
            "sent"
        }
        Err(e @ NotifyError::Permanent { .. }) => {
            crate::metrics::notification_failed(&tracker.describe(), true);
            // Retrying will not help; say so loudly and do not try again.
            tracing::error!(tracker = tracker_name, marker = %key, error = %e, source = ?std::error::Error::source(&e), "tracker refused");
            "refused"
        }
        Err(e @ NotifyError::Transient { .. }) => {
            crate::metrics::notification_failed(&tracker.describe(), false);
            tracing::warn!(tracker = tracker_name, marker = %key, error = %e, source = ?std::error::Error::source(&e), "tracker failed; will retry");
            return false;
        }
    };
    match mark(app, key, state).await {
        Ok(()) => true,
        Err(e) => {
            // Done, but not remembered: a retry may do it again (at least once).
            tracing::warn!(tracker = tracker_name, marker = %key, error = %e, "could not write a tracker marker; will retry");
            false
        }
    }
}

/// The tickets `messages` mention, as `pipeline`'s trackers read them (without trackers:
/// the repository's own `#123` issues), each once, in order of first mention: what a release
/// page lists.
pub fn mentioned(pipeline: &crate::config::PipelineConfig, messages: &[&str]) -> Vec<Ticket> {
    let repo = pipeline.repo.as_str();
    let mut found: Vec<Ticket> = Vec::new();
    let mut add = |more: Vec<Ticket>| {
        for ticket in more {
            if !found.contains(&ticket) {
                found.push(ticket);
            }
        }
    };
    if pipeline.trackers.is_empty() {
        add(tickets::issues(messages, repo, 2));
    }
    for tracker in &pipeline.trackers {
        match tracker {
            TrackerConfig::Jira { keys, .. } => add(tickets::jira(messages, keys)),
            TrackerConfig::Github { .. } => add(tickets::issues(messages, repo, 2)),
            TrackerConfig::Gitlab { .. } => add(tickets::issues(messages, repo, 20)),
            TrackerConfig::Webhook { keys, .. } => {
                add(tickets::jira(messages, keys));
                add(tickets::issues(messages, repo, 20));
            }
        }
    }
    found
}

/// The tickets of `announcement`'s commits that `config` comments on.
pub fn tickets_for(config: &TrackerConfig, announcement: &Announcement) -> Vec<Ticket> {
    let messages: Vec<&str> = announcement.commits.iter().map(|c| c.message.as_str()).collect();
    match config {
        TrackerConfig::Jira { keys, .. } => tickets::jira(&messages, keys),
        TrackerConfig::Github { .. } => tickets::issues(&messages, &announcement.repo, 2),
        TrackerConfig::Gitlab { .. } => tickets::issues(&messages, &announcement.repo, 20),
        TrackerConfig::Webhook { keys, .. } => {
            let mut found = tickets::jira(&messages, keys);
            found.extend(tickets::issues(&messages, &announcement.repo, 20));
            found
        }
    }
}

/// What a ticket is told: what shipped (the commits mentioning it), to which environment,
/// when, and the run's link; or that it was rolled back, and why.
pub fn comment(a: &Announcement, ticket: &Ticket) -> Comment {
    let short = crate::adapters::notify::short_sha(&a.sha);
    let mentioning: Vec<String> = a
        .commits
        .iter()
        .filter(|c| tickets_in(c, ticket))
        .map(|c| {
            format!(
                "{} {} ({})",
                crate::adapters::notify::short_sha(&c.sha),
                c.subject,
                c.author
            )
        })
        .collect();
    let mut paragraphs = match a.event {
        Event::Released => vec![format!("Shipped to {} at {}: {} {short}.", a.environment, a.at, a.repo)],
        Event::RolledBack => vec![
            format!(
                "Rolled back: {} {short}, which shipped {ticket}, was rolled back from {} at {}. {}",
                a.repo,
                a.environment,
                a.at,
                a.reason.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_owned(),
        ],
    };
    if a.event == Event::Released && !mentioning.is_empty() {
        paragraphs.push(format!("{ticket} in: {}", mentioning.join("; ")));
    }
    paragraphs.push(format!("Run: {}", a.run_url));
    // Commit messages come from outside: no control characters in a comment.
    Comment {
        paragraphs: paragraphs
            .into_iter()
            .map(|p| p.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
            .collect(),
    }
}

fn tickets_in(commit: &AnnouncedCommit, ticket: &Ticket) -> bool {
    let messages = [commit.message.as_str()];
    match ticket {
        Ticket::Jira { key } => {
            let project = key.split('-').next().unwrap_or_default().to_owned();
            tickets::jira(&messages, &[project]).contains(ticket)
        }
        Ticket::Issue { .. } => {
            // Both `#12` and `owner/repo#12` name the pipeline's own issue; compare as found.
            tickets::issues(&messages, "", 20)
                .iter()
                .chain(tickets::issues(&messages, ticket_project(ticket), 20).iter())
                .any(|t| same_issue(t, ticket))
        }
    }
}

fn ticket_project(ticket: &Ticket) -> &str {
    match ticket {
        Ticket::Issue { project, .. } => project,
        Ticket::Jira { .. } => "",
    }
}

fn same_issue(a: &Ticket, b: &Ticket) -> bool {
    match (a, b) {
        (Ticket::Issue { project: p, number: n }, Ticket::Issue { project: q, number: m }) => {
            n == m && p.eq_ignore_ascii_case(q)
        }
        _ => false,
    }
}

/// The commits `release` (of `run`) shipped to `env`: those the runs since the environment's
/// release before it carried, or `run`'s own for its first release there; oldest first.
/// `true` with them when there were more than were read.
async fn shipped(
    app: &App,
    run: &Run,
    env: &EnvName,
    release: &Release,
) -> Result<(Vec<AnnouncedCommit>, bool), EngineError> {
    // The same runs the release log counted as shipped with this release.
    let (record, _) = app.environment(&run.pipeline, env).await?;
    let (loaded, mut more) = crate::views::release_log::shipped_runs(app, run, &record, release, None).await?;
    let mut commits: Vec<AnnouncedCommit> = Vec::new();
    for one in loaded.iter().chain(std::iter::once(run)) {
        more |= one.carried.truncated;
        let carried: Vec<AnnouncedCommit> = if one.carried.commits.is_empty() {
            vec![AnnouncedCommit {
                sha: one.sha.to_string(),
                subject: crate::adapters::notify::subject(&one.commit.message).to_owned(),
                author: one
                    .commit
                    .author_login
                    .clone()
                    .unwrap_or_else(|| one.commit.author_name.clone()),
                message: one.commit.message.clone(),
            }]
        } else {
            one.carried
                .commits
                .iter()
                .map(|c| AnnouncedCommit {
                    sha: c.sha.to_string(),
                    subject: crate::adapters::notify::subject(&c.message).to_owned(),
                    author: c.author.clone(),
                    message: c.message.clone(),
                })
                .collect()
        };
        for commit in carried {
            if !commits.iter().any(|c| c.sha == commit.sha) {
                commits.push(commit);
            }
        }
    }
    Ok((commits, more))
}

/// Writes the marker: created, or already there (another worker got there first).
async fn mark(app: &App, key: &StoreKey, state: &str) -> Result<(), StoreError> {
    let done = Done {
        state: state.to_owned(),
        at: app.clock.now(),
    };
    let value = Bytes::from(serde_json::to_vec(&done).expect("a marker always serialises"));
    match app.store.create(key, value).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

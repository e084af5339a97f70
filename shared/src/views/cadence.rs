//! The release cadence alarm. A team whose first environment (staging) moves many times a
//! day while its last (production) lags ships big-bang releases; so, per pipeline with a
//! `cadence = { max_age, max_commits }`, the sweep compares the two:
//!
//! - the **lag**: since when the first environment runs commits the last one lacks (the
//!   first of its releases newer than the last environment's current release), and how many
//!   commits (the commits those releases shipped, from the release log);
//! - an **episode** starts when the lag is older than `max_age` or holds more than
//!   `max_commits` commits: a `cadence` notification is sent, and again at most once a day
//!   ([`REPEAT`]) while it lasts; when the lag is back within bounds (production caught up,
//!   or nearly), a `cadence_cleared` one ends it.
//!
//! The episode is a small record per pipeline (`views/cadence/<pipeline>.json`) changed by
//! conditional writes, so two sweeps never both announce it; a notification is marked sent
//! only once every channel took it, so a failed one is sent again by the next sweep. `/`
//! shows an episode under way.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::app::{App, EngineError, update_record};
use crate::config::{CadenceConfig, PipelineConfig};
use crate::domain::{EnvName, Release, RunId};
use crate::ports::{Notification, NotifyError, StoreKey};
use crate::views::release_log;

/// How often an alarm is sent again while its episode lasts.
pub const REPEAT: SignedDuration = SignedDuration::from_hours(24);

/// How far back the commits the last environment lacks are counted (the release log's
/// months read): a lag older than this counts its commits from here.
pub const COUNTED_BACK: SignedDuration = SignedDuration::from_hours(24 * 62);

/// How far the first environment runs ahead of the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lag {
    /// Since when it runs commits the last one lacks.
    pub since: Timestamp,
    /// How many.
    pub commits: usize,
    /// The newest run it runs: what a release would bring.
    pub run: RunId,
}

/// A pipeline's cadence episode, as the sweep left it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Episode {
    /// When the episode began (the alarm was first raised); `None`: no episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_at: Option<Timestamp>,
    /// When its last alarm went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarmed_at: Option<Timestamp>,
    /// The lag as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,
    /// A notification decided but not yet taken by every channel: sent again by the next
    /// sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsent: Option<Announce>,
}

/// What the sweep says about an episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Announce {
    /// The lag is over bounds: the first alarm of an episode, or a daily repeat.
    Cadence { lag: Lag, at: Timestamp, repeat: bool },
    /// The episode is over. `run` is the newest run the lag last held.
    Cleared {
        at: Timestamp,
        raised_at: Timestamp,
        run: RunId,
    },
}

impl Announce {
    /// Unique per announcement, stable across retries.
    pub fn id(&self, pipeline: &str) -> String {
        match self {
            Announce::Cadence { at, .. } => format!("cadence/{pipeline}/{}", at.as_second()),
            Announce::Cleared { at, .. } => format!("cadence-cleared/{pipeline}/{}", at.as_second()),
        }
    }
}

/// Whether `lag` is over `policy`'s bounds at `now`.
pub fn over(policy: &CadenceConfig, lag: &Lag, now: Timestamp) -> bool {
    policy.max_age.is_some_and(|max| lag.since.duration_until(now) > max)
        || policy.max_commits.is_some_and(|max| lag.commits > max as usize)
}

/// The episode after a sweep measured `lag` at `now`. Pure: raise once, repeat at most
/// daily, clear once back within bounds; a notification still unsent is kept (the newest
/// decision replaces it).
pub fn decide(episode: &Episode, policy: &CadenceConfig, lag: Option<Lag>, now: Timestamp) -> Episode {
    let mut next = episode.clone();
    let over_bounds = lag.clone().filter(|l| over(policy, l, now));
    match (episode.raised_at, over_bounds) {
        (None, Some(lag)) => {
            next.raised_at = Some(now);
            next.alarmed_at = Some(now);
            next.unsent = Some(Announce::Cadence {
                lag: lag.clone(),
                at: now,
                repeat: false,
            });
            next.lag = Some(lag);
        }
        (Some(_), Some(lag)) => {
            if episode.alarmed_at.is_none_or(|at| at.duration_until(now) >= REPEAT) {
                next.alarmed_at = Some(now);
                next.unsent = Some(Announce::Cadence {
                    lag: lag.clone(),
                    at: now,
                    repeat: true,
                });
            }
            next.lag = Some(lag);
        }
        (Some(raised_at), None) => {
            next = Episode {
                unsent: episode.lag.as_ref().map(|last| Announce::Cleared {
                    at: now,
                    raised_at,
                    run: last.run.clone(),
                }),
                lag,
                ..Episode::default()
            };
        }
        (None, None) => next.lag = lag,
    }
    next
}

/// How far `first`'s current release runs ahead of `last`'s: its releases newer than what
/// `last` runs (by when their runs opened), the commits they shipped from `first`'s release
/// log. `None` when `last` runs what `first` runs, or newer.
pub async fn lag(
    app: &App,
    pipeline: &PipelineConfig,
    first: &EnvName,
    last: &EnvName,
) -> Result<Option<Lag>, EngineError> {
    let (upstream, _) = app.environment(&pipeline.name, first).await?;
    let (downstream, _) = app.environment(&pipeline.name, last).await?;
    let Some(ahead) = upstream.current.as_ref() else {
        return Ok(None);
    };
    let behind = downstream.current.as_ref();
    if behind.is_some_and(|b| b.run == ahead.run || b.opened_at >= ahead.opened_at) {
        return Ok(None);
    }
    let newer = |r: &Release| behind.is_none_or(|b| r.opened_at > b.opened_at);
    let Some(since) = upstream.releases.iter().filter(|r| newer(r)).map(|r| r.at).min() else {
        return Ok(None);
    };
    let now = app.clock.now();
    let from = since.max(now - COUNTED_BACK);
    let logged = release_log::releases(app, &pipeline.name, first, from, now).await?;
    let mut commits: Vec<&crate::domain::CommitSha> = Vec::new();
    for entry in logged
        .iter()
        .filter(|e| e.is_deploy() && behind.is_none_or(|b| e.opened_at > b.opened_at))
    {
        for shipped in &entry.shipped {
            if !commits.contains(&&shipped.sha) {
                commits.push(&shipped.sha);
            }
        }
    }
    Ok(Some(Lag {
        since,
        commits: commits.len(),
        run: ahead.run.clone(),
    }))
}

/// The key of `pipeline`'s episode.
fn key(pipeline: &PipelineConfig) -> StoreKey {
    StoreKey::cadence(&pipeline.name)
}

/// A pipeline's episode as the last sweep left it.
pub async fn episode(app: &App, pipeline: &PipelineConfig) -> Result<Episode, EngineError> {
    Ok(app.record::<Episode>(&key(pipeline)).await?.0)
}

/// The sweep's check of every pipeline with a cadence: measures the lag, moves the episode
/// on, and sends what it decided (again, if an earlier sweep could not). Returns how many
/// notifications went out.
pub async fn check(app: &App) -> Result<usize, EngineError> {
    let now = app.clock.now();
    let mut sent = 0;
    for pipeline in &app.config.pipelines {
        let Some(policy) = &pipeline.cadence else { continue };
        let (Some(first), Some(last)) = (pipeline.environments.first(), pipeline.environments.last()) else {
            continue;
        };
        let lag = lag(app, pipeline, &first.name, &last.name).await?;
        let what = format!("cadence of {}", pipeline.name);
        let episode = update_record(
            app.store.as_ref(),
            &app.tuning,
            &key(pipeline),
            &what,
            |episode: &mut Episode| {
                *episode = decide(episode, policy, lag.clone(), now);
                episode.clone()
            },
        )
        .await?;
        let Some(announce) = episode.unsent.clone() else {
            continue;
        };
        if !deliver(app, pipeline, &last.name, &announce).await {
            continue;
        }
        sent += 1;
        // Sent: forget it, unless a newer decision took its place meanwhile.
        update_record(
            app.store.as_ref(),
            &app.tuning,
            &key(pipeline),
            &what,
            |episode: &mut Episode| {
                if episode.unsent.as_ref() == Some(&announce) {
                    episode.unsent = None;
                }
            },
        )
        .await?;
    }
    Ok(sent)
}

/// Sends `announce` on every channel; `true` when none failed for a reason worth retrying.
async fn deliver(app: &App, pipeline: &PipelineConfig, last: &EnvName, announce: &Announce) -> bool {
    let notification = notification(app, pipeline, last, announce);
    let mut ok = true;
    for channel in &app.notifiers {
        match channel.deliver(&notification).await {
            Ok(()) => {}
            Err(e @ NotifyError::Permanent { .. }) => {
                tracing::error!(notice = %notification.id, channel = channel.name(), error = %e, "cadence notification refused");
            }
            Err(e @ NotifyError::Transient { .. }) => {
                tracing::warn!(notice = %notification.id, channel = channel.name(), error = %e, "cadence notification failed; the next sweep sends it again");
                ok = false;
            }
        }
    }
    ok
}

fn notification(app: &App, pipeline: &PipelineConfig, last: &EnvName, announce: &Announce) -> Notification {
    let (kind, run, title, text) = match announce {
        Announce::Cadence { lag, at, repeat } => (
            "cadence",
            lag.run.clone(),
            format!(
                "{} lags: {} commits not in {last} for {}",
                pipeline.name,
                lag.commits,
                words(lag.since.duration_until(*at))
            ),
            format!(
                "{} runs commits that {last} lacks since {} ({} commits).{} Release them: {}",
                pipeline.environments[0].name,
                lag.since,
                lag.commits,
                if *repeat { " Still so, a day on." } else { "" },
                app.link(&format!("/pipelines/{}", pipeline.name)),
            ),
        ),
        Announce::Cleared { at, raised_at, run } => (
            "cadence_cleared",
            run.clone(),
            format!("{} caught up: {last} is within its cadence", pipeline.name),
            format!("The lag raised at {raised_at} is over at {at}."),
        ),
    };
    Notification {
        run_url: app.link(&format!("/runs/{run}")),
        kind: kind.to_owned(),
        id: announce.id(pipeline.name.as_str()),
        run_id: run.clone(),
        pipeline: pipeline.name.to_string(),
        repo: pipeline.repo.to_string(),
        sha: String::new(),
        branch: pipeline.branch.to_string(),
        commit_message: String::new(),
        author: String::new(),
        environment: Some(last.to_string()),
        title,
        text,
        stage: None,
        alert: matches!(announce, Announce::Cadence { .. }),
        approver: None,
        address: None,
        approve_url: None,
        reject_url: None,
        rollback_url: None,
        expires_at: None,
        sign_in_url: None,
    }
}

/// A duration in days and hours, for a person.
fn words(d: SignedDuration) -> String {
    let hours = d.as_hours().max(0);
    match (hours / 24, hours % 24) {
        (0, h) => format!("{h}h"),
        (days, 0) => format!("{days}d"),
        (days, h) => format!("{days}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy() -> CadenceConfig {
        CadenceConfig {
            max_age: Some(SignedDuration::from_hours(48)),
            max_commits: Some(20),
        }
    }

    fn lag(since: &str, commits: usize) -> Option<Lag> {
        Some(Lag {
            since: at(since),
            commits,
            run: "shop-a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".parse().unwrap(),
        })
    }

    fn kind(e: &Episode) -> Option<(&'static str, bool)> {
        e.unsent.as_ref().map(|a| match a {
            Announce::Cadence { repeat, .. } => ("cadence", *repeat),
            Announce::Cleared { .. } => ("cleared", false),
        })
    }

    /// One sweep, the last one's announcement taken by every channel.
    fn sweep(e: &Episode, lag: Option<Lag>, now: &str) -> Episode {
        let sent = Episode {
            unsent: None,
            ..e.clone()
        };
        decide(&sent, &policy(), lag, at(now))
    }

    #[test]
    fn an_episode_is_raised_once_repeated_daily_and_cleared_once() {
        let quiet = Episode::default();
        // Within bounds: nothing.
        let e = sweep(&quiet, lag("2026-11-01T00:00:00Z", 3), "2026-11-02T00:00:00Z");
        assert_eq!((e.raised_at, kind(&e)), (None, None));
        // Two days and an hour: raised.
        let e = sweep(&e, lag("2026-11-01T00:00:00Z", 3), "2026-11-03T01:00:00Z");
        assert_eq!(kind(&e), Some(("cadence", false)));
        assert_eq!(e.raised_at, Some(at("2026-11-03T01:00:00Z")));
        // Later the same day: nothing new.
        let e = sweep(&e, lag("2026-11-01T00:00:00Z", 4), "2026-11-03T20:00:00Z");
        assert_eq!(kind(&e), None);
        assert_eq!(e.lag.as_ref().map(|l| l.commits), Some(4), "the lag is kept up to date");
        // A day after the alarm: repeated.
        let e = sweep(&e, lag("2026-11-01T00:00:00Z", 5), "2026-11-04T01:00:00Z");
        assert_eq!(kind(&e), Some(("cadence", true)));
        // Production catches up: cleared once, then quiet.
        let e = sweep(&e, None, "2026-11-04T02:00:00Z");
        assert_eq!(kind(&e), Some(("cleared", false)));
        assert_eq!(e.raised_at, None);
        let e = sweep(&e, None, "2026-11-04T03:00:00Z");
        assert_eq!(kind(&e), None);
    }

    #[test]
    fn too_many_commits_raise_it_at_once_and_getting_within_bounds_clears_it() {
        let e = sweep(
            &Episode::default(),
            lag("2026-11-04T00:00:00Z", 21),
            "2026-11-04T01:00:00Z",
        );
        assert_eq!(kind(&e), Some(("cadence", false)));
        // Production takes most of it: 2 commits, an hour old, are within bounds.
        let e = sweep(&e, lag("2026-11-04T05:00:00Z", 2), "2026-11-04T06:00:00Z");
        assert_eq!(kind(&e), Some(("cleared", false)));
    }

    #[test]
    fn an_unsent_alarm_stays_until_a_sweep_sends_it() {
        let e = decide(
            &Episode::default(),
            &policy(),
            lag("2026-11-01T00:00:00Z", 30),
            at("2026-11-01T01:00:00Z"),
        );
        // The channel failed: the next sweep, an hour on, still has it to send, unchanged.
        let again = decide(
            &e,
            &policy(),
            lag("2026-11-01T00:00:00Z", 30),
            at("2026-11-01T02:00:00Z"),
        );
        assert_eq!(again.unsent, e.unsent);
    }

    #[test]
    fn only_the_bounds_given_count() {
        let commits_only = CadenceConfig {
            max_age: None,
            max_commits: Some(20),
        };
        let old = lag("2026-01-01T00:00:00Z", 1).unwrap();
        assert!(!over(&commits_only, &old, at("2026-11-01T00:00:00Z")));
        let age_only = CadenceConfig {
            max_age: Some(SignedDuration::from_hours(48)),
            max_commits: None,
        };
        let many = lag("2026-11-01T00:00:00Z", 500).unwrap();
        assert!(!over(&age_only, &many, at("2026-11-01T01:00:00Z")));
    }
}

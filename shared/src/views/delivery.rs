//! DORA's four keys for a pipeline, from its last environment's release log
//! ([`super::release_log`]), over a window of days ending now:
//!
//! - **deployment frequency**: deploys to the environment (not the rollbacks that put an
//!   older release back) per day, and how many each day (UTC);
//! - **lead time for changes**: from each commit's time (its author's, as the git host sent
//!   it) to the first healthy deploy that shipped it there — every commit a push carried, not
//!   only heads; median and 90th percentile (nearest rank);
//! - **change failure rate**: the deploys found failing there (smoke checks or bake failed,
//!   or rolled back, by slipway or a person) over all deploys;
//! - **time to restore**: from a failing deploy to the next healthy release there (the
//!   rollback that put the release before back, or a newer deploy), median; failures not yet
//!   restored are counted apart.
//!
//! Pure: [`figures`] computes them from the log's entries; [`pipeline_figures`] reads the
//! months the window spans (at most four for 90 days) and never a run.

use std::collections::{HashMap, HashSet};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan as _};
use serde::Serialize;

use crate::app::{App, EngineError};
use crate::config::PipelineConfig;
use crate::domain::{CommitSha, EnvName};
use crate::views::release_log::{self, Logged};

/// The longest window the figures are computed over.
pub const MAX_DAYS: u32 = 366;

/// A pipeline's delivery figures over `days` days up to `to`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// The environment they are about: the pipeline's last.
    pub env: EnvName,
    pub days: u32,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Deploys in the window.
    pub deployments: usize,
    /// Deploys per day.
    pub deployments_per_day: f64,
    /// Deploys each day (UTC), oldest first, one entry per day of the window.
    pub daily: Vec<Day>,
    pub lead_time: Option<Spread>,
    /// Commits shipped in the window whose time the git host did not give.
    pub commits_without_time: usize,
    /// Deploys found failing, over all deploys (`None`: no deploys).
    pub change_failure_rate: Option<f64>,
    pub failed_deployments: usize,
    pub time_to_restore: Option<Spread>,
    /// Failing deploys not followed by a healthy release yet.
    pub unrestored: usize,
}

/// One day's deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    pub date: Date,
    pub deployments: usize,
}

/// A median and a 90th percentile of durations, and how many there were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spread {
    #[serde(serialize_with = "seconds")]
    pub median: SignedDuration,
    #[serde(serialize_with = "seconds")]
    pub p90: SignedDuration,
    pub count: usize,
}

fn seconds<S: serde::Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(d.as_secs())
}

impl Spread {
    /// Nearest-rank median and 90th percentile; `None` for no durations.
    pub fn of(mut durations: Vec<SignedDuration>) -> Option<Self> {
        if durations.is_empty() {
            return None;
        }
        durations.sort();
        let rank = |q: f64| {
            let n = durations.len();
            let at = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            durations[at]
        };
        Some(Self {
            median: rank(0.5),
            p90: rank(0.9),
            count: durations.len(),
        })
    }
}

/// The figures of `env` from its `log` (every entry from `to - days` to `to`, in the log's
/// order: by time, releases of the same instant as logged), over the `days` days ending at
/// `to`.
pub fn figures(env: &EnvName, log: &[Logged], to: Timestamp, days: u32) -> Figures {
    let days = days.clamp(1, MAX_DAYS);
    let from = to - SignedDuration::from_hours(24 * i64::from(days));
    let mut log: Vec<&Logged> = log.iter().filter(|e| e.at >= from && e.at <= to).collect();
    // A stable sort: releases of the same instant stay in the order the log has them.
    log.sort_by_key(|e| e.at);
    let deploys: Vec<&Logged> = log.iter().copied().filter(|e| e.is_deploy()).collect();

    let today = to.to_zoned(TimeZone::UTC).date();
    let mut per_date: HashMap<Date, usize> = HashMap::new();
    for deploy in &deploys {
        *per_date.entry(deploy.at.to_zoned(TimeZone::UTC).date()).or_default() += 1;
    }
    let daily: Vec<Day> = (0..i64::from(days))
        .rev()
        .filter_map(|back| today.checked_sub(back.days()).ok())
        .map(|date| Day {
            date,
            deployments: per_date.get(&date).copied().unwrap_or(0),
        })
        .collect();

    // Each commit counts once, at the first healthy deploy that shipped it.
    let mut seen: HashSet<&CommitSha> = HashSet::new();
    let mut lead_times = Vec::new();
    let mut without_time = 0;
    for deploy in deploys.iter().filter(|e| e.failed_at.is_none()) {
        for commit in &deploy.shipped {
            if !seen.insert(&commit.sha) {
                continue;
            }
            match commit.at {
                Some(at) => lead_times.push(at.duration_until(deploy.at).max(SignedDuration::ZERO)),
                None => without_time += 1,
            }
        }
    }

    // Each failing deploy is restored by the next healthy release after it: walking the log
    // from its end, the next healthy one so far is known at each step.
    let mut restores = Vec::new();
    let mut unrestored = 0;
    let mut failed = 0;
    let mut next_healthy: Option<Timestamp> = None;
    for entry in log.iter().rev() {
        if entry.is_deploy() && entry.failed_at.is_some() {
            failed += 1;
            match next_healthy {
                Some(at) => restores.push(entry.at.duration_until(at)),
                None => unrestored += 1,
            }
        }
        if entry.failed_at.is_none() {
            next_healthy = Some(entry.at);
        }
    }

    Figures {
        env: env.clone(),
        days,
        from,
        to,
        deployments: deploys.len(),
        deployments_per_day: deploys.len() as f64 / f64::from(days),
        daily,
        lead_time: Spread::of(lead_times),
        commits_without_time: without_time,
        change_failure_rate: (!deploys.is_empty()).then(|| failed as f64 / deploys.len() as f64),
        failed_deployments: failed,
        time_to_restore: Spread::of(restores),
        unrestored,
    }
}

/// `pipeline`'s figures over the `days` days up to now, for its last environment: reads
/// the release log's months the window spans, nothing else.
pub async fn pipeline_figures(app: &App, pipeline: &PipelineConfig, days: u32) -> Result<Option<Figures>, EngineError> {
    Ok(pipeline_windows(app, pipeline, &[days]).await?.pop())
}

/// [`pipeline_figures`] over each of `windows` (in days), from one read of the longest.
pub async fn pipeline_windows(
    app: &App,
    pipeline: &PipelineConfig,
    windows: &[u32],
) -> Result<Vec<Figures>, EngineError> {
    let Some(env) = pipeline.environments.last() else {
        return Ok(Vec::new());
    };
    let longest = windows.iter().copied().max().unwrap_or(1).clamp(1, MAX_DAYS);
    let to = app.clock.now();
    let from = to - SignedDuration::from_hours(24 * i64::from(longest));
    let log = release_log::releases(app, &pipeline.name, &env.name, from, to).await?;
    Ok(windows.iter().map(|days| figures(&env.name, &log, to, *days)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::release_log::Shipped;

    const NOW: &str = "2026-11-30T12:00:00Z";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sha(n: u16) -> CommitSha {
        format!("{n:040x}").parse().unwrap()
    }

    /// A deploy of run `n` at `when`, shipping commits `(sha, committed at)`.
    fn deploy(n: u16, when: &str, commits: &[(u16, &str)]) -> Logged {
        Logged {
            run: format!("shop-{:040x}", n).parse().unwrap(),
            sha: sha(n),
            opened_at: at(when),
            at: at(when),
            put_back_by: None,
            failed_at: None,
            shipped: commits
                .iter()
                .map(|(c, t)| Shipped {
                    sha: sha(*c),
                    at: Some(at(t)),
                })
                .collect(),
            shipped_more: false,
        }
    }

    fn failed(mut logged: Logged, when: &str) -> Logged {
        logged.failed_at = Some(at(when));
        logged
    }

    /// Run `n`'s release put back at `when` by the rollback of `by`.
    fn put_back(n: u16, when: &str, by: u16) -> Logged {
        let mut logged = deploy(n, when, &[]);
        logged.put_back_by = Some(format!("shop-{:040x}", by).parse().unwrap());
        logged
    }

    fn production() -> EnvName {
        "production".parse().unwrap()
    }

    fn hours(h: i64) -> SignedDuration {
        SignedDuration::from_hours(h)
    }

    #[test]
    fn a_quiet_month_has_no_deploys_and_no_rates() {
        let f = figures(&production(), &[], at(NOW), 30);
        assert_eq!((f.deployments, f.deployments_per_day), (0, 0.0));
        assert_eq!(f.daily.len(), 30);
        assert!(f.daily.iter().all(|d| d.deployments == 0));
        assert_eq!(f.daily.last().unwrap().date, at(NOW).to_zoned(TimeZone::UTC).date());
        assert_eq!(
            (f.lead_time, f.change_failure_rate, f.time_to_restore),
            (None, None, None)
        );
    }

    #[test]
    fn several_commits_per_push_each_count_for_lead_time() {
        let log = [
            // Three commits, 1 h, 2 h and 10 h before their deploy.
            deploy(
                1,
                "2026-11-29T12:00:00Z",
                &[
                    (11, "2026-11-29T02:00:00Z"),
                    (12, "2026-11-29T10:00:00Z"),
                    (13, "2026-11-29T11:00:00Z"),
                ],
            ),
            // One commit, 4 h before.
            deploy(2, "2026-11-30T08:00:00Z", &[(21, "2026-11-30T04:00:00Z")]),
        ];
        let f = figures(&production(), &log, at(NOW), 7);
        let lead = f.lead_time.unwrap();
        // Sorted: 1, 2, 4, 10 hours.
        assert_eq!((lead.count, lead.median, lead.p90), (4, hours(2), hours(10)));
        assert_eq!(f.deployments, 2);
        assert!((f.deployments_per_day - 2.0 / 7.0).abs() < 1e-9);
        let per_day: Vec<usize> = f.daily.iter().map(|d| d.deployments).collect();
        assert_eq!(per_day, [0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn a_rolled_back_deploy_fails_and_its_commits_count_when_they_finally_ship() {
        let log = [
            deploy(1, "2026-11-20T10:00:00Z", &[(11, "2026-11-20T09:00:00Z")]),
            // Deploy 2 fails its bake an hour in; the rollback puts 1 back half an hour later.
            failed(
                deploy(2, "2026-11-21T10:00:00Z", &[(21, "2026-11-21T08:00:00Z")]),
                "2026-11-21T11:00:00Z",
            ),
            put_back(1, "2026-11-21T11:30:00Z", 2),
            // Deploy 3 ships commit 21 again with its own.
            deploy(
                3,
                "2026-11-22T10:00:00Z",
                &[(21, "2026-11-21T08:00:00Z"), (31, "2026-11-22T09:00:00Z")],
            ),
        ];
        let f = figures(&production(), &log, at(NOW), 30);
        assert_eq!(f.deployments, 3, "the rollback's release is no deploy");
        assert_eq!(f.failed_deployments, 1);
        assert_eq!(f.change_failure_rate, Some(1.0 / 3.0));
        let restore = f.time_to_restore.unwrap();
        assert_eq!((restore.count, restore.median), (1, SignedDuration::from_mins(90)));
        assert_eq!(f.unrestored, 0);
        // 11: 1 h; 21: 26 h (to deploy 3, not the failed 2); 31: 1 h.
        let lead = f.lead_time.unwrap();
        assert_eq!((lead.count, lead.median, lead.p90), (3, hours(1), hours(26)));
    }

    #[test]
    fn a_failure_restored_by_a_newer_deploy_and_one_not_restored_yet() {
        let log = [
            failed(deploy(1, "2026-11-25T10:00:00Z", &[]), "2026-11-25T10:30:00Z"),
            failed(deploy(2, "2026-11-25T14:00:00Z", &[]), "2026-11-25T14:10:00Z"),
            deploy(3, "2026-11-26T10:00:00Z", &[]),
            failed(deploy(4, "2026-11-30T10:00:00Z", &[]), "2026-11-30T10:05:00Z"),
        ];
        let f = figures(&production(), &log, at(NOW), 30);
        assert_eq!(f.failed_deployments, 3);
        assert_eq!(f.change_failure_rate, Some(0.75));
        // 1 → 3: 24 h; 2 → 3: 20 h; 4 is still failing.
        let restore = f.time_to_restore.unwrap();
        assert_eq!((restore.count, restore.median, restore.p90), (2, hours(20), hours(24)));
        assert_eq!(f.unrestored, 1);
    }

    #[test]
    fn only_the_window_counts_and_commits_without_a_time_are_counted_apart() {
        let mut old = deploy(1, "2026-10-01T10:00:00Z", &[(11, "2026-10-01T09:00:00Z")]);
        old.shipped.push(Shipped { sha: sha(12), at: None });
        let mut recent = deploy(2, "2026-11-29T10:00:00Z", &[(21, "2026-11-29T09:00:00Z")]);
        recent.shipped.push(Shipped { sha: sha(22), at: None });
        let f = figures(&production(), &[old, recent], at(NOW), 7);
        assert_eq!(f.deployments, 1);
        assert_eq!(f.lead_time.map(|l| l.count), Some(1));
        assert_eq!(f.commits_without_time, 1);
        let ninety = figures(&production(), &[deploy(1, "2026-10-01T10:00:00Z", &[])], at(NOW), 90);
        assert_eq!(ninety.deployments, 1);
        assert_eq!(ninety.daily.len(), 90);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let spread = Spread::of((1..=10).map(hours).collect()).unwrap();
        assert_eq!((spread.median, spread.p90), (hours(5), hours(9)));
        let one = Spread::of(vec![hours(3)]).unwrap();
        assert_eq!((one.median, one.p90), (hours(3), hours(3)));
    }
}

//! The release log: what each environment released, month by month
//! (`views/releases/<pipeline>/<env>/<yyyy-mm>.json`) — every release with the commits it
//! shipped since the release before it there, whether it failed (its smoke checks or bake
//! failed, or it was rolled back), and the releases rollbacks put back.
//!
//! Written with each release: right after the environment's record takes it
//! ([`crate::handlers::envs::settle_from`]), and again by the sweep when it drops a finished
//! run from the index of unfinished runs, which repairs a write a crash left out. Every write
//! is idempotent: a release is one entry whatever the redeliveries. The delivery figures
//! ([`super::delivery`]) read a few months of it, never a run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::app::{App, Carried, EngineError, update_record, update_record_from};
use crate::domain::{CommitSha, EnvName, Environment, PipelineName, Release, Run, RunId, StageKind, StageStatus};
use crate::ports::StoreKey;
use crate::views::control_room::runs_since;
use crate::views::run_index::PipelineRecord;

/// How many commits one logged release keeps, the newest; past that it says so.
pub const SHIPPED_KEPT: usize = 1_000;

/// How many runs' commits are read at once when a release is logged.
const READS_AT_ONCE: usize = 16;

/// One release of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    pub run: RunId,
    pub sha: CommitSha,
    /// When its run opened: orders releases by commit.
    pub opened_at: Timestamp,
    /// When it began to run there: its deploy's end, or the end of the rollback that put it
    /// back.
    pub at: Timestamp,
    /// A rollback of this run put the release back (it was released before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put_back_by: Option<RunId>,
    /// When it was found failing there: its smoke checks or bake failed, or it was rolled
    /// back (by slipway or by a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    /// The commits it shipped since the environment's release before it, oldest first; none
    /// for a release put back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shipped: Vec<Shipped>,
    /// It shipped more commits than are listed (see [`SHIPPED_KEPT`], and the runs read).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shipped_more: bool,
}

impl Logged {
    /// A deploy of a newer release, not a rollback's.
    pub fn is_deploy(&self) -> bool {
        self.put_back_by.is_none()
    }

    fn same_as(&self, other: &Logged) -> bool {
        self.run == other.run && self.at == other.at && self.put_back_by == other.put_back_by
    }
}

/// A commit a release shipped, and when it was committed (when the host said).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipped {
    pub sha: CommitSha,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// One month of an environment's releases, by `at`, oldest first (releases of the same
/// instant in the order they were logged).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Month {
    #[serde(default)]
    pub releases: Vec<Logged>,
}

impl Month {
    /// Adds `entry` in its place unless it is there already.
    pub fn add(&mut self, entry: Logged) {
        if self.releases.iter().any(|e| e.same_as(&entry)) {
            return;
        }
        // After every release of the same instant: those were logged first, and happened so.
        let at = self.releases.partition_point(|e| e.at <= entry.at);
        self.releases.insert(at, entry);
    }

    /// Marks the deploy of `run` at `at` as failing since `failed_at` (the earliest word
    /// stands).
    pub fn mark_failed(&mut self, run: &RunId, at: Timestamp, failed_at: Timestamp) {
        for entry in self
            .releases
            .iter_mut()
            .filter(|e| e.is_deploy() && &e.run == run && e.at == at)
        {
            entry.failed_at = Some(entry.failed_at.map_or(failed_at, |f| f.min(failed_at)));
        }
    }

    fn has(&self, run: &RunId, at: Timestamp) -> bool {
        self.releases
            .iter()
            .any(|e| e.is_deploy() && &e.run == run && e.at == at)
    }
}

/// The month (UTC) `at` falls in.
pub fn month_of(at: Timestamp) -> (i16, i8) {
    let date = at.to_zoned(TimeZone::UTC).date();
    (date.year(), date.month())
}

/// The months (UTC) from `from`'s to `to`'s, oldest first.
pub fn months_between(from: Timestamp, to: Timestamp) -> Vec<(i16, i8)> {
    let (mut month, last) = (month_of(from), month_of(to));
    let mut months = Vec::new();
    while month <= last {
        months.push(month);
        month = if month.1 == 12 {
            (month.0 + 1, 1)
        } else {
            (month.0, month.1 + 1)
        };
    }
    months
}

/// What `run` did in `env`, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    /// Its own release there: its deploy succeeded.
    pub release: Option<Release>,
    /// When it was found failing there.
    pub failed_at: Option<Timestamp>,
    /// The release its rollback put back, and when that rollback ended.
    pub put_back: Option<(Release, Timestamp)>,
}

impl Facts {
    pub fn is_empty(&self) -> bool {
        self.release.is_none() && self.put_back.is_none()
    }
}

/// What `run` says of its releases in `env`. Pure.
pub fn facts(run: &Run, env: &EnvName) -> Facts {
    let release = run.release_in(env);
    let failed_check = [StageKind::Smoke, StageKind::Bake]
        .into_iter()
        .filter_map(|kind| run.stage(kind, Some(env)))
        .filter(|s| s.status == StageStatus::Failed)
        .filter_map(|s| s.finished_at.or(s.started_at))
        .min();
    let rollback = run
        .stage(StageKind::Rollback, Some(env))
        .filter(|s| s.status != StageStatus::Superseded);
    // A rollback asked for by a person says the release was failing from then.
    let rolled_back = rollback.and_then(|s| s.started_at.or(s.finished_at));
    let put_back = rollback
        .filter(|s| s.status == StageStatus::Succeeded)
        .and_then(|s| Some((s.rollback.as_ref()?.to.clone()?, s.finished_at?)));
    Facts {
        failed_at: release.as_ref().and(failed_check.or(rolled_back)),
        release,
        put_back,
    }
}

/// The month of each environment's log this process wrote last, with its version: the next
/// release logged there (a warm Lambda container's, the local server's) starts from it
/// instead of reading the month again. When another process wrote the month since, the write
/// over the old version is refused and the month is read as usual; so a month kept here only
/// ever saves a read. One month per environment, its newest written: as many as the
/// configuration has environments, whatever the history.
#[derive(Debug, Clone, Default)]
pub struct LastWritten(Arc<Mutex<HashMap<(PipelineName, EnvName), KeptMonth>>>);

/// A month of one environment's log: where it is, and what was written there.
type KeptMonth = (StoreKey, Carried<Month>);

impl LastWritten {
    /// The month at `key` of `env`'s log, if it is the one kept (and then no longer kept:
    /// whoever takes it writes it, and keeps what it wrote).
    fn take(&self, pipeline: &PipelineName, env: &EnvName, key: &StoreKey) -> Option<Carried<Month>> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let which = (pipeline.clone(), env.clone());
        match kept.get(&which) {
            Some((at, _)) if at == key => kept.remove(&which).map(|(_, month)| month),
            _ => None,
        }
    }

    /// Keeps `month`, written at `key`, unless a later month of `env`'s log is kept already
    /// (a repair of an older month does not push out the one releases are logged to now).
    fn keep(&self, pipeline: &PipelineName, env: &EnvName, key: StoreKey, month: Carried<Month>) {
        if month.1.is_none() {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let which = (pipeline.clone(), env.clone());
        // Keys end in `<yyyy>-<mm>.json`: of one environment's, the later sorts after.
        if kept.get(&which).is_none_or(|(at, _)| *at <= key) {
            kept.insert(which, (key, month));
        }
    }
}

fn key(pipeline: &PipelineName, env: &EnvName, at: Timestamp) -> StoreKey {
    let (year, month) = month_of(at);
    StoreKey::release_log(pipeline, env, year, month)
}

/// Writes what `run` did in `env` to the log, `record` being the environment's record as it
/// stands (for the release before `run`'s), `head` the pipeline's record if the caller read
/// it already. Idempotent; reads the run's month only when there is something to log, and
/// the runs between the two releases only for a release not yet logged.
pub async fn record(
    app: &App,
    run: &Run,
    env: &EnvName,
    record: &Environment,
    head: Option<&PipelineRecord>,
) -> Result<(), EngineError> {
    let facts = facts(run, env);
    if facts.is_empty() {
        return Ok(());
    }
    let what = format!("release log of {}/{env}", run.pipeline);
    if let Some(release) = &facts.release {
        let key = key(&run.pipeline, env, release.at);
        // The month this process wrote last, for a release it has not logged yet; for one
        // it has (a failure to mark, a repair by the sweep), the month as it stands.
        let kept = app
            .release_log
            .take(&run.pipeline, env, &key)
            .filter(|(month, _)| !month.has(&run.id, release.at));
        let (month, version) = match kept {
            Some(carried) => carried,
            None => app.record::<Month>(&key).await?,
        };
        let entry = if month.has(&run.id, release.at) {
            None
        } else {
            let (shipped, shipped_more) = shipped(app, run, record, release, head).await?;
            Some(Logged {
                run: run.id.clone(),
                sha: run.sha.clone(),
                opened_at: run.created_at,
                at: release.at,
                put_back_by: None,
                failed_at: None,
                shipped,
                shipped_more,
            })
        };
        // Written only if that changes it; a lost race (or a month this process wrote
        // before, written since by another) reads it again.
        let (_, written) = update_record_from(
            app.store.as_ref(),
            &app.tuning,
            &key,
            &what,
            Some((month, version)),
            |month: &mut Month| {
                if let Some(entry) = &entry {
                    month.add(entry.clone());
                }
                if let Some(failed_at) = facts.failed_at {
                    month.mark_failed(&run.id, release.at, failed_at);
                }
            },
        )
        .await?;
        app.release_log.keep(&run.pipeline, env, key, written);
    }
    if let Some((to, at)) = &facts.put_back {
        let entry = Logged {
            run: to.run.clone(),
            sha: to.sha.clone(),
            opened_at: to.opened_at,
            at: *at,
            put_back_by: Some(run.id.clone()),
            failed_at: None,
            shipped: Vec::new(),
            shipped_more: false,
        };
        update_record(
            app.store.as_ref(),
            &app.tuning,
            &key(&run.pipeline, env, *at),
            &what,
            |month: &mut Month| month.add(entry.clone()),
        )
        .await?;
    }
    Ok(())
}

/// The runs `release` (of `run`) shipped to the environment besides `run` itself, oldest
/// first: those since the environment's release before it (`record`'s); none for its first
/// release there. `true` with them when there were more than were read.
pub async fn shipped_runs(
    app: &App,
    run: &Run,
    record: &Environment,
    release: &Release,
    head: Option<&PipelineRecord>,
) -> Result<(Vec<Run>, bool), EngineError> {
    let before = record
        .releases
        .iter()
        .rposition(|r| r.run == release.run && r.at == release.at)
        .and_then(|at| record.releases[..at].iter().rev().find(|r| r.run != run.id));
    let (runs, more) = match before {
        None => (Vec::new(), false),
        // The pipeline's record as the claim read it will do: the runs shipped are older than
        // `run`, which it already placed.
        Some(before) => match head.filter(|h| h.place_of(run).is_some()) {
            Some(head) => runs_since(app, head, run, Some(before)).await?,
            None => {
                let head = app.pipeline_record(&run.pipeline).await?;
                runs_since(app, &head, run, Some(before)).await?
            }
        },
    };
    let others: Vec<RunId> = runs.into_iter().map(|e| e.id).filter(|id| *id != run.id).collect();
    let loaded: Vec<Option<Run>> = stream::iter(others)
        .map(|id| async move { Ok::<_, EngineError>(app.load(&id).await?.map(|(run, _)| run)) })
        .buffered(READS_AT_ONCE)
        .try_collect()
        .await?;
    Ok((loaded.into_iter().flatten().collect(), more))
}

/// The commits `release` (of `run`) shipped to the environment: those of the runs since the
/// environment's release before it (`record`'s), or `run`'s own for its first release there.
async fn shipped(
    app: &App,
    run: &Run,
    record: &Environment,
    release: &Release,
    head: Option<&PipelineRecord>,
) -> Result<(Vec<Shipped>, bool), EngineError> {
    let (loaded, mut more) = shipped_runs(app, run, record, release, head).await?;
    let mut shipped: Vec<Shipped> = Vec::new();
    for one in loaded.iter().chain(std::iter::once(run)) {
        more |= one.carried.truncated;
        let commits = one.carried.commits.iter().map(|c| Shipped {
            sha: c.sha.clone(),
            at: c.at,
        });
        let listed: Vec<Shipped> = if one.carried.commits.is_empty() {
            vec![Shipped {
                sha: one.sha.clone(),
                at: None,
            }]
        } else {
            commits.collect()
        };
        for commit in listed {
            if !shipped.iter().any(|s| s.sha == commit.sha) {
                shipped.push(commit);
            }
        }
    }
    let dropped = shipped.len().saturating_sub(SHIPPED_KEPT);
    shipped.drain(..dropped);
    Ok((shipped, more || dropped > 0))
}

/// What `run` did in every environment of its plan, logged again where the log lacks it:
/// the sweep's repair, once a run has finished. Reads, per environment where the run
/// released or rolled back, the month of its release; and only where that lacks something,
/// the environment's record and what logging needs.
pub async fn repair(app: &App, run: &Run) -> Result<(), EngineError> {
    for env in &run.plan.environments {
        let facts = facts(run, &env.name);
        if facts.is_empty() || logged(app, run, &env.name, &facts).await? {
            continue;
        }
        tracing::info!(run = %run.id, env = %env.name, "the release log lacked a release; writing it");
        let (record, _) = app.environment(&run.pipeline, &env.name).await?;
        self::record(app, run, &env.name, &record, None).await?;
    }
    Ok(())
}

/// The log holds everything `facts` says: the release and its failure, and the release a
/// rollback put back — one read of each month concerned (one, unless the run rolled back).
async fn logged(app: &App, run: &Run, env: &EnvName, facts: &Facts) -> Result<bool, EngineError> {
    if let Some(release) = &facts.release {
        let (month, _) = app.record::<Month>(&key(&run.pipeline, env, release.at)).await?;
        let has = month.releases.iter().any(|e| {
            e.is_deploy()
                && e.run == run.id
                && e.at == release.at
                && (facts.failed_at.is_none() || e.failed_at.is_some())
        });
        if !has {
            return Ok(false);
        }
    }
    if let Some((to, at)) = &facts.put_back {
        let (month, _) = app.record::<Month>(&key(&run.pipeline, env, *at)).await?;
        let has = month
            .releases
            .iter()
            .any(|e| e.run == to.run && e.at == *at && e.put_back_by.as_ref() == Some(&run.id));
        if !has {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The release `env` began to run in second `second` (of the Unix epoch): a deploy if one
/// began then, else a rollback's — one read, of its month.
pub async fn release_at(
    app: &App,
    pipeline: &PipelineName,
    env: &EnvName,
    second: i64,
) -> Result<Option<Logged>, EngineError> {
    let Ok(at) = Timestamp::from_second(second) else {
        return Ok(None);
    };
    let (month, _) = app.record::<Month>(&key(pipeline, env, at)).await?;
    let mut found: Vec<Logged> = month
        .releases
        .into_iter()
        .filter(|e| e.at.as_second() == second)
        .collect();
    found.sort_by_key(|e| !e.is_deploy());
    Ok(found.into_iter().next())
}

/// `env`'s releases with `at` from `from` to `to`, oldest first: the months between, read
/// at once.
pub async fn releases(
    app: &App,
    pipeline: &PipelineName,
    env: &EnvName,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<Logged>, EngineError> {
    let months: Vec<Month> = stream::iter(months_between(from, to))
        .map(|(year, month)| async move {
            Ok::<_, EngineError>(
                app.record::<Month>(&StoreKey::release_log(pipeline, env, year, month))
                    .await?
                    .0,
            )
        })
        .buffered(READS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(months
        .into_iter()
        .flat_map(|m| m.releases)
        .filter(|e| e.at >= from && e.at <= to)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn logged(n: u8, when: &str) -> Logged {
        Logged {
            run: format!("shop-{:040x}", n).parse().unwrap(),
            sha: format!("{:040x}", n).parse().unwrap(),
            opened_at: at(when),
            at: at(when),
            put_back_by: None,
            failed_at: None,
            shipped: Vec::new(),
            shipped_more: false,
        }
    }

    #[test]
    fn a_month_keeps_each_release_once_in_order_of_time() {
        let mut month = Month::default();
        month.add(logged(2, "2026-11-02T00:00:00Z"));
        month.add(logged(1, "2026-11-01T00:00:00Z"));
        month.add(logged(2, "2026-11-02T00:00:00Z"));
        let runs: Vec<_> = month.releases.iter().map(|e| e.sha.short().to_owned()).collect();
        assert_eq!(
            runs,
            [
                logged(1, "2026-11-01T00:00:00Z").sha.short(),
                logged(2, "2026-11-02T00:00:00Z").sha.short()
            ]
        );
        // A rollback putting release 1 back is another entry.
        let mut back = logged(1, "2026-11-03T00:00:00Z");
        back.put_back_by = Some(logged(2, "2026-11-02T00:00:00Z").run);
        month.add(back.clone());
        month.add(back);
        assert_eq!(month.releases.len(), 3);
    }

    #[test]
    fn the_earliest_word_of_a_failure_stands_and_a_put_back_entry_is_never_marked() {
        let mut month = Month::default();
        let first = logged(1, "2026-11-01T00:00:00Z");
        let mut back = logged(1, "2026-11-01T00:00:00Z");
        back.put_back_by = Some(logged(9, "2026-11-01T00:00:00Z").run);
        month.add(first.clone());
        month.add(back);
        month.mark_failed(&first.run, first.at, at("2026-11-01T02:00:00Z"));
        month.mark_failed(&first.run, first.at, at("2026-11-01T01:00:00Z"));
        month.mark_failed(&first.run, first.at, at("2026-11-01T03:00:00Z"));
        assert_eq!(month.releases[0].failed_at, Some(at("2026-11-01T01:00:00Z")));
        assert_eq!(month.releases[1].failed_at, None);
    }

    #[test]
    fn months_between_cross_a_year() {
        assert_eq!(
            months_between(at("2026-11-15T00:00:00Z"), at("2027-02-01T00:00:00Z")),
            [(2026, 11), (2026, 12), (2027, 1), (2027, 2)]
        );
        assert_eq!(
            months_between(at("2026-12-01T00:00:00Z"), at("2026-11-30T00:00:00Z")),
            []
        );
    }

    #[test]
    fn one_month_is_kept_per_environment_the_newest_written() {
        let kept = LastWritten::default();
        let shop: PipelineName = "shop".parse().unwrap();
        let (staging, production): (EnvName, EnvName) = ("staging".parse().unwrap(), "production".parse().unwrap());
        let written = |n: u8| {
            let mut month = Month::default();
            month.add(logged(n, "2026-11-01T00:00:00Z"));
            (month, Some(crate::ports::Version(format!("v{n}"))))
        };
        let (october, november) = (
            key(&shop, &staging, at("2026-10-31T23:00:00Z")),
            key(&shop, &staging, at("2026-11-01T01:00:00Z")),
        );
        kept.keep(&shop, &staging, november.clone(), written(1));
        kept.keep(
            &shop,
            &production,
            key(&shop, &production, at("2026-11-02T00:00:00Z")),
            written(2),
        );
        // A repair of October's log does not push out November's.
        kept.keep(&shop, &staging, october.clone(), written(3));
        assert_eq!(kept.take(&shop, &staging, &october), None);
        assert_eq!(kept.take(&shop, &staging, &november), Some(written(1)));
        // Taken: whoever took it writes it and keeps what it wrote.
        assert_eq!(kept.take(&shop, &staging, &november), None);
        // A month with no version (never written) is not kept.
        kept.keep(&shop, &staging, november.clone(), (Month::default(), None));
        assert_eq!(kept.take(&shop, &staging, &november), None);
        // December's, once written, replaces November's: one per environment however long
        // the process runs.
        let december = key(&shop, &staging, at("2026-12-01T00:00:00Z"));
        kept.keep(&shop, &staging, november.clone(), written(4));
        kept.keep(&shop, &staging, december.clone(), written(5));
        assert_eq!(kept.0.lock().unwrap().len(), 2);
        assert_eq!(kept.take(&shop, &staging, &december), Some(written(5)));
        assert_eq!(
            kept.take(&shop, &production, &key(&shop, &production, at("2026-11-30T00:00:00Z"))),
            Some(written(2))
        );
    }
}

//! The index of unfinished runs, so that the sweep (every 30 seconds, for ever) and the
//! superseding of approvals read the handful of runs still moving instead of every run
//! ever made.
//!
//! The index is one empty-ish marker object per unfinished run, `open-runs/<run id>`:
//!
//! - a run's marker is made **before** the run itself, so a run never exists unindexed
//!   (a crash in between leaves a marker without a run, which the next read drops once it
//!   is older than [`ORPHAN_AFTER`]);
//! - a finished run made unfinished again (a manual rollback of a released run) gets its
//!   marker back both before and after the write that reopened it;
//! - the marker of a finished run is removed by the sweep ([`sweep`]), which then reads the
//!   run again and puts the marker back if it was reopened in the meantime — so a reopened
//!   run is never left out of the index, whatever the interleaving;
//! - runs made before the index existed are indexed once, by the first sweep that finds no
//!   [`StoreKey::open_runs_indexed`] mark; until then [`open_runs_where`] reads every run.
//!
//! Only the sweeper removes anything, and markers are the only objects it removes. Before it
//! removes a finished run's marker it writes the run's final state into the index of runs
//! ([`crate::views::run_index`]), which readers otherwise treat as a hint for unfinished runs.

use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::app::{App, EngineError, Mark, Tuning, list_runs, load_run};
use crate::domain::{Run, RunId};
use crate::ports::{StateStore, StoreError, StoreKey};
use crate::views::run_index;

/// A marker whose run still does not exist after this long is left over from a crash.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    since: Timestamp,
}

/// Marks run `id` unfinished. Idempotent.
pub async fn mark(store: &dyn StateStore, id: &RunId, now: Timestamp) -> Result<(), EngineError> {
    let body = serde_json::to_vec(&Marker { since: now }).expect("a marker always serialises");
    match store.create(&StoreKey::open_run(id), Bytes::from(body)).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The unfinished runs whose id `wanted` accepts (a pipeline's, all but one), newest first:
/// the others are not even read. Only reads: until the sweep has indexed the runs made before
/// the index existed, this reads every run instead. Whether it has is read only until this
/// process has seen that it has ([`Seen`](crate::app::Seen)): the mark is never removed.
pub async fn open_runs_where(app: &App, wanted: impl Fn(&RunId) -> bool) -> Result<Vec<Run>, EngineError> {
    let store = app.store.as_ref();
    if !app.seen.is_set(Mark::OpenRunsIndexed, store).await? {
        let mut runs = list_runs(store, None).await?;
        runs.retain(|run| !run.status().is_finished() && wanted(&run.id));
        return Ok(runs);
    }
    let mut runs = Vec::new();
    for key in store.list(StoreKey::OPEN_RUNS).await? {
        if let Some(id) = key.open_run_id()
            && wanted(&id)
            && let Some((run, _)) = load_run(store, &id).await?
            && !run.status().is_finished()
        {
            runs.push(run);
        }
    }
    sort(&mut runs);
    Ok(runs)
}

/// What the sweep reads: every unfinished run, newest first, tidying the index as it goes —
/// indexing the runs made before it existed (once), removing the markers of finished runs
/// and of runs that were never written.
pub async fn sweep(app: &App, now: Timestamp) -> Result<Vec<Run>, EngineError> {
    let store = app.store.as_ref();
    let tuning = Tuning::default();
    // Each backfill is done once per store; once this process has seen its mark, not even
    // the mark is read again.
    if !app.seen.is_set(Mark::OpenRunsIndexed, store).await? {
        backfill(store, now).await?;
        app.seen.set(Mark::OpenRunsIndexed);
    }
    if !app.seen.is_set(Mark::ViewsIndexed, store).await? {
        run_index::backfill(store, &tuning, now).await?;
        app.seen.set(Mark::ViewsIndexed);
    }
    let mut runs = Vec::new();
    for key in store.list(StoreKey::OPEN_RUNS).await? {
        let Some(id) = key.open_run_id() else {
            continue;
        };
        match load_run(store, &id).await? {
            Some((run, _)) if !run.status().is_finished() => runs.push(run),
            Some((finished, _)) => {
                // Its entry in the index of runs and its releases in the release log take
                // their final state before the marker goes, so a crash in between leaves
                // the marker for the next sweep.
                match crate::views::release_log::repair(app, &finished).await {
                    Ok(()) => {}
                    // A month of the log that no longer reads must not stop every sweep:
                    // say so, and let the run go.
                    Err(e @ EngineError::Corrupt { .. }) => {
                        tracing::error!(run = %id, error = %e, "could not repair the release log");
                    }
                    Err(e) => return Err(e),
                }
                run_index::refresh(store, &tuning, &finished).await?;
                store.remove(&key).await?;
                // Reopened between the read and the removal? Then it keeps its marker.
                if let Some((run, _)) = load_run(store, &id).await?
                    && !run.status().is_finished()
                {
                    mark(store, &id, now).await?;
                    runs.push(run);
                } else {
                    tracing::debug!(run = %id, "finished; dropped from the index of open runs");
                }
            }
            None => {
                let since = match store.get(&key).await? {
                    Some(found) => serde_json::from_slice::<Marker>(&found.value).ok().map(|m| m.since),
                    None => continue,
                };
                let orphan = since.is_none_or(|since| {
                    since
                        .checked_add(jiff::SignedDuration::try_from(ORPHAN_AFTER).unwrap_or_default())
                        .is_ok_and(|at| at <= now)
                });
                if orphan {
                    tracing::warn!(run = %id, "open-run marker without a run; removing it");
                    store.remove(&key).await?;
                }
            }
        }
    }
    sort(&mut runs);
    Ok(runs)
}

fn sort(runs: &mut [Run]) {
    runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
}

/// Indexes the unfinished runs made before the index existed, once per state store.
async fn backfill(store: &dyn StateStore, now: Timestamp) -> Result<(), EngineError> {
    let mark_key = StoreKey::open_runs_indexed();
    if store.get(&mark_key).await?.is_some() {
        return Ok(());
    }
    let mut indexed = 0;
    for run in list_runs(store, None).await? {
        if !run.status().is_finished() {
            mark(store, &run.id, now).await?;
            indexed += 1;
        }
    }
    let body = serde_json::to_vec(&Marker { since: now }).expect("a marker always serialises");
    match store.create(&mark_key, Bytes::from(body)).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(indexed, "indexed the unfinished runs made before the index existed");
    Ok(())
}

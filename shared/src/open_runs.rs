//! The index of unfinished runs, so that the sweep (every 30 seconds, for ever) and the
//! superseding of approvals read the handful of runs still moving instead of every run
//! ever made.
//!
//! The index is one empty-ish marker object per unfinished run, `open-runs/<run id>`, and, per
//! pipeline, the runs it opened since the sweep last marked them (the places from its
//! record's [`PipelineRecord::unmarked_from`] up, in the pipeline's index of runs):
//!
//! - a run is placed in its pipeline's record — which holds it in this index too — **before**
//!   the run itself is written, in the write a push makes anyway; so a run never exists
//!   unindexed, and a push costs no write of a marker;
//! - the sweep marks the runs placed since its last pass that are still unfinished (or not
//!   written yet: a marker whose run never comes is dropped once it is older than
//!   [`ORPHAN_AFTER`]), then moves the record's place up past them;
//! - a finished run made unfinished again (a manual rollback of a released run) gets its
//!   marker back both before and after the write that reopened it;
//! - the marker of a finished run is removed by the sweep ([`sweep`]), which then reads the
//!   run again and puts the marker back if it was reopened in the meantime — so a reopened
//!   run is never left out of the index, whatever the interleaving;
//! - runs made before the index existed are indexed once, by the first sweep that finds no
//!   [`StoreKey::open_runs_indexed`] mark; until then [`open_runs_of`] reads every run.
//!
//! Only the sweeper removes anything, and markers are the only objects it removes. Before it
//! removes a finished run's marker it writes the run's final state into the index of runs
//! ([`crate::views::run_index`]), which readers otherwise treat as a hint for unfinished runs.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::app::{App, EngineError, Mark, Tuning, list_runs, load_run, update_record_from};
use crate::domain::{PipelineName, Run, RunId};
use crate::ports::{StateStore, StoreError, StoreKey};
use crate::views::run_index::{self, PipelineRecord};

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

/// The unfinished runs of `pipeline` but `except`, newest first: the others are not even
/// read. `head` is the pipeline's record, when the caller read it already (superseding does,
/// for the lineage). See [`open_runs_where`].
pub async fn open_runs_of(
    app: &App,
    pipeline: &PipelineName,
    head: Option<&PipelineRecord>,
    except: Option<&RunId>,
) -> Result<Vec<Run>, EngineError> {
    let read;
    let head = match head {
        Some(head) => head,
        None => {
            read = app.pipeline_record(pipeline).await?;
            &read
        }
    };
    open_runs_where(app, &[(pipeline, head)], |id| {
        id.pipeline() == *pipeline && Some(id) != except
    })
    .await
}

/// Every unfinished run, newest first: the metrics' gauges. Reads every pipeline's record
/// besides the markers.
pub async fn all_open_runs(app: &App) -> Result<Vec<Run>, EngineError> {
    let store = app.store.as_ref();
    let mut heads = Vec::new();
    for pipeline in run_index::pipelines(store).await? {
        let head = app.pipeline_record(&pipeline).await?;
        heads.push((pipeline, head));
    }
    let heads: Vec<(&PipelineName, &PipelineRecord)> = heads.iter().map(|(p, h)| (p, h)).collect();
    open_runs_where(app, &heads, |_| true).await
}

/// The unfinished runs whose id `wanted` accepts, newest first: the others are not even
/// read. They are the runs of the markers, and the runs of the pipelines in `heads` (each
/// with its record) opened since the sweep last marked theirs
/// ([`PipelineRecord::unmarked_from`]). Only reads: until the sweep has indexed the runs made
/// before the index existed, this reads every run instead. Whether it has is read only until
/// this process has seen that it has ([`Seen`](crate::app::Seen)): the mark is never removed.
async fn open_runs_where(
    app: &App,
    heads: &[(&PipelineName, &PipelineRecord)],
    wanted: impl Fn(&RunId) -> bool,
) -> Result<Vec<Run>, EngineError> {
    let store = app.store.as_ref();
    if !app.seen.is_set(Mark::OpenRunsIndexed, store).await? {
        let mut runs = list_runs(store, None).await?;
        runs.retain(|run| !run.status().is_finished() && wanted(&run.id));
        return Ok(runs);
    }
    let mut ids: Vec<RunId> = store
        .list(StoreKey::OPEN_RUNS)
        .await?
        .iter()
        .filter_map(StoreKey::open_run_id)
        .filter(|id| wanted(id))
        .collect();
    let mut seen: HashSet<RunId> = ids.iter().cloned().collect();
    for (pipeline, head) in heads {
        for entry in run_index::entries_at(store, head, pipeline, head.unmarked()).await? {
            if wanted(&entry.id) && seen.insert(entry.id.clone()) {
                ids.push(entry.id);
            }
        }
    }
    let mut runs = Vec::new();
    for id in ids {
        if let Some((run, _)) = load_run(store, &id).await?
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
    // The runs just marked, as read to mark them: not read again below.
    let mut just_marked: HashMap<RunId, Run> = HashMap::new();
    for pipeline in run_index::pipelines(store).await? {
        match mark_unmarked(app, &pipeline, now).await {
            Ok(marked) => just_marked.extend(marked.into_iter().map(|run| (run.id.clone(), run))),
            // A pipeline's record that no longer reads must not stop every sweep: its pushes
            // fail loudly too, and the other pipelines go on.
            Err(e @ EngineError::Corrupt { .. }) => {
                tracing::error!(%pipeline, error = %e, "could not mark the pipeline's newest runs in the index of unfinished runs");
            }
            Err(e) => return Err(e),
        }
    }
    let mut runs = Vec::new();
    for key in store.list(StoreKey::OPEN_RUNS).await? {
        let Some(id) = key.open_run_id() else {
            continue;
        };
        if let Some(run) = just_marked.remove(&id) {
            runs.push(run);
            continue;
        }
        match load_run(store, &id).await? {
            Some((run, _)) if !run.status().is_finished() => runs.push(run),
            Some((finished, _)) => {
                // Its entry in the index of runs and its releases in the release log take
                // their final state before the marker goes, so a crash in between leaves
                // the marker for the next sweep.
                finish(app, &finished).await?;
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

/// Marks the unfinished runs `pipeline` opened since the last sweep (its record's
/// [`PipelineRecord::unmarked_from`]), then moves that place up past them. A run already
/// finished takes its final state in the index of runs and the release log first, as a
/// finished run does before its marker goes; its entry still kept in the record takes it in
/// the write that moves the place up. A place whose run is not written (yet: its push may be
/// under way) is marked too, and that marker is dropped later if the run never comes. A crash
/// before the place moves up only makes the next sweep do it again. Returns the unfinished
/// runs it marked, as it read them.
async fn mark_unmarked(app: &App, pipeline: &PipelineName, now: Timestamp) -> Result<Vec<Run>, EngineError> {
    let store = app.store.as_ref();
    let key = StoreKey::lineage(pipeline);
    let (head, version) = PipelineRecord::read(store, pipeline).await?;
    let places = head.unmarked();
    let Some(from) = head.unmarked_from else {
        return Ok(Vec::new());
    };
    let mut finished = Vec::new();
    let mut marked = Vec::new();
    for entry in run_index::entries_at(store, &head, pipeline, places.clone()).await? {
        match load_run(store, &entry.id).await? {
            Some((run, _)) if run.status().is_finished() => {
                repair_log(app, &run).await?;
                let in_record = head.recent.iter().any(|e| e.id == run.id);
                if !in_record {
                    run_index::record(store, &app.tuning, &run, entry.seq).await?;
                }
                finished.push((run, entry.seq));
            }
            Some((run, _)) => {
                mark(store, &run.id, now).await?;
                marked.push(run);
            }
            None => mark(store, &entry.id, now).await?,
        }
    }
    // Unless a push was given a place below `from` since (delivered again): the next sweep
    // marks from there.
    let (written_out, _) = update_record_from(
        store,
        &app.tuning,
        &key,
        &format!("the index of runs of {pipeline}"),
        Some((head, version)),
        |record: &mut PipelineRecord| {
            let written_out: Vec<usize> = (0..finished.len())
                .filter(|&i| {
                    let (run, seq) = &finished[i];
                    !record.refresh_recent(&run_index::RunEntry::of(run, *seq))
                })
                .collect();
            if record.unmarked_from == Some(from) {
                record.unmarked_from = (record.next_run > places.end).then_some(places.end);
            }
            written_out
        },
    )
    .await?;
    // Entries written out to their chunk since they were read here (idempotent for those
    // refreshed there already).
    for i in written_out {
        let (run, seq) = &finished[i];
        run_index::record(store, &app.tuning, run, *seq).await?;
    }
    Ok(marked)
}

/// What a finished run's leaving the index of unfinished runs writes first: its releases in
/// the release log, and its final state in the index of runs.
async fn finish(app: &App, finished: &Run) -> Result<(), EngineError> {
    repair_log(app, finished).await?;
    run_index::refresh(app.store.as_ref(), &Tuning::default(), finished).await
}

/// The release log repaired with what `finished` released. A month of the log that no longer
/// reads must not stop every sweep: that is said, and the run let go.
async fn repair_log(app: &App, finished: &Run) -> Result<(), EngineError> {
    match crate::views::release_log::repair(app, finished).await {
        Err(e @ EngineError::Corrupt { .. }) => {
            tracing::error!(run = %finished.id, error = %e, "could not repair the release log");
            Ok(())
        }
        other => other,
    }
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

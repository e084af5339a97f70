//! Pushes of one pipeline that arrive together share one write of the pipeline's record.
//!
//! Every push learns its commit into the pipeline's lineage and takes a place in the index of
//! runs, in one conditional write of `lineage/<pipeline>.json`. Two hundred pushes at once
//! would each read, decide and write that record, lose the race to each other and retry until
//! some gave up (503). Instead, within one process, the pushes waiting for the record line up:
//! one of them — the leader — takes everyone waiting, applies all their changes in one
//! conditional write, and hands each its answer. Across processes the conditional write still
//! decides, as before.
//!
//! When a batch fills a chunk of the index, its leader also writes the full chunk out
//! ([`run_index::flush`]) before it lets the next batch in: once per chunk, not once per push
//! that saw the chunk full (a batch of 200 pushes crossing a chunk used to start 200 flushes
//! racing on the same two records).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::app::{App, EngineError, update_record_from};
use crate::domain::Run;
use crate::ports::StoreKey;
use crate::views::{PipelineRecord, run_index};

/// A place in the index.
type Placed = i64;
type Answer = Result<Placed, Arc<EngineError>>;

#[derive(Default)]
struct Line {
    waiting: Mutex<Vec<(Run, oneshot::Sender<Answer>)>>,
    leader: tokio::sync::Mutex<()>,
}

/// A state store (by address) and a record's key.
type LineKey = (usize, String);

/// One line per state store and record.
static LINES: LazyLock<Mutex<HashMap<LineKey, Arc<Line>>>> = LazyLock::new(Default::default);

/// Learns `run`'s push into its pipeline's record and gives it its place (see
/// [`PipelineRecord::open`]), together with whatever other pushes of the pipeline wait.
pub async fn open(app: &App, run: &Run) -> Result<Placed, EngineError> {
    let key = StoreKey::lineage(&run.pipeline);
    let store = Arc::as_ptr(&app.store).cast::<()>() as usize;
    let line = LINES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((store, key.as_str().to_owned()))
        .or_default()
        .clone();
    let mut answer = join(&line, run);
    loop {
        let leading = tokio::select! {
            biased;
            got = &mut answer => match got {
                Ok(Ok(placed)) => return Ok(placed),
                Ok(Err(e)) => return Err(unshare(e)),
                // The leader holding this push was cancelled: line up again.
                Err(_) => {
                    answer = join(&line, run);
                    continue;
                }
            },
            guard = line.leader.lock() => guard,
        };
        let batch = std::mem::take(&mut *line.waiting.lock().unwrap_or_else(PoisonError::into_inner));
        if !batch.is_empty() {
            let runs: Vec<&Run> = batch.iter().map(|(run, _)| run).collect();
            let what = format!("the lineage of {}", run.pipeline);
            let decided = update_record_from(
                app.store.as_ref(),
                &app.tuning,
                &key,
                &what,
                None,
                |record: &mut PipelineRecord| {
                    let placed: Vec<Placed> = runs
                        .iter()
                        .map(|run| {
                            record.lineage.learn(&run.sha, &run.parents);
                            record.open(run)
                        })
                        .collect();
                    (placed, record.unflushed())
                },
            )
            .await;
            match decided {
                Ok(((placed, unflushed), written)) => {
                    for ((_, tx), seq) in batch.into_iter().zip(placed) {
                        let _ = tx.send(Ok(seq));
                    }
                    // Still leading: no batch of this process races the flush on the record.
                    // One cut short is done again by the next batch's leader (the record
                    // still says so), and pages read the entries from the record meanwhile.
                    // The flush starts from the record as this batch wrote it, not read again.
                    if unflushed
                        && let Err(e) = run_index::flush(app.store.as_ref(), &app.tuning, &run.pipeline, written).await
                    {
                        tracing::warn!(pipeline = %run.pipeline, error = %e, "writing out a full chunk of the index of runs failed; the next push retries");
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for (_, tx) in batch {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        }
        drop(leading);
    }
}

fn join(line: &Line, run: &Run) -> oneshot::Receiver<Answer> {
    let (tx, rx) = oneshot::channel();
    line.waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((run.clone(), tx));
    rx
}

/// The batch's error, for one of its pushes: itself when it was the only one.
fn unshare(e: Arc<EngineError>) -> EngineError {
    match Arc::try_unwrap(e) {
        Ok(e) => e,
        Err(shared) => EngineError::Unavailable(Box::new(Shared(shared))),
    }
}

/// An error several pushes of one batch share.
#[derive(Debug)]
struct Shared(Arc<EngineError>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

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
//!
//! The same [`Line`] serves the deploys that claim one environment's lease at once
//! ([`crate::handlers::envs::claim`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::app::{App, EngineError, update_record_from};
use crate::domain::Run;
use crate::ports::StoreKey;
use crate::views::{PipelineRecord, run_index};

/// The changes of one record that wait together in one process, and the turn to write it.
/// Whoever gets the turn first decides every change waiting then, in one write (or whatever
/// its `lead` does), and hands each its answer. Jobs are owned, and cloned when a job must
/// line up again.
pub(crate) struct Line<J, A> {
    waiting: Mutex<Vec<(J, Reply<A>)>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// Where a waiting job's answer goes: an error is shared by the whole batch.
type Reply<A> = oneshot::Sender<Result<A, Arc<EngineError>>>;

impl<J, A> Default for Line<J, A> {
    fn default() -> Self {
        Self {
            waiting: Mutex::default(),
            turn: Arc::default(),
        }
    }
}

impl<J: Clone, A> Line<J, A> {
    /// `job`'s answer, decided together with every job waiting at the same time: by this
    /// caller, if it gets the turn first, with `lead` (given the jobs in the order they came,
    /// it answers each in that order).
    pub(crate) async fn together<F, Fut>(&self, job: &J, lead: F) -> Result<A, EngineError>
    where
        F: Fn(Vec<J>) -> Fut,
        Fut: Future<Output = Result<Vec<A>, EngineError>>,
    {
        let mut answer = self.join(job);
        loop {
            let turn = tokio::select! {
                biased;
                got = &mut answer => match got {
                    Ok(Ok(answered)) => return Ok(answered),
                    Ok(Err(e)) => return Err(unshare(e)),
                    // Whoever took this job along was cancelled: line up again.
                    Err(_) => {
                        answer = self.join(job);
                        continue;
                    }
                },
                turn = self.turn.lock() => turn,
            };
            let batch = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
            if !batch.is_empty() {
                let (jobs, answers): (Vec<J>, Vec<_>) = batch.into_iter().unzip();
                match lead(jobs).await {
                    Ok(answered) => {
                        for (tx, answer) in answers.into_iter().zip(answered) {
                            let _ = tx.send(Ok(answer));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for tx in answers {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            }
            drop(turn);
        }
    }

    /// The turn alone, for a change decided on its own: held until dropped.
    pub(crate) async fn turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.turn.clone().lock_owned().await
    }

    fn join(&self, job: &J) -> oneshot::Receiver<Result<A, Arc<EngineError>>> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((job.clone(), tx));
        rx
    }
}

/// A state store (by address) and a record's key.
type LineKey = (usize, String);

/// The lines of one kind of record: one per state store and key.
pub(crate) type Lines<J, A> = LazyLock<Mutex<HashMap<LineKey, Arc<Line<J, A>>>>>;

/// The line of the record at `key` in `app`'s store.
pub(crate) fn line<J, A>(lines: &Lines<J, A>, app: &App, key: &StoreKey) -> Arc<Line<J, A>> {
    let store = Arc::as_ptr(&app.store).cast::<()>() as usize;
    lines
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry((store, key.as_str().to_owned()))
        .or_default()
        .clone()
}

/// A place in the index.
type Placed = i64;

/// The pushes waiting for each pipeline's record.
static PUSHES: Lines<Run, Placed> = LazyLock::new(Default::default);

/// Learns `run`'s push into its pipeline's record and gives it its place (see
/// [`PipelineRecord::open`]), together with whatever other pushes of the pipeline wait.
pub async fn open(app: &App, run: &Run) -> Result<Placed, EngineError> {
    let key = StoreKey::lineage(&run.pipeline);
    let line = line(&PUSHES, app, &key);
    let what = format!("the lineage of {}", run.pipeline);
    line.together(run, |runs: Vec<Run>| {
        let (key, what) = (&key, &what);
        async move {
            let ((placed, unflushed), written) = update_record_from(
                app.store.as_ref(),
                &app.tuning,
                key,
                what,
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
            .await?;
            // Still holding the turn: no batch of this process races the flush on the record.
            // One cut short is done again by the next batch's leader (the record still says
            // so), and pages read the entries from the record meanwhile. The flush starts
            // from the record as this batch wrote it, not read again.
            if unflushed
                && let Err(e) = run_index::flush(app.store.as_ref(), &app.tuning, &runs[0].pipeline, written).await
            {
                tracing::warn!(pipeline = %runs[0].pipeline, error = %e, "writing out a full chunk of the index of runs failed; the next push retries");
            }
            Ok(placed)
        }
    })
    .await
}

/// A batch's error, for one of its members: itself when it was the only one.
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

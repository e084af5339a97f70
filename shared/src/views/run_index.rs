//! Per pipeline, every run in the order it opened: what `/api/runs`, `slipway runs` and the
//! approval page's "what this brings" read, at a cost bounded by what they show.
//!
//! Each run gets a place (`seq`) in its pipeline when it opens, in the same conditional write
//! that learns its push into the pipeline's lineage ([`PipelineRecord`], stored at
//! `lineage/<pipeline>.json`), and keeps it in the run itself. Its entry ([`RunEntry`]: the
//! commit, status and times a list shows) lives in chunk `seq / CHUNK`, at
//! `views/runs/<pipeline>/<chunk>.json`. A page of the newest runs reads the pipeline record
//! and one or two chunks; an older page starts at its cursor.
//!
//! How the index stays true:
//!
//! - the entry is written **before** the run is created, so a run is never missing from the
//!   index (an entry whose run was never created is skipped when read);
//! - an entry is rewritten when its run finishes (by the sweep, when it drops the run from the
//!   index of unfinished runs) and when a finished run is reopened (by the write that reopens
//!   it); in between, an entry that says "unfinished" is only a hint: readers load that run
//!   itself for its status — a few runs, never the history;
//! - an entry is only ever replaced by one at least as recent (`updated_at`), so a late or
//!   repeated write never puts an older state over a newer one;
//! - runs made before the index existed are indexed once ([`backfill`], run by the sweep),
//!   below 0 and newest first, so they page after every newer run without any coordination
//!   with the runs opening meanwhile.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::app::{EngineError, Tuning, load_run, read_record, update_record};
use crate::domain::{BranchName, CommitSha, Lineage, PipelineName, RepoName, Run, RunId, RunStatus};
use crate::ports::{StateStore, StoreError, StoreKey};

/// Entries per chunk object.
pub const CHUNK: i64 = 100;

/// The most runs one page shows.
pub const MAX_PAGE: usize = 200;

/// How many runs a pipeline record remembers the place of, so a push delivered again finds the
/// place it was given.
const PLACED_KEPT: usize = 64;

/// How much of a commit message's first line an entry keeps.
const MESSAGE_CHARS: usize = 200;

/// How many chunks one page may read past empty ones (places given to pushes that never
/// became runs) before it stops and hands back a cursor.
const MAX_CHUNKS_PER_PAGE: usize = 8;

/// What the index knows of a pipeline, kept in its lineage record: the lineage itself, and the
/// places given to its runs. One conditional write at a push updates both.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PipelineRecord {
    #[serde(flatten)]
    pub lineage: Lineage,
    /// The place the next run gets.
    #[serde(default)]
    pub next_run: i64,
    /// The places given lately, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placed: Vec<Placed>,
    /// How many runs made before the index existed were indexed, at places -1 (newest) down.
    #[serde(default)]
    pub legacy: i64,
    /// Those of them that were unfinished when indexed, so their entry can be found again when
    /// they finish (they have no place of their own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_open: Vec<Placed>,
}

/// A run and its place in its pipeline's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub run: RunId,
    pub seq: i64,
}

impl PipelineRecord {
    /// The place of `run`: the one it was given if it was given one lately, else the next.
    pub fn place(&mut self, run: &RunId) -> i64 {
        if let Some(p) = self.placed.iter().find(|p| p.run == *run) {
            return p.seq;
        }
        let seq = self.next_run;
        self.next_run += 1;
        self.placed.push(Placed { run: run.clone(), seq });
        if self.placed.len() > PLACED_KEPT {
            let extra = self.placed.len() - PLACED_KEPT;
            self.placed.drain(..extra);
        }
        seq
    }

    /// `run`'s place in the index: its own, or the one the backfill gave it.
    pub fn place_of(&self, run: &Run) -> Option<i64> {
        run.seq
            .or_else(|| self.legacy_open.iter().find(|p| p.run == run.id).map(|p| p.seq))
    }

    /// The lowest place in the index (legacy runs sit below 0).
    fn lowest(&self) -> i64 {
        -self.legacy
    }
}

/// One run, as a list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    pub seq: i64,
    pub id: RunId,
    pub repo: RepoName,
    pub branch: BranchName,
    pub sha: CommitSha,
    /// The first line of the commit message, cut to 200 characters.
    pub message: String,
    pub author: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_stage: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl RunEntry {
    pub fn of(run: &Run, seq: i64) -> Self {
        let first = run.commit.message.lines().next().unwrap_or("");
        Self {
            seq,
            id: run.id.clone(),
            repo: run.repo.clone(),
            branch: run.branch.clone(),
            sha: run.sha.clone(),
            message: first.chars().take(MESSAGE_CHARS).collect(),
            author: run
                .commit
                .author_login
                .clone()
                .unwrap_or_else(|| run.commit.author_name.clone()),
            status: run.status(),
            current_stage: run.current_stage().map(|s| s.label()),
            created_at: run.created_at,
            updated_at: run.updated_at,
        }
    }

    /// The run's pipeline.
    pub fn pipeline(&self) -> PipelineName {
        self.id.pipeline()
    }

    /// The entry as `/api/runs` and `slipway runs --json` show it.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "pipeline": self.pipeline(),
            "repo": self.repo,
            "branch": self.branch,
            "sha": self.sha,
            "message": self.message,
            "author": self.author,
            "status": self.status,
            "current_stage": self.current_stage,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// One chunk of a pipeline's index: the entries of places `n * CHUNK .. (n + 1) * CHUNK`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Chunk {
    #[serde(default)]
    entries: Vec<RunEntry>,
}

impl Chunk {
    /// Puts `entry` in, unless the chunk already holds a more recent state of its run.
    fn upsert(&mut self, entry: RunEntry) {
        match self.entries.iter_mut().find(|e| e.id == entry.id) {
            Some(old) if old.updated_at > entry.updated_at => {}
            Some(old) => *old = entry,
            None => {
                self.entries.push(entry);
                self.entries.sort_by_key(|e| e.seq);
            }
        }
    }
}

fn chunk_of(seq: i64) -> i64 {
    seq.div_euclid(CHUNK)
}

/// Writes `run`'s entry at place `seq` (idempotent; never over a more recent state).
pub async fn record(store: &dyn StateStore, tuning: &Tuning, run: &Run, seq: i64) -> Result<(), EngineError> {
    let key = StoreKey::run_chunk(&run.pipeline, chunk_of(seq));
    let entry = RunEntry::of(run, seq);
    update_record(store, tuning, &key, "an index of runs", |chunk: &mut Chunk| {
        chunk.upsert(entry.clone())
    })
    .await
}

/// Rewrites `run`'s entry from the run as it stands, wherever its place is: its own, or the one
/// the backfill gave it. Nothing if it has none (made before the index, not yet indexed: the
/// backfill will index it as it stands).
pub async fn refresh(store: &dyn StateStore, tuning: &Tuning, run: &Run) -> Result<(), EngineError> {
    let seq = match run.seq {
        Some(seq) => Some(seq),
        None => read_record::<PipelineRecord>(store, &StoreKey::lineage(&run.pipeline))
            .await?
            .0
            .place_of(run),
    };
    match seq {
        Some(seq) => record(store, tuning, run, seq).await,
        None => Ok(()),
    }
}

/// A page of one pipeline's runs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPage {
    pub entries: Vec<RunEntry>,
    /// Where the next (older) page starts; `None` when this one reaches the oldest run.
    pub next: Option<i64>,
}

/// Up to `limit` runs of `pipeline` placed below `before` (all, if `None`), newest first.
/// Unfinished entries are read from their runs, so their status is current.
pub async fn page(
    store: &dyn StateStore,
    pipeline: &PipelineName,
    before: Option<i64>,
    limit: usize,
) -> Result<RunPage, EngineError> {
    let (head, _) = read_record::<PipelineRecord>(store, &StoreKey::lineage(pipeline)).await?;
    let lowest = head.lowest();
    let mut top = before.unwrap_or(head.next_run).min(head.next_run);
    let mut entries = Vec::new();
    let mut chunks = 0;
    while entries.len() < limit && top > lowest && chunks < MAX_CHUNKS_PER_PAGE {
        let n = chunk_of(top - 1);
        let (chunk, _) = read_record::<Chunk>(store, &StoreKey::run_chunk(pipeline, n)).await?;
        chunks += 1;
        for entry in chunk.entries.into_iter().rev() {
            if entry.seq >= top || entry.seq < lowest {
                continue;
            }
            if entries.len() == limit {
                break;
            }
            entries.push(entry);
        }
        top = if entries.len() == limit {
            entries.last().map_or(top, |e| e.seq)
        } else {
            n * CHUNK
        };
    }
    let next = (top > lowest).then_some(top);
    let entries = freshen(store, entries).await?;
    Ok(RunPage { entries, next })
}

/// Replaces each unfinished entry with its run as it stands; drops entries whose run was never
/// written (a push that crashed between indexing and creating its run).
async fn freshen(store: &dyn StateStore, entries: Vec<RunEntry>) -> Result<Vec<RunEntry>, EngineError> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        if entry.status.is_finished() {
            out.push(entry);
            continue;
        }
        if let Some((run, _)) = load_run(store, &entry.id).await? {
            out.push(RunEntry::of(&run, entry.seq));
        }
    }
    Ok(out)
}

/// Where each pipeline's next page starts: `shop:120,web:-4`. A pipeline not named starts at
/// its newest run; one at [`Cursor::DONE`] has nothing older.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor(pub BTreeMap<PipelineName, i64>);

impl Cursor {
    /// A pipeline whose runs were all shown.
    pub const DONE: i64 = i64::MIN;
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (pipeline, seq) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if *seq == Self::DONE {
                write!(f, "{pipeline}:done")?;
            } else {
                write!(f, "{pipeline}:{seq}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || "expected the `next` of a previous page, like shop:120".to_owned();
        let mut map = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (pipeline, seq) = part.split_once(':').ok_or_else(bad)?;
            let pipeline = PipelineName::parse(pipeline).map_err(|_| bad())?;
            let seq = match seq {
                "done" => Self::DONE,
                n => n.parse().map_err(|_| bad())?,
            };
            map.insert(pipeline, seq);
        }
        Ok(Self(map))
    }
}

/// Up to `limit` runs of any of `pipelines` (those of `repo` only, if given), newest first,
/// from `cursor`; and the cursor of the next page, if there is more.
pub async fn newest(
    store: &dyn StateStore,
    pipelines: &[PipelineName],
    repo: Option<&RepoName>,
    cursor: &Cursor,
    limit: usize,
) -> Result<(Vec<RunEntry>, Option<Cursor>), EngineError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut pages = BTreeMap::new();
    let mut candidates = Vec::new();
    for pipeline in pipelines {
        let before = cursor.0.get(pipeline).copied();
        if before == Some(Cursor::DONE) {
            pages.insert(pipeline.clone(), (before, None, 0));
            continue;
        }
        let page = page(store, pipeline, before, limit).await?;
        let mine: Vec<RunEntry> = page
            .entries
            .into_iter()
            .filter(|e| repo.is_none_or(|r| e.repo.as_str().eq_ignore_ascii_case(r.as_str())))
            .collect();
        pages.insert(pipeline.clone(), (before, page.next, mine.len()));
        candidates.extend(mine);
    }
    candidates.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
    candidates.truncate(limit);
    // Each pipeline's next page starts below the last of its entries shown; where its page
    // ended if all of them were; where this page started if none was.
    let mut next = Cursor::default();
    for (pipeline, (before, page_next, found)) in pages {
        let shown: Vec<&RunEntry> = candidates.iter().filter(|e| e.pipeline() == pipeline).collect();
        let start = if shown.len() == found {
            Some(page_next.unwrap_or(Cursor::DONE))
        } else {
            shown.last().map(|e| e.seq).or(before)
        };
        if let Some(start) = start {
            next.0.insert(pipeline, start);
        }
    }
    let more = pipelines
        .iter()
        .any(|p| next.0.get(p).is_none_or(|seq| *seq != Cursor::DONE));
    Ok((candidates, more.then_some(next)))
}

/// Entries of `pipeline` (whose record is `head`) from place `from` down, read until `stop` says so or `max` were read:
/// what the approval page needs to list the commits a release brings.
pub async fn walk_down(
    store: &dyn StateStore,
    head: &PipelineRecord,
    pipeline: &PipelineName,
    from: i64,
    max: usize,
    mut stop: impl FnMut(&RunEntry) -> bool,
) -> Result<Vec<RunEntry>, EngineError> {
    let mut out = Vec::new();
    let mut top = from.saturating_add(1);
    while top > head.lowest() && out.len() < max {
        let n = chunk_of(top - 1);
        let (chunk, _) = read_record::<Chunk>(store, &StoreKey::run_chunk(pipeline, n)).await?;
        for entry in chunk.entries.into_iter().rev().filter(|e| e.seq < top) {
            if stop(&entry) || out.len() == max {
                return Ok(out);
            }
            out.push(entry);
        }
        top = n * CHUNK;
    }
    Ok(out)
}

/// Indexes the runs made before the index existed, once per state store: every run without a
/// place, per pipeline newest first at places -1, -2, …. Idempotent (the places follow from the
/// runs alone), so a backfill cut short is simply done again. `false` if it had been done.
pub async fn backfill(store: &dyn StateStore, tuning: &Tuning, now: Timestamp) -> Result<bool, EngineError> {
    let done = StoreKey::views_indexed();
    if store.get(&done).await?.is_some() {
        return Ok(false);
    }
    let mut legacy: BTreeMap<PipelineName, Vec<Run>> = BTreeMap::new();
    for key in store.list(StoreKey::RUNS).await? {
        let Some(id) = key.run_id() else { continue };
        if let Some((run, _)) = load_run(store, &id).await?
            && run.seq.is_none()
        {
            legacy.entry(run.pipeline.clone()).or_default().push(run);
        }
    }
    let mut indexed = 0;
    for (pipeline, mut runs) in legacy {
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        let placed: Vec<(i64, &Run)> = runs.iter().zip(1..).map(|(run, k)| (-k, run)).collect();
        let mut by_chunk: BTreeMap<i64, Vec<RunEntry>> = BTreeMap::new();
        for (seq, run) in &placed {
            by_chunk
                .entry(chunk_of(*seq))
                .or_default()
                .push(RunEntry::of(run, *seq));
        }
        for (n, entries) in by_chunk {
            update_record(
                store,
                tuning,
                &StoreKey::run_chunk(&pipeline, n),
                "an index of runs",
                |chunk: &mut Chunk| {
                    for entry in &entries {
                        chunk.upsert(entry.clone());
                    }
                },
            )
            .await?;
        }
        let count = placed.len() as i64;
        let open: Vec<Placed> = placed
            .iter()
            .filter(|(_, run)| !run.status().is_finished())
            .map(|(seq, run)| Placed {
                run: run.id.clone(),
                seq: *seq,
            })
            .collect();
        update_record(
            store,
            tuning,
            &StoreKey::lineage(&pipeline),
            "a pipeline's record",
            |record: &mut PipelineRecord| {
                record.legacy = record.legacy.max(count);
                for p in &open {
                    if !record.legacy_open.contains(p) {
                        record.legacy_open.push(p.clone());
                    }
                }
            },
        )
        .await?;
        indexed += count;
    }
    let body = serde_json::to_vec(&serde_json::json!({ "indexed_at": now, "runs": indexed }))
        .expect("a marker always serialises");
    match store.create(&done, Bytes::from(body)).await {
        Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(runs = indexed, "indexed the runs made before the index of runs existed");
    Ok(true)
}

/// Finds the runs whose id starts with `prefix` (a run id, or the start of one) or whose
/// commit starts with it in any pipeline with a lineage: one listing per pipeline at most,
/// never a read of every run.
pub async fn resolve(store: &dyn StateStore, prefix: &str) -> Result<Vec<RunId>, EngineError> {
    let clean = !prefix.is_empty()
        && prefix.len() <= 100
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !clean {
        return Ok(Vec::new());
    }
    let ids = |keys: Vec<StoreKey>| keys.iter().filter_map(StoreKey::run_id).collect::<Vec<_>>();
    let direct = ids(store.list(&format!("{}{prefix}", StoreKey::RUNS)).await?);
    if !direct.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(direct);
    }
    let mut found = Vec::new();
    for key in store.list(StoreKey::LINEAGE).await? {
        let Some(pipeline) = key
            .as_str()
            .strip_prefix(StoreKey::LINEAGE)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        found.extend(ids(store
            .list(&format!("{}{pipeline}-{prefix}", StoreKey::RUNS))
            .await?));
    }
    Ok(found)
}

/// The pipelines that have a record (a lineage): one listing.
pub async fn pipelines(store: &dyn StateStore) -> Result<Vec<PipelineName>, EngineError> {
    Ok(store
        .list(StoreKey::LINEAGE)
        .await?
        .iter()
        .filter_map(|k| {
            k.as_str()
                .strip_prefix(StoreKey::LINEAGE)
                .and_then(|k| k.strip_suffix(".json"))
                .and_then(|p| PipelineName::parse(p).ok())
        })
        .collect())
}

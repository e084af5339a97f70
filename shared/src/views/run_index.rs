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
use futures::{StreamExt as _, TryStreamExt as _, stream};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::app::{Carried, EngineError, Tuning, load_run, read_record, update_record, update_record_from};
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

/// How many store reads a page makes at once (pipelines' records, unfinished runs): on S3
/// each is a round trip, so a page over many pipelines or unfinished runs costs a few round
/// trips' time, not the sum of them.
const READS_AT_ONCE: usize = 16;

/// What the index knows of a pipeline, kept in its lineage record: the lineage itself, and the
/// places given to its runs. One conditional write at a push updates both.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// Kept as the record's `links` field, where a lineage record of its own keeps them.
    #[serde(
        default,
        rename = "links",
        with = "crate::domain::lineage::as_links",
        skip_serializing_if = "Lineage::is_empty"
    )]
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
    /// The entries of the newest runs, kept here — in the write that places them — until their
    /// chunk is full and written out ([`flush`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<RunEntry>,
    /// The runs placed from here up opened without a marker of their own in the index of
    /// unfinished runs: this place is that index's part for them ([`crate::open_runs`]). The
    /// sweep marks those still unfinished, then moves it up past them (`None` once nothing is
    /// left). Absent from records written before it existed, when every run had its marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmarked_from: Option<i64>,
}

/// A run and its place in its pipeline's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub run: RunId,
    pub seq: i64,
}

impl PipelineRecord {
    /// `pipeline`'s record as stored, with its version (the default, and no version, if it was
    /// never written).
    pub async fn read(store: &dyn StateStore, pipeline: &PipelineName) -> Result<Carried<Self>, EngineError> {
        read_record(store, &StoreKey::lineage(pipeline)).await
    }

    /// The place of `run`: the one it was given if it was given one lately, else the next.
    pub fn place(&mut self, run: &RunId) -> i64 {
        if let Some(p) = self.placed.iter().find(|p| p.run == *run) {
            return p.seq;
        }
        let seq = self.next_run;
        self.next_run += 1;
        self.placed.push(Placed { run: run.clone(), seq });
        crate::domain::keep_newest(&mut self.placed, PLACED_KEPT);
        seq
    }

    /// Places `run` (see [`PipelineRecord::place`]) and keeps its entry among the recent ones;
    /// [`PipelineRecord::unflushed`] then says whether a chunk filled up.
    pub fn open(&mut self, run: &Run) -> i64 {
        let seq = self.place(&run.id);
        upsert(&mut self.recent, RunEntry::of(run, seq));
        // Its own place, not only the lowest given since: a push delivered again may get a
        // place the sweep already passed (its run was not written then).
        self.unmarked_from = Some(self.unmarked_from.map_or(seq, |from| from.min(seq)));
        seq
    }

    /// Puts `entry` in place of its run's entry kept here, if one is (never over a more recent
    /// state). `false` if its run's entry is not among the recent ones (written out to its
    /// chunk, or never placed).
    pub fn refresh_recent(&mut self, entry: &RunEntry) -> bool {
        if self.recent.iter().any(|e| e.id == entry.id) {
            upsert(&mut self.recent, entry.clone());
            true
        } else {
            false
        }
    }

    /// The places of runs opened without a marker, lowest first ([`PipelineRecord::unmarked_from`]).
    pub fn unmarked(&self) -> std::ops::Range<i64> {
        self.unmarked_from.map_or(0..0, |from| from..self.next_run)
    }

    /// Whether entries of chunks before the newest wait here to be written out.
    pub fn unflushed(&self) -> bool {
        let newest = chunk_of(self.next_run - 1);
        self.recent.iter().any(|e| chunk_of(e.seq) < newest)
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
        upsert(&mut self.entries, entry);
    }
}

/// Puts `entry` into `entries` (kept in place order), unless they already hold a more recent
/// state of its run.
fn upsert(entries: &mut Vec<RunEntry>, entry: RunEntry) {
    match entries.iter_mut().find(|e| e.id == entry.id) {
        Some(old) if old.updated_at > entry.updated_at => {}
        Some(old) => *old = entry,
        None => {
            entries.push(entry);
            entries.sort_by_key(|e| e.seq);
        }
    }
}

fn chunk_of(seq: i64) -> i64 {
    seq.div_euclid(CHUNK)
}

/// Writes `run`'s entry at place `seq` (idempotent; never over a more recent state): in the
/// pipeline's record while it is among the recent entries, else in its chunk.
pub async fn record(store: &dyn StateStore, tuning: &Tuning, run: &Run, seq: i64) -> Result<(), EngineError> {
    let entry = RunEntry::of(run, seq);
    let in_record = update_record(
        store,
        tuning,
        &StoreKey::lineage(&run.pipeline),
        "a pipeline's record",
        |record: &mut PipelineRecord| record.refresh_recent(&entry),
    )
    .await?;
    if in_record {
        return Ok(());
    }
    let key = StoreKey::run_chunk(&run.pipeline, chunk_of(seq));
    update_record(store, tuning, &key, "an index of runs", |chunk: &mut Chunk| {
        chunk.upsert(entry.clone())
    })
    .await
}

/// Removes the entry of `run` at place `seq` — a second place given to a run that already had
/// one (a push delivered again long after the first): wherever it is.
pub async fn forget(
    store: &dyn StateStore,
    tuning: &Tuning,
    pipeline: &PipelineName,
    run: &RunId,
    seq: i64,
) -> Result<(), EngineError> {
    let stray = |e: &RunEntry| e.id == *run && e.seq == seq;
    update_record(
        store,
        tuning,
        &StoreKey::lineage(pipeline),
        "a pipeline's record",
        |record: &mut PipelineRecord| record.recent.retain(|e| !stray(e)),
    )
    .await?;
    update_record(
        store,
        tuning,
        &StoreKey::run_chunk(pipeline, chunk_of(seq)),
        "an index of runs",
        |chunk: &mut Chunk| chunk.entries.retain(|e| !stray(e)),
    )
    .await
}

/// Writes the recent entries of full chunks out of the pipeline's record into their chunk
/// objects, then drops them from the record — only those still as written, so a state that
/// changed meanwhile stays (and is written out next time). Idempotent; a flush cut short is
/// finished by the next push.
///
/// Starts from `written`, the record as the caller (the push that filled a chunk) just wrote
/// it, with that version, instead of reading it again. The record is rewritten over that
/// version; if someone wrote it since, that write is refused and the record read as usual.
pub async fn flush(
    store: &dyn StateStore,
    tuning: &Tuning,
    pipeline: &PipelineName,
    (record, version): Carried<PipelineRecord>,
) -> Result<(), EngineError> {
    let key = StoreKey::lineage(pipeline);
    let newest = chunk_of(record.next_run - 1);
    let mut full: BTreeMap<i64, Vec<RunEntry>> = BTreeMap::new();
    for entry in record.recent.iter().filter(|e| chunk_of(e.seq) < newest) {
        full.entry(chunk_of(entry.seq)).or_default().push(entry.clone());
    }
    if full.is_empty() {
        return Ok(());
    }
    // Each chunk is its own object: a burst that filled several writes them at once.
    futures::future::try_join_all(
        full.iter()
            .map(|(n, entries)| write_chunk(store, tuning, pipeline, *n, entries)),
    )
    .await?;
    let written: Vec<RunEntry> = full.into_values().flatten().collect();
    update_record_from(
        store,
        tuning,
        &key,
        "a pipeline's record",
        Some((record, version)),
        |record: &mut PipelineRecord| record.recent.retain(|e| !written.contains(e)),
    )
    .await
    .map(drop)
}

/// Writes `entries` into chunk `n` of `pipeline`'s index (over whatever state they had there).
async fn write_chunk(
    store: &dyn StateStore,
    tuning: &Tuning,
    pipeline: &PipelineName,
    n: i64,
    entries: &[RunEntry],
) -> Result<(), EngineError> {
    update_record(
        store,
        tuning,
        &StoreKey::run_chunk(pipeline, n),
        "an index of runs",
        |chunk: &mut Chunk| {
            for entry in entries {
                chunk.upsert(entry.clone());
            }
        },
    )
    .await
}

/// Rewrites `run`'s entry from the run as it stands, wherever its place is: its own, or the one
/// the backfill gave it. Nothing if it has none (made before the index, not yet indexed: the
/// backfill will index it as it stands).
pub async fn refresh(store: &dyn StateStore, tuning: &Tuning, run: &Run) -> Result<(), EngineError> {
    let seq = match run.seq {
        Some(seq) => Some(seq),
        None => PipelineRecord::read(store, &run.pipeline).await?.0.place_of(run),
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
    let page = indexed_page(store, pipeline, before, limit).await?;
    Ok(RunPage {
        entries: freshen(store, page.entries).await?,
        next: page.next,
    })
}

/// [`page`] as the index has it: unfinished entries not read again.
async fn indexed_page(
    store: &dyn StateStore,
    pipeline: &PipelineName,
    before: Option<i64>,
    limit: usize,
) -> Result<RunPage, EngineError> {
    let mut walk = Walk::open(store, pipeline, before).await?;
    while walk.ready.len() < limit && walk.can_read() {
        walk.read_chunk(store, |_| true).await?;
    }
    let entries: Vec<RunEntry> = walk.ready.drain(..walk.ready.len().min(limit)).collect();
    // The next page starts below the last entry shown, or where the reading stopped.
    let next = if walk.ready.is_empty() {
        walk.next()
    } else {
        entries.last().map(|e| e.seq)
    };
    Ok(RunPage { entries, next })
}

/// One pipeline's entries from a place down, newest first, read one chunk at a time as a page
/// needs them: the pipeline's record once, then a chunk only when every entry read before it
/// was taken.
struct Walk {
    pipeline: PipelineName,
    head: PipelineRecord,
    /// Entries at or above this place were read.
    top: i64,
    chunks: usize,
    /// Read and not taken yet, newest first.
    ready: std::collections::VecDeque<RunEntry>,
    /// Runs read so far (a run given a second place is shown once).
    seen: std::collections::HashSet<RunId>,
}

impl Walk {
    /// Reads the pipeline's record; the walk starts below `before` (at the newest run if `None`).
    async fn open(store: &dyn StateStore, pipeline: &PipelineName, before: Option<i64>) -> Result<Self, EngineError> {
        let (head, _) = PipelineRecord::read(store, pipeline).await?;
        let top = before.unwrap_or(head.next_run).min(head.next_run);
        Ok(Self {
            pipeline: pipeline.clone(),
            head,
            top,
            chunks: 0,
            ready: Default::default(),
            seen: Default::default(),
        })
    }

    /// Whether this page may read another chunk: there are older entries, and it has not read
    /// [`MAX_CHUNKS_PER_PAGE`] yet.
    fn can_read(&self) -> bool {
        self.top > self.head.lowest() && self.chunks < MAX_CHUNKS_PER_PAGE
    }

    /// Where the next page of this pipeline starts once every entry read is taken; `None` if
    /// there is nothing older.
    fn next(&self) -> Option<i64> {
        (self.top > self.head.lowest()).then_some(self.top)
    }

    /// Reads the next chunk down (the newest costs no read: its entries are in the record),
    /// keeping the entries `keep` accepts.
    async fn read_chunk(
        &mut self,
        store: &dyn StateStore,
        keep: impl Fn(&RunEntry) -> bool,
    ) -> Result<(), EngineError> {
        let n = chunk_of(self.top - 1);
        let chunk = entries_of(store, &self.head, &self.pipeline, n).await?;
        self.chunks += 1;
        let lowest = self.head.lowest();
        for entry in chunk.into_iter().rev() {
            if entry.seq >= self.top || entry.seq < lowest || !keep(&entry) || !self.seen.insert(entry.id.clone()) {
                continue;
            }
            self.ready.push_back(entry);
        }
        self.top = n * CHUNK;
        Ok(())
    }
}

/// The entry at place `seq` of `pipeline`'s index, if any: the pipeline's record and, for
/// an older place, its chunk.
pub async fn at_place(
    store: &dyn StateStore,
    pipeline: &PipelineName,
    seq: i64,
) -> Result<Option<RunEntry>, EngineError> {
    let (head, _) = PipelineRecord::read(store, pipeline).await?;
    if seq >= head.next_run {
        return Ok(None);
    }
    Ok(entries_of(store, &head, pipeline, chunk_of(seq))
        .await?
        .into_iter()
        .find(|e| e.seq == seq))
}

/// The entries at `places` of `pipeline`'s index (`head` its record), in place order: an entry
/// for each place whose run was placed and not forgotten since. Reads the chunks `places`
/// reaches past the record's own entries.
pub async fn entries_at(
    store: &dyn StateStore,
    head: &PipelineRecord,
    pipeline: &PipelineName,
    places: std::ops::Range<i64>,
) -> Result<Vec<RunEntry>, EngineError> {
    if places.is_empty() {
        return Ok(Vec::new());
    }
    let mut entries = Vec::new();
    for n in chunk_of(places.start)..=chunk_of(places.end - 1) {
        entries.extend(
            entries_of(store, head, pipeline, n)
                .await?
                .into_iter()
                .filter(|e| places.contains(&e.seq)),
        );
    }
    Ok(entries)
}

/// The entries of chunk `n`: those in the pipeline's record (`head`) and, unless the chunk is
/// the newest (whose entries are all in the record), those of its object.
async fn entries_of(
    store: &dyn StateStore,
    head: &PipelineRecord,
    pipeline: &PipelineName,
    n: i64,
) -> Result<Vec<RunEntry>, EngineError> {
    let mut entries = if n >= chunk_of(head.next_run - 1) && n >= 0 {
        Vec::new()
    } else {
        read_record::<Chunk>(store, &StoreKey::run_chunk(pipeline, n))
            .await?
            .0
            .entries
    };
    for entry in head.recent.iter().filter(|e| chunk_of(e.seq) == n) {
        upsert(&mut entries, entry.clone());
    }
    Ok(entries)
}

/// Replaces each unfinished entry with its run as it stands; drops entries whose run was never
/// written (a push that crashed between indexing and creating its run).
/// The runs are read [`READS_AT_ONCE`] at a time, and the entries keep their order.
async fn freshen(store: &dyn StateStore, entries: Vec<RunEntry>) -> Result<Vec<RunEntry>, EngineError> {
    let fresh: Vec<Option<RunEntry>> = stream::iter(entries)
        .map(|entry| async move {
            if entry.status.is_finished() {
                return Ok::<_, EngineError>(Some(entry));
            }
            Ok(load_run(store, &entry.id)
                .await?
                .map(|(run, _)| RunEntry::of(&run, entry.seq)))
        })
        .buffered(READS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(fresh.into_iter().flatten().collect())
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
/// from `cursor`; and the cursor of the next page, if there is more. Only the runs shown that
/// are unfinished are read, for their current status.
pub async fn newest(
    store: &dyn StateStore,
    pipelines: &[PipelineName],
    repo: Option<&RepoName>,
    cursor: &Cursor,
    limit: usize,
) -> Result<(Vec<RunEntry>, Option<Cursor>), EngineError> {
    let (entries, next) = newest_indexed(store, pipelines, repo, cursor, limit).await?;
    Ok((freshen(store, entries).await?, next))
}

/// [`newest`] as the index has them, without reading any run: an unfinished entry's status
/// may be behind its run's, and its run may never have been written (see [`freshen`]). For a
/// caller that reads the runs anyway.
pub async fn newest_indexed(
    store: &dyn StateStore,
    pipelines: &[PipelineName],
    repo: Option<&RepoName>,
    cursor: &Cursor,
    limit: usize,
) -> Result<(Vec<RunEntry>, Option<Cursor>), EngineError> {
    let limit = limit.clamp(1, MAX_PAGE);
    // Each pipeline's record, read READS_AT_ONCE pipelines at a time.
    let starts: Vec<(PipelineName, Option<i64>)> = pipelines
        .iter()
        .map(|p| (p.clone(), cursor.0.get(p).copied()))
        .collect();
    let mut walks: Vec<(PipelineName, Option<i64>, Option<Walk>)> = stream::iter(starts)
        .map(|(pipeline, before)| async move {
            if before == Some(Cursor::DONE) {
                return Ok::<_, EngineError>((pipeline, before, None));
            }
            let walk = Walk::open(store, &pipeline, before).await?;
            Ok((pipeline, before, Some(walk)))
        })
        .buffered(READS_AT_ONCE)
        .try_collect()
        .await?;
    let keep = |e: &RunEntry| repo.is_none_or(|r| e.repo.as_str().eq_ignore_ascii_case(r.as_str()));
    // Merged newest first by opening time, each pipeline's runs kept in their own order (the
    // order of their places), so each pipeline's cursor is simply its last run shown. A
    // pipeline's next chunk is read only once every entry read of it was taken: until then its
    // older runs cannot come next. So a page over many pipelines reads their records and the
    // few chunks whose runs it shows, not a chunk of each.
    let mut candidates: Vec<RunEntry> = Vec::new();
    while candidates.len() < limit {
        let hungry: Vec<(usize, Walk)> = walks
            .iter_mut()
            .enumerate()
            .filter(|(_, (_, _, walk))| walk.as_ref().is_some_and(|w| w.ready.is_empty() && w.can_read()))
            .filter_map(|(at, (_, _, walk))| Some((at, walk.take()?)))
            .collect();
        if !hungry.is_empty() {
            let refilled: Vec<(usize, Walk)> = stream::iter(hungry)
                .map(|(at, mut walk)| async move {
                    walk.read_chunk(store, keep).await?;
                    Ok::<_, EngineError>((at, walk))
                })
                .buffer_unordered(READS_AT_ONCE)
                .try_collect()
                .await?;
            for (at, walk) in refilled {
                walks[at].2 = Some(walk);
            }
            continue;
        }
        let next = walks
            .iter_mut()
            .filter_map(|(_, _, walk)| walk.as_mut())
            .filter(|w| !w.ready.is_empty())
            .max_by(|a, b| {
                let (a, b) = (&a.ready[0], &b.ready[0]);
                a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id))
            });
        match next.and_then(|w| w.ready.pop_front()) {
            Some(entry) => candidates.push(entry),
            None => break,
        }
    }
    // Each pipeline's next page starts below the last of its entries shown; where its reading
    // stopped if all it read was shown; where this page started if none was.
    let mut next = Cursor::default();
    for (pipeline, before, walk) in &walks {
        let start = match walk {
            None => Some(Cursor::DONE),
            Some(walk) if walk.ready.is_empty() => Some(walk.next().unwrap_or(Cursor::DONE)),
            Some(_) => candidates
                .iter()
                .rev()
                .find(|e| e.pipeline() == *pipeline)
                .map(|e| e.seq)
                .or(*before),
        };
        if let Some(start) = start {
            next.0.insert(pipeline.clone(), start);
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
        let chunk = entries_of(store, head, pipeline, n).await?;
        for entry in chunk.into_iter().rev().filter(|e| e.seq < top) {
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

#[cfg(test)]
pub(crate) mod tests {
    use jiff::SignedDuration;

    use super::*;
    use crate::adapters::memory::MemoryStore;
    use crate::domain::run::{EnvPlan, Mode, Plan};
    use crate::domain::{CommitInfo, EnvName, NewRun};

    fn sha(n: u32) -> CommitSha {
        CommitSha::parse(&format!("{n:040x}")).unwrap()
    }

    /// Run `n` of `pipeline`, opened `minute` minutes after a fixed time.
    pub(crate) fn opened(pipeline: &str, n: u32, minute: i64) -> Run {
        let at = "2026-11-21T10:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minute);
        crate::domain::open(
            NewRun {
                pipeline: PipelineName::parse(pipeline).unwrap(),
                repo: RepoName::parse(&format!("acme/{pipeline}")).unwrap(),
                branch: BranchName::parse("main").unwrap(),
                sha: sha(n),
                commit: CommitInfo {
                    message: format!("change {n}\n\nmore"),
                    author_login: Some("dev".into()),
                    author_name: "Dee".into(),
                    author_email: None,
                    url: None,
                    pushed_by: "dev".into(),
                },
                plan: Plan {
                    mode: Mode::Deployment,
                    approval_ttl: SignedDuration::from_hours(1),
                    build_timeout: SignedDuration::from_hours(24),
                    environments: vec![EnvPlan {
                        name: EnvName::parse("staging").unwrap(),
                        approval: false,
                        smoke: false,
                        approvals_required: 1,
                        bake: false,
                    }],
                    required_checks: Vec::new(),
                    min_coverage: None,
                },
                parents: Vec::new(),
                carried: Default::default(),
            },
            at,
        )
    }

    /// Places `run` in its pipeline's record, as a push does: its place, whether a chunk is
    /// now full, and the record as written.
    async fn place(store: &MemoryStore, run: &Run) -> ((i64, bool), Carried<PipelineRecord>) {
        update_record_from(
            store,
            &Tuning::default(),
            &StoreKey::lineage(&run.pipeline),
            "record",
            None,
            |r: &mut PipelineRecord| (r.open(run), r.unflushed()),
        )
        .await
        .unwrap()
    }

    /// Opens run `n` the way the engine does: placed in the pipeline record, indexed, written.
    async fn open(store: &MemoryStore, pipeline: &str, n: u32, minute: i64) -> Run {
        let tuning = Tuning::default();
        let mut run = opened(pipeline, n, minute);
        let ((seq, unflushed), written) = place(store, &run).await;
        run.seq = Some(seq);
        if unflushed {
            flush(store, &tuning, &run.pipeline, written).await.unwrap();
        }
        store
            .create(&StoreKey::run(&run.id), Bytes::from(serde_json::to_vec(&run).unwrap()))
            .await
            .unwrap();
        run
    }

    /// A flush starts from the record as the batch that filled a chunk wrote it. When another
    /// writer changed the record since, the flush's own write over that version is refused: it
    /// reads the record again and drops only the entries it wrote out, keeping the newer run.
    #[tokio::test]
    async fn a_flush_from_a_record_written_over_since_keeps_what_came_after() {
        let store = MemoryStore::new();
        let tuning = Tuning::default();
        for n in 0..=CHUNK as u32 {
            place(&store, &opened("shop", n, i64::from(n))).await;
        }
        let pipeline = PipelineName::parse("shop").unwrap();
        let key = StoreKey::lineage(&pipeline);
        let filled = read_record::<PipelineRecord>(&store, &key).await.unwrap();
        assert!(filled.0.unflushed());
        // Another process's push lands before the flush.
        place(&store, &opened("shop", 500, 600)).await;

        flush(&store, &tuning, &pipeline, filled).await.unwrap();
        let (record, _) = read_record::<PipelineRecord>(&store, &key).await.unwrap();
        let recent: Vec<i64> = record.recent.iter().map(|e| e.seq).collect();
        assert_eq!(
            recent,
            [CHUNK, CHUNK + 1],
            "the chunk's entries dropped, the later push kept"
        );
        let (chunk, _) = read_record::<Chunk>(&store, &StoreKey::run_chunk(&pipeline, 0))
            .await
            .unwrap();
        assert_eq!(chunk.entries.len(), CHUNK as usize);
    }

    fn shas(entries: &[RunEntry]) -> Vec<String> {
        entries.iter().map(|e| e.sha.as_str()[36..].to_owned()).collect()
    }

    #[test]
    fn a_run_placed_again_keeps_its_place() {
        let mut record = PipelineRecord::default();
        let a = RunId::new(&PipelineName::parse("shop").unwrap(), &sha(1));
        let b = RunId::new(&PipelineName::parse("shop").unwrap(), &sha(2));
        assert_eq!(record.place(&a), 0);
        assert_eq!(record.place(&b), 1);
        assert_eq!(record.place(&a), 0, "a redelivered push");
        assert_eq!(record.next_run, 2);
        for n in 3..200 {
            record.place(&RunId::new(&PipelineName::parse("shop").unwrap(), &sha(n)));
        }
        assert_eq!(record.placed.len(), PLACED_KEPT, "bounded");
    }

    #[test]
    fn the_record_reads_a_lineage_written_before_it_and_a_lineage_reader_reads_it() {
        let old: PipelineRecord =
            serde_json::from_str(r#"{"links":[{"sha":"0000000000000000000000000000000000000001","parents":[]}]}"#)
                .unwrap();
        assert_eq!(old.lineage.links.len(), 1);
        assert_eq!((old.next_run, old.legacy), (0, 0));
        let mut record = old.clone();
        record.place(&RunId::new(&PipelineName::parse("shop").unwrap(), &sha(9)));
        let lineage: Lineage = serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(lineage, old.lineage);
    }

    #[test]
    fn an_entry_is_never_replaced_by_an_older_state() {
        let run = opened("shop", 1, 0);
        let mut newer = run.clone();
        newer.updated_at = run.updated_at + SignedDuration::from_mins(5);
        newer.stages[0].status = crate::domain::StageStatus::Failed;
        let mut chunk = Chunk::default();
        chunk.upsert(RunEntry::of(&newer, 0));
        chunk.upsert(RunEntry::of(&run, 0));
        assert_eq!(chunk.entries.len(), 1);
        assert_eq!(chunk.entries[0].status, RunStatus::Failed);
    }

    #[test]
    fn cursors_read_back_and_bad_ones_are_refused() {
        let cursor: Cursor = "shop:120,web:-4,docs:done".parse().unwrap();
        assert_eq!(cursor.0.len(), 3);
        assert_eq!(cursor.to_string(), "docs:done,shop:120,web:-4");
        assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        for bad in ["shop", "shop:x", "Shop:1", "../x:1", "shop:1;drop"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn pages_walk_the_history_newest_first_reading_a_few_objects_each() {
        let store = MemoryStore::new();
        for n in 0..450 {
            open(&store, "shop", n, i64::from(n)).await;
        }
        let shop = PipelineName::parse("shop").unwrap();
        let before = store.read_count();
        let first = page(&store, &shop, None, 50).await.unwrap();
        // The pipeline record (which holds the newest chunk's entries), and the unfinished runs
        // shown (all of them here).
        assert_eq!(store.read_count() - before, 1 + 50);
        assert_eq!(first.entries.len(), 50);
        assert_eq!(first.entries[0].sha, sha(449));
        assert_eq!(first.next, Some(400));
        let mut seen = shas(&first.entries);
        let mut next = first.next;
        while let Some(before) = next {
            let p = page(&store, &shop, Some(before), 120).await.unwrap();
            seen.extend(shas(&p.entries));
            next = p.next;
        }
        let expected: Vec<String> = (0..450).rev().map(|n| sha(n).as_str()[36..].to_owned()).collect();
        assert_eq!(seen, expected, "every run once, newest first");
    }

    #[tokio::test]
    async fn finished_entries_are_not_read_again() {
        let store = MemoryStore::new();
        let tuning = Tuning::default();
        for n in 0..30 {
            let mut run = open(&store, "shop", n, i64::from(n)).await;
            run.stages[0].status = crate::domain::StageStatus::Failed;
            run.updated_at += SignedDuration::from_mins(1);
            refresh(&store, &tuning, &run).await.unwrap();
        }
        let shop = PipelineName::parse("shop").unwrap();
        let before = store.read_count();
        let p = page(&store, &shop, None, 20).await.unwrap();
        assert_eq!(
            store.read_count() - before,
            1,
            "the pipeline record, which holds the newest entries"
        );
        assert!(p.entries.iter().all(|e| e.status == RunStatus::Failed));
    }

    #[tokio::test]
    async fn several_pipelines_merge_by_time_and_page_on() {
        let store = MemoryStore::new();
        for n in 0..25 {
            open(&store, "shop", n, i64::from(n) * 2).await;
            open(&store, "web", 1000 + n, i64::from(n) * 2 + 1).await;
        }
        let pipelines = [
            PipelineName::parse("shop").unwrap(),
            PipelineName::parse("web").unwrap(),
        ];
        let mut cursor = Cursor::default();
        let mut seen = Vec::new();
        loop {
            let (entries, next) = newest(&store, &pipelines, None, &cursor, 7).await.unwrap();
            assert!(entries.len() <= 7);
            seen.extend(entries);
            match next {
                Some(next) => cursor = next.to_string().parse().unwrap(),
                None => break,
            }
        }
        assert_eq!(seen.len(), 50, "every run once");
        assert!(
            seen.windows(2).all(|w| w[0].created_at > w[1].created_at),
            "newest first"
        );
        let web = RepoName::parse("acme/web").unwrap();
        let (only, _) = newest(&store, &pipelines, Some(&web), &Cursor::default(), 10)
            .await
            .unwrap();
        assert!(only.iter().all(|e| e.repo == web) && only.len() == 10);
    }

    /// A page over many pipelines reads each pipeline's record, and a chunk only of those whose
    /// runs it shows beyond the record's: not a chunk of every pipeline.
    #[tokio::test]
    async fn a_page_over_many_pipelines_reads_only_the_chunks_it_shows() {
        let store = MemoryStore::new();
        let tuning = Tuning::default();
        let busy = ["a", "b", "c", "d", "e", "f"];
        let finish = |mut run: Run| {
            run.stages[0].status = crate::domain::StageStatus::Failed;
            run.updated_at += SignedDuration::from_mins(1);
            run
        };
        // Six busy pipelines, 110 runs each, interleaved in time: each record holds its newest
        // ten (the first hundred are in chunk 0).
        for k in 0..110 {
            for (i, p) in busy.iter().enumerate() {
                let run = finish(open(&store, p, k, i64::from(k) * 6 + i as i64).await);
                refresh(&store, &tuning, &run).await.unwrap();
            }
        }
        // And a quiet one whose newest run is older than all of those.
        for k in 0..101 {
            let run = finish(open(&store, "quiet", k, -1000 + i64::from(k)).await);
            refresh(&store, &tuning, &run).await.unwrap();
        }
        let mut pipelines: Vec<PipelineName> = busy.iter().map(|p| PipelineName::parse(p).unwrap()).collect();
        pipelines.push(PipelineName::parse("quiet").unwrap());

        let before = store.read_count();
        let (first, next) = newest(&store, &pipelines, None, &Cursor::default(), 30).await.unwrap();
        assert_eq!(store.read_count() - before, 7, "the seven records, no chunk");
        assert_eq!(first.len(), 30);
        assert!(first.windows(2).all(|w| w[0].created_at > w[1].created_at));
        assert!(first.iter().all(|e| e.pipeline().as_str() != "quiet"));

        // The next page takes the rest of the records' runs. A pipeline whose runs read so far
        // were all taken before the page was full has its next chunk read, since its next run
        // may come next: five of them here (the sixth's last run is the page's last).
        let before = store.read_count();
        let (second, next) = newest(&store, &pipelines, None, &next.unwrap(), 30).await.unwrap();
        assert_eq!(store.read_count() - before, 7 + 5);
        // The one after starts in chunk 0 of every busy pipeline.
        let before = store.read_count();
        let (third, _) = newest(&store, &pipelines, None, &next.unwrap(), 30).await.unwrap();
        assert_eq!(
            store.read_count() - before,
            7 + 6,
            "the records and the busy pipelines' chunk 0"
        );
        let shown: Vec<&RunEntry> = first.iter().chain(&second).chain(&third).collect();
        assert!(
            shown.windows(2).all(|w| w[0].created_at > w[1].created_at),
            "newest first, across pages"
        );
        let ids: std::collections::HashSet<&RunId> = shown.iter().map(|e| &e.id).collect();
        assert_eq!(ids.len(), 90, "no run twice");
    }

    #[tokio::test]
    async fn an_entry_whose_run_was_never_written_is_not_shown() {
        let store = MemoryStore::new();
        open(&store, "shop", 1, 0).await;
        // Placed, then the process stopped before writing the run.
        place(&store, &opened("shop", 2, 1)).await;
        let p = page(&store, &PipelineName::parse("shop").unwrap(), None, 10)
            .await
            .unwrap();
        assert_eq!(shas(&p.entries), [&sha(1).as_str()[36..]]);
    }

    #[tokio::test]
    async fn runs_made_before_the_index_are_indexed_once_below_the_new_ones() {
        let store = MemoryStore::new();
        let tuning = Tuning::default();
        let now = "2026-11-25T00:00:00Z".parse::<Timestamp>().unwrap();
        // Written before the index existed: no place, no entry, a lineage without places.
        for n in 0..150 {
            let mut run = opened("shop", n, i64::from(n));
            if n % 2 == 0 {
                run.stages[0].status = crate::domain::StageStatus::Failed;
            }
            store
                .create(&StoreKey::run(&run.id), Bytes::from(serde_json::to_vec(&run).unwrap()))
                .await
                .unwrap();
        }
        // One pushed after the upgrade, before the first sweep.
        open(&store, "shop", 500, 500).await;
        assert!(backfill(&store, &tuning, now).await.unwrap());
        assert!(!backfill(&store, &tuning, now).await.unwrap(), "once");
        let shop = PipelineName::parse("shop").unwrap();
        let mut seen = Vec::new();
        let mut next = None;
        loop {
            let p = page(&store, &shop, next, 40).await.unwrap();
            seen.extend(p.entries);
            next = p.next;
            if next.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 151);
        assert_eq!(seen[0].sha, sha(500));
        assert_eq!(seen[1].sha, sha(149));
        assert_eq!(seen[150].sha, sha(0));
        // An unfinished legacy run finds its entry again when it finishes.
        let (legacy, _) = load_run(&store, &RunId::new(&shop, &sha(149))).await.unwrap().unwrap();
        assert_eq!(legacy.seq, None);
        let mut finished = legacy.clone();
        finished.stages[0].status = crate::domain::StageStatus::Failed;
        finished.updated_at = legacy.updated_at + SignedDuration::from_mins(1);
        store
            .replace(
                &StoreKey::run(&legacy.id),
                Bytes::from(serde_json::to_vec(&finished).unwrap()),
                &crate::ports::Version("1".into()),
            )
            .await
            .unwrap();
        refresh(&store, &tuning, &finished).await.unwrap();
        let before = store.read_count();
        let p = page(&store, &shop, Some(0), 1).await.unwrap();
        assert_eq!(p.entries[0].status, RunStatus::Failed);
        assert_eq!(store.read_count() - before, 2, "final now: not read from the run");
    }

    #[tokio::test]
    async fn a_prefix_resolves_with_listings_not_reads() {
        let store = MemoryStore::new();
        for n in 0..20 {
            open(&store, "shop", n, i64::from(n)).await;
        }
        let target = RunId::new(&PipelineName::parse("shop").unwrap(), &sha(0x13));
        let before = store.read_count();
        let full = sha(0x13);
        assert_eq!(
            resolve(&store, &format!("shop-{}", &full.as_str()[..39]))
                .await
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            resolve(&store, target.as_str()).await.unwrap(),
            std::slice::from_ref(&target)
        );
        assert_eq!(
            resolve(&store, &full.as_str()[..39]).await.unwrap().len(),
            4,
            "a SHA prefix"
        );
        assert_eq!(resolve(&store, full.as_str()).await.unwrap(), [target]);
        assert!(resolve(&store, "../etc").await.unwrap().is_empty());
        // One listing for a run id; for a bare SHA prefix one of runs/, one of the pipelines and
        // one per pipeline.
        assert_eq!(store.read_count() - before, 1 + 1 + 3 + 3, "listings only");
    }
}

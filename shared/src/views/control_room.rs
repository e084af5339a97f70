//! What the control room shows (`/`, `/approvals`, `/pipelines/{name}` and their JSON), read
//! from the projections, never from the history:
//!
//! - the overview reads, per pipeline, its newest runs from the index of runs and the runs
//!   themselves (for their stages), and per environment its record and the run it runs now —
//!   O(pipelines × (environments + runs shown)) reads, whatever the history holds;
//! - the approvals read, per gated environment, its record and the one before's, the runs
//!   released there since (newest first, until one waits: at most the releases a record
//!   keeps), and what the waiting one brings, as the approval page does;
//! - a pipeline's page reads one page of its index and its environments' records.

use futures::{StreamExt as _, TryStreamExt as _, stream};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::app::{App, EngineError};
use crate::config::PipelineConfig;
use crate::domain::{
    ApproverId, EnvName, Environment, Lease, Mode, PipelineName, Place, Release, Run, StageKind, StageStatus, Waiter,
};
use crate::policy::Verdict;
use crate::views::run_index::{self, Cursor, PipelineRecord, RunEntry};

/// How many of a pipeline's newest runs the overview draws.
pub const RUNS_SHOWN: usize = 5;

/// How many runs of the index the "what it brings" of an approval reads, at most, looking for
/// the environment's current release: beyond that it is summed up as "and older commits".
pub const CARRIES_READ: usize = 100;

/// How many store reads the overview makes at once.
const READS_AT_ONCE: usize = 16;

/// Every pipeline, as `/` shows it.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub pipelines: Vec<PipelineView>,
}

/// One pipeline: its newest runs and its environments.
#[derive(Debug, Serialize)]
pub struct PipelineView {
    pub name: PipelineName,
    pub repo: String,
    pub branch: String,
    pub mode: Mode,
    /// Newest first.
    pub runs: Vec<RunView>,
    /// In the order runs go through them.
    pub environments: Vec<EnvView>,
    /// The release cadence episode under way, for a pipeline with a cadence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cadence: Option<crate::views::cadence::Episode>,
}

/// One run as the overview draws it: a row of stage boxes.
#[derive(Debug, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub entry: RunEntry,
    pub stages: Vec<StageBox>,
    /// It failed at a deploy, smoke checks or bake, and may be retried.
    pub retriable: bool,
}

/// One stage of a run, as a box.
#[derive(Debug, Serialize)]
pub struct StageBox {
    /// `build`, `deploy:staging`, `approval:production`, …
    pub label: String,
    pub kind: StageKind,
    pub env: Option<EnvName>,
    pub status: StageStatus,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// One environment: what runs there, what waits for it, and how far it is ahead of the next.
#[derive(Debug, Serialize)]
pub struct EnvView {
    pub name: EnvName,
    /// What it runs now.
    pub current: Option<Current>,
    /// The release a rollback goes back to: the newest before the current one of a commit
    /// that opened before it.
    pub previous: Option<Release>,
    /// The run deploying or checking there now.
    pub lease: Option<Lease>,
    /// Runs waiting for the lease.
    pub waiting: Vec<Waiter>,
    /// Whether a freeze or a deploy window holds deploys now.
    pub held: Option<Held>,
    /// How far it is ahead of the next environment (`None`: the last one, or nothing to
    /// compare).
    pub ahead_of_next: Option<Ahead>,
    /// An operator deploying here from their machine now (`slipway deploy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<crate::domain::environment::OperatorLease>,
    /// A manual release put in place after the pipeline's current release: the environment
    /// runs it until the pipeline's next deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual: Option<crate::domain::environment::ManualRelease>,
}

/// What an environment runs.
#[derive(Debug, Serialize)]
pub struct Current {
    pub release: Release,
    /// The commit's first line and author, when its run is still stored.
    pub message: Option<String>,
    pub author: Option<String>,
    /// Who approved its promotion here.
    pub approved_by: Vec<ApproverId>,
    /// The run's last smoke checks here: passed?
    pub smoke: Option<StageStatus>,
    /// The run's bake here.
    pub bake: Option<StageStatus>,
    /// Its place in the pipeline's index.
    #[serde(skip)]
    seq: Option<i64>,
}

/// Deploys are held by a freeze or outside a window.
#[derive(Debug, Serialize)]
pub struct Held {
    pub reason: String,
    pub until: Option<Timestamp>,
}

/// How far one environment runs ahead of the next.
#[derive(Debug, Serialize)]
pub struct Ahead {
    /// Runs (pushes) between what the next environment runs and what this one runs.
    pub runs: i64,
    /// How much longer ago the next environment's commit was pushed.
    pub age: SignedDuration,
}

/// Every configured pipeline, as `/` shows it.
pub async fn overview(app: &App) -> Result<Overview, EngineError> {
    let views: Vec<_> = app.config.pipelines.iter().map(|p| pipeline_view(app, p)).collect();
    let pipelines = stream::iter(views).buffered(4).try_collect().await?;
    Ok(Overview { pipelines })
}

/// One pipeline, as the overview shows it.
pub async fn pipeline_view(app: &App, config: &PipelineConfig) -> Result<PipelineView, EngineError> {
    let store = app.store.as_ref();
    // Every run drawn is read once, for its stages and its current status; the environments
    // then take the runs they run from these when they are among them.
    let (entries, _) = run_index::newest_indexed(
        store,
        std::slice::from_ref(&config.name),
        None,
        &Cursor::default(),
        RUNS_SHOWN,
    )
    .await?;
    let loads: Vec<_> = entries
        .into_iter()
        .map(|entry| async move { Ok::<_, EngineError>((app.load(&entry.id).await?.map(|(run, _)| run), entry)) })
        .collect();
    let loaded: Vec<(Option<Run>, RunEntry)> = stream::iter(loads).buffered(READS_AT_ONCE).try_collect().await?;
    let mut runs = Vec::new();
    let mut drawn = Vec::new();
    for (run, entry) in loaded {
        match run {
            Some(run) => {
                runs.push(RunView {
                    entry: RunEntry::of(&run, entry.seq),
                    stages: stage_boxes(&run),
                    retriable: run.status().is_finished() && crate::handlers::retry::failed_env(&run).is_some(),
                });
                drawn.push(run);
            }
            // A finished entry whose run is gone is still history; an unfinished one whose
            // run was never written is a push that crashed before creating it.
            None if entry.status.is_finished() => runs.push(RunView {
                entry,
                stages: Vec::new(),
                retriable: false,
            }),
            None => {}
        }
    }
    let environments = environments(app, config, &drawn).await?;
    let cadence = match &config.cadence {
        Some(_) => Some(crate::views::cadence::episode(app, config).await?).filter(|e| e.raised_at.is_some()),
        None => None,
    };
    Ok(PipelineView {
        name: config.name.clone(),
        repo: config.repo.to_string(),
        branch: config.branch.to_string(),
        mode: config.mode,
        runs,
        environments,
        cadence,
    })
}

/// A run's stages as boxes.
pub fn stage_boxes(run: &Run) -> Vec<StageBox> {
    run.stages
        .iter()
        .map(|s| StageBox {
            label: s.label(),
            kind: s.kind,
            env: s.env.clone(),
            status: s.status,
            started_at: s.started_at,
            finished_at: s.finished_at,
        })
        .collect()
}

/// A pipeline's environments: each one's record, and the run it runs now (taken from `known`,
/// runs already read, when it is among them).
pub async fn environments(app: &App, config: &PipelineConfig, known: &[Run]) -> Result<Vec<EnvView>, EngineError> {
    let now = app.clock.now();
    let reads: Vec<_> = config
        .environments
        .iter()
        .map(|env| async move {
            let (record, _) = app.environment(&config.name, &env.name).await?;
            let current = match &record.current {
                Some(release) => {
                    let run = match known.iter().find(|r| r.id == release.run) {
                        Some(run) => Some(run.clone()),
                        None => app.load(&release.run).await?.map(|(run, _)| run),
                    };
                    Some(current(&env.name, release, run.as_ref()))
                }
                None => None,
            };
            let held = match env.verdict(now) {
                Verdict::Open => None,
                Verdict::Held { reason, until } => Some(Held { reason, until }),
            };
            let previous = record.current.as_ref().and_then(|c| {
                record
                    .releases
                    .iter()
                    .rev()
                    .find(|r| r.run != c.run && r.opened_at < c.opened_at)
                    .cloned()
            });
            let operator = record.operator_at(now).cloned();
            let manual = record.manual_release().cloned();
            Ok::<_, EngineError>(EnvView {
                name: env.name.clone(),
                current,
                previous,
                lease: record.lease.filter(|l| l.expires_at > now),
                waiting: record.waiting,
                held,
                ahead_of_next: None,
                operator,
                manual,
            })
        })
        .collect();
    let mut views: Vec<EnvView> = stream::iter(reads).buffered(READS_AT_ONCE).try_collect().await?;
    for i in 0..views.len().saturating_sub(1) {
        let (this, next) = (&views[i], &views[i + 1]);
        views[i].ahead_of_next = match (&this.current, &next.current) {
            (Some(this), Some(next)) if this.release.run != next.release.run => Some(Ahead {
                runs: match (this.seq, next.seq) {
                    (Some(a), Some(b)) => (a - b).max(0),
                    _ => 0,
                },
                age: next.release.opened_at.duration_until(this.release.opened_at),
            }),
            _ => None,
        };
    }
    Ok(views)
}

fn current(env: &EnvName, release: &Release, run: Option<&Run>) -> Current {
    let stage = |kind| run.and_then(|r| r.stage(kind, Some(env)));
    Current {
        release: release.clone(),
        message: run.map(|r| r.commit.message.lines().next().unwrap_or("").to_owned()),
        author: run.map(|r| {
            r.commit
                .author_login
                .clone()
                .unwrap_or_else(|| r.commit.author_name.clone())
        }),
        approved_by: stage(StageKind::Approval)
            .and_then(|s| s.approval.as_ref())
            .map(|a| a.approvals.iter().map(|a| a.by.clone()).collect())
            .unwrap_or_default(),
        smoke: stage(StageKind::Smoke).map(|s| s.status),
        bake: stage(StageKind::Bake).map(|s| s.status),
        seq: run.and_then(|r| r.seq),
    }
}

/// An approval waiting for people.
#[derive(Debug, Serialize)]
pub struct Pending {
    pub run: RunEntry,
    pub env: EnvName,
    /// Who was asked (the pipeline's approvers who are not bots).
    pub asked: Vec<ApproverId>,
    /// Who approved so far.
    pub approved_by: Vec<ApproverId>,
    pub required: u32,
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    /// What approving brings to the environment.
    pub brings: Brings,
}

/// What promoting a run to an environment brings there.
#[derive(Debug, Serialize)]
pub struct Brings {
    /// What the environment runs now.
    pub current: Option<Release>,
    /// The runs it brings since the current release, oldest first, the run itself last.
    pub runs: Vec<RunEntry>,
    /// Older runs it brings were not looked at: too many to list.
    pub more: bool,
    /// The environment before, when it already runs a newer commit than the run.
    pub newer_upstream: Option<(EnvName, Release)>,
}

/// Every approval waiting now, the soonest to expire first.
///
/// A run waits for `env`'s approval once it passed the environment before, so it is among
/// that environment's releases newer than what `env` runs — and older waiting runs give way
/// to a newer one that reaches the gate. So per gate this reads the two environments' records
/// and, newest first, the runs released upstream since `env`'s release, until one waits:
/// bounded by the releases a record keeps ([`crate::domain::environment::RELEASES_KEPT`]),
/// not by the history. Only a gate before the first environment (nothing upstream to look
/// at) reads the pipeline's unfinished runs.
pub async fn pending_approvals(app: &App) -> Result<Vec<Pending>, EngineError> {
    let mut pending = Vec::new();
    for pipeline in &app.config.pipelines {
        let plan = pipeline.plan();
        for (i, gate) in plan.environments.iter().enumerate().filter(|(_, e)| e.approval) {
            let env = &gate.name;
            match i.checked_sub(1).map(|u| &plan.environments[u].name) {
                Some(upstream) => {
                    if let Some((run, read)) = waiting_after(app, &pipeline.name, upstream, env).await? {
                        pending.extend(pending_of(app, pipeline, &run, env, Some(read)).await?);
                    }
                }
                None => {
                    let runs = crate::open_runs::open_runs_of(app, &pipeline.name, None, None).await?;
                    for run in runs.iter().filter(|run| is_waiting(run, env)) {
                        pending.extend(pending_of(app, pipeline, run, env, None).await?);
                    }
                }
            }
        }
    }
    pending.sort_by(|a, b| (a.expires_at, &a.run.id).cmp(&(b.expires_at, &b.run.id)));
    Ok(pending)
}

fn is_waiting(run: &Run, env: &EnvName) -> bool {
    waiting_approval(run, env).is_some()
}

/// The approval of `run` at `env`, if it waits for people.
fn waiting_approval<'r>(run: &'r Run, env: &EnvName) -> Option<&'r crate::domain::ApprovalInfo> {
    run.stage(StageKind::Approval, Some(env))
        .filter(|s| s.status == StageStatus::Waiting)
        .and_then(|s| s.approval.as_ref())
}

/// The records `env`'s approval page needs besides the run's: `env`'s and the one before's.
type GateRecords = (Environment, Option<Environment>);

/// The newest run released to `upstream` since `env`'s current release that waits for
/// `env`'s approval, if any, with the two environments' records.
async fn waiting_after(
    app: &App,
    pipeline: &PipelineName,
    upstream: &EnvName,
    env: &EnvName,
) -> Result<Option<(Run, GateRecords)>, EngineError> {
    let ((upstream_record, _), (record, _)) =
        futures::try_join!(app.environment(pipeline, upstream), app.environment(pipeline, env))?;
    let floor = record.current.as_ref().map(|c| c.opened_at);
    let mut seen: Vec<&crate::domain::RunId> = Vec::new();
    for release in upstream_record.releases.iter().rev() {
        if floor.is_some_and(|f| release.opened_at <= f) || seen.contains(&&release.run) {
            continue;
        }
        seen.push(&release.run);
        if let Some((run, _)) = app.load(&release.run).await?
            && is_waiting(&run, env)
        {
            return Ok(Some((run, (record, Some(upstream_record)))));
        }
    }
    Ok(None)
}

/// The approval `run` waits for at `env`, as `/approvals` shows it; none if it does not wait.
async fn pending_of(
    app: &App,
    pipeline: &PipelineConfig,
    run: &Run,
    env: &EnvName,
    read: Option<GateRecords>,
) -> Result<Option<Pending>, EngineError> {
    let Some(info) = waiting_approval(run, env) else {
        return Ok(None);
    };
    Ok(Some(Pending {
        run: RunEntry::of(run, run.seq.unwrap_or_default()),
        env: env.clone(),
        asked: pipeline
            .approvers
            .iter()
            .filter(|a| !a.is_bot())
            .map(|a| a.id.clone())
            .collect(),
        approved_by: info.approvals.iter().map(|a| a.by.clone()).collect(),
        required: info.required,
        requested_at: info.requested_at,
        expires_at: info.expires_at,
        brings: brings_from(app, run, env, read).await?,
    }))
}

/// What promoting `run` to `env` brings: the runs since the current release of `record`
/// (`env`'s record, as the caller read it), by git's order where it knows, from the index
/// of runs; and whether the environment before already runs a newer commit.
pub async fn brings(app: &App, run: &Run, env: &EnvName, record: Environment) -> Result<Brings, EngineError> {
    brings_from(app, run, env, Some((record, None))).await
}

/// [`brings`], with the environment's record and the one before's when the caller read them
/// already (`None` for the one before: read here, if there is one).
async fn brings_from(
    app: &App,
    run: &Run,
    env: &EnvName,
    read: Option<(Environment, Option<Environment>)>,
) -> Result<Brings, EngineError> {
    let pipeline = &run.pipeline;
    let (record, mut upstream_read) = match read {
        Some((record, upstream)) => (record, Some(upstream)),
        None => (app.environment(pipeline, env).await?.0, None),
    };
    let head = app.pipeline_record(pipeline).await?;
    let lineage = &head.lineage;
    let this = run.place();
    let (runs, more) = runs_since(app, &head, run, record.current.as_ref()).await?;
    let upstream = run
        .plan
        .environments
        .iter()
        .position(|e| &e.name == env)
        .and_then(|i| i.checked_sub(1))
        .map(|i| &run.plan.environments[i].name);
    let newer_upstream = match upstream {
        None => None,
        Some(up) => {
            let upstream_record = match upstream_read.take().flatten() {
                Some(record) => record,
                None => app.environment(pipeline, up).await?.0,
            };
            upstream_record
                .current
                .filter(|c| lineage.is_newer(c.place(), this))
                .map(|c| (up.clone(), c))
        }
    };
    Ok(Brings {
        current: record.current,
        runs,
        more,
        newer_upstream,
    })
}

/// The runs `run` brings over `since` (a release; `None`: over nothing yet, so every older
/// run read), oldest first, `run` last: from the index (`head` is the pipeline's record), newest first from
/// `run` down to `since`'s run, at most [`CARRIES_READ`] of them, keeping those git's order
/// puts between the two. `true` with them when the walk stopped before reaching `since`.
pub async fn runs_since(
    app: &App,
    head: &PipelineRecord,
    run: &Run,
    since: Option<&Release>,
) -> Result<(Vec<RunEntry>, bool), EngineError> {
    let lineage = &head.lineage;
    let this = run.place();
    let (mut runs, more) = match head.place_of(run) {
        Some(seq) => {
            let current = since.map(|c| c.run.clone());
            let walked = run_index::walk_down(app.store.as_ref(), head, &run.pipeline, seq, CARRIES_READ, |e| {
                current.as_ref() == Some(&e.id)
            })
            .await?;
            let more = walked.len() == CARRIES_READ;
            (walked, more)
        }
        None => (vec![RunEntry::of(run, 0)], false),
    };
    runs.retain(|e| {
        let place = Place::new(&e.id, e.created_at);
        (e.id == run.id || lineage.is_newer(this, place)) && since.is_none_or(|c| lineage.is_newer(place, c.place()))
    });
    runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok((runs, more))
}

/// One pipeline's page: a page of its runs and its environments' releases.
#[derive(Debug, Serialize)]
pub struct History {
    pub name: PipelineName,
    pub repo: String,
    pub branch: String,
    pub mode: Mode,
    /// Newest first.
    pub runs: Vec<RunEntry>,
    /// The cursor of the next (older) page.
    pub next: Option<String>,
    pub environments: Vec<EnvHistory>,
}

/// An environment's releases, newest first.
#[derive(Debug, Serialize)]
pub struct EnvHistory {
    pub name: EnvName,
    pub current: Option<Release>,
    pub releases: Vec<ReleaseLine>,
}

/// One release, and whether it put back an older commit (a rollback).
#[derive(Debug, Serialize)]
pub struct ReleaseLine {
    #[serde(flatten)]
    pub release: Release,
    pub rollback: bool,
}

/// `config`'s page of runs from `cursor`, `limit` of them, and its environments' releases.
pub async fn history(
    app: &App,
    config: &PipelineConfig,
    cursor: &Cursor,
    limit: usize,
) -> Result<History, EngineError> {
    let (runs, next) = run_index::newest(
        app.store.as_ref(),
        std::slice::from_ref(&config.name),
        None,
        cursor,
        limit,
    )
    .await?;
    let reads: Vec<_> = config
        .environments
        .iter()
        .map(|env| async move {
            let (record, _) = app.environment(&config.name, &env.name).await?;
            Ok::<_, EngineError>(EnvHistory {
                name: env.name.clone(),
                releases: release_lines(&record.releases),
                current: record.current,
            })
        })
        .collect();
    let environments = stream::iter(reads).buffered(READS_AT_ONCE).try_collect().await?;
    Ok(History {
        name: config.name.clone(),
        repo: config.repo.to_string(),
        branch: config.branch.to_string(),
        mode: config.mode,
        runs,
        next: next.map(|c| c.to_string()),
        environments,
    })
}

/// Releases newest first, each marked when it went back to an older commit than the one
/// before it (a rollback, by when their runs opened).
fn release_lines(releases: &[Release]) -> Vec<ReleaseLine> {
    let mut lines: Vec<ReleaseLine> = releases
        .iter()
        .enumerate()
        .map(|(i, r)| ReleaseLine {
            release: r.clone(),
            rollback: i > 0 && r.opened_at < releases[i - 1].opened_at,
        })
        .collect();
    lines.reverse();
    lines
}

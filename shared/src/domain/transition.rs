//! The pipeline as a pure state machine: `(Run, Input) → (Run, Vec<Command>)`.
//!
//! No I/O happens here. Callers load a run, call [`apply`], write the new run back with a
//! conditional write, and only then send the commands. Because the function is pure and
//! ignores duplicate and stale events, the same event delivered twice, late or out of order
//! never causes a second deploy.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::ids::{ApproverId, BranchName, CommitSha, EnvName, PipelineName, RepoName, RunId};
use super::run::{
    Actor, Approval, ApprovalInfo, BuildInfo, BuildStatus, CheckResult, CommitInfo, HistoryEntry, Phase, PhaseOutcome,
    PhaseStatus, Plan, Release, RollbackPlan, Run, RunStatus, Stage, StageKind, StageStatus,
};

/// Everything needed to open a run for a pushed commit.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub pipeline: PipelineName,
    pub repo: RepoName,
    pub branch: BranchName,
    pub sha: CommitSha,
    pub commit: CommitInfo,
    pub plan: Plan,
    /// The commits the push said come before this one (its `before` and the other commits
    /// it listed): the run's place in git's order ([`super::Lineage`]).
    pub parents: Vec<CommitSha>,
    /// Every commit the push carried (see [`super::run::Carried`]).
    pub carried: super::run::Carried,
}

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// CI reported on the commit.
    BuildFinished { status: BuildStatus, build: BuildInfo },
    /// A git host reported one named check (a workflow, a pipeline, a status). The build
    /// passes when every required check is green, and fails when any is red.
    CheckReported {
        check: String,
        status: BuildStatus,
        url: Option<super::web_url::WebUrl>,
        coverage: Option<f64>,
    },
    /// A worker claims a queued deploy. Ignored unless the deploy is still queued, which is
    /// what stops a redelivered message from deploying twice.
    DeployStarted { env: EnvName },
    /// The claimed deploy ended: `Ok(())` or `Err(reason)`, with each phase's outcome and
    /// what the environment ran before (what a rollback goes back to).
    DeployFinished {
        env: EnvName,
        output: String,
        result: Result<(), String>,
        phases: Vec<PhaseOutcome>,
        previous: Option<Release>,
    },
    /// The deploy may not start yet: the environment is outside its windows, frozen, or busy
    /// with another run. Recorded once per reason; `notify` tells people too.
    DeployHeld { env: EnvName, reason: String, notify: bool },
    /// A newer run took this run's place at `env`: its pending approval or queued deploy
    /// there will never happen.
    Superseded { env: EnvName, by: RunId },
    /// Another run's release (`by`) reached `env` after this run's queued rollback there was
    /// decided on — for one asked for by hand, after it was asked; for an automatic one,
    /// after this run's deploy took the lease (its lease ran out and another run took it).
    /// Going back now would undo that release too, so the rollback ends without running.
    RollbackOvertaken { env: EnvName, by: RunId },
    /// A worker starts watching the environment's health after the deploy.
    BakeStarted { env: EnvName },
    /// The bake ended: `Ok(what was seen)` or `Err(why it is unhealthy)`.
    BakeFinished {
        env: EnvName,
        result: Result<String, String>,
    },
    /// A worker claims a queued rollback.
    RollbackStarted { env: EnvName },
    /// The rollback ended, with each phase's outcome.
    RollbackFinished {
        env: EnvName,
        phases: Vec<PhaseOutcome>,
        result: Result<(), String>,
    },
    /// Someone asked to put `env` back to an earlier release. Applied to the run `env`
    /// runs now.
    RollbackRequested { env: EnvName, to: Release, by: String },
    /// A worker claims queued smoke checks.
    SmokeStarted { env: EnvName },
    /// The smoke checks ended; they passed if every check passed.
    SmokeFinished { env: EnvName, checks: Vec<CheckResult> },
    /// An approver decided. Ignored once a decision stands or after the deadline.
    ApprovalDecided {
        env: EnvName,
        approver: ApproverId,
        approve: bool,
        comment: Option<String>,
        /// A bot account: its decision never counts.
        bot: bool,
    },
    /// The approval's deadline passed with no decision.
    ApprovalExpired { env: EnvName },
    /// The build's deadline (the run's opening plus its plan's build timeout) passed with
    /// the build still waiting for CI: it fails. Ignored before the deadline and once the
    /// build has a result.
    BuildTimedOut,
    /// Someone asked to try the run's work in `env` again after its deploy, smoke checks or
    /// bake there failed (a flaky deploy, a dependency that was down): the run deploys to
    /// `env` again and goes on from there. `newer` is a newer run that has passed `env` since,
    /// found by the caller from the environment's record: then retrying would put an older
    /// commit over a newer one, and it is refused.
    RetryRequested {
        env: EnvName,
        by: String,
        newer: Option<RunId>,
    },
    /// A claimed stage's worker vanished and its deadline passed: the outcome is unknown.
    StageAbandoned {
        kind: StageKind,
        env: EnvName,
        reason: String,
    },
}

/// An event with when it happened and who caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub at: Timestamp,
    pub actor: Actor,
    pub event: Event,
}

/// Work the caller must do after it has stored the new run. Each is one queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Deploy {
        run: RunId,
        env: EnvName,
    },
    Smoke {
        run: RunId,
        env: EnvName,
    },
    Bake {
        run: RunId,
        env: EnvName,
    },
    Rollback {
        run: RunId,
        env: EnvName,
    },
    /// Older runs pending approval for `env` give way to `run`.
    Supersede {
        run: RunId,
        env: EnvName,
    },
    Notify(Notice),
}

impl Command {
    /// The run the command is about.
    pub fn run(&self) -> &RunId {
        match self {
            Command::Deploy { run, .. }
            | Command::Smoke { run, .. }
            | Command::Bake { run, .. }
            | Command::Rollback { run, .. }
            | Command::Supersede { run, .. } => run,
            Command::Notify(notice) => &notice.run,
        }
    }

    /// The environment the command is about, if it is about one.
    pub fn env(&self) -> Option<&EnvName> {
        match self {
            Command::Deploy { env, .. }
            | Command::Smoke { env, .. }
            | Command::Bake { env, .. }
            | Command::Rollback { env, .. }
            | Command::Supersede { env, .. } => Some(env),
            Command::Notify(_) => None,
        }
    }
}

/// A notification to send. `seq` is the index of the history entry that caused it, so
/// `(run, seq)` names it uniquely and a redelivered notice is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub run: RunId,
    pub seq: usize,
    pub kind: NoticeKind,
}

impl Notice {
    /// A stable, key-safe id: `<run>.<seq>`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.run, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NoticeKind {
    /// Approvers are asked to approve or reject promotion to `env` before `expires_at`.
    ApprovalRequested { env: EnvName, expires_at: Timestamp },
    /// The run reached the end of its plan: `env` (the last environment) runs the commit.
    Released { env: EnvName },
    /// A stage failed and the run stopped. `red_main` marks a failed build of the pipeline's
    /// branch: the team's first job is to fix it.
    Failed {
        stage: String,
        reason: String,
        red_main: bool,
    },
    /// An approver rejected promotion.
    Rejected {
        env: EnvName,
        by: ApproverId,
        comment: Option<String>,
    },
    /// Nobody decided in time.
    ApprovalExpired { env: EnvName },
    /// `env` was put back after a failure (or on request): backup restored, `to` redeployed.
    RolledBack {
        env: EnvName,
        to: Option<CommitSha>,
        reason: String,
    },
    /// A rollback failed: an alert, naming what is left to do by hand.
    RollbackFailed {
        env: EnvName,
        reason: String,
        by_hand: Vec<String>,
    },
    /// A newer run took this one's place.
    Superseded { env: EnvName, by: RunId },
    /// The deploy waits for a deploy window or a freeze to end.
    Held { env: EnvName, reason: String },
}

/// Why an event changed nothing. Callers map these to their own answers (HTTP 409, an acked
/// duplicate message, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("this run has no {0} stage")]
    NoSuchStage(String),
    #[error("{0:?} is not one of this pipeline's required checks")]
    NotRequired(String),
    #[error("{stage} is not reached yet")]
    NotReached { stage: String },
    #[error("{stage} is already {status}")]
    AlreadyDone { stage: String, status: StageStatus },
    #[error("the run has already ended ({0})")]
    RunEnded(RunStatus),
    #[error("the approval for {env} expired at {expires_at}")]
    ApprovalExpired { env: EnvName, expires_at: Timestamp },
    #[error("the approval for {env} does not expire until {expires_at}")]
    NotDueYet { env: EnvName, expires_at: Timestamp },
    #[error("the build waits for CI until {deadline}")]
    BuildNotDueYet { deadline: Timestamp },
    #[error(
        "CI reported after the build's deadline {deadline} (this pipeline's build_timeout is {timeout:#}), so the run no longer takes build results; push a new commit to build again, or raise build_timeout in the pipeline's configuration"
    )]
    BuildTimedOut {
        deadline: Timestamp,
        timeout: SignedDuration,
    },
    #[error("{stage} was superseded by the newer run {by}")]
    Superseded { stage: String, by: RunId },
    #[error("{0} is a bot account; bots never approve")]
    Bot(ApproverId),
    #[error("{0} already approved")]
    AlreadyApproved(ApproverId),
    #[error("nothing changed")]
    Unchanged,
    #[error("{0}")]
    CannotRollBack(String),
    #[error("{0}")]
    CannotRetry(String),
}

/// What [`apply`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The run changed; store it, then carry out the commands.
    Applied { run: Box<Run>, commands: Vec<Command> },
    /// Nothing changed.
    Ignored(Ignored),
}

/// The check name the generic CI callback (`/hooks/ci`) reports under when a pipeline has
/// `required_checks`.
pub const GENERIC_CHECK: &str = "ci";

/// Opens a run for a pushed commit. The build stage waits for CI; nothing is queued yet.
pub fn open(new: NewRun, at: Timestamp) -> Run {
    let mut stages = vec![Stage::new(StageKind::Build, None)];
    for env in &new.plan.environments {
        if env.approval {
            stages.push(Stage::new(StageKind::Approval, Some(env.name.clone())));
        }
        stages.push(Stage::new(StageKind::Deploy, Some(env.name.clone())));
        if env.smoke {
            stages.push(Stage::new(StageKind::Smoke, Some(env.name.clone())));
        }
        if env.bake {
            stages.push(Stage::new(StageKind::Bake, Some(env.name.clone())));
        }
    }
    stages[0].status = StageStatus::Waiting;
    stages[0].started_at = Some(at);
    let what = format!(
        "run opened for {} on {} ({}), waiting for CI",
        new.sha.short(),
        new.branch,
        first_line(&new.commit.message)
    );
    let actor = Actor::GitHost(new.commit.pushed_by.clone());
    Run {
        id: RunId::new(&new.pipeline, &new.sha),
        pipeline: new.pipeline,
        repo: new.repo,
        branch: new.branch,
        sha: new.sha,
        commit: new.commit,
        parents: new.parents,
        carried: new.carried,
        plan: new.plan,
        build: BuildInfo::default(),
        stages,
        created_at: at,
        updated_at: at,
        history: vec![HistoryEntry { at, actor, what }],
        outbox: Vec::new(),
        seq: None,
        retired: Vec::new(),
    }
}

/// Applies one event to a run. Pure: the same run and input always give the same outcome.
pub fn apply(run: &Run, input: &Input) -> Outcome {
    let mut next = run.clone();
    let mut tx = Tx {
        run: &mut next,
        input,
        commands: Vec::new(),
    };
    match tx.step() {
        Ok(()) => {
            let commands = tx.commands;
            next.updated_at = input.at;
            next.outbox = commands.clone();
            Outcome::Applied {
                run: Box::new(next),
                commands,
            }
        }
        Err(ignored) => Outcome::Ignored(ignored),
    }
}

/// The outbox commands worth sending again after a suspected lost send: work for stages
/// still queued (a worker will claim them), smoke checks still running (they need no claim,
/// and the smoke handler never re-sends them itself), and notices (the notify handler skips
/// what it already delivered). A claimed or finished stage's work is never re-sent, so
/// re-sending cannot bounce between handlers.
pub fn resendable(run: &Run) -> Vec<Command> {
    run.outbox
        .iter()
        .filter(|command| match command {
            Command::Deploy { env, .. } => is_queued(run, StageKind::Deploy, env),
            // Smoke checks run without a claim (see `advance`): running ones are sent again
            // too, and checking twice is harmless.
            Command::Smoke { env, .. } => run
                .stage(StageKind::Smoke, Some(env))
                .is_some_and(|s| matches!(s.status, StageStatus::Queued | StageStatus::Running)),
            Command::Bake { env, .. } => is_queued(run, StageKind::Bake, env),
            Command::Rollback { env, .. } => is_queued(run, StageKind::Rollback, env),
            Command::Supersede { .. } | Command::Notify(_) => true,
        })
        .cloned()
        .collect()
}

fn is_queued(run: &Run, kind: StageKind, env: &EnvName) -> bool {
    run.stage(kind, Some(env))
        .is_some_and(|s| s.status == StageStatus::Queued)
}

struct Tx<'a> {
    run: &'a mut Run,
    input: &'a Input,
    commands: Vec<Command>,
}

impl Tx<'_> {
    fn step(&mut self) -> Result<(), Ignored> {
        let at = self.input.at;
        match &self.input.event {
            // With required checks, the generic CI callback is one more check, named `ci`: it
            // gates like the others when listed and is ignored when not, so it cannot bypass them.
            Event::BuildFinished { status, build } if !self.run.plan.required_checks.is_empty() => {
                self.check_reported(GENERIC_CHECK, *status, build)
            }
            Event::BuildFinished { status, build } => {
                let build = BuildInfo {
                    checks: self.run.build.checks.clone(),
                    ..build.clone()
                };
                self.build_finished(*status, &build, "CI build")
            }
            Event::CheckReported {
                check,
                status,
                url,
                coverage,
            } => {
                let update = BuildInfo {
                    url: url.clone(),
                    coverage: *coverage,
                    ..BuildInfo::default()
                };
                self.check_reported(check, *status, &update)
            }
            Event::DeployStarted { env } => self.claim(StageKind::Deploy, env),
            Event::SmokeStarted { env } => self.claim(StageKind::Smoke, env),
            Event::DeployFinished {
                env,
                output,
                result,
                phases,
                previous,
            } => {
                let i = self.running(StageKind::Deploy, env)?;
                let stage = &mut self.run.stages[i];
                stage.output = Some(output.clone());
                stage.phases = phases.clone();
                stage.previous = previous.clone();
                match result {
                    Ok(()) => {
                        self.run.stages[i].artifact = self.run.build.artifact.clone();
                        let backup = self.run.stages[i]
                            .backup_reference()
                            .map(|r| format!(" (backup {r})"))
                            .unwrap_or_default();
                        self.succeed(i, format!("deployed {} to {env}{backup}", self.run.sha.short()));
                    }
                    Err(reason) => {
                        let failed = phases.iter().find(|p| p.status == PhaseStatus::Failed).map(|p| p.phase);
                        let failed_word = failed.map(|p| format!(" in {p}")).unwrap_or_default();
                        // A failed backup changed nothing: there is nothing to put back.
                        let changed = matches!(failed, Some(Phase::Migrate | Phase::Release));
                        self.fail(i, format!("{reason}{failed_word}"));
                        if changed {
                            self.roll_back(
                                env,
                                format!(
                                    "the {} of {} failed",
                                    failed.map_or("deploy", Phase::as_str),
                                    self.run.sha.short()
                                ),
                            );
                        }
                    }
                }
                Ok(())
            }
            Event::DeployHeld { env, reason, notify } => {
                let i = self.index(StageKind::Deploy, env)?;
                if self.run.stages[i].status != StageStatus::Queued {
                    return Err(self.not_applicable(i));
                }
                if self.run.stages[i].summary.as_deref() == Some(reason.as_str()) {
                    return Err(Ignored::Unchanged);
                }
                self.run.stages[i].summary = Some(reason.clone());
                self.log(reason.clone());
                if *notify {
                    self.notify(NoticeKind::Held {
                        env: env.clone(),
                        reason: reason.clone(),
                    });
                }
                Ok(())
            }
            Event::Superseded { env, by } => {
                // A pending approval or a queued deploy. Never a queued rollback: one that
                // comes late (decided on while the run still waited for its approval) must
                // not call off the rollback of a release that has failed since; that takes
                // `RollbackOvertaken`, decided on the environment's record.
                let i = [StageKind::Approval, StageKind::Deploy]
                    .into_iter()
                    .filter_map(|kind| self.run.stage_index(kind, Some(env)))
                    .find(|i| matches!(self.run.stages[*i].status, StageStatus::Waiting | StageStatus::Queued))
                    .ok_or_else(|| match self.run.stage_index(StageKind::Deploy, Some(env)) {
                        Some(i) => self.not_applicable(i),
                        None => Ignored::NoSuchStage(format!("deploy:{env}")),
                    })?;
                let what = format!("{} superseded by the newer run {by}", self.run.stages[i].label());
                self.supersede(i, env, by, what);
                Ok(())
            }
            Event::RollbackOvertaken { env, by } => {
                let i = self.index(StageKind::Rollback, env)?;
                if self.run.stages[i].status != StageStatus::Queued {
                    return Err(self.not_applicable(i));
                }
                let what = format!(
                    "rollback of {env} called off: run {by} released there since, and going back would undo it"
                );
                self.supersede(i, env, by, what);
                Ok(())
            }
            Event::BakeStarted { env } => self.claim(StageKind::Bake, env),
            Event::BakeFinished { env, result } => {
                let i = self.running(StageKind::Bake, env)?;
                match result {
                    Ok(seen) => self.succeed(i, format!("{env} stayed healthy: {seen}")),
                    Err(why) => {
                        self.fail(i, format!("{env} turned unhealthy during the bake: {why}"));
                        self.roll_back(env, format!("{env} turned unhealthy after the deploy: {why}"));
                    }
                }
                Ok(())
            }
            Event::RollbackStarted { env } => self.claim(StageKind::Rollback, env),
            Event::RollbackFinished { env, phases, result } => {
                let i = self.running(StageKind::Rollback, env)?;
                self.run.stages[i].phases = phases.clone();
                let plan = self.run.stages[i].rollback.clone();
                let to = plan.as_ref().and_then(|p| p.to.clone());
                let to_words = to
                    .as_ref()
                    .map(|r| format!(" to {}", r.sha.short()))
                    .unwrap_or_default();
                match result {
                    Ok(()) => {
                        self.finish(i, StageStatus::Succeeded, format!("rolled {env} back{to_words}"));
                        self.notify(NoticeKind::RolledBack {
                            env: env.clone(),
                            to: to.map(|r| r.sha),
                            reason: plan.map(|p| p.reason).unwrap_or_default(),
                        });
                    }
                    Err(reason) => {
                        let by_hand = left_by_hand(env, plan.as_ref(), phases);
                        self.finish(i, StageStatus::Failed, format!("rollback of {env} failed: {reason}"));
                        self.notify(NoticeKind::RollbackFailed {
                            env: env.clone(),
                            reason: reason.clone(),
                            by_hand,
                        });
                    }
                }
                Ok(())
            }
            Event::RollbackRequested { env, to, by } => {
                let deployed = self
                    .run
                    .stage(StageKind::Deploy, Some(env))
                    .is_some_and(|s| s.status == StageStatus::Succeeded);
                if !deployed {
                    return Err(Ignored::CannotRollBack(format!(
                        "{} was never released to {env}",
                        self.run.sha.short()
                    )));
                }
                if self.run.busy_in(env) {
                    return Err(Ignored::CannotRollBack(format!(
                        "{env} is busy with this run; try again when it is done"
                    )));
                }
                // A run still on its way (waiting for an approval, deploying further) is not
                // rolled back under its own feet: reject its approval, or wait until it ends.
                if !self.run.status().is_finished() {
                    return Err(Ignored::CannotRollBack(format!(
                        "{} is still on its way ({}); reject its pending approval or wait until it ends, then roll back",
                        self.run.sha.short(),
                        self.run.status()
                    )));
                }
                if self.run.status() == RunStatus::RolledBack {
                    return Err(Ignored::CannotRollBack(format!(
                        "{} was already rolled back",
                        self.run.sha.short()
                    )));
                }
                if to.run == self.run.id {
                    return Err(Ignored::CannotRollBack(format!(
                        "{env} already runs {}",
                        to.sha.short()
                    )));
                }
                let mut stage = Stage::new(StageKind::Rollback, Some(env.clone()));
                stage.status = StageStatus::Queued;
                stage.rollback = Some(RollbackPlan {
                    backup: None,
                    to: Some(to.clone()),
                    reason: format!("{by} asked to roll {env} back to {}", to.sha.short()),
                    manual: true,
                });
                self.run.stages.push(stage);
                self.log(format!(
                    "{by} asked to roll {env} back from {} to {}",
                    self.run.sha.short(),
                    to.sha.short()
                ));
                self.commands.push(Command::Rollback {
                    run: self.run.id.clone(),
                    env: env.clone(),
                });
                Ok(())
            }
            Event::SmokeFinished { env, checks } => {
                let i = self.running(StageKind::Smoke, env)?;
                self.run.stages[i].checks = checks.clone();
                let failed: Vec<&CheckResult> = checks.iter().filter(|c| !c.passed).collect();
                if failed.is_empty() {
                    self.succeed(i, format!("{} smoke check(s) passed on {env}", checks.len()));
                } else {
                    let reason = failed
                        .iter()
                        .map(|c| format!("{}: {}", c.name, c.detail))
                        .collect::<Vec<_>>()
                        .join("; ");
                    self.fail(i, format!("smoke checks failed on {env}: {reason}"));
                    self.roll_back(
                        env,
                        format!("the smoke checks of {} failed on {env}", self.run.sha.short()),
                    );
                }
                Ok(())
            }
            Event::ApprovalDecided {
                env,
                approver,
                approve,
                comment,
                bot,
            } => {
                let i = self.waiting_approval(env)?;
                let expires_at = self.approval_deadline(i);
                if at >= expires_at {
                    return Err(Ignored::ApprovalExpired {
                        env: env.clone(),
                        expires_at,
                    });
                }
                if *bot {
                    return Err(Ignored::Bot(approver.clone()));
                }
                let note = comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
                if *approve {
                    let info = self.run.stages[i].approval.get_or_insert_with(|| ApprovalInfo {
                        requested_at: at,
                        expires_at,
                        decided_by: None,
                        comment: None,
                        approvals: Vec::new(),
                        required: 1,
                    });
                    if info.approvals.iter().any(|a| a.by == *approver) {
                        return Err(Ignored::AlreadyApproved(approver.clone()));
                    }
                    info.approvals.push(Approval {
                        by: approver.clone(),
                        at,
                        comment: comment.clone(),
                    });
                    let (have, need) = (info.approvals.len(), usize::try_from(info.required).unwrap_or(1).max(1));
                    if have >= need {
                        info.decided_by = Some(approver.clone());
                        info.comment = comment.clone();
                        let who = info
                            .approvals
                            .iter()
                            .map(|a| a.by.to_string())
                            .collect::<Vec<_>>()
                            .join(" and ");
                        self.succeed(i, format!("{who} approved promotion to {env}{note}"));
                    } else {
                        self.log(format!(
                            "{approver} approved promotion to {env} ({have} of {need} approvals){note}"
                        ));
                    }
                } else {
                    if let Some(info) = self.run.stages[i].approval.as_mut() {
                        info.decided_by = Some(approver.clone());
                        info.comment = comment.clone();
                    }
                    let what = format!("{approver} rejected promotion to {env}{note}");
                    self.finish(i, StageStatus::Rejected, what);
                    self.notify(NoticeKind::Rejected {
                        env: env.clone(),
                        by: approver.clone(),
                        comment: comment.clone(),
                    });
                }
                Ok(())
            }
            Event::ApprovalExpired { env } => {
                let i = self.waiting_approval(env)?;
                let expires_at = self.approval_deadline(i);
                if at < expires_at {
                    return Err(Ignored::NotDueYet {
                        env: env.clone(),
                        expires_at,
                    });
                }
                let what = format!("nobody decided on promotion to {env} before {expires_at}");
                self.finish(i, StageStatus::Expired, what);
                self.notify(NoticeKind::ApprovalExpired { env: env.clone() });
                Ok(())
            }
            Event::BuildTimedOut => self.build_timed_out(),
            Event::RetryRequested { env, by, newer } => self.retry(env, by, newer.as_ref()),
            Event::StageAbandoned { kind, env, reason } => {
                let i = self.running(*kind, env)?;
                if *kind == StageKind::Rollback {
                    let plan = self.run.stages[i].rollback.clone();
                    let by_hand = left_by_hand(env, plan.as_ref(), &[]);
                    self.finish(i, StageStatus::Failed, format!("rollback of {env} failed: {reason}"));
                    self.notify(NoticeKind::RollbackFailed {
                        env: env.clone(),
                        reason: reason.clone(),
                        by_hand,
                    });
                } else {
                    self.fail(i, reason.clone());
                }
                Ok(())
            }
        }
    }

    /// Starts `env`'s deploy again after its deploy, smoke checks or bake failed: every stage
    /// from that deploy on is pending again, the rollbacks that followed the failure are kept
    /// among the run's earlier attempts, and the deploy is queued. The lease's rules still
    /// hold when it runs: a newer commit that reached `env` meanwhile supersedes it.
    fn retry(&mut self, env: &EnvName, by: &str, newer: Option<&RunId>) -> Result<(), Ignored> {
        let d = self.index(StageKind::Deploy, env)?;
        let failed = self.run.stages.iter().find(|s| {
            s.env.as_ref() == Some(env)
                && matches!(s.kind, StageKind::Deploy | StageKind::Smoke | StageKind::Bake)
                && s.status == StageStatus::Failed
        });
        let Some(failed) = failed.map(Stage::label) else {
            return Err(Ignored::CannotRetry(format!(
                "{} did not fail at a deploy, smoke checks or bake in {env}; only those can be retried",
                self.run.sha.short()
            )));
        };
        if self.run.busy_in(env) {
            return Err(Ignored::CannotRetry(format!(
                "the rollback of {env} is still under way; retry once it is done"
            )));
        }
        if let Some(newer) = newer {
            return Err(Ignored::CannotRetry(format!(
                "the newer run {newer} has passed {env} since; retrying {} would put an older commit over it",
                self.run.sha.short()
            )));
        }
        // A rollback of another environment (asked for by hand once the run had failed here)
        // is the run's too. While it is under way the retry would start its stages over and
        // lose it; once it ran, that environment was taken back from this commit, and sending
        // the commit on from there would ship what it no longer runs. One called off changed
        // nothing and does not count.
        let elsewhere = self.run.stages.iter().find(|s| {
            s.kind == StageKind::Rollback && s.env.as_ref() != Some(env) && s.status != StageStatus::Superseded
        });
        if let Some(rollback) = elsewhere {
            let there = rollback.env.as_ref().map_or("another environment", EnvName::as_str);
            let short = self.run.sha.short();
            return Err(Ignored::CannotRetry(if rollback.status.is_terminal() {
                format!(
                    "{there} was rolled back from {short} (that rollback {}); retrying {short} in {env} would ship a release {there} was taken back from: push a fix instead",
                    rollback.status
                )
            } else {
                format!("the rollback of {there} is still under way; retry once it is done")
            }));
        }
        let (kept, retired): (Vec<Stage>, Vec<Stage>) =
            std::mem::take(&mut self.run.stages).into_iter().partition(|s| {
                // This environment's rollbacks, and any other's that was called off (the
                // only kind left by now): set aside as earlier attempts, so that the stages
                // from the deploy on are the plan's again, in its order.
                !(s.kind == StageKind::Rollback && (s.env.as_ref() == Some(env) || s.status == StageStatus::Superseded))
            });
        self.run.stages = kept;
        self.run.retired.extend(retired);
        for stage in &mut self.run.stages[d..] {
            let attempts = stage.attempts;
            *stage = Stage::new(stage.kind, stage.env.clone());
            stage.attempts = attempts;
        }
        self.log(format!(
            "{by} asked to retry {} in {env} after {failed} failed",
            self.run.sha.short()
        ));
        self.advance(d);
        Ok(())
    }

    /// One required check reported; the build decides once they are all in, or one is red.
    /// `update` carries what the report adds: a build URL, the artifact, coverage.
    fn check_reported(&mut self, check: &str, status: BuildStatus, update: &BuildInfo) -> Result<(), Ignored> {
        if !self.run.plan.required_checks.iter().any(|c| c == check) {
            return Err(Ignored::NotRequired(check.to_owned()));
        }
        let i = self
            .run
            .stage_index(StageKind::Build, None)
            .ok_or_else(|| Ignored::NoSuchStage("build".into()))?;
        let current = self.run.stages[i].status;
        if self.run.build.checks.get(check) == Some(&status) {
            return Err(Ignored::AlreadyDone {
                stage: format!("check {check}"),
                status: current,
            });
        }
        let rerun_green = self.rerun_green(i, status);
        if current != StageStatus::Waiting && !rerun_green {
            return Err(self.not_applicable(i));
        }
        self.before_build_deadline()?;
        let mut build = self.run.build.clone();
        build.checks.insert(check.to_owned(), status);
        if update.url.is_some() {
            build.url = update.url.clone();
        }
        if update.artifact.is_some() {
            build.artifact = update.artifact.clone();
        }
        if update.coverage.is_some() {
            build.coverage = update.coverage;
        }
        let required = &self.run.plan.required_checks;
        let red = required.iter().find_map(|c| {
            build
                .checks
                .get(c)
                .filter(|s| **s != BuildStatus::Success)
                .map(|s| (c.clone(), *s))
        });
        let pending: Vec<&str> = required
            .iter()
            .filter(|c| !build.checks.contains_key(*c))
            .map(String::as_str)
            .collect();
        match (red, pending.is_empty()) {
            (Some((c, s)), _) => {
                let source = format!("check {c}");
                self.build_finished(s, &build, &source)
            }
            (None, true) => {
                let source = format!("required checks ({})", required.join(", "));
                self.build_finished(BuildStatus::Success, &build, &source)
            }
            (None, false) => {
                self.run.build = build;
                let word = if status == BuildStatus::Success {
                    "passed"
                } else {
                    "reported"
                };
                self.log(format!("check {check} {word}; waiting for {}", pending.join(", ")));
                Ok(())
            }
        }
    }

    fn build_finished(&mut self, status: BuildStatus, build: &BuildInfo, source: &str) -> Result<(), Ignored> {
        let i = self
            .run
            .stage_index(StageKind::Build, None)
            .ok_or_else(|| Ignored::NoSuchStage("build".into()))?;
        let current = self.run.stages[i].status;
        let rerun_green = self.rerun_green(i, status);
        if current != StageStatus::Waiting && !rerun_green {
            return Err(self.not_applicable(i));
        }
        self.before_build_deadline()?;
        if rerun_green {
            for stage in &mut self.run.stages[i + 1..] {
                stage.status = StageStatus::Pending;
                stage.finished_at = None;
                stage.summary = None;
            }
        }
        self.run.build = build.clone();
        let via = build.url.as_ref().map(|u| format!(" ({u})")).unwrap_or_default();
        match status {
            BuildStatus::Success => {
                if let Some(reason) = self.coverage_shortfall(build) {
                    self.fail(i, reason);
                    return Ok(());
                }
                let what = if rerun_green {
                    format!("CI re-ran the build and {source} passed{via}")
                } else {
                    format!("{source} passed{via}")
                };
                self.succeed(i, what);
            }
            BuildStatus::Failure | BuildStatus::Error => {
                let word = if status == BuildStatus::Failure {
                    "failed"
                } else {
                    "errored"
                };
                self.fail(i, format!("{source} {word}{via}"));
            }
        }
        Ok(())
    }

    /// CI's results count until the build's deadline; past it the build has timed out (or
    /// is about to, at the next sweep), whatever CI says.
    fn before_build_deadline(&self) -> Result<(), Ignored> {
        let deadline = self.run.build_deadline();
        if self.input.at >= deadline {
            return Err(Ignored::BuildTimedOut {
                deadline,
                timeout: self.run.plan.build_timeout,
            });
        }
        Ok(())
    }

    /// The build is still waiting for CI at its deadline: it fails, naming the timeout and
    /// the checks that never reported.
    fn build_timed_out(&mut self) -> Result<(), Ignored> {
        let i = self
            .run
            .stage_index(StageKind::Build, None)
            .ok_or_else(|| Ignored::NoSuchStage("build".into()))?;
        if self.run.stages[i].status != StageStatus::Waiting {
            return Err(self.not_applicable(i));
        }
        let deadline = self.run.build_deadline();
        if self.input.at < deadline {
            return Err(Ignored::BuildNotDueYet { deadline });
        }
        let missing: Vec<&str> = self
            .run
            .plan
            .required_checks
            .iter()
            .filter(|c| !self.run.build.checks.contains_key(*c))
            .map(String::as_str)
            .collect();
        let which = if missing.is_empty() || missing.len() == self.run.plan.required_checks.len() {
            String::new()
        } else {
            format!(" on {}", missing.join(", "))
        };
        let reason = format!(
            "CI never reported{which} within {:#} (the pipeline's build_timeout); if its builds take longer, raise build_timeout in the pipeline's configuration",
            self.run.plan.build_timeout
        );
        // Not a red build: nothing says the branch is broken, only that CI stayed silent.
        self.fail_as(i, reason, false);
        Ok(())
    }

    /// A failed build (stage `i`) that CI re-runs green may still go on, as long as nothing
    /// after it has started; a result never moves a run backwards.
    fn rerun_green(&self, i: usize, status: BuildStatus) -> bool {
        self.run.stages[i].status == StageStatus::Failed
            && status == BuildStatus::Success
            && self.run.stages[i + 1..]
                .iter()
                .all(|s| s.status == StageStatus::Skipped)
    }

    /// Why a green build still may not go on: its coverage is under the pipeline's minimum,
    /// or it reported none while one is required.
    fn coverage_shortfall(&self, build: &BuildInfo) -> Option<String> {
        let min = self.run.plan.min_coverage?;
        match build.coverage {
            Some(c) if c < min => Some(format!(
                "coverage {c:.1}% is below this pipeline's minimum of {min:.1}%"
            )),
            Some(_) => None,
            None => Some(format!(
                "CI reported no coverage, and this pipeline requires at least {min:.1}%"
            )),
        }
    }

    /// A worker claims a queued stage.
    fn claim(&mut self, kind: StageKind, env: &EnvName) -> Result<(), Ignored> {
        let i = self.index(kind, env)?;
        if self.run.stages[i].status != StageStatus::Queued {
            return Err(self.not_applicable(i));
        }
        self.start(i);
        if kind == StageKind::Deploy
            && let Some(reason) = self.artifact_mismatch(env)
        {
            self.fail(i, reason);
        }
        Ok(())
    }

    /// Stage `i` is under way from now: one more attempt, logged.
    fn start(&mut self, i: usize) {
        let at = self.input.at;
        let stage = &mut self.run.stages[i];
        stage.status = StageStatus::Running;
        stage.attempts += 1;
        stage.started_at = Some(at);
        let what = format!("{} started", stage.label());
        self.log(what);
    }

    /// Every environment deploys the artifact CI reported and the earlier environments
    /// verified: a different one (CI re-reported after staging, say) is refused.
    fn artifact_mismatch(&self, env: &EnvName) -> Option<String> {
        let pinned = self.run.build.artifact.as_deref();
        self.run
            .stages
            .iter()
            .filter(|s| {
                s.kind == StageKind::Deploy && s.status == StageStatus::Succeeded && s.env.as_ref() != Some(env)
            })
            .find_map(|s| {
                let earlier = s.artifact.as_deref();
                (earlier != pinned).then(|| {
                    format!(
                        "{env} refuses artifact {} because {} verified {}; every environment deploys the same artifact",
                        pinned.unwrap_or("(none)"),
                        s.env.as_ref().map_or("an earlier environment", EnvName::as_str),
                        earlier.unwrap_or("(none)")
                    )
                })
            })
    }

    /// Queues a rollback of `env` after a failure there: restore the deploy's backup and
    /// redeploy what ran before. With neither (a first release whose target took no
    /// backup), there is nothing to go back to, and the failure stands as it is.
    fn roll_back(&mut self, env: &EnvName, reason: String) {
        let Some(deploy) = self.run.stage(StageKind::Deploy, Some(env)) else {
            return;
        };
        let backup = deploy.backup_reference().map(str::to_owned);
        let to = deploy.previous.clone();
        if backup.is_none() && to.is_none() {
            self.log(format!(
                "nothing to roll {env} back to: no backup was taken and nothing ran there before"
            ));
            return;
        }
        let words = match (&backup, &to) {
            (Some(b), Some(r)) => format!("restoring backup {b} and redeploying {}", r.sha.short()),
            (Some(b), None) => format!("restoring backup {b}"),
            (None, Some(r)) => format!("redeploying {}", r.sha.short()),
            (None, None) => String::new(),
        };
        let mut stage = Stage::new(StageKind::Rollback, Some(env.clone()));
        stage.status = StageStatus::Queued;
        stage.rollback = Some(RollbackPlan {
            backup,
            to,
            reason,
            manual: false,
        });
        self.run.stages.push(stage);
        self.log(format!("rolling {env} back: {words}"));
        self.commands.push(Command::Rollback {
            run: self.run.id.clone(),
            env: env.clone(),
        });
    }

    fn index(&self, kind: StageKind, env: &EnvName) -> Result<usize, Ignored> {
        self.run
            .stage_index(kind, Some(env))
            .ok_or_else(|| Ignored::NoSuchStage(format!("{}:{env}", kind.label())))
    }

    fn running(&self, kind: StageKind, env: &EnvName) -> Result<usize, Ignored> {
        let i = self.index(kind, env)?;
        if self.run.stages[i].status != StageStatus::Running {
            return Err(self.not_applicable(i));
        }
        Ok(i)
    }

    fn waiting_approval(&self, env: &EnvName) -> Result<usize, Ignored> {
        let i = self.index(StageKind::Approval, env)?;
        if self.run.stages[i].status != StageStatus::Waiting {
            return Err(self.not_applicable(i));
        }
        Ok(i)
    }

    fn approval_deadline(&self, i: usize) -> Timestamp {
        self.run.stages[i]
            .approval
            .as_ref()
            .map(|a| a.expires_at)
            .unwrap_or(Timestamp::MAX)
    }

    /// Why an event about stage `i` does not apply in the stage's current status.
    fn not_applicable(&self, i: usize) -> Ignored {
        let stage = &self.run.stages[i];
        let status = self.run.status();
        if stage.status == StageStatus::Pending && status.is_finished() || stage.status == StageStatus::Skipped {
            return Ignored::RunEnded(status);
        }
        if stage.status == StageStatus::Pending {
            return Ignored::NotReached { stage: stage.label() };
        }
        if let (StageStatus::Superseded, Some(by)) = (stage.status, &stage.superseded_by) {
            return Ignored::Superseded {
                stage: stage.label(),
                by: by.clone(),
            };
        }
        Ignored::AlreadyDone {
            stage: stage.label(),
            status: stage.status,
        }
    }

    fn log(&mut self, what: String) {
        self.run.history.push(HistoryEntry {
            at: self.input.at,
            actor: self.input.actor.clone(),
            what,
        });
    }

    fn notify(&mut self, kind: NoticeKind) {
        let notice = Notice {
            run: self.run.id.clone(),
            seq: self.run.history.len() - 1,
            kind,
        };
        self.commands.push(Command::Notify(notice));
    }

    /// Stage `i` at `env` will never run: `by` took its place.
    fn supersede(&mut self, i: usize, env: &EnvName, by: &RunId, what: String) {
        self.run.stages[i].superseded_by = Some(by.clone());
        self.finish(i, StageStatus::Superseded, what);
        self.notify(NoticeKind::Superseded {
            env: env.clone(),
            by: by.clone(),
        });
    }

    fn finish(&mut self, i: usize, status: StageStatus, what: String) {
        let at = self.input.at;
        let stage = &mut self.run.stages[i];
        stage.status = status;
        stage.finished_at = Some(at);
        stage.summary = Some(what.clone());
        self.log(what);
        if status != StageStatus::Succeeded {
            for later in &mut self.run.stages[i + 1..] {
                if !later.status.is_terminal() {
                    later.status = StageStatus::Skipped;
                }
            }
        }
    }

    fn fail(&mut self, i: usize, reason: String) {
        let red_main = self.run.stages[i].kind == StageKind::Build;
        self.fail_as(i, reason, red_main);
    }

    fn fail_as(&mut self, i: usize, reason: String, red_main: bool) {
        let stage = self.run.stages[i].label();
        self.finish(i, StageStatus::Failed, format!("{stage} failed: {reason}"));
        self.notify(NoticeKind::Failed {
            stage,
            reason,
            red_main,
        });
    }

    fn succeed(&mut self, i: usize, what: String) {
        self.finish(i, StageStatus::Succeeded, what);
        self.advance(i + 1);
    }

    /// Starts stage `i`, or releases the run when there is none.
    fn advance(&mut self, i: usize) {
        let at = self.input.at;
        let run_id = self.run.id.clone();
        let Some(stage) = self.run.stages.get_mut(i) else {
            let env = self
                .run
                .plan
                .environments
                .last()
                .map(|e| e.name.clone())
                .expect("a plan has at least one environment");
            self.log(format!("released {} to {env}", self.run.sha.short()));
            self.notify(NoticeKind::Released { env });
            return;
        };
        let env = stage.env.clone().expect("only the build has no environment");
        match stage.kind {
            StageKind::Build => unreachable!("the build is always the first stage"),
            StageKind::Deploy => {
                stage.status = StageStatus::Queued;
                self.commands.push(Command::Deploy { run: run_id, env });
            }
            // The checks start with the write that reached them — the deploy's result, which
            // only the one delivery holding the deploy's claim can make — so they need no
            // claim of their own (one write of the run fewer per environment). Checks only
            // read, so a message delivered twice checks twice and the second result is
            // ignored. Runs written by an older slipway may still hold a queued smoke stage,
            // which `SmokeStarted` claims as before.
            StageKind::Smoke => {
                self.start(i);
                self.commands.push(Command::Smoke { run: run_id, env });
            }
            StageKind::Bake => {
                stage.status = StageStatus::Queued;
                self.commands.push(Command::Bake { run: run_id, env });
            }
            StageKind::Rollback => unreachable!("rollbacks are queued by roll_back, never reached in order"),
            StageKind::Approval => {
                // Whole seconds: the deadline is shown to people and signed into links.
                let expires_at = at
                    .checked_add(self.run.plan.approval_ttl)
                    .and_then(|t| Timestamp::from_second(t.as_second()))
                    .unwrap_or(Timestamp::MAX);
                stage.status = StageStatus::Waiting;
                stage.started_at = Some(at);
                let required = self
                    .run
                    .plan
                    .environments
                    .iter()
                    .find(|e| e.name == env)
                    .map_or(1, |e| e.approvals_required.max(1));
                stage.approval = Some(ApprovalInfo {
                    requested_at: at,
                    expires_at,
                    decided_by: None,
                    comment: None,
                    approvals: Vec::new(),
                    required,
                });
                let of = if required > 1 {
                    format!(", {required} approvals needed")
                } else {
                    String::new()
                };
                self.log(format!(
                    "waiting for approval to promote to {env} (until {expires_at}{of})"
                ));
                self.notify(NoticeKind::ApprovalRequested {
                    env: env.clone(),
                    expires_at,
                });
                // Older runs still waiting for this gate give way to this newer one.
                self.commands.push(Command::Supersede { run: run_id, env });
            }
        }
    }
}

/// What a person must still do after a failed rollback: the phases that did not succeed.
fn left_by_hand(env: &EnvName, plan: Option<&RollbackPlan>, phases: &[PhaseOutcome]) -> Vec<String> {
    let done = |phase: Phase| {
        phases
            .iter()
            .any(|p| p.phase == phase && p.status != PhaseStatus::Failed)
    };
    let mut todo = Vec::new();
    let Some(plan) = plan else {
        return vec![format!("check {env} by hand: the rollback had no plan")];
    };
    if let Some(backup) = &plan.backup
        && !done(Phase::Restore)
    {
        todo.push(format!("restore backup {backup} on {env}"));
    }
    if let Some(to) = &plan.to
        && !done(Phase::Release)
    {
        todo.push(format!(
            "redeploy {} ({}) to {env}",
            to.sha.short(),
            to.artifact.as_deref().unwrap_or("no artifact recorded")
        ));
    }
    if todo.is_empty() {
        todo.push(format!("check {env} by hand: every phase ran, but it is not healthy"));
    }
    todo
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;

//! A pipeline run: one commit of one pipeline, its stages, and its append-only history.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::ids::{ApproverId, BranchName, CommitSha, EnvName, PipelineName, RepoName, RunId};

/// How production follows staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Continuous delivery: a person approves before the gated environment (production).
    Delivery,
    /// Continuous deployment: every environment follows the previous one automatically.
    Deployment,
}

/// What a run will do, fixed when it opens, so a configuration change never rewrites a run
/// already under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub mode: Mode,
    /// How long an approval request stays valid.
    pub approval_ttl: SignedDuration,
    /// Environments in deployment order.
    pub environments: Vec<EnvPlan>,
    /// Checks a git host reports that must all be green for the build to pass. Empty: one
    /// overall result (the generic CI callback) decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_checks: Vec<String>,
    /// The least coverage (percent) a green build must report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_coverage: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvPlan {
    pub name: EnvName,
    /// A person must approve before this environment is deployed.
    pub approval: bool,
    /// Smoke checks run after this environment is deployed.
    pub smoke: bool,
}

/// The commit a run is for, as the git host described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub message: String,
    /// The author's login on the git host, when the host knows it.
    pub author_login: Option<String>,
    pub author_name: String,
    pub author_email: Option<String>,
    pub url: Option<String>,
    /// The identity that pushed (may differ from the author).
    pub pushed_by: String,
}

/// What CI said about the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Success,
    Failure,
    Error,
}

/// The build that produced the run's artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BuildInfo {
    pub url: Option<String>,
    /// The artifact every environment deploys (an image digest, a package URL, …).
    pub artifact: Option<String>,
    pub coverage: Option<f64>,
    /// What each required check reported so far.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, BuildStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// CI builds and tests the commit; slipway waits for its result.
    Build,
    /// A person approves or rejects promotion to the stage's environment.
    Approval,
    /// The artifact is deployed to the stage's environment.
    Deploy,
    /// Smoke checks run against the stage's environment.
    Smoke,
}

impl StageKind {
    pub fn label(self) -> &'static str {
        match self {
            StageKind::Build => "build",
            StageKind::Approval => "approval",
            StageKind::Deploy => "deploy",
            StageKind::Smoke => "smoke",
        }
    }
}

/// One action of a deploy target. A forward deploy runs `backup` → `migrate` → `release`
/// (its `verify` is the smoke stage); a rollback runs `restore` and then `release` of the
/// previous artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Backup,
    Migrate,
    Release,
    Restore,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Backup => "backup",
            Phase::Migrate => "migrate",
            Phase::Release => "release",
            Phase::Restore => "restore",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a stage is in its life. Terminal statuses never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    /// Not reached yet.
    Pending,
    /// Its work was sent to a queue; no worker has claimed it yet.
    Queued,
    /// A worker claimed it and is doing the work now.
    Running,
    /// Waiting for someone outside slipway: CI for a build, a person for an approval.
    Waiting,
    /// Done and good.
    Succeeded,
    /// Done and bad; the run stops here.
    Failed,
    /// An approver said no; the run stops here.
    Rejected,
    /// Nobody decided before the approval's deadline; the run stops here.
    Expired,
    /// Never run because an earlier stage stopped the run.
    Skipped,
}

impl StageStatus {
    /// The status as one word, as it appears in JSON: `succeeded`, `waiting`, …
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::Queued => "queued",
            StageStatus::Running => "running",
            StageStatus::Waiting => "waiting",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Failed => "failed",
            StageStatus::Rejected => "rejected",
            StageStatus::Expired => "expired",
            StageStatus::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StageStatus::Succeeded
                | StageStatus::Failed
                | StageStatus::Rejected
                | StageStatus::Expired
                | StageStatus::Skipped
        )
    }
}

/// One smoke check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub attempts: u32,
    /// What was seen, or why it failed, in words a person can act on.
    pub detail: String,
}

/// An approval's request and, once made, its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    pub requested_at: Timestamp,
    pub expires_at: Timestamp,
    pub decided_by: Option<ApproverId>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub kind: StageKind,
    /// The environment the stage is about; `None` only for the build.
    pub env: Option<EnvName>,
    pub status: StageStatus,
    /// How many times a worker claimed it.
    pub attempts: u32,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Why it failed, or who decided: one line for people.
    pub summary: Option<String>,
    /// A deploy's captured output, secrets masked, trimmed to its tail.
    pub output: Option<String>,
    pub checks: Vec<CheckResult>,
    pub approval: Option<ApprovalInfo>,
}

impl Stage {
    pub(crate) fn new(kind: StageKind, env: Option<EnvName>) -> Self {
        Self {
            kind,
            env,
            status: StageStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            summary: None,
            output: None,
            checks: Vec::new(),
            approval: None,
        }
    }

    /// `build`, `deploy:staging`, `approval:production`, …
    pub fn label(&self) -> String {
        match &self.env {
            Some(env) => format!("{}:{env}", self.kind.label()),
            None => self.kind.label().to_owned(),
        }
    }
}

/// Who caused a history entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// The git host, on behalf of the person who pushed.
    GitHost(String),
    /// The team's CI.
    Ci,
    /// An approver from the configuration.
    Approver(ApproverId),
    /// slipway's own workers (deploy, smoke, timers).
    Slipway,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::GitHost(who) => write!(f, "{who} (git host)"),
            Actor::Ci => f.write_str("CI"),
            Actor::Approver(id) => write!(f, "{id}"),
            Actor::Slipway => f.write_str("slipway"),
        }
    }
}

/// One line of a run's append-only history: what happened, when, and who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub actor: Actor,
    pub what: String,
}

/// Where a whole run stands; derived from its stages, never stored on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for CI or for a worker.
    InProgress,
    /// Waiting for an approver.
    AwaitingApproval,
    /// Every stage succeeded: released to the last environment.
    Released,
    Failed,
    Rejected,
    Expired,
}

impl RunStatus {
    /// The status as it appears in JSON: `in_progress`, `released`, …
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::InProgress => "in_progress",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Released => "released",
            RunStatus::Failed => "failed",
            RunStatus::Rejected => "rejected",
            RunStatus::Expired => "expired",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::InProgress | RunStatus::AwaitingApproval)
    }
}

/// One commit of one pipeline on its way to production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub pipeline: PipelineName,
    pub repo: RepoName,
    pub branch: BranchName,
    pub sha: CommitSha,
    pub commit: CommitInfo,
    pub plan: Plan,
    pub build: BuildInfo,
    pub stages: Vec<Stage>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub history: Vec<HistoryEntry>,
    /// The commands of the latest transition, stored in the same write as the state they
    /// came from (a transactional outbox). Sending them is not atomic with that write, so a
    /// caller that suspects an earlier send failed (a redelivered webhook or message) sends
    /// them again; every command is idempotent, so that is always safe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<super::transition::Command>,
}

impl Run {
    /// The run's overall status, derived from its stages.
    pub fn status(&self) -> RunStatus {
        for stage in &self.stages {
            match stage.status {
                StageStatus::Failed => return RunStatus::Failed,
                StageStatus::Rejected => return RunStatus::Rejected,
                StageStatus::Expired => return RunStatus::Expired,
                _ => {}
            }
        }
        if self.stages.iter().all(|s| s.status == StageStatus::Succeeded) {
            return RunStatus::Released;
        }
        if self
            .stages
            .iter()
            .any(|s| s.kind == StageKind::Approval && s.status == StageStatus::Waiting)
        {
            return RunStatus::AwaitingApproval;
        }
        RunStatus::InProgress
    }

    pub fn stage(&self, kind: StageKind, env: Option<&EnvName>) -> Option<&Stage> {
        self.stages.iter().find(|s| s.kind == kind && s.env.as_ref() == env)
    }

    pub(crate) fn stage_index(&self, kind: StageKind, env: Option<&EnvName>) -> Option<usize> {
        self.stages.iter().position(|s| s.kind == kind && s.env.as_ref() == env)
    }

    /// The first stage that is not finished, if any.
    pub fn current_stage(&self) -> Option<&Stage> {
        self.stages.iter().find(|s| !s.status.is_terminal())
    }

    /// The environments this run has been deployed to successfully, in order.
    pub fn deployed_to(&self) -> Vec<&EnvName> {
        self.stages
            .iter()
            .filter(|s| s.kind == StageKind::Deploy && s.status == StageStatus::Succeeded)
            .filter_map(|s| s.env.as_ref())
            .collect()
    }
}

impl std::fmt::Display for StageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_match_their_json() {
        use StageStatus as S;
        for s in [
            S::Pending,
            S::Queued,
            S::Running,
            S::Waiting,
            S::Succeeded,
            S::Failed,
            S::Rejected,
            S::Expired,
            S::Skipped,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        use RunStatus as R;
        for s in [
            R::InProgress,
            R::AwaitingApproval,
            R::Released,
            R::Failed,
            R::Rejected,
            R::Expired,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

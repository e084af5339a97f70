//! A pipeline run: one commit of one pipeline, its stages, and its append-only history.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::ids::{ApproverId, BranchName, CommitSha, EnvName, PipelineName, RepoName, RunId};
use super::web_url::WebUrl;

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
    /// How long the build may wait for CI, from the run's opening: past it the build fails
    /// and later results are ignored. Runs stored before it existed wait
    /// [`DEFAULT_BUILD_TIMEOUT`].
    #[serde(default = "default_build_timeout")]
    pub build_timeout: SignedDuration,
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

/// How long a build waits for CI unless the pipeline says otherwise: a day.
pub const DEFAULT_BUILD_TIMEOUT: SignedDuration = SignedDuration::from_hours(24);

fn default_build_timeout() -> SignedDuration {
    DEFAULT_BUILD_TIMEOUT
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvPlan {
    pub name: EnvName,
    /// A person must approve before this environment is deployed.
    pub approval: bool,
    /// Smoke checks run after this environment is deployed.
    pub smoke: bool,
    /// How many different approvers must approve.
    #[serde(default = "one")]
    pub approvals_required: u32,
    /// A post-deploy bake watches the environment's health after the smoke checks.
    #[serde(default)]
    pub bake: bool,
}

fn one() -> u32 {
    1
}

/// The commit a run is for, as the git host described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub message: String,
    /// The author's login on the git host, when the host knows it.
    pub author_login: Option<String>,
    pub author_name: String,
    pub author_email: Option<String>,
    /// The commit's page on the git host; a stored link that is not http(s) reads as `None`.
    #[serde(default, deserialize_with = "WebUrl::lenient")]
    pub url: Option<WebUrl>,
    /// The identity that pushed (may differ from the author).
    pub pushed_by: String,
}

/// How many of its push's commits a run keeps: the newest. Past that, [`Carried::truncated`]
/// says so and the host's compare page lists the rest.
pub const COMMITS_KEPT: usize = 250;

/// How many characters of a carried commit's message a run keeps.
pub const MESSAGE_KEPT: usize = 1_000;

/// One commit a push carried, as the git host listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedCommit {
    pub sha: CommitSha,
    /// The message, its first [`MESSAGE_KEPT`] characters.
    pub message: String,
    /// The author's login on the host when it knows it, else the git author's name.
    pub author: String,
    /// When it was committed, by the author's clock (git's, not the push's); `None` when the
    /// host did not say or said it in a form that does not parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// The commits a run's push carried: what the run brings beside its head commit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Carried {
    /// The newest [`COMMITS_KEPT`] of the commits, oldest first; the run's own commit last
    /// when the host listed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<PushedCommit>,
    /// The push carried more commits than are listed: the host capped its list (GitLab lists
    /// 20, Bitbucket marks it), or slipway kept only the newest [`COMMITS_KEPT`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The host's page comparing the branch before and after the push, when it gave one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "WebUrl::lenient"
    )]
    pub compare_url: Option<WebUrl>,
}

impl Carried {
    /// `commits` (oldest first) as a run keeps them: the newest [`COMMITS_KEPT`], each message
    /// cut to [`MESSAGE_KEPT`] characters; `truncated` also when some had to be left out.
    pub fn new(mut commits: Vec<PushedCommit>, truncated: bool, compare_url: Option<WebUrl>) -> Self {
        let dropped = commits.len().saturating_sub(COMMITS_KEPT);
        commits.drain(..dropped);
        for commit in &mut commits {
            if let Some((cut, _)) = commit.message.char_indices().nth(MESSAGE_KEPT) {
                commit.message.truncate(cut);
            }
        }
        Self {
            commits,
            truncated: truncated || dropped > 0,
            compare_url,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.commits.is_empty() && !self.truncated && self.compare_url.is_none()
    }
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
    /// The build's page; a stored link that is not http(s) reads as `None`.
    #[serde(default, deserialize_with = "WebUrl::lenient")]
    pub url: Option<WebUrl>,
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
    /// Smoke checks run against the stage's environment (the deploy's `verify` phase).
    Smoke,
    /// A health source is watched for a while after the deploy.
    Bake,
    /// The environment is put back: the backup restored and the previous release redeployed
    /// (automatic), or a previous release redeployed on request (manual).
    Rollback,
}

impl StageKind {
    pub fn label(self) -> &'static str {
        match self {
            StageKind::Build => "build",
            StageKind::Approval => "approval",
            StageKind::Deploy => "deploy",
            StageKind::Smoke => "smoke",
            StageKind::Bake => "bake",
            StageKind::Rollback => "rollback",
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
    /// A newer commit took its place: its approval or deploy will never happen.
    Superseded,
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
            StageStatus::Superseded => "superseded",
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
                | StageStatus::Superseded
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
    /// Who made the deciding click: the last approval needed, or a rejection.
    pub decided_by: Option<ApproverId>,
    pub comment: Option<String>,
    /// Approvals given so far, in order (N of M: the stage passes at `required`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    #[serde(default = "one")]
    pub required: u32,
}

/// One approver's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: ApproverId,
    pub at: Timestamp,
    pub comment: Option<String>,
}

/// What an environment ran, or runs: one run's artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub run: RunId,
    pub sha: CommitSha,
    pub artifact: Option<String>,
    /// When the run opened: orders releases by commit, newest last.
    pub opened_at: Timestamp,
    /// When it was released.
    pub at: Timestamp,
}

/// How a deploy phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    Succeeded,
    Failed,
    Skipped,
}

/// One phase of a deploy or rollback, as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseOutcome {
    pub phase: Phase,
    pub status: PhaseStatus,
    /// One line: what it did, why it failed, or why it was skipped.
    pub detail: String,
    /// A backup's reference; a release's version or prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub at: Timestamp,
}

/// What a rollback stage puts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackPlan {
    /// The backup to restore (automatic rollbacks).
    pub backup: Option<String>,
    /// The release to redeploy.
    pub to: Option<Release>,
    /// Why: which phase failed, or who asked.
    pub reason: String,
    /// Requested by a person: redeploy `to` through backup, migrate, release and verify.
    #[serde(default)]
    pub manual: bool,
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
    /// A deploy's or rollback's phases, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseOutcome>,
    /// The artifact a deploy released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// What the environment ran before this deploy: what a rollback goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Release>,
    /// A rollback stage's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPlan>,
    /// A newer run that took this stage's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<RunId>,
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
            phases: Vec::new(),
            artifact: None,
            previous: None,
            rollback: None,
            superseded_by: None,
        }
    }

    /// The reference the backup phase returned, if it ran.
    pub fn backup_reference(&self) -> Option<&str> {
        self.phases
            .iter()
            .find(|p| p.phase == Phase::Backup && p.status == PhaseStatus::Succeeded)
            .and_then(|p| p.reference.as_deref())
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
    /// A deploy, its checks or its bake failed, and the environment was put back.
    RolledBack,
    /// A newer commit took this run's place.
    Superseded,
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
            RunStatus::RolledBack => "rolled_back",
            RunStatus::Superseded => "superseded",
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
    /// The commits its push said come before this one: `before` and the other commits it
    /// listed. Kept so the pipeline's [`super::Lineage`] can always be learned again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<CommitSha>,
    /// Every commit its push carried (up to [`COMMITS_KEPT`]), not only the head.
    #[serde(default, skip_serializing_if = "Carried::is_empty")]
    pub carried: Carried,
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
    /// The run's place in its pipeline's index of runs ([`crate::views::run_index`]), given
    /// when it opened; `None` for runs made before the index existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Stages of earlier attempts that a retry set aside: the rollbacks that followed the
    /// failure it retried. Kept for the record; the run's status no longer depends on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Stage>,
}

impl Run {
    /// The run's overall status, derived from its stages.
    pub fn status(&self) -> RunStatus {
        // The latest rollback decides; one a newer release overtook before it ran (superseded)
        // changed nothing and does not count.
        let mut rollbacks = self
            .stages
            .iter()
            .filter(|s| s.kind == StageKind::Rollback && s.status != StageStatus::Superseded);
        if let Some(rollback) = rollbacks.next_back() {
            return match rollback.status {
                StageStatus::Succeeded => RunStatus::RolledBack,
                StageStatus::Queued | StageStatus::Running => RunStatus::InProgress,
                _ => RunStatus::Failed,
            };
        }
        let stages = || self.stages.iter().filter(|s| s.kind != StageKind::Rollback);
        for stage in stages() {
            match stage.status {
                StageStatus::Failed => return RunStatus::Failed,
                StageStatus::Rejected => return RunStatus::Rejected,
                StageStatus::Expired => return RunStatus::Expired,
                StageStatus::Superseded => return RunStatus::Superseded,
                _ => {}
            }
        }
        if stages().all(|s| s.status == StageStatus::Succeeded) {
            return RunStatus::Released;
        }
        if stages().any(|s| s.kind == StageKind::Approval && s.status == StageStatus::Waiting) {
            return RunStatus::AwaitingApproval;
        }
        RunStatus::InProgress
    }

    /// The stage of `kind` for `env`; for rollbacks, of which a run may have several, the
    /// latest.
    pub fn stage(&self, kind: StageKind, env: Option<&EnvName>) -> Option<&Stage> {
        self.stages
            .iter()
            .rev()
            .find(|s| s.kind == kind && s.env.as_ref() == env)
    }

    pub(crate) fn stage_index(&self, kind: StageKind, env: Option<&EnvName>) -> Option<usize> {
        self.stages
            .iter()
            .rposition(|s| s.kind == kind && s.env.as_ref() == env)
    }

    /// Until when the build waits for CI: the run's opening plus its plan's build timeout.
    pub fn build_deadline(&self) -> Timestamp {
        self.created_at
            .checked_add(self.plan.build_timeout)
            .unwrap_or(Timestamp::MAX)
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

    /// Every rollback stage of `env` this run has had, oldest first: those a retry set aside
    /// ([`Run::retired`]) too.
    pub fn rollbacks_in<'a>(&'a self, env: &'a EnvName) -> impl Iterator<Item = &'a Stage> + 'a {
        self.stages
            .iter()
            .chain(&self.retired)
            .filter(move |s| s.kind == StageKind::Rollback && s.env.as_ref() == Some(env))
    }

    /// Is work for `env` queued or under way (deploy, smoke, bake, rollback)? While it is,
    /// the run keeps the environment's lease.
    pub fn busy_in(&self, env: &EnvName) -> bool {
        self.stages.iter().any(|s| {
            s.env.as_ref() == Some(env)
                && matches!(
                    s.kind,
                    StageKind::Deploy | StageKind::Smoke | StageKind::Bake | StageKind::Rollback
                )
                && matches!(s.status, StageStatus::Queued | StageStatus::Running)
        })
    }

    /// This run as a release of `env`, once its deploy there succeeded.
    pub fn release_in(&self, env: &EnvName) -> Option<Release> {
        let deploy = self
            .stage(StageKind::Deploy, Some(env))
            .filter(|s| s.status == StageStatus::Succeeded)?;
        Some(Release {
            run: self.id.clone(),
            sha: self.sha.clone(),
            artifact: deploy.artifact.clone().or_else(|| self.build.artifact.clone()),
            opened_at: self.created_at,
            at: deploy.finished_at.unwrap_or(self.updated_at),
        })
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

    fn pushed(n: usize, message: &str) -> PushedCommit {
        PushedCommit {
            sha: CommitSha::parse(&format!("{n:040x}")).unwrap(),
            message: message.to_owned(),
            author: "dev".to_owned(),
            at: None,
        }
    }

    #[test]
    fn a_run_keeps_the_newest_commits_its_push_carried_and_says_when_it_left_some_out() {
        let all: Vec<_> = (0..COMMITS_KEPT + 3).map(|n| pushed(n, "m")).collect();
        let carried = Carried::new(all, false, None);
        assert_eq!(carried.commits.len(), COMMITS_KEPT);
        assert_eq!(
            carried.commits[0].sha,
            pushed(3, "").sha,
            "the oldest three are left out"
        );
        assert!(carried.truncated);
        let few = Carried::new(vec![pushed(1, "m"), pushed(2, "m")], false, None);
        assert_eq!((few.commits.len(), few.truncated), (2, false));
        assert!(Carried::new(Vec::new(), true, None).truncated, "the host's word counts");
    }

    #[test]
    fn a_carried_message_is_cut_by_characters_not_bytes() {
        let long = "é".repeat(MESSAGE_KEPT + 5);
        let carried = Carried::new(vec![pushed(1, &long)], false, None);
        assert_eq!(carried.commits[0].message.chars().count(), MESSAGE_KEPT);
        assert!(carried.commits[0].message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_run_stored_before_runs_kept_their_commits_reads_with_none() {
        let carried: Carried = serde_json::from_str("{}").unwrap();
        assert!(carried.is_empty());
        let stored = serde_json::to_value(Carried::new(vec![pushed(1, "m")], false, None)).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"commits": [{"sha": format!("{:040x}", 1), "message": "m", "author": "dev"}]})
        );
    }

    #[test]
    fn a_plan_stored_before_build_timeouts_existed_waits_a_day() {
        let stored = serde_json::json!({
            "mode": "delivery",
            "approval_ttl": "PT24H",
            "environments": [{"name": "production", "approval": true, "smoke": false}],
        });
        let plan: Plan = serde_json::from_value(stored).unwrap();
        assert_eq!(plan.build_timeout, SignedDuration::from_hours(24));
        let again: Plan = serde_json::from_value(serde_json::to_value(&plan).unwrap()).unwrap();
        assert_eq!(again, plan);
    }

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
            S::Superseded,
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
            R::RolledBack,
            R::Superseded,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

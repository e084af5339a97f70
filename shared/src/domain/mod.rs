//! The pipeline's domain: identifiers, runs and the pure state machine. No I/O lives here.

pub mod echo;
pub mod environment;
pub mod ids;
pub mod lineage;
pub mod run;
pub mod transition;
pub mod web_url;

pub use echo::{Clipped, clip, clip_quoted};
pub use environment::{Claim, Environment, Lease, Mark, Outcome as EnvOutcome, Waiter};
pub use ids::{ApproverId, BranchName, CommitSha, EnvName, IdError, ParamName, PipelineName, RepoName, RunId};
pub use lineage::{Lineage, Place};
pub use run::{
    Actor, Approval, ApprovalInfo, BuildInfo, BuildStatus, COMMITS_KEPT, Carried, CheckResult, CommitInfo,
    DEFAULT_BUILD_TIMEOUT, EnvPlan, HistoryEntry, Mode, Phase, PhaseOutcome, PhaseStatus, Plan, PushedCommit, Release,
    RollbackPlan, Run, RunStatus, Stage, StageKind, StageStatus,
};
pub use transition::{
    Command, Event, GENERIC_CHECK, Ignored, Input, NewRun, Notice, NoticeKind, Outcome, apply, open, resendable,
};
pub use web_url::{WebUrl, WebUrlError};

/// Drops the oldest of `items` (kept oldest first) so that at most `kept` remain.
pub(crate) fn keep_newest<T>(items: &mut Vec<T>, kept: usize) {
    let extra = items.len().saturating_sub(kept);
    items.drain(..extra);
}

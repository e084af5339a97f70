//! Git hosts: verify a webhook, then turn its payload into a domain [`HostEvent`] right away.
//! Raw payload structs stay private to each provider module.

pub mod github;

use crate::domain::{BranchName, CommitInfo, CommitSha, RepoName};

/// What a git host told us, in slipway's terms.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostEvent {
    /// The host checks the hook works (GitHub `ping`).
    Ping,
    /// Commits were pushed to, or a ref was created or deleted.
    Push(Box<Push>),
    /// An event slipway does not act on; answered 2xx and logged.
    Ignored { event: String },
}

/// A push, as every host describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Push {
    pub repo: RepoName,
    pub git_ref: GitRef,
    /// The ref's new head. For a deleted ref, there is none.
    pub after: Option<CommitSha>,
    /// The ref was created by this push.
    pub created: bool,
    /// The ref was deleted by this push.
    pub deleted: bool,
    /// History was rewritten (force push).
    pub forced: bool,
    /// How many commits the push carried.
    pub commit_count: usize,
    /// The new head commit, when the host includes it.
    pub head_commit: Option<CommitInfo>,
}

/// The ref a push touched.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum GitRef {
    Branch(BranchName),
    Tag(String),
    /// Anything else (`refs/notes/…`, `refs/pull/…`).
    Other(String),
}

//! Git hosts: verify a webhook, then turn its payload into a domain [`HostEvent`] right away.
//! Raw payload structs stay private to each provider module.

pub mod bitbucket;
pub mod github;
pub mod gitlab;
mod payload;
pub mod slack;

pub use payload::PayloadError;

use crate::domain::{BranchName, BuildStatus, Carried, CommitInfo, CommitSha, PushedCommit, RepoName, WebUrl};

/// What a git host told us, in slipway's terms.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostEvent {
    /// The host checks the hook works (GitHub `ping`).
    Ping,
    /// Commits were pushed to, or a ref was created or deleted.
    Push(Box<Push>),
    /// CI reported on a commit through the git host: a GitHub workflow run or check suite,
    /// a GitLab pipeline, a Bitbucket commit status.
    Build(Box<BuildReport>),
    /// An event slipway does not act on; answered 2xx and logged.
    Ignored { event: String },
}

/// A CI result as a git host reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BuildReport {
    pub repo: RepoName,
    pub sha: CommitSha,
    /// The branch that was built, when the host says.
    pub branch: Option<BranchName>,
    /// The workflow, check suite, pipeline or status key; a pipeline's `required_checks`
    /// name these.
    pub check: String,
    /// `None` while the build is still running.
    pub status: Option<BuildStatus>,
    /// The build's page; dropped when the host sent a link that is not http(s).
    pub url: Option<WebUrl>,
    /// Line coverage in percent, when the host reports it (GitLab pipelines do).
    pub coverage: Option<f64>,
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
    /// Where the ref pointed before the push (`None` when it was created, or the host does
    /// not say): git's own word that `after` comes later on the branch than `before`.
    pub before: Option<CommitSha>,
    /// The commits the push listed, oldest first (hosts cap the list: GitLab at 20), which
    /// `after` includes. With `before`, what slipway learns of git's order
    /// ([`crate::domain::Lineage`]); and what the run brings ([`Push::carried`]).
    pub commits: Vec<PushedCommit>,
    /// The host said it listed fewer commits than the push carried.
    pub truncated: bool,
    /// The host's page comparing `before` and `after`.
    pub compare_url: Option<WebUrl>,
    /// The new head commit, when the host includes it.
    pub head_commit: Option<CommitInfo>,
}

impl Push {
    /// The commits this push says come before its new head: `before` and the listed commits
    /// other than the head itself. Empty when the ref was deleted.
    pub fn parents(&self) -> Vec<CommitSha> {
        let Some(after) = &self.after else { return Vec::new() };
        self.before
            .iter()
            .chain(self.commits.iter().map(|c| &c.sha))
            .filter(|sha| *sha != after && !sha.is_zero())
            .cloned()
            .collect()
    }

    /// The commits the push carried, as its run keeps them.
    pub fn carried(&self) -> Carried {
        Carried::new(
            self.commits.clone(),
            self.truncated || self.commit_count > self.commits.len(),
            self.compare_url.clone(),
        )
    }
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

/// Test support shared by the providers' fixture tests.
#[cfg(test)]
pub(crate) mod fixtures {
    /// Fails unless the `.json` files in `events/<host>/` are exactly `listed`, so a new
    /// fixture cannot go without its snapshot.
    pub(crate) fn assert_all_listed(host: &str, listed: impl IntoIterator<Item = &'static str>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../events")
            .join(host);
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                entry
                    .expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".json"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = listed.into_iter().map(str::to_owned).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "add new files in events/{host}/ to FIXTURES");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> CommitSha {
        CommitSha::parse(&c.to_string().repeat(40)).unwrap()
    }

    fn push(after: Option<char>, before: Option<char>, commits: &[char]) -> Push {
        Push {
            repo: RepoName::parse("acme/shop").unwrap(),
            git_ref: GitRef::Branch(BranchName::parse("main").unwrap()),
            after: after.map(sha),
            created: false,
            deleted: after.is_none(),
            forced: false,
            commit_count: commits.len(),
            before: before.map(sha),
            commits: commits
                .iter()
                .map(|c| PushedCommit {
                    sha: sha(*c),
                    message: String::new(),
                    author: String::new(),
                    at: None,
                })
                .collect(),
            truncated: false,
            compare_url: None,
            head_commit: None,
        }
    }

    #[test]
    fn a_push_names_what_came_before_its_head() {
        let table = [
            // (after, before, listed commits, parents)
            (Some('c'), Some('a'), vec!['b', 'c'], vec!['a', 'b']),
            (Some('c'), None, vec!['c'], vec![]),
            (Some('c'), Some('0'), vec!['b', 'c'], vec!['b']),
            (None, Some('a'), vec![], vec![]),
        ];
        for (after, before, commits, parents) in table {
            let expected: Vec<CommitSha> = parents.into_iter().map(sha).collect();
            assert_eq!(
                push(after, before, &commits).parents(),
                expected,
                "{after:?} {before:?} {commits:?}"
            );
        }
    }
}

//! GitHub webhooks: turn a delivery whose signature was already verified (see
//! [`crate::signature`]) into a [`HostEvent`].
//!
//! `push`, `workflow_run` and `check_suite` payloads are read; `ping` and every other event are
//! recognised by the `X-GitHub-Event` header alone. The raw payload structs below hold only the fields slipway
//! uses and never leave this module.

use serde::Deserialize;

use super::payload::{Fields, git_ref_of};
use super::{BuildReport, HostEvent, Push};
use crate::domain::{BranchName, BuildStatus, CommitInfo, CommitSha, PushedCommit, RepoName};

pub use super::PayloadError;

/// Turns a GitHub webhook delivery into a [`HostEvent`].
///
/// `event` is the `X-GitHub-Event` header and `body` the raw request body, whose signature the
/// caller has already verified. `ping` becomes [`HostEvent::Ping`], `push` a [`HostEvent::Push`],
/// `workflow_run` and `check_suite` a [`HostEvent::Build`], and any other event
/// [`HostEvent::Ignored`] (its body is not read).
///
/// A workflow run or check suite reports a result only with action `completed`; any other
/// action (`requested`, `in_progress`, `rerequested`) is a [`BuildReport`] with status `None`:
/// the check is (again) under way. See [`conclusion_status`] for how conclusions map.
pub fn parse(event: &str, body: &[u8]) -> Result<HostEvent, PayloadError> {
    match event {
        "ping" => Ok(HostEvent::Ping),
        "push" => parse_push(body).map(|push| HostEvent::Push(Box::new(push))),
        "workflow_run" => parse_workflow_run(body).map(|report| HostEvent::Build(Box::new(report))),
        "check_suite" => parse_check_suite(body).map(|report| HostEvent::Build(Box::new(report))),
        other => Ok(HostEvent::Ignored {
            event: other.to_owned(),
        }),
    }
}

/// `repository` in any repository event; only its name is used.
#[derive(Deserialize)]
struct RawRepository {
    full_name: String,
}

/// `head_commit` in a push.
#[derive(Deserialize)]
struct RawCommit {
    message: String,
    url: Option<String>,
    author: RawCommitAuthor,
}

/// How many commits GitHub lists in a push at most.
const GITHUB_COMMITS_LISTED: usize = 2_048;

/// One entry of `commits` in a push.
#[derive(Deserialize)]
struct RawListedCommit {
    id: String,
    #[serde(default)]
    message: String,
    timestamp: Option<String>,
    author: Option<RawCommitAuthor>,
}

/// A commit's git author, with the GitHub login when GitHub could match the email.
#[derive(Deserialize)]
struct RawCommitAuthor {
    name: String,
    email: Option<String>,
    username: Option<String>,
}

/// `pusher` in a push: a git identity, not necessarily a GitHub login.
#[derive(Deserialize)]
struct RawPusher {
    name: Option<String>,
}

/// `sender`: the GitHub account that triggered the event.
#[derive(Deserialize)]
struct RawSender {
    login: String,
}

fn parse_push(body: &[u8]) -> Result<Push, PayloadError> {
    let fields = Fields::new(body)?;
    let repository: RawRepository = fields.required("repository")?;
    let git_ref: String = fields.required("ref")?;
    let created = fields.optional("created")?.unwrap_or(false);
    let deleted = fields.optional("deleted")?.unwrap_or(false);
    let forced = fields.optional("forced")?.unwrap_or(false);
    let commits: Option<Vec<RawListedCommit>> = fields.optional("commits")?;
    let before: Option<String> = fields.optional("before")?;
    let head_commit: Option<RawCommit> = fields.optional("head_commit")?;

    let repo = RepoName::parse(&repository.full_name).map_err(|source| PayloadError::InvalidId {
        field: "repository.full_name",
        source,
    })?;

    let git_ref = git_ref_of(&git_ref)?;

    let after = if deleted {
        None
    } else {
        let after: String = fields.required("after")?;
        let sha = CommitSha::parse(&after).map_err(|source| PayloadError::InvalidId { field: "after", source })?;
        (!sha.is_zero()).then_some(sha)
    };

    let before = before
        .map(|b| {
            CommitSha::parse(&b).map_err(|source| PayloadError::InvalidId {
                field: "before",
                source,
            })
        })
        .transpose()?
        .filter(|b| !b.is_zero());
    let compare: Option<String> = fields.optional("compare")?;
    let commits = commits.unwrap_or_default();
    let commit_count = commits.len();
    // GitHub lists them oldest first, the new head last.
    let commits = commits
        .into_iter()
        .map(|c| {
            Ok(PushedCommit {
                sha: CommitSha::parse(&c.id).map_err(|source| PayloadError::InvalidId {
                    field: "commits.id",
                    source,
                })?,
                author: c
                    .author
                    .map(|a| a.username.filter(|u| !u.is_empty()).unwrap_or(a.name))
                    .unwrap_or_default(),
                at: super::payload::commit_time("commits.timestamp", c.timestamp.as_deref()),
                message: c.message,
            })
        })
        .collect::<Result<Vec<_>, PayloadError>>()?;

    let head_commit = match head_commit {
        None => None,
        Some(commit) => {
            let pushed_by = pushed_by(&fields)?;
            Some(CommitInfo {
                message: commit.message,
                author_login: commit.author.username,
                author_name: commit.author.name,
                author_email: commit.author.email,
                url: super::payload::link("head_commit.url", commit.url),
                pushed_by,
            })
        }
    };

    Ok(Push {
        repo,
        git_ref,
        after,
        created,
        deleted,
        forced,
        commit_count,
        before,
        commits,
        // GitHub lists at most 2,048 commits and does not say when it stopped there.
        truncated: commit_count >= GITHUB_COMMITS_LISTED,
        compare_url: super::payload::link("compare", compare),
        head_commit,
    })
}

/// Who pushed: the pusher's git name, or else the sender's GitHub login.
fn pushed_by(fields: &Fields) -> Result<String, PayloadError> {
    let pusher: Option<RawPusher> = fields.optional("pusher")?;
    if let Some(name) = pusher.and_then(|p| p.name).filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    let sender: Option<RawSender> = fields.optional("sender")?;
    sender.map(|s| s.login).ok_or(PayloadError::Field {
        field: "pusher.name",
        reason: "missing (and no `sender.login` either)".to_owned(),
    })
}

/// `workflow_run` in a `workflow_run` event.
#[derive(Deserialize)]
struct RawWorkflowRun {
    name: Option<String>,
    path: Option<String>,
    head_sha: String,
    head_branch: Option<String>,
    conclusion: Option<String>,
    html_url: Option<String>,
}

/// `workflow` in a `workflow_run` event: the workflow file's `name:`.
#[derive(Deserialize)]
struct RawWorkflow {
    name: Option<String>,
}

/// `check_suite` in a `check_suite` event.
#[derive(Deserialize)]
struct RawCheckSuite {
    head_sha: String,
    head_branch: Option<String>,
    conclusion: Option<String>,
    app: Option<RawApp>,
}

/// The GitHub App that runs a check suite.
#[derive(Deserialize)]
struct RawApp {
    slug: Option<String>,
    name: Option<String>,
}

/// A CI result's commit and branch, named by their field paths for errors.
fn head_of(
    sha: &str,
    sha_field: &'static str,
    branch: Option<String>,
    branch_field: &'static str,
) -> Result<(CommitSha, Option<BranchName>), PayloadError> {
    let sha = CommitSha::parse(sha).map_err(|source| PayloadError::InvalidId {
        field: sha_field,
        source,
    })?;
    let branch = branch
        .filter(|b| !b.is_empty())
        .map(|b| {
            BranchName::parse(&b).map_err(|source| PayloadError::InvalidId {
                field: branch_field,
                source,
            })
        })
        .transpose()?;
    Ok((sha, branch))
}

/// A `workflow_run` event. The check is named after the workflow: the run's `name`, else the
/// workflow's `name`, else the workflow file's path (a pipeline's `required_checks` uses the
/// same name).
fn parse_workflow_run(body: &[u8]) -> Result<BuildReport, PayloadError> {
    let fields = Fields::new(body)?;
    let action: Option<String> = fields.optional("action")?;
    let repository: RawRepository = fields.required("repository")?;
    let run: RawWorkflowRun = fields.required("workflow_run")?;
    let workflow: Option<RawWorkflow> = fields.optional("workflow")?;

    let repo = RepoName::parse(&repository.full_name).map_err(|source| PayloadError::InvalidId {
        field: "repository.full_name",
        source,
    })?;
    let (sha, branch) = head_of(
        &run.head_sha,
        "workflow_run.head_sha",
        run.head_branch,
        "workflow_run.head_branch",
    )?;
    let check = [run.name, workflow.and_then(|w| w.name), run.path]
        .into_iter()
        .flatten()
        .find(|name| !name.is_empty())
        .ok_or(PayloadError::Field {
            field: "workflow_run.name",
            reason: "missing (and no `workflow.name` or `workflow_run.path` either)".to_owned(),
        })?;
    let status = match action.as_deref() {
        Some("completed") => run.conclusion.as_deref().and_then(conclusion_status),
        _ => None,
    };
    Ok(BuildReport {
        repo,
        sha,
        branch,
        check,
        status,
        url: super::payload::link("workflow_run.html_url", run.html_url),
        coverage: None,
    })
}

/// A `check_suite` event. The check is named after the GitHub App that ran it: its `slug`
/// (stable), else its `name`. GitHub gives a check suite no page of its own (only an API URL),
/// so the report has no `url`.
fn parse_check_suite(body: &[u8]) -> Result<BuildReport, PayloadError> {
    let fields = Fields::new(body)?;
    let action: Option<String> = fields.optional("action")?;
    let repository: RawRepository = fields.required("repository")?;
    let suite: RawCheckSuite = fields.required("check_suite")?;

    let repo = RepoName::parse(&repository.full_name).map_err(|source| PayloadError::InvalidId {
        field: "repository.full_name",
        source,
    })?;
    let (sha, branch) = head_of(
        &suite.head_sha,
        "check_suite.head_sha",
        suite.head_branch,
        "check_suite.head_branch",
    )?;
    let check = suite
        .app
        .and_then(|app| app.slug.filter(|s| !s.is_empty()).or(app.name))
        .filter(|name| !name.is_empty())
        .ok_or(PayloadError::Field {
            field: "check_suite.app",
            reason: "missing its `slug` and `name`".to_owned(),
        })?;
    let status = match action.as_deref() {
        Some("completed") => suite.conclusion.as_deref().and_then(conclusion_status),
        _ => None,
    };
    Ok(BuildReport {
        repo,
        sha,
        branch,
        check,
        status,
        url: None,
        coverage: None,
    })
}

/// A completed workflow run's or check suite's `conclusion`.
///
/// `success`, and also `neutral` and `skipped`, are green: GitHub itself counts a neutral or
/// skipped check as passing a required status check. `failure` and `timed_out` are red (the
/// build failed). `cancelled`, `action_required`, `stale`, `startup_failure` and any conclusion
/// GitHub adds later are [`BuildStatus::Error`]: the build did not produce a verdict.
pub fn conclusion_status(conclusion: &str) -> Option<BuildStatus> {
    Some(match conclusion {
        "success" | "neutral" | "skipped" => BuildStatus::Success,
        "failure" | "timed_out" => BuildStatus::Failure,
        _ => BuildStatus::Error,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::GitRef;

    /// Real payloads from `@octokit/webhooks-examples` (see events/README.md), with the
    /// `X-GitHub-Event` each was delivered with.
    const FIXTURES: &[(&str, &str, &str)] = &[
        ("ping.json", "ping", include_str!("../../../events/github/ping.json")),
        (
            "ping-organization.json",
            "ping",
            include_str!("../../../events/github/ping-organization.json"),
        ),
        ("push.json", "push", include_str!("../../../events/github/push.json")),
        (
            "push-tag-created.json",
            "push",
            include_str!("../../../events/github/push-tag-created.json"),
        ),
        (
            "push-tag-deleted.json",
            "push",
            include_str!("../../../events/github/push-tag-deleted.json"),
        ),
        (
            "workflow-run-completed.json",
            "workflow_run",
            include_str!("../../../events/github/workflow-run-completed.json"),
        ),
        (
            "workflow-run-requested.json",
            "workflow_run",
            include_str!("../../../events/github/workflow-run-requested.json"),
        ),
        (
            "check-suite-completed.json",
            "check_suite",
            include_str!("../../../events/github/check-suite-completed.json"),
        ),
        (
            "check-suite-requested.json",
            "check_suite",
            include_str!("../../../events/github/check-suite-requested.json"),
        ),
    ];

    const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn push_of(payload: &Value) -> Push {
        let body = serde_json::to_vec(payload).unwrap();
        match parse("push", &body).unwrap() {
            HostEvent::Push(push) => *push,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    fn push_error(payload: &Value) -> String {
        let body = serde_json::to_vec(payload).unwrap();
        parse("push", &body).unwrap_err().to_string()
    }

    /// A minimal push payload with the fields slipway reads; tests override what they need.
    fn payload(overrides: Value) -> Value {
        let mut base = json!({
            "ref": "refs/heads/main",
            "before": "1111111111111111111111111111111111111111",
            "after": SHA,
            "created": false,
            "deleted": false,
            "forced": false,
            "repository": { "full_name": "acme/shop" },
            "pusher": { "name": "alice", "email": "alice@example.com" },
            "sender": { "login": "alice-gh" },
            "commits": [{ "id": SHA }],
            "head_commit": {
                "id": SHA,
                "message": "Fix checkout",
                "url": format!("https://github.com/acme/shop/commit/{SHA}"),
                "author": { "name": "Alice", "email": "alice@example.com", "username": "alice-gh" }
            }
        });
        if let (Value::Object(base), Value::Object(overrides)) = (&mut base, overrides) {
            base.extend(overrides);
        }
        base
    }

    #[test]
    fn fixtures_match_their_snapshots() {
        for (file, event, body) in FIXTURES {
            let parsed = parse(event, body.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
            let name = file.trim_end_matches(".json");
            let description = format!("events/github/{file} as X-GitHub-Event: {event}");
            insta::with_settings!({ description => description, omit_expression => true }, {
                insta::assert_json_snapshot!(name, parsed);
            });
        }
    }

    #[test]
    fn every_fixture_file_is_snapshotted() {
        crate::providers::fixtures::assert_all_listed("github", FIXTURES.iter().map(|(file, _, _)| *file));
    }

    #[test]
    fn a_branch_push_carries_its_head_commit() {
        let push = push_of(&payload(json!({})));
        assert_eq!(push.repo.as_str(), "acme/shop");
        assert_eq!(push.git_ref, GitRef::Branch(BranchName::parse("main").unwrap()));
        assert_eq!(push.after.as_ref().map(CommitSha::as_str), Some(SHA));
        assert!(!push.created && !push.deleted && !push.forced);
        assert_eq!(push.commit_count, 1);
        assert_eq!(
            push.head_commit,
            Some(CommitInfo {
                message: "Fix checkout".to_owned(),
                author_login: Some("alice-gh".to_owned()),
                author_name: "Alice".to_owned(),
                author_email: Some("alice@example.com".to_owned()),
                url: Some(crate::domain::WebUrl::parse(&format!("https://github.com/acme/shop/commit/{SHA}")).unwrap()),
                pushed_by: "alice".to_owned(),
            })
        );
    }

    #[test]
    fn a_push_carries_every_commit_it_lists_oldest_first_with_author_and_time() {
        const OLDER: &str = "2222222222222222222222222222222222222222";
        let push = push_of(&payload(json!({
            "compare": "https://github.com/acme/shop/compare/111111111111...6113728f27ae",
            "commits": [
                { "id": OLDER, "message": "ABC-12 Add the basket\n\nLong body", "timestamp": "2026-11-26T09:14:03+01:00",
                  "author": { "name": "Bob", "email": "bob@example.com" } },
                { "id": SHA, "message": "Fix checkout", "timestamp": "not a time",
                  "author": { "name": "Alice", "email": "alice@example.com", "username": "alice-gh" } }
            ]
        })));
        let carried = push.carried();
        let listed: Vec<_> = carried
            .commits
            .iter()
            .map(|c| (c.sha.as_str(), c.author.as_str(), c.at.map(|t| t.to_string())))
            .collect();
        assert_eq!(
            listed,
            [
                (OLDER, "Bob", Some("2026-11-26T08:14:03Z".to_owned())),
                (SHA, "alice-gh", None),
            ]
        );
        assert_eq!(carried.commits[0].message, "ABC-12 Add the basket\n\nLong body");
        assert!(!carried.truncated);
        assert_eq!(
            carried.compare_url.map(|u| u.to_string()),
            Some("https://github.com/acme/shop/compare/111111111111...6113728f27ae".to_owned())
        );
        // And the lineage learns both as before: `before` and the older listed commit.
        let parents: Vec<_> = push.parents().iter().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(parents, ["1111111111111111111111111111111111111111", OLDER]);
    }

    #[test]
    fn a_push_listing_github_s_most_commits_is_marked_truncated() {
        let commits: Vec<Value> = (0..2_048)
            .map(|i| json!({ "id": format!("{i:040x}"), "message": "m" }))
            .collect();
        let push = push_of(&payload(json!({ "commits": commits })));
        let carried = push.carried();
        assert!(carried.truncated);
        assert_eq!(carried.commits.len(), crate::domain::COMMITS_KEPT);
        assert_eq!(carried.commits.last().unwrap().sha.as_str(), format!("{:040x}", 2_047));
    }

    #[test]
    fn a_deleted_branch_has_no_head() {
        let push = push_of(&payload(json!({
            "ref": "refs/heads/feature/old",
            "before": SHA,
            "after": ZERO,
            "deleted": true,
            "commits": [],
            "head_commit": null,
        })));
        assert_eq!(push.git_ref, GitRef::Branch(BranchName::parse("feature/old").unwrap()));
        assert!(push.deleted);
        assert_eq!(push.after, None);
        assert_eq!(push.commit_count, 0);
        assert_eq!(push.head_commit, None);
    }

    #[test]
    fn an_all_zero_after_is_no_head_even_without_deleted() {
        let push = push_of(&payload(json!({ "after": ZERO, "head_commit": null })));
        assert_eq!(push.after, None);
    }

    #[test]
    fn a_tag_push_is_a_tag() {
        let push = push_of(&payload(
            json!({ "ref": "refs/tags/v1.2.0", "created": true, "commits": [] }),
        ));
        assert_eq!(push.git_ref, GitRef::Tag("v1.2.0".to_owned()));
        assert!(push.created);
        assert_eq!(push.commit_count, 0);
        assert!(push.head_commit.is_some());
    }

    #[test]
    fn other_refs_are_kept_whole() {
        let push = push_of(&payload(json!({ "ref": "refs/notes/commits" })));
        assert_eq!(push.git_ref, GitRef::Other("refs/notes/commits".to_owned()));
    }

    #[test]
    fn a_forced_push_says_so() {
        let push = push_of(&payload(json!({ "forced": true })));
        assert!(push.forced);
        assert_eq!(push.after.as_ref().map(CommitSha::as_str), Some(SHA));
    }

    #[test]
    fn a_new_branch_is_created() {
        let push = push_of(&payload(
            json!({ "ref": "refs/heads/release/2.0", "before": ZERO, "created": true }),
        ));
        assert_eq!(push.git_ref, GitRef::Branch(BranchName::parse("release/2.0").unwrap()));
        assert!(push.created);
        assert!(push.after.is_some());
    }

    #[test]
    fn pushed_by_falls_back_to_the_sender() {
        let push = push_of(&payload(json!({ "pusher": null })));
        assert_eq!(push.head_commit.unwrap().pushed_by, "alice-gh");
        let error = push_error(&payload(json!({ "pusher": {}, "sender": null })));
        assert!(error.contains("pusher.name"), "{error}");
    }

    #[test]
    fn shas_are_lowercased() {
        let push = push_of(&payload(json!({ "after": SHA.to_uppercase() })));
        assert_eq!(push.after.as_ref().map(CommitSha::as_str), Some(SHA));
    }

    #[test]
    fn ping_and_unknown_events() {
        assert_eq!(parse("ping", b"{}").unwrap(), HostEvent::Ping);
        assert_eq!(
            parse("issues", b"not even json").unwrap(),
            HostEvent::Ignored {
                event: "issues".to_owned()
            }
        );
        let push = include_str!("../../../events/github/push.json").as_bytes();
        assert_eq!(
            parse("pull_request", push).unwrap(),
            HostEvent::Ignored {
                event: "pull_request".to_owned()
            }
        );
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_without_a_position_and_a_huge_one_clipped() {
        let error = push_error(&payload(json!({ "forced": "yes" })));
        assert_eq!(
            error,
            "the payload's `forced` is wrong: invalid type: string \"yes\", expected a boolean"
        );
        let error = push_error(&payload(json!({ "repository": { "full_name": 7 } })));
        assert!(
            error.starts_with("the payload's `repository` is wrong: invalid type: integer `7`"),
            "{error}"
        );
        assert!(!error.contains("line"), "{error}");
        let error = push_error(&payload(json!({ "created": "x".repeat(100_000) })));
        assert!(
            error.contains("`created`") && error.len() < 400,
            "{} bytes",
            error.len()
        );
        // Fields slipway never reads may hold anything.
        let push = push_of(&payload(json!({ "sender": [1, {"a": null}], "hook": 3 })));
        assert!(push.after.is_some());
    }

    #[test]
    fn malformed_json_is_refused() {
        let error = parse("push", b"{\"ref\": ").unwrap_err();
        assert!(matches!(error, PayloadError::Json { .. }), "{error:?}");
        assert!(error.to_string().contains("not a JSON object"), "{error}");
        let error = parse("push", b"[1, 2]").unwrap_err();
        assert!(matches!(error, PayloadError::Json { .. }), "{error:?}");
        // A body that is one huge JSON string: serde quotes it, the answer does not.
        let huge = serde_json::to_vec(&"\u{7103f}".repeat(100_000)).unwrap();
        let error = parse("push", &huge).unwrap_err().to_string();
        assert!(
            error.contains("not a JSON object") && error.len() < 600,
            "{} bytes",
            error.len()
        );
    }

    #[test]
    fn an_invalid_repository_name_is_refused() {
        let error = push_error(&payload(json!({ "repository": { "full_name": "../etc/passwd" } })));
        assert!(error.contains("repository.full_name"), "{error}");
        assert!(error.contains("invalid repository"), "{error}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({ "ref": null }), "`ref`"),
            (json!({ "ref": "refs/heads/a..b" }), "`ref`"),
            (json!({ "after": "abc" }), "`after`"),
            (json!({ "after": null }), "`after`"),
            (json!({ "repository": {} }), "`repository`"),
            (json!({ "forced": "yes" }), "`forced`"),
            (json!({ "head_commit": { "message": 5 } }), "`head_commit`"),
        ];
        for (overrides, field) in cases {
            let error = push_error(&payload(overrides.clone()));
            assert!(error.contains(field), "{overrides}: {error}");
        }
    }

    #[test]
    fn errors_do_not_echo_big_values() {
        let huge = "x".repeat(10_000);
        let error = push_error(&payload(json!({ "forced": huge })));
        assert!(error.len() < 300, "{error}");
        let error = push_error(&payload(json!({ "repository": { "full_name": huge } })));
        assert!(error.len() < 300, "{error}");
    }

    fn build_of(event: &str, payload: &Value) -> BuildReport {
        match parse(event, &serde_json::to_vec(payload).unwrap()).unwrap() {
            HostEvent::Build(report) => *report,
            other => panic!("expected a build, got {other:?}"),
        }
    }

    fn workflow_run(action: &str, conclusion: Value) -> Value {
        json!({
            "action": action,
            "repository": { "full_name": "acme/shop" },
            "workflow": { "name": "CI" },
            "workflow_run": {
                "name": "", "path": ".github/workflows/ci.yml", "head_sha": SHA, "head_branch": "main",
                "status": "completed", "conclusion": conclusion, "html_url": "https://github.com/acme/shop/actions/runs/1"
            }
        })
    }

    fn check_suite(action: &str, conclusion: Value) -> Value {
        json!({
            "action": action,
            "repository": { "full_name": "acme/shop" },
            "check_suite": {
                "head_sha": SHA, "head_branch": "main", "status": "completed", "conclusion": conclusion,
                "url": "https://api.github.com/repos/acme/shop/check-suites/1",
                "app": { "slug": "github-actions", "name": "GitHub Actions" }
            }
        })
    }

    #[test]
    fn completed_runs_and_suites_map_their_conclusion() {
        let cases = [
            ("success", Some(BuildStatus::Success)),
            ("neutral", Some(BuildStatus::Success)),
            ("skipped", Some(BuildStatus::Success)),
            ("failure", Some(BuildStatus::Failure)),
            ("timed_out", Some(BuildStatus::Failure)),
            ("cancelled", Some(BuildStatus::Error)),
            ("action_required", Some(BuildStatus::Error)),
            ("stale", Some(BuildStatus::Error)),
            ("startup_failure", Some(BuildStatus::Error)),
        ];
        for (conclusion, expected) in cases {
            let run = build_of("workflow_run", &workflow_run("completed", json!(conclusion)));
            assert_eq!(run.status, expected, "workflow_run {conclusion}");
            let suite = build_of("check_suite", &check_suite("completed", json!(conclusion)));
            assert_eq!(suite.status, expected, "check_suite {conclusion}");
        }
    }

    #[test]
    fn a_workflow_run_is_named_after_its_workflow() {
        let run = build_of("workflow_run", &workflow_run("completed", json!("success")));
        assert_eq!(run.repo.as_str(), "acme/shop");
        assert_eq!(run.sha.as_str(), SHA);
        assert_eq!(run.branch, Some(BranchName::parse("main").unwrap()));
        assert_eq!(run.check, "CI");
        assert_eq!(run.url.as_deref(), Some("https://github.com/acme/shop/actions/runs/1"));
        let mut payload = workflow_run("completed", json!("success"));
        payload["workflow_run"]["name"] = json!("Deploy checks");
        assert_eq!(build_of("workflow_run", &payload).check, "Deploy checks");
        payload["workflow_run"]["name"] = json!(null);
        payload["workflow"] = json!(null);
        assert_eq!(build_of("workflow_run", &payload).check, ".github/workflows/ci.yml");
    }

    #[test]
    fn a_check_suite_is_named_after_its_app() {
        let suite = build_of("check_suite", &check_suite("completed", json!("success")));
        assert_eq!(suite.check, "github-actions");
        assert_eq!(suite.url, None);
        let mut payload = check_suite("completed", json!("success"));
        payload["check_suite"]["app"] = json!({ "name": "octocoders-linter" });
        assert_eq!(build_of("check_suite", &payload).check, "octocoders-linter");
        payload["check_suite"]["app"] = json!(null);
        let error = parse("check_suite", &serde_json::to_vec(&payload).unwrap()).unwrap_err();
        assert!(error.to_string().contains("check_suite.app"), "{error}");
    }

    #[test]
    fn runs_and_suites_not_completed_are_under_way() {
        for action in ["requested", "in_progress"] {
            let run = build_of("workflow_run", &workflow_run(action, json!(null)));
            assert_eq!(run.status, None, "{action}");
        }
        for action in ["requested", "rerequested"] {
            // A rerequested suite still carries its old conclusion; a new run is coming.
            let suite = build_of("check_suite", &check_suite(action, json!("success")));
            assert_eq!(suite.status, None, "{action}");
        }
        let run = build_of("workflow_run", &workflow_run("completed", json!(null)));
        assert_eq!(run.status, None, "completed without a conclusion yet");
    }

    #[test]
    fn build_errors_name_the_field() {
        let mut payload = workflow_run("completed", json!("success"));
        payload["workflow_run"]["head_sha"] = json!("abc");
        let error = parse("workflow_run", &serde_json::to_vec(&payload).unwrap()).unwrap_err();
        assert!(error.to_string().contains("workflow_run.head_sha"), "{error}");
        let mut payload = check_suite("completed", json!("success"));
        payload["check_suite"]["head_branch"] = json!("a..b");
        let error = parse("check_suite", &serde_json::to_vec(&payload).unwrap()).unwrap_err();
        assert!(error.to_string().contains("check_suite.head_branch"), "{error}");
        let error = parse("workflow_run", b"{").unwrap_err();
        assert!(matches!(error, PayloadError::Json { .. }), "{error:?}");
        let error = parse("check_suite", b"{\"repository\": {\"full_name\": \"a/b\"}}").unwrap_err();
        assert!(error.to_string().contains("`check_suite`"), "{error}");
    }
}

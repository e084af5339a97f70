//! GitLab webhooks: check a delivery's token or signature, then turn it into a [`HostEvent`].
//!
//! GitLab authenticates a webhook in one of two ways, and a hook may use both:
//!
//! - the *secret token*, sent as-is in `X-Gitlab-Token` ([`verify_token`]): it proves the
//!   sender knows the secret but does not cover the body;
//! - the *signing token*, a [Standard Webhooks](https://www.standardwebhooks.com) signature
//!   in the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
//!   ([`verify_signature`]), which covers the body and bounds replays to five minutes.
//!
//! [`parse`] reads `push`, `tag_push` and `pipeline` payloads; every other kind becomes
//! [`HostEvent::Ignored`]. Raw payload structs stay private to this module.
//!
//! Pipelines become [`BuildReport`]s whose `check` is always `"pipeline"`: a pipeline's
//! `required_checks` names a GitLab pipeline as `"pipeline"`.

use serde::Deserialize;
use standardwebhooks::Webhook;
use subtle::ConstantTimeEq as _;

use super::payload::{Fields, git_ref_of};
use super::{BuildReport, HostEvent, Push};
use crate::domain::{BranchName, BuildStatus, CommitInfo, CommitSha, PushedCommit, RepoName, WebUrl};
use crate::signature::{hmac_sha256, verify_hmac_sha256};

/// How far `webhook-timestamp` may be from now, either way, in seconds.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// The secret token's header.
const TOKEN_HEADER: &str = "X-Gitlab-Token";

/// Why a GitLab delivery was refused as unauthenticated (answer 401). Retrying the same request
/// cannot succeed, except after [`VerifyError::Stale`] with a fresh delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is absent or empty.
    #[error("the request has no `{header}` header: configure the GitLab webhook's secret or signing token")]
    Missing { header: &'static str },
    /// The header is there but not in the expected form.
    #[error("the `{header}` header is malformed: {reason}")]
    Malformed { header: &'static str, reason: &'static str },
    /// The token or signature does not match our secret.
    #[error("the `{header}` header does not match: check that GitLab and slipway use the same secret")]
    Mismatch { header: &'static str },
    /// A valid signature, but `webhook-timestamp` is more than five minutes from now (a replay,
    /// or a clock far off).
    #[error("the `webhook-timestamp` header is {seconds} s away from now (at most 300 s allowed)")]
    Stale { seconds: i64 },
    /// slipway's own signing secret is not `whsec_<base64>`: a configuration error.
    #[error("the configured GitLab signing token is not `whsec_<base64>`")]
    BadSecret,
}

/// Checks `X-Gitlab-Token` against the configured secret token, in constant time.
///
/// Both values are first hashed with HMAC-SHA256 under a fixed key, and the two digests are
/// compared in constant time ([`verify_hmac_sha256`]): neither the tokens' contents nor their
/// lengths leak through timing.
pub fn verify_token(expected: &str, header: Option<&str>) -> Result<(), VerifyError> {
    const KEY: &[u8] = b"slipway gitlab token comparison";
    let header = header
        .filter(|h| !h.is_empty())
        .ok_or(VerifyError::Missing { header: TOKEN_HEADER })?;
    let want = hmac_sha256(KEY, &[expected.as_bytes()]);
    verify_hmac_sha256(KEY, &[header.as_bytes()], &want).map_err(|_| VerifyError::Mismatch { header: TOKEN_HEADER })
}

/// The Standard Webhooks signer for a signing token: `whsec_<base64>` (the prefix is
/// optional). [`VerifyError::BadSecret`] when the key is not base64 or is empty: a
/// configuration error, which `slipway serve` and `slipway bootstrap` report at start-up.
pub fn signing_key(secret: &str) -> Result<Webhook, VerifyError> {
    let secret = secret.trim();
    let key = secret.strip_prefix("whsec_").unwrap_or(secret);
    if key.is_empty() {
        return Err(VerifyError::BadSecret);
    }
    Webhook::new(key).map_err(|_| VerifyError::BadSecret)
}

/// The `webhook-signature` value GitLab sends for `body` (`v1,<base64>`), computed by the
/// `standardwebhooks` crate: what [`verify_signature`] accepts. Used by
/// `slipway send --host gitlab` and the tests. A body that is not UTF-8 cannot be signed
/// (Standard Webhooks payloads are text): [`VerifyError::Malformed`].
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, VerifyError> {
    signing_key(secret)?
        .sign(id, timestamp, body)
        .map_err(|_| VerifyError::Malformed {
            header: "body",
            reason: "a Standard Webhooks payload must be UTF-8",
        })
}

/// Checks a Standard Webhooks signature, as GitLab sends it for a hook with a signing token.
///
/// `secret` is the signing token, `whsec_<base64 key>` (the prefix is optional); `id`,
/// `timestamp` and `signature` are the `webhook-id`, `webhook-timestamp` (Unix seconds) and
/// `webhook-signature` headers; `body` the raw request body. The signature the
/// `standardwebhooks` crate computes for them ([`sign`]) must be one of the header's
/// space-separated `v1,<base64>` entries (compared in constant time; entries of other versions
/// are skipped). A matching signature whose timestamp is more than [`TOLERANCE_SECONDS`] from
/// `now` is [`VerifyError::Stale`].
///
/// The crate's own `Webhook::verify` is not used because it reads the system clock: slipway
/// judges the timestamp by its own clock (`now`), as it does every other time-bound check.
pub fn verify_signature(
    secret: &str,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<(), VerifyError> {
    let webhook = signing_key(secret)?;
    let id = present(id, "webhook-id")?;
    let timestamp = present(timestamp, "webhook-timestamp")?;
    let signature = present(signature, "webhook-signature")?;
    let seconds: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Malformed {
        header: "webhook-timestamp",
        reason: "expected Unix seconds",
    })?;

    let candidates: Vec<&str> = signature
        .split_whitespace()
        .filter(|entry| entry.starts_with("v1,"))
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::Malformed {
            header: "webhook-signature",
            reason: "expected space-separated `v1,<base64>` entries",
        });
    }
    let mismatch = VerifyError::Mismatch {
        header: "webhook-signature",
    };
    // A body that is not UTF-8 was not signed by GitLab.
    let expected = webhook.sign(id, seconds, body).map_err(|_| mismatch.clone())?;
    let matched = candidates
        .iter()
        .any(|candidate| bool::from(candidate.as_bytes().ct_eq(expected.as_bytes())));
    if !matched {
        return Err(mismatch);
    }

    let skew = now.as_second().saturating_sub(seconds);
    if skew.abs() > TOLERANCE_SECONDS {
        return Err(VerifyError::Stale { seconds: skew });
    }
    Ok(())
}

fn present<'a>(value: Option<&'a str>, header: &'static str) -> Result<&'a str, VerifyError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or(VerifyError::Missing { header })
}

pub use super::PayloadError;

/// Turns a GitLab webhook delivery into a [`HostEvent`].
///
/// `event` is the `X-Gitlab-Event` header (`Push Hook`, …) and `body` the authenticated raw
/// body. The payload's `object_kind` decides; the header is used only when `object_kind` is
/// absent. `push` and `tag_push` become [`HostEvent::Push`], `pipeline` a
/// [`HostEvent::Build`], anything else [`HostEvent::Ignored`].
///
/// GitLab does not report force pushes, so [`Push::forced`] is always `false`.
pub fn parse(event: Option<&str>, body: &[u8]) -> Result<HostEvent, PayloadError> {
    let root = Fields::new(body)?;
    let kind = match root.optional::<String>("object_kind")? {
        Some(kind) => kind,
        None => match event {
            // `Tag Push Hook` → `tag_push`, as `object_kind` would say.
            Some(header) => header.trim_end_matches(" Hook").to_ascii_lowercase().replace(' ', "_"),
            None => {
                return Err(PayloadError::Field {
                    field: "object_kind",
                    reason: "missing, and no X-Gitlab-Event header either".to_owned(),
                });
            }
        },
    };
    match kind.as_str() {
        "push" | "tag_push" => parse_push(&root).map(|push| HostEvent::Push(Box::new(push))),
        "pipeline" => parse_pipeline(&root).map(|report| HostEvent::Build(Box::new(report))),
        _ => Ok(HostEvent::Ignored { event: kind }),
    }
}

fn repo_of(root: &Fields) -> Result<RepoName, PayloadError> {
    let path: String = root.required("project.path_with_namespace")?;
    RepoName::parse(&path).map_err(|source| PayloadError::InvalidId {
        field: "project.path_with_namespace",
        source,
    })
}

fn sha(field: &'static str, value: &str) -> Result<CommitSha, PayloadError> {
    CommitSha::parse(value).map_err(|source| PayloadError::InvalidId { field, source })
}

/// One entry of a push's `commits` (the newest 20 at most, oldest first).
#[derive(Deserialize)]
struct RawCommit {
    id: String,
    message: String,
    url: Option<String>,
    timestamp: Option<String>,
    author: RawAuthor,
}

#[derive(Deserialize)]
struct RawAuthor {
    name: String,
    email: Option<String>,
}

fn parse_push(root: &Fields) -> Result<Push, PayloadError> {
    let repo = repo_of(root)?;
    let full_ref: String = root.required("ref")?;
    let git_ref = git_ref_of(&full_ref)?;
    let before: Option<String> = root.optional("before")?;
    let after: String = root.required("after")?;
    let after = sha("after", &after)?;
    // For an annotated tag `after` is the tag object; `checkout_sha` is the commit it points to.
    let checkout: Option<String> = root.optional("checkout_sha")?;
    let checkout = checkout.map(|c| sha("checkout_sha", &c)).transpose()?;
    let commits: Vec<RawCommit> = root.optional("commits")?.unwrap_or_default();
    let total: Option<usize> = root.optional("total_commits_count")?;

    let deleted = after.is_zero();
    let before = before.map(|b| sha("before", &b)).transpose()?;
    let created = before.as_ref().is_some_and(CommitSha::is_zero);
    let listed = commits
        .iter()
        .map(|c| {
            Ok(PushedCommit {
                sha: sha("commits.id", &c.id)?,
                message: c.message.clone(),
                author: c.author.name.clone(),
                at: super::payload::commit_time("commits.timestamp", c.timestamp.as_deref()),
            })
        })
        .collect::<Result<Vec<_>, PayloadError>>()?;
    let web_url: Option<String> = root.optional("project.web_url")?;
    let head = if deleted {
        None
    } else {
        Some(checkout.filter(|c| !c.is_zero()).unwrap_or(after))
    };

    let head_commit = match &head {
        None => None,
        Some(head) => commit_info(root, commits.iter().find(|c| c.id.eq_ignore_ascii_case(head.as_str())))?,
    };

    let compare_url = compare_url(web_url, before.as_ref(), head.as_ref());
    Ok(Push {
        repo,
        git_ref,
        compare_url,
        truncated: false,
        after: head,
        created,
        deleted,
        forced: false,
        commit_count: total.unwrap_or(commits.len()),
        before: before.filter(|b| !b.is_zero()),

        commits: listed,
        head_commit,
    })
}

/// The project's page comparing `before` and `after` (`…/-/compare/<before>...<after>`);
/// none for a new or deleted branch.
fn compare_url(project: Option<String>, before: Option<&CommitSha>, after: Option<&CommitSha>) -> Option<WebUrl> {
    let (before, after) = (before.filter(|b| !b.is_zero())?, after?);
    let mut url = super::payload::link("project.web_url", project)?.as_url().clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(["-", "compare", &format!("{before}...{after}")]);
    WebUrl::parse(url.as_str()).ok()
}

/// The head commit, with who pushed it. GitLab gives no author login: the pusher's
/// `user_username` counts as the author's login only when the author's email is the pusher's.
fn commit_info(root: &Fields, commit: Option<&RawCommit>) -> Result<Option<CommitInfo>, PayloadError> {
    let Some(commit) = commit else { return Ok(None) };
    let username: Option<String> = root.optional("user_username")?;
    let user_name: Option<String> = root.optional("user_name")?;
    let user_email: Option<String> = root.optional("user_email")?;
    let pushed_by = username
        .clone()
        .or(user_name)
        .filter(|n| !n.is_empty())
        .ok_or(PayloadError::Field {
            field: "user_username",
            reason: "missing (and no `user_name` either)".to_owned(),
        })?;
    let same_person = match (&commit.author.email, &user_email) {
        (Some(author), Some(pusher)) => !author.is_empty() && author.eq_ignore_ascii_case(pusher),
        _ => false,
    };
    Ok(Some(CommitInfo {
        message: commit.message.clone(),
        author_login: username.filter(|_| same_person),
        author_name: commit.author.name.clone(),
        author_email: commit.author.email.clone(),
        url: super::payload::link("commits.url", commit.url.clone()),
        pushed_by,
    }))
}

/// GitLab sends a pipeline's coverage as a string (`"87.5"`), sometimes a number, or `null`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCoverage {
    Number(f64),
    Text(String),
}

fn parse_pipeline(root: &Fields) -> Result<BuildReport, PayloadError> {
    let repo = repo_of(root)?;
    let sha_text: String = root.required("object_attributes.sha")?;
    let commit = sha("object_attributes.sha", &sha_text)?;
    let git_ref: Option<String> = root.optional("object_attributes.ref")?;
    let tag: bool = root.optional("object_attributes.tag")?.unwrap_or(false);
    let status: String = root.required("object_attributes.status")?;
    let id: Option<u64> = root.optional("object_attributes.id")?;
    let url: Option<String> = root.optional("object_attributes.url")?;
    let web_url: Option<String> = root.optional("project.web_url")?;
    let coverage: Option<RawCoverage> = root.optional("object_attributes.coverage")?;

    // A merge-request pipeline runs on `refs/merge-requests/<iid>/head`, which is no branch.
    let branch = match git_ref {
        Some(name) if !tag && !name.starts_with("refs/") => {
            Some(BranchName::parse(&name).map_err(|source| PayloadError::InvalidId {
                field: "object_attributes.ref",
                source,
            })?)
        }
        _ => None,
    };
    // The pipeline's page, when the payload has no URL for it: `<project>/-/pipelines/<id>`.
    let url = url.or_else(|| {
        let (web, id) = (web_url?, id?);
        let mut page = url::Url::parse(&web).ok()?;
        page.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["-", "pipelines", &id.to_string()]);
        Some(page.into())
    });
    let coverage = match coverage {
        None => None,
        Some(RawCoverage::Number(n)) => Some(n),
        Some(RawCoverage::Text(text)) if text.trim().is_empty() => None,
        Some(RawCoverage::Text(text)) => Some(text.trim().parse::<f64>().map_err(|_| PayloadError::Field {
            field: "object_attributes.coverage",
            reason: "expected a number of percent".to_owned(),
        })?),
    };

    Ok(BuildReport {
        repo,
        sha: commit,
        branch,
        check: "pipeline".to_owned(),
        status: pipeline_status(&status),
        url: super::payload::link("object_attributes.url", url),
        coverage: coverage.filter(|c| c.is_finite()),
    })
}

/// A pipeline's `status`: `None` while it has not finished. An unknown status (one GitLab may
/// add later) counts as not finished rather than refusing the delivery.
fn pipeline_status(status: &str) -> Option<BuildStatus> {
    match status {
        "success" => Some(BuildStatus::Success),
        "failed" => Some(BuildStatus::Failure),
        "canceled" | "canceling" | "skipped" => Some(BuildStatus::Error),
        // running, pending, created, waiting_for_resource, preparing, manual, scheduled, …
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::providers::GitRef;

    /// GitLab's documented example payloads (see events/README.md), with the
    /// `X-Gitlab-Event` each is delivered with.
    const FIXTURES: &[(&str, &str, &str)] = &[
        (
            "push.json",
            "Push Hook",
            include_str!("../../../events/gitlab/push.json"),
        ),
        (
            "tag-push.json",
            "Tag Push Hook",
            include_str!("../../../events/gitlab/tag-push.json"),
        ),
        (
            "pipeline.json",
            "Pipeline Hook",
            include_str!("../../../events/gitlab/pipeline.json"),
        ),
    ];

    const SHA: &str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn fixtures_match_their_snapshots() {
        for (file, event, body) in FIXTURES {
            let parsed = parse(Some(event), body.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
            let name = format!("gitlab-{}", file.trim_end_matches(".json"));
            let description = format!("events/gitlab/{file} as X-Gitlab-Event: {event}");
            insta::with_settings!({ description => description, omit_expression => true }, {
                insta::assert_json_snapshot!(name, parsed);
            });
        }
    }

    #[test]
    fn every_fixture_file_is_snapshotted() {
        crate::providers::fixtures::assert_all_listed("gitlab", FIXTURES.iter().map(|(file, _, _)| *file));
    }

    #[test]
    fn a_push_carries_its_listed_commits_the_project_s_compare_page_and_that_gitlab_listed_fewer() {
        let body = serde_json::to_vec(&push_payload(json!({}))).unwrap();
        let HostEvent::Push(push) = parse(Some("Push Hook"), &body).unwrap() else {
            panic!("not a push")
        };
        let carried = push.carried();
        let listed: Vec<_> = carried
            .commits
            .iter()
            .map(|c| (c.sha.as_str(), c.author.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327", "Jordi"),
                (SHA, "John Smith")
            ]
        );
        assert!(carried.truncated, "4 commits pushed, 2 listed");
        assert_eq!(
            carried.compare_url.map(|u| u.to_string()),
            Some(format!(
                "https://gitlab.example.com/acme/platform/shop/-/compare/95790bf891e76fee5e1747ab589903a6a1f80f22...{SHA}"
            ))
        );
        // A new branch has nothing to compare with.
        let body = serde_json::to_vec(&push_payload(json!({ "before": ZERO }))).unwrap();
        let HostEvent::Push(push) = parse(Some("Push Hook"), &body).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(push.carried().compare_url, None);
    }

    fn push_payload(overrides: Value) -> Value {
        let mut base = json!({
            "object_kind": "push",
            "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
            "after": SHA,
            "ref": "refs/heads/main",
            "checkout_sha": SHA,
            "user_name": "John Smith",
            "user_username": "jsmith",
            "user_email": "john@example.com",
            "project": { "path_with_namespace": "acme/platform/shop", "web_url": "https://gitlab.example.com/acme/platform/shop" },
            "commits": [
                { "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327", "message": "older", "author": { "name": "Jordi", "email": "jordi@example.org" } },
                { "id": SHA, "message": "fixed readme", "url": "https://gitlab.example.com/c", "author": { "name": "John Smith", "email": "JOHN@example.com" } }
            ],
            "total_commits_count": 4
        });
        if let (Value::Object(base), Value::Object(overrides)) = (&mut base, overrides) {
            base.extend(overrides);
        }
        base
    }

    fn push_of(payload: &Value) -> Push {
        match parse(None, &serde_json::to_vec(payload).unwrap()).unwrap() {
            HostEvent::Push(push) => *push,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    fn build_of(payload: &Value) -> BuildReport {
        match parse(Some("Pipeline Hook"), &serde_json::to_vec(payload).unwrap()).unwrap() {
            HostEvent::Build(report) => *report,
            other => panic!("expected a build, got {other:?}"),
        }
    }

    fn error_of(payload: &Value) -> String {
        parse(None, &serde_json::to_vec(payload).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_branch_push_in_a_subgroup_carries_its_head_commit() {
        let push = push_of(&push_payload(json!({})));
        assert_eq!(push.repo.as_str(), "acme/platform/shop");
        assert_eq!(push.git_ref, GitRef::Branch(BranchName::parse("main").unwrap()));
        assert_eq!(push.after.as_ref().map(CommitSha::as_str), Some(SHA));
        assert!(!push.created && !push.deleted && !push.forced);
        assert_eq!(push.commit_count, 4);
        assert_eq!(
            push.head_commit,
            Some(CommitInfo {
                message: "fixed readme".to_owned(),
                author_login: Some("jsmith".to_owned()),
                author_name: "John Smith".to_owned(),
                author_email: Some("JOHN@example.com".to_owned()),
                url: Some(crate::domain::WebUrl::parse("https://gitlab.example.com/c").unwrap()),
                pushed_by: "jsmith".to_owned(),
            })
        );
    }

    #[test]
    fn the_pusher_is_not_the_author_when_the_emails_differ() {
        let push = push_of(&push_payload(json!({ "user_email": "someone-else@example.com" })));
        let head = push.head_commit.unwrap();
        assert_eq!(head.author_login, None);
        assert_eq!(head.pushed_by, "jsmith");
    }

    #[test]
    fn a_new_branch_has_an_all_zero_before() {
        let push = push_of(&push_payload(json!({ "before": ZERO, "ref": "refs/heads/feature/x" })));
        assert!(push.created && !push.deleted);
        assert_eq!(push.git_ref, GitRef::Branch(BranchName::parse("feature/x").unwrap()));
    }

    #[test]
    fn a_deleted_branch_has_no_head() {
        let push = push_of(&push_payload(json!({
            "after": ZERO, "checkout_sha": null, "commits": [], "total_commits_count": 0
        })));
        assert!(push.deleted && !push.created);
        assert_eq!(push.after, None);
        assert_eq!(push.head_commit, None);
        assert_eq!(push.commit_count, 0);
    }

    #[test]
    fn an_annotated_tag_points_at_its_commit() {
        let push = push_of(&push_payload(json!({
            "object_kind": "tag_push",
            "ref": "refs/tags/v1.0.0",
            "before": ZERO,
            "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
            "checkout_sha": SHA,
        })));
        assert_eq!(push.git_ref, GitRef::Tag("v1.0.0".to_owned()));
        assert!(push.created);
        assert_eq!(push.after.as_ref().map(CommitSha::as_str), Some(SHA));
        assert_eq!(push.head_commit.unwrap().message, "fixed readme");
    }

    #[test]
    fn the_header_names_the_kind_when_object_kind_is_missing() {
        let mut payload = push_payload(json!({ "object_kind": null }));
        let body = serde_json::to_vec(&payload).unwrap();
        assert!(matches!(parse(Some("Push Hook"), &body).unwrap(), HostEvent::Push(_)));
        assert!(parse(None, &body).unwrap_err().to_string().contains("object_kind"));
        payload["object_kind"] = json!("note");
        let body = serde_json::to_vec(&payload).unwrap();
        assert_eq!(
            parse(Some("Note Hook"), &body).unwrap(),
            HostEvent::Ignored {
                event: "note".to_owned()
            }
        );
    }

    fn pipeline(status: &str) -> Value {
        json!({
            "object_kind": "pipeline",
            "object_attributes": { "id": 31, "ref": "main", "tag": false, "sha": SHA, "status": status, "coverage": null },
            "project": { "path_with_namespace": "acme/shop", "web_url": "https://gitlab.example.com/acme/shop/" }
        })
    }

    #[test]
    fn pipeline_statuses_map_to_build_statuses() {
        let cases = [
            ("success", Some(BuildStatus::Success)),
            ("failed", Some(BuildStatus::Failure)),
            ("canceled", Some(BuildStatus::Error)),
            ("skipped", Some(BuildStatus::Error)),
            ("running", None),
            ("pending", None),
            ("created", None),
            ("waiting_for_resource", None),
            ("preparing", None),
            ("manual", None),
            ("scheduled", None),
        ];
        for (status, expected) in cases {
            assert_eq!(build_of(&pipeline(status)).status, expected, "{status}");
        }
    }

    #[test]
    fn a_pipeline_without_url_links_to_the_project_pipeline() {
        let report = build_of(&pipeline("success"));
        assert_eq!(report.check, "pipeline");
        assert_eq!(report.branch, Some(BranchName::parse("main").unwrap()));
        assert_eq!(
            report.url.as_deref(),
            Some("https://gitlab.example.com/acme/shop/-/pipelines/31")
        );
        assert_eq!(report.coverage, None);
    }

    #[test]
    fn coverage_comes_as_a_string_or_a_number() {
        let mut payload = pipeline("success");
        payload["object_attributes"]["coverage"] = json!("87.5");
        assert_eq!(build_of(&payload).coverage, Some(87.5));
        payload["object_attributes"]["coverage"] = json!(90);
        assert_eq!(build_of(&payload).coverage, Some(90.0));
        payload["object_attributes"]["coverage"] = json!("lots");
        assert!(error_of(&payload).contains("object_attributes.coverage"));
    }

    #[test]
    fn tag_and_merge_request_pipelines_have_no_branch() {
        let mut payload = pipeline("success");
        payload["object_attributes"]["tag"] = json!(true);
        payload["object_attributes"]["ref"] = json!("v1.0.0");
        assert_eq!(build_of(&payload).branch, None);
        let mut payload = pipeline("success");
        payload["object_attributes"]["ref"] = json!("refs/merge-requests/1/head");
        assert_eq!(build_of(&payload).branch, None);
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let error = parse(Some("Push Hook"), b"{\"ref\": ").unwrap_err();
        assert!(matches!(error, PayloadError::Json { .. }), "{error:?}");
        assert!(error.to_string().contains("not a JSON object"), "{error}");
        let cases = [
            (push_payload(json!({ "ref": null })), "`ref`"),
            (push_payload(json!({ "after": "abc" })), "`after`"),
            (
                push_payload(json!({ "project": { "path_with_namespace": "../etc" } })),
                "project.path_with_namespace",
            ),
            (push_payload(json!({ "project": {} })), "project.path_with_namespace"),
            (push_payload(json!({ "commits": "none" })), "`commits`"),
            (
                pipeline("success").tap(|p| p["object_attributes"]["sha"] = json!(null)),
                "object_attributes.sha",
            ),
            (
                pipeline("success").tap(|p| p["object_attributes"]["status"] = json!(3)),
                "object_attributes.status",
            ),
        ];
        for (payload, field) in cases {
            let error = error_of(&payload);
            assert!(error.contains(field), "{field}: {error}");
        }
    }

    trait Tap: Sized {
        fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
    }

    impl Tap for Value {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert_eq!(verify_token("s3cret-token", Some("s3cret-token")), Ok(()));
        assert_eq!(
            verify_token("s3cret-token", Some("s3cret-tokem")),
            Err(VerifyError::Mismatch {
                header: "X-Gitlab-Token"
            })
        );
        assert_eq!(
            verify_token("s3cret-token", Some("s3cret-token ")),
            Err(VerifyError::Mismatch {
                header: "X-Gitlab-Token"
            })
        );
        assert_eq!(
            verify_token("s3cret-token", None),
            Err(VerifyError::Missing {
                header: "X-Gitlab-Token"
            })
        );
        assert_eq!(
            verify_token("s3cret-token", Some("")),
            Err(VerifyError::Missing {
                header: "X-Gitlab-Token"
            })
        );
    }

    // The Standard Webhooks specification's published test vector (also checked independently
    // with Python's `hmac` module).
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: &str = "1614265330";
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    fn check(signature: &str, body: &[u8], now: i64) -> Result<(), VerifyError> {
        verify_signature(
            SW_SECRET,
            Some(SW_ID),
            Some(SW_TIMESTAMP),
            Some(signature),
            body,
            at(now),
        )
    }

    #[test]
    fn sign_reproduces_the_standard_webhooks_test_vector() {
        assert_eq!(sign(SW_SECRET, SW_ID, 1_614_265_330, SW_BODY).unwrap(), SW_SIGNATURE);
    }

    #[test]
    fn what_slipway_signs_the_crates_own_verifier_accepts() {
        // The crate's `Webhook::verify` judges the timestamp by the system clock.
        let now = jiff::Timestamp::now();
        let at = now.as_second().to_string();
        let body = br#"{"object_kind":"push"}"#;
        let signature = sign(SW_SECRET, "msg_1", now.as_second(), body).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", http::HeaderValue::from_static("msg_1"));
        headers.insert("webhook-timestamp", at.parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        Webhook::new(SW_SECRET).unwrap().verify(body, &headers).unwrap();
        assert_eq!(
            verify_signature(SW_SECRET, Some("msg_1"), Some(&at), Some(&signature), body, now),
            Ok(())
        );
    }

    #[test]
    fn a_body_that_is_not_utf8_is_neither_signed_nor_accepted() {
        let body = b"{\"a\": \"\xff\"}";
        assert!(matches!(
            sign(SW_SECRET, SW_ID, 1_614_265_330, body),
            Err(VerifyError::Malformed { .. })
        ));
        assert_eq!(
            check(SW_SIGNATURE, body, 1_614_265_330),
            Err(VerifyError::Mismatch {
                header: "webhook-signature"
            })
        );
    }

    #[test]
    fn a_signing_key_must_be_non_empty_base64() {
        assert!(signing_key(SW_SECRET).is_ok());
        assert!(
            signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok(),
            "the prefix is optional"
        );
        assert!(matches!(signing_key("whsec_not base64!"), Err(VerifyError::BadSecret)));
        assert!(matches!(signing_key("whsec_"), Err(VerifyError::BadSecret)));
        assert!(matches!(signing_key("  "), Err(VerifyError::BadSecret)));
    }

    #[test]
    fn the_standard_webhooks_test_vector_verifies() {
        assert_eq!(check(SW_SIGNATURE, SW_BODY, 1_614_265_330), Ok(()));
        // Several entries, one of them ours, another version skipped.
        let several = format!("v1a,abcd v1,Zm9vYmFy {SW_SIGNATURE}");
        assert_eq!(check(&several, SW_BODY, 1_614_265_330), Ok(()));
        // The prefix is optional.
        let raw = SW_SECRET.trim_start_matches("whsec_");
        let now = at(1_614_265_330);
        let verified = verify_signature(raw, Some(SW_ID), Some(SW_TIMESTAMP), Some(SW_SIGNATURE), SW_BODY, now);
        assert_eq!(verified, Ok(()));
    }

    #[test]
    fn one_flipped_byte_is_refused() {
        let mismatch = Err(VerifyError::Mismatch {
            header: "webhook-signature",
        });
        let mut body = SW_BODY.to_vec();
        body[3] ^= 1;
        assert_eq!(check(SW_SIGNATURE, &body, 1_614_265_330), mismatch);
        let flipped = SW_SIGNATURE.replace("g0hM", "g0hN");
        assert_eq!(check(&flipped, SW_BODY, 1_614_265_330), mismatch);
        let now = at(1_614_265_330);
        let other_id = verify_signature(
            SW_SECRET,
            Some("msg_x"),
            Some(SW_TIMESTAMP),
            Some(SW_SIGNATURE),
            SW_BODY,
            now,
        );
        assert_eq!(other_id, mismatch);
    }

    #[test]
    fn a_stale_timestamp_is_refused_either_way() {
        assert_eq!(check(SW_SIGNATURE, SW_BODY, 1_614_265_330 + 300), Ok(()));
        assert_eq!(check(SW_SIGNATURE, SW_BODY, 1_614_265_330 - 300), Ok(()));
        assert_eq!(
            check(SW_SIGNATURE, SW_BODY, 1_614_265_330 + 301),
            Err(VerifyError::Stale { seconds: 301 })
        );
        assert_eq!(
            check(SW_SIGNATURE, SW_BODY, 1_614_265_330 - 301),
            Err(VerifyError::Stale { seconds: -301 })
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let now = at(1_614_265_330);
        let missing = verify_signature(SW_SECRET, None, Some(SW_TIMESTAMP), Some(SW_SIGNATURE), SW_BODY, now);
        assert_eq!(missing, Err(VerifyError::Missing { header: "webhook-id" }));
        let missing = verify_signature(SW_SECRET, Some(SW_ID), Some(""), Some(SW_SIGNATURE), SW_BODY, now);
        assert_eq!(
            missing,
            Err(VerifyError::Missing {
                header: "webhook-timestamp"
            })
        );
        let missing = verify_signature(SW_SECRET, Some(SW_ID), Some(SW_TIMESTAMP), None, SW_BODY, now);
        assert_eq!(
            missing,
            Err(VerifyError::Missing {
                header: "webhook-signature"
            })
        );
        let bad_time = verify_signature(
            SW_SECRET,
            Some(SW_ID),
            Some("yesterday"),
            Some(SW_SIGNATURE),
            SW_BODY,
            now,
        );
        assert!(matches!(
            bad_time,
            Err(VerifyError::Malformed {
                header: "webhook-timestamp",
                ..
            })
        ));
        let no_v1 = check("sha256=abc", SW_BODY, 1_614_265_330);
        assert!(matches!(
            no_v1,
            Err(VerifyError::Malformed {
                header: "webhook-signature",
                ..
            })
        ));
        let bad_secret = verify_signature(
            "whsec_not base64!",
            Some(SW_ID),
            Some(SW_TIMESTAMP),
            Some(SW_SIGNATURE),
            SW_BODY,
            now,
        );
        assert_eq!(bad_secret, Err(VerifyError::BadSecret));
        assert!(
            VerifyError::Missing { header: "webhook-id" }
                .to_string()
                .contains("webhook-id")
        );
    }
}

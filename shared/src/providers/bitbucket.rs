//! Bitbucket Cloud webhooks: check a delivery's signature, then turn it into [`HostEvent`]s.
//!
//! Bitbucket Cloud signs a hook that has a secret with HMAC-SHA256 of the raw body, sent as
//! `X-Hub-Signature: sha256=<hex>`: the format [`crate::signature`] verifies. GitHub sends
//! SHA-1 signatures under the same header name (`sha1=<hex>`); those are refused.
//!
//! [`parse`] returns a `Vec` because one `repo:push` can touch several refs (branches and
//! tags), each its own [`Push`]. Raw payload structs stay private to this module.

use serde::Deserialize;

use super::payload::Fields;
use super::{BuildReport, GitRef, HostEvent, Push};
use crate::domain::{BranchName, BuildStatus, CommitInfo, CommitSha, PushedCommit, RepoName};
use crate::signature::{self, SignatureError};

/// Checks `X-Hub-Signature` (`sha256=<hex>`) over the raw body, in constant time.
///
/// A `sha1=` value (GitHub's use of the same header name) is refused with
/// [`SignatureError::Malformed`]: SHA-1 signatures are not accepted.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    if let Some(value) = header
        && value
            .trim_start()
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("sha1="))
    {
        return Err(SignatureError::Malformed(
            "X-Hub-Signature is a SHA-1 signature (sha1=…); slipway accepts only sha256=<64 hex digits>",
        ));
    }
    signature::verify(secret, header, body)
}

pub use super::PayloadError;

/// Turns a Bitbucket Cloud webhook delivery into [`HostEvent`]s.
///
/// `event_key` is the `X-Event-Key` header and `body` the verified raw body.
///
/// - `repo:push` gives one [`HostEvent::Push`] per entry of `push.changes`, in Bitbucket's
///   order (branches and tags alike; none for an empty `changes`). Bitbucket does not say how
///   many commits a push carried when it truncates the list, so `commit_count` is the length
///   of `commits` as sent.
/// - `repo:commit_status_created` and `repo:commit_status_updated` give one
///   [`HostEvent::Build`] whose `check` is the status's `key`.
/// - Anything else gives one [`HostEvent::Ignored`] (its body is not read).
pub fn parse(event_key: Option<&str>, body: &[u8]) -> Result<Vec<HostEvent>, PayloadError> {
    match event_key {
        Some("repo:push") => {
            let root = Fields::new(body)?;
            parse_push(&root).map(|pushes| pushes.into_iter().map(|push| HostEvent::Push(Box::new(push))).collect())
        }
        Some("repo:commit_status_created" | "repo:commit_status_updated") => {
            let root = Fields::new(body)?;
            Ok(vec![HostEvent::Build(Box::new(parse_status(&root)?))])
        }
        other => Ok(vec![HostEvent::Ignored {
            event: other.unwrap_or("(no X-Event-Key)").to_owned(),
        }]),
    }
}

fn repo_of(root: &Fields) -> Result<RepoName, PayloadError> {
    let name: String = root.required("repository.full_name")?;
    RepoName::parse(&name).map_err(|source| PayloadError::InvalidId {
        field: "repository.full_name",
        source,
    })
}

/// One entry of `push.changes`.
#[derive(Deserialize)]
struct RawChange {
    new: Option<RawRef>,
    old: Option<RawRef>,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    closed: bool,
    #[serde(default)]
    forced: bool,
    #[serde(default)]
    commits: Vec<RawListedCommit>,
    /// Bitbucket listed only the newest of the change's commits.
    #[serde(default)]
    truncated: bool,
    /// `links.html.href`: the page comparing the branch before and after.
    links: Option<RawLinks>,
}

/// One entry of a change's `commits` (newest first).
#[derive(Deserialize)]
struct RawListedCommit {
    hash: String,
    message: Option<String>,
    date: Option<String>,
    author: Option<RawAuthor>,
}

/// `new` or `old` in a change: a branch or tag and the commit it points to.
#[derive(Deserialize)]
struct RawRef {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    target: Option<RawTarget>,
}

#[derive(Deserialize)]
struct RawTarget {
    hash: String,
    message: Option<String>,
    author: Option<RawAuthor>,
    links: Option<RawLinks>,
}

/// A commit's author: the git identity as `Name <email>`, and the Bitbucket account when
/// Bitbucket could match it.
#[derive(Deserialize)]
struct RawAuthor {
    raw: Option<String>,
    user: Option<RawUser>,
}

#[derive(Deserialize)]
struct RawUser {
    nickname: Option<String>,
    display_name: Option<String>,
}

#[derive(Deserialize)]
struct RawLinks {
    html: Option<RawHref>,
}

#[derive(Deserialize)]
struct RawHref {
    href: String,
}

fn parse_push(root: &Fields) -> Result<Vec<Push>, PayloadError> {
    let repo = repo_of(root)?;
    let changes: Vec<RawChange> = root.required("push.changes")?;
    let actor: Option<RawUser> = root.optional("actor")?;
    let pushed_by = actor
        .and_then(|a| a.nickname.filter(|n| !n.is_empty()).or(a.display_name))
        .filter(|n| !n.is_empty());

    changes
        .into_iter()
        .map(|change| {
            let RawChange {
                new,
                old,
                created,
                closed,
                forced,
                commits,
                truncated,
                links,
            } = change;
            let deleted = closed || new.is_none();
            let created = created || (old.is_none() && new.is_some());
            let Some(reference) = new.as_ref().or(old.as_ref()) else {
                return Err(PayloadError::Field {
                    field: "push.changes.new",
                    reason: "both `new` and `old` are null".to_owned(),
                });
            };
            let git_ref = ref_of(reference)?;
            let before = old
                .as_ref()
                .and_then(|o| o.target.as_ref())
                .map(|t| {
                    CommitSha::parse(&t.hash).map_err(|source| PayloadError::InvalidId {
                        field: "push.changes.old.target.hash",
                        source,
                    })
                })
                .transpose()?;
            let commit_count = commits.len();
            // Bitbucket lists them newest first; a run keeps them oldest first.
            let listed = commits
                .into_iter()
                .rev()
                .map(|c| {
                    Ok(PushedCommit {
                        sha: CommitSha::parse(&c.hash).map_err(|source| PayloadError::InvalidId {
                            field: "push.changes.commits.hash",
                            source,
                        })?,
                        author: c.author.map(author_of).unwrap_or_default(),
                        at: super::payload::commit_time("push.changes.commits.date", c.date.as_deref()),
                        message: c.message.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, PayloadError>>()?;
            let target = new.and_then(|n| n.target);
            let after = target
                .as_ref()
                .map(|t| {
                    CommitSha::parse(&t.hash).map_err(|source| PayloadError::InvalidId {
                        field: "push.changes.new.target.hash",
                        source,
                    })
                })
                .transpose()?;
            let head_commit = match target {
                None => None,
                Some(target) => Some(head_commit(target, pushed_by.clone())?),
            };
            Ok(Push {
                repo: repo.clone(),
                git_ref,
                after,
                created,
                deleted,
                forced,
                commit_count,
                before,
                commits: listed,
                truncated,
                compare_url: super::payload::link(
                    "push.changes.links.html.href",
                    links.and_then(|l| l.html).map(|h| h.href),
                ),
                head_commit,
            })
        })
        .collect()
}

fn ref_of(reference: &RawRef) -> Result<GitRef, PayloadError> {
    match reference.kind.as_str() {
        "branch" => BranchName::parse(&reference.name)
            .map(GitRef::Branch)
            .map_err(|source| PayloadError::InvalidId {
                field: "push.changes.new.name",
                source,
            }),
        "tag" => Ok(GitRef::Tag(reference.name.clone())),
        _ => Ok(GitRef::Other(reference.name.clone())),
    }
}

fn head_commit(target: RawTarget, pushed_by: Option<String>) -> Result<CommitInfo, PayloadError> {
    let (name, email) = target
        .author
        .as_ref()
        .and_then(|a| a.raw.as_deref())
        .map(split_raw_author)
        .unwrap_or_default();
    let user = target.author.and_then(|a| a.user);
    let author_login = user.as_ref().and_then(|u| u.nickname.clone()).filter(|n| !n.is_empty());
    let author_name = if name.is_empty() {
        user.and_then(|u| u.display_name).unwrap_or_default()
    } else {
        name
    };
    let pushed_by = pushed_by.ok_or(PayloadError::Field {
        field: "actor.nickname",
        reason: "missing (and no `actor.display_name` either)".to_owned(),
    })?;
    Ok(CommitInfo {
        message: target.message.unwrap_or_default(),
        author_login,
        author_name,
        author_email: email,
        url: super::payload::link("links.html.href", target.links.and_then(|l| l.html).map(|h| h.href)),
        pushed_by,
    })
}

/// A listed commit's author: the Bitbucket account's nickname when Bitbucket matched one,
/// else the git name.
fn author_of(author: RawAuthor) -> String {
    let login = author
        .user
        .and_then(|u| u.nickname.or(u.display_name))
        .filter(|n| !n.is_empty());
    login.unwrap_or_else(|| author.raw.as_deref().map(split_raw_author).unwrap_or_default().0)
}

/// `Name <email>` → (`Name`, `Some(email)`); anything else is all name.
fn split_raw_author(raw: &str) -> (String, Option<String>) {
    let raw = raw.trim();
    if let Some(open) = raw.rfind('<')
        && raw.ends_with('>')
    {
        let name = raw[..open].trim().to_owned();
        let email = raw[open + 1..raw.len() - 1].trim();
        (name, (!email.is_empty()).then(|| email.to_owned()))
    } else {
        (raw.to_owned(), None)
    }
}

fn parse_status(root: &Fields) -> Result<BuildReport, PayloadError> {
    let repo = repo_of(root)?;
    let hash: String = root.required("commit_status.commit.hash")?;
    let sha = CommitSha::parse(&hash).map_err(|source| PayloadError::InvalidId {
        field: "commit_status.commit.hash",
        source,
    })?;
    let key: String = root.required("commit_status.key")?;
    let state: String = root.required("commit_status.state")?;
    let url: Option<String> = root.optional("commit_status.url")?;
    let refname: Option<String> = root.optional("commit_status.refname")?;
    let branch = refname
        .filter(|r| !r.is_empty())
        .map(|r| {
            BranchName::parse(&r).map_err(|source| PayloadError::InvalidId {
                field: "commit_status.refname",
                source,
            })
        })
        .transpose()?;
    Ok(BuildReport {
        repo,
        sha,
        branch,
        check: key,
        status: status_of(&state),
        url: super::payload::link("commit_status.url", url),
        coverage: None,
    })
}

/// A commit status's `state`: `None` while in progress. An unknown state (one Bitbucket may
/// add later) counts as not finished rather than refusing the delivery.
fn status_of(state: &str) -> Option<BuildStatus> {
    match state {
        "SUCCESSFUL" => Some(BuildStatus::Success),
        "FAILED" => Some(BuildStatus::Failure),
        "STOPPED" => Some(BuildStatus::Error),
        // INPROGRESS, …
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Payloads constructed from Bitbucket Cloud's documented schema (see events/README.md),
    /// with the `X-Event-Key` each is delivered with.
    const FIXTURES: &[(&str, &str, &str)] = &[
        (
            "push.json",
            "repo:push",
            include_str!("../../../events/bitbucket/push.json"),
        ),
        (
            "commit-status-updated.json",
            "repo:commit_status_updated",
            include_str!("../../../events/bitbucket/commit-status-updated.json"),
        ),
    ];

    const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    const OLD: &str = "1111111111111111111111111111111111111111";

    #[test]
    fn fixtures_match_their_snapshots() {
        for (file, event, body) in FIXTURES {
            let parsed = parse(Some(event), body.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
            let name = format!("bitbucket-{}", file.trim_end_matches(".json"));
            let description = format!("events/bitbucket/{file} as X-Event-Key: {event}");
            insta::with_settings!({ description => description, omit_expression => true }, {
                insta::assert_json_snapshot!(name, parsed);
            });
        }
    }

    #[test]
    fn every_fixture_file_is_snapshotted() {
        crate::providers::fixtures::assert_all_listed("bitbucket", FIXTURES.iter().map(|(file, _, _)| *file));
    }

    #[test]
    fn a_push_carries_its_commits_oldest_first_the_compare_page_and_bitbucket_s_truncation() {
        let [push] = pushes(json!([{
            "new": branch_ref("main", SHA), "old": branch_ref("main", OLD),
            "truncated": true,
            "links": { "html": { "href": format!("https://bitbucket.org/acme/shop/branches/compare/{SHA}..{OLD}") } },
            "commits": [
                { "hash": SHA, "message": "Fix checkout\n", "date": "2026-03-02T10:15:00+00:00",
                  "author": { "raw": "Alice Example <alice@example.com>", "user": { "nickname": "alice" } } },
                { "hash": "2222222222222222222222222222222222222222", "message": "ABC-7 Older",
                  "author": { "raw": "Bob <bob@example.com>" } }
            ]
        }]))
        .try_into()
        .unwrap();
        let carried = push.carried();
        let listed: Vec<_> = carried
            .commits
            .iter()
            .map(|c| (c.sha.as_str(), c.author.as_str(), c.at.is_some()))
            .collect();
        assert_eq!(
            listed,
            [
                ("2222222222222222222222222222222222222222", "Bob", false),
                (SHA, "alice", true)
            ]
        );
        assert!(carried.truncated);
        assert_eq!(
            carried.compare_url.map(|u| u.to_string()),
            Some(format!("https://bitbucket.org/acme/shop/branches/compare/{SHA}..{OLD}"))
        );
    }

    fn branch_ref(name: &str, hash: &str) -> Value {
        json!({
            "type": "branch", "name": name,
            "target": {
                "type": "commit", "hash": hash, "message": "Fix checkout\n",
                "author": { "raw": "Alice Example <alice@example.com>", "user": { "nickname": "alice", "display_name": "Alice Example" } },
                "links": { "html": { "href": format!("https://bitbucket.org/acme/shop/commits/{hash}") } }
            }
        })
    }

    fn push_body(changes: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "actor": { "nickname": "alice", "display_name": "Alice Example" },
            "repository": { "full_name": "acme/shop" },
            "push": { "changes": changes }
        }))
        .unwrap()
    }

    fn pushes(changes: Value) -> Vec<Push> {
        parse(Some("repo:push"), &push_body(changes))
            .unwrap()
            .into_iter()
            .map(|event| match event {
                HostEvent::Push(push) => *push,
                other => panic!("expected a push, got {other:?}"),
            })
            .collect()
    }

    fn change(new: Value, old: Value, created: bool, closed: bool, forced: bool) -> Value {
        json!({ "new": new, "old": old, "created": created, "closed": closed, "forced": forced, "commits": [{ "hash": SHA }] })
    }

    #[test]
    fn a_branch_update_carries_its_head_commit() {
        let [push] = pushes(json!([change(
            branch_ref("main", SHA),
            branch_ref("main", OLD),
            false,
            false,
            false
        )]))
        .try_into()
        .unwrap();
        assert_eq!(push.repo.as_str(), "acme/shop");
        assert_eq!(push.git_ref, GitRef::Branch(BranchName::parse("main").unwrap()));
        assert_eq!(push.after.as_ref().map(CommitSha::as_str), Some(SHA));
        assert!(!push.created && !push.deleted && !push.forced);
        assert_eq!(push.commit_count, 1);
        assert_eq!(
            push.head_commit,
            Some(CommitInfo {
                message: "Fix checkout\n".to_owned(),
                author_login: Some("alice".to_owned()),
                author_name: "Alice Example".to_owned(),
                author_email: Some("alice@example.com".to_owned()),
                url: Some(
                    crate::domain::WebUrl::parse(&format!("https://bitbucket.org/acme/shop/commits/{SHA}")).unwrap()
                ),
                pushed_by: "alice".to_owned(),
            })
        );
    }

    #[test]
    fn created_deleted_forced_and_tags() {
        let all = pushes(json!([
            change(branch_ref("feature/new", SHA), Value::Null, true, false, false),
            change(Value::Null, branch_ref("feature/old", OLD), false, true, false),
            change(branch_ref("main", SHA), branch_ref("main", OLD), false, false, true),
            change(
                json!({ "type": "tag", "name": "v1.0.0", "target": { "hash": SHA } }),
                Value::Null,
                true,
                false,
                false
            ),
        ]));
        assert_eq!(all.len(), 4, "several changes in one push give several pushes");

        assert_eq!(
            all[0].git_ref,
            GitRef::Branch(BranchName::parse("feature/new").unwrap())
        );
        assert!(all[0].created && !all[0].deleted);

        assert_eq!(
            all[1].git_ref,
            GitRef::Branch(BranchName::parse("feature/old").unwrap())
        );
        assert!(all[1].deleted && !all[1].created);
        assert_eq!(all[1].after, None);
        assert_eq!(all[1].head_commit, None);

        assert!(all[2].forced);

        assert_eq!(all[3].git_ref, GitRef::Tag("v1.0.0".to_owned()));
        assert!(all[3].created);
        let head = all[3].head_commit.clone().unwrap();
        assert_eq!((head.author_name.as_str(), head.author_login), ("", None));
    }

    #[test]
    fn an_empty_push_gives_nothing() {
        assert!(pushes(json!([])).is_empty());
    }

    fn status_body(state: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "repository": { "full_name": "acme/shop" },
            "commit_status": {
                "key": "ci-build", "state": state, "url": "https://ci.example.com/42",
                "commit": { "hash": SHA }
            }
        }))
        .unwrap()
    }

    #[test]
    fn commit_statuses_map_to_build_statuses() {
        let cases = [
            ("SUCCESSFUL", Some(BuildStatus::Success)),
            ("FAILED", Some(BuildStatus::Failure)),
            ("STOPPED", Some(BuildStatus::Error)),
            ("INPROGRESS", None),
        ];
        for event in ["repo:commit_status_created", "repo:commit_status_updated"] {
            for (state, expected) in cases {
                let [HostEvent::Build(report)] =
                    <[HostEvent; 1]>::try_from(parse(Some(event), &status_body(state)).unwrap()).unwrap()
                else {
                    panic!("expected one build");
                };
                assert_eq!(report.status, expected, "{state}");
                assert_eq!(report.check, "ci-build");
                assert_eq!(report.branch, None);
                assert_eq!(report.url.as_deref(), Some("https://ci.example.com/42"));
            }
        }
    }

    #[test]
    fn unknown_events_are_ignored_unread() {
        assert_eq!(
            parse(Some("pullrequest:created"), b"not json").unwrap(),
            vec![HostEvent::Ignored {
                event: "pullrequest:created".to_owned()
            }]
        );
        assert_eq!(
            parse(None, b"{}").unwrap(),
            vec![HostEvent::Ignored {
                event: "(no X-Event-Key)".to_owned()
            }]
        );
    }

    #[test]
    fn malformed_payloads_name_the_problem() {
        let error = parse(Some("repo:push"), b"{\"push\": ").unwrap_err();
        assert!(matches!(error, PayloadError::Json { .. }), "{error:?}");
        assert!(error.to_string().contains("not a JSON object"), "{error}");

        let cases: [(&str, Value, &str); 6] = [
            (
                "repo:push",
                json!({ "repository": { "full_name": "acme/shop" } }),
                "push.changes",
            ),
            (
                "repo:push",
                json!({ "repository": { "full_name": "../x" }, "push": { "changes": [] } }),
                "repository.full_name",
            ),
            (
                "repo:push",
                json!({ "repository": { "full_name": "acme/shop" }, "push": { "changes": [{ "new": null, "old": null }] } }),
                "push.changes.new",
            ),
            (
                "repo:push",
                json!({ "repository": { "full_name": "acme/shop" }, "push": { "changes": [{ "new": { "type": "branch", "name": "a..b" } }] } }),
                "push.changes.new.name",
            ),
            (
                "repo:commit_status_updated",
                json!({ "repository": { "full_name": "acme/shop" }, "commit_status": { "key": "k", "state": "FAILED", "commit": { "hash": "xyz" } } }),
                "commit_status.commit.hash",
            ),
            (
                "repo:commit_status_updated",
                json!({ "repository": { "full_name": "acme/shop" }, "commit_status": { "state": "FAILED", "commit": { "hash": SHA } } }),
                "commit_status.key",
            ),
        ];
        for (event, payload, field) in cases {
            let error = parse(Some(event), &serde_json::to_vec(&payload).unwrap())
                .unwrap_err()
                .to_string();
            assert!(error.contains(field), "{field}: {error}");
        }
    }

    const SECRET: &[u8] = b"bitbucket-secret";
    const BODY: &[u8] = b"{\"push\":{}}";

    #[test]
    fn a_sha256_signature_verifies_and_a_flipped_byte_does_not() {
        let header = signature::sign(SECRET, BODY);
        assert_eq!(verify(SECRET, Some(&header), BODY), Ok(()));
        let mut body = BODY.to_vec();
        body[0] ^= 1;
        assert_eq!(verify(SECRET, Some(&header), &body), Err(SignatureError::Mismatch));
        assert_eq!(verify(SECRET, None, BODY), Err(SignatureError::Missing));
    }

    #[test]
    fn sha1_signatures_are_refused_clearly() {
        // A well-formed SHA-1 signature, as GitHub sends under the same header name.
        for header in [
            "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
            "SHA1=7d38cdd689735b008b3c702edd92eea23791c5f6",
        ] {
            let error = verify(SECRET, Some(header), BODY).unwrap_err();
            assert!(matches!(error, SignatureError::Malformed(_)), "{error:?}");
            assert!(error.to_string().contains("SHA-1"), "{error}");
        }
    }
}

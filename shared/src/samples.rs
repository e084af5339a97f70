//! Sample payloads for the demo and tests: GitHub's real `push` example (from
//! `events/github/push.json`), re-aimed at another repository, branch and commit.

use serde_json::{Value, json};

/// The author of a sample commit.
#[derive(Debug, Clone, Copy)]
pub struct SampleAuthor<'a> {
    pub login: &'a str,
    pub name: &'a str,
    pub email: &'a str,
}

/// GitHub's example push payload, changed to a push of `sha` to `repo`'s `branch` with the
/// given head commit message and author, who also pushed it.
pub fn github_push(
    repo: &str,
    branch: &str,
    sha: &str,
    message: &str,
    author: SampleAuthor<'_>,
    committed_at: jiff::Timestamp,
) -> String {
    let mut payload: Value =
        serde_json::from_str(include_str!("../../events/github/push.json")).expect("the bundled fixture is JSON");
    payload["ref"] = json!(format!("refs/heads/{branch}"));
    payload["after"] = json!(sha);
    payload["repository"]["full_name"] = json!(repo);
    payload["head_commit"]["id"] = json!(sha);
    payload["head_commit"]["url"] = json!(format!("https://github.com/{repo}/commit/{sha}"));
    payload["head_commit"]["message"] = json!(message);
    payload["head_commit"]["author"] = json!({"name": author.name, "email": author.email, "username": author.login});
    payload["pusher"] = json!({"name": author.login, "email": author.email});
    // The push carries that one commit.
    payload["head_commit"]["timestamp"] = json!(committed_at.to_string());
    let commit = payload["head_commit"].clone();
    payload["commits"] = json!([commit]);
    // A new branch (the fixture's `before` is zeros): GitHub's compare link is the commit's.
    payload["compare"] = json!(format!("https://github.com/{repo}/commit/{sha}"));
    payload.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{GitRef, HostEvent, github};

    #[test]
    fn a_sample_push_parses_as_the_push_it_describes() {
        let author = SampleAuthor {
            login: "dev",
            name: "Dee Veloper",
            email: "dev@example.com",
        };
        let sha = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
        let at: jiff::Timestamp = "2026-11-26T09:00:00Z".parse().unwrap();
        let body = github_push("acme/shop", "main", sha, "Add the basket", author, at);
        let HostEvent::Push(push) = github::parse("push", body.as_bytes()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(push.repo.as_str(), "acme/shop");
        assert_eq!(push.git_ref, GitRef::Branch("main".parse().unwrap()));
        assert_eq!(push.after.as_ref().unwrap().as_str(), sha);
        let carried = push.carried();
        assert_eq!(carried.commits.len(), 1, "the push carries its one commit");
        assert_eq!(
            (carried.commits[0].sha.as_str(), carried.commits[0].at),
            (sha, Some(at))
        );
        let commit = push.head_commit.unwrap();
        assert_eq!(
            (commit.message.as_str(), commit.author_login.as_deref()),
            ("Add the basket", Some("dev"))
        );
    }
}

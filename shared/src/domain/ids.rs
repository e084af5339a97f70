//! Identifiers that validate on parse.
//!
//! Every value that can end up in a storage key, a queue message or a URL is one of these
//! types, so nothing unvalidated reaches the core. Each has a `parse` constructor and
//! (de)serialises through it, so a tampered state file or queue body cannot smuggle in an
//! invalid id either.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused. The message names the kind of id and the rule it broke,
/// and repeats the value only [clipped](super::echo::clip).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn err(kind: &'static str, value: &str, rule: &'static str) -> IdError {
    let value = super::echo::clip(value).to_string();
    IdError { kind, value, rule }
}

/// `[A-Za-z0-9._-]`, not starting with `.` — the characters GitHub, GitLab and Bitbucket allow
/// in owner and repository names, and safe in keys and URLs.
fn is_name_segment(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A repository as `owner/name` (GitLab subgroups as `group/sub/name`).
    RepoName
);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let segments: Vec<&str> = s.split('/').collect();
        if segments.len() < 2 || segments.len() > 8 {
            return Err(err("repository", s, "expected owner/name"));
        }
        if !segments.iter().all(|seg| is_name_segment(seg, 100)) {
            return Err(err(
                "repository",
                s,
                "each part must be 1-100 of A-Z a-z 0-9 . _ - and not start with a dot",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The repository as one key-safe segment: `acme/shop` → `acme~shop`.
    pub fn key_segment(&self) -> String {
        self.0.replace('/', "~")
    }
}

string_id!(
    /// A full 40-hex git commit id, stored lower-case.
    CommitSha
);

impl CommitSha {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("commit SHA", s, "expected 40 hexadecimal characters"));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The 12-character abbreviation shown to people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// The all-zero SHA git hosts send as `after` when a branch is deleted.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

string_id!(
    /// A branch name (without `refs/heads/`), following git's ref-name rules.
    BranchName
);

impl BranchName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = s.is_empty()
            || s.len() > 255
            || s.starts_with('/')
            || s.ends_with('/')
            || s.ends_with(".lock")
            || s.starts_with('-')
            || s.contains("..")
            || s.contains("//")
            || s.contains("@{")
            || s.bytes()
                .any(|b| b.is_ascii_control() || matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\'));
        if bad {
            return Err(err("branch", s, "not a valid git branch name"));
        }
        Ok(Self(s.to_owned()))
    }
}

/// `[a-z0-9-]`, starting with a letter or digit.
fn is_slug(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

string_id!(
    /// An environment name such as `staging` or `production`: 1-32 of `a-z 0-9 -`.
    EnvName
);

impl EnvName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !is_slug(s, 32) {
            return Err(err(
                "environment",
                s,
                "expected 1-32 of a-z 0-9 - (not starting with -)",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// A pipeline's name from `slipway.toml`: 1-40 of `a-z 0-9 -`.
    PipelineName
);

impl PipelineName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !is_slug(s, 40) {
            return Err(err(
                "pipeline name",
                s,
                "expected 1-40 of a-z 0-9 - (not starting with -)",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// One run of one pipeline for one commit: `<pipeline>-<40-hex sha>`.
    ///
    /// Derived, not random: the same commit pushed to the same pipeline always names the same
    /// run, which is what makes a redelivered push webhook open one run, not two.
    RunId
);

impl RunId {
    pub fn new(pipeline: &PipelineName, sha: &CommitSha) -> Self {
        Self(format!("{pipeline}-{sha}"))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let Some((pipeline, sha)) = s.rsplit_once('-') else {
            return Err(err("run id", s, "expected <pipeline>-<40-hex commit SHA>"));
        };
        let pipeline =
            PipelineName::parse(pipeline).map_err(|_| err("run id", s, "expected <pipeline>-<40-hex commit SHA>"))?;
        let sha = CommitSha::parse(sha).map_err(|_| err("run id", s, "expected <pipeline>-<40-hex commit SHA>"))?;
        Ok(Self::new(&pipeline, &sha))
    }

    pub fn pipeline(&self) -> PipelineName {
        let (p, _) = self.0.rsplit_once('-').expect("validated on construction");
        PipelineName(p.to_owned())
    }

    pub fn sha(&self) -> CommitSha {
        let (_, s) = self.0.rsplit_once('-').expect("validated on construction");
        CommitSha(s.to_owned())
    }
}

string_id!(
    /// An approver's id from the configuration, matched against the commit author's login:
    /// 1-64 of `A-Z a-z 0-9 . _ -`.
    ApproverId
);

impl ApproverId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if !is_name_segment(s, 64) {
            return Err(err("approver id", s, "expected 1-64 of A-Z a-z 0-9 . _ -"));
        }
        Ok(Self(s.to_owned()))
    }
}

string_id!(
    /// A secret's name, shaped like an SSM Parameter Store path: `/slipway/github/webhook-secret`.
    ParamName
);

impl ParamName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() <= 1011
            && s.starts_with('/')
            && !s.ends_with('/')
            && s[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            });
        if !ok {
            return Err(err(
                "parameter name",
                s,
                "expected a path like /slipway/github/webhook-secret (segments of A-Z a-z 0-9 . _ -)",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn repo_names() {
        for ok in ["acme/shop", "a/b", "Octo-Cat/Hello_World.rs", "group/sub/project"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "acme",
            "acme/",
            "/shop",
            "acme/../etc",
            "acme/sh op",
            "acme/.git",
            "a/b?c",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RepoName::parse("acme/shop").unwrap().key_segment(), "acme~shop");
    }

    #[test]
    fn commit_shas_are_forty_hex_and_lowercased() {
        assert_eq!(CommitSha::parse(&SHA.to_uppercase()).unwrap().as_str(), SHA);
        assert_eq!(CommitSha::parse(SHA).unwrap().short(), "0123456789ab");
        for bad in ["", "abc", &SHA[..39], &format!("{SHA}0"), &SHA.replace('a', "g")] {
            assert!(CommitSha::parse(bad).is_err(), "{bad}");
        }
        assert!(CommitSha::parse(&"0".repeat(40)).unwrap().is_zero());
    }

    #[test]
    fn branch_names_follow_git_rules() {
        for ok in ["main", "release/1.2", "feature-x"] {
            assert!(BranchName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", "a b", "x.lock", "-x", "a:b", "a\\b", "/a", "a/"] {
            assert!(BranchName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_and_pipeline_names_are_slugs() {
        assert!(EnvName::parse("production").is_ok());
        assert!(EnvName::parse("eu-west-1").is_ok());
        for bad in ["", "Prod", "-x", "a_b", &"x".repeat(33)] {
            assert!(EnvName::parse(bad).is_err(), "{bad}");
        }
        assert!(PipelineName::parse("shop").is_ok());
        assert!(PipelineName::parse("shop/x").is_err());
    }

    #[test]
    fn run_ids_round_trip_and_carry_pipeline_and_sha() {
        let id = RunId::new(
            &PipelineName::parse("web-shop").unwrap(),
            &CommitSha::parse(SHA).unwrap(),
        );
        assert_eq!(id.as_str(), format!("web-shop-{SHA}"));
        let parsed = RunId::parse(id.as_str()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.pipeline().as_str(), "web-shop");
        assert_eq!(parsed.sha().as_str(), SHA);
        for bad in ["", "shop", "shop-123", &format!("Shop-{SHA}"), &format!("../x-{SHA}")] {
            assert!(RunId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn param_names_are_ssm_paths() {
        assert!(ParamName::parse("/slipway/github/webhook-secret").is_ok());
        for bad in ["", "slipway/x", "/slipway/", "//x", "/a b", "/a/../b?"] {
            assert!(ParamName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserialising_validates() {
        let r: Result<RepoName, _> = serde_json::from_str("\"../../etc\"");
        assert!(r.is_err());
        let r: RepoName = serde_json::from_str("\"acme/shop\"").unwrap();
        assert_eq!(r.as_str(), "acme/shop");
    }
}

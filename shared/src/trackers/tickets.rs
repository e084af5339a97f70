//! Ticket keys in commit messages: Jira's `ABC-123` and GitHub/GitLab's `#123` and
//! `owner/repo#123`. Pure.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// A ticket a commit message mentions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ticket {
    /// A Jira ticket: `SHOP-123`.
    Jira { key: String },
    /// An issue of a GitHub repository or GitLab project (`group/sub/project` on GitLab).
    Issue { project: String, number: u64 },
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ticket::Jira { key } => f.write_str(key),
            Ticket::Issue { project, number } => write!(f, "{project}#{number}"),
        }
    }
}

impl Ticket {
    /// The ticket as a piece of a store key: `SHOP-123`, or `owner/repo/123`. Only
    /// `A-Z a-z 0-9 - _ . /` (what the patterns match), never `..`.
    pub fn slug(&self) -> String {
        match self {
            Ticket::Jira { key } => key.clone(),
            Ticket::Issue { project, number } => format!("{project}/{number}"),
        }
    }
}

static JIRA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([A-Z][A-Z0-9]+)-([1-9][0-9]{0,9})\b").expect("a valid pattern"));

/// `#123` or `path/to/project#123`, not inside a word, a URL's fragment or an HTML entity.
static ISSUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^\w&#/.-])((?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)+[A-Za-z0-9_][A-Za-z0-9_.-]*)?#([1-9][0-9]{0,9})\b")
        .expect("a valid pattern")
});

/// The Jira tickets of the projects `keys` that `messages` mention, each once, in order of
/// first mention.
pub fn jira(messages: &[&str], keys: &[String]) -> Vec<Ticket> {
    let mut found = Vec::new();
    for message in messages {
        for m in JIRA.captures_iter(message) {
            if keys.iter().any(|k| k == &m[1]) {
                push_new(&mut found, Ticket::Jira { key: m[0].to_owned() });
            }
        }
    }
    found
}

/// The issues `messages` mention — `#123` as an issue of `own` (the pipeline's repository),
/// `owner/repo#123` as one of `owner/repo` — each once, in order of first mention. At most
/// `max_depth` path segments (2 for GitHub's `owner/repo`; GitLab's groups nest).
pub fn issues(messages: &[&str], own: &str, max_depth: usize) -> Vec<Ticket> {
    let mut found = Vec::new();
    for message in messages {
        for m in ISSUE.captures_iter(message) {
            let project = m.get(1).map_or(own, |p| p.as_str());
            if project.contains("..") || project.split('/').count() > max_depth {
                continue;
            }
            let Ok(number) = m[2].parse::<u64>() else { continue };
            push_new(
                &mut found,
                Ticket::Issue {
                    project: project.to_owned(),
                    number,
                },
            );
        }
    }
    found
}

fn push_new(found: &mut Vec<Ticket>, ticket: Ticket) {
    let same = |t: &Ticket| match (t, &ticket) {
        (Ticket::Issue { project: a, number: x }, Ticket::Issue { project: b, number: y }) => {
            x == y && a.eq_ignore_ascii_case(b)
        }
        (a, b) => a == b,
    };
    if !found.iter().any(same) {
        found.push(ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(found: &[Ticket]) -> Vec<String> {
        found.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn jira_keys_of_the_configured_projects() {
        let projects = ["SHOP".to_owned(), "OPS2".to_owned()];
        let cases: &[(&str, &[&str])] = &[
            ("SHOP-1 Add the basket", &["SHOP-1"]),
            ("Fix SHOP-12 and OPS2-7", &["SHOP-12", "OPS2-7"]),
            (
                "[SHOP-3] in brackets, (SHOP-4), SHOP-5: colon",
                &["SHOP-3", "SHOP-4", "SHOP-5"],
            ),
            ("OTHER-1 is not ours", &[]),
            ("shop-1 lower case is not a key", &[]),
            ("XSHOP-1 is another project", &[]),
            ("SHOP-1a is no key, SHOP-0 neither", &[]),
            ("SHOP-1 twice: SHOP-1", &["SHOP-1"]),
            ("Merge branch 'feature/SHOP-9-basket'", &["SHOP-9"]),
            ("No tickets at all", &[]),
        ];
        for (message, want) in cases {
            assert_eq!(keys(&jira(&[message], &projects)), *want, "{message:?}");
        }
    }

    #[test]
    fn jira_keys_across_messages_are_listed_once_in_order() {
        let projects = ["SHOP".to_owned()];
        let found = jira(&["SHOP-2 first", "SHOP-1 then\n\nRefs SHOP-2"], &projects);
        assert_eq!(keys(&found), ["SHOP-2", "SHOP-1"]);
    }

    #[test]
    fn issue_references() {
        let cases: &[(&str, usize, &[&str])] = &[
            ("Fix #12", 2, &["acme/shop#12"]),
            ("#7 at the start", 2, &["acme/shop#7"]),
            ("Fixes acme/api#3 and #4", 2, &["acme/api#3", "acme/shop#4"]),
            ("(#5), [#6]: punctuation", 2, &["acme/shop#5", "acme/shop#6"]),
            ("group/sub/project#8 is nested", 3, &["group/sub/project#8"]),
            ("group/sub/project#8 is too deep for GitHub", 2, &[]),
            ("an &#123; entity, page#9, a.b#10", 2, &[]),
            ("https://example.com/docs/x#11 is a link", 2, &[]),
            ("#0 and #12abc are not issues", 2, &[]),
            ("Acme/Shop#12 and acme/shop#12 are one", 2, &["Acme/Shop#12"]),
            ("../etc#1 climbs", 2, &[]),
        ];
        for (message, depth, want) in cases {
            assert_eq!(keys(&issues(&[message], "acme/shop", *depth)), *want, "{message:?}");
        }
    }

    #[test]
    fn slugs_are_key_safe() {
        let jira = Ticket::Jira { key: "SHOP-1".into() };
        let issue = Ticket::Issue {
            project: "acme/shop".into(),
            number: 12,
        };
        assert_eq!(
            (jira.slug(), issue.slug()),
            ("SHOP-1".to_owned(), "acme/shop/12".to_owned())
        );
    }
}

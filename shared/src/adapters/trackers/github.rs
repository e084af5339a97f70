//! GitHub: a comment on each issue, `POST {url}/repos/{owner}/{repo}/issues/{n}/comments`
//! with `{"body": "<text>"}`, `Authorization: Bearer <token>` and
//! `Accept: application/vnd.github+json` (a pull request's number works too: GitHub's pull
//! requests are issues).

use async_trait::async_trait;
use serde_json::json;

use super::Http;
use crate::ports::NotifyError;
use crate::trackers::{Ticket, Tracker, Work};

#[derive(Debug)]
pub struct Github {
    http: Http,
}

impl Github {
    pub fn new(http: Http) -> Self {
        Self { http }
    }
}

/// The path of an issue's comments.
pub fn comments_path(project: &str, number: u64) -> String {
    format!("/repos/{project}/issues/{number}/comments")
}

#[async_trait]
impl Tracker for Github {
    fn describe(&self) -> String {
        self.http.describe()
    }

    async fn deliver(&self, work: Work<'_>) -> Result<(), NotifyError> {
        let Work::Comment {
            ticket: Ticket::Issue { project, number },
            comment,
        } = work
        else {
            return Ok(());
        };
        let url = self.http.url(&comments_path(project, *number))?;
        let auth = self.http.bearer().await?;
        self.http
            .post_json(
                url,
                auth,
                &[
                    ("accept", "application/vnd.github+json"),
                    ("x-github-api-version", "2022-11-28"),
                ],
                &json!({"body": comment.text()}),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;

    use super::super::fake::{self, TOKEN, everything_said};
    use super::*;
    use crate::config::TrackerConfig;
    use crate::domain::ParamName;
    use crate::trackers::Comment;

    fn github(url: url::Url) -> Arc<dyn Tracker> {
        let config = TrackerConfig::Github {
            name: None,
            url,
            token: ParamName::parse("/slipway/tracker/token").unwrap(),
        };
        super::super::tracker(&config, Arc::new(fake::secrets()))
    }

    #[tokio::test]
    async fn posts_a_comment_on_the_issue() {
        let (url, fake) = fake::serve("").await;
        fake.answer(StatusCode::CREATED, r#"{"id": 1}"#);
        let ticket = Ticket::Issue {
            project: "acme/shop".into(),
            number: 12,
        };
        let comment = Comment {
            paragraphs: vec!["Shipped.".into(), "Run: https://x".into()],
        };
        github(url)
            .deliver(Work::Comment {
                ticket: &ticket,
                comment: &comment,
            })
            .await
            .unwrap();
        let r = &fake.received()[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/repos/acme/shop/issues/12/comments")
        );
        assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}").as_str());
        assert_eq!(r.headers["accept"], "application/vnd.github+json");
        assert_eq!(r.headers["user-agent"], "slipway");
        assert_eq!(r.json(), json!({"body": "Shipped.\n\nRun: https://x"}));
    }

    #[tokio::test]
    async fn jira_tickets_and_transitions_are_not_its_work() {
        let (url, fake) = fake::serve("").await;
        let jira = Ticket::Jira { key: "SHOP-1".into() };
        let comment = Comment { paragraphs: vec![] };
        let tracker = github(url);
        tracker
            .deliver(Work::Comment {
                ticket: &jira,
                comment: &comment,
            })
            .await
            .unwrap();
        tracker
            .deliver(Work::Transition {
                ticket: &jira,
                name: "Done",
            })
            .await
            .unwrap();
        assert!(fake.received().is_empty());
    }

    #[tokio::test]
    async fn a_missing_token_is_permanent_and_nothing_is_sent() {
        let (url, fake) = fake::serve("").await;
        let config = TrackerConfig::Github {
            name: None,
            url,
            token: ParamName::parse("/slipway/other/token").unwrap(),
        };
        let ticket = Ticket::Issue {
            project: "acme/shop".into(),
            number: 1,
        };
        let err = super::super::tracker(&config, Arc::new(fake::secrets()))
            .deliver(Work::Comment {
                ticket: &ticket,
                comment: &Comment { paragraphs: vec![] },
            })
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Permanent { .. }), "{err:?}");
        assert!(!everything_said(&err).contains(TOKEN));
        assert!(fake.received().is_empty());
    }
}

//! Jira: a comment on each ticket, then (if configured) a transition by name.
//!
//! - Cloud: `POST {url}/rest/api/3/issue/{key}/comment` with an Atlassian Document Format
//!   body (`{"body": {"type": "doc", "version": 1, "content": [paragraphs]}}`) and
//!   `Authorization: Basic base64(email:api token)`.
//! - Server / Data Center: `POST {url}/rest/api/2/issue/{key}/comment` with
//!   `{"body": "<text>"}` and `Authorization: Bearer <personal access token>`.
//!
//! A transition reads `GET …/issue/{key}/transitions` and posts
//! `{"transition": {"id": "<id>"}}` to the same path for the one whose name matches
//! (ignoring case); when none does (the ticket is already there, or the workflow does not
//! allow it from its status) nothing is done.

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use super::Http;
use crate::config::JiraApi;
use crate::ports::NotifyError;
use crate::trackers::{Comment, Ticket, Tracker, Work};

#[derive(Debug)]
pub struct Jira {
    http: Http,
    api: JiraApi,
    email: Option<String>,
}

impl Jira {
    pub fn new(http: Http, api: JiraApi, email: Option<String>) -> Self {
        Self { http, api, email }
    }

    fn version(&self) -> u8 {
        match self.api {
            JiraApi::Cloud => 3,
            JiraApi::Server => 2,
        }
    }

    /// `/rest/api/{2|3}/issue/{key}/{what}`.
    fn path(&self, key: &str, what: &str) -> String {
        format!("/rest/api/{}/issue/{key}/{what}", self.version())
    }

    async fn auth(&self) -> Result<(HeaderName, HeaderValue), NotifyError> {
        match self.api {
            JiraApi::Server => self.http.bearer().await,
            JiraApi::Cloud => {
                let token = self.http.token().await?;
                let email = self.email.as_deref().unwrap_or_default();
                let pair = format!("{email}:{}", token.expose_secret());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                Ok((AUTHORIZATION, self.http.credential(&format!("Basic {encoded}"))?))
            }
        }
    }

    async fn transition(&self, key: &str, name: &str) -> Result<(), NotifyError> {
        let url = self.http.url(&self.path(key, "transitions"))?;
        let auth = self.auth().await?;
        let listed = self
            .http
            .send(
                self.http
                    .request(reqwest::Method::GET, url.clone())
                    .header(auth.0.clone(), auth.1.clone())
                    .header(ACCEPT, HeaderValue::from_static("application/json")),
            )
            .await?;
        let listed: Value = listed.json().await.map_err(|e| self.http.answer_error(e))?;
        let id = listed["transitions"].as_array().and_then(|all| {
            all.iter()
                .find(|t| t["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                .and_then(|t| t["id"].as_str())
        });
        let Some(id) = id else {
            tracing::info!(
                ticket = key,
                transition = name,
                "the transition is not available from the ticket's status; leaving it"
            );
            return Ok(());
        };
        self.http
            .post_json(url, auth, &[], &json!({"transition": {"id": id}}))
            .await?;
        Ok(())
    }
}

/// The request body of a comment: ADF for Cloud (REST v3), plain text for Server (REST v2).
pub fn comment_body(api: JiraApi, comment: &Comment) -> Value {
    match api {
        JiraApi::Server => json!({"body": comment.text()}),
        JiraApi::Cloud => {
            let content: Vec<Value> = comment
                .paragraphs
                .iter()
                .map(|p| json!({"type": "paragraph", "content": [{"type": "text", "text": p}]}))
                .collect();
            json!({"body": {"type": "doc", "version": 1, "content": content}})
        }
    }
}

#[async_trait]
impl Tracker for Jira {
    fn describe(&self) -> String {
        self.http.describe()
    }

    async fn deliver(&self, work: Work<'_>) -> Result<(), NotifyError> {
        match work {
            Work::Comment {
                ticket: Ticket::Jira { key },
                comment,
            } => {
                let url = self.http.url(&self.path(key, "comment"))?;
                let auth = self.auth().await?;
                self.http
                    .post_json(url, auth, &[], &comment_body(self.api, comment))
                    .await?;
                Ok(())
            }
            Work::Transition {
                ticket: Ticket::Jira { key },
                name,
            } => self.transition(key, name).await,
            // Not a Jira ticket, or not Jira's kind of work.
            Work::Comment { .. } | Work::Transition { .. } | Work::Announce(_) => Ok(()),
        }
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

    fn config(url: url::Url, api: JiraApi) -> TrackerConfig {
        TrackerConfig::Jira {
            name: None,
            url,
            keys: vec!["SHOP".into()],
            api,
            email: (api == JiraApi::Cloud).then(|| "bot@acme.com".to_owned()),
            token: ParamName::parse("/slipway/tracker/token").unwrap(),
            transition: Some("Done".into()),
        }
    }

    fn jira(url: url::Url, api: JiraApi) -> Arc<dyn Tracker> {
        super::super::tracker(&config(url, api), Arc::new(fake::secrets()))
    }

    fn comment() -> Comment {
        Comment {
            paragraphs: vec!["Shipped to production.".into(), "Run: https://x/runs/1".into()],
        }
    }

    #[test]
    fn cloud_bodies_are_adf_and_server_bodies_text() {
        assert_eq!(
            comment_body(JiraApi::Cloud, &comment()),
            json!({"body": {"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": "Shipped to production."}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "Run: https://x/runs/1"}]},
            ]}})
        );
        assert_eq!(
            comment_body(JiraApi::Server, &comment()),
            json!({"body": "Shipped to production.\n\nRun: https://x/runs/1"})
        );
    }

    #[tokio::test]
    async fn cloud_posts_adf_to_rest_v3_with_basic_auth() {
        let (url, fake) = fake::serve("/jira").await;
        let ticket = Ticket::Jira { key: "SHOP-1".into() };
        let comment = comment();
        jira(url, JiraApi::Cloud)
            .deliver(Work::Comment {
                ticket: &ticket,
                comment: &comment,
            })
            .await
            .unwrap();
        let received = fake.received();
        assert_eq!(received.len(), 1);
        let r = &received[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/jira/rest/api/3/issue/SHOP-1/comment")
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot@acme.com:{TOKEN}"));
        assert_eq!(r.headers["authorization"], format!("Basic {basic}").as_str());
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.json(), comment_body(JiraApi::Cloud, &comment));
        assert_eq!(r.json()["body"]["type"], "doc");
    }

    #[tokio::test]
    async fn server_posts_text_to_rest_v2_with_a_bearer_token() {
        let (url, fake) = fake::serve("").await;
        let ticket = Ticket::Jira { key: "SHOP-7".into() };
        jira(url, JiraApi::Server)
            .deliver(Work::Comment {
                ticket: &ticket,
                comment: &comment(),
            })
            .await
            .unwrap();
        let r = &fake.received()[0];
        assert_eq!(r.path, "/rest/api/2/issue/SHOP-7/comment");
        assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}").as_str());
        assert_eq!(
            r.json(),
            json!({"body": "Shipped to production.\n\nRun: https://x/runs/1"})
        );
    }

    #[tokio::test]
    async fn a_transition_is_found_by_name_and_posted_by_id() {
        let (url, fake) = fake::serve("").await;
        fake.answer(
            StatusCode::OK,
            r#"{"transitions": [{"id": "21", "name": "In Progress"}, {"id": "31", "name": "Done"}]}"#,
        );
        fake.answer(StatusCode::NO_CONTENT, "");
        let ticket = Ticket::Jira { key: "SHOP-1".into() };
        let tracker = jira(url, JiraApi::Cloud);
        tracker
            .deliver(Work::Transition {
                ticket: &ticket,
                name: "done",
            })
            .await
            .unwrap();
        let received = fake.received();
        let seen: Vec<_> = received.iter().map(|r| (r.method.as_str(), r.path.as_str())).collect();
        assert_eq!(
            seen,
            [
                ("GET", "/rest/api/3/issue/SHOP-1/transitions"),
                ("POST", "/rest/api/3/issue/SHOP-1/transitions")
            ]
        );
        assert_eq!(received[1].json(), json!({"transition": {"id": "31"}}));

        // Not available from the ticket's status: nothing posted, nothing failed.
        fake.answer(StatusCode::OK, r#"{"transitions": [{"id": "41", "name": "Reopen"}]}"#);
        tracker
            .deliver(Work::Transition {
                ticket: &ticket,
                name: "Done",
            })
            .await
            .unwrap();
        assert_eq!(fake.received().len(), 3, "one GET more, no POST");
    }

    #[tokio::test]
    async fn failures_say_whether_to_retry_and_never_the_token() {
        let ticket = Ticket::Jira { key: "SHOP-1".into() };
        for (status, transient) in [
            (StatusCode::INTERNAL_SERVER_ERROR, true),
            (StatusCode::TOO_MANY_REQUESTS, true),
            (StatusCode::NOT_FOUND, false),
            (StatusCode::UNAUTHORIZED, false),
        ] {
            let (url, fake) = fake::serve("").await;
            fake.answer(status, "no");
            let err = jira(url, JiraApi::Cloud)
                .deliver(Work::Comment {
                    ticket: &ticket,
                    comment: &comment(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                matches!(err, NotifyError::Transient { .. }),
                transient,
                "{status}: {err:?}"
            );
            let said = everything_said(&err);
            assert!(said.contains(&status.as_u16().to_string()), "{said}");
            assert!(!said.contains(TOKEN), "{said}");
        }
    }
}

//! GitLab: a note on each issue, `POST {url}/api/v4/projects/{path}/issues/{iid}/notes` with
//! `{"body": "<text>"}` and `PRIVATE-TOKEN: <token>`, the project's path URL-encoded
//! (`group/sub/project` → `group%2Fsub%2Fproject`).

use async_trait::async_trait;
use serde_json::json;

use super::Http;
use crate::ports::NotifyError;
use crate::trackers::{Ticket, Tracker, Work};

#[derive(Debug)]
pub struct Gitlab {
    http: Http,
}

impl Gitlab {
    pub fn new(http: Http) -> Self {
        Self { http }
    }
}

/// The path of an issue's notes.
pub fn notes_path(project: &str, iid: u64) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(project.as_bytes()).collect();
    format!("/api/v4/projects/{encoded}/issues/{iid}/notes")
}

#[async_trait]
impl Tracker for Gitlab {
    fn describe(&self) -> String {
        self.http.describe()
    }

    async fn deliver(&self, work: Work<'_>) -> Result<(), NotifyError> {
        use secrecy::ExposeSecret as _;
        let Work::Comment {
            ticket: Ticket::Issue { project, number },
            comment,
        } = work
        else {
            return Ok(());
        };
        let url = self.http.url(&notes_path(project, *number))?;
        let token = self.http.token().await?;
        let header = self.http.credential(token.expose_secret())?;
        let name = reqwest::header::HeaderName::from_static("private-token");
        self.http
            .post_json(url, (name, header), &[], &json!({"body": comment.text()}))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;

    use super::super::fake::{self, TOKEN};
    use super::*;
    use crate::config::TrackerConfig;
    use crate::domain::ParamName;
    use crate::trackers::Comment;

    #[test]
    fn project_paths_are_url_encoded() {
        assert_eq!(
            notes_path("acme/shop", 3),
            "/api/v4/projects/acme%2Fshop/issues/3/notes"
        );
        assert_eq!(
            notes_path("group/sub/my.project", 4),
            "/api/v4/projects/group%2Fsub%2Fmy.project/issues/4/notes"
        );
    }

    #[tokio::test]
    async fn posts_a_note_with_the_private_token() {
        let (url, fake) = fake::serve("/gitlab").await;
        fake.answer(StatusCode::CREATED, r#"{"id": 1}"#);
        let config = TrackerConfig::Gitlab {
            name: None,
            url,
            token: ParamName::parse("/slipway/tracker/token").unwrap(),
        };
        let ticket = Ticket::Issue {
            project: "acme/shop".into(),
            number: 12,
        };
        let comment = Comment {
            paragraphs: vec!["Shipped.".into()],
        };
        super::super::tracker(&config, Arc::new(fake::secrets()))
            .deliver(Work::Comment {
                ticket: &ticket,
                comment: &comment,
            })
            .await
            .unwrap();
        let r = &fake.received()[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/gitlab/api/v4/projects/acme%2Fshop/issues/12/notes")
        );
        assert_eq!(r.headers["private-token"], TOKEN);
        assert!(r.headers.get("authorization").is_none());
        assert_eq!(r.json(), json!({"body": "Shipped."}));
    }
}

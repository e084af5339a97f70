//! The `webhook` tracker: one POST per release (and per rollback) listing its tickets and
//! commits — the [`Announcement`](crate::trackers::Announcement) as JSON — signed like the
//! `webhook` notify channel: `X-Slipway-Signature: sha256=<hex HMAC-SHA256 of the body>`,
//! `X-Slipway-Event: tickets.released` or `tickets.rolled_back`, and
//! `X-Slipway-Delivery: <notice id>`, the same on every retry.

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use secrecy::ExposeSecret as _;

use super::Http;
use crate::adapters::notify::webhook::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use crate::ports::NotifyError;
use crate::trackers::{Announcement, Tracker, Work};

#[derive(Debug)]
pub struct Webhook {
    http: Http,
}

impl Webhook {
    pub fn new(http: Http) -> Self {
        Self { http }
    }

    async fn post(&self, announcement: &Announcement) -> Result<(), NotifyError> {
        let url = self.http.url("")?;
        let body = serde_json::to_vec(announcement).map_err(|e| self.http.permanent(e))?;
        let secret = self.http.token().await?;
        let signature = crate::signature::sign(secret.expose_secret().as_bytes(), &body);
        let signature = HeaderValue::from_str(&signature).map_err(|e| self.http.permanent(e))?;
        let event = HeaderValue::from_str(&format!("tickets.{}", announcement.event.as_str()))
            .map_err(|e| self.http.permanent(e))?;
        let delivery = HeaderValue::from_str(&announcement.id).map_err(|e| self.http.permanent(e))?;
        let request = self
            .http
            .request(reqwest::Method::POST, url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(SIGNATURE_HEADER, signature)
            .header(EVENT_HEADER, event)
            .header(DELIVERY_HEADER, delivery)
            .body(body);
        self.http.send(request).await?;
        Ok(())
    }
}

#[async_trait]
impl Tracker for Webhook {
    fn describe(&self) -> String {
        self.http.describe()
    }

    async fn deliver(&self, work: Work<'_>) -> Result<(), NotifyError> {
        match work {
            Work::Announce(announcement) => self.post(announcement).await,
            Work::Comment { .. } | Work::Transition { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fake::{self, TOKEN};
    use super::*;
    use crate::config::TrackerConfig;
    use crate::domain::ParamName;

    #[tokio::test]
    async fn posts_the_release_signed() {
        let (url, fake) = fake::serve("/hooks/tickets").await;
        let config = TrackerConfig::Webhook {
            name: None,
            url,
            keys: vec!["SHOP".into()],
            secret: ParamName::parse("/slipway/tracker/token").unwrap(),
        };
        let announcement = fake::announcement();
        super::super::tracker(&config, Arc::new(fake::secrets()))
            .deliver(Work::Announce(&announcement))
            .await
            .unwrap();
        let received = fake.received();
        assert_eq!(received.len(), 1);
        let r = &received[0];
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hooks/tickets"));
        let signature = r.headers.get("x-slipway-signature").and_then(|v| v.to_str().ok());
        assert_eq!(crate::signature::verify(TOKEN.as_bytes(), signature, &r.body), Ok(()));
        assert_eq!(r.headers["x-slipway-event"], "tickets.released");
        assert_eq!(r.headers["x-slipway-delivery"], announcement.id.as_str());
        let body = r.json();
        assert_eq!(body["tickets"], serde_json::json!(["SHOP-1"]));
        assert_eq!(body["environment"], "production");
        assert_eq!(body["commits"][0]["subject"], "SHOP-1 Add the basket (#12)");
        assert!(
            body["commits"][0].get("message").is_none(),
            "whole messages are not posted"
        );
        assert!(!String::from_utf8_lossy(&r.body).contains(TOKEN));
    }
}

//! The `slack` channel: Block Kit messages posted to a Slack incoming webhook.
//!
//! The webhook URL is a secret (anyone holding it can post to the channel), so it is read
//! from the [`SecretStore`] at send time and never logged nor put into an error: the channel
//! is just `slack`, and `reqwest` errors are stripped of their URL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{short_sha, subject};
use crate::domain::{ParamName, WebUrl};
use crate::ports::{BoxError, Notification, Notifier, NotifyError, SecretError, SecretStore};

/// How long one post may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The channel name in logs and errors. Never the URL.
const CHANNEL: &str = "slack";

/// Slack's limits: 150 characters of header, 2,000 per field, 3,000 per section text.
const HEADER_MAX: usize = 150;
const FIELD_MAX: usize = 1_900;
const SECTION_MAX: usize = 2_900;

/// Posts [`blocks`] to the Slack incoming webhook whose URL is stored under `webhook_url`.
///
/// Answers map to [`NotifyError`] by what a retry would do: 2xx is delivered; 429, 5xx and
/// network errors are transient; any other answer is permanent; a missing secret is
/// permanent and an unreachable secret store transient.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    webhook_url: ParamName,
    secrets: Arc<dyn SecretStore>,
    client: reqwest::Client,
}

impl SlackNotifier {
    /// A notifier posting to the webhook whose URL the secret `webhook_url` holds.
    pub fn new(webhook_url: ParamName, secrets: Arc<dyn SecretStore>) -> Self {
        let client = super::outbound_client(TIMEOUT);
        Self {
            webhook_url,
            secrets,
            client,
        }
    }
}

/// Why Slack did not take a message. Never holds the webhook URL.
#[derive(Debug, thiserror::Error)]
enum SlackError {
    #[error("the webhook URL secret is not a valid URL")]
    BadUrl(#[source] url::ParseError),
    #[error("the webhook URL secret is not an http(s) URL")]
    NotHttp,
    #[error("the request to Slack failed")]
    Request(#[source] reqwest::Error),
    #[error("Slack answered {status}: {body}")]
    Status { status: u16, body: String },
}

fn transient(source: impl Into<BoxError>) -> NotifyError {
    NotifyError::Transient {
        channel: CHANNEL.to_owned(),
        source: source.into(),
    }
}

fn permanent(source: impl Into<BoxError>) -> NotifyError {
    NotifyError::Permanent {
        channel: CHANNEL.to_owned(),
        source: source.into(),
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    fn name(&self) -> String {
        CHANNEL.to_owned()
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let secret = self.secrets.get(&self.webhook_url).await.map_err(|e| match e {
            SecretError::NotFound(_) => permanent(e),
            SecretError::Unavailable(..) => transient(e),
        })?;
        let url = reqwest::Url::parse(secret.expose_secret()).map_err(|e| permanent(SlackError::BadUrl(e)))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(permanent(SlackError::NotHttp));
        }

        let response = self
            .client
            .post(url)
            .timeout(TIMEOUT)
            .json(&blocks(notification))
            .send()
            .await
            .map_err(|e| transient(SlackError::Request(e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            tracing::debug!(kind = %notification.kind, id = %notification.id, "posted to Slack");
            return Ok(());
        }
        // Slack says why in a short body (`invalid_payload`, `no_service`); keep a bit of it.
        let body = response.text().await.unwrap_or_default();
        let error = SlackError::Status {
            status: status.as_u16(),
            body: truncate(body.trim(), 200),
        };
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(transient(error))
        } else {
            Err(permanent(error))
        }
    }
}

/// The Block Kit message for `n`: a `text` fallback (for notifications and old clients) and
/// `blocks` — a header; for a failure while the branch is red, a `:rotating_light:` line; a
/// section with repository, commit, author and environment (and stage) as fields; the text;
/// for `approval_requested`, who decides by when, an `actions` block with two interactive
/// buttons, "Approve" (primary, `action_id` `approve`) and "Reject" (danger, `reject`), whose
/// `value` is the approval token (handled by [`crate::providers::slack`]), and a plain link to
/// the approval page for those whose Slack app has no interactivity set up; for a release
/// with a rollback link, that link (a plain link, not a button: Slack would send a button's
/// click to the interactions endpoint too), whose it is and until when; and a link to the
/// run. A decision URL without a token under `/approvals/` gets a link button instead.
///
/// Every user-controlled string in `mrkdwn` is escaped (`&`, `<`, `>`), so a commit message
/// cannot mention `@channel` or smuggle in a link.
pub fn blocks(n: &Notification) -> Value {
    let mut blocks = Vec::new();
    let title = if n.title.trim().is_empty() {
        "slipway"
    } else {
        n.title.trim()
    };
    blocks.push(json!({
        "type": "header",
        "text": { "type": "plain_text", "text": truncate(title, HEADER_MAX), "emoji": true },
    }));
    let red = format!(
        ":rotating_light: *{} is red*: fix it before anything else.",
        escape(&n.branch)
    );
    if n.alert {
        blocks.push(section(&red));
    }

    let mut fields = vec![
        field("Repository", &escape(&n.repo)),
        field(
            "Commit",
            &format!("`{}` {}", escape(short_sha(&n.sha)), escape(subject(&n.commit_message))),
        ),
        field("Author", &escape(&n.author)),
    ];
    if let Some(environment) = &n.environment {
        fields.push(field("Environment", &escape(environment)));
    }
    if let Some(stage) = &n.stage {
        fields.push(field("Stage", &escape(stage)));
    }
    blocks.push(json!({ "type": "section", "fields": fields }));

    if !n.text.trim().is_empty() {
        blocks.push(section(&escape(n.text.trim())));
    }

    if n.kind == "approval_requested" {
        let mut who = Vec::new();
        if let Some(approver) = &n.approver {
            who.push(format!("Asked of *{}*", escape(approver)));
        }
        if let Some(deadline) = &n.expires_at {
            // Slack shows the date in each reader's time zone, or the fallback after `|`.
            who.push(format!(
                "decide by <!date^{}^{{date_short_pretty}} at {{time}}|{deadline}>",
                deadline.as_second()
            ));
        }
        if !who.is_empty() {
            blocks.push(context(&who.join(" · ")));
        }
        let buttons: Vec<Value> = [
            ("Approve", "approve", "primary", &n.approve_url),
            ("Reject", "reject", "danger", &n.reject_url),
        ]
        .into_iter()
        .filter_map(|(label, action, style, url)| {
            let url = url.as_ref()?;
            let mut button = json!({
                "type": "button",
                "text": { "type": "plain_text", "text": label },
                "style": style,
                "action_id": action,
            });
            match approval_token(url) {
                Some(token) => button["value"] = token.into(),
                // Not slipway's approval link: a plain link button still lets people decide.
                None => button["url"] = WebUrl::parse(url).ok()?.as_str().into(),
            }
            Some(button)
        })
        .collect();
        if !buttons.is_empty() {
            blocks.push(json!({ "type": "actions", "elements": buttons }));
        }
        if let Some(url) = n.approve_url.as_ref().or(n.reject_url.as_ref()) {
            blocks.push(context(&format!(
                "Buttons not working? Decide on {}.",
                link(url, "the approval page")
            )));
        }
    }

    if let Some(url) = &n.rollback_url {
        let env = n.environment.as_deref().unwrap_or("the environment");
        let mut line = format!("If it misbehaves: {}", link(url, &format!("roll {} back", escape(env))));
        if let Some(approver) = &n.approver {
            line.push_str(&format!(" · link for *{}*", escape(approver)));
        }
        if let Some(deadline) = &n.expires_at {
            line.push_str(&format!(
                ", works until <!date^{}^{{date_short_pretty}} at {{time}}|{deadline}>",
                deadline.as_second()
            ));
        }
        blocks.push(context(&line));
    }

    blocks.push(context(&link(
        &n.run_url,
        &format!("View run {}", escape(n.run_id.as_str())),
    )));
    if let (Some(url), Some(approver)) = (&n.sign_in_url, &n.approver) {
        blocks.push(context(&format!(
            "{} · link for *{}*",
            link(url, "Sign in to slipway's pages"),
            escape(approver)
        )));
    }

    let headline = format!("{title} ({})", short_sha(&n.sha));
    let text = if n.alert {
        format!("{red} {}", escape(&headline))
    } else {
        escape(&headline)
    };
    json!({ "text": text, "blocks": blocks })
}

/// The approval token in a decision URL: the path segment after `/approvals/`, without the
/// query. `None` if the URL has no such segment.
fn approval_token(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let mut segments = url.path_segments()?;
    segments.find(|s| *s == "approvals")?;
    let token = segments.next().filter(|t| !t.is_empty())?;
    // Slack caps a button's value at 2,000 characters; tokens are far shorter.
    (token.len() <= 2_000).then(|| token.to_owned())
}

fn section(mrkdwn: &str) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": truncate(mrkdwn, SECTION_MAX) } })
}

fn field(label: &str, mrkdwn: &str) -> Value {
    // Slack refuses empty text objects.
    let value = if mrkdwn.trim().is_empty() { "-" } else { mrkdwn };
    json!({ "type": "mrkdwn", "text": truncate(&format!("*{label}*\n{value}"), FIELD_MAX) })
}

fn context(mrkdwn: &str) -> Value {
    json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": mrkdwn }] })
}

/// Escapes Slack's `mrkdwn` control characters, so user text cannot form links or mentions.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `<url|label>` (`label` already escaped): the URL escaped, with `|` percent-encoded so it
/// cannot end the target early. Only an http(s) URL becomes a link; anything else leaves the
/// label alone.
fn link(url: &str, label: &str) -> String {
    match WebUrl::parse(url) {
        Ok(url) => format!("<{}|{label}>", escape(url.as_str()).replace('|', "%7C")),
        Err(_) => label.to_owned(),
    }
}

/// At most `max` characters of `text`, ending with `…` if cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use crate::adapters::memory::MemorySecrets;
    use std::error::Error;
    use std::sync::Mutex;

    use axum::Json;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;

    use super::super::fixtures::notification;
    use super::*;

    // -- blocks ----------------------------------------------------------------------------

    #[test]
    fn only_http_links_become_slack_links() {
        assert_eq!(
            link("https://slipway.example.com/runs/x?a=1|2", "View run"),
            "<https://slipway.example.com/runs/x?a=1%7C2|View run>"
        );
        assert_eq!(link("javascript:alert(1)", "View run"), "View run");
        assert_eq!(link("/runs/x", "View run"), "View run");
    }

    #[test]
    fn blocks_for_approval_requested() {
        insta::assert_json_snapshot!(blocks(&notification("approval_requested")));
    }

    #[test]
    fn approval_buttons_carry_the_token_and_the_page_stays_linked() {
        let n = notification("approval_requested");
        let value = blocks(&n);
        let all = value["blocks"].as_array().unwrap();
        let actions = all.iter().find(|b| b["type"] == "actions").unwrap();
        for (button, action, style) in [
            (&actions["elements"][0], "approve", "primary"),
            (&actions["elements"][1], "reject", "danger"),
        ] {
            assert_eq!(button["action_id"], action);
            assert_eq!(button["style"], style);
            assert_eq!(button["value"], "tok123");
            assert!(button.get("url").is_none(), "{button}");
        }
        assert!(
            value
                .to_string()
                .contains("<https://slipway.example.com/approvals/tok123?decision=approve|the approval page>"),
            "{value}"
        );
    }

    #[test]
    fn approval_token_is_the_segment_after_approvals() {
        for (url, token) in [
            (
                "https://slipway.example.com/approvals/v1.abc-_x?decision=approve",
                Some("v1.abc-_x"),
            ),
            (
                "https://example.com/base/approvals/tok?decision=reject#frag",
                Some("tok"),
            ),
            ("https://example.com/approvals/tok/", Some("tok")),
            ("https://example.com/approvals/", None),
            ("https://example.com/approvals", None),
            ("https://example.com/runs/x", None),
            ("not a url", None),
        ] {
            assert_eq!(approval_token(url).as_deref(), token, "{url}");
        }
    }

    #[test]
    fn a_decision_url_without_a_token_becomes_a_link_button() {
        let mut n = notification("approval_requested");
        n.approve_url = Some("https://elsewhere.example/decide?x=1".to_owned());
        let value = blocks(&n);
        let actions = value["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "actions")
            .unwrap();
        assert_eq!(actions["elements"][0]["url"], "https://elsewhere.example/decide?x=1");
        assert!(actions["elements"][0].get("value").is_none());
        assert_eq!(actions["elements"][1]["value"], "tok123");
    }

    #[test]
    fn blocks_for_failed_while_main_is_red() {
        let mut n = notification("failed");
        n.alert = true;
        insta::assert_json_snapshot!(blocks(&n));
    }

    #[test]
    fn blocks_for_released() {
        insta::assert_json_snapshot!(blocks(&notification("released")));
    }

    #[test]
    fn blocks_for_rejected() {
        insta::assert_json_snapshot!(blocks(&notification("rejected")));
    }

    #[test]
    fn user_text_cannot_mention_or_link() {
        let mut n = notification("failed");
        n.author = "<!channel>".to_owned();
        n.commit_message = "<https://evil.example|click> & run".to_owned();
        n.text = "<@U123> <!here>".to_owned();
        let rendered = blocks(&n).to_string();
        for raw in ["<!channel>", "<https://evil", "<@U123>", "<!here>"] {
            assert!(!rendered.contains(raw), "{raw} survived in {rendered}");
        }
        assert!(rendered.contains("&lt;!channel&gt;"));
        assert!(rendered.contains("&amp; run"));
    }

    #[test]
    fn blocks_stay_within_slack_limits() {
        let mut n = notification("released");
        n.title = "t".repeat(400);
        n.text = "é".repeat(5_000);
        let value = blocks(&n);
        let header = value["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), HEADER_MAX);
        assert!(header.ends_with('…'));
        let text = value["blocks"][2]["text"]["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), SECTION_MAX);
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééé", 3), "ééé");
        assert_eq!(truncate("éééé", 3), "éé…");
        assert_eq!(truncate("", 3), "");
    }

    // -- posting ---------------------------------------------------------------------------

    const PATH: &str = "/services/T000/B000/s3cr3t-t0ken";

    /// A fake Slack webhook answering `status` and recording what was posted.
    #[derive(Clone)]
    struct Hook {
        status: StatusCode,
        posted: Arc<Mutex<Vec<Value>>>,
    }

    async fn receive(State(hook): State<Hook>, Json(body): Json<Value>) -> (StatusCode, &'static str) {
        hook.posted.lock().unwrap().push(body);
        let answer = if hook.status.is_success() {
            "ok"
        } else {
            "invalid_payload"
        };
        (hook.status, answer)
    }

    /// Starts a webhook answering `status`; returns its URL and what it received.
    async fn serve(status: StatusCode) -> (String, Arc<Mutex<Vec<Value>>>) {
        let posted = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().route(PATH, post(receive)).with_state(Hook {
            status,
            posted: posted.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{PATH}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, posted)
    }

    fn notifier(secrets: MemorySecrets) -> SlackNotifier {
        SlackNotifier::new(
            ParamName::parse("/slipway/slack/webhook-url").unwrap(),
            Arc::new(secrets),
        )
    }

    fn with_url(url: &str) -> SlackNotifier {
        notifier(MemorySecrets::holding("/slipway/slack/webhook-url", url))
    }

    /// Display and Debug of `err` and of every source under it.
    fn everything_said(err: &NotifyError) -> String {
        let mut said = format!("{err} {err:?}");
        let mut source = err.source();
        while let Some(e) = source {
            said.push_str(&format!(" {e} {e:?}"));
            source = e.source();
        }
        said
    }

    fn assert_no_secret(err: &NotifyError, url: &str) {
        let said = everything_said(err);
        assert!(
            !said.contains(url) && !said.contains("s3cr3t"),
            "the webhook URL leaked: {said}"
        );
    }

    #[tokio::test]
    async fn posts_exactly_the_blocks() {
        let (url, posted) = serve(StatusCode::OK).await;
        let slack = with_url(&url);
        assert_eq!(slack.name(), "slack");
        let n = notification("approval_requested");
        slack.deliver(&n).await.unwrap();
        assert_eq!(*posted.lock().unwrap(), [blocks(&n)]);
    }

    #[tokio::test]
    async fn server_errors_and_rate_limits_are_transient() {
        for status in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::TOO_MANY_REQUESTS] {
            let (url, posted) = serve(status).await;
            let err = with_url(&url).deliver(&notification("released")).await.unwrap_err();
            assert!(
                matches!(&err, NotifyError::Transient { channel, .. } if channel == "slack"),
                "{err:?}"
            );
            assert!(everything_said(&err).contains(&status.as_u16().to_string()), "{err:?}");
            assert_no_secret(&err, &url);
            assert_eq!(posted.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn client_errors_are_permanent() {
        let (url, _) = serve(StatusCode::BAD_REQUEST).await;
        let err = with_url(&url).deliver(&notification("released")).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Permanent { channel, .. } if channel == "slack"),
            "{err:?}"
        );
        assert!(everything_said(&err).contains("400"), "{err:?}");
        assert!(everything_said(&err).contains("invalid_payload"), "{err:?}");
        assert_no_secret(&err, &url);
    }

    #[tokio::test]
    async fn network_errors_are_transient_without_the_url() {
        // A port nobody listens on any more.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{PATH}", listener.local_addr().unwrap());
        drop(listener);
        let err = with_url(&url).deliver(&notification("released")).await.unwrap_err();
        assert!(matches!(err, NotifyError::Transient { .. }), "{err:?}");
        assert_no_secret(&err, &url);
    }

    #[tokio::test]
    async fn an_unavailable_secret_store_is_transient_and_says_no_url() {
        let err = notifier(MemorySecrets::unreachable())
            .deliver(&notification("released"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NotifyError::Transient { channel, .. } if channel == "slack"),
            "{err:?}"
        );
        assert!(
            err.source().is_some_and(|s| s.is::<SecretError>()),
            "the secret error is kept: {err:?}"
        );
        assert_no_secret(&err, "http://127.0.0.1");
        assert!(!everything_said(&err).contains("http"), "{}", everything_said(&err));
    }

    #[tokio::test]
    async fn a_missing_secret_is_permanent() {
        let err = notifier(MemorySecrets::new())
            .deliver(&notification("released"))
            .await
            .unwrap_err();
        assert!(matches!(err, NotifyError::Permanent { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_invalid_url_secret_is_permanent_and_not_echoed() {
        for bad in ["not a url s3cr3t", "ftp://hooks.example/s3cr3t"] {
            let err = with_url(bad).deliver(&notification("released")).await.unwrap_err();
            assert!(matches!(err, NotifyError::Permanent { .. }), "{err:?}");
            assert_no_secret(&err, bad);
        }
    }
}

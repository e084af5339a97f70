//! `POST /hooks/slack/interactions`: Approve and Reject buttons clicked in Slack.
//!
//! The request is verified (`X-Slack-Signature`, `v0`, over the raw form body, with
//! `X-Slack-Request-Timestamp` within 5 minutes) in constant time before anything is parsed.
//! The clicking Slack user must map to one of the pipeline's approvers (`slack = "U…"`);
//! anyone else is refused and nothing changes. The decision goes through the same checks as
//! the confirmation page (expiry, self-approval, replay), and the answer comes at once —
//! the deploy happens on the queue. The original message is then updated to say who decided.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::hooks::header;
use super::{ApiError, AppState, approvals};
use crate::domain::{WebUrl, clip};
use crate::providers::slack::{self, Decision, SlackPayloadError};

/// A reply only the clicking user sees; the original message stays as it is.
fn ephemeral(text: String) -> Response {
    Json(json!({"response_type": "ephemeral", "replace_original": false, "text": text})).into_response()
}

/// Posts to a Slack `response_url`, in the background and bounded: Slack wants the answer to
/// the click within 3 seconds, and this update is a courtesy, not part of the decision.
fn post_back(response_url: Option<WebUrl>, message: Value) {
    let Some(url) =
        response_url.filter(|u| u.as_url().scheme() == "https" || u.as_str().starts_with("http://127.0.0.1"))
    else {
        return;
    };
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default()
        })
        .clone();
    tokio::spawn(async move {
        if let Err(e) = client.post(url.as_str()).json(&message).send().await {
            tracing::warn!(error = %e.without_url(), "could not update the Slack message");
        }
    });
}

pub(super) async fn interactions(
    axum::extract::State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = super::webhook_body(body)?;
    let Some(config) = &app.config.slack else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Slack interactions are not configured: add [slack] signing_secret to slipway.toml",
        ));
    };
    let secrets = app
        .rotation(&config.signing_secret, config.previous_signing_secret.as_ref())
        .await?;
    let now = app.clock.now();
    secrets
        .check("Slack signing secret", now, |secret| {
            slack::verify(
                secret.as_bytes(),
                header(&headers, "x-slack-request-timestamp"),
                header(&headers, "x-slack-signature"),
                &body,
                now,
            )
        })
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, format!("X-Slack-Signature: {e}")))?;
    let interaction = match slack::parse_interaction(&body) {
        Ok(interaction) => interaction,
        Err(SlackPayloadError::Ignored(why)) => {
            tracing::info!(%why, "Slack interaction ignored");
            return Ok(ephemeral(format!("slipway ignored this interaction: {why}")));
        }
        Err(e @ SlackPayloadError::Malformed(_)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let mut link = match approvals::open(&app, &interaction.token).await {
        Ok(link) => link,
        Err(refused) => return Ok(ephemeral(format!("{}: {}", refused.title, refused.message))),
    };
    let Some(approver) = link
        .pipeline
        .approvers
        .iter()
        .find(|a| a.slack.as_deref() == Some(interaction.user_id.as_str()))
    else {
        tracing::warn!(user = %clip(&interaction.user_id), pipeline = %link.pipeline.name, "Slack user is not an approver");
        return Ok(ephemeral(format!(
            "You are not an approver of pipeline {}; nothing was changed.",
            link.pipeline.name
        )));
    };
    link.approver = approver;
    let approve = matches!(interaction.decision, Decision::Approve);
    match approvals::decide_link(&app, &link, approve, None).await {
        Ok(_) => {
            let title = format!("{} {} for {}", link.run.repo, link.run.sha.short(), link.claim.env);
            post_back(
                interaction.response_url,
                slack::decided_message(&title, approver.id.as_str(), approve),
            );
            let word = if approve { "approved" } else { "rejected" };
            Ok(ephemeral(format!(
                "You {word} promotion of {} to {}.",
                link.run.sha.short(),
                link.claim.env
            )))
        }
        Err(refused) => Ok(ephemeral(format!("{}: {}", refused.title, refused.message))),
    }
}

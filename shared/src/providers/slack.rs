//! Slack interactivity: someone pressed Approve or Reject on an `approval_requested` message.
//!
//! Slack posts an `application/x-www-form-urlencoded` body whose `payload` field holds the
//! interaction as JSON, signed with the Slack app's signing secret. [`verify`] checks the
//! signature and the timestamp over the raw bytes; only then does [`parse_interaction`] read
//! them into an [`Interaction`]. [`decided_message`] is what to post back to the interaction's
//! `response_url`, so the message shows the decision instead of the buttons.
//!
//! The buttons' `value` is the approval token, which already names the run, the environment
//! and the approver; whoever handles the interaction still checks that the Slack user who
//! pressed the button is that approver (`ApproverConfig::slack`).

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::adapters::notify::slack::{escape, truncate};
use crate::domain::{WebUrl, clip, clip_quoted};
use crate::signature::verify_hmac_sha256;

/// The only signature version Slack sends, both in the basestring and the header.
const VERSION: &str = "v0";

/// How far a request's timestamp may lie from our clock, either way: Slack's recommendation.
const MAX_SKEW_SECONDS: u64 = 5 * 60;

/// Why a Slack request was refused. Every variant means: reject it (401); retrying the same
/// bytes cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackVerifyError {
    /// `X-Slack-Request-Timestamp` or `X-Slack-Signature` is missing or empty.
    #[error("the request lacks X-Slack-Request-Timestamp or X-Slack-Signature: is it from Slack?")]
    Missing,
    /// A header is there but not in Slack's format.
    #[error("the Slack request is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is more than five minutes from our clock: a replay, or a clock far off.
    #[error("the Slack request's timestamp is more than 5 minutes from now: a replay, or check the clock")]
    Stale,
    /// A well-formed signature that does not match the body under our signing secret.
    #[error("the Slack signature does not match the body: check the Slack app's signing secret")]
    Mismatch,
}

/// Checks a Slack request the way Slack documents it ("Verifying requests from Slack"): the
/// HMAC-SHA256 of `v0:{timestamp}:{raw body}` under `signing_secret` must equal the hex in
/// `signature` (`v0=<64 hex>`), compared in constant time, and `timestamp` (Unix seconds)
/// must lie within 5 minutes of `now`, in the past or the future.
///
/// `timestamp` and `signature` are the values of `X-Slack-Request-Timestamp` and
/// `X-Slack-Signature`, if the request had them.
pub fn verify(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), SlackVerifyError> {
    let timestamp = timestamp.map(str::trim).filter(|t| !t.is_empty());
    let signature = signature.map(str::trim).filter(|s| !s.is_empty());
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SlackVerifyError::Missing);
    };
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| SlackVerifyError::Malformed("X-Slack-Request-Timestamp is not a number of seconds"))?;
    if seconds.abs_diff(now.as_second()) > MAX_SKEW_SECONDS {
        return Err(SlackVerifyError::Stale);
    }
    let digest = signature
        .strip_prefix("v0=")
        .ok_or(SlackVerifyError::Malformed("X-Slack-Signature is not v0=<hex>"))?;
    if digest.len() != 64 {
        return Err(SlackVerifyError::Malformed("expected 64 hex digits after v0="));
    }
    let expected = hex::decode(digest).map_err(|_| SlackVerifyError::Malformed("expected hex digits after v0="))?;

    let basestring: [&[u8]; 5] = [VERSION.as_bytes(), b":", timestamp.as_bytes(), b":", body];
    verify_hmac_sha256(signing_secret, &basestring, &expected).map_err(|_| SlackVerifyError::Mismatch)
}

/// What an approver decided from Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

/// A press of slipway's Approve or Reject button, in slipway's terms.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Interaction {
    /// The Slack user id (`U…`) of who pressed the button; compare with `ApproverConfig::slack`.
    pub user_id: String,
    pub decision: Decision,
    /// The approval token the button carried (its `value`).
    pub token: String,
    /// Where to post [`decided_message`] to update the original message, valid for 30
    /// minutes and 5 uses; dropped unless it is an http(s) URL.
    pub response_url: Option<WebUrl>,
    /// The channel of the message the button was on, when Slack says.
    pub channel_id: Option<String>,
    /// The `ts` of the message the button was on, when Slack says.
    pub message_ts: Option<String>,
}

/// Why a Slack interaction body was not turned into an [`Interaction`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackPayloadError {
    /// Not a form with a JSON `payload`, or the JSON lacks what a `block_actions` needs.
    /// Answer 400: this is not what Slack sends.
    #[error("the Slack interaction is malformed: {0}")]
    Malformed(String),
    /// A well-formed interaction slipway does not act on (another type, another action).
    /// Answer 200 and ignore it, or Slack shows the user an error.
    #[error("ignored Slack interaction: {0}")]
    Ignored(String),
}

/// The parts of a `block_actions` payload slipway reads.
#[derive(Debug, Deserialize)]
struct RawPayload {
    #[serde(rename = "type")]
    kind: String,
    user: Option<RawUser>,
    #[serde(default)]
    actions: Vec<RawAction>,
    response_url: Option<String>,
    channel: Option<RawChannel>,
    container: Option<RawContainer>,
    message: Option<RawMessage>,
}

#[derive(Debug, Deserialize)]
struct RawUser {
    id: String,
}

#[derive(Debug, Deserialize)]
struct RawAction {
    action_id: String,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawChannel {
    id: String,
}

#[derive(Debug, Deserialize)]
struct RawContainer {
    channel_id: Option<String>,
    message_ts: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    ts: Option<String>,
}

/// Reads a verified Slack interaction body: the `payload` form field as JSON, of type
/// `block_actions`, whose first action is `approve` or `reject` with the approval token as
/// its value.
///
/// Other interaction types (shortcuts, view submissions) and other actions are
/// [`SlackPayloadError::Ignored`]; a body that is not a Slack interaction at all is
/// [`SlackPayloadError::Malformed`].
pub fn parse_interaction(body: &[u8]) -> Result<Interaction, SlackPayloadError> {
    let payload = url::form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, value)| value)
        .ok_or_else(|| SlackPayloadError::Malformed("no payload field in the form".to_owned()))?;
    let raw: RawPayload = serde_json::from_str(&payload).map_err(|e| {
        SlackPayloadError::Malformed(format!(
            "the payload is not an interaction: {}",
            clip_quoted(&e.to_string())
        ))
    })?;
    if raw.kind != "block_actions" {
        return Err(SlackPayloadError::Ignored(format!(
            "interaction type {}",
            clip(&raw.kind)
        )));
    }
    let action = raw
        .actions
        .first()
        .ok_or_else(|| SlackPayloadError::Malformed("a block_actions payload without actions".to_owned()))?;
    let decision = match action.action_id.as_str() {
        "approve" => Decision::Approve,
        "reject" => Decision::Reject,
        other => return Err(SlackPayloadError::Ignored(format!("action {}", clip(other)))),
    };
    let token = action.value.clone().filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        SlackPayloadError::Malformed(format!("the {} action carries no token", clip(&action.action_id)))
    })?;
    let user_id = raw
        .user
        .map(|u| u.id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| SlackPayloadError::Malformed("no user.id in the payload".to_owned()))?;
    let (container_channel, container_ts) = raw.container.map(|c| (c.channel_id, c.message_ts)).unwrap_or_default();
    Ok(Interaction {
        user_id,
        decision,
        token,
        response_url: super::payload::link("response_url", raw.response_url),
        channel_id: raw.channel.map(|c| c.id).or(container_channel),
        message_ts: raw.message.and_then(|m| m.ts).or(container_ts),
    })
}

/// The JSON to post to an interaction's `response_url`: it replaces the original message
/// with its title and "✅ Approved by <approver>" or "❌ Rejected by <approver>", without
/// buttons, so nobody presses them again. The title and `approver` are escaped, so neither
/// can mention anyone or form a link.
pub fn decided_message(original_title: &str, approver: &str, approve: bool) -> Value {
    let title = if original_title.trim().is_empty() {
        "slipway"
    } else {
        original_title.trim()
    };
    let outcome = if approve {
        format!("✅ Approved by {}", escape(approver))
    } else {
        format!("❌ Rejected by {}", escape(approver))
    };
    json!({
        "replace_original": true,
        "text": format!("{} — {outcome}", escape(title)),
        "blocks": [
            {
                "type": "header",
                "text": { "type": "plain_text", "text": truncate(title, 150), "emoji": true },
            },
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": truncate(&outcome, 2_900) },
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example ("Verifying requests from Slack"), checked independently with
    // python3's hmac module.
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    /// The block_actions JSON from `events/slack/`.
    const BLOCK_ACTIONS: &str = include_str!("../../../events/slack/block_actions.json");

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn sent_at() -> Timestamp {
        at(1_531_420_618)
    }

    /// `json` as Slack sends it: the `payload` field of a form.
    fn form(json: &str) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", json)
            .finish()
            .into_bytes()
    }

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(
            verify(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, sent_at()),
            Ok(())
        );
    }

    #[test]
    fn uppercase_hex_verifies_too() {
        let upper = format!("v0={}", SIGNATURE[3..].to_uppercase());
        assert_eq!(verify(SECRET, Some(TIMESTAMP), Some(&upper), BODY, sent_at()), Ok(()));
    }

    #[test]
    fn one_flipped_body_byte_is_a_mismatch() {
        for i in [0, BODY.len() / 2, BODY.len() - 1] {
            let mut body = BODY.to_vec();
            body[i] ^= 0x01;
            assert_eq!(
                verify(SECRET, Some(TIMESTAMP), Some(SIGNATURE), &body, sent_at()),
                Err(SlackVerifyError::Mismatch),
                "byte {i}"
            );
        }
    }

    #[test]
    fn another_secret_or_timestamp_is_a_mismatch() {
        assert_eq!(
            verify(b"not the secret", Some(TIMESTAMP), Some(SIGNATURE), BODY, sent_at()),
            Err(SlackVerifyError::Mismatch)
        );
        // Still fresh, but not the timestamp that was signed.
        assert_eq!(
            verify(SECRET, Some("1531420619"), Some(SIGNATURE), BODY, sent_at()),
            Err(SlackVerifyError::Mismatch)
        );
    }

    #[test]
    fn five_minutes_either_way_is_the_limit() {
        for now in [1_531_420_618 + 300, 1_531_420_618 - 300] {
            assert_eq!(verify(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, at(now)), Ok(()));
        }
        // 301 s old, and 301 s in the future.
        for now in [1_531_420_618 + 301, 1_531_420_618 - 301] {
            assert_eq!(
                verify(SECRET, Some(TIMESTAMP), Some(SIGNATURE), BODY, at(now)),
                Err(SlackVerifyError::Stale),
                "{now}"
            );
        }
        assert_eq!(
            verify(SECRET, Some(&i64::MIN.to_string()), Some(SIGNATURE), BODY, sent_at()),
            Err(SlackVerifyError::Stale)
        );
    }

    #[test]
    fn missing_headers_are_missing() {
        assert_eq!(
            verify(SECRET, None, Some(SIGNATURE), BODY, sent_at()),
            Err(SlackVerifyError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some(TIMESTAMP), None, BODY, sent_at()),
            Err(SlackVerifyError::Missing)
        );
        assert_eq!(
            verify(SECRET, Some(" "), Some(""), BODY, sent_at()),
            Err(SlackVerifyError::Missing)
        );
    }

    #[test]
    fn malformed_headers_are_malformed() {
        let hex = &SIGNATURE[3..];
        for bad in [
            hex.to_owned(),
            format!("v1={hex}"),
            format!("v0={}", &hex[..63]),
            format!("v0={}", hex.replacen('a', "g", 1)),
        ] {
            assert!(
                matches!(
                    verify(SECRET, Some(TIMESTAMP), Some(&bad), BODY, sent_at()),
                    Err(SlackVerifyError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            verify(SECRET, Some("yesterday"), Some(SIGNATURE), BODY, sent_at()),
            Err(SlackVerifyError::Malformed(_))
        ));
    }

    #[test]
    fn a_block_actions_payload_parses() {
        let interaction = parse_interaction(&form(BLOCK_ACTIONS)).unwrap();
        assert_eq!(
            interaction,
            Interaction {
                user_id: "UA8RXUSPL".to_owned(),
                decision: Decision::Approve,
                token: "v1.example-approval-token".to_owned(),
                response_url: Some(
                    WebUrl::parse("https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209")
                        .unwrap()
                ),
                channel_id: Some("CBR2V3XEX".to_owned()),
                message_ts: Some("1548261231.000200".to_owned()),
            }
        );
    }

    #[test]
    fn a_reject_press_parses_and_only_the_first_action_counts() {
        let mut value: Value = serde_json::from_str(BLOCK_ACTIONS).unwrap();
        value["actions"][0]["action_id"] = "reject".into();
        value["actions"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "action_id": "approve", "value": "other", "type": "button" }));
        let interaction = parse_interaction(&form(&value.to_string())).unwrap();
        assert_eq!(interaction.decision, Decision::Reject);
        assert_eq!(interaction.token, "v1.example-approval-token");
    }

    #[test]
    fn channel_and_ts_come_from_the_container_when_that_is_all_there_is() {
        let mut value: Value = serde_json::from_str(BLOCK_ACTIONS).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("channel");
        object.remove("message");
        object.remove("response_url");
        let interaction = parse_interaction(&form(&value.to_string())).unwrap();
        assert_eq!(interaction.channel_id.as_deref(), Some("CBR2V3XEX"));
        assert_eq!(interaction.message_ts.as_deref(), Some("1548261231.000200"));
        assert_eq!(interaction.response_url, None);
    }

    #[test]
    fn other_interactions_are_ignored() {
        let shortcut = json!({ "type": "shortcut", "callback_id": "x", "user": { "id": "U1" } });
        assert!(matches!(
            parse_interaction(&form(&shortcut.to_string())),
            Err(SlackPayloadError::Ignored(_))
        ));
        let mut other_action: Value = serde_json::from_str(BLOCK_ACTIONS).unwrap();
        other_action["actions"][0]["action_id"] = "WaXA".into();
        assert!(matches!(
            parse_interaction(&form(&other_action.to_string())),
            Err(SlackPayloadError::Ignored(_))
        ));
    }

    #[test]
    fn bodies_that_are_not_interactions_are_malformed() {
        let mut no_token: Value = serde_json::from_str(BLOCK_ACTIONS).unwrap();
        no_token["actions"][0].as_object_mut().unwrap().remove("value");
        let mut no_user: Value = serde_json::from_str(BLOCK_ACTIONS).unwrap();
        no_user.as_object_mut().unwrap().remove("user");
        let mut no_actions: Value = serde_json::from_str(BLOCK_ACTIONS).unwrap();
        no_actions["actions"] = json!([]);
        for body in [
            BODY.to_vec(),
            b"payload=not%20json".to_vec(),
            BLOCK_ACTIONS.as_bytes().to_vec(),
            form(&no_token.to_string()),
            form(&no_user.to_string()),
            form(&no_actions.to_string()),
        ] {
            assert!(
                matches!(parse_interaction(&body), Err(SlackPayloadError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn decided_message_replaces_the_buttons() {
        let approved = decided_message("Approval requested: acme/shop to production", "alice", true);
        assert_eq!(approved["replace_original"], true);
        assert!(!approved.to_string().contains("\"actions\""));
        insta::assert_json_snapshot!("decided_message_approved", approved);
        let rejected = decided_message("Approval requested: acme/shop to production", "<!channel>", false);
        assert_eq!(rejected["blocks"][1]["text"]["text"], "❌ Rejected by &lt;!channel&gt;");
    }
}

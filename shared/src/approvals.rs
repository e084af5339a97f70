//! Approval and rollback links that cannot be forged.
//!
//! A token binds one action (approve, or roll back), one run, one environment, one approver
//! and an expiry, signed with HMAC-SHA256 under a key from the secret store:
//! `v1.<payload>.<mac>`, both parts base64url. [`verify`] takes the action the caller
//! serves, so an approval link never works as a rollback link nor the other way round.
//! Nothing is stored per token; a decision is recorded in the run, which is what makes a
//! replayed link answer 409 and a racing approve/reject resolve to exactly one winner.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{ApproverId, EnvName, RunId};

/// How long the rollback link sent with a `released` notification works: a week, long
/// enough to cover a release that misbehaves over a weekend, short enough that old links
/// do not pile up. After that, roll back with `slipway rollback`.
pub const ROLLBACK_LINK_VALIDITY: SignedDuration = SignedDuration::from_hours(7 * 24);

/// What a link lets its holder do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Approve or reject promoting `run` to `env`. Tokens without an action are approvals,
    /// so links issued before rollback links existed still verify, and unchanged.
    #[default]
    Approve,
    /// Roll `env` back from `run` to the release before it.
    Rollback,
}

impl Action {
    fn is_approve(&self) -> bool {
        *self == Action::Approve
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Approve => "approving",
            Action::Rollback => "rolling back",
        })
    }
}

/// What a link grants: `approver` may do `action` for `run` in `env` until `expires_at` —
/// decide on promoting it there, or roll the environment back from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalClaim {
    #[serde(rename = "k", default, skip_serializing_if = "Action::is_approve")]
    pub action: Action,
    #[serde(rename = "r")]
    pub run: RunId,
    #[serde(rename = "e")]
    pub env: EnvName,
    #[serde(rename = "a")]
    pub approver: ApproverId,
    #[serde(rename = "x", with = "unix_seconds")]
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this is not a slipway approval link")]
    Malformed,
    #[error("this approval link has been altered or was not issued by this slipway")]
    BadSignature,
    /// A genuine link, but for another action: an approval link opened as a rollback link,
    /// or the other way round.
    #[error("this link is for {found}, not for {expected}")]
    WrongAction { expected: Action, found: Action },
}

const PREFIX: &str = "v1.";

fn mac(key: &SecretString) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes keys of any length")
}

/// Signs a claim into a URL-safe token.
pub fn issue(key: &SecretString, claim: &ApprovalClaim) -> String {
    let payload = serde_json::to_vec(claim).expect("a claim always serialises");
    let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(payload));
    let mut m = mac(key);
    m.update(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
}

/// Checks a token's signature in constant time and returns its claim if it grants
/// `expected`. Expiry is the caller's to judge against its clock.
pub fn verify(key: &SecretString, token: &str, expected: Action) -> Result<ApprovalClaim, TokenError> {
    if token.len() > 1024 || !token.starts_with(PREFIX) {
        return Err(TokenError::Malformed);
    }
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
    let mut m = mac(key);
    m.update(signed.as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(&signed[PREFIX.len()..])
        .map_err(|_| TokenError::Malformed)?;
    let claim: ApprovalClaim = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if claim.action != expected {
        return Err(TokenError::WrongAction {
            expected,
            found: claim.action,
        });
    }
    Ok(claim)
}

mod unix_seconds {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.as_second())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::from_second(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> SecretString {
        SecretString::from(k.to_owned())
    }

    fn claim() -> ApprovalClaim {
        ApprovalClaim {
            action: Action::Approve,
            run: RunId::parse("shop-0123456789abcdef0123456789abcdef01234567").unwrap(),
            env: EnvName::parse("production").unwrap(),
            approver: ApproverId::parse("alice").unwrap(),
            expires_at: "2026-11-22T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_token_round_trips() {
        let token = issue(&key("k1"), &claim());
        assert!(token.starts_with("v1."));
        assert!(
            token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "URL-safe: {token}"
        );
        assert_eq!(verify(&key("k1"), &token, Action::Approve).unwrap(), claim());
    }

    #[test]
    fn another_key_cannot_forge_a_token() {
        let token = issue(&key("attacker"), &claim());
        assert_eq!(
            verify(&key("k1"), &token, Action::Approve),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn any_changed_character_is_detected() {
        let token = issue(&key("k1"), &claim());
        for i in PREFIX.len()..token.len() {
            let mut bytes = token.clone().into_bytes();
            if bytes[i] == b'.' {
                continue;
            }
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered == token {
                continue;
            }
            assert!(
                verify(&key("k1"), &tampered, Action::Approve).is_err(),
                "changing byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn a_claim_for_another_approver_needs_its_own_signature() {
        let token = issue(&key("k1"), &claim());
        let (_, sig) = token.rsplit_once('.').unwrap();
        let bob = ApprovalClaim {
            approver: ApproverId::parse("bob").unwrap(),
            ..claim()
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&bob).unwrap());
        let forged = format!("v1.{forged_payload}.{sig}");
        assert_eq!(
            verify(&key("k1"), &forged, Action::Approve),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in ["", "v1.", "v2.abc.def", "v1.abc", "v1.!!!.???", &"v1.".repeat(400)] {
            assert!(verify(&key("k1"), bad, Action::Approve).is_err(), "{bad}");
        }
        assert_eq!(verify(&key("k1"), "hello", Action::Approve), Err(TokenError::Malformed));
    }

    fn rollback() -> ApprovalClaim {
        ApprovalClaim {
            action: Action::Rollback,
            ..claim()
        }
    }

    fn payload_of(token: &str) -> serde_json::Value {
        let (signed, _) = token.rsplit_once('.').unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&signed[PREFIX.len()..]).unwrap()).unwrap()
    }

    #[test]
    fn a_rollback_token_round_trips_as_a_rollback() {
        let token = issue(&key("k1"), &rollback());
        assert_eq!(verify(&key("k1"), &token, Action::Rollback).unwrap(), rollback());
        assert_eq!(payload_of(&token)["k"], "rollback");
    }

    #[test]
    fn an_approval_token_is_never_a_rollback_token_nor_the_other_way_round() {
        let approval = issue(&key("k1"), &claim());
        assert_eq!(
            verify(&key("k1"), &approval, Action::Rollback),
            Err(TokenError::WrongAction {
                expected: Action::Rollback,
                found: Action::Approve
            })
        );
        let rollback = issue(&key("k1"), &rollback());
        assert_eq!(
            verify(&key("k1"), &rollback, Action::Approve),
            Err(TokenError::WrongAction {
                expected: Action::Approve,
                found: Action::Rollback
            })
        );
        assert_eq!(
            TokenError::WrongAction {
                expected: Action::Rollback,
                found: Action::Approve
            }
            .to_string(),
            "this link is for approving, not for rolling back"
        );
    }

    #[test]
    fn approval_tokens_keep_their_format_so_links_already_sent_still_work() {
        // A token issued before rollback links existed: no `k` in its payload.
        let legacy = format!(
            r#"{{"r":"shop-0123456789abcdef0123456789abcdef01234567","e":"production","a":"alice","x":{}}}"#,
            claim().expires_at.as_second()
        );
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(legacy));
        let mut m = mac(&key("k1"));
        m.update(signed.as_bytes());
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()));
        assert_eq!(verify(&key("k1"), &token, Action::Approve).unwrap(), claim());
        assert_eq!(issue(&key("k1"), &claim()), token, "approvals are issued as before");
    }

    #[test]
    fn turning_an_approval_into_a_rollback_breaks_the_signature() {
        let token = issue(&key("k1"), &claim());
        let (_, sig) = token.rsplit_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&rollback()).unwrap());
        let forged = format!("v1.{forged_payload}.{sig}");
        assert_eq!(
            verify(&key("k1"), &forged, Action::Rollback),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn an_unknown_action_is_malformed() {
        let mut payload = payload_of(&issue(&key("k1"), &rollback()));
        payload["k"] = "deploy".into();
        let signed = format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap())
        );
        let mut m = mac(&key("k1"));
        m.update(signed.as_bytes());
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()));
        assert_eq!(verify(&key("k1"), &token, Action::Rollback), Err(TokenError::Malformed));
    }
}

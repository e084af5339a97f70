//! Approval and rollback links that cannot be forged.
//!
//! A token binds one action (approve, or roll back), one run, one environment, one approver
//! and an expiry, signed with HMAC-SHA256 under a key from the secret store:
//! `v1.<payload>.<mac>`, both parts base64url, or `v1.<key id>.<payload>.<mac>` when the key
//! has an id (`[approvals] key_id`). The MAC covers everything before it, the key id too.
//! [`verify`] takes the action the caller serves, so an approval link never works as a
//! rollback link nor the other way round. Nothing is stored per token; a decision is recorded
//! in the run, which is what makes a replayed link answer 409 and a racing approve/reject
//! resolve to exactly one winner.
//!
//! Key rotation: the caller reads a token's [`key_id`] (before anything else of it is trusted
//! or parsed), looks up the key configured for that id — the current one, or one of the
//! previous keys kept so links they signed work until their own expiry — and [`verify`]s with
//! it. A token without an id is checked with the key configured without one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::{ApproverId, EnvName, IdError, RunId};
use crate::signature::{hmac_sha256, verify_hmac_sha256};

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

/// What a sign-in token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInKind {
    /// A link (`/login/<token>`) that starts a session.
    Link,
    /// A session, kept in a cookie.
    Session,
}

/// A sign-in link's or a session's claim: `who` is signed in to the control room until
/// `expires_at`. Its `s` field keeps it from ever parsing as an approval or rollback link's
/// claim, and the other way round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    #[serde(rename = "s")]
    pub kind: SignInKind,
    #[serde(rename = "a")]
    pub who: ApproverId,
    #[serde(rename = "x", with = "unix_seconds")]
    pub expires_at: Timestamp,
}

impl SignIn {
    /// A sign-in link's claim.
    pub fn link(who: ApproverId, expires_at: Timestamp) -> Self {
        Self {
            kind: SignInKind::Link,
            who,
            expires_at,
        }
    }
}

/// The id of a link-signing key, carried in the links it signs: 1–32 of `A-Z a-z 0-9 _ -`
/// (`"2026-11"`). No dot: it is one part of the token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(IdError {
                kind: "key id",
                value: s.chars().take(40).collect(),
                rule: "expected 1-32 of A-Z a-z 0-9 _ -",
            });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this is not a slipway approval link")]
    Malformed,
    #[error("this approval link has been altered or was not issued by this slipway")]
    BadSignature,
    /// The link names a key id slipway has no key for: a retired key that was dropped from
    /// `previous_keys`, or a forgery. Answered as a forged link is.
    #[error("this approval link was signed with a key this slipway does not hold (or no longer holds)")]
    UnknownKey,
    /// A genuine link, but for another action: an approval link opened as a rollback link,
    /// or the other way round.
    #[error("this link is for {found}, not for {expected}")]
    WrongAction { expected: Action, found: Action },
}

const PREFIX: &str = "v1.";

/// Signs a claim into a URL-safe token with `key`, whose id (if it has one) the token
/// carries.
pub fn issue(key: &SecretString, key_id: Option<&KeyId>, claim: &ApprovalClaim) -> String {
    seal(key, key_id, claim)
}

/// Signs any claim into a token of this module's format (`v1.[<key id>.]<payload>.<mac>`).
/// What a token grants is told apart by its claim's own fields (an approval's `r`, `e` and
/// `k`; a sign-in's `s`), so a token of one kind never parses as another.
pub fn seal<T: Serialize>(key: &SecretString, key_id: Option<&KeyId>, claim: &T) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claim).expect("a claim always serialises"));
    let signed = match key_id {
        Some(id) => format!("{PREFIX}{id}.{payload}"),
        None => format!("{PREFIX}{payload}"),
    };
    let mac = hmac_sha256(key.expose_secret().as_bytes(), &[signed.as_bytes()]);
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// A token cut into its parts; nothing in it is trusted yet.
struct Parts<'a> {
    /// Everything the MAC covers: `v1.[<key id>.]<payload>`.
    signed: &'a str,
    key_id: Option<KeyId>,
    payload: &'a str,
    mac: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > 1024 || !token.starts_with(PREFIX) {
        return Err(TokenError::Malformed);
    }
    let (signed, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let rest = signed.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (key_id, payload) = match rest.split_once('.') {
        None => (None, rest),
        Some((id, payload)) => (Some(KeyId::parse(id).map_err(|_| TokenError::Malformed)?), payload),
    };
    if payload.contains('.') {
        return Err(TokenError::Malformed);
    }
    Ok(Parts {
        signed,
        key_id,
        payload,
        mac,
    })
}

/// The id of the key a token says it was signed with (`None`: a token without one, as all
/// were before key ids existed). Only the token's shape is checked: verify it with the key
/// configured for this id.
pub fn key_id(token: &str) -> Result<Option<KeyId>, TokenError> {
    split(token).map(|parts| parts.key_id)
}

/// Checks a token's signature under `key` in constant time and returns its claim if it
/// grants `expected`. `key` is the one configured for the token's [`key_id`]. Expiry is the
/// caller's to judge against its clock.
pub fn verify(key: &SecretString, token: &str, expected: Action) -> Result<ApprovalClaim, TokenError> {
    let claim: ApprovalClaim = open(key, token)?;
    if claim.action != expected {
        return Err(TokenError::WrongAction {
            expected,
            found: claim.action,
        });
    }
    Ok(claim)
}

/// Checks a token's signature under `key` in constant time, then parses its claim as a `T`:
/// [`TokenError::Malformed`] when it is a genuine token of another kind.
pub fn open<T: serde::de::DeserializeOwned>(key: &SecretString, token: &str) -> Result<T, TokenError> {
    let parts = split(token)?;
    let sig = URL_SAFE_NO_PAD.decode(parts.mac).map_err(|_| TokenError::Malformed)?;
    verify_hmac_sha256(key.expose_secret().as_bytes(), &[parts.signed.as_bytes()], &sig)
        .map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(parts.payload)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
}

pub(crate) mod unix_seconds {
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
        let token = issue(&key("k1"), None, &claim());
        assert!(token.starts_with("v1."));
        assert!(
            token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "URL-safe: {token}"
        );
        assert_eq!(verify(&key("k1"), &token, Action::Approve).unwrap(), claim());
    }

    #[test]
    fn another_key_cannot_forge_a_token() {
        let token = issue(&key("attacker"), None, &claim());
        assert_eq!(
            verify(&key("k1"), &token, Action::Approve),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn any_changed_character_is_detected() {
        let token = issue(&key("k1"), None, &claim());
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
        let token = issue(&key("k1"), None, &claim());
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
        let token = issue(&key("k1"), None, &rollback());
        assert_eq!(verify(&key("k1"), &token, Action::Rollback).unwrap(), rollback());
        assert_eq!(payload_of(&token)["k"], "rollback");
    }

    #[test]
    fn an_approval_token_is_never_a_rollback_token_nor_the_other_way_round() {
        let approval = issue(&key("k1"), None, &claim());
        assert_eq!(
            verify(&key("k1"), &approval, Action::Rollback),
            Err(TokenError::WrongAction {
                expected: Action::Rollback,
                found: Action::Approve
            })
        );
        let rollback = issue(&key("k1"), None, &rollback());
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
        let mac = hmac_sha256(key("k1").expose_secret().as_bytes(), &[signed.as_bytes()]);
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac));
        assert_eq!(verify(&key("k1"), &token, Action::Approve).unwrap(), claim());
        assert_eq!(
            issue(&key("k1"), None, &claim()),
            token,
            "approvals are issued as before"
        );
    }

    fn kid(id: &str) -> KeyId {
        KeyId::parse(id).unwrap()
    }

    #[test]
    fn a_token_carries_its_key_id_and_round_trips() {
        let token = issue(&key("k2"), Some(&kid("2026-11")), &claim());
        assert!(token.starts_with("v1.2026-11."), "{token}");
        assert_eq!(key_id(&token), Ok(Some(kid("2026-11"))));
        assert_eq!(verify(&key("k2"), &token, Action::Approve).unwrap(), claim());
        assert_eq!(
            verify(&key("k1"), &token, Action::Approve),
            Err(TokenError::BadSignature),
            "only the key its id names verifies it"
        );
    }

    #[test]
    fn tokens_without_a_key_id_still_verify() {
        let token = issue(&key("k1"), None, &claim());
        assert_eq!(token.matches('.').count(), 2, "v1.<payload>.<mac>: {token}");
        assert_eq!(key_id(&token), Ok(None));
        assert_eq!(verify(&key("k1"), &token, Action::Approve).unwrap(), claim());
    }

    #[test]
    fn the_key_id_is_signed_too() {
        let token = issue(&key("k1"), Some(&kid("2026-10")), &claim());
        for (from, to) in [("v1.2026-10.", "v1.2026-11."), ("v1.2026-10.", "v1.")] {
            let changed = token.replacen(from, to, 1);
            assert_eq!(
                verify(&key("k1"), &changed, Action::Approve),
                Err(TokenError::BadSignature),
                "{changed}"
            );
        }
        let without = issue(&key("k1"), None, &claim());
        let with_id = without.replacen("v1.", "v1.2026-10.", 1);
        assert_eq!(
            verify(&key("k1"), &with_id, Action::Approve),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_key_id_that_is_not_one_is_malformed() {
        let token = issue(&key("k1"), None, &claim());
        let (_, rest) = token.split_once('.').unwrap();
        for bad in ["", "has space", "x".repeat(33).as_str(), "ü"] {
            let forged = format!("v1.{bad}.{rest}");
            assert_eq!(key_id(&forged), Err(TokenError::Malformed), "{forged}");
            assert_eq!(verify(&key("k1"), &forged, Action::Approve), Err(TokenError::Malformed));
        }
        assert_eq!(key_id("v1.a.b.c.d"), Err(TokenError::Malformed));
    }

    #[test]
    fn key_ids_are_short_and_url_safe() {
        for good in ["2026-11", "a", "key_2", &"x".repeat(32)] {
            assert_eq!(KeyId::parse(good).unwrap().as_str(), good);
        }
        for bad in ["", "2026.11", "a/b", "a b", &"x".repeat(33)] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn turning_an_approval_into_a_rollback_breaks_the_signature() {
        let token = issue(&key("k1"), None, &claim());
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
        let mut payload = payload_of(&issue(&key("k1"), None, &rollback()));
        payload["k"] = "deploy".into();
        let signed = format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap())
        );
        let mac = hmac_sha256(key("k1").expose_secret().as_bytes(), &[signed.as_bytes()]);
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac));
        assert_eq!(verify(&key("k1"), &token, Action::Rollback), Err(TokenError::Malformed));
    }
}

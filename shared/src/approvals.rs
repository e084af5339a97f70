//! Approval links that cannot be forged.
//!
//! A token binds one run, one environment, one approver and an expiry, signed with
//! HMAC-SHA256 under a key from the secret store: `v1.<payload>.<mac>`, both parts
//! base64url. Nothing is stored per token; a decision is recorded in the run, which is what
//! makes a replayed link answer 409 and a racing approve/reject resolve to exactly one winner.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::{ApproverId, EnvName, RunId};

/// What an approval link grants: `approver` may decide on promoting `run` to `env` until
/// `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalClaim {
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

/// Checks a token's signature in constant time and returns its claim. Expiry is the
/// caller's to judge against its clock.
pub fn verify(key: &SecretString, token: &str) -> Result<ApprovalClaim, TokenError> {
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
    serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)
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
        assert_eq!(verify(&key("k1"), &token).unwrap(), claim());
    }

    #[test]
    fn another_key_cannot_forge_a_token() {
        let token = issue(&key("attacker"), &claim());
        assert_eq!(verify(&key("k1"), &token), Err(TokenError::BadSignature));
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
                verify(&key("k1"), &tampered).is_err(),
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
        assert_eq!(verify(&key("k1"), &forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in ["", "v1.", "v2.abc.def", "v1.abc", "v1.!!!.???", &"v1.".repeat(400)] {
            assert!(verify(&key("k1"), bad).is_err(), "{bad}");
        }
        assert_eq!(verify(&key("k1"), "hello"), Err(TokenError::Malformed));
    }
}

//! HMAC-SHA256 webhook signatures, as GitHub sends them in `X-Hub-Signature-256`.
//!
//! One format for every sender: GitHub, the CI result callback and `slipway send` all sign the
//! raw request body with a shared secret and send `sha256=<lowercase hex>`. Verification runs
//! over the raw bytes, before anything parses them, and compares in constant time.
//!
//! This module knows nothing about HTTP: callers pass the header's value and say which header
//! it came from in their own error messages.
//!
//! [`hmac_sha256`] and [`verify_hmac_sha256`] are slipway's one HMAC: every MAC it computes
//! (these signatures, Slack's, the approval and sign-in tokens, the CSRF tokens, the GitLab
//! token comparison) goes through them, and every check is constant-time.
//!
//! [`Rotation`] is the rotation window every inbound check shares (webhook secrets, GitLab's
//! token and signing key, Slack's signing secret, CI secrets, deploy callbacks): the previous
//! secret is accepted beside the current one until a configured time.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::domain::ParamName;

type HmacSha256 = Hmac<Sha256>;

/// The prefix every signature carries.
const PREFIX: &str = "sha256=";

/// Why a request's signature was refused. Every variant means: reject the request (401/403);
/// retrying the same bytes cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature came with the request.
    #[error("the request is not signed: configure the sender with the webhook secret so it signs each request")]
    Missing,
    /// A signature came, but not as `sha256=<64 hex digits>`.
    #[error("the signature is malformed: {0}")]
    Malformed(&'static str),
    /// A well-formed signature that does not match the body under our secret.
    #[error("the signature does not match the body: check that the sender and slipway use the same secret")]
    Mismatch,
}

/// A MAC that did not match: the message was not signed with this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the MAC does not match")]
pub struct MacMismatch;

/// HMAC-SHA256 keyed with `key` over the keyed message.
fn mac(key: &[u8], message: &[&[u8]]) -> HmacSha256 {
    // HMAC is defined for keys of any length (long keys are hashed, short ones padded), so
    // `new_from_slice` never fails for HMAC-SHA256.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in message {
        mac.update(part);
    }
    mac
}

/// The HMAC-SHA256 under `key` of `message`, given as parts that are MACed one after the
/// other (as if concatenated).
pub fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    mac(key, message).finalize().into_bytes().into()
}

/// Checks, in constant time, that `tag` is the HMAC-SHA256 under `key` of `message` (parts
/// as in [`hmac_sha256`]). A tag of the wrong length is a mismatch too.
pub fn verify_hmac_sha256(key: &[u8], message: &[&[u8]], tag: &[u8]) -> Result<(), MacMismatch> {
    mac(key, message).verify_slice(tag).map_err(|_| MacMismatch)
}

/// Signs `body` with `secret`: `sha256=` followed by the HMAC-SHA256 in lowercase hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("{PREFIX}{}", hex::encode(hmac_sha256(secret, &[body])))
}

/// Checks that `header` (the signature header's value, if any) is `sha256=<64 hex>` and is the
/// HMAC-SHA256 of `body` under `secret`. The comparison is constant-time; hex digits may be
/// upper or lower case.
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.map(str::trim).ok_or(SignatureError::Missing)?;
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    let digest = header.strip_prefix(PREFIX).ok_or(SignatureError::Malformed(
        "expected sha256=<64 hex digits> (SHA-1 signatures are not accepted)",
    ))?;
    if digest.len() != 64 {
        return Err(SignatureError::Malformed("expected 64 hex digits after sha256="));
    }
    let expected = hex::decode(digest).map_err(|_| SignatureError::Malformed("expected hex digits after sha256="))?;
    verify_hmac_sha256(secret, &[body], &expected).map_err(|_| SignatureError::Mismatch)
}

/// A secret being rotated out, as read from the secret store.
#[derive(Debug)]
pub struct Retiring {
    pub secret: SecretString,
    /// Its parameter, named in logs (never its value).
    pub param: ParamName,
    /// Accepted before this instant, refused from it on.
    pub until: Timestamp,
}

/// The secrets a sender may sign with: the current one and, while a rotation is configured,
/// the previous one.
#[derive(Debug)]
pub struct Rotation {
    pub current: SecretString,
    pub previous: Option<Retiring>,
}

impl Rotation {
    /// Runs `check` (a constant-time verification) with the current secret and, if that
    /// fails and a previous secret is configured, with the previous one. The previous secret
    /// passes only before its `until`; a request signed with it later is refused with the
    /// current secret's error — the answer to any wrong signature — and logged at WARN.
    /// `what` names the secret in logs ("GitHub webhook secret"); no value is ever logged.
    pub fn check<E>(&self, what: &str, now: Timestamp, check: impl Fn(&str) -> Result<(), E>) -> Result<(), E> {
        let refused = match check(self.current.expose_secret()) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let Some(previous) = &self.previous else {
            return Err(refused);
        };
        if check(previous.secret.expose_secret()).is_err() {
            return Err(refused);
        }
        if now < previous.until {
            tracing::info!(
                secret = what,
                parameter = %previous.param,
                until = %previous.until,
                "request signed with the previous secret: accepted until the rotation ends; switch the sender to the current one"
            );
            Ok(())
        } else {
            tracing::warn!(
                secret = what,
                parameter = %previous.param,
                until = %previous.until,
                "request signed with the retired secret, whose rotation window has ended: refused"
            );
            Err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented example: "Validating webhook deliveries".
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    // RFC 4231, test case 2.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let tag = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            verify_hmac_sha256(b"Jefe", &[b"what do ya want for nothing?"], &tag),
            Ok(())
        );
        assert_eq!(
            verify_hmac_sha256(b"Jefe", &[b"what do ya want for nothing!"], &tag),
            Err(MacMismatch)
        );
        assert_eq!(
            verify_hmac_sha256(b"Jefe", &[b"what do ya want for nothing?"], &tag[..31]),
            Err(MacMismatch),
            "a truncated tag is a mismatch"
        );
    }

    #[test]
    fn signs_githubs_test_vector() {
        assert_eq!(sign(SECRET, BODY), SIGNATURE);
    }

    #[test]
    fn verifies_githubs_test_vector() {
        assert_eq!(verify(SECRET, Some(SIGNATURE), BODY), Ok(()));
    }

    #[test]
    fn verifies_what_it_signs() {
        let body = br#"{"repo":"acme/shop"}"#;
        assert_eq!(verify(b"s3cret", Some(&sign(b"s3cret", body)), body), Ok(()));
        assert_eq!(verify(b"", Some(&sign(b"", body)), body), Ok(()));
    }

    #[test]
    fn accepts_uppercase_hex() {
        let upper = format!("sha256={}", SIGNATURE[PREFIX.len()..].to_uppercase());
        assert_eq!(verify(SECRET, Some(&upper), BODY), Ok(()));
    }

    #[test]
    fn one_changed_byte_in_the_body_is_a_mismatch() {
        let mut body = BODY.to_vec();
        body[0] ^= 0x01;
        assert_eq!(verify(SECRET, Some(SIGNATURE), &body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn another_secret_is_a_mismatch() {
        assert_eq!(
            verify(b"not the secret", Some(SIGNATURE), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_missing_signature_is_missing() {
        assert_eq!(verify(SECRET, None, BODY), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, Some(""), BODY), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_signatures() {
        let hex = &SIGNATURE[PREFIX.len()..];
        for bad in [
            // GitHub's legacy X-Hub-Signature header.
            "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6".to_owned(),
            hex.to_owned(),
            format!("SHA256={hex}"),
            format!("sha256={}", hex.replacen('7', "g", 1)),
            format!("sha256={}", &hex[..63]),
            format!("sha256={}", &hex[..62]),
            format!("sha256={hex}00"),
            "sha256=".to_owned(),
        ] {
            assert!(
                matches!(verify(SECRET, Some(&bad), BODY), Err(SignatureError::Malformed(_))),
                "{bad}"
            );
        }
    }

    const OLD: &str = "old-webhook-secret";
    const NEW: &str = "new-webhook-secret";

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn rotation(previous: Option<&str>) -> Rotation {
        Rotation {
            current: SecretString::from(NEW),
            previous: previous.map(|p| Retiring {
                secret: SecretString::from(p),
                param: ParamName::parse("/slipway/github/webhook-secret-old").unwrap(),
                until: at("2026-12-01T00:00:00Z"),
            }),
        }
    }

    fn signed_with(secret: &str) -> impl Fn(&str) -> Result<(), SignatureError> {
        let header = sign(secret.as_bytes(), BODY);
        move |key: &str| verify(key.as_bytes(), Some(&header), BODY)
    }

    /// Runs `f` with logs captured at every level, and returns them.
    fn logs(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_current_secret_is_accepted_with_or_without_a_rotation() {
        let before = at("2026-11-25T00:00:00Z");
        let after = at("2026-12-02T00:00:00Z");
        for now in [before, after] {
            assert_eq!(rotation(None).check("test", now, signed_with(NEW)), Ok(()));
            assert_eq!(rotation(Some(OLD)).check("test", now, signed_with(NEW)), Ok(()));
        }
    }

    #[test]
    fn the_previous_secret_is_accepted_until_the_rotation_ends_then_refused_as_a_mismatch() {
        let log = logs(|| {
            assert_eq!(
                rotation(Some(OLD)).check("GitHub webhook secret", at("2026-11-30T23:59:59Z"), signed_with(OLD)),
                Ok(())
            );
        });
        assert!(log.contains("signed with the previous secret"), "{log}");
        for now in ["2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"] {
            let log = logs(|| {
                assert_eq!(
                    rotation(Some(OLD)).check("GitHub webhook secret", at(now), signed_with(OLD)),
                    Err(SignatureError::Mismatch),
                    "{now}"
                );
            });
            assert!(log.contains("WARN"), "{log}");
            assert!(log.contains("retired secret"), "{log}");
            assert!(
                log.contains("/slipway/github/webhook-secret-old"),
                "names the parameter: {log}"
            );
            assert!(!log.contains(OLD) && !log.contains(NEW), "no value in the log: {log}");
        }
    }

    #[test]
    fn without_a_rotation_an_old_secret_is_a_mismatch_and_nothing_is_logged() {
        let log = logs(|| {
            assert_eq!(
                rotation(None).check("test", at("2026-11-25T00:00:00Z"), signed_with(OLD)),
                Err(SignatureError::Mismatch)
            );
        });
        assert_eq!(log, "");
    }

    #[test]
    fn a_request_signed_with_neither_gets_the_current_secrets_error() {
        let now = at("2026-11-25T00:00:00Z");
        assert_eq!(
            rotation(Some(OLD)).check("test", now, signed_with("a third secret")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            rotation(Some(OLD)).check("test", now, |key: &str| verify(key.as_bytes(), None, BODY)),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(SignatureError::Mismatch.to_string().contains("same secret"));
        let sha1 = verify(SECRET, Some("sha1=abc"), BODY).unwrap_err().to_string();
        assert!(sha1.contains("sha256="), "{sha1}");
    }
}

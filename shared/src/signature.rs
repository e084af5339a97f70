//! HMAC-SHA256 webhook signatures, as GitHub sends them in `X-Hub-Signature-256`.
//!
//! One format for every sender: GitHub, the CI result callback and `slipway send` all sign the
//! raw request body with a shared secret and send `sha256=<lowercase hex>`. Verification runs
//! over the raw bytes, before anything parses them, and compares in constant time.
//!
//! This module knows nothing about HTTP: callers pass the header's value and say which header
//! it came from in their own error messages.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of any length (long keys are hashed, short ones padded), so
    // `new_from_slice` never fails for HMAC-SHA256.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac
}

/// Signs `body` with `secret`: `sha256=` followed by the HMAC-SHA256 in lowercase hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("{PREFIX}{}", hex::encode(mac(secret, body).finalize().into_bytes()))
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
    mac(secret, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented example: "Validating webhook deliveries".
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

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

    #[test]
    fn messages_say_what_to_do() {
        assert!(SignatureError::Mismatch.to_string().contains("same secret"));
        let sha1 = verify(SECRET, Some("sha1=abc"), BODY).unwrap_err().to_string();
        assert!(sha1.contains("sha256="), "{sha1}");
    }
}

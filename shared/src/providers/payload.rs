//! Reading a git host's JSON payload field by field, so that every error names the field at
//! fault and never echoes an oversized value back to the sender.

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use super::GitRef;
use crate::domain::web_url::scheme_of;
use crate::domain::{BranchName, IdError, WebUrl, clip_quoted};

/// Why a verified payload could not be read. Answered as a 400 naming the field.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The body is not a JSON object. serde's message can quote a value the body holds
    /// (`invalid type: string "…"`): it is clipped ([`clip_quoted`]).
    #[error("the payload is not a JSON object: {}", clip_quoted(&.source.to_string()))]
    Json {
        #[source]
        source: serde_json::Error,
    },
    /// A field is missing or has the wrong shape.
    #[error("the payload's `{field}` is wrong: {reason}")]
    Field {
        /// The field's path in the payload, such as `repository`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field holds an identifier slipway refuses (a repository, branch or commit SHA).
    #[error("the payload's `{field}` is not valid: {source}")]
    InvalidId {
        field: &'static str,
        #[source]
        source: IdError,
    },
}

/// Deserialises `value` as field `field`. A type error quotes the value it found, clipped
/// ([`clip_quoted`]) so an oversized one stays out of the response.
pub(super) fn decode<T: DeserializeOwned>(field: &'static str, value: &Value) -> Result<T, PayloadError> {
    T::deserialize(value).map_err(|e| PayloadError::Field {
        field,
        reason: clip_quoted(&e.to_string()),
    })
}

/// Deserialises the raw JSON of field `field`. Errors read as [`decode`]'s: the position
/// serde_json adds (within the field's own text, so of no use to the sender) is left out.
pub(super) fn decode_raw<T: DeserializeOwned>(field: &'static str, raw: &RawValue) -> Result<T, PayloadError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        let message = e.to_string();
        let at = format!(" at line {} column {}", e.line(), e.column());
        PayloadError::Field {
            field,
            reason: clip_quoted(message.strip_suffix(&at).unwrap_or(&message)),
        }
    })
}

/// A link the host sent (`field` names it), if it is one slipway may show: an absolute
/// `http`/`https` URL. Anything else is dropped, not refused — hosts disable hooks that
/// answer 4xx — and logged at debug with its scheme only.
pub(crate) fn link(field: &'static str, raw: Option<String>) -> Option<WebUrl> {
    let raw = raw?;
    match WebUrl::parse(&raw) {
        Ok(url) => Some(url),
        Err(e) => {
            tracing::debug!(field, scheme = %scheme_of(&raw), reason = %e, "dropped a link that is not http(s)");
            None
        }
    }
}

/// A commit's time as the host wrote it (RFC 3339 with an offset:
/// `2026-11-26T09:14:03+01:00`), if it reads as one. Not refused otherwise: the time only
/// feeds the delivery figures, and hosts disable hooks that answer 4xx.
pub(crate) fn commit_time(field: &'static str, raw: Option<&str>) -> Option<jiff::Timestamp> {
    let raw = raw?;
    match raw.parse() {
        Ok(at) => Some(at),
        Err(e) => {
            tracing::debug!(field, reason = %e, "dropped a commit time that does not parse");
            None
        }
    }
}

/// A field at a dotted path under `root` (`project.path_with_namespace`); absent or `null`
/// is `None`.
pub(super) fn optional<T: DeserializeOwned>(root: &Value, field: &'static str) -> Result<Option<T>, PayloadError> {
    let mut value = root;
    for key in field.split('.') {
        match value.get(key) {
            Some(next) => value = next,
            None => return Ok(None),
        }
    }
    if value.is_null() {
        return Ok(None);
    }
    decode(field, value).map(Some)
}

/// A field at a dotted path under `root` that must be there.
pub(super) fn required<T: DeserializeOwned>(root: &Value, field: &'static str) -> Result<T, PayloadError> {
    optional(root, field)?.ok_or(PayloadError::Field {
        field,
        reason: "missing".to_owned(),
    })
}

/// `refs/heads/X` is a branch, `refs/tags/X` a tag, anything else is kept whole.
pub(super) fn git_ref_of(full: &str) -> Result<GitRef, PayloadError> {
    if let Some(branch) = full.strip_prefix("refs/heads/") {
        let branch = BranchName::parse(branch).map_err(|source| PayloadError::InvalidId { field: "ref", source })?;
        Ok(GitRef::Branch(branch))
    } else if let Some(tag) = full.strip_prefix("refs/tags/")
        && !tag.is_empty()
    {
        Ok(GitRef::Tag(tag.to_owned()))
    } else {
        Ok(GitRef::Other(full.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_http_links_are_kept_and_the_rest_are_dropped_not_refused() {
        let kept = link(
            "head_commit.url",
            Some("https://github.com/acme/shop/commit/a1".to_owned()),
        );
        assert_eq!(kept.as_deref(), Some("https://github.com/acme/shop/commit/a1"));
        for bad in ["javascript:alert(1)", "data:text/html,x", "/relative", "not a url"] {
            assert_eq!(link("head_commit.url", Some(bad.to_owned())), None, "{bad}");
        }
        assert_eq!(link("head_commit.url", None), None);
    }

    #[test]
    fn a_field_error_quotes_a_huge_value_clipped() {
        let huge = "x".repeat(600_000);
        let error = required::<u32>(&json!({ "id": huge }), "id").unwrap_err().to_string();
        assert!(error.len() < 300, "{error}");
        assert!(error.contains("(600000 bytes)"), "{error}");
    }
}

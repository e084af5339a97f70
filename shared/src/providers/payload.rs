//! Reading a git host's JSON payload field by field, so that every error names the field at
//! fault and never echoes an oversized value back to the sender.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
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

/// Deserialises the raw JSON of field `field`. A type error quotes the value it found,
/// clipped ([`clip_quoted`]) so an oversized one stays out of the response; the position
/// serde_json adds (within the field's own text, so of no use to the sender) is left out.
fn decode_raw<T: DeserializeOwned>(field: &'static str, raw: &RawValue) -> Result<T, PayloadError> {
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

/// A payload's fields, each kept as the raw JSON the body holds and deserialised only when
/// read, on its own: an error names the field at fault, and the fields slipway never reads
/// (most of a payload: the repository's hundred attributes, the commits' file lists) are
/// checked as JSON but never built into values.
pub(super) struct Fields<'a>(HashMap<String, &'a RawValue>);

impl<'a> Fields<'a> {
    /// The top-level fields of `body`, which must be a JSON object.
    pub(super) fn new(body: &'a [u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(body)
            .map(Self)
            .map_err(|source| PayloadError::Json { source })
    }

    /// A field at a dotted path (`project.path_with_namespace`) that must be there.
    pub(super) fn required<T: DeserializeOwned>(&self, field: &'static str) -> Result<T, PayloadError> {
        self.optional(field)?.ok_or_else(|| PayloadError::Field {
            field,
            reason: "missing".to_owned(),
        })
    }

    /// A field at a dotted path that may be absent or `null`, as may any object on its way
    /// (a step that is not an object counts as absent).
    pub(super) fn optional<T: DeserializeOwned>(&self, field: &'static str) -> Result<Option<T>, PayloadError> {
        let mut steps = field.split('.');
        let first = steps.next().unwrap_or(field);
        let Some(mut raw) = self.0.get(first).copied() else {
            return Ok(None);
        };
        for step in steps {
            // Only the object on the way is read, its members kept raw in turn.
            match serde_json::from_str::<HashMap<String, &RawValue>>(raw.get()) {
                Ok(mut object) => match object.remove(step) {
                    Some(next) => raw = next,
                    None => return Ok(None),
                },
                Err(_) => return Ok(None),
            }
        }
        if raw.get() == "null" {
            return Ok(None);
        }
        decode_raw(field, raw).map(Some)
    }
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
        let body = serde_json::to_vec(&json!({ "id": huge })).unwrap();
        let error = Fields::new(&body)
            .unwrap()
            .required::<u32>("id")
            .unwrap_err()
            .to_string();
        assert!(error.len() < 300, "{error}");
        assert!(error.contains("(600000 bytes)"), "{error}");
    }

    #[test]
    fn a_dotted_field_is_read_through_its_objects_and_its_errors_name_the_whole_path() {
        // Escaped keys, as a host may send them.
        let body = br#"{
            "project": { "path_with_namespace": "acme/shop", "id": "seven", "owner": null },
            "commit_status": { "commit": { "hash": "a1" } },
            "list": [1, 2],
            "esc\"aped": { "k\u0065y": true }
        }"#;
        let fields = Fields::new(body).unwrap();
        assert_eq!(
            fields.required::<String>("project.path_with_namespace").unwrap(),
            "acme/shop"
        );
        assert_eq!(fields.required::<String>("commit_status.commit.hash").unwrap(), "a1");
        assert_eq!(fields.optional::<bool>("esc\"aped.key").unwrap(), Some(true));
        // Absent, null, or through something that is not an object: no value.
        for absent in [
            "project.web_url",
            "project.owner",
            "project.owner.name",
            "list.0",
            "nothing.at_all",
        ] {
            assert_eq!(fields.optional::<String>(absent).unwrap(), None, "{absent}");
        }
        assert_eq!(
            fields.required::<String>("project.web_url").unwrap_err().to_string(),
            "the payload's `project.web_url` is wrong: missing"
        );
        assert_eq!(
            fields.required::<u64>("project.id").unwrap_err().to_string(),
            "the payload's `project.id` is wrong: invalid type: string \"seven\", expected u64"
        );
        for not_an_object in [&b"[1]"[..], b"\"text\"", b"{\"cut\": "] {
            assert!(matches!(Fields::new(not_an_object), Err(PayloadError::Json { .. })));
        }
    }
}

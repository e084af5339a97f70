//! The state store in S3: one JSON object per key, versioned by its ETag, written only with
//! conditional requests (`If-None-Match: *` to create, `If-Match: <etag>` to replace), so a
//! concurrent writer is detected by S3 itself and never lost.
//!
//! The version is the ETag S3 returns. For the single-part puts this adapter makes it is a
//! digest of the content, so writing back byte-identical content yields the same version;
//! every engine write changes the run (its history grows), so that never hides a writer.

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::ports::{BoxError, StateStore, StoreError, StoreKey, Version, Versioned};

/// The content type of every object slipway writes.
const CONTENT_TYPE: &str = "application/json";

/// S3 answered a request without the ETag slipway needs as the object's version.
#[derive(Debug, thiserror::Error)]
#[error("S3 returned no ETag for {0}")]
struct MissingETag(StoreKey);

/// A [`StateStore`] on one S3 bucket, with conditional writes.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    /// A store that keeps its objects in `bucket`, through `client`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A conditional PutObject of `value` at `key`, not yet sent.
    fn put(&self, key: &StoreKey, value: Bytes) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(CONTENT_TYPE)
            .body(ByteStream::from(value))
    }
}

/// How S3 refused a request, as far as the store cares.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// 404 / `NoSuchKey`: there is no such object.
    Missing,
    /// 412 / `PreconditionFailed`: the condition (`If-Match`, `If-None-Match`) did not hold.
    Precondition,
    /// 409 / `ConditionalRequestConflict`: another conditional write to the key was in flight.
    ConcurrentWrite,
    /// Anything else: throttling, a network failure, a 5xx, a permission problem.
    Other,
}

/// Sorts an SDK error into a [`Refusal`] by its error code, or else its HTTP status.
fn refusal<E: ProvideErrorMetadata>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Refusal {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    };
    classify(status, code)
}

/// The [`Refusal`] an HTTP status and S3 error code stand for. The code decides when there
/// is one (a missing *bucket* is a 404 too, but a configuration problem, not a missing
/// object); the status only when S3 sent no code (HEAD-like answers without a body).
fn classify(status: Option<u16>, code: Option<&str>) -> Refusal {
    match (code, status) {
        (Some("NoSuchKey"), _) | (None, Some(404)) => Refusal::Missing,
        (Some("PreconditionFailed"), _) | (None, Some(412)) => Refusal::Precondition,
        (Some("ConditionalRequestConflict"), _) | (None, Some(409)) => Refusal::ConcurrentWrite,
        _ => Refusal::Other,
    }
}

#[async_trait]
impl StateStore for S3Store {
    /// GetObject; `NoSuchKey` (404) is `None`. The version is the object's ETag.
    async fn get(&self, key: &StoreKey) -> Result<Option<Versioned<Bytes>>, StoreError> {
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            Err(e) if refusal(&e) == Refusal::Missing => return Ok(None),
            Err(e) => return Err(StoreError::Unavailable(Box::new(e))),
        };
        let etag = output
            .e_tag()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Unavailable(Box::new(MissingETag(key.clone()))))?;
        let value = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
            .into_bytes();
        Ok(Some(Versioned {
            value,
            version: Version(etag),
        }))
    }

    /// PutObject with `If-None-Match: *`. A 412 means an object is already there:
    /// [`StoreError::AlreadyExists`]. So does a 409 (another conditional write of the same key
    /// is in flight): someone else is creating it, and the caller re-reads.
    async fn create(&self, key: &StoreKey, value: Bytes) -> Result<Version, StoreError> {
        match self.put(key, value).if_none_match("*").send().await {
            Ok(output) => etag_of(key, output.e_tag()),
            Err(e) => match refusal(&e) {
                Refusal::Precondition | Refusal::ConcurrentWrite => Err(StoreError::AlreadyExists(key.clone())),
                Refusal::Missing | Refusal::Other => Err(StoreError::Unavailable(Box::new(e))),
            },
        }
    }

    /// PutObject with `If-Match: <expected>`. Another version (412), no object (404) or a
    /// concurrent conditional write (409) is [`StoreError::Conflict`]: re-read and re-decide.
    async fn replace(&self, key: &StoreKey, value: Bytes, expected: &Version) -> Result<Version, StoreError> {
        match self.put(key, value).if_match(&expected.0).send().await {
            Ok(output) => etag_of(key, output.e_tag()),
            Err(e) => match refusal(&e) {
                Refusal::Precondition | Refusal::Missing | Refusal::ConcurrentWrite => {
                    Err(StoreError::Conflict(key.clone()))
                }
                Refusal::Other => Err(StoreError::Unavailable(Box::new(e))),
            },
        }
    }

    /// ListObjectsV2 under `prefix`, every page, in lexical order. Keys
    /// [`StoreKey::from_listed`] refuses are skipped with a warning.
    async fn list(&self, prefix: &str) -> Result<Vec<StoreKey>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| StoreError::Unavailable(Box::new(e)))?;
            for raw in page.contents().iter().filter_map(|o| o.key()) {
                match StoreKey::from_listed(raw) {
                    Some(key) if raw.starts_with(prefix) => keys.push(key),
                    Some(_) => {}
                    None => tracing::warn!(key = %raw, "skipping a stored key outside the known prefixes"),
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// DeleteObject. S3 answers a delete of a missing key with success, as the port asks.
    async fn remove(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }
}

/// The version a successful put reported.
fn etag_of(key: &StoreKey, etag: Option<&str>) -> Result<Version, StoreError> {
    match etag {
        Some(etag) => Ok(Version(etag.to_owned())),
        None => Err(StoreError::Unavailable(Box::new(MissingETag(key.clone())) as BoxError)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_sorted_by_code_then_status() {
        assert_eq!(classify(Some(404), Some("NoSuchKey")), Refusal::Missing);
        assert_eq!(classify(Some(404), None), Refusal::Missing);
        assert_eq!(classify(Some(412), Some("PreconditionFailed")), Refusal::Precondition);
        assert_eq!(classify(None, Some("PreconditionFailed")), Refusal::Precondition);
        assert_eq!(
            classify(Some(409), Some("ConditionalRequestConflict")),
            Refusal::ConcurrentWrite
        );
        assert_eq!(classify(Some(412), None), Refusal::Precondition);
        assert_eq!(classify(Some(409), None), Refusal::ConcurrentWrite);
        assert_eq!(
            classify(Some(404), Some("NoSuchBucket")),
            Refusal::Other,
            "a missing bucket is not a missing object"
        );
        assert_eq!(classify(Some(503), Some("SlowDown")), Refusal::Other);
        assert_eq!(classify(Some(403), Some("AccessDenied")), Refusal::Other);
        assert_eq!(
            classify(None, None),
            Refusal::Other,
            "a network failure has no response"
        );
    }

    #[test]
    fn a_put_without_an_etag_is_unavailable_not_a_made_up_version() {
        let key = StoreKey::from_listed("runs/x.json").unwrap();
        assert!(matches!(etag_of(&key, None), Err(StoreError::Unavailable(_))));
        assert_eq!(etag_of(&key, Some("\"abc\"")).unwrap(), Version("\"abc\"".into()));
    }
}

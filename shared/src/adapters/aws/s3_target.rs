//! The `s3` deploy target: promotes an artifact that CI stored in S3 to an environment, by
//! copying it into the environment's own area of a bucket and switching a pointer.
//!
//! ```toml
//! [environments.production.deploy]
//! type = "s3"
//! bucket = "shop-site"      # the environment's bucket
//! prefix = "production"     # its area in the bucket; "" is the whole bucket
//! ```
//!
//! **The artifact** (`SLIPWAY_ARTIFACT`, the build's artifact) must be an S3 *prefix*:
//! `s3://<bucket>/<prefix>/`, the trailing slash optional. Every object under it is part of
//! the release. Anything else, or no artifact, and the phase cannot start.
//!
//! **The layout** in `bucket`, under `prefix` (shown as `production/`):
//!
//! ```text
//! production/releases/<run>/<key relative to the artifact prefix>   one copy per release
//! production/current    {"run": …, "sha": …, "artifact": …, "release_prefix": "production/releases/<run>/"}
//! production/previous   the pointer `current` held before it was last switched
//! ```
//!
//! Whatever serves the environment reads `current` and serves the objects under its
//! `release_prefix`.
//!
//! **The phases**, each one idempotent (a phase retried after a crash does the same again):
//!
//! - *backup*: reads `current`. The reference is its `release_prefix` (the raw pointer when it
//!   has none), or `none` on a first deploy, when there is no pointer yet.
//! - *migrate*: skipped; an s3 target has no migrations.
//! - *release*: copies every object under the artifact prefix (every page of the listing) to
//!   `releases/<run>/`, removes objects there that are not in the artifact (left by an earlier
//!   release of another artifact under the same run), saves the old `current` as `previous`,
//!   and points `current` at the new release. The reference is the release prefix. An empty
//!   artifact fails before anything changes. Objects are copied with CopyObject, so each must
//!   be under 5 GB.
//! - *restore*: points `current` back at the release the backup named (`previous` keeps the
//!   pointer it replaces). A backup of `none` has nothing to restore: the rollback's release of
//!   the previous artifact follows anyway.
//!
//! Backup and release check the artifact; migrate and restore do not need one. Each phase
//! runs within the target's `timeout`. The client uses the standard AWS configuration
//! (region, credentials, `AWS_ENDPOINT_URL`), loaded once on first use, with the target's
//! `endpoint_url` (then path-style addressing) and `region` on top.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use jiff::SignedDuration;
use serde::Serialize;

use super::SharedConfig;
use crate::config::DeployTargetConfig;
use crate::domain::RunId;
use crate::ports::{DeployError, DeployReport, DeployRequest, DeployTarget, Phase};

/// Appends one line to a phase's output.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// The backup reference of an environment that has never been released to.
pub const NO_BACKUP: &str = "none";

/// The content type of the pointers this target writes.
const POINTER_TYPE: &str = "application/json";

/// Promotes S3 artifacts; see the [module docs](self).
#[derive(Debug)]
pub struct S3Target {
    sdk: SharedConfig,
}

impl Default for S3Target {
    fn default() -> Self {
        Self::new()
    }
}

impl S3Target {
    /// A target on the standard AWS configuration, loaded from the environment on first use.
    pub fn new() -> Self {
        Self {
            sdk: SharedConfig::from_env(),
        }
    }

    /// A target on `sdk` (an emulator's configuration, say) instead of the environment's.
    /// Each target's `endpoint_url` and `region` still apply on top.
    pub fn with_sdk(sdk: SdkConfig) -> Self {
        Self {
            sdk: SharedConfig::given(sdk),
        }
    }

    /// An S3 client for one target: the shared configuration with its overrides, addressing
    /// buckets path-style whenever either names an endpoint.
    async fn client(&self, endpoint_url: Option<&url::Url>, region: Option<&str>) -> Result<aws_sdk_s3::Client, Stop> {
        let path_style = endpoint_url.is_some() || self.sdk.get().await.endpoint_url().is_some();
        let config = self
            .sdk
            .service::<aws_sdk_s3::config::Builder>(endpoint_url, region)
            .await
            .force_path_style(path_style)
            .build();
        if config.region().is_none() {
            return Err(Stop::Start(NO_REGION.to_owned()));
        }
        Ok(aws_sdk_s3::Client::from_conf(config))
    }
}

#[async_trait]
impl DeployTarget for S3Target {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        let DeployTargetConfig::S3 {
            bucket,
            prefix,
            endpoint_url,
            region,
            timeout,
        } = request.target
        else {
            return Err(DeployError::CouldNotStart {
                reason: format!("the s3 target was handed a {} target", request.target.kind()),
            });
        };
        if request.phase == Phase::Migrate {
            return Ok(DeployReport::skipped("an s3 target has no migrations"));
        }
        let layout = Layout::new(bucket, prefix);
        let mut output = String::new();
        let work = async {
            let client = self.client(endpoint_url.as_ref(), region.as_deref()).await?;
            let target = Target {
                client,
                layout,
                out: &mut output,
            };
            target.run(&request).await
        };
        let outcome = tokio::time::timeout(timeout.unsigned_abs(), work).await;
        finish(request.phase, *timeout, outcome, output)
    }
}

/// Why a phase stopped, before it is told to the engine with the output so far.
#[derive(Debug)]
pub(super) enum Stop {
    /// Nothing was attempted: bad artifact, bad reference, no region.
    Start(String),
    /// The phase ran and failed.
    Fail(String),
}

/// What the phase returned (its reference) or why it stopped, as the engine wants it.
pub(super) fn finish(
    phase: Phase,
    timeout: SignedDuration,
    outcome: Result<Result<Option<String>, Stop>, tokio::time::error::Elapsed>,
    output: String,
) -> Result<DeployReport, DeployError> {
    match outcome {
        Ok(Ok(reference)) => Ok(DeployReport {
            output,
            reference,
            skipped: false,
        }),
        Ok(Err(Stop::Start(reason))) => Err(DeployError::CouldNotStart { reason }),
        Ok(Err(Stop::Fail(reason))) => Err(DeployError::Failed { reason, output }),
        Err(_) => Err(DeployError::Failed {
            reason: format!("the {phase} phase did not finish within {timeout:#}"),
            output,
        }),
    }
}

pub(super) const NO_REGION: &str =
    "no AWS region: set `region` on the deploy target, or AWS_REGION in slipway's environment";

/// What went wrong in an SDK call, in words: the service's error code and message when AWS
/// answered, else the whole chain of causes (timeout, connection refused, …).
pub(super) fn sdk_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(service) = err {
        let e = service.err();
        match (e.code(), e.message()) {
            (Some(code), Some(message)) => return format!("{code}: {message}"),
            (Some(code), None) => return code.to_owned(),
            _ => {}
        }
    }
    DisplayErrorContext(err).to_string()
}

/// Where one environment's releases and pointers live.
#[derive(Debug, Clone)]
struct Layout {
    bucket: String,
    /// `""`, or the prefix's segments joined by `/` with one trailing `/`.
    base: String,
}

impl Layout {
    fn new(bucket: &str, prefix: &str) -> Self {
        let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        let base = if segments.is_empty() {
            String::new()
        } else {
            format!("{}/", segments.join("/"))
        };
        Self {
            bucket: bucket.to_owned(),
            base,
        }
    }

    fn current(&self) -> String {
        format!("{}current", self.base)
    }

    fn previous(&self) -> String {
        format!("{}previous", self.base)
    }

    fn releases(&self) -> String {
        format!("{}releases/", self.base)
    }

    fn release(&self, run: &RunId) -> String {
        format!("{}{run}/", self.releases())
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// The artifact: `s3://<bucket>/<prefix>/`.
#[derive(Debug, PartialEq, Eq)]
struct Artifact {
    bucket: String,
    /// Never empty; always ends in `/`.
    prefix: String,
}

impl Artifact {
    fn parse(artifact: Option<&str>) -> Result<Self, Stop> {
        const EXPECTED: &str = "an s3 target needs the build's artifact to be an S3 prefix, s3://<bucket>/<prefix>/";
        let Some(raw) = artifact.map(str::trim).filter(|a| !a.is_empty()) else {
            return Err(Stop::Start(format!("{EXPECTED}, and the build named no artifact")));
        };
        let parsed = raw.strip_prefix("s3://").and_then(|rest| {
            let (bucket, prefix) = rest.split_once('/')?;
            let prefix = prefix.trim_end_matches('/');
            let ok = !bucket.is_empty() && !bucket.contains(char::is_whitespace) && !prefix.is_empty();
            ok.then(|| Artifact {
                bucket: bucket.to_owned(),
                prefix: format!("{prefix}/"),
            })
        });
        parsed.ok_or_else(|| Stop::Start(format!("{EXPECTED}, not {raw:?}")))
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The pointer this target writes to `current`.
#[derive(Debug, Serialize)]
struct Pointer<'a> {
    run: &'a str,
    sha: &'a str,
    artifact: Option<&'a str>,
    release_prefix: &'a str,
}

impl Pointer<'_> {
    fn to_json(&self) -> Result<Vec<u8>, Stop> {
        serde_json::to_vec(self).map_err(|e| Stop::Fail(format!("cannot write the release pointer: {e}")))
    }
}

/// The release a stored pointer names, if it is a pointer with a `release_prefix`.
fn release_prefix_of(pointer: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(pointer).ok()?;
    value.get("release_prefix")?.as_str().map(str::to_owned)
}

/// The run a stored pointer names, for the output.
fn run_of(pointer: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(pointer).ok()?;
    value.get("run")?.as_str().map(str::to_owned)
}

/// One phase's work on one environment.
struct Target<'o> {
    client: aws_sdk_s3::Client,
    layout: Layout,
    out: &'o mut String,
}

impl Target<'_> {
    async fn run(mut self, request: &DeployRequest<'_>) -> Result<Option<String>, Stop> {
        match request.phase {
            Phase::Backup => {
                Artifact::parse(request.artifact)?;
                self.backup().await
            }
            Phase::Release => {
                let artifact = Artifact::parse(request.artifact)?;
                self.release(&artifact, request.run, request.sha).await
            }
            Phase::Restore => self.restore(request.backup).await,
            Phase::Migrate => Ok(None),
        }
    }

    async fn backup(&mut self) -> Result<Option<String>, Stop> {
        let current = self.layout.current();
        let Some(pointer) = self.read(&current).await? else {
            say!(
                self.out,
                "no release yet ({} does not exist): nothing to back up",
                self.layout.url(&current)
            );
            return Ok(Some(NO_BACKUP.to_owned()));
        };
        let reference = match release_prefix_of(&pointer) {
            Some(prefix) => prefix,
            None => String::from_utf8_lossy(&pointer).trim().to_owned(),
        };
        if reference.is_empty() {
            return Err(Stop::Fail(format!(
                "{} is empty: it names no release to back up",
                self.layout.url(&current)
            )));
        }
        say!(
            self.out,
            "current release: {} (run {})",
            self.layout.url(&reference),
            run_of(&pointer).as_deref().unwrap_or("unknown")
        );
        Ok(Some(reference))
    }

    async fn release(&mut self, artifact: &Artifact, run: &RunId, sha: &str) -> Result<Option<String>, Stop> {
        let release = self.layout.release(run);
        if artifact.bucket == self.layout.bucket && release.starts_with(&artifact.prefix) {
            return Err(Stop::Start(format!(
                "the artifact {} contains the release area {}: copying it there would copy the copies",
                artifact.url(),
                self.layout.url(&release)
            )));
        }
        let objects = self.list(&artifact.bucket, &artifact.prefix).await?;
        let relative: BTreeSet<&str> = objects
            .iter()
            .filter_map(|key| key.strip_prefix(&artifact.prefix))
            .filter(|rel| !rel.is_empty())
            .collect();
        if relative.is_empty() {
            return Err(Stop::Fail(format!(
                "artifact {} is empty: there is no object under it",
                artifact.url()
            )));
        }
        for rel in &relative {
            let source = format!("{}{rel}", artifact.prefix);
            let destination = format!("{release}{rel}");
            self.client
                .copy_object()
                .bucket(&self.layout.bucket)
                .key(&destination)
                .copy_source(copy_source(&artifact.bucket, &source))
                .send()
                .await
                .map_err(|e| {
                    Stop::Fail(format!(
                        "copying s3://{}/{source} to {} failed: {}",
                        artifact.bucket,
                        self.layout.url(&destination),
                        sdk_error(&e)
                    ))
                })?;
        }
        let stale: Vec<String> = self
            .list(&self.layout.bucket, &release)
            .await?
            .into_iter()
            .filter(|key| key.strip_prefix(&release).is_some_and(|rel| !relative.contains(rel)))
            .collect();
        for key in &stale {
            self.client
                .delete_object()
                .bucket(&self.layout.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    Stop::Fail(format!(
                        "removing the stale {} failed: {}",
                        self.layout.url(key),
                        sdk_error(&e)
                    ))
                })?;
        }
        let objects = |n: usize| if n == 1 { "object" } else { "objects" };
        let copied = relative.len();
        say!(
            self.out,
            "copied {copied} {} from {} to {}",
            objects(copied),
            artifact.url(),
            self.layout.url(&release)
        );
        if !stale.is_empty() {
            say!(
                self.out,
                "removed {} stale {} from an earlier release",
                stale.len(),
                objects(stale.len())
            );
        }
        let old = self.read(&self.layout.current()).await?;
        if let Some(old) = &old
            && release_prefix_of(old).as_deref() != Some(release.as_str())
        {
            self.write(&self.layout.previous(), old.clone()).await?;
            say!(
                self.out,
                "previous → {}",
                run_of(old).as_deref().unwrap_or("the earlier pointer")
            );
        }
        let url = artifact.url();
        let pointer = Pointer {
            run: run.as_str(),
            sha,
            artifact: Some(&url),
            release_prefix: &release,
        };
        self.write(&self.layout.current(), pointer.to_json()?).await?;
        say!(self.out, "current → {run}");
        Ok(Some(release))
    }

    async fn restore(&mut self, backup: Option<&str>) -> Result<Option<String>, Stop> {
        let Some(backup) = backup.map(str::trim).filter(|b| !b.is_empty()) else {
            return Err(Stop::Start(
                "the restore phase needs the reference the backup phase returned, and none was given".to_owned(),
            ));
        };
        if backup == NO_BACKUP {
            say!(self.out, "nothing to restore (no earlier release)");
            return Ok(None);
        }
        let (pointer, release) = if backup.starts_with('{') {
            // A backup of a pointer this target did not write: put it back as it was.
            if serde_json::from_str::<serde_json::Value>(backup).is_err() {
                return Err(Stop::Start(format!("the backup reference {backup:?} is not JSON")));
            }
            (backup.as_bytes().to_vec(), release_prefix_of(backup.as_bytes()))
        } else {
            (self.pointer_to(backup).await?, Some(backup.to_owned()))
        };
        let current = self.layout.current();
        let old = self.read(&current).await?;
        if let Some(old) = &old {
            let same = match &release {
                Some(release) => release_prefix_of(old).as_deref() == Some(release.as_str()),
                None => old.as_slice() == pointer.as_slice(),
            };
            if same {
                say!(
                    self.out,
                    "{} already points at the backed-up release: nothing to change",
                    self.layout.url(&current)
                );
                return Ok(release);
            }
            self.write(&self.layout.previous(), old.clone()).await?;
            say!(
                self.out,
                "previous → {}",
                run_of(old).as_deref().unwrap_or("the replaced pointer")
            );
        }
        self.write(&current, pointer.clone()).await?;
        let restored = run_of(&pointer)
            .or_else(|| release.as_ref().map(|r| self.layout.url(r)))
            .unwrap_or_else(|| "the backed-up pointer".to_owned());
        say!(self.out, "current → {restored} (restored)");
        Ok(release)
    }

    /// The pointer to write to put a release back: the saved `previous` pointer when it names
    /// that release (the usual case), else one made from the release prefix itself.
    async fn pointer_to(&self, release: &str) -> Result<Vec<u8>, Stop> {
        let releases = self.layout.releases();
        let run = release
            .strip_prefix(&releases)
            .and_then(|rest| rest.strip_suffix('/'))
            .filter(|run| !run.is_empty() && !run.contains('/'));
        let Some(run) = run else {
            return Err(Stop::Start(format!(
                "the backup reference {release:?} is not a release of {} (expected {}<run>/)",
                self.layout.url(&self.layout.base),
                releases
            )));
        };
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.layout.bucket)
            .prefix(release)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| {
                Stop::Fail(format!(
                    "listing {} failed: {}",
                    self.layout.url(release),
                    sdk_error(&e)
                ))
            })?;
        if listed.contents().is_empty() {
            return Err(Stop::Fail(format!(
                "the backed-up release {} has no objects any more: refusing to point current at it",
                self.layout.url(release)
            )));
        }
        if let Some(previous) = self.read(&self.layout.previous()).await?
            && release_prefix_of(&previous).as_deref() == Some(release)
        {
            return Ok(previous);
        }
        let sha = RunId::parse(run).map(|id| id.sha().to_string()).unwrap_or_default();
        Pointer {
            run,
            sha: &sha,
            artifact: None,
            release_prefix: release,
        }
        .to_json()
    }

    /// GetObject of `key` in the target bucket; `None` when there is no such object.
    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, Stop> {
        let sent = self
            .client
            .get_object()
            .bucket(&self.layout.bucket)
            .key(key)
            .send()
            .await;
        let object = match sent {
            Ok(object) => object,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                return Err(Stop::Fail(format!(
                    "reading {} failed: {}",
                    self.layout.url(key),
                    sdk_error(&e)
                )));
            }
        };
        let body = object.body.collect().await.map_err(|e| {
            Stop::Fail(format!(
                "reading {} failed: {}",
                self.layout.url(key),
                DisplayErrorContext(&e)
            ))
        })?;
        Ok(Some(body.to_vec()))
    }

    /// PutObject of a pointer at `key` in the target bucket.
    async fn write(&self, key: &str, body: Vec<u8>) -> Result<(), Stop> {
        self.client
            .put_object()
            .bucket(&self.layout.bucket)
            .key(key)
            .content_type(POINTER_TYPE)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| Stop::Fail(format!("writing {} failed: {}", self.layout.url(key), sdk_error(&e))))?;
        Ok(())
    }

    /// Every key under `prefix` in `bucket`, every page of the listing.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, Stop> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| Stop::Fail(format!("listing s3://{bucket}/{prefix} failed: {}", sdk_error(&e))))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key()).map(str::to_owned));
        }
        Ok(keys)
    }
}

/// CopyObject's `x-amz-copy-source`: `bucket/key`, the key URL-encoded (`/` kept).
fn copy_source(bucket: &str, key: &str) -> String {
    let mut source = format!("{bucket}/");
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            source.push(char::from(byte));
        } else {
            let _ = write!(source, "%{byte:02X}");
        }
    }
    source
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_double_their_slashes() {
        for (prefix, current, releases) in [
            ("", "current", "releases/"),
            ("/", "current", "releases/"),
            ("web", "web/current", "web/releases/"),
            ("web/", "web/current", "web/releases/"),
            ("/sites//web/", "sites/web/current", "sites/web/releases/"),
        ] {
            let layout = Layout::new("b", prefix);
            assert_eq!(layout.current(), current, "{prefix:?}");
            assert_eq!(layout.releases(), releases, "{prefix:?}");
            assert_eq!(layout.previous().replace("previous", "current"), current);
        }
    }

    #[test]
    fn artifacts_must_be_s3_prefixes() {
        let parsed = |raw| Artifact::parse(Some(raw)).ok();
        let artifact = |bucket: &str, prefix: &str| {
            Some(Artifact {
                bucket: bucket.into(),
                prefix: prefix.into(),
            })
        };
        assert_eq!(parsed("s3://ci/artifacts/abc/"), artifact("ci", "artifacts/abc/"));
        assert_eq!(parsed("s3://ci/artifacts/abc"), artifact("ci", "artifacts/abc/"));
        for bad in ["", "https://ci/a/", "s3://ci", "s3://ci/", "s3:///a/", "/tmp/build"] {
            assert!(parsed(bad).is_none(), "{bad:?}");
        }
        assert!(matches!(Artifact::parse(None), Err(Stop::Start(m)) if m.contains("s3://<bucket>/<prefix>/")));
    }

    #[test]
    fn copy_sources_are_url_encoded() {
        assert_eq!(copy_source("ci", "a/b c/ü+.txt"), "ci/a/b%20c/%C3%BC%2B.txt");
    }
}

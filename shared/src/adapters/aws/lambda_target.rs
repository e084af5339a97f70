//! The `lambda` deploy target: deploys a zip from S3 to a Lambda function and moves an alias
//! (the name callers invoke) to the version it publishes.
//!
//! ```toml
//! [environments.production.deploy]
//! type = "lambda"
//! function = "shop-api"
//! alias = "live"
//! ```
//!
//! **The artifact** (`SLIPWAY_ARTIFACT`, the build's artifact) must be the deployment package
//! in S3: `s3://<bucket>/<key>.zip`, in the function's region. Anything else, or no artifact,
//! and the phase cannot start.
//!
//! **The phases**, each one idempotent (a phase retried after a crash does the same again):
//!
//! - *backup*: GetAlias. The reference is the version the alias points at, or `none` when the
//!   alias does not exist yet (a first deploy). A function that does not exist fails.
//! - *migrate*: skipped; a lambda target has no migrations.
//! - *release*: UpdateFunctionCode from the artifact, then GetFunctionConfiguration every
//!   second until the update is done (`LastUpdateStatus` `Successful`; `Failed` fails with
//!   Lambda's reason), PublishVersion of exactly that code, and UpdateAlias to the new version
//!   (CreateAlias when there is no alias yet). The reference is the new version. A retry
//!   leaves the alias on the same code: Lambda publishes no new version of unchanged code.
//! - *restore*: UpdateAlias back to the version the backup named. A backup of `none` has
//!   nothing to restore: the rollback's release of the previous artifact follows anyway.
//!
//! Backup and release check the artifact; migrate and restore do not need one. Each phase
//! runs within the target's `timeout`, polling included. The client uses the standard AWS
//! configuration (region, credentials, `AWS_ENDPOINT_URL`), loaded once on first use, with the
//! target's `endpoint_url` and `region` on top.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_lambda::types::LastUpdateStatus;

use super::SharedConfig;
use super::s3_target::{NO_BACKUP, NO_REGION, Stop, finish, sdk_error};
use crate::config::DeployTargetConfig;
use crate::ports::{DeployError, DeployReport, DeployRequest, DeployTarget, Phase};

/// Appends one line to a phase's output.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// How often a code update's progress is read.
const POLL: Duration = Duration::from_secs(1);

/// Deploys Lambda functions; see the [module docs](self).
#[derive(Debug)]
pub struct LambdaTarget {
    sdk: SharedConfig,
}

impl Default for LambdaTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl LambdaTarget {
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

    /// A Lambda client for one target: the shared configuration with its overrides.
    async fn client(
        &self,
        endpoint_url: Option<&url::Url>,
        region: Option<&str>,
    ) -> Result<aws_sdk_lambda::Client, Stop> {
        let config = self
            .sdk
            .service::<aws_sdk_lambda::config::Builder>(endpoint_url, region)
            .await
            .build();
        if config.region().is_none() {
            return Err(Stop::Start(NO_REGION.to_owned()));
        }
        Ok(aws_sdk_lambda::Client::from_conf(config))
    }
}

#[async_trait]
impl DeployTarget for LambdaTarget {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        let DeployTargetConfig::Lambda {
            function,
            alias,
            endpoint_url,
            region,
            timeout,
        } = request.target
        else {
            return Err(DeployError::CouldNotStart {
                reason: format!("the lambda target was handed a {} target", request.target.kind()),
            });
        };
        if request.phase == Phase::Migrate {
            return Ok(DeployReport::skipped("a lambda target has no migrations"));
        }
        let mut output = String::new();
        let work = async {
            let client = self.client(endpoint_url.as_ref(), region.as_deref()).await?;
            let target = Target {
                client,
                function,
                alias,
                out: &mut output,
            };
            target.run(&request).await
        };
        let outcome = tokio::time::timeout(timeout.unsigned_abs(), work).await;
        finish(request.phase, *timeout, outcome, output)
    }
}

/// The artifact: `s3://<bucket>/<key>`, a zip.
#[derive(Debug, PartialEq, Eq)]
struct Package {
    bucket: String,
    key: String,
}

impl Package {
    fn parse(artifact: Option<&str>) -> Result<Self, Stop> {
        const EXPECTED: &str = "a lambda target needs the build's artifact to be a zip in S3, s3://<bucket>/<key>.zip";
        let Some(raw) = artifact.map(str::trim).filter(|a| !a.is_empty()) else {
            return Err(Stop::Start(format!("{EXPECTED}, and the build named no artifact")));
        };
        let parsed = raw.strip_prefix("s3://").and_then(|rest| {
            let (bucket, key) = rest.split_once('/')?;
            let ok =
                !bucket.is_empty() && !bucket.contains(char::is_whitespace) && !key.is_empty() && !key.ends_with('/');
            ok.then(|| Package {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })
        });
        parsed.ok_or_else(|| Stop::Start(format!("{EXPECTED}, not {raw:?}")))
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// One phase's work on one function.
struct Target<'a> {
    client: aws_sdk_lambda::Client,
    function: &'a str,
    alias: &'a str,
    out: &'a mut String,
}

impl Target<'_> {
    async fn run(mut self, request: &DeployRequest<'_>) -> Result<Option<String>, Stop> {
        match request.phase {
            Phase::Backup => {
                Package::parse(request.artifact)?;
                self.backup().await
            }
            Phase::Release => {
                let package = Package::parse(request.artifact)?;
                self.release(&package, request.run.as_str()).await
            }
            Phase::Restore => self.restore(request.backup).await,
            Phase::Migrate => Ok(None),
        }
    }

    async fn backup(&mut self) -> Result<Option<String>, Stop> {
        let sent = self
            .client
            .get_alias()
            .function_name(self.function)
            .name(self.alias)
            .send()
            .await;
        match sent {
            Ok(alias) => {
                let Some(version) = alias.function_version().filter(|v| !v.is_empty()) else {
                    return Err(Stop::Fail(format!(
                        "alias {} of function {} names no version",
                        self.alias, self.function
                    )));
                };
                say!(
                    self.out,
                    "function {}: alias {} is at version {version}",
                    self.function,
                    self.alias
                );
                Ok(Some(version.to_owned()))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                // The alias, or the whole function, is missing: only the first is a first deploy.
                self.client
                    .get_function_configuration()
                    .function_name(self.function)
                    .send()
                    .await
                    .map_err(|e| Stop::Fail(format!("reading function {} failed: {}", self.function, sdk_error(&e))))?;
                say!(
                    self.out,
                    "function {}: no alias {} yet: nothing to back up",
                    self.function,
                    self.alias
                );
                Ok(Some(NO_BACKUP.to_owned()))
            }
            Err(e) => Err(Stop::Fail(format!(
                "reading alias {} of function {} failed: {}",
                self.alias,
                self.function,
                sdk_error(&e)
            ))),
        }
    }

    async fn release(&mut self, package: &Package, run: &str) -> Result<Option<String>, Stop> {
        // A retry may find the last attempt's update still running; Lambda refuses another.
        self.settled(false).await?;
        let updated = self
            .client
            .update_function_code()
            .function_name(self.function)
            .s3_bucket(&package.bucket)
            .s3_key(&package.key)
            .send()
            .await
            .map_err(|e| {
                Stop::Fail(format!(
                    "updating the code of function {} from {} failed: {}",
                    self.function,
                    package.url(),
                    sdk_error(&e)
                ))
            })?;
        say!(
            self.out,
            "function {}: code updated from {}",
            self.function,
            package.url()
        );
        self.settled(true).await?;
        let mut publish = self
            .client
            .publish_version()
            .function_name(self.function)
            .description(format!("slipway run {run}"));
        if let Some(sha) = updated.code_sha256() {
            publish = publish.code_sha256(sha);
        }
        let published = publish.send().await.map_err(|e| {
            Stop::Fail(format!(
                "publishing a version of function {} failed: {}",
                self.function,
                sdk_error(&e)
            ))
        })?;
        let Some(version) = published.version().filter(|v| !v.is_empty()).map(str::to_owned) else {
            return Err(Stop::Fail(format!(
                "publishing a version of function {} returned no version number",
                self.function
            )));
        };
        say!(self.out, "function {}: published version {version}", self.function);
        self.point_alias(&version, true).await?;
        say!(
            self.out,
            "function {}: alias {} → version {version}",
            self.function,
            self.alias
        );
        Ok(Some(version))
    }

    async fn restore(&mut self, backup: Option<&str>) -> Result<Option<String>, Stop> {
        let Some(version) = backup.map(str::trim).filter(|b| !b.is_empty()) else {
            return Err(Stop::Start(
                "the restore phase needs the reference the backup phase returned, and none was given".to_owned(),
            ));
        };
        if version == NO_BACKUP {
            say!(self.out, "nothing to restore (no earlier release)");
            return Ok(None);
        }
        if version != "$LATEST" && !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Stop::Start(format!(
                "the backup reference {version:?} is not a version of function {}",
                self.function
            )));
        }
        self.point_alias(version, false).await?;
        say!(
            self.out,
            "function {}: alias {} → version {version} (restored)",
            self.function,
            self.alias
        );
        Ok(Some(version.to_owned()))
    }

    /// Moves the alias to `version`; creates it when `create` and it does not exist yet.
    async fn point_alias(&self, version: &str, create: bool) -> Result<(), Stop> {
        let updated = self
            .client
            .update_alias()
            .function_name(self.function)
            .name(self.alias)
            .function_version(version)
            .send()
            .await;
        let missing = match &updated {
            Ok(_) => return Ok(()),
            Err(e) => e
                .as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()),
        };
        if !(missing && create) {
            let reason = updated.err().map(|e| sdk_error(&e)).unwrap_or_default();
            return Err(Stop::Fail(format!(
                "moving alias {} of function {} to version {version} failed: {reason}",
                self.alias, self.function
            )));
        }
        self.client
            .create_alias()
            .function_name(self.function)
            .name(self.alias)
            .function_version(version)
            .description("managed by slipway")
            .send()
            .await
            .map_err(|e| {
                Stop::Fail(format!(
                    "creating alias {} of function {} at version {version} failed: {}",
                    self.alias,
                    self.function,
                    sdk_error(&e)
                ))
            })?;
        Ok(())
    }

    /// Waits (reading every [`POLL`]) until no code update of the function is in progress.
    /// When `strict`, an update that failed fails the phase, with Lambda's reason.
    async fn settled(&self, strict: bool) -> Result<(), Stop> {
        loop {
            let config = self
                .client
                .get_function_configuration()
                .function_name(self.function)
                .send()
                .await
                .map_err(|e| Stop::Fail(format!("reading function {} failed: {}", self.function, sdk_error(&e))))?;
            match config.last_update_status() {
                Some(LastUpdateStatus::InProgress) => tokio::time::sleep(POLL).await,
                Some(LastUpdateStatus::Failed) if strict => {
                    let reason = config.last_update_status_reason().unwrap_or("no reason given");
                    let code = config
                        .last_update_status_reason_code()
                        .map(|c| format!(" ({})", c.as_str()))
                        .unwrap_or_default();
                    return Err(Stop::Fail(format!(
                        "Lambda could not update the code of function {}: {reason}{code}",
                        self.function
                    )));
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_must_be_objects_in_s3() {
        assert_eq!(
            Package::parse(Some("s3://ci/builds/abc/api.zip")).ok(),
            Some(Package {
                bucket: "ci".into(),
                key: "builds/abc/api.zip".into()
            })
        );
        for bad in ["", "s3://ci", "s3://ci/", "s3://ci/builds/", "s3:///a.zip", "./api.zip"] {
            assert!(Package::parse(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(Package::parse(None), Err(Stop::Start(m)) if m.contains("s3://<bucket>/<key>.zip")));
    }
}

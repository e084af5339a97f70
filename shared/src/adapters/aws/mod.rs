//! The AWS backend: state in S3 (conditional writes), queues in SQS (with dead-letter
//! queues), secrets in SSM Parameter Store (cached per container). The same engine as the
//! embedded backend, behind the same ports; nothing outside this module names an AWS type.
//!
//! Everything is configured from the environment, read and validated once per process
//! (Lambda container): see [`Settings`]. Region, credentials and endpoint come from the
//! standard AWS environment, so `AWS_ENDPOINT_URL` points every client at an emulator.

pub mod lambda_target;
pub mod s3;
pub mod s3_target;
pub mod sqs;
pub mod ssm;

use std::time::Duration;

use aws_config::{Region, SdkConfig};
use tokio::sync::OnceCell;

use crate::domain::ParamName;

/// The environment variables the AWS backend reads.
pub mod vars {
    pub const STATE_BUCKET: &str = "SLIPWAY_STATE_BUCKET";
    pub const DEPLOY_QUEUE_URL: &str = "SLIPWAY_DEPLOY_QUEUE_URL";
    pub const SMOKE_QUEUE_URL: &str = "SLIPWAY_SMOKE_QUEUE_URL";
    pub const NOTIFY_QUEUE_URL: &str = "SLIPWAY_NOTIFY_QUEUE_URL";
    pub const DEPLOY_DLQ_URL: &str = "SLIPWAY_DEPLOY_DLQ_URL";
    pub const SMOKE_DLQ_URL: &str = "SLIPWAY_SMOKE_DLQ_URL";
    pub const NOTIFY_DLQ_URL: &str = "SLIPWAY_NOTIFY_DLQ_URL";
    /// Every secret parameter the configuration names must live under this path.
    pub const PARAMETER_PREFIX: &str = "SLIPWAY_PARAMETER_PREFIX";
    /// The key of `slipway.toml` in the state bucket.
    pub const CONFIG_KEY: &str = "SLIPWAY_CONFIG_KEY";
    /// How long a secret read from SSM is reused before it is read again.
    pub const SECRETS_TTL: &str = "SLIPWAY_SECRETS_TTL";
    /// Overrides the configuration's `public_url` (a Function URL, say).
    pub const PUBLIC_URL: &str = "SLIPWAY_PUBLIC_URL";
}

/// The SQS queue URLs: one work queue per stage, each with its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    pub deploy: String,
    pub smoke: String,
    pub notify: String,
    pub deploy_dlq: String,
    pub smoke_dlq: String,
    pub notify_dlq: String,
}

/// The AWS backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub bucket: String,
    pub queues: QueueUrls,
    pub parameter_prefix: ParamName,
    pub config_key: String,
    pub secrets_ttl: Duration,
    pub public_url: Option<url::Url>,
}

/// A missing or malformed setting, named.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {problem}")]
    Invalid { name: &'static str, problem: String },
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(SettingsError::Missing(name))
        };
        let url = |name: &'static str| -> Result<String, SettingsError> {
            let value = required(name)?;
            url::Url::parse(&value).map_err(|e| SettingsError::Invalid {
                name,
                problem: format!("{value:?} is not a URL: {e}"),
            })?;
            Ok(value)
        };
        let bucket = required(vars::STATE_BUCKET)?;
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(SettingsError::Invalid {
                name: vars::STATE_BUCKET,
                problem: format!("{bucket:?} is not an S3 bucket name"),
            });
        }
        let prefix = lookup(vars::PARAMETER_PREFIX).unwrap_or_else(|| "/slipway".into());
        let parameter_prefix = ParamName::parse(&prefix).map_err(|e| SettingsError::Invalid {
            name: vars::PARAMETER_PREFIX,
            problem: e.to_string(),
        })?;
        let ttl = lookup(vars::SECRETS_TTL).unwrap_or_else(|| "5m".into());
        let secrets_ttl = ttl
            .parse::<jiff::SignedDuration>()
            .ok()
            .filter(|d| !d.is_negative())
            .map(|d| d.unsigned_abs())
            .ok_or_else(|| SettingsError::Invalid {
                name: vars::SECRETS_TTL,
                problem: format!("{ttl:?} is not a duration like \"5m\""),
            })?;
        let public_url = match lookup(vars::PUBLIC_URL).filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(url::Url::parse(&v).map_err(|e| SettingsError::Invalid {
                name: vars::PUBLIC_URL,
                problem: format!("{v:?}: {e}"),
            })?),
        };
        Ok(Self {
            bucket,
            queues: QueueUrls {
                deploy: url(vars::DEPLOY_QUEUE_URL)?,
                smoke: url(vars::SMOKE_QUEUE_URL)?,
                notify: url(vars::NOTIFY_QUEUE_URL)?,
                deploy_dlq: url(vars::DEPLOY_DLQ_URL)?,
                smoke_dlq: url(vars::SMOKE_DLQ_URL)?,
                notify_dlq: url(vars::NOTIFY_DLQ_URL)?,
            },
            parameter_prefix,
            config_key: lookup(vars::CONFIG_KEY).unwrap_or_else(|| "config/slipway.toml".into()),
            secrets_ttl,
            public_url,
        })
    }
}

/// The shared AWS SDK configuration: region, credentials and endpoint from the standard
/// environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, …), or `endpoint` when given.
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// The AWS configuration an adapter builds its clients from — the deploy targets'
/// (`s3`, `lambda`) and the bake's CloudWatch alarms: the standard environment's
/// ([`sdk_config`]), loaded once on first use, or one given instead (an emulator's, in tests).
/// Each client may then override the endpoint and region for its own resource
/// ([`SharedConfig::service`]).
#[derive(Debug, Default)]
pub struct SharedConfig(OnceCell<SdkConfig>);

impl SharedConfig {
    /// The standard environment's configuration, loaded the first time it is needed.
    pub fn from_env() -> Self {
        Self(OnceCell::new())
    }

    /// `sdk` instead of the environment's.
    pub fn given(sdk: SdkConfig) -> Self {
        Self(OnceCell::new_with(Some(sdk)))
    }

    /// The shared configuration, loading it on first use.
    pub async fn get(&self) -> &SdkConfig {
        self.0.get_or_init(|| sdk_config(None)).await
    }

    /// A service's configuration builder on the shared configuration, with a resource's own
    /// `endpoint_url` (an emulator, a VPC endpoint) and `region` on top. These are set on the
    /// service builder, so they win over the environment's, service-specific ones included.
    pub async fn service<B: ServiceConfig>(&self, endpoint_url: Option<&url::Url>, region: Option<&str>) -> B {
        let mut builder = B::from(self.get().await);
        if let Some(url) = endpoint_url {
            builder = builder.with_endpoint_url(endpoint(url));
        }
        if let Some(region) = region {
            builder = builder.with_region(Region::new(region.to_owned()));
        }
        builder
    }
}

/// A service client's configuration builder that [`SharedConfig::service`] can make.
pub trait ServiceConfig: for<'a> From<&'a SdkConfig> {
    fn with_endpoint_url(self, url: String) -> Self;
    fn with_region(self, region: Region) -> Self;
}

macro_rules! service_config {
    ($($builder:ty),* $(,)?) => {$(
        impl ServiceConfig for $builder {
            fn with_endpoint_url(self, url: String) -> Self {
                self.endpoint_url(url)
            }
            fn with_region(self, region: Region) -> Self {
                self.region(region)
            }
        }
    )*};
}

service_config!(
    aws_sdk_s3::config::Builder,
    aws_sdk_lambda::config::Builder,
    aws_sdk_cloudwatch::config::Builder,
);

/// An endpoint URL as the SDK wants it: `http://host:port`, without the `/` a parsed URL has.
fn endpoint(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// An S3 client; path-style addressing whenever an endpoint is set (emulators serve
/// buckets under the path, not as subdomains).
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = sdk.endpoint_url().is_some();
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env() -> HashMap<&'static str, String> {
        let q = |n: &str| format!("http://127.0.0.1:5000/123456789012/{n}");
        HashMap::from([
            (vars::STATE_BUCKET, "slipway-state".to_owned()),
            (vars::DEPLOY_QUEUE_URL, q("deploy")),
            (vars::SMOKE_QUEUE_URL, q("smoke")),
            (vars::NOTIFY_QUEUE_URL, q("notify")),
            (vars::DEPLOY_DLQ_URL, q("deploy-dlq")),
            (vars::SMOKE_DLQ_URL, q("smoke-dlq")),
            (vars::NOTIFY_DLQ_URL, q("notify-dlq")),
        ])
    }

    fn settings(env: &HashMap<&'static str, String>) -> Result<Settings, SettingsError> {
        Settings::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_apply_and_required_variables_are_named() {
        let s = settings(&env()).unwrap();
        assert_eq!(s.parameter_prefix.as_str(), "/slipway");
        assert_eq!(s.config_key, "config/slipway.toml");
        assert_eq!(s.secrets_ttl, Duration::from_secs(300));
        for name in [vars::STATE_BUCKET, vars::SMOKE_QUEUE_URL, vars::NOTIFY_DLQ_URL] {
            let mut e = env();
            e.remove(name);
            assert_eq!(
                settings(&e).unwrap_err().to_string(),
                format!("environment variable {name} is not set")
            );
        }
    }

    #[tokio::test]
    async fn a_resource_overrides_the_shared_region_and_endpoint() {
        let shared = SharedConfig::given(
            SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(Region::new("eu-west-1"))
                .build(),
        );
        let region = |c: &aws_sdk_lambda::Config| c.region().map(ToString::to_string);
        let plain = shared
            .service::<aws_sdk_lambda::config::Builder>(None, None)
            .await
            .build();
        assert_eq!(region(&plain).as_deref(), Some("eu-west-1"));
        let url: url::Url = "http://127.0.0.1:5000/".parse().unwrap();
        let own = shared
            .service::<aws_sdk_lambda::config::Builder>(Some(&url), Some("us-east-2"))
            .await
            .build();
        assert_eq!(region(&own).as_deref(), Some("us-east-2"));
        assert_eq!(endpoint(&url), "http://127.0.0.1:5000", "no trailing slash for the SDK");
        assert!(
            shared.get().await.endpoint_url().is_none(),
            "the shared configuration is unchanged"
        );
    }

    #[test]
    fn malformed_values_are_refused_by_name() {
        for (name, value) in [
            (vars::STATE_BUCKET, "Not_A_Bucket"),
            (vars::DEPLOY_QUEUE_URL, "not a url"),
            (vars::PARAMETER_PREFIX, "slipway"),
            (vars::SECRETS_TTL, "soon"),
            (vars::PUBLIC_URL, "::"),
        ] {
            let mut e = env();
            e.insert(name, value.to_owned());
            let err = settings(&e).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}

//! slipway wired for AWS: the same [`App`] as the embedded backend, over S3, SQS and SSM.
//!
//! Lambda functions call [`app_from_env`] once per container. `slipway serve --backend aws`
//! and `slipway bootstrap` use [`Names`] to find (or create) a stack's resources by name, on
//! AWS or on an emulator.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use secrecy::ExposeSecret;

use crate::adapters::aws::s3::S3Store;
use crate::adapters::aws::sqs::SqsQueues;
use crate::adapters::aws::ssm::SsmSecrets;
use crate::adapters::aws::{QueueUrls, Settings, SettingsError, s3_client, sdk_config};
use crate::adapters::local::secrets_file::SecretsFile;
use crate::adapters::{Backend, wire};
use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::ports::{BoxError, QueueName, SecretStore};

/// Why slipway could not start on AWS, or a bootstrap failed. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the configuration s3://{bucket}/{key}: upload slipway.toml there (slipway bootstrap does)")]
    ConfigMissing {
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("secret parameter {name} is outside {prefix}, the only path this function may read")]
    OutsidePrefix { name: String, prefix: String },
    #[error("no public URL: set public_url in slipway.toml or SLIPWAY_PUBLIC_URL")]
    NoPublicUrl,
    #[error("{action} failed")]
    Aws {
        action: String,
        #[source]
        source: BoxError,
    },
}

fn aws(action: impl Into<String>) -> impl FnOnce(BoxError) -> CloudError {
    let action = action.into();
    move |source| CloudError::Aws { action, source }
}

/// The names of a stack's resources, for bootstrap and `serve --backend aws`. The SAM
/// template names its own; Lambda functions get theirs from the environment.
#[derive(Debug, Clone)]
pub struct Names {
    pub stack: String,
}

impl Names {
    pub fn bucket(&self) -> String {
        format!("{}-state", self.stack)
    }

    pub fn queue(&self, queue: QueueName) -> String {
        format!("{}-{queue}", self.stack)
    }

    pub fn dead_letter_queue(&self, queue: QueueName) -> String {
        format!("{}-{queue}-dlq", self.stack)
    }
}

/// The visibility timeout of each work queue when slipway creates it: six times the
/// longest its consumer may take, as AWS recommends for Lambda consumers.
pub fn visibility_timeout(queue: QueueName) -> Duration {
    match queue {
        QueueName::Deploy => Duration::from_secs(6 * 900),
        QueueName::Smoke => Duration::from_secs(6 * 300),
        QueueName::Notify => Duration::from_secs(6 * 60),
    }
}

/// How many deliveries a message gets before its dead-letter queue takes it.
pub const MAX_RECEIVES: u32 = 5;

/// For a Lambda function: settings from the environment, the configuration from the state
/// bucket, clients built once.
pub async fn app_from_env() -> Result<App, CloudError> {
    let settings = Settings::from_env()?;
    let sdk = sdk_config(None).await;
    app(&settings, &sdk, None).await
}

/// Wires an [`App`] over AWS. `config` is read from the state bucket when not given.
pub async fn app(settings: &Settings, sdk: &aws_config::SdkConfig, config: Option<Config>) -> Result<App, CloudError> {
    let s3 = s3_client(sdk);
    let config = match config {
        Some(config) => config,
        None => {
            let missing = |source: BoxError| CloudError::ConfigMissing {
                bucket: settings.bucket.clone(),
                key: settings.config_key.clone(),
                source,
            };
            let object = s3
                .get_object()
                .bucket(&settings.bucket)
                .key(&settings.config_key)
                .send()
                .await
                .map_err(|e| missing(Box::new(e)))?;
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| missing(Box::new(e)))?
                .into_bytes();
            let text = String::from_utf8(bytes.to_vec()).map_err(|e| missing(Box::new(e)))?;
            let origin = format!("s3://{}/{}", settings.bucket, settings.config_key);
            Config::parse(&text, Path::new(&origin))?
        }
    };
    crate::embedded::warn_about_ended_rotations(&config, jiff::Timestamp::now());
    let prefix = format!("{}/", settings.parameter_prefix);
    for name in crate::embedded::required_secrets(&config) {
        if !name.as_str().starts_with(&prefix) {
            return Err(CloudError::OutsidePrefix {
                name: name.to_string(),
                prefix: settings.parameter_prefix.to_string(),
            });
        }
    }
    let public_url = settings
        .public_url
        .clone()
        .or_else(|| config.public_url.clone())
        .ok_or(CloudError::NoPublicUrl)?;
    let secrets: Arc<dyn SecretStore> =
        Arc::new(SsmSecrets::new(aws_sdk_ssm::Client::new(sdk)).cached(settings.secrets_ttl));
    let backend = Backend {
        store: Arc::new(S3Store::new(s3, settings.bucket.clone())),
        queue: Arc::new(SqsQueues::new(aws_sdk_sqs::Client::new(sdk), settings.queues.clone())),
        secrets,
        // An S3 read and conditional write take tens of milliseconds.
        write_backoff: std::time::Duration::from_millis(20),
    };
    Ok(wire(config, backend, public_url))
}

/// Finds a stack's queues by name and returns the settings `serve --backend aws` runs with.
pub async fn resolve(sdk: &aws_config::SdkConfig, names: &Names) -> Result<Settings, CloudError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let url =
        |name: String| {
            let sqs = sqs.clone();
            async move {
                let out =
                    sqs.get_queue_url().queue_name(&name).send().await.map_err(|e| {
                        aws(format!("finding queue {name} (run slipway bootstrap first?)"))(Box::new(e))
                    })?;
                out.queue_url
                    .ok_or_else(|| aws(format!("finding queue {name}"))("no URL in the answer".into()))
            }
        };
    Ok(Settings {
        bucket: names.bucket(),
        queues: QueueUrls {
            deploy: url(names.queue(QueueName::Deploy)).await?,
            smoke: url(names.queue(QueueName::Smoke)).await?,
            notify: url(names.queue(QueueName::Notify)).await?,
            deploy_dlq: url(names.dead_letter_queue(QueueName::Deploy)).await?,
            smoke_dlq: url(names.dead_letter_queue(QueueName::Smoke)).await?,
            notify_dlq: url(names.dead_letter_queue(QueueName::Notify)).await?,
        },
        parameter_prefix: crate::domain::ParamName::parse("/slipway").expect("valid"),
        config_key: "config/slipway.toml".into(),
        secrets_ttl: Duration::from_secs(300),
        public_url: None,
    })
}

/// Creates a stack's resources — the versioned state bucket, the work queues with their
/// dead-letter queues and redrive policies, the secret parameters — and uploads the
/// configuration. Safe to run again: what exists is updated, not duplicated.
pub async fn bootstrap(
    sdk: &aws_config::SdkConfig,
    names: &Names,
    config_text: &str,
    secrets: &SecretsFile,
) -> Result<Settings, CloudError> {
    let config = Config::parse(config_text, Path::new("slipway.toml"))?;
    // Everything is checked before anything is created: a refused bootstrap leaves nothing half-done.
    let missing: Vec<String> = crate::embedded::required_secrets(&config)
        .into_iter()
        .filter(|n| !secrets.names().any(|have| have == *n))
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(aws("checking secrets")(
            format!("the secrets file lacks {}", missing.join(", ")).into(),
        ));
    }
    crate::embedded::check_secret_forms(&config, secrets)
        .await
        .map_err(|(name, reason)| aws("checking secrets")(format!("{name} is not usable: {reason}").into()))?;
    crate::embedded::warn_about_ended_rotations(&config, jiff::Timestamp::now());
    let s3 = s3_client(sdk);
    let bucket = names.bucket();
    let created = s3.create_bucket().bucket(&bucket).send().await;
    if let Err(e) = created {
        let code = e
            .as_service_error()
            .and_then(|s| s.meta().code())
            .unwrap_or_default()
            .to_owned();
        if code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
            return Err(aws(format!("creating bucket {bucket}"))(Box::new(e)));
        }
    }
    let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(versioning)
        .send()
        .await
        .map_err(|e| aws(format!("enabling versioning on {bucket}"))(Box::new(e)))?;

    let sqs = aws_sdk_sqs::Client::new(sdk);
    for queue in QueueName::ALL {
        let dlq_name = names.dead_letter_queue(queue);
        let dlq = sqs
            .create_queue()
            .queue_name(&dlq_name)
            .attributes(QueueAttributeName::MessageRetentionPeriod, (14 * 24 * 3600).to_string())
            .send()
            .await
            .map_err(|e| aws(format!("creating queue {dlq_name}"))(Box::new(e)))?;
        let dlq_url = dlq.queue_url.unwrap_or_default();
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| aws(format!("reading {dlq_name}"))(Box::new(e)))?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_default();
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVES}).to_string();
        let name = names.queue(queue);
        let created = sqs
            .create_queue()
            .queue_name(&name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_timeout(queue).as_secs().to_string(),
            )
            .attributes(QueueAttributeName::RedrivePolicy, redrive.clone())
            .send()
            .await
            .map_err(|e| aws(format!("creating queue {name}"))(Box::new(e)))?;
        sqs.set_queue_attributes()
            .queue_url(created.queue_url.unwrap_or_default())
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .map_err(|e| aws(format!("setting the redrive policy of {name}"))(Box::new(e)))?;
    }

    let ssm = aws_sdk_ssm::Client::new(sdk);
    for name in secrets.names() {
        let value = secrets
            .get(name)
            .await
            .map_err(|e| aws(format!("reading {name}"))(Box::new(e)))?;
        ssm.put_parameter()
            .name(name.as_str())
            .value(value.expose_secret())
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| aws(format!("putting parameter {name}"))(Box::new(e)))?;
    }

    let settings = resolve(sdk, names).await?;
    s3.put_object()
        .bucket(&bucket)
        .key(&settings.config_key)
        .content_type("application/toml")
        .body(config_text.as_bytes().to_vec().into())
        .send()
        .await
        .map_err(|e| {
            aws(format!(
                "uploading the configuration to s3://{bucket}/{}",
                settings.config_key
            ))(Box::new(e))
        })?;
    Ok(settings)
}

//! Secrets in SSM Parameter Store: SecureString parameters, read decrypted, one at a time.
//! Values only ever exist as [`SecretString`]; nothing here logs them. Wrap the store in
//! [`SsmSecrets::cached`] so a warm Lambda container does not call SSM on every event.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use secrecy::SecretString;

use crate::adapters::cache::CachedSecrets;
use crate::domain::ParamName;
use crate::ports::{SecretError, SecretStore};

/// SSM answered without a value for a parameter that exists.
#[derive(Debug, thiserror::Error)]
#[error("SSM returned parameter {0} without a value")]
struct NoValue(ParamName);

/// A [`SecretStore`] on SSM Parameter Store.
#[derive(Debug, Clone)]
pub struct SsmSecrets {
    client: aws_sdk_ssm::Client,
}

impl SsmSecrets {
    /// Secrets read through `client`.
    pub fn new(client: aws_sdk_ssm::Client) -> Self {
        Self { client }
    }

    /// This store behind a cache that reuses each value for `ttl`.
    pub fn cached(self, ttl: Duration) -> CachedSecrets<SsmSecrets> {
        CachedSecrets::new(self, ttl)
    }
}

#[async_trait]
impl SecretStore for SsmSecrets {
    /// GetParameter with decryption. `ParameterNotFound` is [`SecretError::NotFound`]; any
    /// other failure (network, throttling, KMS, permissions) is [`SecretError::Unavailable`].
    async fn get(&self, name: &ParamName) -> Result<SecretString, SecretError> {
        let sent = self
            .client
            .get_parameter()
            .name(name.as_str())
            .with_decryption(true)
            .send()
            .await;
        match sent {
            Ok(out) => out
                .parameter
                .and_then(|p| p.value)
                .map(SecretString::from)
                .ok_or_else(|| SecretError::Unavailable(name.clone(), Box::new(NoValue(name.clone())))),
            Err(e) if matches!(e.as_service_error(), Some(GetParameterError::ParameterNotFound(_))) => {
                Err(SecretError::NotFound(name.clone()))
            }
            Err(e) => Err(SecretError::Unavailable(name.clone(), Box::new(e))),
        }
    }
}

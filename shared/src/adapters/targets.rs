//! The deploy target every backend runs: each environment's `deploy.type` picks the
//! adapter that carries out its phases.

use std::sync::Arc;

use async_trait::async_trait;

use super::aws::lambda_target::LambdaTarget;
use super::aws::s3_target::S3Target;
use super::command::CommandTarget;
use super::webhook_target::WebhookTarget;
use crate::config::DeployTargetConfig;
use crate::ports::{DeployError, DeployReport, DeployRequest, DeployTarget, StateStore};

/// Dispatches each phase to the adapter for the environment's target type.
#[derive(Debug)]
pub struct Targets {
    command: CommandTarget,
    webhook: WebhookTarget,
    s3: S3Target,
    lambda: LambdaTarget,
}

impl Targets {
    /// The real targets. `store` is where `POST /hooks/deploy` leaves webhook callbacks.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            command: CommandTarget::new(),
            webhook: WebhookTarget::new(store),
            s3: S3Target::new(),
            lambda: LambdaTarget::new(),
        }
    }
}

#[async_trait]
impl DeployTarget for Targets {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        match request.target {
            DeployTargetConfig::Command { .. } => self.command.deploy(request).await,
            DeployTargetConfig::Webhook { .. } => self.webhook.deploy(request).await,
            DeployTargetConfig::S3 { .. } => self.s3.deploy(request).await,
            DeployTargetConfig::Lambda { .. } => self.lambda.deploy(request).await,
        }
    }
}

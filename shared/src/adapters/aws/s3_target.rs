//! Stub: being written.

use async_trait::async_trait;

use crate::ports::{DeployError, DeployReport, DeployRequest, DeployTarget};

#[derive(Debug, Default)]
pub struct S3Target;

impl S3Target {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl DeployTarget for S3Target {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        Err(DeployError::CouldNotStart {
            reason: format!("the {} target is not available yet", request.target.kind()),
        })
    }
}

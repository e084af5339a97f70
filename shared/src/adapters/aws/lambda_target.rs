//! Stub: being written.

use async_trait::async_trait;

use crate::ports::{DeployError, DeployReport, DeployRequest, DeployTarget};

#[derive(Debug, Default)]
pub struct LambdaTarget;

impl LambdaTarget {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl DeployTarget for LambdaTarget {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        Err(DeployError::CouldNotStart {
            reason: format!("the {} target is not available yet", request.target.kind()),
        })
    }
}

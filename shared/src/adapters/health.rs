//! Stub: being written.

use async_trait::async_trait;

use crate::config::HealthSourceConfig;
use crate::ports::{Health, HealthSource};

#[derive(Debug, Default)]
pub struct HealthSources;

impl HealthSources {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl HealthSource for HealthSources {
    async fn check(&self, _source: &HealthSourceConfig) -> Result<Health, String> {
        Err("health sources are not available yet".into())
    }
}

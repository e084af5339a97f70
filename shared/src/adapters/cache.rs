//! A secret store that remembers what it read for a while: a warm Lambda container does not
//! call the parameter store on every event, and a rotated value is picked up once the TTL
//! has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::domain::ParamName;
use crate::ports::{SecretError, SecretStore};

/// Caches another [`SecretStore`]'s values for `ttl`. Failures are not cached.
#[derive(Debug, Clone)]
pub struct CachedSecrets<S> {
    inner: S,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<ParamName, (SecretString, Instant)>>>,
}

impl<S: SecretStore> CachedSecrets<S> {
    pub fn new(inner: S, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Arc::default(),
        }
    }
}

#[async_trait]
impl<S: SecretStore> SecretStore for CachedSecrets<S> {
    async fn get(&self, name: &ParamName) -> Result<SecretString, SecretError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((value, at)) = cache.get(name)
                && at.elapsed() < self.ttl
            {
                return Ok(SecretString::from(value.expose_secret().to_owned()));
            }
        }
        let value = self.inner.get(name).await?;
        let copy = SecretString::from(value.expose_secret().to_owned());
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), (copy, Instant::now()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemorySecrets;

    #[tokio::test(start_paused = true)]
    async fn values_are_reused_until_the_ttl_then_read_again() {
        let store = MemorySecrets::new();
        store.set("/slipway/a", "one");
        let cached = CachedSecrets::new(store.clone(), Duration::from_secs(300));
        let name = ParamName::parse("/slipway/a").unwrap();
        for _ in 0..5 {
            assert_eq!(cached.get(&name).await.unwrap().expose_secret(), "one");
        }
        assert_eq!(store.read_count(), 1, "read once while warm");
        store.set("/slipway/a", "two");
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(cached.get(&name).await.unwrap().expose_secret(), "one", "still cached");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cached.get(&name).await.unwrap().expose_secret(),
            "two",
            "rotation picked up"
        );
        assert_eq!(store.read_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_not_cached() {
        let store = MemorySecrets::new();
        store.set("/slipway/a", "one");
        let cached = CachedSecrets::new(store.clone(), Duration::from_secs(300));
        let name = ParamName::parse("/slipway/a").unwrap();
        store.set_unavailable(true);
        assert!(cached.get(&name).await.is_err());
        store.set_unavailable(false);
        assert_eq!(cached.get(&name).await.unwrap().expose_secret(), "one");
    }
}

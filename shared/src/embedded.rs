//! The embedded backend wired up: one SQLite file in the data directory for state and
//! queues, secrets from a TOML file, real deploy target, checker and notifiers. What
//! `slipway serve` and `slipway demo` run on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

use crate::adapters::local::secrets_file::{SecretsFile, SecretsFileError};
use crate::adapters::local::sqlite::{SqliteBackend, SqliteError};
use crate::adapters::{Backend, wire};
use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::domain::ParamName;
use crate::ports::SecretStore;
use secrecy::ExposeSecret as _;

/// The database file inside the data directory.
pub const DB_FILE: &str = "slipway.db";

/// Why slipway could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsFileError),
    #[error(transparent)]
    Database(#[from] SqliteError),
    #[error("{secrets}: missing secret parameter(s) named in the configuration: {}", names.join(", "))]
    MissingSecrets { secrets: String, names: Vec<String> },
    #[error("{secrets}: {name} is not a usable secret: {reason}")]
    UnusableSecret {
        secrets: String,
        name: String,
        reason: String,
    },
}

/// Checks the secrets whose form slipway knows, so a bad one is found at start-up and not at
/// the first delivery: today GitLab's signing token (`whsec_<base64>`), current and previous.
pub async fn check_secret_forms(config: &Config, secrets: &dyn SecretStore) -> Result<(), (String, String)> {
    let gitlab_keys = config.gitlab.iter().flat_map(|gl| {
        gl.signing_key
            .iter()
            .chain(gl.previous_signing_key.iter().map(|p| &p.param))
    });
    for name in gitlab_keys {
        let value = secrets.get(name).await.map_err(|e| (name.to_string(), e.to_string()))?;
        crate::providers::gitlab::signing_key(value.expose_secret()).map_err(|e| {
            (
                name.to_string(),
                format!("{e} (copy the signing token from GitLab's webhook page)"),
            )
        })?;
    }
    Ok(())
}

/// Warns, once at start-up, about each previous secret whose rotation window has ended: it is
/// refused now, so its configuration (and the parameter) can go. Not an error: the rotation
/// simply finished while slipway was running or stopped.
pub fn warn_about_ended_rotations(config: &Config, now: jiff::Timestamp) {
    for (key, _, previous) in config.rotations() {
        if !previous.accepted_at(now) {
            tracing::warn!(
                key,
                parameter = %previous.param,
                until = %previous.until,
                "the rotation window ended: requests signed with the previous secret are refused; remove it from the configuration"
            );
        }
    }
}

/// Where everything is.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub secrets: PathBuf,
    pub data_dir: PathBuf,
}

impl Paths {
    /// The secrets file used when none is given: `slipway.secrets.toml` beside the config.
    pub fn default_secrets(config: &Path) -> PathBuf {
        config.with_file_name("slipway.secrets.toml")
    }

    pub fn database(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }
}

/// Every secret parameter the configuration names.
pub fn required_secrets(config: &Config) -> BTreeSet<&ParamName> {
    let mut names: BTreeSet<&ParamName> = BTreeSet::new();
    names.insert(&config.approvals.signing_key);
    names.extend(config.approvals.previous_keys.iter().map(|k| &k.param));
    if let Some(gh) = &config.github {
        names.insert(&gh.webhook_secret);
    }
    if let Some(gl) = &config.gitlab {
        names.insert(&gl.token);
        names.extend(gl.signing_key.iter());
    }
    if let Some(bb) = &config.bitbucket {
        names.insert(&bb.secret);
    }
    if let Some(slack) = &config.slack {
        names.insert(&slack.signing_secret);
    }
    // Every previous secret of a rotation (the pipelines' are among their secret_params).
    names.extend(config.rotations().into_iter().map(|(_, _, previous)| &previous.param));
    for channel in &config.notify {
        match channel {
            crate::config::ChannelConfig::Slack { webhook_url } => {
                names.insert(webhook_url);
            }
            crate::config::ChannelConfig::Webhook { secret, .. } => {
                names.insert(secret);
            }
            crate::config::ChannelConfig::Stdout | crate::config::ChannelConfig::File { .. } => {}
        }
    }
    for pipeline in &config.pipelines {
        names.extend(pipeline.secret_params());
        names.extend(pipeline.trackers.iter().map(|t| t.token()));
    }
    names.extend(config.dashboard.api_token.iter());
    names.extend(config.metrics.iter().map(|m| &m.token));
    names
}

/// Loads the configuration and secrets, checks that every named secret exists, opens the
/// database and wires an [`App`]. `public_url` overrides the configuration's.
pub async fn open(paths: &Paths, public_url: Option<Url>, fallback_url: Url) -> Result<App, StartupError> {
    let config = Config::load(&paths.config)?;
    let secrets = SecretsFile::load(&paths.secrets)?;
    let known: BTreeSet<&ParamName> = secrets.names().collect();
    let missing: Vec<String> = required_secrets(&config)
        .into_iter()
        .filter(|n| !known.contains(n))
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(StartupError::MissingSecrets {
            secrets: paths.secrets.display().to_string(),
            names: missing,
        });
    }
    check_secret_forms(&config, &secrets)
        .await
        .map_err(|(name, reason)| StartupError::UnusableSecret {
            secrets: paths.secrets.display().to_string(),
            name,
            reason,
        })?;
    warn_about_ended_rotations(&config, jiff::Timestamp::now());
    if config.github.is_none() && config.gitlab.is_none() && config.bitbucket.is_none() {
        tracing::warn!("no [github], [gitlab] or [bitbucket] section in the configuration: no push opens a run");
    }
    if config.notify.is_empty() {
        tracing::warn!("no [[notify]] channels in the configuration: approval requests and failures reach nobody");
    }
    let db = SqliteBackend::open(&paths.database())?;
    let public_url = public_url.or_else(|| config.public_url.clone()).unwrap_or(fallback_url);
    let backend = Backend {
        store: Arc::new(db.clone()),
        queue: Arc::new(db),
        secrets: Arc::new(secrets),
    };
    Ok(wire(config, backend, public_url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemorySecrets;

    const ROTATING: &str = r#"
[github]
webhook_secret = "/s/github"
previous_webhook_secret = { param = "/s/github-old", until = "2026-12-01T00:00:00Z" }

[gitlab]
token = "/s/gitlab-token"
previous_token = { param = "/s/gitlab-token-old", until = "2026-12-01T00:00:00Z" }
signing_key = "/s/gitlab-key"
previous_signing_key = { param = "/s/gitlab-key-old", until = "2026-12-01T00:00:00Z" }

[bitbucket]
secret = "/s/bitbucket"
previous_secret = { param = "/s/bitbucket-old", until = "2026-12-01T00:00:00Z" }

[slack]
signing_secret = "/s/slack"
previous_signing_secret = { param = "/s/slack-old", until = "2026-12-01T00:00:00Z" }

[approvals]
signing_key = "/s/links-2026-11"
key_id = "2026-11"
previous_keys = [{ param = "/s/links" }]

[[pipelines]]
name = "shop"
repo = "acme/shop"
mode = "deployment"
ci_secret = "/s/ci"
previous_ci_secret = { param = "/s/ci-old", until = "2026-12-01T00:00:00Z" }
environments = [{ name = "production", deploy = { type = "webhook", url = "https://deploy.example.com", secret = "/s/deploy", previous_secret = { param = "/s/deploy-old", until = "2026-12-01T00:00:00Z" } } }]
"#;

    fn config() -> Config {
        Config::parse(ROTATING, Path::new("slipway.toml")).unwrap()
    }

    #[test]
    fn start_up_needs_every_previous_secret_and_key() {
        let config = config();
        let names: Vec<&str> = required_secrets(&config).into_iter().map(|n| n.as_str()).collect();
        for old in [
            "/s/github-old",
            "/s/gitlab-token-old",
            "/s/gitlab-key-old",
            "/s/bitbucket-old",
            "/s/slack-old",
            "/s/links",
            "/s/ci-old",
            "/s/deploy-old",
        ] {
            assert!(names.contains(&old), "{old} in {names:?}");
        }
    }

    #[tokio::test]
    async fn a_previous_gitlab_signing_key_must_have_the_form_too() {
        let config = config();
        let secrets = MemorySecrets::new();
        secrets.set("/s/gitlab-key", "whsec_Y3VycmVudA==");
        secrets.set("/s/gitlab-key-old", "not base64!");
        let (name, reason) = check_secret_forms(&config, &secrets).await.unwrap_err();
        assert_eq!(name, "/s/gitlab-key-old");
        assert!(reason.contains("whsec_"), "{reason}");
        assert!(!reason.contains("not base64!"), "no value: {reason}");
        secrets.set("/s/gitlab-key-old", "whsec_b2xk");
        assert_eq!(check_secret_forms(&config, &secrets).await, Ok(()));
    }
}

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
/// the first delivery: today GitLab's signing token (`whsec_<base64>`).
pub async fn check_secret_forms(config: &Config, secrets: &dyn SecretStore) -> Result<(), (String, String)> {
    if let Some(name) = config.gitlab.as_ref().and_then(|gl| gl.signing_key.as_ref()) {
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
    }
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

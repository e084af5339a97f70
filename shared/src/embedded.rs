//! The embedded backend wired up: one SQLite file in the data directory for state and
//! queues, secrets from a TOML file, real deploy target, checker and notifiers. What
//! `slipway serve` and `slipway demo` run on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

use crate::adapters::local::secrets_file::SecretsFile;
use crate::adapters::local::sqlite::{SqliteBackend, SqliteError};
use crate::adapters::{Backend, wire};
use crate::app::App;
use crate::config::{Config, ConfigError, checks};
use crate::domain::ParamName;
use crate::ports::{SecretError, SecretStore};

/// The database file inside the data directory.
pub const DB_FILE: &str = "slipway.db";

/// Why slipway could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration, the secrets file or a secret is not fit to start with: every problem
    /// found, one a line, each naming its key or parameter.
    #[error("{}", problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
    #[error(transparent)]
    Database(#[from] SqliteError),
}

/// One reason the configuration or its secrets are not fit to start with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The configuration key it is at, when there is one
    /// (`pipelines[0] (shop).environments[1] (production).deploy.command`).
    pub key: Option<String>,
    /// The whole message, naming the file, the key and the parameter.
    pub message: String,
}

impl From<&ConfigError> for Problem {
    fn from(e: &ConfigError) -> Self {
        Self {
            key: e.key().map(str::to_owned),
            message: e.to_string(),
        }
    }
}

/// Checks the secrets whose form slipway knows, so a bad one is found at start-up and not at
/// the first delivery — today GitLab's signing token (`whsec_<base64>`), current and previous
/// — and that no secret is still an example's placeholder ([`checks::is_placeholder`]).
/// Secrets the store does not have are not this check's business (see
/// [`checks::check_secrets`]). The error is the parameter and what is wrong with it.
pub async fn check_secret_forms(config: &Config, secrets: &dyn SecretStore) -> Result<(), (String, String)> {
    let checked = checks::check_secrets(config, secrets).await.map_err(|e| match &e {
        SecretError::NotFound(name) | SecretError::Unavailable(name, _) => (name.to_string(), e.to_string()),
    })?;
    let unfit = checked
        .findings
        .into_iter()
        .find(|f| f.problem != checks::SecretProblem::Missing);
    match unfit {
        None => Ok(()),
        Some(finding) => {
            let reason = match finding.problem {
                checks::SecretProblem::Unusable(reason) => reason,
                _ => format!(
                    "it is still the example's placeholder ({}): put the real value there (`{}` makes a random one)",
                    finding.key,
                    checks::GENERATE
                ),
            };
            Err((finding.param.to_string(), reason))
        }
    }
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
    checks::named_secrets(config)
        .into_iter()
        .map(|(_, param)| param)
        .collect()
}

/// What [`examine`] found: the configuration and secrets it could read, and every problem.
#[derive(Debug)]
pub struct Examined {
    pub config: Option<Config>,
    pub secrets: Option<SecretsFile>,
    /// How many different secret parameters the configuration names (0 if it could not be read).
    pub secrets_named: usize,
    /// Every problem found; none: slipway can start.
    pub problems: Vec<Problem>,
}

/// Reads and validates the configuration and the secrets file, and checks every secret the
/// configuration names (exists, is not an example's placeholder, has the form slipway needs),
/// reporting every problem rather than the first. Opens no database and binds no port: what
/// `slipway check` runs, and `slipway serve` before it binds.
pub async fn examine(paths: &Paths) -> Examined {
    let mut problems = Vec::new();
    let config = match Config::read(&paths.config).and_then(|text| Config::parse_all(&text, &paths.config)) {
        Ok((config, invalid)) => {
            problems.extend(invalid.iter().map(Problem::from));
            Some(config)
        }
        Err(e) => {
            problems.push(Problem::from(&e));
            None
        }
    };
    let secrets = match SecretsFile::load(&paths.secrets) {
        Ok(secrets) => Some(secrets),
        Err(e) => {
            problems.push(Problem {
                key: None,
                message: e.to_string(),
            });
            None
        }
    };
    let mut secrets_named = 0;
    if let (Some(config), Some(secrets)) = (&config, &secrets) {
        let origin = paths.secrets.display().to_string();
        match checks::check_secrets(config, secrets).await {
            Ok(checked) => {
                secrets_named = checked.named;
                problems.extend(checked.findings.iter().map(|f| Problem {
                    key: Some(f.key.clone()),
                    message: f.describe(&origin),
                }));
            }
            // A file is always there; kept for completeness.
            Err(e) => problems.push(Problem {
                key: None,
                message: e.to_string(),
            }),
        }
    }
    Examined {
        config,
        secrets,
        secrets_named,
        problems,
    }
}

/// A configuration and secrets file [`examine`] found nothing wrong with: ready to open.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    secrets: SecretsFile,
    paths: Paths,
}

/// [`examine`], as an error if anything is wrong.
pub async fn check(paths: &Paths) -> Result<Checked, StartupError> {
    match examine(paths).await {
        Examined {
            config: Some(config),
            secrets: Some(secrets),
            problems,
            ..
        } if problems.is_empty() => Ok(Checked {
            config,
            secrets,
            paths: paths.clone(),
        }),
        Examined { problems, .. } => Err(StartupError::Invalid { problems }),
    }
}

impl Checked {
    /// Opens (creating it if need be) the database and wires an [`App`]. `public_url`
    /// overrides the configuration's.
    pub fn open(self, public_url: Option<Url>, fallback_url: Url) -> Result<App, StartupError> {
        let Checked { config, secrets, paths } = self;
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
            // A write commits in well under a millisecond.
            write_backoff: std::time::Duration::from_millis(1),
        };
        Ok(wire(config, backend, public_url))
    }
}

/// Loads the configuration and secrets, checks them ([`check`]), opens the database and
/// wires an [`App`]. `public_url` overrides the configuration's.
pub async fn open(paths: &Paths, public_url: Option<Url>, fallback_url: Url) -> Result<App, StartupError> {
    check(paths).await?.open(public_url, fallback_url)
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

    #[tokio::test]
    async fn bootstrap_and_start_up_refuse_an_example_placeholder() {
        let config = config();
        let secrets = MemorySecrets::new();
        secrets.set("/s/ci", "FAKE-shop-ci-secret-change-me");
        let (name, reason) = check_secret_forms(&config, &secrets).await.unwrap_err();
        assert_eq!(name, "/s/ci");
        assert!(
            reason.starts_with("it is still the example's placeholder (pipelines[0] (shop).ci_secret)"),
            "{reason}"
        );
        assert!(!reason.contains("FAKE"), "{reason}");
    }
}

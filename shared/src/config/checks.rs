//! What start-up checks beyond the configuration's own validation, the same way on every
//! backend (`slipway check`, `slipway serve`, `slipway bootstrap`): that every secret the
//! configuration names exists, is not still an example's placeholder, and has the form slipway
//! needs; and whether `public_url` can reach a server listening where it does.
//!
//! Nothing here ever prints or logs a secret's value: a problem names the parameter and the
//! configuration key that names it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use base64::Engine as _;
use secrecy::ExposeSecret as _;

use super::{ChannelConfig, Config, DeployTargetConfig};
use crate::domain::ParamName;
use crate::ports::{SecretError, SecretStore};

/// A command that prints a fresh random value, for messages that ask for one.
pub const GENERATE: &str = "openssl rand -hex 32";

/// Is `value` still a placeholder from an example secrets file, rather than a real secret?
///
/// The rule, in one place: a value containing `change-me` or `changeme` (any case), or with
/// `FAKE` in capitals starting it or one of its parts (after a character that is not a letter
/// or digit) and followed by `-`, `_`, another `FAKE` or the end — `FAKE-github-secret`,
/// `postgres://shop:FAKE-password@db/shop`, `…/FAKEFAKEFAKE`. A GitLab signing token
/// (`whsec_<base64>`) is judged by the text it encodes. A random value cannot match: hex and
/// base64 have no `-`, and `K` is no hex digit.
pub fn is_placeholder(value: &str) -> bool {
    if looks_fake(value) {
        return true;
    }
    value
        .trim()
        .strip_prefix("whsec_")
        .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded).ok())
        .is_some_and(|decoded| looks_fake(&String::from_utf8_lossy(&decoded)))
}

fn looks_fake(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    if lower.contains("change-me") || lower.contains("changeme") {
        return true;
    }
    let bytes = value.as_bytes();
    value.match_indices("FAKE").any(|(at, _)| {
        let starts_a_part = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let rest = &value[at + 4..];
        starts_a_part && (rest.is_empty() || rest.starts_with(['-', '_']) || rest.starts_with("FAKE"))
    })
}

/// Every secret parameter the configuration names, with the key that names it
/// (`pipelines[0] (shop).environments[1] (production).deploy.secret_files.SSH_KEY_FILE`), in
/// the order of the file. A parameter named twice is listed twice.
pub fn named_secrets(config: &Config) -> Vec<(String, &ParamName)> {
    let mut named: Vec<(String, &ParamName)> = Vec::new();
    if let Some(gh) = &config.github {
        named.push(("github.webhook_secret".into(), &gh.webhook_secret));
    }
    if let Some(gl) = &config.gitlab {
        named.push(("gitlab.token".into(), &gl.token));
        if let Some(key) = &gl.signing_key {
            named.push(("gitlab.signing_key".into(), key));
        }
    }
    if let Some(bb) = &config.bitbucket {
        named.push(("bitbucket.secret".into(), &bb.secret));
    }
    if let Some(slack) = &config.slack {
        named.push(("slack.signing_secret".into(), &slack.signing_secret));
    }
    named.push(("approvals.signing_key".into(), &config.approvals.signing_key));
    for (k, key) in config.approvals.previous_keys.iter().enumerate() {
        named.push((format!("approvals.previous_keys[{k}].param"), &key.param));
    }
    if let Some(token) = &config.dashboard.api_token {
        named.push(("dashboard.api_token".into(), token));
    }
    if let Some(metrics) = &config.metrics {
        named.push(("metrics.token".into(), &metrics.token));
    }
    for (n, channel) in config.notify.iter().enumerate() {
        match channel {
            ChannelConfig::Slack { webhook_url } => named.push((format!("notify[{n}].webhook_url"), webhook_url)),
            ChannelConfig::Webhook { secret, .. } => named.push((format!("notify[{n}].secret"), secret)),
            ChannelConfig::Stdout | ChannelConfig::File { .. } => {}
        }
    }
    for (p, pipeline) in config.pipelines.iter().enumerate() {
        let at = format!("pipelines[{p}] ({})", pipeline.name);
        named.push((format!("{at}.ci_secret"), &pipeline.ci_secret));
        for (e, env) in pipeline.environments.iter().enumerate() {
            let at = format!("{at}.environments[{e}] ({}).deploy", env.name);
            match &env.deploy {
                DeployTargetConfig::Command {
                    secrets, secret_files, ..
                } => {
                    named.extend(
                        secrets
                            .iter()
                            .map(|(var, param)| (format!("{at}.secrets.{var}"), param)),
                    );
                    named.extend(
                        secret_files
                            .iter()
                            .map(|(var, param)| (format!("{at}.secret_files.{var}"), param)),
                    );
                }
                DeployTargetConfig::Webhook { secret, .. } => named.push((format!("{at}.secret"), secret)),
                DeployTargetConfig::S3 { .. } | DeployTargetConfig::Lambda { .. } => {}
            }
        }
        for (t, tracker) in pipeline.trackers.iter().enumerate() {
            let field = match tracker {
                super::TrackerConfig::Webhook { .. } => "secret",
                _ => "token",
            };
            named.push((
                format!("{at}.trackers[{t}] ({}).{field}", tracker.name()),
                tracker.token(),
            ));
        }
    }
    // Every previous secret of a rotation (github.previous_webhook_secret, a pipeline's
    // previous_ci_secret, a webhook target's previous_secret, …).
    named.extend(
        config
            .rotations()
            .into_iter()
            .map(|(key, _, previous)| (format!("{key}.param"), &previous.param)),
    );
    named
}

/// What is wrong with one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretProblem {
    /// The secret store has no parameter of that name.
    Missing,
    /// It is still an example's placeholder ([`is_placeholder`]).
    Placeholder,
    /// It exists but slipway cannot use it; the reason never contains the value.
    Unusable(String),
}

/// A secret the configuration names that is not fit to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFinding {
    /// The parameter.
    pub param: ParamName,
    /// The configuration key that names it (the first, if several do).
    pub key: String,
    pub problem: SecretProblem,
}

impl SecretFinding {
    /// The problem in words, for a secret store described as `origin` (a secrets file's path,
    /// `SSM Parameter Store`): names the parameter and the key, never the value.
    pub fn describe(&self, origin: &str) -> String {
        let SecretFinding { param, key, problem } = self;
        match problem {
            SecretProblem::Missing => format!("secret {param} ({key}) missing from {origin}"),
            SecretProblem::Placeholder => format!(
                "secret {param} ({key}) in {origin} is still the example's placeholder: put the real value there \
                 (`{GENERATE}` makes a random one)"
            ),
            SecretProblem::Unusable(reason) => format!("secret {param} ({key}) in {origin} is not usable: {reason}"),
        }
    }
}

/// What [`check_secrets`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretsChecked {
    /// How many different parameters the configuration names.
    pub named: usize,
    /// The ones that are missing, placeholders or unusable, in the order of the file.
    pub findings: Vec<SecretFinding>,
}

/// Reads every secret the configuration names from `store` and lists those that are missing,
/// still placeholders, or (GitLab signing tokens) not of the form slipway needs. The error is
/// a store that could not be reached: then nothing can be said.
pub async fn check_secrets(config: &Config, store: &dyn SecretStore) -> Result<SecretsChecked, SecretError> {
    let signing_keys: BTreeSet<&ParamName> = config
        .gitlab
        .iter()
        .flat_map(|gl| {
            gl.signing_key
                .iter()
                .chain(gl.previous_signing_key.iter().map(|p| &p.param))
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut checked = SecretsChecked::default();
    for (key, param) in named_secrets(config) {
        if !seen.insert(param) {
            continue;
        }
        checked.named += 1;
        let problem = match store.get(param).await {
            Err(SecretError::NotFound(_)) => Some(SecretProblem::Missing),
            Err(e) => return Err(e),
            Ok(value) => {
                let value = value.expose_secret();
                if is_placeholder(value) {
                    Some(SecretProblem::Placeholder)
                } else if signing_keys.contains(param) {
                    crate::providers::gitlab::signing_key(value).err().map(|e| {
                        SecretProblem::Unusable(format!("{e} (copy the signing token from GitLab's webhook page)"))
                    })
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            checked.findings.push(SecretFinding {
                param: param.clone(),
                key,
                problem,
            });
        }
    }
    Ok(checked)
}

/// A warning when `public_url` names a host other than the one slipway listens on while it
/// listens on a loopback address only (`public_url = "https://slipway.example.com"`, listening
/// on 127.0.0.1:8080): links in notifications would point where nobody answers — unless a
/// reverse proxy on this machine forwards that host to slipway, which the warning says.
pub fn public_url_warning(public_url: &url::Url, listen: SocketAddr) -> Option<String> {
    if !listen.ip().is_loopback() {
        return None;
    }
    let host = public_url.host()?;
    let local = match &host {
        url::Host::Domain(name) => {
            let name = name.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    (!local).then(|| {
        format!(
            "public_url is {public_url}, but slipway listens on {listen}, which only this machine can reach: \
             links in notifications point at {host}, where nobody answers unless a reverse proxy there forwards \
             to {listen}. Set public_url (or --public-url) to the address people reach slipway at, or --listen on \
             an address they can reach"
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::adapters::memory::MemorySecrets;

    #[test]
    fn every_value_of_the_example_secrets_file_is_a_placeholder() {
        let text = include_str!("../../../slipway.secrets.example.toml");
        // The commented-out parameters too: they are for the commented-out examples.
        let values: Vec<String> = text
            .lines()
            .map(|line| line.trim_start_matches('#').trim())
            .filter(|line| line.starts_with("\"/"))
            .map(|line| {
                let table: toml::Table = toml::from_str(line).unwrap();
                table.values().next().unwrap().as_str().unwrap().to_owned()
            })
            .collect();
        assert!(values.len() >= 10, "{values:?}");
        for value in &values {
            assert!(is_placeholder(value), "{value} is a placeholder");
        }
    }

    #[test]
    fn real_looking_values_are_not_placeholders() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        for value in [
            hex,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "postgres://shop:s3cret@db.example.com/shop",
            "FAKEROOT",
            "sk_live_FAKED",
            "my-fakery",
            "",
        ] {
            assert!(!is_placeholder(value), "{value} is not a placeholder");
        }
        for value in ["FAKE", "change-me", "ChangeMe", "x_FAKE_y", "whsec_RkFLRS1rZXk="] {
            assert!(is_placeholder(value), "{value} is a placeholder");
        }
    }

    const CONFIG: &str = r#"
[gitlab]
token = "/s/gitlab-token"
signing_key = "/s/gitlab-key"

[approvals]
signing_key = "/s/links"

[[pipelines]]
name = "shop"
repo = "acme/shop"
mode = "deployment"
ci_secret = "/s/ci"
environments = [{ name = "production", deploy = { type = "command", command = ["true"], secrets = { DB = "/s/db" }, secret_files = { KEY = "/s/key", AGAIN = "/s/db" } } }]
"#;

    #[tokio::test]
    async fn each_problem_names_the_parameter_and_its_key_and_never_the_value() {
        let config = Config::parse(CONFIG, Path::new("slipway.toml")).unwrap();
        let secrets = MemorySecrets::new();
        secrets.set("/s/gitlab-token", "FAKE-gitlab-token-change-me");
        secrets.set("/s/gitlab-key", "whsec_not base64!");
        secrets.set("/s/links", "b2f1c0ffee");
        secrets.set("/s/db", "postgres://u:hunter2@db/shop");
        let checked = check_secrets(&config, &secrets).await.unwrap();
        assert_eq!(checked.named, 6, "/s/db counts once");
        let said: Vec<String> = checked
            .findings
            .iter()
            .map(|f| f.describe("slipway.secrets.toml"))
            .collect();
        assert_eq!(said.len(), 4, "{said:#?}");
        assert!(
            said[0].starts_with(
                "secret /s/gitlab-token (gitlab.token) in slipway.secrets.toml is still the example's placeholder"
            ),
            "{}",
            said[0]
        );
        assert!(said[0].contains(GENERATE), "{}", said[0]);
        assert!(
            said[1].starts_with("secret /s/gitlab-key (gitlab.signing_key) in slipway.secrets.toml is not usable")
                && said[1].contains("whsec_<base64>"),
            "{}",
            said[1]
        );
        assert_eq!(
            said[2],
            "secret /s/ci (pipelines[0] (shop).ci_secret) missing from slipway.secrets.toml"
        );
        assert_eq!(
            said[3],
            "secret /s/key (pipelines[0] (shop).environments[0] (production).deploy.secret_files.KEY) missing from \
             slipway.secrets.toml"
        );
        for line in &said {
            assert!(!line.contains("hunter2") && !line.contains("not base64!"), "{line}");
        }

        let err = check_secrets(&config, &MemorySecrets::unreachable()).await.unwrap_err();
        assert!(matches!(err, SecretError::Unavailable(..)), "{err:?}");
    }

    #[test]
    fn a_public_url_elsewhere_while_listening_on_loopback_is_worth_a_warning() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let warning = public_url_warning(&url("https://slipway.example.com"), at("127.0.0.1:8080")).unwrap();
        assert!(
            warning.contains("https://slipway.example.com/") && warning.contains("127.0.0.1:8080"),
            "{warning}"
        );
        for (public, listen) in [
            ("https://slipway.example.com", "0.0.0.0:8080"),
            ("https://slipway.example.com", "10.0.0.5:8080"),
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://localhost:9000", "127.0.0.1:8080"),
            ("http://[::1]:8080", "[::1]:8080"),
        ] {
            assert_eq!(
                public_url_warning(&url(public), at(listen)),
                None,
                "{public} on {listen}"
            );
        }
        assert!(public_url_warning(&url("http://192.168.1.4:8080"), at("[::1]:8080")).is_some());
    }
}

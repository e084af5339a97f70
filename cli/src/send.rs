//! `slipway send`: sign a payload and POST it the way GitHub, GitLab, Bitbucket or CI would — for trying a
//! server out, replaying a delivery, or a CI step without writing the HMAC by hand.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret;
use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::domain::ParamName;
use slipway::ports::SecretStore as _;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The JSON payload to send.
    file: PathBuf,
    /// The endpoint, e.g. http://127.0.0.1:8080/hooks/github.
    #[arg(long)]
    to: url::Url,
    /// The event name: a GitHub event (push, ping, …), a GitLab one (`Push Hook`, `Pipeline
    /// Hook`, …), a Bitbucket event key (`repo:push`, …), or `ci` for the CI callback.
    #[arg(long, default_value = "push")]
    event: String,
    /// Whose headers and signature to send: `github` (`X-Hub-Signature-256`), `gitlab`
    /// (`X-Gitlab-Token` holding the secret itself, plus a Standard Webhooks signature when
    /// --signing-param is given) or `bitbucket`
    /// (`X-Hub-Signature: sha256=…`). `--event ci` always uses the CI callback's signature.
    #[arg(long, value_enum, default_value_t = Host::Github)]
    host: Host,
    /// A file holding the secret. Either the secret alone, or a slipway secrets file
    /// (TOML) together with --param naming the entry.
    #[arg(long)]
    secret_file: PathBuf,
    /// The parameter to use when --secret-file is a slipway secrets file.
    #[arg(long)]
    param: Option<String>,
    /// With --host gitlab: the entry of the secrets file holding GitLab's signing token
    /// (`whsec_…`); the request then also carries `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature`, as GitLab sends them.
    #[arg(long, requires = "param")]
    signing_param: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    Github,
    Gitlab,
    Bitbucket,
}

async fn entry(file: &std::path::Path, param: &str) -> anyhow::Result<String> {
    let name = ParamName::parse(param)?;
    let file = SecretsFile::load(file)?;
    Ok(file.get(&name).await?.expose_secret().to_owned())
}

async fn secret(args: &SendArgs) -> anyhow::Result<String> {
    match &args.param {
        Some(param) => entry(&args.secret_file, param).await,
        None => {
            let raw = std::fs::read_to_string(&args.secret_file)
                .with_context(|| format!("cannot read {}", args.secret_file.display()))?;
            if raw.trim_start().starts_with('"') && raw.contains('=') {
                bail!(
                    "{} looks like a slipway secrets file; say which entry with --param (e.g. --param /slipway/github/webhook-secret)",
                    args.secret_file.display()
                );
            }
            Ok(raw.trim_end_matches(['\n', '\r']).to_owned())
        }
    }
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let body = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let secret = secret(&args).await?;
    if args.signing_param.is_some() && args.host != Host::Gitlab {
        bail!("--signing-param is for --host gitlab only");
    }
    let signature = slipway::signature::sign(secret.as_bytes(), &body);
    let client = reqwest::Client::builder()
        .user_agent(concat!("slipway-send/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut request = client.post(args.to.clone()).header("content-type", "application/json");
    let delivery = format!("slipway-send-{:032x}", rand::random::<u128>());
    request = match (args.event.as_str(), args.host) {
        ("ci", _) => request.header("x-slipway-signature", signature),
        (event, Host::Github) => request
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature),
        (event, Host::Gitlab) => {
            let request = request
                .header("x-gitlab-event", event)
                .header("x-gitlab-event-uuid", &delivery)
                .header("x-gitlab-token", secret.as_str());
            match &args.signing_param {
                Some(param) => {
                    let signing = entry(&args.secret_file, param).await?;
                    let now = jiff::Timestamp::now().as_second();
                    let signature = slipway::providers::gitlab::sign(&signing, &delivery, now, &body)
                        .with_context(|| format!("{param} in {}", args.secret_file.display()))?;
                    request
                        .header("webhook-id", &delivery)
                        .header("webhook-timestamp", now.to_string())
                        .header("webhook-signature", signature)
                }
                None => request,
            }
        }
        (event, Host::Bitbucket) => request
            .header("x-event-key", event)
            .header("x-request-uuid", delivery)
            .header("x-hub-signature", signature),
    };
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.to))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{status}");
    if !text.is_empty() {
        println!("{text}");
    }
    if !status.is_success() {
        bail!("{} answered {status}", args.to);
    }
    Ok(())
}

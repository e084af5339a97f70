//! `slipway send`: sign a payload and POST it the way GitHub, GitLab, Bitbucket or CI would — for trying a
//! server out, replaying a delivery, or a CI step without writing the HMAC by hand.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::config::Config;
use slipway::domain::{ParamName, PipelineName};
use slipway::ports::SecretStore as _;

use crate::exit::{Failure, Kind};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The JSON payload to send. Not with --sample, which builds it.
    #[arg(required_unless_present = "sample", conflicts_with = "sample")]
    file: Option<PathBuf>,
    /// The endpoint, e.g. http://127.0.0.1:8080/hooks/github.
    #[arg(long)]
    to: url::Url,
    /// The event name: a GitHub event (push, ping, …), a GitLab one (`Push Hook`, `Pipeline
    /// Hook`, …), a Bitbucket event key (`repo:push`, …), or `ci` for the CI callback.
    /// Default: `push`, or with --sample the host's name for a push.
    #[arg(long)]
    event: Option<String>,
    /// Whose headers and signature to send: `github` (`X-Hub-Signature-256`), `gitlab`
    /// (`X-Gitlab-Token` holding the secret itself, plus a Standard Webhooks signature when
    /// --signing-param is given) or `bitbucket`
    /// (`X-Hub-Signature: sha256=…`). `--event ci` always uses the CI callback's signature.
    /// Default: github, or with --sample the one host the configuration sets up.
    #[arg(long, value_enum)]
    host: Option<Host>,
    /// A file holding the secret: the secret alone (surrounding whitespace is ignored), or a
    /// slipway secrets file (TOML), whose one entry is used, or the entry --param names.
    /// Default with --sample: the secrets file beside --config.
    #[arg(long, required_unless_present = "sample")]
    secret_file: Option<PathBuf>,
    /// The entry to use when --secret-file is a slipway secrets file with several. Default with
    /// --sample: the host's webhook secret named in the configuration.
    #[arg(long)]
    param: Option<String>,
    /// With --host gitlab: the entry of the secrets file holding GitLab's signing token
    /// (`whsec_…`); the request then also carries `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature`, as GitLab sends them. With --sample, the configured
    /// `[gitlab] signing_key` is used without asking.
    #[arg(long)]
    signing_param: Option<String>,
    /// Build the payload instead of reading a file: `push`, a push of --sha to --pipeline's
    /// repository and branch, shaped as the host sends it.
    #[arg(long, value_enum, requires = "pipeline")]
    sample: Option<Sample>,
    /// With --sample: the configured pipeline whose repository and branch are pushed to.
    #[arg(long, requires = "sample")]
    pipeline: Option<String>,
    /// With --sample: the pushed commit (40 hex digits). Default: a random one.
    #[arg(long, requires = "sample")]
    sha: Option<String>,
    /// With --sample: the configuration naming the pipeline, the host and the secrets.
    #[arg(long, default_value = "slipway.toml")]
    config: PathBuf,
    /// Print one JSON document: the answer's status code, delivery id, run id and body.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    Github,
    Gitlab,
    Bitbucket,
}

impl Host {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Host::Github => "github",
            Host::Gitlab => "gitlab",
            Host::Bitbucket => "bitbucket",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sample {
    Push,
}

/// What is sent, once the arguments are resolved.
struct Plan {
    body: Vec<u8>,
    host: Host,
    event: String,
    secret_file: PathBuf,
    param: Option<String>,
    signing_param: Option<String>,
}

/// Reads `file` as `send` does: a slipway secrets file (TOML) whose entry `param` (or only
/// entry) is the secret, or else the secret alone, trimmed.
pub(crate) async fn read_secret(file: &Path, param: Option<&str>) -> anyhow::Result<String> {
    let raw = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(|e| Failure::because(Kind::Config, "the secret file cannot be read", e))?;
    let origin = file.display().to_string();
    let as_table = raw.parse::<toml::Table>().ok().filter(|t| !t.is_empty());
    if as_table.is_none() && param.is_none() {
        let secret = raw.trim();
        if secret.is_empty() {
            return Err(Failure::config(format!("{origin} is empty: put the secret in it")).into());
        }
        return Ok(secret.to_owned());
    }
    let secrets =
        SecretsFile::from_toml(&raw, &origin).map_err(|e| Failure::because(Kind::Config, "--secret-file", e))?;
    let names: Vec<String> = secrets.names().map(ToString::to_string).collect();
    let name = match (param, names.as_slice()) {
        (Some(param), _) => ParamName::parse(param).map_err(|e| Failure::because(Kind::Config, "--param", e))?,
        (None, [one]) => ParamName::parse(one)?,
        (None, _) => {
            return Err(Failure::config(format!(
                "{origin} is a slipway secrets file with {} entries ({}); say which one to sign with --param, e.g. --param {}",
                names.len(),
                names.join(", "),
                names.first().map_or("NAME", String::as_str)
            ))
            .into());
        }
    };
    match secrets.get(&name).await {
        Ok(value) => Ok(value.expose_secret().to_owned()),
        Err(_) => Err(Failure::config(format!("{origin} has no entry {name}; it holds {}", names.join(", "))).into()),
    }
}

/// The host a sample push is shaped for: --host, else the one git host the configuration sets up.
fn sample_host(config: &Config, asked: Option<Host>) -> anyhow::Result<Host> {
    let configured: Vec<Host> = [
        (config.github.is_some(), Host::Github),
        (config.gitlab.is_some(), Host::Gitlab),
        (config.bitbucket.is_some(), Host::Bitbucket),
    ]
    .into_iter()
    .filter_map(|(on, host)| on.then_some(host))
    .collect();
    match (asked, configured.as_slice()) {
        (Some(host), _) if configured.contains(&host) => Ok(host),
        (Some(host), _) => Err(Failure::config(format!(
            "the configuration has no [{host}] table, so slipway would answer 404 to a {host} push",
            host = host.as_str()
        ))
        .into()),
        (None, [one]) => Ok(*one),
        (None, []) => {
            Err(Failure::config("the configuration sets up no git host: add [github], [gitlab] or [bitbucket]").into())
        }
        (None, _) => Err(Failure::config("the configuration sets up several git hosts: say which with --host").into()),
    }
}

fn plan_sample(args: &SendArgs) -> anyhow::Result<Plan> {
    let config = Config::load(&args.config).map_err(|e| Failure::because(Kind::Config, "--config", e))?;
    let name = args.pipeline.as_deref().unwrap_or_default();
    let pipeline = PipelineName::parse(name)
        .ok()
        .and_then(|n| config.pipeline(&n))
        .ok_or_else(|| {
            let known: Vec<String> = config.pipelines.iter().map(|p| p.name.to_string()).collect();
            Failure::not_found(format!(
                "no pipeline is named {name} in {}; it has {}",
                args.config.display(),
                known.join(", ")
            ))
        })?;
    let host = sample_host(&config, args.host)?;
    let sha = match &args.sha {
        Some(sha) => sha
            .parse::<slipway::domain::CommitSha>()
            .map_err(|e| Failure::because(Kind::Usage, "--sha", e))?
            .to_string(),
        None => crate::sample::random_sha(),
    };
    let webhook = match host {
        Host::Github => config.github.as_ref().map(|g| &g.webhook_secret),
        Host::Gitlab => config.gitlab.as_ref().map(|g| &g.token),
        Host::Bitbucket => config.bitbucket.as_ref().map(|b| &b.secret),
    };
    let signing = match host {
        Host::Gitlab => config.gitlab.as_ref().and_then(|g| g.signing_key.as_ref()),
        _ => None,
    };
    let body = crate::sample::push(
        host,
        pipeline.repo.as_str(),
        pipeline.branch.as_str(),
        &sha,
        "A sample push from slipway send",
    );
    Ok(Plan {
        body: body.into_bytes(),
        host,
        event: args
            .event
            .clone()
            .unwrap_or_else(|| crate::sample::push_event(host).to_owned()),
        secret_file: args
            .secret_file
            .clone()
            .unwrap_or_else(|| slipway::embedded::Paths::default_secrets(&args.config)),
        param: args.param.clone().or_else(|| webhook.map(ToString::to_string)),
        signing_param: args.signing_param.clone().or_else(|| signing.map(ToString::to_string)),
    })
}

fn plan(args: &SendArgs) -> anyhow::Result<Plan> {
    if args.sample.is_some() {
        return plan_sample(args);
    }
    let (Some(file), Some(secret_file)) = (&args.file, &args.secret_file) else {
        bail!("give the payload FILE and --secret-file, or --sample");
    };
    let body = std::fs::read(file)
        .with_context(|| format!("cannot read {}", file.display()))
        .map_err(|e| Failure::because(Kind::Config, "the payload cannot be read", e))?;
    serde_json::from_slice::<Value>(&body)
        .with_context(|| format!("{} is not JSON", file.display()))
        .map_err(|e| Failure::because(Kind::Config, "the payload is not JSON", e))?;
    Ok(Plan {
        body,
        host: args.host.unwrap_or(Host::Github),
        event: args.event.clone().unwrap_or_else(|| "push".to_owned()),
        secret_file: secret_file.clone(),
        param: args.param.clone(),
        signing_param: args.signing_param.clone(),
    })
}

/// Why slipway did nothing with a 2xx answer: its `ignored` reason, or every result's.
fn ignored(body: &Value) -> Option<String> {
    if let Some(why) = body["ignored"].as_str() {
        return Some(why.to_owned());
    }
    let results = body["results"].as_array()?;
    let reasons: Option<Vec<&str>> = results.iter().map(|r| r["ignored"].as_str()).collect();
    reasons.filter(|r| !r.is_empty()).map(|r| r.join("; "))
}

/// The first run id an answer names.
fn run_id(body: &Value) -> Option<&str> {
    body["run_id"].as_str().or_else(|| {
        ["results", "runs"]
            .iter()
            .filter_map(|k| body[*k].as_array())
            .flatten()
            .find_map(|r| r["run_id"].as_str())
    })
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    if plan.signing_param.is_some() && plan.host != Host::Gitlab {
        bail!("--signing-param is for --host gitlab only");
    }
    let secret = read_secret(&plan.secret_file, plan.param.as_deref()).await?;
    let signature = slipway::signature::sign(secret.as_bytes(), &plan.body);
    let client = reqwest::Client::builder()
        .user_agent(concat!("slipway-send/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut request = client.post(args.to.clone()).header("content-type", "application/json");
    let delivery = format!("slipway-send-{:032x}", rand::random::<u128>());
    request = match (plan.event.as_str(), plan.host) {
        ("ci", _) => request.header("x-slipway-signature", signature),
        (event, Host::Github) => request
            .header("x-github-event", event)
            .header("x-github-delivery", &delivery)
            .header("x-hub-signature-256", signature),
        (event, Host::Gitlab) => {
            let request = request
                .header("x-gitlab-event", event)
                .header("x-gitlab-event-uuid", &delivery)
                .header("x-gitlab-token", secret.as_str());
            match &plan.signing_param {
                Some(param) => {
                    let signing = read_secret(&plan.secret_file, Some(param)).await?;
                    let now = jiff::Timestamp::now().as_second();
                    let signature = slipway::providers::gitlab::sign(&signing, &delivery, now, &plan.body)
                        .with_context(|| format!("{param} in {}", plan.secret_file.display()))?;
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
            .header("x-request-uuid", &delivery)
            .header("x-hub-signature", signature),
    };
    let response = request
        .body(plan.body)
        .send()
        .await
        .map_err(|e| Failure::unavailable(format!("cannot reach {}", args.to), e))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    if args.json {
        let answer = json!({
            "status": status.as_u16(),
            "delivery": (plan.event != "ci").then_some(&delivery),
            "run_id": run_id(&body),
            "ignored": ignored(&body),
            "body": body,
        });
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{status}");
        if !text.is_empty() {
            println!("{text}");
        }
    }
    let message = body["error"].as_str().or(body["message"].as_str()).unwrap_or_default();
    let kind = match status.as_u16() {
        200..=299 => {
            if let Some(why) = ignored(&body) {
                return Err(Failure::not_found(format!(
                    "{} accepted the delivery but started nothing: {why}",
                    args.to
                ))
                .into());
            }
            return Ok(());
        }
        401 | 403 => Kind::Refused,
        404 => Kind::NotFound,
        502..=504 => Kind::Unavailable,
        _ => Kind::Other,
    };
    let hint = match kind {
        Kind::Refused => " (is the secret the one the server's secrets file holds under that parameter?)",
        _ => "",
    };
    Err(Failure::new(kind, format!("{} answered {status}{}{hint}", args.to, colon(message))).into())
}

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

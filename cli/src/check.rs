//! `slipway check`: is this configuration ready to serve? Everything `slipway serve` checks
//! before it binds — the configuration reads, parses and validates; every secret it names
//! exists, is not still an example's placeholder and has the form slipway needs — reporting
//! every problem, without binding a port or opening the database.

use std::path::{Path, PathBuf};

use serde_json::json;
use slipway::adapters::aws::ssm::SsmSecrets;
use slipway::adapters::aws::{sdk_config, vars};
use slipway::config::{Config, checks};
use slipway::embedded::{self, Examined, Paths, Problem};

use crate::Backend;
use crate::exit::Failure;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The configuration to check.
    #[arg(long, default_value = "slipway.toml")]
    config: PathBuf,
    /// The secrets file (TOML, parameter name → value). Default: slipway.secrets.toml beside the config.
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// Where the secrets live: `embedded` (the secrets file) or `aws` (SSM Parameter Store, read
    /// with this machine's AWS credentials).
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    #[command(flatten)]
    aws: crate::aws::AwsArgs,
    /// Print one JSON document on stdout: what was checked and every problem found.
    #[arg(long)]
    json: bool,
}

/// What was checked and what was found.
#[derive(Debug)]
pub(crate) struct Findings {
    pub(crate) config: Option<Config>,
    /// Where the secrets were read: the secrets file's path, or `SSM Parameter Store`.
    origin: String,
    secrets_named: usize,
    pub(crate) problems: Vec<Problem>,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let secrets = args
        .secrets
        .clone()
        .unwrap_or_else(|| Paths::default_secrets(&args.config));
    let findings = match args.backend {
        Backend::Embedded => {
            let paths = Paths {
                config: args.config.clone(),
                secrets,
                // Never opened: checking reads the configuration and the secrets file only.
                data_dir: PathBuf::new(),
            };
            let Examined {
                config,
                secrets_named,
                problems,
                ..
            } = embedded::examine(&paths).await;
            Findings {
                config,
                origin: paths.secrets.display().to_string(),
                secrets_named,
                problems,
            }
        }
        Backend::Aws => examine_aws(&args.config, &args.aws).await?,
    };
    let config_name = args.config.display().to_string();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report(&config_name, &findings))?);
    }
    if !findings.problems.is_empty() {
        return Err(not_ready(&config_name, &findings.problems).into());
    }
    if !args.json {
        print_summary(&config_name, &findings);
    }
    Ok(())
}

/// The configuration at `path` checked against SSM Parameter Store: the secrets `slipway serve
/// --backend aws` and the Lambda functions read. Errs (exit 7) only when SSM cannot be reached.
pub(crate) async fn examine_aws(path: &Path, aws: &crate::aws::AwsArgs) -> anyhow::Result<Findings> {
    let origin = "SSM Parameter Store".to_owned();
    let mut problems = Vec::new();
    let config = match Config::read(path).and_then(|text| Config::parse_all(&text, path)) {
        Ok((config, invalid)) => {
            problems.extend(invalid.iter().map(Problem::from));
            config
        }
        Err(e) => {
            problems.push(Problem::from(&e));
            return Ok(Findings {
                config: None,
                origin,
                secrets_named: 0,
                problems,
            });
        }
    };
    let prefix = std::env::var(vars::PARAMETER_PREFIX).unwrap_or_else(|_| "/slipway".into());
    let inside = format!("{}/", prefix.trim_end_matches('/'));
    for (key, param) in checks::named_secrets(&config) {
        if !param.as_str().starts_with(&inside) {
            problems.push(Problem {
                message: format!(
                    "secret {param} ({key}) is outside {prefix}, the only path slipway's functions may read \
                     ({} sets it)",
                    vars::PARAMETER_PREFIX
                ),
                key: Some(key),
            });
        }
    }
    let sdk = sdk_config(aws.endpoint_url.as_deref()).await;
    let store = SsmSecrets::new(aws_sdk_ssm::Client::new(&sdk));
    let checked = checks::check_secrets(&config, &store)
        .await
        .map_err(|e| Failure::unavailable("cannot read the secrets in SSM Parameter Store", e))?;
    problems.extend(checked.findings.iter().map(|f| Problem {
        key: Some(f.key.clone()),
        message: f.describe(&origin),
    }));
    Ok(Findings {
        config: Some(config),
        origin,
        secrets_named: checked.named,
        problems,
    })
}

/// The failure (exit 3) for `problems`: the one problem, or each on a line of its own.
pub(crate) fn not_ready(config: &str, problems: &[Problem]) -> Failure {
    match problems {
        [one] => Failure::config(&one.message),
        many => {
            let lines: String = many.iter().map(|p| format!("\n  - {}", p.message)).collect();
            Failure::config(format!("{config} is not ready: {} problems:{lines}", many.len()))
        }
    }
}

/// The JSON document `--json` prints.
fn report(config_name: &str, findings: &Findings) -> serde_json::Value {
    let pipelines: Vec<serde_json::Value> = findings
        .config
        .iter()
        .flat_map(|c| &c.pipelines)
        .map(|p| {
            json!({
                "name": p.name.as_str(),
                "repo": p.repo.as_str(),
                "branch": p.branch.as_str(),
                "environments": p.environments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "ok": findings.problems.is_empty(),
        "config": config_name,
        "secrets": findings.origin,
        "pipelines": pipelines,
        "environments": findings.config.iter().flat_map(|c| &c.pipelines).map(|p| p.environments.len()).sum::<usize>(),
        "secrets_named": findings.secrets_named,
        "problems": findings.problems,
    })
}

fn print_summary(config_name: &str, findings: &Findings) {
    let Some(config) = &findings.config else { return };
    let environments: usize = config.pipelines.iter().map(|p| p.environments.len()).sum();
    println!("{config_name} is ready to serve:");
    println!(
        "  pipelines     {}: {}",
        config.pipelines.len(),
        config
            .pipelines
            .iter()
            .map(|p| {
                let envs: Vec<&str> = p.environments.iter().map(|e| e.name.as_str()).collect();
                format!("{} ({})", p.name, envs.join(" → "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  environments  {environments}");
    println!(
        "  secrets       {} named, every one in {} and none a placeholder",
        findings.secrets_named, findings.origin
    );
    if let Some(url) = &config.public_url {
        println!("  public_url    {url}");
    }
}

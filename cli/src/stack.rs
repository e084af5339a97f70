//! Where a command that acts finds slipway: the configuration, and the embedded data directory
//! and secrets file, or (`--backend aws`) the stack on AWS.

use std::path::PathBuf;

use slipway::app::App;
use slipway::embedded::Paths;

use crate::Backend;
use crate::exit::{Failure, Kind};

#[derive(Debug, clap::Args)]
pub struct StackArgs {
    /// The pipelines, environments and channels.
    #[arg(long, default_value = "slipway.toml")]
    pub config: PathBuf,
    /// Where the embedded database lives.
    #[arg(long, default_value = ".slipway", env = "SLIPWAY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The secrets file (TOML, parameter name → value). Default: slipway.secrets.toml beside the config.
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Where state, queues and secrets live: `embedded` or `aws`.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
    #[command(flatten)]
    pub aws: crate::aws::AwsArgs,
}

impl StackArgs {
    /// slipway as `slipway serve` runs it here. With `needs_data`, an embedded data directory
    /// that was never served from is refused instead of created.
    pub async fn open(&self, needs_data: bool) -> anyhow::Result<App> {
        let paths = Paths {
            secrets: self
                .secrets
                .clone()
                .unwrap_or_else(|| Paths::default_secrets(&self.config)),
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
        };
        let fallback = url::Url::parse("http://127.0.0.1:8080")?;
        Ok(match self.backend {
            Backend::Embedded => {
                if needs_data && !paths.database().exists() {
                    return Err(Failure::not_found(format!(
                        "no slipway data in {}: nothing was ever deployed from here (set --data-dir)",
                        self.data_dir.display()
                    ))
                    .into());
                }
                match slipway::embedded::open(&paths, None, fallback).await {
                    Ok(app) => app,
                    Err(slipway::embedded::StartupError::Invalid { problems }) => {
                        return Err(crate::check::not_ready(&self.config.display().to_string(), &problems).into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Backend::Aws => {
                let config = slipway::config::Config::load(&paths.config)
                    .map_err(|e| Failure::because(Kind::Config, "the configuration is not ready", e))?;
                let public_url = config.public_url.clone().unwrap_or(fallback);
                let (settings, sdk) = crate::aws::settings(&self.aws, public_url).await?;
                slipway::cloud::app(&settings, &sdk, Some(config)).await?
            }
        })
    }
}

//! `slipway bootstrap` and `slipway serve --backend aws`: the AWS backend from one machine,
//! against AWS itself or an emulator (`--endpoint-url`, or `AWS_ENDPOINT_URL`).

use std::path::PathBuf;

use slipway::adapters::aws::{Settings, sdk_config, vars};
use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::cloud::{self, Names};

#[derive(Debug, clap::Args)]
pub struct AwsArgs {
    /// An AWS emulator's endpoint (moto server, LocalStack). Default: AWS itself.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// The stack whose resources to use: bucket <stack>-state, queues <stack>-deploy, ….
    #[arg(long, default_value = "slipway")]
    pub stack: String,
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// The configuration to upload.
    #[arg(long, default_value = "slipway.toml")]
    config: PathBuf,
    /// The secrets to put into Parameter Store. Default: slipway.secrets.toml beside the config.
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// Print the stack's resources and the functions' environment as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    aws: AwsArgs,
}

pub async fn bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config).map_err(|e| {
        crate::exit::Failure::because(
            crate::exit::Kind::Config,
            format!("cannot read {}", args.config.display()),
            e,
        )
    })?;
    let secrets_path = args
        .secrets
        .unwrap_or_else(|| slipway::embedded::Paths::default_secrets(&args.config));
    let secrets = SecretsFile::load(&secrets_path)?;
    let sdk = sdk_config(args.aws.endpoint_url.as_deref()).await;
    let names = Names { stack: args.aws.stack };
    let mut progress = crate::progress::Progress::new(args.json);
    progress.start(format!(
        "creating the bucket, queues and parameters of stack {:?}",
        names.stack
    ));
    let settings = cloud::bootstrap(&sdk, &names, &text, &secrets).await;
    progress.clear();
    let settings = settings?;
    let env = [
        (vars::STATE_BUCKET, settings.bucket.as_str()),
        (vars::DEPLOY_QUEUE_URL, &settings.queues.deploy),
        (vars::SMOKE_QUEUE_URL, &settings.queues.smoke),
        (vars::NOTIFY_QUEUE_URL, &settings.queues.notify),
        (vars::DEPLOY_DLQ_URL, &settings.queues.deploy_dlq),
        (vars::SMOKE_DLQ_URL, &settings.queues.smoke_dlq),
        (vars::NOTIFY_DLQ_URL, &settings.queues.notify_dlq),
    ];
    if args.json {
        let environment: serde_json::Map<String, serde_json::Value> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "stack": names.stack,
                "bucket": settings.bucket,
                "config_key": settings.config_key,
                "parameters": secrets.names().count(),
                "environment": environment,
            }))?
        );
        return Ok(());
    }
    println!(
        "bootstrapped stack {:?}{}",
        names.stack,
        args.aws.endpoint_url.map(|e| format!(" on {e}")).unwrap_or_default()
    );
    println!(
        "  bucket      s3://{} (versioned; configuration at {})",
        settings.bucket, settings.config_key
    );
    println!(
        "  queues      {}, {}, {} (each with a dead-letter queue after {} receives)",
        settings.queues.deploy,
        settings.queues.smoke,
        settings.queues.notify,
        cloud::MAX_RECEIVES
    );
    println!("  parameters  {} put as SecureString", secrets.names().count());
    println!("\nThe environment a function (or `serve --backend aws`) needs:");
    for (name, value) in env {
        println!("  export {name}={value}");
    }
    Ok(())
}

/// The settings for `serve --backend aws`: from the environment when `SLIPWAY_STATE_BUCKET`
/// is set (as in Lambda), else found by the stack's names.
pub async fn settings(aws: &AwsArgs, public_url: url::Url) -> anyhow::Result<(Settings, aws_config::SdkConfig)> {
    let sdk = sdk_config(aws.endpoint_url.as_deref()).await;
    let mut settings = if std::env::var_os(vars::STATE_BUCKET).is_some() {
        Settings::from_env()?
    } else {
        cloud::resolve(
            &sdk,
            &Names {
                stack: aws.stack.clone(),
            },
        )
        .await?
    };
    settings.public_url.get_or_insert(public_url);
    Ok((settings, sdk))
}

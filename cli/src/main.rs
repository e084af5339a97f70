//! The `slipway` command. Each subcommand wires the library; behaviour lives in `slipway`.

mod aws;
mod check;
mod control;
mod delivery;
mod demo;
mod deploy;
mod exit;
mod init;
mod inspect;
mod progress;
mod reference;
mod rollback;
mod sample;
mod send;
mod stack;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use slipway::embedded::{self, Paths};

/// mimalloc instead of the system's allocator: under `slipway serve`'s load (many small
/// allocations freed on other threads) glibc's malloc spent about a fifth of the server's
/// time, much of it waiting for its arenas' locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version = reference::VERSION.as_str(),
    about = "Continuous delivery: push → CI → staging → approval → production"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve webhooks, approval links and the API, and run the workers, on the embedded backend.
    Serve(ServeArgs),
    /// Check the configuration and that every secret it names exists and is not a placeholder,
    /// as `serve` does before it starts; binds no port, opens no database. Exit 3 if anything is wrong.
    Check(check::CheckArgs),
    /// Run the whole path on this machine against a sample app. No set-up, nothing to configure.
    Demo(demo::DemoArgs),
    /// Write a working set-up for one pipeline into DIR: configuration, fresh secrets, deploy
    /// scripts for a local sample app, and a push to send. Asks nothing; prints what to run next.
    Init(init::InitArgs),
    /// Serve one environment of the sample app `slipway init` deploys (its release script runs this).
    #[command(hide = true)]
    SampleApp(sample::SampleAppArgs),
    /// List runs, newest first, a page at a time (read from the index of runs).
    Runs {
        #[command(flatten)]
        page: inspect::PageArgs,
        #[command(flatten)]
        data: inspect::DataArgs,
    },
    /// Show one run: its stages and history. ID may be shortened to <pipeline>-<sha prefix>,
    /// or to the start of its commit SHA.
    Run {
        id: String,
        #[command(flatten)]
        data: inspect::DataArgs,
    },
    /// Sign a payload and POST it the way a git host (or CI) would.
    Send(send::SendArgs),
    /// Create a stack's bucket, queues (with dead-letter queues) and parameters on AWS or an
    /// emulator, and upload the configuration.
    Bootstrap(aws::BootstrapArgs),
    /// Put an environment back to an earlier release (queued; the workers carry it out).
    Rollback(rollback::RollbackArgs),
    /// Run an environment's deploy phases from this machine, and record it as a manual release.
    Deploy(deploy::DeployArgs),
    /// Print a sign-in link to slipway's pages for an approver or a viewer.
    LoginLink(LoginLinkArgs),
    /// List the approvals waiting for people, the soonest to expire first.
    Approvals(control::ApprovalsArgs),
    /// Approve (or with --reject, reject) a run's waiting approval as an approver.
    Approve(control::ApproveArgs),
    /// Deploy a run that failed at a deploy, smoke checks or bake again.
    Retry(control::RetryArgs),
    /// Follow a run's stages until it ends; exit 0 if it was released, 6 otherwise.
    Watch(control::WatchArgs),
    /// DORA's four keys per pipeline (deploys, lead time, change failure rate, time to
    /// restore) for its last environment.
    Metrics(delivery::MetricsArgs),
    /// Queue messages that exhausted their retries.
    DeadLetters {
        #[command(flatten)]
        data: inspect::DataArgs,
    },
    /// Print a shell completion script: `slipway completions bash > /etc/bash_completion.d/slipway`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (slipway.1), or with --dir write one page per command there.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print the CLI reference in Markdown (docs/cli.md's generated part).
    #[command(hide = true)]
    Reference,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The pipelines, environments and channels.
    #[arg(long, default_value = "slipway.toml")]
    config: PathBuf,
    /// Where the embedded database lives.
    #[arg(long, default_value = ".slipway", env = "SLIPWAY_DATA_DIR")]
    data_dir: PathBuf,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The secrets file (TOML, parameter name → value). Default: slipway.secrets.toml beside the config.
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// The URL people reach slipway at; approval links start with it. Default: the config's
    /// public_url, else http://<listen>.
    #[arg(long)]
    public_url: Option<url::Url>,
    /// Where state, queues and secrets live: `embedded` (one SQLite file and the secrets
    /// file) or `aws` (S3, SQS and SSM Parameter Store; see `slipway bootstrap`).
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    #[command(flatten)]
    aws: aws::AwsArgs,
}

#[derive(Debug, clap::Args)]
struct LoginLinkArgs {
    /// Who signs in: an approver's or a viewer's id from the configuration.
    #[arg(long = "as", value_name = "ID")]
    who: slipway::domain::ApproverId,
    /// How long the link works (the session it starts lasts `[dashboard] session`).
    #[arg(long, default_value = "24h")]
    valid: jiff::SignedDuration,
    /// Print `{"link", "who", "expires_at"}` as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    stack: stack::StackArgs,
}

async fn login_link(args: LoginLinkArgs) -> anyhow::Result<()> {
    if args.valid <= jiff::SignedDuration::ZERO {
        return Err(exit::Failure::new(exit::Kind::Usage, "--valid must be longer than 0s").into());
    }
    let app = args.stack.open(false).await?;
    let link = slipway::http::auth::sign_in_link(&app, &args.who, args.valid).await?;
    let until = app.clock.now().checked_add(args.valid).unwrap_or(jiff::Timestamp::MAX);
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "link": link, "who": args.who, "expires_at": until })
        );
        return Ok(());
    }
    println!("{link}");
    eprintln!(
        "This link signs {} in to {} until {until}; anyone who has it can, so send it only to them.",
        args.who, app.public_url,
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    Embedded,
    Aws,
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let paths = Paths {
        secrets: args
            .secrets
            .clone()
            .unwrap_or_else(|| Paths::default_secrets(&args.config)),
        config: args.config,
        data_dir: args.data_dir,
    };
    // Everything `slipway check` checks, before binding: a refused start-up leaves no port
    // taken and no database made.
    let config_name = paths.config.display().to_string();
    let ready = match args.backend {
        Backend::Embedded => match embedded::check(&paths).await {
            Ok(checked) => Ready::Embedded(checked),
            Err(embedded::StartupError::Invalid { problems }) => {
                return Err(check::not_ready(&config_name, &problems).into());
            }
            Err(e) => return Err(e.into()),
        },
        Backend::Aws => {
            let findings = check::examine_aws(&paths.config, &args.aws).await?;
            match findings.config {
                Some(config) if findings.problems.is_empty() => Ready::Aws(config),
                _ => return Err(check::not_ready(&config_name, &findings.problems).into()),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let fallback = url::Url::parse(&format!("http://{local}"))?;
    let app = match ready {
        Ready::Embedded(checked) => checked.open(args.public_url, fallback)?,
        Ready::Aws(config) => {
            let public_url = args
                .public_url
                .or_else(|| config.public_url.clone())
                .unwrap_or(fallback);
            let (settings, sdk) = aws::settings(&args.aws, public_url).await?;
            slipway::cloud::app(&settings, &sdk, Some(config)).await?
        }
    };
    if let Some(warning) = slipway::config::checks::public_url_warning(&app.public_url, local) {
        tracing::warn!(public_url = %app.public_url, listen = %local, "{warning}");
        eprintln!("warning: {warning}");
    }
    tracing::info!(
        listen = %local,
        public_url = %app.public_url,
        backend = ?args.backend,
        pipelines = app.config.pipelines.len(),
        "slipway is serving"
    );
    slipway::server::run(app, listener, slipway::server::shutdown_signal()).await?;
    Ok(())
}

/// What `serve` checked before binding, ready to open.
#[derive(Debug)]
enum Ready {
    Embedded(embedded::Checked),
    Aws(slipway::config::Config),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0; usage errors exit 2, as clap documents.
        Err(e) => e.exit(),
    };
    if !matches!(
        cli.command,
        Command::Demo(_)
            | Command::Init(_)
            | Command::SampleApp(_)
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Reference
    ) {
        slipway::telemetry::init();
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Init(args) => init::run(args).await,
        Command::SampleApp(args) => sample::sample_app(args).await,
        Command::Runs { page, data } => inspect::runs(&data, &page).await,
        Command::Run { id, data } => inspect::run(&data, &id).await,
        Command::Send(args) => send::run(args).await,
        Command::Rollback(args) => rollback::run(args).await,
        Command::Deploy(args) => deploy::run(args).await,
        Command::LoginLink(args) => login_link(args).await,
        Command::Approvals(args) => control::approvals(args).await,
        Command::Approve(args) => control::approve(args).await,
        Command::Retry(args) => control::retry(args).await,
        Command::Watch(args) => control::watch(args).await,
        Command::Metrics(args) => delivery::metrics(args).await,
        Command::Bootstrap(args) => aws::bootstrap(args).await,
        Command::DeadLetters { data } => inspect::dead_letters(&data).await,
        Command::Completions { shell } => reference::completions::<Cli>(shell),
        Command::Man { dir } => reference::man::<Cli>(dir.as_deref()),
        Command::Reference => reference::print(reference::markdown::<Cli>().as_bytes()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            exit::kind_of(&e).into()
        }
    }
}

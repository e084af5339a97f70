//! `slipway init [DIR]`: a working slipway set-up for one pipeline, on this machine, without
//! a question asked — a configuration with staging and production, a secrets file of fresh
//! random values, deploy scripts for a local sample app, and a push and a CI result to send.
//! Then it prints the three commands that take that push to an approval link.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use slipway::config::Config;
use slipway::domain::{ApproverId, Mode, PipelineName, RepoName};

use crate::exit::{Failure, Kind};
use crate::sample::{self, toml_str};
use crate::send::Host;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to write the files (created if missing).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The repository the pipeline follows, owner/name as on the git host.
    #[arg(long, default_value = "acme/shop")]
    repo: String,
    /// The git host that sends the pushes.
    #[arg(long, value_enum, default_value_t = Host::Github)]
    host: Host,
    /// The branch the pipeline follows.
    #[arg(long, default_value = "main")]
    branch: String,
    /// `delivery`: production waits for an approval; `deployment`: every green commit goes live.
    #[arg(long, value_enum, default_value_t = InitMode::Delivery)]
    mode: InitMode,
    /// Who approves production (delivery mode): an id, matched against commit authors' logins.
    #[arg(long, default_value = "alice")]
    approver: String,
    /// Where `slipway serve` will listen; the printed commands send to it.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Replace files a previous `slipway init` wrote (including the secrets).
    #[arg(long)]
    force: bool,
    /// Print one JSON document: the pipeline, the files written and the next three commands.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitMode {
    Delivery,
    Deployment,
}

const ENVIRONMENTS: [&str; 2] = ["staging", "production"];

/// The files `init` writes, relative to DIR.
fn files() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = [
        "slipway.toml",
        "slipway.secrets.toml",
        "events/push.json",
        "events/ci.json",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    all.extend(sample::SCRIPTS.iter().map(|(name, _)| Path::new("deploy").join(name)));
    all.extend(
        ENVIRONMENTS
            .iter()
            .map(|env| Path::new("envs").join(env).join("db.json")),
    );
    all
}

/// A pipeline name made from the repository's name: `acme/Web_Shop` → `web-shop`.
fn pipeline_name(repo: &RepoName) -> PipelineName {
    let name: String = repo
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-');
    let name = &name[..name.len().min(40)];
    PipelineName::parse(name.trim_end_matches('-'))
        .unwrap_or_else(|_| PipelineName::parse("app").expect("a valid name"))
}

/// A path for a shell command line, quoted if it needs to be.
fn quoted(s: &str) -> String {
    shlex::try_quote(s).map_or_else(|_| s.to_owned(), |q| q.into_owned())
}

struct Secrets {
    webhook: &'static str,
    approvals: &'static str,
    ci: String,
    db: Vec<String>,
}

pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    let repo = RepoName::parse(&args.repo).map_err(|e| Failure::because(Kind::Usage, "--repo", e))?;
    let branch =
        slipway::domain::BranchName::parse(&args.branch).map_err(|e| Failure::because(Kind::Usage, "--branch", e))?;
    let approver = ApproverId::parse(&args.approver).map_err(|e| Failure::because(Kind::Usage, "--approver", e))?;
    let name = pipeline_name(&repo);

    let existing: Vec<String> = files()
        .into_iter()
        .filter(|f| args.dir.join(f).exists())
        .map(|f| f.display().to_string())
        .collect();
    if !existing.is_empty() && !args.force {
        return Err(Failure::refused(format!(
            "{} already holds {}: not overwritten (--force replaces them, secrets included)",
            args.dir.display(),
            existing.join(", ")
        ))
        .into());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let root = std::path::absolute(&args.dir)?;
    let root = root.canonicalize().unwrap_or(root);

    let secrets = Secrets {
        webhook: match args.host {
            Host::Github => "/slipway/github/webhook-secret",
            Host::Gitlab => "/slipway/gitlab/token",
            Host::Bitbucket => "/slipway/bitbucket/secret",
        },
        approvals: "/slipway/approvals/signing-key",
        ci: format!("/slipway/{name}/ci-secret"),
        db: ENVIRONMENTS
            .iter()
            .map(|env| format!("/slipway/{name}/{env}/db-password"))
            .collect(),
    };

    // Each environment's sample app listens on a port free right now (held together, so two
    // environments never get the same one).
    let held = ENVIRONMENTS
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ports = held
        .iter()
        .map(std::net::TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    drop(held);
    let server = std::env::current_exe().context("cannot tell where the slipway program is")?;
    let config = config_text(&args, &root, &repo, &name, &approver, &secrets, &ports, &server);
    let config_path = root.join("slipway.toml");
    Config::parse(&config, &config_path).context("the configuration init would write does not validate (a bug)")?;

    sample::write_scripts(&root.join("deploy"), args.force)?;
    for env in ENVIRONMENTS {
        sample::prepare_environment(&root.join("envs").join(env), args.force)?;
    }
    sample::write_new(&config_path, &config, 0o644, args.force)?;

    let mut values = vec![
        (secrets.webhook.to_owned(), sample::random_secret()),
        (secrets.approvals.to_owned(), sample::random_secret()),
        (secrets.ci.clone(), sample::random_secret()),
    ];
    values.extend(secrets.db.iter().map(|p| (p.clone(), sample::random_secret())));
    let text: String = values
        .iter()
        .map(|(k, v)| format!("{} = {}\n", toml_str(k), toml_str(v)))
        .collect();
    let text = format!(
        "# Written by `slipway init`: fresh random values, for this machine only. Keep this file private.\n{text}"
    );
    sample::write_new(&root.join("slipway.secrets.toml"), &text, 0o600, args.force)?;

    let sha = sample::random_sha();
    std::fs::create_dir_all(root.join("events"))?;
    let push = sample::push(
        args.host,
        repo.as_str(),
        branch.as_str(),
        &sha,
        "Try slipway: the first push",
    );
    sample::write_new(&root.join("events/push.json"), &pretty(&push)?, 0o644, args.force)?;
    let ci = serde_json::json!({
        "repo": repo.as_str(),
        "sha": sha,
        "status": "success",
        "artifact": format!("{name}:{}", &sha[..12]),
    });
    sample::write_new(
        &root.join("events/ci.json"),
        &format!("{}\n", serde_json::to_string_pretty(&ci)?),
        0o644,
        args.force,
    )?;

    print_next(&args, &repo, &branch, &name, &secrets);
    Ok(())
}

fn pretty(json: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    Ok(format!("{}\n", serde_json::to_string_pretty(&value)?))
}

#[allow(clippy::too_many_arguments)]
fn config_text(
    args: &InitArgs,
    root: &Path,
    repo: &RepoName,
    name: &PipelineName,
    approver: &ApproverId,
    secrets: &Secrets,
    ports: &[SocketAddr],
    server: &Path,
) -> String {
    let host_table = match args.host {
        Host::Github => format!("[github]\nwebhook_secret = {}\n", toml_str(secrets.webhook)),
        Host::Gitlab => format!("[gitlab]\ntoken = {}\n", toml_str(secrets.webhook)),
        Host::Bitbucket => format!("[bitbucket]\nsecret = {}\n", toml_str(secrets.webhook)),
    };
    let (mode, approvers) = match args.mode {
        InitMode::Delivery => (
            Mode::Delivery,
            format!(
                "\n# Who is asked to approve production. Their link is in the notifications.\n[[pipelines.approvers]]\nid = {}\naddress = {}\n",
                toml_str(approver.as_str()),
                toml_str(&format!("{approver}@example.com"))
            ),
        ),
        InitMode::Deployment => (Mode::Deployment, String::new()),
    };
    let mode_word = match mode {
        Mode::Delivery => "delivery",
        Mode::Deployment => "deployment",
    };
    let (scripts, envs) = (root.join("deploy"), root.join("envs"));
    let environments: String = ENVIRONMENTS
        .iter()
        .zip(ports)
        .zip(&secrets.db)
        .map(|((env, addr), db)| {
            sample::Environment {
                name: env,
                addr: *addr,
                scripts: &scripts,
                envs: &envs,
                db_param: db,
                timeout: "2m",
                deadline: "30s",
                server: Some(server),
            }
            .toml()
        })
        .collect();
    format!(
        r#"# Written by `slipway init`. One pipeline: {repo} {branch} → staging → {gate}production.
# The deploy scripts in deploy/ release a local sample app (envs/); replace them with your own.
# Every key is described in slipway.example.toml.

{host_table}
[approvals]
signing_key = {approvals}

# Each notification as a few lines on slipway's output, and as JSON in notifications.jsonl.
[[notify]]
type = "stdout"

[[notify]]
type = "file"
path = {notifications}

[[pipelines]]
name = "{name}"
repo = {repo_str}
branch = {branch_str}
mode = "{mode_word}"
ci_secret = {ci}
approval_expiry = "24h"
{approvers}{environments}"#,
        branch = args.branch,
        gate = if mode == Mode::Delivery { "approval → " } else { "" },
        approvals = toml_str(secrets.approvals),
        notifications = toml_str(&root.join("notifications.jsonl").display().to_string()),
        repo_str = toml_str(repo.as_str()),
        branch_str = toml_str(&args.branch),
        ci = toml_str(&secrets.ci),
    )
}

fn print_next(
    args: &InitArgs,
    repo: &RepoName,
    branch: &slipway::domain::BranchName,
    name: &PipelineName,
    secrets: &Secrets,
) {
    let path = |file: &str| quoted(&args.dir.join(file).display().to_string());
    let here = args.dir == Path::new(".");
    let base = format!("http://{}", args.listen);
    let mut serve = String::from("slipway serve");
    if !here {
        serve.push_str(&format!(
            " --config {} --data-dir {}",
            path("slipway.toml"),
            path(".slipway")
        ));
    }
    if args.listen.to_string() != "127.0.0.1:8080" {
        serve.push_str(&format!(" --listen {}", args.listen));
    }
    let host = match args.host {
        Host::Github => String::new(),
        other => format!(" --host {}", other.as_str()),
    };
    let push = format!(
        "slipway send {} --to {base}{}{host} --event {} --secret-file {} --param {}",
        path("events/push.json"),
        sample::hook_path(args.host),
        quoted(sample::push_event(args.host)),
        path("slipway.secrets.toml"),
        secrets.webhook,
    );
    let ci = format!(
        "slipway send {} --to {base}/hooks/ci --event ci --secret-file {} --param {}",
        path("events/ci.json"),
        path("slipway.secrets.toml"),
        secrets.ci,
    );
    if args.json {
        let files: Vec<String> = files().iter().map(|f| args.dir.join(f).display().to_string()).collect();
        let answer = serde_json::json!({
            "dir": args.dir.display().to_string(),
            "pipeline": name.as_str(),
            "repo": repo.as_str(),
            "branch": branch.as_str(),
            "files": files,
            "next": [serve, push, ci],
        });
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
        return;
    }
    println!(
        "Wrote {}: slipway.toml (pipeline {name}: {repo} {branch}, staging then production), \
         slipway.secrets.toml (fresh random secrets, mode 0600), deploy/ (one script per phase), \
         envs/ (the sample app's staging and production) and events/ (a push and a CI result).\n",
        args.dir.display()
    );
    println!("Next:\n");
    println!("  1. {serve}");
    println!("  2. {push}");
    println!("  3. {ci}");
    println!();
    let notifications = path("notifications.jsonl");
    match args.mode {
        InitMode::Delivery => println!(
            "1 starts slipway (leave it running); 2 is the push your git host would send; 3 is your CI saying the build is green.\n\
             slipway then deploys staging and asks {} to approve production: the approval link is in serve's output and in {notifications}.",
            args.approver
        ),
        InitMode::Deployment => println!(
            "1 starts slipway (leave it running); 2 is the push your git host would send; 3 is your CI saying the build is green.\n\
             slipway then deploys staging, then production; each step is in serve's output and in {notifications}."
        ),
    }
    println!(
        "More pushes: slipway send --sample push --pipeline {name} --config {} --to {base}{}",
        path("slipway.toml"),
        sample::hook_path(args.host)
    );
}

//! `slipway demo`: the whole path on this machine, with nothing to set up.
//!
//! It makes a throw-away directory with a sample app whose staging and production are two
//! local HTTP services, each with a database file; a deploy script that slipway runs once
//! per phase — back the database up, migrate it, release the commit (and restore the backup
//! if a later phase fails); and a slipway configuration and secrets file.
//! Then it starts slipway on the embedded backend and plays the outside world through real
//! signed HTTP: GitHub pushes, CI reports green, and an approver clicks (or, with `--yes`,
//! the demo POSTs the approval itself).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use slipway::domain::{PipelineName, Run, RunId, RunStatus, StageKind};
use slipway::embedded::Paths;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Approve through the real POST instead of waiting for a click in a browser.
    #[arg(long)]
    yes: bool,
    /// Keep the throw-away directory (config, database, logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

const DEPLOY_SCRIPT: &str = r#"#!/bin/sh
# The sample app's deploy, one program for every phase slipway runs in turn:
# backup, then migrate, then release (and restore, if a later phase fails). No prompts.
set -eu
dir="$DEMO_ENVS/$SLIPWAY_ENV"
case "$SLIPWAY_PHASE" in
backup)
  mkdir -p "$dir/backups"
  ref="db-before-$(printf %.12s "$SLIPWAY_SHA").json"
  cp "$dir/db.json" "$dir/backups/$ref"
  echo "copied the database to backups/$ref"
  echo "SLIPWAY_BACKUP_REF=$ref"
  ;;
migrate)
  echo "schema 1 -> 2, connecting with password $DEMO_DB_PASSWORD"
  sed 's/"schema": *1/"schema": 2/' "$dir/db.json" > "$dir/db.json.new"
  mv "$dir/db.json.new" "$dir/db.json"
  ;;
release)
  echo "releasing $SLIPWAY_SHA (artifact $SLIPWAY_ARTIFACT)"
  printf '%s' "$SLIPWAY_SHA" > "$dir/current"
  ;;
restore)
  echo "restoring backups/$SLIPWAY_BACKUP_REF"
  cp "$dir/backups/$SLIPWAY_BACKUP_REF" "$dir/db.json"
  ;;
*)
  echo "unknown phase $SLIPWAY_PHASE" >&2
  exit 2
  ;;
esac
"#;

/// The schema version the sample app's code needs.
const SCHEMA: u64 = 2;

/// One sample environment: answers `/health` from its release and its database.
async fn health(State(dir): State<PathBuf>) -> (StatusCode, Json<Value>) {
    let version = std::fs::read_to_string(dir.join("current")).ok();
    let db: Option<Value> = std::fs::read(dir.join("db.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let schema = db.as_ref().and_then(|d| d["schema"].as_u64());
    let database = match schema {
        None => "unreadable".to_owned(),
        Some(s) if s == SCHEMA => "ok".to_owned(),
        Some(s) => format!("schema {s}, needs {SCHEMA}"),
    };
    let healthy = version.is_some() && database == "ok";
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"version": version, "database": database})))
}

async fn start_environment(envs: &Path, name: &str) -> anyhow::Result<SocketAddr> {
    let dir = envs.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("db.json"), r#"{"schema": 1, "orders": []}"#)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/health", get(health)).with_state(dir);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn write_files(dir: &Path, slipway: SocketAddr, staging: SocketAddr, production: SocketAddr) -> anyhow::Result<Paths> {
    let script = dir.join("deploy.sh");
    std::fs::write(&script, DEPLOY_SCRIPT)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    let envs = dir.join("envs");
    let environment = |name: &str, addr: SocketAddr| {
        format!(
            r#"
[[pipelines.environments]]
name = "{name}"
deploy = {{ type = "command", command = [{script}], backup = [{script}], migrate = [{script}], restore = [{script}], timeout = "1m", env = {{ DEMO_ENVS = {envs} }}, secrets = {{ DEMO_DB_PASSWORD = "/slipway/shop/{name}/db-password" }} }}

[[pipelines.environments.smoke]]
name = "health, version and database"
url = "http://{addr}/health"
json = {{ "/version" = "{{sha}}", "/database" = "ok" }}
timeout = "2s"
deadline = "20s"
backoff = "200ms"
"#,
            script = toml_str(&script.display().to_string()),
            envs = toml_str(&envs.display().to_string()),
        )
    };
    let config = format!(
        r#"# Written by `slipway demo`.
public_url = "http://{slipway}"

[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[[notify]]
type = "file"
path = {notifications}

[[pipelines]]
name = "shop"
repo = "acme/shop"
branch = "main"
mode = "delivery"
ci_secret = "/slipway/shop/ci-secret"
approval_expiry = "1h"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"
{staging}{production}"#,
        notifications = toml_str(&dir.join("notifications.jsonl").display().to_string()),
        staging = environment("staging", staging),
        production = environment("production", production),
    );
    let paths = Paths {
        config: dir.join("slipway.toml"),
        secrets: dir.join("slipway.secrets.toml"),
        data_dir: dir.join("data"),
    };
    std::fs::write(&paths.config, config)?;
    let secrets: String = [
        "/slipway/github/webhook-secret",
        "/slipway/approvals/signing-key",
        "/slipway/shop/ci-secret",
        "/slipway/shop/staging/db-password",
        "/slipway/shop/production/db-password",
    ]
    .iter()
    .map(|name| format!("\"{name}\" = \"{}\"\n", random_hex(16)))
    .collect();
    std::fs::write(&paths.secrets, secrets)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&paths.secrets, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(paths)
}

fn push_payload(sha: &str) -> String {
    let author = slipway::samples::SampleAuthor {
        login: "dev",
        name: "Dee Veloper",
        email: "dev@example.com",
    };
    // Committed a quarter of an hour before the push, so the delivery figures have a lead time.
    let committed_at = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(15);
    slipway::samples::github_push(
        "acme/shop",
        "main",
        sha,
        "Show delivery dates in the basket",
        author,
        committed_at,
    )
}

async fn post_signed(
    client: &reqwest::Client,
    url: String,
    headers: &[(&str, &str)],
    body: String,
    secret: &str,
    header: &str,
) -> anyhow::Result<Value> {
    let mut request = client.post(&url).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let signature = slipway::signature::sign(secret.as_bytes(), body.as_bytes());
    let response = request.header(header, signature).body(body).send().await?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{url} answered {status}: {value}");
    }
    Ok(value)
}

fn secret_of(paths: &Paths, name: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&paths.secrets)?;
    let table: toml::Table = text.parse()?;
    table
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("demo secret missing")
}

fn approval_link(notifications: &Path) -> Option<String> {
    let text = std::fs::read_to_string(notifications).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|n| n["kind"] == "approval_requested")
        .and_then(|n| n["approve_url"].as_str().map(str::to_owned))
}

fn print_new(run: &Run, seen: &mut usize) {
    for entry in &run.history[*seen..] {
        println!(
            "  {}  {:<18} {}",
            entry.at.strftime("%H:%M:%S"),
            entry.actor.to_string(),
            entry.what
        );
        if entry.what.starts_with("deployed ") || entry.what.contains("deploy:") && entry.what.contains("failed") {
            let output = run
                .stages
                .iter()
                .filter(|s| s.kind == StageKind::Deploy && s.finished_at == Some(entry.at))
                .filter_map(|s| s.output.as_deref())
                .next();
            for line in output.unwrap_or("").lines() {
                println!("  {:>8}  {:<18} │ {line}", "", "");
            }
        }
    }
    *seen = run.history.len();
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        slipway::telemetry::init();
    }
    let tmp = tempfile::Builder::new()
        .prefix("slipway-demo-")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let dir = tmp.path().to_path_buf();
    let result = drive(&args, &dir).await;
    if args.keep {
        let kept = tmp.keep();
        println!(
            "\nkept {} (slipway.toml, data/slipway.db, envs/, notifications.jsonl)",
            kept.display()
        );
    }
    result
}

async fn drive(args: &DemoArgs, dir: &Path) -> anyhow::Result<()> {
    let envs = dir.join("envs");
    let staging = start_environment(&envs, "staging").await?;
    let production = start_environment(&envs, "production").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let paths = write_files(dir, addr, staging, production)?;
    let base = format!("http://{addr}");
    let app = slipway::embedded::open(&paths, None, url::Url::parse(&base)?).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(slipway::server::run(app.clone(), listener, async {
        let _ = stopped.await;
    }));

    println!("slipway demo — the whole path on this machine, nothing to set up\n");
    println!(
        "  slipway      {base}   (embedded backend: {})",
        paths.database().display()
    );
    println!("  staging      http://{staging}/health");
    println!("  production   http://{production}/health");
    println!("  config       {}\n", paths.config.display());

    let client = reqwest::Client::new();
    let sha = random_hex(20);
    let run_id = RunId::new(&PipelineName::parse("shop")?, &sha.parse()?);

    println!("→ GitHub: push of {} to acme/shop main (signed webhook)", &sha[..12]);
    let delivery = format!("demo-{}", random_hex(8));
    post_signed(
        &client,
        format!("{base}/hooks/github"),
        &[("x-github-event", "push"), ("x-github-delivery", &delivery)],
        push_payload(&sha),
        &secret_of(&paths, "/slipway/github/webhook-secret")?,
        "x-hub-signature-256",
    )
    .await?;
    println!("→ CI: build and tests of {} passed (signed callback)", &sha[..12]);
    let ci = json!({
        "repo": "acme/shop", "sha": sha, "status": "success",
        "build_url": "https://ci.example.com/acme/shop/builds/1",
        "artifact": format!("registry.example.com/acme/shop@sha256:{}", random_hex(32)),
        "coverage": 87.5,
    });
    post_signed(
        &client,
        format!("{base}/hooks/ci"),
        &[],
        ci.to_string(),
        &secret_of(&paths, "/slipway/shop/ci-secret")?,
        "x-slipway-signature",
    )
    .await?;
    println!();

    let mut seen = 0;
    let mut asked = false;
    let mut last_change = tokio::time::Instant::now();
    let outcome = loop {
        let run = app.load(&run_id).await?.context("the run disappeared")?.0;
        if run.history.len() > seen {
            last_change = tokio::time::Instant::now();
        }
        print_new(&run, &mut seen);
        let status = run.status();
        if status.is_finished() {
            break run;
        }
        if status == RunStatus::AwaitingApproval
            && !asked
            && let Some(link) = approval_link(&dir.join("notifications.jsonl"))
        {
            asked = true;
            if args.yes {
                println!("\n→ alice approves (POST {}…)\n", &link[..link.len().min(60)]);
                let response = client.post(&link).form(&[("decision", "approve")]).send().await?;
                if !response.status().is_success() {
                    bail!("approving answered {}", response.status());
                }
            } else {
                println!(
                    "\nalice is asked to approve. Open this link in a browser, read the page, and click Approve or Reject:\n"
                );
                println!("  {link}\n");
                println!("(waiting for the decision; run `slipway demo --yes` to approve automatically)\n");
            }
        }
        let waiting_on_person = status == RunStatus::AwaitingApproval;
        if !waiting_on_person && last_change.elapsed() > Duration::from_secs(120) {
            bail!(
                "no progress for two minutes; the run is stuck at {:?}",
                run.current_stage().map(|s| s.label())
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(150)) => {}
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    };
    let _ = stop.send(());
    let _ = server.await;

    println!();
    match outcome.status() {
        RunStatus::Released => {
            println!("✔ released {} to production.", outcome.sha.short());
            println!("  curl http://{production}/health   → the new version, database migrated");
            if args.keep {
                println!("  slipway run {} --data-dir {}", run_id, paths.data_dir.display());
            } else {
                println!("  run with --keep to keep the directory and inspect it with `slipway runs --data-dir …`");
            }
            Ok(())
        }
        status => {
            let why = outcome.stages.iter().find_map(|s| {
                s.summary.clone().filter(|_| {
                    s.status.is_terminal()
                        && s.status != slipway::domain::StageStatus::Succeeded
                        && s.status != slipway::domain::StageStatus::Skipped
                })
            });
            bail!("the run ended {status}: {}", why.unwrap_or_default())
        }
    }
}

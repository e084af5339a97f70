//! `slipway demo`: the whole path on this machine, with nothing to set up.
//!
//! It makes a throw-away directory with a sample app whose staging and production are two
//! local HTTP services, each with a database file; deploy scripts that slipway runs one per
//! phase — back the database up, migrate it, release the commit (and restore the backup
//! if a later phase fails); and a slipway configuration and secrets file (`crate::sample`).
//! Then it starts slipway on the embedded backend and plays the outside world through real
//! signed HTTP: GitHub pushes, CI reports green, and an approver clicks (or, with `--yes`,
//! the demo POSTs the approval itself). Without `--yes` it then keeps slipway and the sample
//! app up until Ctrl-C, so the run page and the app can be looked at.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use slipway::domain::{PipelineName, Run, RunId, RunStatus, StageKind};
use slipway::embedded::Paths;

use crate::sample::{self, toml_str};
use crate::send::Host;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Approve through the real POST instead of waiting for a click in a browser.
    #[arg(long)]
    yes: bool,
    /// Keep the throw-away directory (config, database, logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

/// Starts one environment of the sample app on a free loopback port, with a fresh database.
async fn start_environment(envs: &Path, name: &str) -> anyhow::Result<SocketAddr> {
    let dir = envs.join(name);
    sample::prepare_environment(&dir, false)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    sample::spawn_app(dir, listener);
    Ok(addr)
}

fn write_files(dir: &Path, slipway: SocketAddr, staging: SocketAddr, production: SocketAddr) -> anyhow::Result<Paths> {
    let scripts = dir.join("deploy");
    sample::write_scripts(&scripts, false)?;
    let envs = dir.join("envs");
    let environment = |name: &str, addr: SocketAddr| {
        sample::Environment {
            name,
            addr,
            scripts: &scripts,
            envs: &envs,
            db_param: &format!("/slipway/shop/{name}/db-password"),
            timeout: "1m",
            deadline: "20s",
            server: None,
        }
        .toml()
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
    .map(|name| format!("\"{name}\" = \"{}\"\n", sample::random_secret()))
    .collect();
    sample::write_new(&paths.secrets, &secrets, 0o600, false)?;
    Ok(paths)
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
    let client = reqwest::Client::new();
    let sha = sample::random_sha();
    let run_id = RunId::new(&PipelineName::parse("shop")?, &sha.parse()?);
    let run_page = app.link(&format!("/runs/{run_id}"));
    if args.yes {
        println!("  config       {}\n", paths.config.display());
    } else {
        println!("  config       {}", paths.config.display());
        // The control room needs a sign-in; alice's link signs this browser in for an hour.
        let alice = slipway::domain::ApproverId::parse("alice")?;
        let sign_in = slipway::http::auth::sign_in_link(&app, &alice, jiff::SignedDuration::from_hours(1)).await?;
        println!("  run page     {run_page}");
        println!("  sign in      {sign_in}   (as alice, to see the run page)\n");
    }

    println!("→ GitHub: push of {} to acme/shop main (signed webhook)", &sha[..12]);
    let delivery = format!("demo-{}", &sample::random_sha()[..16]);
    post_signed(
        &client,
        format!("{base}/hooks/github"),
        &[("x-github-event", "push"), ("x-github-delivery", &delivery)],
        sample::push(
            Host::Github,
            "acme/shop",
            "main",
            &sha,
            "Show delivery dates in the basket",
        ),
        &secret_of(&paths, "/slipway/github/webhook-secret")?,
        "x-hub-signature-256",
    )
    .await?;
    println!("→ CI: build and tests of {} passed (signed callback)", &sha[..12]);
    let ci = json!({
        "repo": "acme/shop", "sha": sha, "status": "success",
        "build_url": "https://ci.example.com/acme/shop/builds/1",
        "artifact": format!("registry.example.com/acme/shop@sha256:{}", sample::random_secret()),
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
    // The run's last notice goes out through the notify queue: wait until the channel wrote it.
    let notices = dir.join("notifications.jsonl");
    let last = outcome.status().to_string();
    // Another ending may be told under another kind (a failure that rolled back): wait less.
    let patience = Duration::from_secs(if outcome.status() == RunStatus::Released { 30 } else { 5 });
    let delivered = tokio::time::timeout(patience, async {
        while !notice_written(&notices, &run_id, &last) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .is_ok();

    println!();
    let result = match outcome.status() {
        RunStatus::Released => {
            println!("✔ released {} to production.", outcome.sha.short());
            if delivered {
                println!("  the `released` notice was delivered (notifications.jsonl)");
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
            Err(anyhow::anyhow!("the run ended {status}: {}", why.unwrap_or_default()))
        }
    };
    if !args.yes {
        // Keep slipway and the sample app up, so what was printed can be tried.
        let stopped = stop_requested()?;
        println!("\nslipway and the sample app keep running until Ctrl-C:");
        println!("  curl http://{production}/health   → the new version, database migrated");
        println!("  {run_page}   (the run page)");
        stopped.await;
        println!();
    }
    let _ = stop.send(());
    let _ = server.await;
    if result.is_ok() {
        if args.keep {
            println!("  slipway run {} --data-dir {}", run_id, paths.data_dir.display());
        } else {
            println!("  run with --keep to keep the directory and inspect it with `slipway runs --data-dir …`");
        }
    }
    result
}

/// Resolves on Ctrl-C (or SIGTERM), listening from the moment it is made: a signal sent right
/// after the prompt is not lost.
fn stop_requested() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Whether the `file` channel wrote a notice of `kind` for `run`.
fn notice_written(notifications: &Path, run: &RunId, kind: &str) -> bool {
    std::fs::read_to_string(notifications)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|n| n["kind"] == kind && n["run_id"] == run.as_str())
}

//! `slipway send` against a real `slipway serve`: secret files read as TOML or as the secret
//! alone, `--sample push` for a configured pipeline on each host, `--json`, exit codes by kind
//! of failure; and `slipway run` showing why a deploy failed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{API_TOKEN, Out, Serve, command, event, finish, toml_str, write_file};

const WEBHOOK: &str = "gh-webhook-secret-41a7";
const GITLAB: &str = "gl-token-8c2e";
const BITBUCKET: &str = "bb-secret-5d90";
const CI: &str = "ci-secret-77b1";
const DB_PASSWORD: &str = "db-password-e0c4f1";

/// A deploy script that talks for 30 lines (one with a secret) and fails on staging.
const FAILING_DEPLOY: &str = r#"#!/bin/sh
i=1
while [ "$i" -le 30 ]; do echo "deploy line $i"; i=$((i + 1)); done
echo "cannot connect with password $DB_PASSWORD"
exit 1
"#;

struct Site {
    dir: TempDir,
    serve: Serve,
}

impl Site {
    async fn new() -> Site {
        let dir = TempDir::new().unwrap();
        let path = dir.path();
        write_file(&path.join("deploy.sh"), FAILING_DEPLOY, 0o755);
        let config = format!(
            r#"
[github]
webhook_secret = "/slipway/github/webhook-secret"

[gitlab]
token = "/slipway/gitlab/token"

[bitbucket]
secret = "/slipway/bitbucket/secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[dashboard]
api_token = "/slipway/api-token"

[[pipelines]]
name = "shop"
repo = "acme/shop"
branch = "main"
mode = "deployment"
ci_secret = "/slipway/shop/ci-secret"

[[pipelines.environments]]
name = "staging"
deploy = {{ type = "command", command = [{script}], timeout = "30s", secrets = {{ DB_PASSWORD = "/slipway/shop/db-password" }} }}
"#,
            script = toml_str(path.join("deploy.sh").to_string_lossy()),
        );
        write_file(&path.join("slipway.toml"), &config, 0o644);
        let secrets = format!(
            "\"/slipway/github/webhook-secret\" = \"{WEBHOOK}\"\n\
             \"/slipway/gitlab/token\" = \"{GITLAB}\"\n\
             \"/slipway/bitbucket/secret\" = \"{BITBUCKET}\"\n\
             \"/slipway/approvals/signing-key\" = \"signing-key-03ad\"\n\
             \"/slipway/shop/ci-secret\" = \"{CI}\"\n\
             \"/slipway/shop/db-password\" = \"{DB_PASSWORD}\"\n\
             \"/slipway/api-token\" = \"{API_TOKEN}\"\n"
        );
        write_file(&path.join("slipway.secrets.toml"), &secrets, 0o600);
        let (config, data) = (path.join("slipway.toml"), path.join("data"));
        let args: [&OsStr; 4] = [
            "--config".as_ref(),
            config.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ];
        let serve = Serve::start(&args, path.join("serve.log")).await;
        Site { dir, serve }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `slipway send <args>`, from the site's directory (so `--config` defaults to its slipway.toml).
    async fn send(&self, args: &[&str]) -> Out {
        let mut cmd = command();
        cmd.current_dir(self.dir.path()).arg("send").args(args);
        finish(cmd).await
    }
}

fn secret_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    write_file(&path, text, 0o600);
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_secret_file_is_a_secrets_file_when_it_is_toml() {
    let site = Site::new().await;
    let hook = site.serve.url("/hooks/github");
    let ping = event("github/ping.json");
    let ping = ping.to_str().unwrap();
    let dir = site.dir.path();

    // The secret alone, with whitespace around it.
    let raw = secret_file(dir, "raw", &format!("  {WEBHOOK}\n\n"));
    let out = site
        .send(&[ping, "--to", &hook, "--event", "ping", "--secret-file", &raw])
        .await;
    out.success().stdout_has(&["200", "pong"]);

    // A secrets file with one entry: that entry, whatever its name.
    let one = secret_file(dir, "one.toml", &format!("\"/ci/github-hook\" = \"{WEBHOOK}\"\n"));
    let out = site
        .send(&[ping, "--to", &hook, "--event", "ping", "--secret-file", &one])
        .await;
    out.success().stdout_has(&["200", "pong"]);

    // Several entries and no --param: refused before sending, listing them.
    let all = site.path("slipway.secrets.toml");
    let all = all.to_str().unwrap();
    let out = site
        .send(&[ping, "--to", &hook, "--event", "ping", "--secret-file", all])
        .await
        .failure();
    assert_eq!(out.status.code(), Some(3), "{out}");
    out.stderr_has(&[
        "is a slipway secrets file with 7 entries",
        "/slipway/github/webhook-secret",
        "/slipway/shop/ci-secret",
        "--param",
    ]);
    assert!(!out.stderr.contains(WEBHOOK), "no secret is printed:\n{out}");

    // With --param, that entry; a --param the file lacks is named.
    site.send(&[
        ping,
        "--to",
        &hook,
        "--event",
        "ping",
        "--secret-file",
        all,
        "--param",
        "/slipway/github/webhook-secret",
    ])
    .await
    .success();
    let out = site
        .send(&[ping, "--to", &hook, "--secret-file", all, "--param", "/slipway/nope"])
        .await
        .failure();
    assert_eq!(out.status.code(), Some(3), "{out}");
    out.stderr_has(&["has no entry /slipway/nope"]);

    // A wrong secret: the server refuses (5); no server at all: unavailable (7).
    let wrong = secret_file(dir, "wrong", "not-the-secret");
    let out = site
        .send(&[ping, "--to", &hook, "--event", "ping", "--secret-file", &wrong])
        .await
        .failure();
    assert_eq!(out.status.code(), Some(5), "{out}");
    out.stdout_has(&["401"]).stderr_has(&["answered 401"]);
    let closed = format!(
        "http://127.0.0.1:{}/hooks/github",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let out = site
        .send(&[ping, "--to", &closed, "--secret-file", &raw])
        .await
        .failure();
    assert_eq!(out.status.code(), Some(7), "{out}");
    out.stderr_has(&["cannot reach"]);

    // A push no pipeline follows is accepted but starts nothing: send says so.
    let push = event("github/push.json");
    let out = site
        .send(&[push.to_str().unwrap(), "--to", &hook, "--secret-file", &raw])
        .await
        .failure();
    assert_eq!(out.status.code(), Some(4), "{out}");
    out.stdout_has(&["202"])
        .stderr_has(&["started nothing", "no pipeline follows Codertocat/Hello-World master"]);
}

#[tokio::test]
async fn a_sample_push_opens_a_run_on_each_host_and_run_shows_why_its_deploy_failed() {
    let site = Site::new().await;
    let sha = "5a3c0e9f1b2d4c6e8a0b1c2d3e4f5a6b7c8d9e0f";

    // Three hosts are set up, so a sample push needs --host.
    let out = site
        .send(&[
            "--sample",
            "push",
            "--pipeline",
            "shop",
            "--to",
            &site.serve.url("/hooks/github"),
        ])
        .await
        .failure();
    assert_eq!(out.status.code(), Some(3), "{out}");
    out.stderr_has(&["several git hosts", "--host"]);
    let out = site
        .send(&[
            "--sample",
            "push",
            "--pipeline",
            "nope",
            "--host",
            "github",
            "--to",
            &site.serve.url("/hooks/github"),
        ])
        .await
        .failure();
    assert_eq!(out.status.code(), Some(4), "{out}");
    out.stderr_has(&["no pipeline is named nope", "shop"]);

    // GitHub, with the sha given and --json: the answer names the run.
    let out = site
        .send(&[
            "--sample",
            "push",
            "--pipeline",
            "shop",
            "--host",
            "github",
            "--sha",
            sha,
            "--json",
            "--to",
            &site.serve.url("/hooks/github"),
        ])
        .await
        .success();
    let answer: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{out}"));
    assert_eq!(answer["status"], 201, "{answer:#}");
    assert_eq!(answer["run_id"], format!("shop-{sha}"), "{answer:#}");
    assert!(answer["delivery"].as_str().unwrap().starts_with("slipway-send-"));
    assert_eq!(answer["body"]["status"], "opened", "{answer:#}");

    // GitLab and Bitbucket: a random commit each, each a new run of acme/shop main.
    for (host, path) in [("gitlab", "/hooks/gitlab"), ("bitbucket", "/hooks/bitbucket")] {
        let out = site
            .send(&[
                "--sample",
                "push",
                "--pipeline",
                "shop",
                "--host",
                host,
                "--to",
                &site.serve.url(path),
            ])
            .await;
        out.success().stdout_has(&["201", "opened", "shop-"]);
    }
    let runs = site.serve.runs().await;
    assert_eq!(runs.len(), 3, "{runs:#?}");
    for run in &runs {
        assert_eq!(
            (run["repo"].as_str(), run["branch"].as_str()),
            (Some("acme/shop"), Some("main")),
            "{run}"
        );
    }

    // CI reports the GitHub one green; its deploy fails, and `slipway run` shows the last
    // lines of the script's output, the secret masked.
    let ci = site.path("ci.json");
    std::fs::write(
        &ci,
        format!(r#"{{"repo": "acme/shop", "sha": "{sha}", "status": "success"}}"#),
    )
    .unwrap();
    site.send(&[
        ci.to_str().unwrap(),
        "--to",
        &site.serve.url("/hooks/ci"),
        "--event",
        "ci",
        "--secret-file",
        site.path("slipway.secrets.toml").to_str().unwrap(),
        "--param",
        "/slipway/shop/ci-secret",
    ])
    .await
    .success();
    let run_id = format!("shop-{sha}");
    site.serve.wait_for_status(&run_id, "failed").await;
    let mut cmd = command();
    cmd.args(["run", &sha[..12], "--data-dir"]).arg(site.path("data"));
    let out = finish(cmd).await.success();
    out.stdout_has(&[
        "exited with status 1",
        "(secrets masked):",
        "its last 20 of ",
        "│ deploy line 30",
        "│ cannot connect with password ***",
    ]);
    assert!(!out.stdout.contains("deploy line 5\n"), "only the last lines:\n{out}");
    assert!(!out.stdout.contains(DB_PASSWORD), "the secret is masked:\n{out}");
}

//! End-to-end tests of the `slipway` binary: each runs the real command as a child process,
//! on loopback addresses, in a scratch directory.

// A test that cannot go on panics: that is its failure report, helpers included.
#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{Serve, command, event, eventually, finish, slipway, toml_str, write_file};

/// The commit `events/github/push.json` pushes and `events/ci/success.json` reports on.
const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const RUN: &str = "hello-6113728f27ae82c7b1a177c8d03f9e96e0adf246";
const SHORT_RUN: &str = "hello-6113728f27ae";

const WEBHOOK_SECRET: &str = "webhook-secret-5f2c";
const CI_SECRET: &str = "ci-secret-9a1e";
const DEPLOY_TOKEN: &str = "deploy-token-7d3b0c";

// ---------------------------------------------------------------------------------------
// slipway demo
// ---------------------------------------------------------------------------------------

/// `slipway demo`, with its throw-away directory made under `tmp`.
async fn demo(tmp: &Path, extra: &[&str]) -> crate::common::Out {
    let mut cmd = command();
    cmd.arg("demo").arg("--yes").args(extra).env("TMPDIR", tmp);
    finish(cmd).await
}

/// The demo's directory, from the line naming its database.
fn demo_dir(out: &crate::common::Out) -> PathBuf {
    let line = out.line_with("embedded backend: ");
    let db = line
        .split("embedded backend: ")
        .nth(1)
        .unwrap()
        .trim_end()
        .trim_end_matches(')');
    let dir = Path::new(db).parent().and_then(Path::parent).unwrap().to_path_buf();
    assert!(
        dir.file_name().unwrap().to_string_lossy().starts_with("slipway-demo-"),
        "{}",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn demo_releases_with_masked_secrets_and_cleans_up() {
    let tmp = TempDir::new().unwrap();
    let out = demo(tmp.path(), &[]).await.success();
    out.stdout_has(&[
        "→ GitHub: push of",
        "deployed ",
        "(backup db-before-",
        "│ == backup ==",
        "│ == migrate ==",
        "│ == release ==",
        "│ releasing ",
        "connecting with password ***",
        "alice approved promotion to production",
        "✔ released",
        "the `released` notice was delivered",
    ]);
    // With --yes it stops at once: no hint at an app or a page that is gone.
    assert!(!out.stdout.contains("curl ") && !out.stdout.contains("/runs/"), "{out}");
    let dir = demo_dir(&out);
    assert!(!dir.exists(), "{} should be deleted without --keep", dir.display());
}

#[tokio::test]
async fn demo_keep_leaves_a_directory_to_inspect() {
    let tmp = TempDir::new().unwrap();
    let out = demo(tmp.path(), &["--keep"]).await.success();
    let dir = demo_dir(&out);
    out.stdout_has(&["released", &format!("kept {}", dir.display())]);
    assert!(
        dir.join("data/slipway.db").is_file(),
        "{} has no data/slipway.db",
        dir.display()
    );

    // None of the generated secrets reached the output, though the deploy printed one.
    let secrets: toml::Table = std::fs::read_to_string(dir.join("slipway.secrets.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(secrets.len(), 5, "{secrets:?}");
    for (name, value) in &secrets {
        let value = value.as_str().unwrap();
        assert!(
            !out.stdout.contains(value) && !out.stderr.contains(value),
            "{name} leaked:\n{out}"
        );
    }

    // The kept database answers `slipway runs`, and the run it printed is released.
    let data = dir.join("data");
    let runs = slipway([OsStr::new("runs"), "--data-dir".as_ref(), data.as_os_str()])
        .await
        .success();
    assert!(runs.line_with("shop-").contains("released"), "{runs}");

    // The backup phase really made a copy of each database before migrating it.
    for env in ["staging", "production"] {
        let backups: Vec<_> = std::fs::read_dir(dir.join("envs").join(env).join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            backups.len() == 1 && backups[0].starts_with("db-before-"),
            "{env}: {backups:?}"
        );
    }

    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reads `lines` until one contains `needle`; returns it. Panics after the step timeout.
async fn line_with<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    seen: &mut String,
    needle: &str,
) -> String {
    let found = tokio::time::timeout(crate::common::STEP_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no line with {needle:?} on the demo's stdout:\n{seen}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_without_yes_waits_for_the_click_and_stays_up_until_ctrl_c() {
    use tokio::io::AsyncBufReadExt as _;
    let tmp = TempDir::new().unwrap();
    let mut cmd = command();
    cmd.arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let client = reqwest::Client::new();

    // The run page and a sign-in link for it, while the run goes on.
    let page = line_with(&mut lines, &mut seen, "run page ").await;
    let page = page.split_whitespace().nth(2).unwrap().to_owned();
    let sign_in = line_with(&mut lines, &mut seen, "sign in ").await;
    assert!(sign_in.contains("/login/"), "{sign_in}");

    // The person clicks the approval link the demo printed.
    line_with(&mut lines, &mut seen, "alice is asked to approve").await;
    let link = line_with(&mut lines, &mut seen, "/approvals/").await;
    let link = link.trim();
    let approved = client.post(link).form(&[("decision", "approve")]).send().await.unwrap();
    assert_eq!(approved.status(), 200, "{link}");

    // Released, its notice written; then slipway and the sample app stay up.
    line_with(&mut lines, &mut seen, "✔ released").await;
    line_with(&mut lines, &mut seen, "the `released` notice was delivered").await;
    line_with(&mut lines, &mut seen, "keep running until Ctrl-C").await;
    let curl = line_with(&mut lines, &mut seen, "curl ").await;
    let health = curl.split_whitespace().nth(1).unwrap().to_owned();
    let answer: Value = client.get(&health).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["database"], "ok", "{answer}");
    assert!(answer["version"].is_string(), "{answer}");
    let status = client.get(&page).send().await.unwrap().status();
    assert_eq!(status, 401, "the run page is served, behind a sign-in");

    // Ctrl-C stops it cleanly, and then nothing answers.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(crate::common::STEP_TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the demo ignored Ctrl-C:\n{seen}"))
        .unwrap();
    assert!(exit.success(), "{exit}:\n{seen}");
    assert!(client.get(&health).send().await.is_err(), "the sample app stopped");
}

// ---------------------------------------------------------------------------------------
// slipway serve refuses a bad set-up
// ---------------------------------------------------------------------------------------

/// `slipway serve` on `config` (with [`crate::common::HELLO_SECRETS`]); it must exit by itself.
async fn serve_refuses(config: &str) -> crate::common::Out {
    serve_refuses_with(config, crate::common::HELLO_SECRETS).await
}

/// `slipway serve` on `config` and `secrets`; it must exit by itself, creating nothing.
async fn serve_refuses_with(config: &str, secrets: &str) -> crate::common::Out {
    let dir = TempDir::new().unwrap();
    write_file(&dir.path().join("slipway.toml"), config, 0o644);
    write_file(&dir.path().join("slipway.secrets.toml"), secrets, 0o600);
    let mut cmd = command();
    cmd.current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"]);
    let out = finish(cmd).await.failure();
    assert!(
        !dir.path().join("data/slipway.db").exists(),
        "a refused start-up created a database"
    );
    out
}

#[tokio::test]
async fn serve_names_the_key_and_the_problem_in_an_invalid_config() {
    let out = serve_refuses(&crate::common::minimal_config().replace("\"Codertocat/Hello-World\"", "\"acme\"")).await;
    out.stderr_has(&[
        "slipway.toml",
        "line 7",
        "repo = \"acme\"",
        "invalid repository \"acme\": expected owner/name",
    ]);

    let no_approvers = crate::common::minimal_config().replace(
        "[[pipelines.approvers]]\nid = \"alice\"\naddress = \"alice@example.com\"",
        "",
    );
    let out = serve_refuses(&no_approvers).await;
    out.stderr_has(&["slipway.toml: pipelines[0] (hello).approvers: mode = \"delivery\" needs at least one approver"]);

    let out = serve_refuses(
        &crate::common::minimal_config().replace("branch = \"master\"", "branch = \"master\"\ncolour = \"blue\""),
    )
    .await;
    out.stderr_has(&["unknown field `colour`"]);
}

#[tokio::test]
async fn serve_names_a_secret_missing_from_the_secrets_file() {
    let config = crate::common::minimal_config().replace(
        "command = [\"true\"] }",
        "command = [\"true\"], secrets = { TOKEN = \"/slipway/hello/deploy-token\" } }",
    );
    let out = serve_refuses(&config).await;
    out.stderr_has(&[
        "secret /slipway/hello/deploy-token (pipelines[0] (hello).environments[0] (staging).deploy.secrets.TOKEN) \
         missing from slipway.secrets.toml",
    ]);
    assert!(
        !out.stderr.contains("/slipway/hello/ci-secret,"),
        "only the missing one is named:\n{out}"
    );
}

#[tokio::test]
async fn serve_refuses_a_gitlab_signing_token_that_is_not_whsec_base64() {
    let config = format!(
        "[gitlab]\ntoken = \"/slipway/gitlab/token\"\nsigning_key = \"/slipway/gitlab/signing\"\n\n{}",
        crate::common::minimal_config()
    );
    let secrets = format!(
        "{}\"/slipway/gitlab/token\" = \"t\"\n\"/slipway/gitlab/signing\" = \"whsec_not base64!\"\n",
        crate::common::HELLO_SECRETS
    );
    let out = serve_refuses_with(&config, &secrets).await;
    out.stderr_has(&[
        "secret /slipway/gitlab/signing (gitlab.signing_key) in slipway.secrets.toml is not usable",
        "whsec_<base64>",
    ]);
    assert!(
        !out.stderr.contains("not base64!"),
        "the secret itself is never printed:\n{out}"
    );
}

#[tokio::test]
async fn serve_says_it_cannot_read_a_missing_config() {
    let dir = TempDir::new().unwrap();
    let mut cmd = command();
    cmd.current_dir(dir.path()).args([
        "serve",
        "--config",
        "nowhere.toml",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "data",
    ]);
    let out = finish(cmd).await.failure();
    out.stderr_has(&["cannot read nowhere.toml", "No such file"]);
}

#[tokio::test]
async fn inspecting_without_a_database_says_how_to_fix_it() {
    let empty = TempDir::new().unwrap();
    for sub in ["runs", "dead-letters"] {
        let out = slipway([OsStr::new(sub), "--data-dir".as_ref(), empty.path().as_os_str()])
            .await
            .failure();
        out.stderr_has(&[
            "no slipway database at",
            "slipway.db",
            "start `slipway serve` first, or pass --data-dir",
        ]);
    }
}

// ---------------------------------------------------------------------------------------
// slipway serve: push → CI → staging → approval → production, driven by `slipway send`
// ---------------------------------------------------------------------------------------

/// The deploy script: says what it deploys (with a secret, which must come out masked) and
/// records the release where the sample app's `/health/{env}` reads it.
const DEPLOY_SCRIPT: &str = r#"#!/bin/sh
set -eu
echo "deploying $SLIPWAY_SHA to $SLIPWAY_ENV with token $DEPLOY_TOKEN"
printf '%s' "$SLIPWAY_SHA" > "$RELEASES/$SLIPWAY_ENV"
echo "done"
"#;

/// A scratch directory holding everything `slipway serve` needs for the Hello-World pipeline,
/// and a sample app answering smoke checks from the releases the deploy script records.
struct Site {
    dir: TempDir,
}

impl Site {
    async fn new() -> Site {
        let dir = TempDir::new().unwrap();
        let site = Site { dir };
        std::fs::create_dir_all(site.releases()).unwrap();
        std::fs::create_dir_all(site.data_dir()).unwrap();
        let app = start_sample_app(site.releases()).await;
        write_file(&site.path("deploy.sh"), DEPLOY_SCRIPT, 0o755);
        write_file(&site.path("slipway.toml"), &site.config(&app), 0o644);
        let secrets = format!(
            "\"/slipway/github/webhook-secret\" = \"{WEBHOOK_SECRET}\"\n\
             \"/slipway/approvals/signing-key\" = \"approval-signing-key-0e8f\"\n\
             \"/slipway/hello/ci-secret\" = \"{CI_SECRET}\"\n\
             \"/slipway/hello/deploy-token\" = \"{DEPLOY_TOKEN}\"\n\
             \"/slipway/api-token\" = \"{}\"\n",
            crate::common::API_TOKEN
        );
        write_file(&site.secrets(), &secrets, 0o600);
        write_file(&site.path("webhook-secret"), &format!("{WEBHOOK_SECRET}\n"), 0o600);
        write_file(&site.path("wrong-secret"), "not-the-secret\n", 0o600);
        site
    }

    fn config(&self, app: &str) -> String {
        let environment = |name: &str| {
            format!(
                r#"
[[pipelines.environments]]
name = "{name}"
deploy = {{ type = "command", command = [{script}], timeout = "30s", env = {{ RELEASES = {releases} }}, secrets = {{ DEPLOY_TOKEN = "/slipway/hello/deploy-token" }} }}

[[pipelines.environments.smoke]]
name = "version"
url = "http://{app}/health/{name}"
json = {{ "/version" = "{{sha}}" }}
timeout = "2s"
deadline = "10s"
backoff = "100ms"
"#,
                script = toml_str(self.path("deploy.sh").to_string_lossy()),
                releases = toml_str(self.releases().to_string_lossy()),
            )
        };
        format!(
            r#"
[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[dashboard]
api_token = "/slipway/api-token"
auth = "proxy"
proxy_header = "X-Forwarded-Email"
proxy_addresses = ["127.0.0.1"]

[[notify]]
type = "file"
path = {notifications}

[[pipelines]]
name = "hello"
repo = "Codertocat/Hello-World"
branch = "master"
mode = "delivery"
ci_secret = "/slipway/hello/ci-secret"
approval_expiry = "1h"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"
{staging}{production}"#,
            notifications = toml_str(self.notifications().to_string_lossy()),
            staging = environment("staging"),
            production = environment("production"),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn secrets(&self) -> PathBuf {
        self.path("slipway.secrets.toml")
    }
    fn data_dir(&self) -> PathBuf {
        self.path("data")
    }
    fn releases(&self) -> PathBuf {
        self.path("releases")
    }
    fn notifications(&self) -> PathBuf {
        self.path("notifications.jsonl")
    }

    /// The commit the deploy script last released to `env`.
    fn released(&self, env: &str) -> Option<String> {
        std::fs::read_to_string(self.releases().join(env)).ok()
    }

    /// `slipway serve` on this site, logging to `log` in its directory.
    async fn serve(&self, log: &str) -> Serve {
        let config = self.path("slipway.toml");
        let (secrets, data) = (self.secrets(), self.data_dir());
        let args: [&OsStr; 6] = [
            "--config".as_ref(),
            config.as_os_str(),
            "--secrets".as_ref(),
            secrets.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ];
        Serve::start(&args, self.path(log)).await
    }

    /// `slipway send FILE --to BASE/PATH --event EVENT --secret-file SECRET_FILE [--param PARAM]`.
    async fn send(
        &self,
        serve: &Serve,
        file: &Path,
        path: &str,
        event: &str,
        secret: &Path,
        param: Option<&str>,
    ) -> crate::common::Out {
        let mut cmd = command();
        cmd.arg("send")
            .arg(file)
            .args(["--to", &serve.url(path), "--event", event])
            .arg("--secret-file")
            .arg(secret);
        if let Some(param) = param {
            cmd.args(["--param", param]);
        }
        finish(cmd).await
    }

    /// `slipway <sub> <args> --data-dir <this site's data>`.
    async fn inspect(&self, args: &[&str]) -> crate::common::Out {
        let mut cmd = command();
        cmd.args(args).arg("--data-dir").arg(self.data_dir());
        finish(cmd).await
    }

    /// `slipway <sub> <args>` on this site's configuration, secrets and data.
    async fn act(&self, args: &[&str]) -> crate::common::Out {
        finish(self.act_command(args)).await
    }

    fn act_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = command();
        cmd.args(args)
            .arg("--config")
            .arg(self.path("slipway.toml"))
            .arg("--secrets")
            .arg(self.secrets())
            .arg("--data-dir")
            .arg(self.data_dir());
        cmd
    }

    /// The notifications the `file` channel wrote.
    fn notices(&self) -> Vec<Value> {
        std::fs::read_to_string(self.notifications())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The approve link of the first approval request, once one was written.
    async fn approve_link(&self) -> String {
        eventually(
            "an approval request in the notifications file",
            crate::common::STEP_TIMEOUT,
            || async {
                self.notices()
                    .into_iter()
                    .find(|n| n["kind"] == "approval_requested")
                    .and_then(|n| n["approve_url"].as_str().map(str::to_owned))
            },
        )
        .await
    }
}

/// The sample app: `GET /health/{env}` answers `{"version": <the release in releases/env>}`.
async fn start_sample_app(releases: PathBuf) -> String {
    async fn health(State(dir): State<PathBuf>, UrlPath(env): UrlPath<String>) -> axum::Json<Value> {
        let version = std::fs::read_to_string(dir.join(env)).ok();
        axum::Json(json!({ "version": version }))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/health/{env}", get(health))
        .with_state(releases);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_a_push_through_staging_and_approval_to_production() {
    let site = Site::new().await;
    let serve = site.serve("serve.log").await;
    let (push, ping, ci) = (
        event("github/push.json"),
        event("github/ping.json"),
        event("ci/success.json"),
    );
    let webhook = "/slipway/github/webhook-secret";

    // GitHub pings the new hook; the secret file holds the secret alone.
    let out = site
        .send(
            &serve,
            &ping,
            "/hooks/github",
            "ping",
            &site.path("webhook-secret"),
            None,
        )
        .await;
    out.success().stdout_has(&["200", "pong"]);

    // A push signed with the wrong secret is refused, and opens nothing.
    let out = site
        .send(&serve, &push, "/hooks/github", "push", &site.path("wrong-secret"), None)
        .await;
    out.failure().stdout_has(&["401"]).stderr_has(&["answered 401"]);
    assert!(serve.run(RUN).await.is_none(), "a refused push opened a run");

    // Naming the secrets file without --param says what to add.
    let out = site
        .send(&serve, &push, "/hooks/github", "push", &site.secrets(), None)
        .await;
    out.failure()
        .stderr_has(&["is a slipway secrets file with 5 entries", "--param"]);

    // The real push opens a run; its replay opens nothing new.
    let out = site
        .send(&serve, &push, "/hooks/github", "push", &site.secrets(), Some(webhook))
        .await;
    out.success().stdout_has(&["201", RUN, "opened"]);
    let out = site
        .send(&serve, &push, "/hooks/github", "push", &site.secrets(), Some(webhook))
        .await;
    out.success().stdout_has(&["200", "duplicate"]);
    let run = serve.run(RUN).await.unwrap();
    assert_eq!(
        (&run["status"], &stage(&run, "build", None)["status"]),
        (&json!("in_progress"), &json!("waiting"))
    );

    // CI reports green with a wrong secret (refused), then the right one.
    let out = site
        .send(&serve, &ci, "/hooks/ci", "ci", &site.secrets(), Some(webhook))
        .await;
    out.failure().stdout_has(&["401"]);
    let out = site
        .send(
            &serve,
            &ci,
            "/hooks/ci",
            "ci",
            &site.secrets(),
            Some("/slipway/hello/ci-secret"),
        )
        .await;
    out.success().stdout_has(&["200", RUN]);

    // Staging is deployed and smoke-checked; production waits for alice.
    let run = serve.wait_for_status(RUN, "awaiting_approval").await;
    assert_eq!(site.released("staging").as_deref(), Some(SHA));
    assert_eq!(site.released("production"), None);
    let staging = stage(&run, "deploy", Some("staging"));
    let output = staging["output"].as_str().unwrap();
    assert!(
        output.contains(&format!("deploying {SHA} to staging with token ***")),
        "{output}"
    );
    assert!(
        !output.contains(DEPLOY_TOKEN),
        "the deploy token leaked into the output: {output}"
    );
    assert_eq!(stage(&run, "smoke", Some("staging"))["status"], "succeeded", "{run:#}");

    // The CLI reads the same database while serve runs.
    let out = site.inspect(&["runs"]).await.success();
    let line = out.line_with(SHORT_RUN);
    assert!(
        line.contains("awaiting_approval") && line.contains("approval:production"),
        "{out}"
    );
    let out = site.inspect(&["runs", "--json"]).await.success();
    let list: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(list["runs"][0]["id"], RUN, "{list:#}");
    assert!(list["next"].is_null(), "one page holds it: {list:#}");
    assert_eq!(list["runs"][0]["status"], "awaiting_approval", "{list:#}");
    let out = site.inspect(&["run", SHORT_RUN]).await.success();
    out.stdout_has(&[
        &format!("{RUN} — awaiting_approval"),
        "Codertocat/Hello-World master by Codertocat",
    ]);
    out.stdout_has(&[
        "stages:",
        "deploy:staging",
        "smoke:staging",
        "approval:production",
        "history:",
    ]);
    out.stdout_has(&[
        "artifact ghcr.io/codertocat/hello-world:6113728f27ae",
        "CI build passed",
    ]);
    site.inspect(&["dead-letters"])
        .await
        .success()
        .stdout_has(&["no dead letters"]);

    // The control room's commands: what waits for whom; a retry of a run that did not fail
    // is refused, saying why.
    let out = site.act(&["approvals"]).await.success();
    let line = out.line_with(SHORT_RUN);
    assert!(
        line.contains("production") && line.contains("0 of 1") && line.contains("alice"),
        "{out}"
    );
    site.act(&["retry", SHORT_RUN])
        .await
        .failure()
        .stderr_has(&["not retried", "did not fail"]);

    // alice signs in with a link from `slipway login-link`; mallory gets none.
    let out = site.act(&["login-link", "--as", "alice"]).await.success();
    let link = out.stdout.trim();
    let token = link.rsplit("/login/").next().unwrap();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = browser
        .post(serve.url(&format!("/login/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let home = browser
        .get(serve.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("alice (approver)"));
    assert_eq!(browser.get(serve.url("/")).send().await.unwrap().status(), 401);
    // An authenticating proxy on this machine names alice: `slipway serve` knows the
    // connection comes from 127.0.0.1, the proxy's configured address.
    let proxied = browser
        .get(serve.url("/approvals"))
        .header("x-forwarded-email", "alice@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    assert!(proxied.text().await.unwrap().contains("alice (approver)"));
    site.act(&["login-link", "--as", "mallory"])
        .await
        .failure()
        .stderr_has(&["mallory may not sign in"]);

    // `slipway watch` follows the run while alice approves, and exits 0 once it is released.
    let watch = tokio::spawn(finish(site.act_command(&["watch", SHORT_RUN, "--every", "100ms"])));

    // alice opens her link (nothing changes), then approves.
    let link = site.approve_link().await;
    assert!(link.starts_with(&serve.base), "{link} does not point at {}", serve.base);
    assert_eq!(serve.open(&link).await, 200);
    assert_eq!(serve.run(RUN).await.unwrap()["status"], "awaiting_approval");
    assert_eq!(serve.decide(&link, "approve").await, 200);
    serve.wait_for_status(RUN, "released").await;
    assert_eq!(site.released("production").as_deref(), Some(SHA));
    assert_eq!(
        serve.decide(&link, "approve").await,
        409,
        "a replayed approval must be refused"
    );
    let released = eventually("a released notification", crate::common::STEP_TIMEOUT, || async {
        site.notices().into_iter().find(|n| n["kind"] == "released")
    })
    .await;
    assert_eq!(released["run_id"], RUN);
    let watched = watch.await.unwrap().success();
    watched.stdout_has(&[&format!("{RUN} released")]);
    // Exit codes tell failure kinds apart: 4 for a run nobody made, 5 for a refusal.
    let out = site.act(&["approve", "fffffff", "--as", "alice"]).await;
    assert_eq!(out.status.code(), Some(4), "{out}");
    let out = site.act(&["retry", SHORT_RUN]).await;
    assert_eq!(out.status.code(), Some(5), "a released run is not retried: {out}");
    let out = site.act(&["watch", SHORT_RUN, "--json"]).await.success();
    let finished: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(finished["id"], RUN, "{out}");
    for stage in ["approval:production", "deploy:production", "smoke:production"] {
        assert!(
            watched
                .stdout
                .lines()
                .any(|l| l.trim_start().starts_with(stage) && l.ends_with("succeeded")),
            "{stage} succeeded: {watched}"
        );
    }

    // `slipway metrics` reads the release log: one deploy to production, healthy.
    let out = site.act(&["metrics", "--days", "7"]).await.success();
    out.stdout_has(&["hello → production, last 7 days", "(1 deploys)", "0% (0 of 1 deploys)"]);
    let out = site.act(&["metrics", "--json"]).await.success();
    let metrics: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(metrics["metrics"]["deployments"], 1, "{metrics}");
    site.act(&["metrics", "--pipeline", "nope"])
        .await
        .failure()
        .stderr_has(&["no pipeline is named nope"]);
    site.act(&["metrics", "--days", "0"]).await.failure();

    // SIGTERM stops serve cleanly; a new serve on the same data still has the run.
    let status = serve.terminate().await;
    assert!(status.success(), "serve exited {status} on SIGTERM");
    let out = site.inspect(&["runs"]).await.success();
    assert!(out.line_with(SHORT_RUN).contains("released"), "{out}");
    let serve = site.serve("restarted.log").await;
    let runs = serve.runs().await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!((&runs[0]["id"], &runs[0]["status"]), (&json!(RUN), &json!("released")));
}

/// The stage `kind` (for `env`) of a run's JSON.
#[track_caller]
fn stage<'a>(run: &'a Value, kind: &str, env: Option<&str>) -> &'a Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind && s["env"] == json!(env))
        .unwrap_or_else(|| panic!("no {kind} stage for {env:?} in {run:#}"))
}

#[tokio::test]
async fn rollback_says_what_is_missing_instead_of_guessing() {
    let dir = TempDir::new().unwrap();
    write_file(
        &dir.path().join("slipway.toml"),
        &crate::common::minimal_config(),
        0o644,
    );
    write_file(
        &dir.path().join("slipway.secrets.toml"),
        crate::common::HELLO_SECRETS,
        0o600,
    );
    let mut cmd = command();
    cmd.current_dir(dir.path())
        .args(["rollback", "--env", "staging", "--data-dir", "data"]);
    finish(cmd).await.failure().stderr_has(&["no slipway data in data"]);
    // With data but nothing released there yet, it says so and queues nothing.
    let mut serve = command();
    serve.current_dir(dir.path()).args([
        "rollback",
        "--env",
        "staging",
        "--data-dir",
        "data",
        "--to",
        "hello-0000000000000000000000000000000000000001",
    ]);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    slipway::adapters::local::sqlite::SqliteBackend::open(&dir.path().join("data/slipway.db")).unwrap();
    finish(serve)
        .await
        .failure()
        .stderr_has(&["not rolled back: nothing was ever released to staging in hello"]);
}

//! The real `slipway serve` (the release binary, embedded backend) in a temporary directory
//! on a loopback port, killed when dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

/// The webhook secret the benchmarks' configuration names.
pub const GITHUB_SECRET: &str = "bench-github-webhook-secret";
/// The CI secret the benchmarks' configuration names.
pub const CI_SECRET: &str = "bench-ci-secret";
/// The API token the benchmarks read the API and the pages with (`[dashboard] api_token`).
pub const API_TOKEN: &str = "bench-api-token";

/// One pipeline, `shop` (`acme/shop` on `main`), in deployment mode (no approvals), with ONE
/// environment whose deploy program is `/bin/true` and no smoke checks: a run is one release.
pub const CONFIG: &str = r#"
[github]
webhook_secret = "/slipway/github/webhook-secret"

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
name = "production"
deploy = { type = "command", command = ["/bin/true"], timeout = "1m" }
"#;

/// `shop` in delivery mode: staging, then production behind alice's approval, both deployed
/// by `/bin/true`. What the control room's benchmark serves.
pub const DELIVERY_CONFIG: &str = r#"
[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[dashboard]
api_token = "/slipway/api-token"

[[pipelines]]
name = "shop"
repo = "acme/shop"
branch = "main"
mode = "delivery"
ci_secret = "/slipway/shop/ci-secret"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"

[[pipelines.environments]]
name = "staging"
deploy = { type = "command", command = ["/bin/true"], timeout = "1m" }

[[pipelines.environments]]
name = "production"
deploy = { type = "command", command = ["/bin/true"], timeout = "1m" }
"#;

/// The secrets file [`CONFIG`] and [`DELIVERY_CONFIG`] need.
fn secrets_file() -> String {
    format!(
        "\"/slipway/github/webhook-secret\" = \"{GITHUB_SECRET}\"\n\
         \"/slipway/approvals/signing-key\" = \"bench-approval-signing-key\"\n\
         \"/slipway/shop/ci-secret\" = \"{CI_SECRET}\"\n\
         \"/slipway/api-token\" = \"{API_TOKEN}\"\n"
    )
}

/// A running `slipway serve`.
#[derive(Debug)]
pub struct Server {
    child: tokio::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `slipway` (at `bin`) serving [`CONFIG`] from a fresh data directory, and waits
    /// until `/healthz` answers.
    pub async fn start(bin: &Path) -> anyhow::Result<Server> {
        Self::start_with(bin, CONFIG).await
    }

    /// Starts `slipway` serving `config` (which names the secrets [`CONFIG`] does).
    pub async fn start_with(bin: &Path, config_text: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
        let config = dir.path().join("slipway.toml");
        let secrets = dir.path().join("slipway.secrets.toml");
        std::fs::write(&config, config_text)?;
        std::fs::write(&secrets, secrets_file())?;
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        let port = slipway_tests::moto::free_port();
        let child = tokio::process::Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--secrets")
            .arg(&secrets)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        server.wait_until_up().await?;
        Ok(server)
    }

    async fn wait_until_up(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("slipway serve exited ({status}):\n{}", self.log());
            }
            if let Ok(answer) = client.get(format!("{}/healthz", self.base)).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("slipway serve did not answer within 20 s:\n{}", self.log())
    }

    /// The server's data directory (its SQLite database is `slipway.db` there).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

/// A 40-hex commit SHA for run `i` of a benchmark, distinct per `i`.
pub fn sha(i: usize) -> String {
    format!("be{i:038x}")
}

/// A signed GitHub push of `sha` to `acme/shop` `main`: the body and its signature header.
pub fn signed_push(sha: &str) -> (Bytes, String) {
    let body = slipway_tests::push_payload("acme/shop", "main", sha);
    let signature = slipway::signature::sign(GITHUB_SECRET.as_bytes(), body.as_bytes());
    (Bytes::from(body), signature)
}

/// Where a git host POSTs a push.
pub const PUSH_PATH: &str = "/hooks/github";

/// The headers a git host sends with a signed push (its signature from [`signed_push`]) with
/// the delivery id `delivery`.
pub fn push_headers<'a>(delivery: &'a str, signature: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("content-type", "application/json"),
        ("x-github-event", "push"),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", signature),
    ]
}

/// The request a git host makes to deliver a signed push (from [`signed_push`]) with the
/// delivery id `delivery`.
pub fn push_request(
    client: &reqwest::Client,
    base: &str,
    delivery: &str,
    signed: &(Bytes, String),
) -> reqwest::RequestBuilder {
    let (body, signature) = signed;
    push_headers(delivery, signature)
        .into_iter()
        .fold(client.post(format!("{base}{PUSH_PATH}")), |request, (name, value)| {
            request.header(name, value)
        })
        .body(body.clone())
}

/// The request a CI makes to report a signed build result (from [`signed_ci`]).
pub fn ci_request(client: &reqwest::Client, base: &str, signed: &(Bytes, String)) -> reqwest::RequestBuilder {
    let (body, signature) = signed;
    client
        .post(format!("{base}/hooks/ci"))
        .header("content-type", "application/json")
        .header("x-slipway-signature", signature)
        .body(body.clone())
}

/// A signed generic CI callback: `sha` built green.
pub fn signed_ci_success(sha: &str) -> (Bytes, String) {
    signed_ci(sha, "success")
}

/// A signed generic CI callback: `sha` built with `status` (`success`, `failure`).
pub fn signed_ci(sha: &str, status: &str) -> (Bytes, String) {
    let body = serde_json::json!({"repo": "acme/shop", "sha": sha, "status": status, "artifact": format!("registry.example.com/shop@{sha}")})
        .to_string();
    let signature = slipway::signature::sign(CI_SECRET.as_bytes(), body.as_bytes());
    (Bytes::from(body), signature)
}

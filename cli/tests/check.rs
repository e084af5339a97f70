//! `slipway check`, and `slipway serve` checking the same way before it binds: good and broken
//! configurations, missing and placeholder secrets, the example files as shipped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{Out, Serve, command, finish, write_file};

/// A valid configuration: one pipeline, two environments, a deploy secret and a secret file.
const CONFIG: &str = r#"
public_url = "http://127.0.0.1:8080"

[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[[pipelines]]
name = "shop"
repo = "acme/shop"
mode = "delivery"
ci_secret = "/slipway/shop/ci-secret"
approval_expiry = "12h"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"

[[pipelines.environments]]
name = "staging"
deploy = { type = "command", command = ["./deploy.sh"], secrets = { TOKEN = "/slipway/shop/deploy-token" } }

[[pipelines.environments]]
name = "production"
deploy = { type = "command", command = ["./deploy.sh"], secret_files = { SSH_KEY_FILE = "/slipway/shop/deploy-key" } }
"#;

const SECRETS: &str = r#"
"/slipway/github/webhook-secret" = "3b8f0c1d9e2a47b6a5c4d3e2f1a0b9c8"
"/slipway/approvals/signing-key" = "c0ffee5a1e9b4d2f8a7c6b5e4d3c2b1a"
"/slipway/shop/ci-secret" = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
"/slipway/shop/deploy-token" = "tok-7d3b0c9a"
"/slipway/shop/deploy-key" = """
-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAA
-----END OPENSSH PRIVATE KEY-----
"""
"#;

/// A scratch directory with `slipway.toml` and `slipway.secrets.toml` in it.
fn site(config: &str, secrets: &str) -> TempDir {
    let dir = TempDir::new().unwrap();
    write_file(&dir.path().join("slipway.toml"), config, 0o644);
    write_file(&dir.path().join("slipway.secrets.toml"), secrets, 0o600);
    dir
}

/// `slipway check <args>` run in `dir`.
async fn check(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = command();
    cmd.current_dir(dir).arg("check").args(args);
    let out = finish(cmd).await;
    assert!(!dir.join(".slipway").exists(), "check made a data directory:\n{out}");
    out
}

/// `slipway check` in `dir`, which must exit 3 (the configuration or secrets are wrong).
async fn refused(dir: &Path, args: &[&str]) -> Out {
    let out = check(dir, args).await;
    assert_eq!(out.status.code(), Some(3), "expected exit 3\n{out}");
    out
}

#[tokio::test]
async fn a_good_configuration_is_ready_and_says_what_was_checked() {
    let dir = site(CONFIG, SECRETS);
    let out = check(dir.path(), &[]).await.success();
    out.stdout_has(&[
        "slipway.toml is ready to serve",
        "pipelines     1: shop (staging → production)",
        "environments  2",
        "secrets       5 named, every one in slipway.secrets.toml and none a placeholder",
    ]);

    let json = check(dir.path(), &["--json"]).await.success();
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["pipelines"][0]["name"], "shop");
    assert_eq!(
        report["pipelines"][0]["environments"],
        serde_json::json!(["staging", "production"])
    );
    assert_eq!(report["environments"], 2);
    assert_eq!(report["secrets_named"], 5);
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[tokio::test]
async fn a_configuration_that_does_not_parse_names_the_key() {
    let cases = [
        (
            CONFIG.replace(
                "approval_expiry = \"12h\"",
                "approval_expiry = \"12h\"\ncolour = \"blue\"",
            ),
            vec!["slipway.toml", "colour", "unknown field `colour`"],
        ),
        (
            CONFIG.replace("approval_expiry = \"12h\"", "approval_expiry = \"soon\""),
            vec![
                "slipway.toml",
                "approval_expiry = \"soon\"",
                "\"soon\" is not a duration",
            ],
        ),
        (
            CONFIG.replace("secret_files = {", "secret_file = {"),
            vec!["unknown field `secret_file`", "secret_files"],
        ),
    ];
    for (config, said) in cases {
        let dir = site(&config, SECRETS);
        refused(dir.path(), &[]).await.stderr_has(&said);
    }
}

#[tokio::test]
async fn every_problem_is_reported_each_with_its_key() {
    let config = CONFIG
        .replace("command = [\"./deploy.sh\"], secrets", "command = [], secrets")
        .replace(
            "secret_files = { SSH_KEY_FILE",
            "env = { SSH_KEY_FILE = \"x\" }, secret_files = { SSH_KEY_FILE",
        )
        .replace("\"/slipway/shop/deploy-token\"", "\"/slipway/shop/no-such-token\"");
    let dir = site(&config, SECRETS);
    let out = refused(dir.path(), &[]).await;
    out.stderr_has(&[
        "slipway.toml is not ready: 3 problems:",
        "  - slipway.toml: pipelines[0] (shop).environments[0] (staging).deploy.command: give the program to run",
        "  - slipway.toml: pipelines[0] (shop).environments[1] (production).deploy.secret_files.SSH_KEY_FILE: \
         SSH_KEY_FILE is set in deploy.env too",
        "  - secret /slipway/shop/no-such-token (pipelines[0] (shop).environments[0] (staging).deploy.secrets.TOKEN) \
         missing from slipway.secrets.toml",
    ]);

    let json = refused(dir.path(), &["--json"]).await;
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let keys: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "pipelines[0] (shop).environments[0] (staging).deploy.command",
            "pipelines[0] (shop).environments[1] (production).deploy.secret_files.SSH_KEY_FILE",
            "pipelines[0] (shop).environments[0] (staging).deploy.secrets.TOKEN",
        ]
    );
}

#[tokio::test]
async fn a_missing_secret_file_secret_is_named_with_its_key() {
    let secrets: String = SECRETS.split("\"/slipway/shop/deploy-key\"").next().unwrap().to_owned();
    let dir = site(CONFIG, &secrets);
    refused(dir.path(), &[]).await.stderr_has(&[
        "secret /slipway/shop/deploy-key (pipelines[0] (shop).environments[1] (production).deploy.secret_files.\
         SSH_KEY_FILE) missing from slipway.secrets.toml",
    ]);
}

#[tokio::test]
async fn a_placeholder_secret_is_named_and_its_value_is_not_shown() {
    let secrets = SECRETS.replace(
        "c0ffee5a1e9b4d2f8a7c6b5e4d3c2b1a",
        "FAKE-approval-signing-key-change-me",
    );
    let dir = site(CONFIG, &secrets);
    let out = refused(dir.path(), &[]).await;
    out.stderr_has(&[
        "secret /slipway/approvals/signing-key (approvals.signing_key) in slipway.secrets.toml is still the \
         example's placeholder",
        "put the real value there (`openssl rand -hex 32` makes a random one)",
    ]);
    assert!(
        !out.stderr.contains("FAKE-approval"),
        "the value is never shown:\n{out}"
    );
}

#[tokio::test]
async fn missing_files_say_how_to_make_them() {
    let empty = TempDir::new().unwrap();
    refused(empty.path(), &[]).await.stderr_has(&[
        "cannot read slipway.toml: No such file or directory — create one with `slipway init`, or pass --config",
    ]);

    let dir = site(CONFIG, SECRETS);
    refused(dir.path(), &["--config", "other.toml"])
        .await
        .stderr_has(&["cannot read other.toml: No such file or directory"]);

    std::fs::remove_file(dir.path().join("slipway.secrets.toml")).unwrap();
    refused(dir.path(), &[]).await.stderr_has(&[
        "cannot read the secrets file slipway.secrets.toml: No such file or directory — create one with `slipway init`",
    ]);
    check(dir.path(), &["--secrets", "elsewhere.toml"])
        .await
        .failure()
        .stderr_has(&["cannot read the secrets file elsewhere.toml"]);
}

/// The workspace's example files, as a newcomer copies them.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

#[tokio::test]
async fn the_example_files_as_shipped_are_refused_for_their_placeholders() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(example("slipway.example.toml"), dir.path().join("slipway.toml")).unwrap();
    std::fs::copy(
        example("slipway.secrets.example.toml"),
        dir.path().join("slipway.secrets.toml"),
    )
    .unwrap();
    let out = refused(dir.path(), &[]).await;
    out.stderr_has(&[
        "secret /slipway/github/webhook-secret (github.webhook_secret) in slipway.secrets.toml is still the \
         example's placeholder",
    ]);
    // Every value the example secrets file gives is named as a placeholder.
    let given: Vec<String> = std::fs::read_to_string(example("slipway.secrets.example.toml"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("\"/"))
        .map(|l| l.split('"').nth(1).unwrap().to_owned())
        .collect();
    assert!(given.len() >= 3, "{given:?}");
    for param in &given {
        out.stderr_has(&[&format!("secret {param} (")]);
    }
    assert_eq!(
        out.stderr.matches("is still the example's placeholder").count(),
        given.len(),
        "{out}"
    );
    assert!(!out.stderr.contains("FAKE"), "no value is shown:\n{out}");
}

// ---------------------------------------------------------------------------------------
// slipway serve checks the same way, before it binds
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn serve_refuses_a_placeholder_secret_before_it_binds() {
    let secrets = SECRETS.replace("9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "FAKE-shop-ci-secret-change-me");
    let dir = site(CONFIG, &secrets);
    // The port is taken: a serve that bound first would fail for that, not for the secret.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let mut cmd = command();
    cmd.current_dir(dir.path())
        .args(["serve", "--listen", &listen, "--data-dir", "data"]);
    let out = finish(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{out}");
    out.stderr_has(&[
        "secret /slipway/shop/ci-secret (pipelines[0] (shop).ci_secret) in slipway.secrets.toml is still \
                      the example's placeholder",
    ]);
    assert!(!out.stderr.contains("cannot listen"), "{out}");
    assert!(
        !dir.path().join("data").exists(),
        "a refused start-up made the data directory"
    );
}

#[tokio::test]
async fn serve_warns_when_public_url_points_away_from_a_loopback_listener() {
    let config = CONFIG.replace("http://127.0.0.1:8080", "https://slipway.example.com");
    let dir = site(&config, SECRETS);
    let (conf, secrets, data) = (
        dir.path().join("slipway.toml"),
        dir.path().join("slipway.secrets.toml"),
        dir.path().join("data"),
    );
    let args: [&OsStr; 6] = [
        "--config".as_ref(),
        conf.as_os_str(),
        "--secrets".as_ref(),
        secrets.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ];
    let serve = Serve::start(&args, dir.path().join("serve.log")).await;
    let log = serve.log_text();
    assert!(
        log.contains("warning: public_url is https://slipway.example.com/, but slipway listens on 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["level"] == "WARN" && l["fields"]["message"].as_str().unwrap_or("").contains("public_url is")),
        "a structured warning too:\n{log}"
    );
    serve.terminate().await;
}

// ---------------------------------------------------------------------------------------
// slipway check --backend aws: the secrets in SSM Parameter Store (a moto server)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_secrets_from_parameter_store_and_bootstrap_refuses_placeholders() {
    let moto = slipway_tests::moto::Moto::start().await;
    let endpoint = moto.endpoint();
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    let run = |dir: &Path, args: &[&str]| {
        let mut cmd = command();
        cmd.current_dir(dir).envs(env).args(args);
        finish(cmd)
    };

    // A placeholder never reaches Parameter Store through bootstrap.
    let placeholder = SECRETS.replace("tok-7d3b0c9a", "FAKE-deploy-token-change-me");
    let dir = site(CONFIG, &placeholder);
    let out = run(dir.path(), &["bootstrap", "--stack", "chk"]).await.failure();
    out.stderr_has(&["/slipway/shop/deploy-token is not usable: it is still the example's placeholder"]);
    assert!(!out.stderr.contains("FAKE-deploy"), "{out}");

    let dir = site(CONFIG, SECRETS);
    run(dir.path(), &["bootstrap", "--stack", "chk"]).await.success();
    let out = run(dir.path(), &["check", "--backend", "aws"]).await.success();
    out.stdout_has(&["secrets       5 named, every one in SSM Parameter Store and none a placeholder"]);

    // A configuration naming a parameter nobody put, and one outside the functions' prefix.
    let more = CONFIG
        .replace("/slipway/shop/deploy-key", "/slipway/shop/new-deploy-key")
        .replace("/slipway/shop/ci-secret", "/ci/shop");
    write_file(&dir.path().join("slipway.toml"), &more, 0o644);
    let out = run(dir.path(), &["check", "--backend", "aws", "--json"]).await;
    assert_eq!(out.status.code(), Some(3), "{out}");
    out.stderr_has(&[
        "secret /ci/shop (pipelines[0] (shop).ci_secret) is outside /slipway, the only path slipway's functions may read",
        "secret /slipway/shop/new-deploy-key (pipelines[0] (shop).environments[1] (production).deploy.secret_files.\
         SSH_KEY_FILE) missing from SSM Parameter Store",
    ]);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["secrets"], "SSM Parameter Store");
    assert_eq!(report["problems"].as_array().unwrap().len(), 3, "{report:#}");
}

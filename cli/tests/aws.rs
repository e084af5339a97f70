//! The AWS backend from one machine, through the real binary and the real SDK against a
//! moto server: `slipway bootstrap` creates the stack, `slipway serve --backend aws` runs
//! the same engine over S3, SQS and SSM, and a push goes through to the approval gate.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::time::Duration;

use crate::common::{Serve, command, event, eventually, finish, toml_str, write_file};
use slipway_tests::moto::Moto;
use tempfile::TempDir;

const WEBHOOK_SECRET: &str = "webhook-secret-aws";
const CI_SECRET: &str = "ci-secret-aws";
const RUN: &str = "hello-6113728f27ae82c7b1a177c8d03f9e96e0adf246";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_then_serve_on_the_emulator() {
    let moto = Moto::start().await;
    let endpoint = moto.endpoint();
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let released = dir.join("staging-release");
    write_file(
        &dir.join("deploy.sh"),
        &format!(
            "#!/bin/sh\nset -eu\nprintf '%s' \"$SLIPWAY_SHA\" > {}\necho deployed\n",
            released.display()
        ),
        0o755,
    );
    let config = dir.join("slipway.toml");
    write_file(
        &config,
        &format!(
            r#"
[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[dashboard]
api_token = "/slipway/api-token"

[[pipelines]]
name = "hello"
repo = "Codertocat/Hello-World"
branch = "master"
mode = "delivery"
ci_secret = "/slipway/hello/ci-secret"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"

[[pipelines.environments]]
name = "staging"
deploy = {{ type = "command", command = [{script}] }}

[[pipelines.environments]]
name = "production"
deploy = {{ type = "command", command = [{script}] }}
"#,
            script = toml_str(dir.join("deploy.sh").display().to_string())
        ),
        0o644,
    );
    let secrets = dir.join("slipway.secrets.toml");
    write_file(
        &secrets,
        &format!(
            "\"/slipway/github/webhook-secret\" = \"{WEBHOOK_SECRET}\"\n\"/slipway/approvals/signing-key\" = \"k\"\n\"/slipway/hello/ci-secret\" = \"{CI_SECRET}\"\n\"/slipway/api-token\" = \"{}\"\n",
            crate::common::API_TOKEN
        ),
        0o600,
    );

    // slipway bootstrap: bucket, queues with dead-letter queues, parameters, configuration.
    let mut bootstrap = command();
    bootstrap
        .envs(env)
        .arg("bootstrap")
        .arg("--config")
        .arg(&config)
        .args(["--stack", "e2e"]);
    let out = finish(bootstrap).await.success();
    out.stdout_has(&[
        "bootstrapped stack \"e2e\"",
        "export SLIPWAY_STATE_BUCKET=e2e-state",
        "e2e-deploy",
    ]);
    // Running it again changes nothing and does not fail.
    let mut again = command();
    again
        .envs(env)
        .arg("bootstrap")
        .arg("--config")
        .arg(&config)
        .args(["--stack", "e2e"]);
    finish(again).await.success();

    // slipway serve --backend aws finds the stack by name; secrets come from SSM.
    let args: Vec<&OsStr> = vec![
        "--backend".as_ref(),
        "aws".as_ref(),
        "--stack".as_ref(),
        "e2e".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    let serve = Serve::start_with_env(&args, dir.join("serve.log"), &env).await;

    let webhook = dir.join("webhook-secret");
    write_file(&webhook, WEBHOOK_SECRET, 0o600);
    let mut push = command();
    push.arg("send")
        .arg(event("github/push.json"))
        .args(["--event", "push", "--to", &serve.url("/hooks/github")])
        .arg("--secret-file")
        .arg(&webhook);
    finish(push).await.success().stdout_has(&["201"]);

    let ci_secret = dir.join("ci-secret");
    write_file(&ci_secret, CI_SECRET, 0o600);
    let mut ci = command();
    ci.arg("send")
        .arg(event("ci/success.json"))
        .args(["--event", "ci", "--to", &serve.url("/hooks/ci")])
        .arg("--secret-file")
        .arg(&ci_secret);
    finish(ci).await.success();

    // The workers long-poll SQS: staging is deployed and the run waits for approval.
    serve.wait_for_status(RUN, "awaiting_approval").await;
    let sha = eventually("the staging deploy to run", Duration::from_secs(20), || async {
        std::fs::read_to_string(&released).ok()
    })
    .await;
    assert_eq!(sha, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert!(serve.log_text().contains("\"backend\":\"Aws\""), "{}", serve.log_text());

    // The inspection commands read the same stack: runs from the bucket, dead letters from SQS.
    let mut runs = command();
    runs.envs(env).args(["runs", "--backend", "aws", "--stack", "e2e"]);
    let listed = finish(runs).await.success();
    assert!(
        listed.line_with("hello-6113728f27ae").contains("awaiting_approval"),
        "{listed}"
    );
    let mut dead = command();
    dead.envs(env)
        .args(["dead-letters", "--backend", "aws", "--stack", "e2e"]);
    finish(dead).await.success().stdout_has(&["no dead letters"]);
    let status = serve.terminate().await;
    assert!(status.success(), "serve stops cleanly on SIGTERM: {status}");
}

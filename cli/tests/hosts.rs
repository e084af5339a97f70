//! `slipway send --host gitlab|bitbucket` against a real `slipway serve`: the events/
//! fixtures for GitLab (with its signing token) and Bitbucket open runs, and a wrong secret is
//! refused.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;

use crate::common::{Serve, command, event, finish, toml_str, write_file};
use tempfile::TempDir;

#[tokio::test]
async fn gitlab_and_bitbucket_deliveries_open_runs() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    write_file(&dir.join("deploy.sh"), "#!/bin/sh\necho deployed\n", 0o755);
    let script = toml_str(dir.join("deploy.sh").display().to_string());
    let pipeline = |name: &str, repo: &str, branch: &str| {
        format!(
            r#"
[[pipelines]]
name = "{name}"
repo = "{repo}"
branch = "{branch}"
mode = "deployment"
ci_secret = "/slipway/{name}/ci-secret"
[[pipelines.environments]]
name = "staging"
deploy = {{ type = "command", command = [{script}] }}
"#
        )
    };
    let config = dir.join("slipway.toml");
    let text = format!(
        "[gitlab]\ntoken = \"/slipway/gitlab/token\"\nsigning_key = \"/slipway/gitlab/signing\"\n\n[bitbucket]\nsecret = \"/slipway/bitbucket/secret\"\n\n[approvals]\nsigning_key = \"/slipway/approvals/signing-key\"\n\n[dashboard]\napi_token = \"/slipway/api-token\"\n{}{}",
        pipeline("diaspora", "mike/diaspora", "master"),
        pipeline("shop", "acme/shop", "main")
    );
    write_file(&config, &text, 0o644);
    let secrets = dir.join("slipway.secrets.toml");
    write_file(
        &secrets,
        "\"/slipway/gitlab/token\" = \"gl-token\"\n\"/slipway/gitlab/signing\" = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\"/slipway/bitbucket/secret\" = \"bb-secret\"\n\"/slipway/approvals/signing-key\" = \"k\"\n\"/slipway/diaspora/ci-secret\" = \"c1\"\n\"/slipway/shop/ci-secret\" = \"c2\"\n\"/slipway/api-token\" = \"cli-test-api-token\"\n",
        0o600,
    );
    let data = dir.join("data");
    let args: Vec<&OsStr> = vec![
        "--config".as_ref(),
        config.as_os_str(),
        "--secrets".as_ref(),
        secrets.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ];
    let serve = Serve::start(&args, dir.join("serve.log")).await;

    let send = |host: &str, fixture: &str, event_name: &str, param: &str, to: &str| {
        let mut cmd = command();
        cmd.arg("send")
            .arg(event(fixture))
            .args(["--host", host, "--event", event_name, "--to", &serve.url(to)])
            .arg("--secret-file")
            .arg(&secrets)
            .args(["--param", param]);
        cmd
    };
    // With a signing token configured, a delivery without the Standard Webhooks signature is
    // refused…
    finish(send(
        "gitlab",
        "gitlab/push.json",
        "Push Hook",
        "/slipway/gitlab/token",
        "/hooks/gitlab",
    ))
    .await
    .failure()
    .stdout_has(&["401", "webhook-id"]);
    // …and GitLab's documented push example, signed as GitLab signs it, opens a run for
    // mike/diaspora master.
    let mut signed = send(
        "gitlab",
        "gitlab/push.json",
        "Push Hook",
        "/slipway/gitlab/token",
        "/hooks/gitlab",
    );
    signed.args(["--signing-param", "/slipway/gitlab/signing"]);
    finish(signed).await.success().stdout_has(&["201", "opened"]);
    // Bitbucket: one delivery, three changes; the branch push opens a run, the rest are ignored.
    finish(send(
        "bitbucket",
        "bitbucket/push.json",
        "repo:push",
        "/slipway/bitbucket/secret",
        "/hooks/bitbucket",
    ))
    .await
    .success()
    .stdout_has(&["201", "results"]);
    let runs = serve.runs().await;
    let pipelines: Vec<&str> = runs.iter().filter_map(|r| r["pipeline"].as_str()).collect();
    assert!(
        pipelines.contains(&"diaspora") && pipelines.contains(&"shop"),
        "{runs:?}"
    );

    // Signed with the wrong provider's secret: refused, and send says so.
    finish(send(
        "bitbucket",
        "bitbucket/push.json",
        "repo:push",
        "/slipway/gitlab/token",
        "/hooks/bitbucket",
    ))
    .await
    .failure()
    .stdout_has(&["401"]);
    serve.terminate().await;
}

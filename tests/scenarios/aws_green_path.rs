//! The whole green path on the AWS backend, through the real SDK against a moto server:
//! state in S3, queues in SQS, secrets in SSM. HTTP arrives as Lambda Function URL events
//! (the `push-webhook`, `build-result` and `approval` functions), queue messages are handed
//! to the `deploy`, `smoke-test` and `notify` handlers as SQS batches the way an event
//! source mapping does, and the `sweeper` runs at the end.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use slipway::adapters::aws::sqs::SqsQueues;
use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::app::App;
use slipway::cloud::{self, Names};
use slipway::domain::{ParamName, RunStatus};
use slipway::ports::Notifier;
use slipway_tests::functions::{drain, function_url_event, invoke_http};
use slipway_tests::moto::Moto;
use slipway_tests::{CI_SECRET, CONFIG, GITHUB_SECRET, Pipeline, SHA, push_payload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_commit_reaches_production_on_the_emulator() {
    let moto = Moto::start().await;
    let sdk = moto.sdk().await;
    let p = Pipeline::start().await; // the fakes: deploy target, checker, notification channel

    // slipway bootstrap: bucket, queues with dead-letter queues, parameters, configuration.
    let secrets = SecretsFile::from_pairs(
        [
            ("/slipway/github/webhook-secret", GITHUB_SECRET),
            ("/slipway/approvals/signing-key", "approval-signing-key"),
            ("/slipway/shop/ci-secret", CI_SECRET),
            (
                "/slipway/shop/staging/database-url",
                "postgres://staging-secret@db/shop",
            ),
            (
                "/slipway/shop/production/database-url",
                "postgres://prod-secret@db/shop",
            ),
        ]
        .map(|(k, v)| (ParamName::parse(k).unwrap(), secrecy::SecretString::from(v.to_owned()))),
    );
    let names = Names { stack: "test".into() };
    let settings = cloud::bootstrap(&sdk, &names, CONFIG, &secrets)
        .await
        .expect("bootstrap");

    // A function's cold start: configuration read from the bucket, AWS clients built once.
    let aws = cloud::app(&settings, &sdk, None)
        .await
        .expect("the app starts from the bucket's configuration");
    // The event source mapping polls for us; here the test polls, without long-poll waits.
    let queue = SqsQueues::new(aws_sdk_sqs::Client::new(&sdk), settings.queues.clone()).with_wait(Duration::ZERO);
    let app = App {
        queue: Arc::new(queue),
        deployer: p.app.deployer.clone(),
        checker: p.app.checker.clone(),
        notifiers: vec![Arc::new(p.notifier.clone()) as Arc<dyn Notifier>],
        ..aws
    };

    // push-webhook: GitHub's push arrives base64-encoded through the Function URL.
    let body = push_payload("acme/shop", "main", SHA);
    let headers = json!({
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": "d-1",
        "x-hub-signature-256": slipway::signature::sign(GITHUB_SECRET.as_bytes(), body.as_bytes()),
    });
    let (status, answer) = invoke_http(
        &app,
        function_url_event("POST", "/hooks/github", headers, body.as_bytes(), true),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    // build-result: CI reports green.
    let ci = json!({"repo": "acme/shop", "sha": SHA, "status": "success", "artifact": "registry.example.com/shop@sha256:abc"}).to_string();
    let headers = json!({
        "content-type": "application/json",
        "x-slipway-signature": slipway::signature::sign(CI_SECRET.as_bytes(), ci.as_bytes()),
    });
    let (status, answer) = invoke_http(
        &app,
        function_url_event("POST", "/hooks/ci", headers, ci.as_bytes(), false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    // deploy, smoke-test, notify: staging is deployed and checked, approvers are asked.
    drain(&app, app.queue.as_ref()).await;
    assert_eq!(p.deployed("staging"), [SHA]);
    let link = p.approval_for("alice").approve_url.unwrap();
    let path = url::Url::parse(&link).unwrap().path().to_owned();

    // approval: the confirmation page changes nothing; the POST decides.
    let (status, page) = invoke_http(&app, function_url_event("GET", &path, json!({}), b"", false)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let form = json!({"content-type": "application/x-www-form-urlencoded"});
    let (status, answer) = invoke_http(
        &app,
        function_url_event("POST", &path, form, b"decision=approve", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    drain(&app, app.queue.as_ref()).await;
    assert_eq!(p.deployed("production"), [SHA]);
    let runs = app.list_runs(None).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status(), RunStatus::Released);
    assert_eq!(p.notifications_of("released").len(), 3, "one per approver");
    assert_eq!(
        p.deployer.deploys_to("production")[0].secrets[0].1,
        "postgres://prod-secret@db/shop",
        "from SSM"
    );

    // sweeper: nothing is stuck.
    assert_eq!(
        slipway::sweep::run_once(&app).await.unwrap(),
        slipway::sweep::Swept::default()
    );
    assert!(app.queue.dead_letters().await.unwrap().is_empty());
}

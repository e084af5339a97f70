//! The whole green path on the AWS backend, through the real SDK against a moto server:
//! state in S3, queues in SQS, secrets in SSM. HTTP arrives as Lambda Function URL events
//! (the `push-webhook`, `build-result` and `approval` functions), queue messages are handed
//! to the `deploy`, `smoke-test` and `notify` handlers as SQS batches the way an event
//! source mapping does, and the `sweeper` runs at the end.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine as _;
use http::StatusCode;
use serde_json::{Value, json};
use slipway::adapters::aws::sqs::SqsQueues;
use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::app::App;
use slipway::cloud::{self, Names};
use slipway::domain::{ParamName, RunStatus};
use slipway::ports::{Notifier, QueueName};
use slipway_tests::moto::Moto;
use slipway_tests::{CI_SECRET, CONFIG, GITHUB_SECRET, Pipeline, SHA, push_payload};
use tower::ServiceExt;

/// A Lambda Function URL event (payload format 2.0), as AWS delivers it.
fn function_url_event(method: &str, path: &str, headers: Value, body: &[u8], base64: bool) -> Value {
    let body = if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "slipwayurl",
            "domainName": "slipwayurl.lambda-url.us-east-1.on.aws",
            "domainPrefix": "slipwayurl",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795255200000u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

/// Hands a Function URL event to the router, the way `lambda_http` does in a function.
async fn invoke_http(app: &App, event: Value) -> (StatusCode, String) {
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid Function URL event");
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, axum::body::Body::from(body.to_vec()));
    let response = slipway::http::router(app.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Plays the SQS event source mappings: receive a batch from each queue, hand it to that
/// queue's function handler, delete what it did not report as failed. Until all are quiet.
async fn drain(app: &App) {
    for _round in 0..30 {
        let mut handled = 0;
        for queue in QueueName::ALL {
            let deliveries = app
                .queue
                .receive(queue, 10, std::time::Duration::from_secs(30))
                .await
                .unwrap();
            if deliveries.is_empty() {
                continue;
            }
            handled += deliveries.len();
            let records: Vec<Value> = deliveries
                .iter()
                .map(|d| {
                    json!({
                        "messageId": d.message_id,
                        "receiptHandle": d.receipt.0,
                        "body": d.body,
                        "attributes": {"ApproximateReceiveCount": d.receive_count.to_string()},
                        "messageAttributes": {},
                        "eventSource": "aws:sqs",
                        "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:test-{queue}"),
                        "awsRegion": "us-east-1"
                    })
                })
                .collect();
            let event: SqsEvent = serde_json::from_value(json!({"Records": records})).unwrap();
            let response = slipway::lambda::handle_batch(app, queue, event).await;
            let failed: Vec<&str> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            assert!(failed.is_empty(), "{queue} records failed: {failed:?}");
            for d in &deliveries {
                app.queue.ack(queue, &d.receipt).await.unwrap();
            }
        }
        if handled == 0 {
            return;
        }
    }
    panic!("the queues never went quiet");
}

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
    drain(&app).await;
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

    drain(&app).await;
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

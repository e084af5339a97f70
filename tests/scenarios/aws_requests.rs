//! How many AWS requests slipway's functions make for one complete delivery-mode run —
//! push → CI → staging deployed and smoke-tested → approval → production → released — counted
//! by a proxy in front of moto. The count fails this test when it grows past [`LIMIT`].
//!
//! Each function is its own warm container, as on AWS: its own [`App`] (and secret cache),
//! built before counting starts. The SQS event source mapping's receives and deletes are not
//! the functions' requests and are not counted; everything a function does is: S3 reads and
//! conditional writes, SQS sends, visibility changes, SSM reads.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use slipway::adapters::aws::Settings;
use slipway::adapters::aws::sqs::SqsQueues;
use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::app::App;
use slipway::cloud::{self, Names};
use slipway::domain::{ParamName, RunStatus};
use slipway::ports::Notifier;
use slipway_tests::counting::{CountingProxy, Requests};
use slipway_tests::functions::{drain, function_url_event, invoke_http};
use slipway_tests::moto::{Moto, sdk_for};
use slipway_tests::{CI_SECRET, CONFIG, GITHUB_SECRET, Pipeline, SHA, SHA2, push_payload};

/// The most AWS requests one complete run may cost the functions: 88 before the read model
/// and the carried versions, 57 now. Issue 11 asks for 25; what stands between is written in
/// the README's "AWS requests per run".
const LIMIT: u64 = 57;

struct Functions {
    /// `push-webhook`, `build-result` and `approval` serve the one router.
    http: App,
    /// `deploy`, `smoke-test` and `notify` each handle their queue.
    queues: App,
}

async fn function(settings: &Settings, sdk: &aws_config::SdkConfig, p: &Pipeline) -> App {
    let aws = cloud::app(settings, sdk, None).await.expect("the function starts");
    App {
        deployer: p.app.deployer.clone(),
        checker: p.app.checker.clone(),
        notifiers: vec![Arc::new(p.notifier.clone()) as Arc<dyn Notifier>],
        ..aws
    }
}

async fn complete_run(f: &Functions, mapping: &SqsQueues, p: &Pipeline, sha: &str, delivery: &str) {
    p.healthy("staging", sha);
    p.healthy("production", sha);
    let body = push_payload("acme/shop", "main", sha);
    let headers = json!({
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": delivery,
        "x-hub-signature-256": slipway::signature::sign(GITHUB_SECRET.as_bytes(), body.as_bytes()),
    });
    let (status, answer) = invoke_http(
        &f.http,
        function_url_event("POST", "/hooks/github", headers, body.as_bytes(), true),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    let ci = json!({"repo": "acme/shop", "sha": sha, "status": "success", "artifact": format!("registry.example.com/shop@{sha}")})
        .to_string();
    let headers = json!({
        "content-type": "application/json",
        "x-slipway-signature": slipway::signature::sign(CI_SECRET.as_bytes(), ci.as_bytes()),
    });
    let (status, answer) = invoke_http(
        &f.http,
        function_url_event("POST", "/hooks/ci", headers, ci.as_bytes(), false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    drain(&f.queues, mapping).await;

    let link = p
        .notifications_of("approval_requested")
        .into_iter()
        .rev()
        .find(|n| n.sha == sha && n.approver.as_deref() == Some("alice"))
        .and_then(|n| n.approve_url)
        .unwrap_or_else(|| {
            panic!(
                "alice is not asked: {:#?} {:?}",
                p.notifications(),
                p.deployed("staging")
            )
        });
    let path = url::Url::parse(&link).unwrap().path().to_owned();
    let (status, page) = invoke_http(&f.http, function_url_event("GET", &path, json!({}), b"", false)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let form = json!({"content-type": "application/x-www-form-urlencoded"});
    let (status, answer) = invoke_http(
        &f.http,
        function_url_event("POST", &path, form, b"decision=approve", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    drain(&f.queues, mapping).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_run_costs_the_functions_a_bounded_number_of_aws_requests() {
    let moto = Moto::start().await;
    let direct = moto.sdk().await;
    let proxy = CountingProxy::start(&moto.endpoint()).await;
    let counted = sdk_for(&proxy.endpoint()).await;
    let p = Pipeline::start().await;

    let secrets = SecretsFile::from_pairs(
        [
            ("/slipway/github/webhook-secret", GITHUB_SECRET),
            ("/slipway/approvals/signing-key", "approval-signing-key"),
            ("/slipway/shop/ci-secret", CI_SECRET),
            ("/slipway/shop/staging/database-url", "postgres://staging@db/shop"),
            ("/slipway/shop/production/database-url", "postgres://prod@db/shop"),
        ]
        .map(|(k, v)| (ParamName::parse(k).unwrap(), secrecy::SecretString::from(v.to_owned()))),
    );
    let settings = cloud::bootstrap(&direct, &Names { stack: "test".into() }, CONFIG, &secrets)
        .await
        .expect("bootstrap");
    let f = Functions {
        http: function(&settings, &counted, &p).await,
        queues: function(&settings, &counted, &p).await,
    };
    let mapping = SqsQueues::new(aws_sdk_sqs::Client::new(&direct), settings.queues.clone()).with_wait(Duration::ZERO);
    let started = proxy.take();
    assert_eq!(
        started.total(),
        2,
        "each function's start reads the configuration once:\n{started}"
    );
    // The sweeper has run once since the install (it runs every minute): the indexes it
    // completes once are complete.
    slipway::sweep::run_once(&f.queues).await.expect("the first sweep");
    proxy.take();

    // The first run on fresh containers: their secret caches fill on the way.
    complete_run(&f, &mapping, &p, SHA, "d-1").await;
    let first = proxy.take();
    // The sweep that finds it finished: its entry in the index of runs takes its final state,
    // its marker in the index of unfinished runs goes.
    slipway::sweep::run_once(&f.queues).await.expect("a sweep");
    let swept = proxy.take();
    // The next run on the same warm containers.
    complete_run(&f, &mapping, &p, SHA2, "d-2").await;
    let warm = proxy.take();

    let runs = f.http.list_runs(None).await.unwrap();
    assert!(runs.iter().all(|r| r.status() == RunStatus::Released), "{runs:?}");
    assert_eq!(p.deployed("production"), [SHA, SHA2]);
    eprintln!("first run, cold secret caches: {first}");
    eprintln!("second run, warm containers: {warm}");
    eprintln!("the sweep after a run (per pass, not per run: listing the index, the markers): {swept}");
    assert!(
        swept.total() <= 11,
        "the sweep that finishes a run's indexing:\n{swept}"
    );
    let secret_reads = first.matching("ssm ");
    assert!(
        first.total() - secret_reads <= LIMIT,
        "the first run cost {} requests besides {secret_reads} secret reads, more than {LIMIT}:\n{first}",
        first.total() - secret_reads
    );
    assert!(
        warm.total() <= LIMIT,
        "a run cost {} AWS requests, more than {LIMIT}:\n{warm}",
        warm.total()
    );
    // A second run is never dearer than the first.
    assert!(warm.total() <= first.total(), "first:\n{first}\nsecond:\n{warm}");
}

/// The counts are what the functions asked for: a page that reads is counted, the event
/// source mapping is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_counts_each_request_once_by_operation() {
    let moto = Moto::start().await;
    let proxy = CountingProxy::start(&moto.endpoint()).await;
    moto.create_bucket("counted").await;
    let s3 = slipway::adapters::aws::s3_client(&sdk_for(&proxy.endpoint()).await);
    s3.put_object()
        .bucket("counted")
        .key("runs/x.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.get_object()
        .bucket("counted")
        .key("runs/x.json")
        .send()
        .await
        .unwrap();
    s3.list_objects_v2()
        .bucket("counted")
        .prefix("runs/")
        .send()
        .await
        .unwrap();
    let counted = proxy.take();
    assert_eq!(
        counted,
        Requests(
            [("s3 GET runs/", 1), ("s3 LIST runs/", 1), ("s3 PUT runs/", 1)]
                .map(|(k, n)| (k.to_owned(), n))
                .into()
        ),
        "{counted}"
    );
    assert_eq!(proxy.take().total(), 0, "take starts the count again");
}

//! slipway's functions on the emulator, counted: a bootstrapped stack on moto, the HTTP and
//! queue functions as warm containers whose AWS requests go through a [`CountingProxy`], and
//! a complete delivery-mode run driven the way GitHub, CI and an approver drive it. Used by
//! the `aws_requests` test and by the `requests` and `pages` benchmarks.
//!
//! ```ignore
//! let stack = CountedStack::start(CONFIG).await;
//! stack.proxy.take();                  // forget the functions' start-up requests
//! stack.complete_run(SHA, "d-1").await;
//! let requests = stack.proxy.take();
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use slipway::adapters::aws::Settings;
use slipway::adapters::aws::sqs::SqsQueues;
use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::app::App;
use slipway::cloud::{self, Names};
use slipway::domain::ParamName;
use slipway::ports::Notifier;

use crate::counting::CountingProxy;
use crate::functions::{drain, function_url_event, invoke_http};
use crate::moto::{Moto, sdk_for};
use crate::{CI_SECRET, GITHUB_SECRET, Pipeline, push_payload};

/// The secrets [`crate::CONFIG`] names, as `slipway bootstrap` reads them from a secrets file.
pub fn secrets() -> SecretsFile {
    SecretsFile::from_pairs(
        [
            ("/slipway/github/webhook-secret", GITHUB_SECRET),
            ("/slipway/approvals/signing-key", "approval-signing-key"),
            ("/slipway/shop/ci-secret", CI_SECRET),
            ("/slipway/shop/staging/database-url", "postgres://staging@db/shop"),
            ("/slipway/shop/production/database-url", "postgres://prod@db/shop"),
        ]
        .map(|(k, v)| {
            (
                ParamName::parse(k).expect("a valid parameter name"),
                secrecy::SecretString::from(v.to_owned()),
            )
        }),
    )
}

/// The functions, each a warm container with its own [`App`] (and secret cache).
#[allow(missing_debug_implementations)] // Apps of trait objects
pub struct Functions {
    /// `push-webhook`, `build-result` and `approval` serve the one router.
    pub http: App,
    /// `deploy`, `smoke-test` and `notify` each handle their queue.
    pub queues: App,
}

/// A function's App over `sdk`, with the harness's fake deploy target, health checker and
/// notification channel in place of the real ones.
pub async fn function(settings: &Settings, sdk: &aws_config::SdkConfig, p: &Pipeline) -> App {
    let aws = cloud::app(settings, sdk, None).await.expect("the function starts");
    App {
        deployer: p.app.deployer.clone(),
        checker: p.app.checker.clone(),
        notifiers: vec![Arc::new(p.notifier.clone()) as Arc<dyn Notifier>],
        ..aws
    }
}

/// A bootstrapped stack on moto with the functions started, their requests counted.
#[allow(missing_debug_implementations)] // a harness of handles
pub struct CountedStack {
    pub moto: Moto,
    /// Counts what the functions ask AWS for.
    pub proxy: CountingProxy,
    /// The fakes (deploy target, health checker, notifications) the functions use.
    pub p: Pipeline,
    pub settings: Settings,
    /// The SDK configuration that goes straight to moto, uncounted.
    pub direct: aws_config::SdkConfig,
    pub functions: Functions,
    /// The SQS event source mappings' own client: its receives and deletes are not counted.
    pub mapping: SqsQueues,
}

impl CountedStack {
    /// Starts moto and the proxy, bootstraps stack `test` with `config` (whose secrets are
    /// [`secrets`]), and starts the functions. Their start-up requests (one configuration read
    /// each) are left in the proxy's count.
    pub async fn start(config: &str) -> Self {
        let moto = Moto::start().await;
        let direct = moto.sdk().await;
        let proxy = CountingProxy::start(&moto.endpoint()).await;
        let counted = sdk_for(&proxy.endpoint()).await;
        let p = Pipeline::start().await;
        let settings = cloud::bootstrap(&direct, &Names { stack: "test".into() }, config, &secrets())
            .await
            .expect("bootstrap");
        let functions = Functions {
            http: function(&settings, &counted, &p).await,
            queues: function(&settings, &counted, &p).await,
        };
        let mapping =
            SqsQueues::new(aws_sdk_sqs::Client::new(&direct), settings.queues.clone()).with_wait(Duration::ZERO);
        Self {
            moto,
            proxy,
            p,
            settings,
            direct,
            functions,
            mapping,
        }
    }

    /// GitHub pushes `sha`, CI passes it, the queue functions deploy it to staging and check
    /// it; returns the link alice is sent to approve production.
    pub async fn to_approval(&self, sha: &str, delivery: &str) -> String {
        let (f, p) = (&self.functions, &self.p);
        p.healthy("staging", sha);
        p.healthy("production", sha);
        let body = push_payload("acme/shop", "main", sha);
        let headers = json!({
            "content-type": "application/json",
            "x-github-event": "push",
            "x-github-delivery": delivery,
            "x-hub-signature-256": slipway::signature::sign(GITHUB_SECRET.as_bytes(), body.as_bytes()),
        });
        step("push");
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
        step("ci");
        let (status, answer) = invoke_http(
            &f.http,
            function_url_event("POST", "/hooks/ci", headers, ci.as_bytes(), false),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        step("queues to approval");
        drain(&f.queues, &self.mapping).await;

        p.notifications_of("approval_requested")
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
            })
    }

    /// alice opens the approval link, approves, and the queue functions release to production.
    pub async fn approve(&self, link: &str) {
        let f = &self.functions;
        let path = url::Url::parse(link).expect("an absolute link").path().to_owned();
        step("approval page");
        let (status, page) = invoke_http(&f.http, function_url_event("GET", &path, json!({}), b"", false)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        step("approve");
        let form = json!({"content-type": "application/x-www-form-urlencoded"});
        let (status, answer) = invoke_http(
            &f.http,
            function_url_event("POST", &path, form, b"decision=approve", false),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        step("queues to production");
        drain(&f.queues, &self.mapping).await;
        step("done");
    }

    /// A complete delivery-mode run of `sha`: push → CI → staging → approval → production.
    pub async fn complete_run(&self, sha: &str, delivery: &str) {
        let link = self.to_approval(sha, delivery).await;
        self.approve(&link).await;
    }
}

/// Marks where a step starts in the proxy's trace (`SLIPWAY_TRACE_REQUESTS=1`).
fn step(name: &str) {
    if std::env::var_os("SLIPWAY_TRACE_REQUESTS").is_some() {
        eprintln!("REQ ---- {name}");
    }
}

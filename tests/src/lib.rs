//! A scenario harness: the real router and the real queue handlers over in-memory fakes,
//! driven the way a team uses slipway — push, CI reports, approvers click.
//!
//! ```ignore
//! let p = Pipeline::start().await;
//! p.push(SHA).await;
//! p.ci(SHA, "success").await;
//! p.run_queues().await;
//! ```
//!
//! Set `TEST_LOG=1` to see slipway's logs while a test runs.

pub mod aws_run;
pub mod browser;
pub mod counting;
pub mod functions;
pub mod logs;
pub mod model;
pub mod moto;
pub mod trackers;

use std::path::Path;
use std::sync::Arc;
use std::sync::Once;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use slipway::adapters::memory::{
    FakeDeployTarget, FakeHealth, FakeHttpChecker, ManualClock, MemoryQueue, MemorySecrets, MemoryStore,
    RecordingNotifier,
};
use slipway::app::{App, Tuning};
use slipway::config::Config;
use slipway::domain::{PipelineName, Run, RunId, StageKind, StageStatus};
use slipway::ports::{Notification, Notifier, QueueName};
use tower::ServiceExt;

pub const GITHUB_SECRET: &str = "github-webhook-secret";
pub const CI_SECRET: &str = "ci-secret-for-shop";
pub const STAGING_HEALTH: &str = "http://127.0.0.1:9101/health";
pub const PRODUCTION_HEALTH: &str = "http://127.0.0.1:9102/health";

/// Two commits used across scenarios.
pub const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
pub const SHA2: &str = "b2c3d4e5f60718293a4b5c6d7e8f901234567890";

/// The pipeline every scenario starts from: `acme/shop` on `main`, staging then production,
/// smoke checks on both, approvers alice and bob; commits are by `dev`.
pub const CONFIG: &str = r#"
public_url = "https://slipway.example.com"

[github]
webhook_secret = "/slipway/github/webhook-secret"

[approvals]
signing_key = "/slipway/approvals/signing-key"

[[pipelines]]
name = "shop"
repo = "acme/shop"
branch = "main"
mode = "delivery"
ci_secret = "/slipway/shop/ci-secret"
approval_expiry = "24h"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"

[[pipelines.approvers]]
id = "bob"
address = "bob@example.com"

[[pipelines.approvers]]
id = "dev"
address = "dev@example.com"

[[pipelines.environments]]
name = "staging"
deploy = { type = "command", command = ["./deploy.sh", "staging"], timeout = "10m", secrets = { DATABASE_URL = "/slipway/shop/staging/database-url" } }
[[pipelines.environments.smoke]]
name = "health"
url = "http://127.0.0.1:9101/health"
json = { "/version" = "{sha}", "/database" = "ok" }
deadline = "10s"
backoff = "1s"

[[pipelines.environments]]
name = "production"
deploy = { type = "command", command = ["./deploy.sh", "production"], timeout = "10m", secrets = { DATABASE_URL = "/slipway/shop/production/database-url" } }
[[pipelines.environments.smoke]]
name = "health"
url = "http://127.0.0.1:9102/health"
json = { "/version" = "{sha}", "/database" = "ok" }
deadline = "10s"
backoff = "1s"
"#;

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber_init();
        }
    });
}

fn tracing_subscriber_init() -> Result<(), Box<dyn std::error::Error>> {
    slipway::telemetry::init_for_tests();
    Ok(())
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// slipway, wired to fakes, with a clock that only moves when told.
#[allow(missing_debug_implementations)] // a harness of handles; nothing worth printing
pub struct Pipeline {
    pub app: App,
    pub router: Router,
    pub clock: ManualClock,
    pub store: MemoryStore,
    pub queue: MemoryQueue,
    pub secrets: MemorySecrets,
    pub notifier: RecordingNotifier,
    pub deployer: FakeDeployTarget,
    pub checker: FakeHttpChecker,
    pub health: FakeHealth,
}

impl Pipeline {
    /// The default pipeline, with healthy staging and production.
    pub async fn start() -> Self {
        Self::with_config(CONFIG).await
    }

    pub async fn with_config(toml: &str) -> Self {
        init_logs();
        let config = Config::parse(toml, Path::new("scenario.toml")).expect("scenario config is valid");
        let clock = ManualClock::new("2026-11-21T09:00:00Z".parse().expect("valid"));
        let store = MemoryStore::new();
        let queue = MemoryQueue::new(Arc::new(clock.clone()));
        let secrets = MemorySecrets::new();
        secrets.set("/slipway/github/webhook-secret", GITHUB_SECRET);
        secrets.set("/slipway/approvals/signing-key", "approval-signing-key");
        secrets.set("/slipway/shop/ci-secret", CI_SECRET);
        secrets.set(
            "/slipway/shop/staging/database-url",
            "postgres://staging-secret@db/shop",
        );
        secrets.set(
            "/slipway/shop/production/database-url",
            "postgres://prod-secret@db/shop",
        );
        let notifier = RecordingNotifier::new();
        let deployer = FakeDeployTarget::new();
        let checker = FakeHttpChecker::new();
        let health = FakeHealth::new();
        let app = App {
            public_url: config.public_url.clone().expect("scenario config sets public_url"),
            config: Arc::new(config),
            store: Arc::new(store.clone()),
            queue: Arc::new(queue.clone()),
            secrets: Arc::new(secrets.clone()),
            clock: Arc::new(clock.clone()),
            notifiers: vec![Arc::new(notifier.clone()) as Arc<dyn Notifier>],
            deployer: Arc::new(deployer.clone()),
            checker: Arc::new(checker.clone()),
            health: Arc::new(health.clone()),
            tuning: Tuning {
                write_backoff: std::time::Duration::from_millis(1),
                unavailable_backoff: std::time::Duration::from_millis(5),
                ..Tuning::default()
            },
            seen: Default::default(),
            release_log: Default::default(),
            shown_runs: Default::default(),
        };
        let router = slipway::http::router(app.clone());
        let p = Self {
            app,
            router,
            clock,
            store,
            queue,
            secrets,
            notifier,
            deployer,
            checker,
            health,
        };
        p.healthy("staging", SHA);
        p.healthy("production", SHA);
        p
    }

    /// The environment's health endpoint answers that `sha` is running with a working database.
    pub fn healthy(&self, env: &str, sha: &str) {
        let url = health_url(env);
        self.checker.reset(url);
        self.checker
            .answer(url, 200, &json!({"version": sha, "database": "ok"}).to_string());
    }

    /// The environment's health endpoint answers 503: its database is down.
    pub fn broken(&self, env: &str) {
        let url = health_url(env);
        self.checker.reset(url);
        self.checker.answer(url, 503, r#"{"database":"down"}"#);
    }

    // ---- what the outside world does

    /// GitHub delivers a push of `sha` to `main`.
    pub async fn push(&self, sha: &str) -> Answer {
        self.push_to("main", sha, "delivery-1").await
    }

    /// GitHub delivers a push to `branch`, using the real `push` payload from events/.
    pub async fn push_to(&self, branch: &str, sha: &str, delivery: &str) -> Answer {
        let body = push_payload("acme/shop", branch, sha);
        self.github("push", delivery, body.as_bytes(), GITHUB_SECRET).await
    }

    /// GitHub delivers a push that moved `main` from `before` to `sha` (one new commit): git's
    /// own word that `sha` is newer than `before`, whatever order the pushes arrive in.
    pub async fn push_after(&self, sha: &str, before: &str) -> Answer {
        let body = push_payload_after("acme/shop", "main", sha, before);
        let delivery = format!("delivery-{}", &sha[..12]);
        self.github("push", &delivery, body.as_bytes(), GITHUB_SECRET).await
    }

    /// GitHub delivers a push that moved `main` from `before` to `sha`, carrying `commits`
    /// (`(sha, message, committed at)`, oldest first, `sha` last); the head commit takes the
    /// last one's message. Asserts the push opened a run.
    pub async fn push_carrying(&self, sha: &str, before: &str, commits: &[(&str, &str, Option<Timestamp>)]) {
        let mut payload: Value =
            serde_json::from_str(&push_payload("acme/shop", "main", sha)).expect("the sample push is JSON");
        let head = payload["head_commit"].clone();
        payload["before"] = json!(before);
        payload["commits"] = json!(
            commits
                .iter()
                .map(|(id, message, at)| {
                    let mut c = head.clone();
                    c["id"] = json!(id);
                    c["message"] = json!(message);
                    c["timestamp"] = json!(at.map(|at| at.to_string()));
                    c
                })
                .collect::<Vec<_>>()
        );
        if let Some((_, message, _)) = commits.last() {
            payload["head_commit"]["message"] = json!(message);
        }
        let delivery = format!("d-{}", &sha[..12]);
        let answer = self
            .github("push", &delivery, payload.to_string().as_bytes(), GITHUB_SECRET)
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }

    /// GitHub delivers any event, signed with `secret`.
    pub async fn github(&self, event: &str, delivery: &str, body: &[u8], secret: &str) -> Answer {
        let request = Request::post("/hooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", slipway::signature::sign(secret.as_bytes(), body))
            .body(Body::from(body.to_vec()))
            .expect("valid request");
        self.send(request).await
    }

    /// CI reports `status` for `sha` through the generic callback.
    pub async fn ci(&self, sha: &str, status: &str) -> Answer {
        let body = json!({"repo": "acme/shop", "sha": sha, "status": status, "build_url": "https://ci.example.com/builds/42", "artifact": format!("registry.example.com/shop@sha256:{sha}")});
        self.ci_raw(body.to_string().as_bytes(), CI_SECRET).await
    }

    pub async fn ci_raw(&self, body: &[u8], secret: &str) -> Answer {
        let request = Request::post("/hooks/ci")
            .header("content-type", "application/json")
            .header("x-slipway-signature", slipway::signature::sign(secret.as_bytes(), body))
            .body(Body::from(body.to_vec()))
            .expect("valid request");
        self.send(request).await
    }

    /// A browser (or a chat unfurler) opens a link.
    pub async fn get(&self, url: &str) -> Answer {
        let request = Request::get(path_of(url)).body(Body::empty()).expect("valid request");
        self.send(request).await
    }

    /// A person clicks a button on the confirmation page.
    pub async fn post_decision(&self, url: &str, decision: &str) -> Answer {
        let request = Request::post(path_of(url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("decision={decision}&comment=")))
            .expect("valid request");
        self.send(request).await
    }

    /// `who` opens a sign-in link and clicks its button: the `Cookie` header value their
    /// browser then sends.
    pub async fn sign_in(&self, who: &str) -> String {
        let link =
            slipway::http::auth::sign_in_link(&self.app, &who.parse().expect("an id"), SignedDuration::from_hours(1))
                .await
                .expect("may sign in");
        let answer = self
            .send(
                Request::post(path_of(&link))
                    .body(Body::empty())
                    .expect("valid request"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let set = answer.headers["set-cookie"].to_str().expect("ASCII");
        set.split(';').next().expect("name=value").to_owned()
    }

    /// A signed-in person (alice) opens a page or reads the API: what the run pages and
    /// `/api/runs` need.
    pub async fn read(&self, url: &str) -> Answer {
        let cookie = self.sign_in("alice").await;
        self.get_as(&cookie, url).await
    }

    /// A signed-in browser (`cookie`, from [`Pipeline::sign_in`]) opens a page.
    pub async fn get_as(&self, cookie: &str, url: &str) -> Answer {
        let request = Request::get(path_of(url))
            .header("cookie", cookie)
            .body(Body::empty())
            .expect("valid request");
        self.send(request).await
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body reads").to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    // ---- slipway's workers and time

    /// Lets the workers handle every visible message, until the queues are quiet.
    pub async fn run_queues(&self) {
        slipway::worker::drain(&self.app, 50)
            .await
            .expect("memory queues never fail to receive");
    }

    pub fn advance(&self, by: SignedDuration) {
        self.clock.advance(by);
    }

    pub fn now(&self) -> Timestamp {
        use slipway::ports::Clock;
        self.clock.now()
    }

    // ---- what we look at

    pub async fn run(&self, sha: &str) -> Run {
        let id = RunId::new(
            &PipelineName::parse("shop").expect("valid"),
            &sha.parse().expect("valid sha"),
        );
        self.app
            .load(&id)
            .await
            .expect("store works")
            .expect("the run exists")
            .0
    }

    pub async fn stage_status(&self, sha: &str, label: &str) -> StageStatus {
        let run = self.run(sha).await;
        run.stages
            .iter()
            .find(|s| s.label() == label)
            .unwrap_or_else(|| panic!("no stage {label}"))
            .status
    }

    /// The commit the harness pushes: by `dev`.
    pub fn run_commit(&self) -> slipway::domain::CommitInfo {
        slipway::domain::CommitInfo {
            message: "Add the basket page".into(),
            author_login: Some("dev".into()),
            author_name: "Dee Veloper".into(),
            author_email: Some("dev@example.com".into()),
            url: None,
            pushed_by: "dev".into(),
        }
    }

    /// Everything in the state store, each object as `key: value` on its own line.
    pub async fn stored_text(&self) -> String {
        use slipway::ports::StateStore as _;
        let mut text = String::new();
        for key in self.store.list("").await.expect("the memory store lists") {
            if let Some(found) = self.store.get(&key).await.expect("the memory store reads") {
                text.push_str(&format!("{key}: {}\n", String::from_utf8_lossy(&found.value)));
            }
        }
        text
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.notifier.sent()
    }

    pub fn notifications_of(&self, kind: &str) -> Vec<Notification> {
        self.notifications().into_iter().filter(|n| n.kind == kind).collect()
    }

    /// The approval request sent to `approver`.
    pub fn approval_for(&self, approver: &str) -> Notification {
        self.notifications_of("approval_requested")
            .into_iter()
            .rev()
            .find(|n| n.approver.as_deref() == Some(approver))
            .unwrap_or_else(|| panic!("no approval request for {approver}: {:#?}", self.notifications()))
    }

    /// The SHAs deployed to `env`, in order.
    pub fn deployed(&self, env: &str) -> Vec<String> {
        self.deployer.deploys_to(env).into_iter().map(|d| d.sha).collect()
    }

    pub fn pending(&self, queue: QueueName) -> Vec<String> {
        self.queue.pending(queue)
    }

    /// Loses every message waiting on `queue`, as a crash between a state write and its send
    /// would: the run says the work is queued, but no worker will ever get it. Returns the
    /// bodies lost.
    pub async fn lose_pending(&self, queue: QueueName) -> Vec<String> {
        use slipway::ports::Queue as _;
        let mut lost = Vec::new();
        loop {
            let batch = self
                .queue
                .receive(queue, 10, std::time::Duration::from_secs(60))
                .await
                .expect("the memory queue receives");
            if batch.is_empty() {
                return lost;
            }
            for m in batch {
                self.queue.ack(queue, &m.receipt).await.expect("the memory queue acks");
                lost.push(m.body);
            }
        }
    }

    /// Pushes `sha`, has CI pass it and alice approve it, and lets the workers release it to
    /// production; then ten minutes pass.
    pub async fn release(&self, sha: &str) {
        self.healthy("staging", sha);
        self.healthy("production", sha);
        self.to_approval(sha).await;
        let approve = self.approval_for("alice").approve_url.expect("an approve link");
        assert_eq!(self.post_decision(&approve, "approve").await.status, StatusCode::OK);
        self.run_queues().await;
        assert_eq!(self.run(sha).await.status(), slipway::domain::RunStatus::Released);
        self.advance(SignedDuration::from_mins(10));
    }

    /// Pushes `sha` on top of `before`, has CI pass it and deploys it to staging, and loses
    /// its smoke checks: staging runs `sha` while its run has not reached any approval.
    pub async fn deploy_to_staging_only(&self, sha: &str, before: &str) {
        self.healthy("staging", sha);
        self.push_after(sha, before).await;
        self.ci(sha, "success").await;
        for body in self.lose_pending(QueueName::Deploy).await {
            slipway::handlers::handle(&self.app, QueueName::Deploy, &body)
                .await
                .expect("the deploy is handled");
        }
        self.lose_pending(QueueName::Smoke).await;
    }

    /// Drives a commit from push to the production approval request.
    pub async fn to_approval(&self, sha: &str) {
        assert_eq!(self.push(sha).await.status, StatusCode::CREATED);
        assert_eq!(self.ci(sha, "success").await.status, StatusCode::OK);
        self.run_queues().await;
        assert_eq!(
            self.stage_status(sha, "approval:production").await,
            StageStatus::Waiting
        );
    }

    pub async fn approval_stage_status(&self, sha: &str) -> StageStatus {
        let run = self.run(sha).await;
        run.stage(StageKind::Approval, Some(&"production".parse().expect("valid")))
            .expect("has approval")
            .status
    }
}

fn health_url(env: &str) -> &'static str {
    match env {
        "staging" => STAGING_HEALTH,
        "production" => PRODUCTION_HEALTH,
        other => panic!("no environment {other}"),
    }
}

fn path_of(url: &str) -> String {
    let parsed = url::Url::parse(url).expect("absolute link");
    match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_owned(),
    }
}

/// GitHub's real `push` example payload (events/github/push.json), re-aimed at `repo`,
/// `branch` and `sha`, authored and pushed by `dev`.
pub fn push_payload(repo: &str, branch: &str, sha: &str) -> String {
    let author = slipway::samples::SampleAuthor {
        login: "dev",
        name: "Dee Veloper",
        email: "dev@example.com",
    };
    // Committed half an hour before the harness's clock starts.
    let committed_at = "2026-11-21T08:30:00Z".parse().expect("a time");
    slipway::samples::github_push(
        repo,
        branch,
        sha,
        "Add the basket page\n\nWith tests.",
        author,
        committed_at,
    )
}

/// [`push_payload`] for a push that moved `branch` from `before` to `sha`, listing `sha` as
/// its one commit.
pub fn push_payload_after(repo: &str, branch: &str, sha: &str, before: &str) -> String {
    let mut payload: Value = serde_json::from_str(&push_payload(repo, branch, sha)).expect("the sample push is JSON");
    payload["before"] = json!(before);
    let mut commit = payload["head_commit"].clone();
    commit["id"] = json!(sha);
    payload["commits"] = json!([commit]);
    payload.to_string()
}

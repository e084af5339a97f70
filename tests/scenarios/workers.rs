//! The workers of one `slipway serve` process: each queue's messages are handled side by
//! side, so a long deploy to one environment never holds up a deploy (or a rollback) to
//! another, while each environment's lease still lets only one deploy work there at a time.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use slipway::adapters::memory::{FakeDeployTarget, FakeHttpChecker};
use slipway::app::App;
use slipway::domain::{Phase, RunStatus, StageStatus};
use slipway::ports::{DeployError, DeployReport, DeployRequest, DeployTarget};
use slipway::worker::Options;
use slipway_tests::{PRODUCTION_HEALTH, Pipeline, SHA, SHA2, STAGING_HEALTH};
use tokio::sync::{Barrier, watch};

/// The harness's deploy target, watched: it counts the phases running in each environment
/// at once, each phase takes `takes`, and a released commit is what the environment's health
/// endpoint reports from then on. With `meet`, the first phase in each environment waits
/// there until the other environment's first phase has started too.
#[derive(Debug, Clone)]
struct Watched {
    inner: FakeDeployTarget,
    checker: FakeHttpChecker,
    takes: Duration,
    meet: Option<Arc<Barrier>>,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    running: HashMap<String, usize>,
    /// The most phases that ever ran at once, per environment.
    most: HashMap<String, usize>,
    /// The environments whose first phase passed the meeting point.
    met: HashSet<String>,
}

impl Watched {
    fn new(p: &Pipeline, takes: Duration, meet: Option<Arc<Barrier>>) -> Self {
        Self {
            inner: p.deployer.clone(),
            checker: p.checker.clone(),
            takes,
            meet,
            seen: Arc::default(),
        }
    }

    /// The most deploy phases that ever ran at once in `env`.
    fn most_at_once(&self, env: &str) -> usize {
        self.seen.lock().unwrap().most.get(env).copied().unwrap_or(0)
    }

    fn met(&self) -> HashSet<String> {
        self.seen.lock().unwrap().met.clone()
    }
}

#[async_trait]
impl DeployTarget for Watched {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        let env = request.env.to_owned();
        let first = {
            let mut seen = self.seen.lock().unwrap();
            let running = seen.running.entry(env.clone()).or_default();
            *running += 1;
            let now = *running;
            let most = seen.most.entry(env.clone()).or_default();
            *most = (*most).max(now);
            !seen.met.contains(&env)
        };
        if let Some(meet) = self.meet.as_ref().filter(|_| first) {
            meet.wait().await;
            self.seen.lock().unwrap().met.insert(env.clone());
        }
        tokio::time::sleep(self.takes).await;
        let (phase, sha) = (request.phase, request.sha.to_owned());
        let report = self.inner.deploy(request).await;
        if phase == Phase::Release && report.is_ok() {
            let url = if env == "staging" {
                STAGING_HEALTH
            } else {
                PRODUCTION_HEALTH
            };
            self.checker.reset(url);
            let body = serde_json::json!({"version": sha, "database": "ok"}).to_string();
            self.checker.answer(url, 200, &body);
        }
        *self.seen.lock().unwrap().running.get_mut(&env).unwrap() -= 1;
        report
    }
}

/// `slipway serve`'s workers over `app`, until the returned sender says stop.
fn serve(app: App) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let options = Options {
        idle: Duration::from_millis(10),
        ..Options::default()
    };
    (stop, tokio::spawn(slipway::worker::run(app, options, stopped)))
}

/// Waits (on tokio's clock) until `done` holds; `None` if it did not within half an hour.
async fn until<F: Future<Output = bool>>(mut done: impl FnMut() -> F) -> Option<()> {
    tokio::time::timeout(Duration::from_secs(30 * 60), async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .ok()
}

#[tokio::test(start_paused = true)]
async fn a_staging_deploy_and_a_production_deploy_run_at_the_same_time() {
    let p = Pipeline::start().await;
    // The first commit waits for its production approval; a second commit is pushed and
    // its build passes, so its staging deploy is queued.
    p.to_approval(SHA).await;
    p.push_after(SHA2, SHA).await;
    p.ci(SHA2, "success").await;
    // alice approves the first: its production deploy is queued behind the staging one.
    let approve = p.approval_for("alice").approve_url.unwrap();
    p.post_decision(&approve, "approve").await;
    assert_eq!(p.pending(slipway::ports::QueueName::Deploy).len(), 2);

    // Each deploy waits in its first phase until the other has started: handled one after
    // the other, neither would ever finish.
    let target = Watched::new(&p, Duration::from_secs(20), Some(Arc::new(Barrier::new(2))));
    let app = App {
        deployer: Arc::new(target.clone()),
        ..p.app.clone()
    };
    let (stop, workers) = serve(app);
    let both = until(|| async {
        p.run(SHA).await.status() == RunStatus::Released
            && p.stage_status(SHA2, "smoke:staging").await == StageStatus::Succeeded
    })
    .await;
    assert!(
        both.is_some(),
        "the two deploys never ran at the same time: environments that met {:?}, production deploys {:?}, staging deploys {:?}",
        target.met(),
        p.deployed("production"),
        p.deployed("staging")
    );
    stop.send(true).unwrap();
    workers.await.unwrap();

    assert_eq!(
        target.met(),
        HashSet::from(["staging".to_owned(), "production".to_owned()])
    );
    assert_eq!(p.deployed("production"), [SHA]);
    assert_eq!(p.deployed("staging"), [SHA, SHA2]);
    assert_eq!(target.most_at_once("staging"), 1);
    assert_eq!(target.most_at_once("production"), 1);
}

#[tokio::test(start_paused = true)]
async fn two_commits_deploying_to_one_environment_take_turns() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.push_after(SHA2, SHA).await;
    p.ci(SHA, "success").await;
    p.ci(SHA2, "success").await;
    assert_eq!(p.pending(slipway::ports::QueueName::Deploy).len(), 2);

    // Both deploy messages are taken at once; every phase takes a minute.
    let target = Watched::new(&p, Duration::from_secs(60), None);
    let app = App {
        deployer: Arc::new(target.clone()),
        ..p.app.clone()
    };
    let (stop, workers) = serve(app);
    let done = until(|| async { p.stage_status(SHA2, "smoke:staging").await == StageStatus::Succeeded }).await;
    assert!(done.is_some(), "staging deploys {:?}", p.deployed("staging"));
    stop.send(true).unwrap();
    workers.await.unwrap();

    assert_eq!(
        target.most_at_once("staging"),
        1,
        "two deploys worked on staging at once"
    );
    assert_eq!(p.deployed("staging"), [SHA, SHA2], "the older first, then the newer");
    let waited = p.run(SHA2).await;
    assert!(
        waited
            .history
            .iter()
            .any(|h| h.what.starts_with("waiting for staging: run shop-a1b2")),
        "the newer commit's deploy was taken while the older one worked, and waited: {:#?}",
        waited.history
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_deploys_under_way() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    let target = Watched::new(&p, Duration::from_secs(60), None);
    let app = App {
        deployer: Arc::new(target.clone()),
        ..p.app.clone()
    };
    let (stop, workers) = serve(app);
    let started = until(|| async { p.stage_status(SHA, "deploy:staging").await == StageStatus::Running }).await;
    assert!(started.is_some());

    // Asked to stop in the middle of the deploy's first phase: the deploy is finished whole,
    // and nothing new is taken.
    stop.send(true).unwrap();
    workers.await.unwrap();
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Succeeded);
    assert_eq!(p.deployer.phases_of("staging"), ["backup", "migrate", "release"]);
    assert_eq!(
        p.pending(slipway::ports::QueueName::Smoke).len(),
        1,
        "the smoke checks wait for the next start"
    );
}

//! A model-based test harness of the whole engine: the real router and the real queue
//! handlers over the in-memory fakes, driven by a *schedule* — a list of [`Step`]s that
//! an unlucky world could produce: pushes in any order and repeated, CI results duplicated
//! and late, messages redelivered, workers crashing at any store call, conflicting and
//! failing writes, approvers clicking at once, rollbacks asked for at any time.
//!
//! After every step [`Model`] checks five invariants (see [`check`]) and fails with a
//! [`Violation`] naming the step. [`Model::finish`] then lets the world settle — workers
//! drain the queues, the clock passes every deadline (build timeouts too), the sweep runs —
//! and checks that every run ended.
//!
//! `tests/scenarios/model.rs` generates schedules with proptest and shrinks a failing one;
//! [`Schedule`]'s `Debug` prints it as a scenario test to paste:
//!
//! ```ignore
//! #[tokio::test(start_paused = true)]
//! async fn found_by_the_model() {
//!     let mut m = Model::start(&[2, 1]).await;
//!     m.step(Push(1)).await;
//!     m.step(Push(0)).await;
//!     m.step(Ci(3, Green)).await;
//!     m.finish().await;
//! }
//! ```

mod check;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use axum::body::Body;
use http::{Request, StatusCode};
use jiff::SignedDuration;
use serde_json::{Value, json};
use slipway::adapters::memory::Fault;
use slipway::domain::{EnvName, Phase, PipelineName, RunId};
use slipway::ports::{Queue as _, QueueName};

use crate::{GITHUB_SECRET, Pipeline};

pub use check::Violation;

/// The pipeline the model drives: staging, then production behind two approvals out of
/// alice, bob and carol (dev writes every commit and may not approve it; release-bot is a
/// bot and never counts), smoke checks on both, and a target that takes backups.
pub const MODEL_CONFIG: &str = r##"
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
id = "carol"
address = "carol@example.com"

[[pipelines.approvers]]
id = "dev"
address = "dev@example.com"

[[pipelines.approvers]]
id = "release-bot"
address = "#releases"
bot = true

[[pipelines.environments]]
name = "staging"
deploy = { type = "command", command = ["./deploy.sh", "staging"], timeout = "10m", secrets = { DATABASE_URL = "/slipway/shop/staging/database-url" } }
[[pipelines.environments.smoke]]
name = "health"
url = "http://127.0.0.1:9101/health"
json = { "/database" = "ok" }
timeout = "1s"
deadline = "3s"
backoff = "1s"

[[pipelines.environments]]
name = "production"
approvals_required = 2
deploy = { type = "command", command = ["./deploy.sh", "production"], timeout = "10m", secrets = { DATABASE_URL = "/slipway/shop/production/database-url" } }
[[pipelines.environments.smoke]]
name = "health"
url = "http://127.0.0.1:9102/health"
json = { "/database" = "ok" }
timeout = "1s"
deadline = "3s"
backoff = "1s"
"##;

/// The approvals production needs.
pub const APPROVALS_REQUIRED: usize = 2;

/// An environment of [`MODEL_CONFIG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Env {
    Staging,
    Production,
}

impl Env {
    pub const ALL: [Env; 2] = [Env::Staging, Env::Production];

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Staging => "staging",
            Env::Production => "production",
        }
    }

    fn name(self) -> EnvName {
        EnvName::parse(self.as_str()).expect("valid")
    }
}

/// Someone who may click an approval or rollback link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Approver {
    Alice,
    Bob,
    Carol,
    /// The author of every commit: may not approve it.
    Dev,
    /// A bot: told, never counted.
    ReleaseBot,
}

impl Approver {
    pub fn as_str(self) -> &'static str {
        match self {
            Approver::Alice => "alice",
            Approver::Bob => "bob",
            Approver::Carol => "carol",
            Approver::Dev => "dev",
            Approver::ReleaseBot => "release-bot",
        }
    }
}

/// What CI reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    Green,
    Red,
}

/// A queue of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q {
    Deploy,
    Smoke,
    Notify,
}

impl Q {
    fn name(self) -> QueueName {
        match self {
            Q::Deploy => QueueName::Deploy,
            Q::Smoke => QueueName::Smoke,
            Q::Notify => QueueName::Notify,
        }
    }
}

/// A store operation to make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Create,
    Replace,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Create => "create",
            Op::Replace => "replace",
        }
    }
}

/// One thing that happens in the world. Commits are numbered 1.. in git order (commit 0 is
/// the branch's head before the first push); pushes are numbered 0.. in git order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// GitHub delivers push `k` (again, if it was delivered before), with its `before`,
    /// `after` and `commits` as git made them.
    Push(usize),
    /// CI reports on commit `n`.
    Ci(usize, Build),
    /// One worker takes one visible message of the queue and handles it.
    Work(Q),
    /// Two workers take a message each of the queue and handle them at once, their store
    /// calls interleaved.
    WorkTwo(Q),
    /// A worker takes one message of the queue and dies at its `k`-th store call (0: the
    /// first); the message comes back after its visibility timeout.
    Crash(Q, usize),
    /// Workers handle every visible message until the queues are quiet.
    Drain,
    /// The approver opens the page of their approval link for commit `n` (nothing if they
    /// have none): a decision posted later starts from the run that page read, however old
    /// it is by then.
    View(usize, Approver),
    /// The approver clicks Approve on their link for commit `n` (nothing if they have none).
    Approve(usize, Approver),
    /// Two approvers click Approve on commit `n` at the same moment.
    ApproveTwo(usize, Approver, Approver),
    /// The approver clicks Reject for commit `n`.
    Reject(usize, Approver),
    /// Someone runs `slipway rollback --env <env>`.
    Rollback(Env),
    /// Someone runs `slipway retry` on commit `n`'s run (refused unless it failed at a
    /// deploy, smoke checks or bake, and no newer run has passed that environment).
    Retry(usize),
    /// The approver presses Roll back on their rollback link from commit `n`'s release.
    RollbackLink(usize, Approver),
    /// The store fails the operation after the next `skip` ones: 412 (`true`) or unavailable.
    StoreFault(Op, usize, bool),
    /// The next `n` queue sends fail.
    SendFails(u32),
    /// The next run of the phase in the environment fails.
    DeployFails(Env, Phase),
    /// The environment's health check answers 503 (`false`) or healthy (`true`).
    Health(Env, bool),
    /// The clock moves on this many minutes.
    Advance(i64),
    /// The sweep runs once.
    Sweep,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Push(k) => write!(f, "Push({k})"),
            Step::Ci(n, b) => write!(f, "Ci({n}, {b:?})"),
            Step::Work(q) => write!(f, "Work(Q::{q:?})"),
            Step::WorkTwo(q) => write!(f, "WorkTwo(Q::{q:?})"),
            Step::Crash(q, k) => write!(f, "Crash(Q::{q:?}, {k})"),
            Step::Drain => write!(f, "Drain"),
            Step::View(n, a) => write!(f, "View({n}, {a:?})"),
            Step::Approve(n, a) => write!(f, "Approve({n}, {a:?})"),
            Step::ApproveTwo(n, a, b) => write!(f, "ApproveTwo({n}, {a:?}, {b:?})"),
            Step::Reject(n, a) => write!(f, "Reject({n}, {a:?})"),
            Step::Rollback(e) => write!(f, "Rollback(Env::{e:?})"),
            Step::Retry(n) => write!(f, "Retry({n})"),
            Step::RollbackLink(n, a) => write!(f, "RollbackLink({n}, {a:?})"),
            Step::StoreFault(op, skip, conflict) => write!(f, "StoreFault(Op::{op:?}, {skip}, {conflict})"),
            Step::SendFails(n) => write!(f, "SendFails({n})"),
            Step::DeployFails(e, p) => write!(f, "DeployFails(Env::{e:?}, Phase::{p:?})"),
            Step::Health(e, ok) => write!(f, "Health(Env::{e:?}, {ok})"),
            Step::Advance(m) => write!(f, "Advance({m})"),
            Step::Sweep => write!(f, "Sweep"),
        }
    }
}

/// A whole schedule: how git grouped the commits into pushes, and the steps. Its `Debug` is
/// a scenario test that replays it.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How many commits each push carries, in git order.
    pub pushes: Vec<usize>,
    pub steps: Vec<Step>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "a scenario test that replays this schedule:")?;
        writeln!(f)?;
        writeln!(f, "use slipway::domain::Phase;")?;
        writeln!(
            f,
            "use slipway_tests::model::{{Approver::*, Build::*, Env, Model, Op, Q, Step::*}};"
        )?;
        writeln!(f)?;
        writeln!(f, "#[tokio::test(start_paused = true)]")?;
        writeln!(f, "async fn found_by_the_model() {{")?;
        writeln!(f, "    let mut m = Model::start(&{:?}).await;", self.pushes)?;
        let git = Git::new(&self.pushes);
        for step in &self.steps {
            let note = match step {
                Step::Push(k) if *k < git.pushes.len() => format!(" // {}", git.describe(*k)),
                _ => String::new(),
            };
            writeln!(f, "    m.step({step:?}).await;{note}")?;
        }
        writeln!(f, "    m.finish().await;")?;
        write!(f, "}}")
    }
}

/// The branch's history: commit 0 is the head before the model's pushes, commits 1..=N
/// follow in a line, and push `k` moves the branch over the next `pushes[k]` of them.
#[derive(Debug, Clone)]
struct Git {
    /// Per push: `before`, and the commits it lists (the last is `after`).
    pushes: Vec<(usize, Vec<usize>)>,
    commits: usize,
}

impl Git {
    fn new(sizes: &[usize]) -> Self {
        let mut pushes = Vec::new();
        let mut head = 0;
        for &size in sizes {
            let commits: Vec<usize> = (head + 1..=head + size.max(1)).collect();
            let before = head;
            head = *commits.last().expect("a push carries a commit");
            pushes.push((before, commits));
        }
        Self { pushes, commits: head }
    }

    fn describe(&self, k: usize) -> String {
        let (before, commits) = &self.pushes[k];
        format!("before {before}, commits {commits:?}")
    }
}

/// The SHA of commit `n`: `a0a0…` for commit 0, `a1a1…` for commit 1, …
pub fn sha(n: usize) -> String {
    format!("{:02x}", 0xa0 + n).repeat(20)
}

fn commit_of(sha: &str) -> Option<usize> {
    (0..16).find(|n| self::sha(*n) == sha)
}

/// What the world was told it got: answers the engine gave, which the state must reflect.
#[derive(Debug, Default)]
struct Accepted {
    /// Commits whose push opened or found a run.
    pushes: BTreeSet<usize>,
    /// Commits a CI result changed.
    ci: BTreeSet<usize>,
    /// Per (commit, env): approvers whose approval was counted.
    approvals: BTreeMap<(usize, Env), BTreeSet<Approver>>,
    /// Per (commit, env): approvers answered 5xx, whose approval may or may not have been
    /// recorded.
    doubtful: BTreeMap<(usize, Env), BTreeSet<Approver>>,
    /// Per (commit, env): a rejection was accepted.
    rejections: BTreeSet<(usize, Env)>,
    /// Per (run's commit, env): manual rollbacks accepted.
    rollbacks: BTreeMap<(usize, Env), usize>,
}

/// The engine under test, its fakes, and what the model knows.
#[allow(missing_debug_implementations)] // the pipeline is a bag of handles
pub struct Model {
    pub p: Pipeline,
    git: Git,
    /// Git's facts delivered so far: commit → its parents, from the pushes slipway accepted.
    parents: HashMap<usize, BTreeSet<usize>>,
    accepted: Accepted,
    /// A send may have been lost (a failing queue, a crash, a failing store): a queued stage
    /// may then have no message until the sweep sends it again.
    lossy: bool,
    /// How many of the fake target's phases the checks have seen.
    phases_seen: usize,
    phase_keys: HashSet<String>,
    /// What each environment runs, by commit, as the fake target was told.
    current: HashMap<Env, usize>,
    deliveries: u64,
    steps: Vec<Step>,
}

impl Model {
    /// A fresh engine over fresh fakes; git groups the commits into pushes of these sizes.
    pub async fn start(pushes: &[usize]) -> Self {
        let p = Pipeline::with_config(MODEL_CONFIG).await;
        let git = Git::new(pushes);
        assert!(git.commits < 16, "the model names at most 15 commits");
        Self {
            p,
            git,
            parents: HashMap::new(),
            accepted: Accepted::default(),
            lossy: false,
            phases_seen: 0,
            phase_keys: HashSet::new(),
            current: HashMap::new(),
            deliveries: 0,
            steps: Vec::new(),
        }
    }

    /// How many commits the model's git history has.
    pub fn commits(&self) -> usize {
        self.git.commits
    }

    /// Carries out `step` and checks every invariant; panics with the violation.
    pub async fn step(&mut self, step: Step) {
        if let Err(v) = self.try_step(step).await {
            panic!("{v}");
        }
    }

    /// Lets the world settle and checks that every run ended; panics with the violation.
    pub async fn finish(&mut self) {
        if let Err(v) = self.try_finish().await {
            panic!("{v}");
        }
    }

    /// Carries out `step` and checks every invariant.
    pub async fn try_step(&mut self, step: Step) -> Result<(), Violation> {
        self.steps.push(step);
        Box::pin(self.act(step)).await;
        Box::pin(self.check()).await
    }

    /// Lets the world settle: the injected faults end, workers drain the queues, the clock
    /// passes every deadline (approvals, build timeouts, leases, visibility, silent workers)
    /// and the sweep runs, until nothing moves. Then every run must have ended: one whose CI
    /// never reported by its build's timeout.
    pub async fn try_finish(&mut self) -> Result<(), Violation> {
        self.p.queue.fail_next_sends(0);
        let mut quiet_rounds = 0;
        for _ in 0..12 {
            let before = self.p.store.write_count();
            let _ = Box::pin(slipway::worker::drain(&self.p.app, 100)).await;
            Box::pin(self.check()).await?;
            self.p.clock.advance(SignedDuration::from_hours(25));
            let swept = Box::pin(slipway::sweep::run_once(&self.p.app)).await;
            let _ = Box::pin(slipway::worker::drain(&self.p.app, 100)).await;
            Box::pin(self.check()).await?;
            let pending: usize = QueueName::ALL.iter().map(|q| self.p.queue.pending(*q).len()).sum();
            // Quiet: a whole sweep went through (an injected fault may have cut one short),
            // and nothing was sent or written.
            if swept.is_ok() && pending == 0 && self.p.store.write_count() == before {
                quiet_rounds += 1;
                if quiet_rounds == 2 {
                    return self.check_settled().await;
                }
            } else {
                quiet_rounds = 0;
            }
        }
        Err(self.violation(
            "(d) the world never settles: after 12 rounds of draining, time and sweeps, work is still moving".into(),
        ))
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            what,
            steps: self.steps.clone(),
        }
    }

    async fn act(&mut self, step: Step) {
        match step {
            Step::Push(k) => self.push(k).await,
            Step::Ci(n, build) => self.ci(n, build).await,
            Step::Work(q) => {
                let _ = Box::pin(slipway::worker::poll(&self.p.app, q.name(), 1)).await;
            }
            Step::WorkTwo(q) => {
                let queue = q.name();
                let Ok(deliveries) = self.p.queue.receive(queue, 2, self.p.app.tuning.visibility).await else {
                    return;
                };
                self.p.store.interleave(true);
                match deliveries.as_slice() {
                    [a, b] => {
                        let _ = tokio::join!(
                            Box::pin(slipway::worker::process(&self.p.app, queue, a)),
                            Box::pin(slipway::worker::process(&self.p.app, queue, b)),
                        );
                    }
                    [a] => {
                        let _ = Box::pin(slipway::worker::process(&self.p.app, queue, a)).await;
                    }
                    _ => {}
                }
                self.p.store.interleave(false);
            }
            Step::Crash(q, k) => {
                let queue = q.name();
                let Ok(mut deliveries) = self.p.queue.receive(queue, 1, self.p.app.tuning.visibility).await else {
                    return;
                };
                let Some(delivery) = deliveries.pop() else { return };
                self.p.store.crash_at(k);
                tokio::select! {
                    _ = Box::pin(slipway::worker::process(&self.p.app, queue, &delivery)) => {}
                    () = self.p.store.crashed() => self.lossy = true,
                }
                self.p.store.cancel_crash();
            }
            Step::Drain => {
                let _ = Box::pin(slipway::worker::drain(&self.p.app, 20)).await;
            }
            Step::View(n, who) => {
                if let Some(link) = self.approve_link(n, who) {
                    // Whatever it answers (a closed or expired link, a store fault): a page
                    // changes nothing.
                    Box::pin(self.p.get(&link)).await;
                }
            }
            Step::Approve(n, who) => {
                let answer = self.decide(n, who, "approve").await;
                self.approved(n, who, answer);
            }
            Step::ApproveTwo(n, a, b) => {
                self.p.store.interleave(true);
                let (ra, rb) = tokio::join!(
                    Box::pin(self.decide(n, a, "approve")),
                    Box::pin(self.decide(n, b, "approve"))
                );
                self.p.store.interleave(false);
                self.approved(n, a, ra);
                self.approved(n, b, rb);
            }
            Step::Reject(n, who) => {
                if self.decide(n, who, "reject").await == Some(StatusCode::OK) {
                    self.accepted.rejections.insert((n, Env::Production));
                }
            }
            Step::Rollback(env) => {
                let pipeline = PipelineName::parse("shop").expect("valid");
                let asked = Box::pin(slipway::handlers::deploy::request_rollback(
                    &self.p.app,
                    &pipeline,
                    &env.name(),
                    None,
                    "ops",
                ))
                .await;
                if let Ok(run) = asked
                    && let Some(n) = commit_of(run.sha.as_str())
                {
                    *self.accepted.rollbacks.entry((n, env)).or_default() += 1;
                }
            }
            Step::RollbackLink(n, who) => self.rollback_link(n, who).await,
            Step::Retry(n) => {
                let run = RunId::parse(&format!("shop-{}", sha(n))).expect("a run id");
                let _ = Box::pin(slipway::handlers::retry::request_retry(
                    &self.p.app,
                    &run,
                    None,
                    slipway::domain::Actor::Slipway,
                    "ops",
                ))
                .await;
            }
            Step::StoreFault(op, skip, conflict) => {
                let fault = if conflict { Fault::Conflict } else { Fault::Unavailable };
                // A write that fails after the run's own write (the index of open runs, an
                // environment record) leaves its commands unsent: the sweep sends them.
                self.lossy = true;
                self.p.store.fail_later(op.as_str(), skip, fault);
            }
            Step::SendFails(n) => {
                self.lossy = true;
                self.p.queue.fail_next_sends(n);
            }
            Step::DeployFails(env, phase) => self.p.deployer.fail_phase(env.as_str(), phase, "injected failure"),
            Step::Health(env, true) => self.p.healthy(env.as_str(), &sha(0)),
            Step::Health(env, false) => self.p.broken(env.as_str()),
            Step::Advance(minutes) => self.p.clock.advance(SignedDuration::from_mins(minutes)),
            Step::Sweep => {
                let _ = Box::pin(slipway::sweep::run_once(&self.p.app)).await;
            }
        }
    }

    /// Delivers push `k` as GitHub would: GitHub's real payload with git's `before`, `after`
    /// and `commits`.
    async fn push(&mut self, k: usize) {
        let (before, commits) = self.git.pushes[k].clone();
        let after = *commits.last().expect("a push carries a commit");
        let mut payload: Value =
            serde_json::from_str(&crate::push_payload("acme/shop", "main", &sha(after))).expect("the payload is JSON");
        payload["before"] = json!(sha(before));
        let template = payload["commits"][0].clone();
        payload["commits"] = commits
            .iter()
            .map(|n| {
                let mut commit = template.clone();
                commit["id"] = json!(sha(*n));
                commit["url"] = json!(format!("https://github.com/acme/shop/commit/{}", sha(*n)));
                commit["message"] = json!(format!("Commit {n}"));
                commit
            })
            .collect();
        self.deliveries += 1;
        let delivery = format!("delivery-{}", self.deliveries);
        let body = payload.to_string();
        let answer = self.p.github("push", &delivery, body.as_bytes(), GITHUB_SECRET);
        let answer = Box::pin(answer).await;
        if answer.status.is_success() {
            self.accepted.pushes.insert(after);
            let mut parent = before;
            for n in commits {
                self.parents.entry(n).or_default().insert(parent);
                parent = n;
            }
        }
    }

    async fn ci(&mut self, n: usize, build: Build) {
        let status = match build {
            Build::Green => "success",
            Build::Red => "failure",
        };
        let answer = Box::pin(self.p.ci(&sha(n), status)).await;
        if answer.status == StatusCode::OK
            && serde_json::from_str::<Value>(&answer.body).is_ok_and(|v| v.get("ignored").is_none())
        {
            self.accepted.ci.insert(n);
        }
    }

    /// `who` posts a decision on their approval link for commit `n`; `None` if they have no
    /// link (yet).
    async fn decide(&self, n: usize, who: Approver, decision: &str) -> Option<StatusCode> {
        let link = self.approve_link(n, who)?;
        Some(Box::pin(self.p.post_decision(&link, decision)).await.status)
    }

    /// `who`'s newest approval link for commit `n`, if they were asked.
    fn approve_link(&self, n: usize, who: Approver) -> Option<String> {
        self.p
            .notifications_of("approval_requested")
            .into_iter()
            .rev()
            .find(|x| x.sha == sha(n) && x.approver.as_deref() == Some(who.as_str()))?
            .approve_url
    }

    /// Notes what `who`'s approval of commit `n` was answered.
    fn approved(&mut self, n: usize, who: Approver, answer: Option<StatusCode>) {
        let book = match answer {
            Some(StatusCode::OK) => &mut self.accepted.approvals,
            Some(status) if status.is_server_error() => &mut self.accepted.doubtful,
            _ => return,
        };
        book.entry((n, Env::Production)).or_default().insert(who);
    }

    async fn rollback_link(&mut self, n: usize, who: Approver) {
        let Some(link) = self
            .p
            .notifications_of("released")
            .into_iter()
            .rev()
            .find(|x| x.sha == sha(n) && x.approver.as_deref() == Some(who.as_str()))
            .and_then(|x| x.rollback_url)
        else {
            return;
        };
        let Some((_, token)) = link.split_once("?token=") else {
            return;
        };
        let request = Request::post(format!("/rollback/{token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::empty())
            .expect("valid request");
        if Box::pin(self.p.send(request)).await.status == StatusCode::OK {
            *self.accepted.rollbacks.entry((n, Env::Production)).or_default() += 1;
        }
    }

    fn run_id(n: usize) -> RunId {
        RunId::new(
            &PipelineName::parse("shop").expect("valid"),
            &sha(n).parse().expect("valid sha"),
        )
    }
}

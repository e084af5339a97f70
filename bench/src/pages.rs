//! `pages`: what a page costs with a long history on S3 — the AWS requests (counted by a proxy
//! in front of moto) and the wall time of one pipeline's runs list, of the approval page of a
//! waiting run, and of the runs list of every pipeline, at `--runs` runs of history next to
//! the same pages at 100 runs. Flat means the count does not grow with the history.
//!
//! The history is made by the real engine (`App::open_run`, as a push does), spread over 16
//! pipelines so that the runs opened at once do not all wait on one lineage record. Each run
//! then finishes as a history's runs do (here: CI reports its build red) and its entry in the
//! index is written as the sweep writes it. One run is driven through CI and
//! staging to wait for approval, the way the scenario tests do.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::body::Body;
use http_body_util::BodyExt as _;
use serde_json::json;
use slipway::app::{App, Applied, Opened};
use slipway::approvals::{SignIn, SignInKind};
use slipway::domain::{Actor, BuildInfo, BuildStatus, CommitInfo, Event, NewRun};
use slipway::views::run_index;
use slipway_tests::aws_run::CountedStack;
use slipway_tests::{CONFIG, SHA};

/// How many pipelines the history is spread over: pushes to one pipeline all update its
/// lineage record, so runs opened at once for one pipeline would mostly wait on each other.
const SEED_PIPELINES: usize = 16;

/// The scenario configuration (the waiting run's pipeline, `shop`), and [`SEED_PIPELINES`]
/// more in deployment mode (`seed-0` … on `acme/seed-0` …) that hold the history.
fn config() -> String {
    let mut config = CONFIG.to_owned();
    for p in 0..SEED_PIPELINES {
        config.push_str(&format!(
            "\n[[pipelines]]\nname = \"seed-{p}\"\nrepo = \"acme/seed-{p}\"\nmode = \"deployment\"\n\
             ci_secret = \"/slipway/shop/ci-secret\"\n\
             environments = [{{ name = \"production\", deploy = {{ type = \"command\", command = [\"/bin/true\"] }} }}]\n"
        ));
    }
    config
}
use tower::ServiceExt as _;

use crate::report::{Outcome, ratio};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many runs of history the pages are measured at.
    #[arg(long, default_value_t = 10_000)]
    pub runs: usize,
    /// How many runs are opened at once while the history is made.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            runs: 10_000,
            concurrency: 16,
        }
    }
}

/// The history the baseline is measured at.
const BASELINE_RUNS: usize = 100;
const TARGET_REQUESTS: u64 = 5;
/// One pipeline's runs list, as the dashboard and `slipway runs --pipeline` read it.
const ONE_PIPELINE_PAGE: &str = "/api/runs?pipeline=seed-0&limit=50";
/// Every pipeline's runs, merged: a pipeline's record (and perhaps one chunk) per pipeline,
/// 17 here, so it is bounded by the pipelines, not the history, but not within 5 requests.
const ALL_PIPELINES_PAGE: &str = "/api/runs?limit=50";

/// What one page cost.
#[derive(Debug, Clone, Copy)]
struct Cost {
    requests: u64,
    ms: f64,
}

pub async fn run(args: &Args) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.runs > BASELINE_RUNS, "--runs must be more than {BASELINE_RUNS}");
    let stack = CountedStack::start(&config()).await;
    let link = stack.to_approval(SHA, "bench-waiting").await;
    let approval_page = url::Url::parse(&link)?.path().to_owned();
    // The history is written straight to moto: only the pages' requests are counted.
    let writer = slipway::cloud::app(&stack.settings, &stack.direct, None).await?;

    let mut opened = 1; // the run waiting for approval
    let seeding = Instant::now();
    seed(&writer, opened..BASELINE_RUNS, args.concurrency).await?;
    opened = BASELINE_RUNS;
    let small = measure(&stack, &approval_page).await?;
    seed(&writer, opened..args.runs, args.concurrency).await?;
    let seeded_s = seeding.elapsed().as_secs_f64();
    let large = measure(&stack, &approval_page).await?;

    let n = args.runs;
    let show = |p: &Pages| {
        format!(
            "one pipeline's list {} requests {:.0} ms, approval page {} requests {:.0} ms, all pipelines' list {} requests {:.0} ms",
            p.one.requests, p.one.ms, p.approval.requests, p.approval.ms, p.all.requests, p.all.ms
        )
    };
    let ratios = format!(
        "requests {:.1}x, {:.1}x, {:.1}x",
        ratio(large.one.requests as f64, small.one.requests as f64),
        ratio(large.approval.requests as f64, small.approval.requests as f64),
        ratio(large.all.requests as f64, small.all.requests as f64),
    );
    let cost = |c: Cost| json!({"requests": c.requests, "ms": c.ms});
    Ok(Outcome {
        name: "pages",
        figure: format!("at {n} runs: {}", show(&large)),
        baseline: format!("at {BASELINE_RUNS} runs: {}", show(&small)),
        ratio: ratios,
        target: format!("<= {TARGET_REQUESTS} requests for one pipeline's list and the approval page, at any history"),
        // Flat means bounded whatever the history: at 100 runs a pipeline's newest runs are all
        // in its record, later one chunk more may be read, never more than a page needs.
        met: [large.one, large.approval, small.one, small.approval]
            .iter()
            .all(|c| c.requests <= TARGET_REQUESTS),
        values: json!({
            "runs": n, "baseline_runs": BASELINE_RUNS, "seconds_to_seed": seeded_s,
            "pipelines": SEED_PIPELINES + 1,
            "one_pipeline_list": {"large": cost(large.one), "baseline": cost(small.one)},
            "approval_page": {"large": cost(large.approval), "baseline": cost(small.approval)},
            "all_pipelines_list": {"large": cost(large.all), "baseline": cost(small.all)},
        }),
    })
}

/// The three pages at one size of history.
#[derive(Debug, Clone, Copy)]
struct Pages {
    one: Cost,
    approval: Cost,
    all: Cost,
}

async fn measure(stack: &CountedStack, approval_page: &str) -> anyhow::Result<Pages> {
    Ok(Pages {
        one: page(stack, ONE_PIPELINE_PAGE).await?,
        approval: page(stack, approval_page).await?,
        all: page(stack, ALL_PIPELINES_PAGE).await?,
    })
}

/// GETs `path` from the functions' router; the AWS requests it made and how long it took.
async fn page(stack: &CountedStack, path: &str) -> anyhow::Result<Cost> {
    let router = slipway::http::router(stack.functions.http.clone());
    // The API answers people who signed in: a session, sealed before the count starts (the
    // signing key is then in the function's secret cache, as on a warm container).
    let function = &stack.functions.http;
    let session = function
        .seal_token(&SignIn {
            kind: SignInKind::Session,
            who: "alice".parse().context("a login")?,
            expires_at: function.clock.now() + jiff::SignedDuration::from_hours(1),
        })
        .await?;
    stack.proxy.take();
    let started = Instant::now();
    let answer = router
        .oneshot(
            http::Request::get(path)
                .header(http::header::COOKIE, format!("slipway_session={session}"))
                .body(Body::empty())?,
        )
        .await
        .context("the router always answers")?;
    let status = answer.status();
    let body = answer.into_body().collect().await?.to_bytes();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let requests = stack.proxy.take().total();
    anyhow::ensure!(
        status.is_success(),
        "{path} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(Cost { requests, ms })
}

/// Opens runs `range`, spread over the seed pipelines, as pushes do, `concurrency` at a time.
async fn seed(app: &App, range: std::ops::Range<usize>, concurrency: usize) -> anyhow::Result<()> {
    let pipelines: Vec<_> = app
        .config
        .pipelines
        .iter()
        .filter(|p| p.name.as_str().starts_with("seed-"))
        .cloned()
        .collect();
    anyhow::ensure!(!pipelines.is_empty(), "the configuration has no seed pipelines");
    let pipelines = Arc::new(pipelines);
    let app = app.clone();
    crate::load::each_index(range, concurrency, move |i| {
        let (app, pipelines) = (app.clone(), pipelines.clone());
        async move { seed_one(&app, &pipelines[i % pipelines.len()], i).await }
    })
    .await
}

/// Opens run `i` in `pipeline` and has its build fail, as a push and CI would.
async fn seed_one(app: &App, pipeline: &slipway::config::PipelineConfig, i: usize) -> anyhow::Result<()> {
    let new = || NewRun {
        pipeline: pipeline.name.clone(),
        repo: pipeline.repo.clone(),
        branch: pipeline.branch.clone(),
        sha: crate::server::sha(i).parse().expect("a valid SHA"),
        commit: CommitInfo {
            message: format!("Change {i}"),
            author_login: Some("dev".into()),
            author_name: "Dee Veloper".into(),
            author_email: Some("dev@example.com".into()),
            url: None,
            pushed_by: "dev".into(),
        },
        plan: pipeline.plan(),
        parents: Vec::new(),
        carried: Default::default(),
    };
    // Pushes racing on the pipeline's lineage may lose a few times; so may these.
    let run = tries(&format!("open run {i}"), || async {
        match app.open_run(new()).await? {
            Opened::Created(run) | Opened::Existing(run) => Ok(run),
        }
    })
    .await?;
    // A history is of finished runs: this one's build fails (CI reports it red),
    // and its entry in the index says so (as the sweep writes it when it drops the
    // run's open-run marker).
    let failed = || Event::BuildFinished {
        status: BuildStatus::Failure,
        build: BuildInfo {
            url: None,
            artifact: None,
            coverage: None,
            checks: Default::default(),
        },
    };
    tries(&format!("finish run {i}"), || async {
        let run = match app.apply(&run.id, || app.input(Actor::Slipway, failed())).await? {
            Some(Applied::Changed(run) | Applied::Ignored(_, run)) => run,
            None => anyhow::bail!("run {i} vanished"),
        };
        anyhow::ensure!(run.status().is_finished(), "run {i} did not finish: {:?}", run.status());
        Ok(run_index::refresh(app.store.as_ref(), &app.tuning, &run).await?)
    })
    .await?;
    Ok(())
}

/// `attempt` until it succeeds, at most 5 times; the last error says what could not be done.
async fn tries<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    what: &str,
    attempt: impl Fn() -> F,
) -> anyhow::Result<T> {
    let mut failed = 0;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) => {
                failed += 1;
                anyhow::ensure!(failed < 5, "cannot {what}: {e:#}");
            }
        }
    }
}

//! slipway's pages in a real headless Chromium, used as a person uses them: open the link from
//! a notification, read, click. The app is the scenario harness's (the real router over
//! in-memory fakes), served on a loopback port that is also its `public_url`.
//!
//! Every page is checked for console errors and Content-Security-Policy violations, and its
//! stylesheet is shown to apply (a button's computed colour is the stylesheet's, which only
//! happens when the policy's style hash matches). Each page's screenshot is saved as
//! `target/browser-screenshots/<test>-<step>.png`.
//!
//! One chromedriver serves the whole binary (a custom harness, `libtest-mimic`, starts it on
//! first use and stops it at the end); each test has its own Chromium. See
//! `slipway_tests::browser` for how the binaries are found.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use http::{HeaderMap, StatusCode};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use slipway::domain::{RunStatus, StageStatus};
use slipway_tests::browser::{self, Browser, Chromedriver};
use slipway_tests::{CI_SECRET, CONFIG, GITHUB_SECRET, Pipeline, SHA, SHA2, push_payload};

/// The stylesheet's colours, as the browser computes them.
const APPROVE_GREEN: &str = "rgba(31, 136, 61, 1)"; // .approve  #1f883d
const REJECT_RED: &str = "rgba(207, 34, 46, 1)"; // .reject   #cf222e
const WARNING_YELLOW: &str = "rgba(255, 248, 197, 1)"; // .warning  #fff8c5

type Scenario = fn(Browser) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let driver: Arc<OnceLock<Result<Chromedriver, String>>> = Arc::default();
    let scenarios: [(&str, Scenario); 6] = [
        ("a_person_signs_in_by_link_and_reads_the_control_room", |b| {
            Box::pin(a_person_signs_in_by_link_and_reads_the_control_room(b))
        }),
        ("an_approver_approves_from_the_link_in_the_notification", |b| {
            Box::pin(an_approver_approves_from_the_link_in_the_notification(b))
        }),
        (
            "a_script_link_from_a_push_or_ci_never_becomes_a_link_on_the_page",
            |b| Box::pin(a_script_link_from_a_push_or_ci_never_becomes_a_link_on_the_page(b)),
        ),
        ("the_approval_page_of_an_older_commit_points_to_the_newer_run", |b| {
            Box::pin(the_approval_page_of_an_older_commit_points_to_the_newer_run(b))
        }),
        ("an_approver_rolls_production_back_from_the_release_notice", |b| {
            Box::pin(an_approver_rolls_production_back_from_the_release_notice(b))
        }),
        ("the_checks_catch_a_page_whose_style_hash_is_wrong", |b| {
            Box::pin(the_checks_catch_a_page_whose_style_hash_is_wrong(b))
        }),
    ];
    let trials = scenarios
        .into_iter()
        .map(|(name, scenario)| {
            let driver = driver.clone();
            Trial::test(name, move || run(&driver, scenario))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(driver); // stops chromedriver, if a test started it
    conclusion.exit_code()
}

/// Runs one scenario in its own runtime and Chromium, and closes the browser however the
/// scenario ends.
fn run(driver: &OnceLock<Result<Chromedriver, String>>, scenario: Scenario) -> Result<(), Failed> {
    let driver = driver
        .get_or_init(Chromedriver::start)
        .as_ref()
        .map_err(|e| e.as_str())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("no tokio runtime: {e}"))?;
    runtime.block_on(async {
        let browser = driver.open().await?;
        let outcome = tokio::spawn(scenario(browser.clone())).await;
        browser.close().await;
        match outcome {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(Failed::from(e.to_string())),
        }
    })
}

/// Where the screenshots go: `target/browser-screenshots/`.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target tmp dir is inside the target dir")
        .join("browser-screenshots")
}

/// The scenario pipeline, served on a loopback port that is its public URL (the links in
/// its notifications point there).
async fn serve(config: &str) -> Pipeline {
    let (listener, base) = browser::listen().await;
    let p = Pipeline::with_config(&config.replace("https://slipway.example.com", &base)).await;
    browser::serve(listener, p.router.clone());
    p
}

/// The page is clean and styled: no console error or policy violation, and `css`'s
/// background is the stylesheet's `colour`.
async fn assert_styled(b: &Browser, page: &str, css: &str, colour: &str) {
    b.assert_no_problems(page).await;
    let element = b.find(css).await;
    let background = element.css_value("background-color").await.unwrap();
    assert_eq!(background, colour, "{page}: {css} is styled by the stylesheet");
}

async fn an_approver_approves_from_the_link_in_the_notification(b: Browser) {
    let test = "approval_flow";
    let p = serve(CONFIG).await;
    p.to_approval(SHA).await;
    let link = p.approval_for("alice").approve_url.unwrap();

    // alice opens the link from her notification: the page asks for her decision.
    b.open(&link).await;
    let title = b.wait_for_title("Promote").await;
    assert!(title.contains(&SHA[..12]) && title.contains("production"), "{title}");
    assert_styled(&b, "the approval page", "button.approve", APPROVE_GREEN).await;
    assert_eq!(
        b.find("button.reject")
            .await
            .css_value("background-color")
            .await
            .unwrap(),
        REJECT_RED
    );
    let text = b.text().await;
    assert!(text.contains("Your decision, alice"), "{text}");
    assert!(text.contains("Add the basket page"), "the commit's message: {text}");
    b.screenshot(&screenshots(), &format!("{test}-1-approval-page")).await;
    assert_eq!(
        p.approval_stage_status(SHA).await,
        StageStatus::Waiting,
        "opening the page decides nothing"
    );

    // She writes a comment and presses Approve.
    b.find("textarea[name=comment]")
        .await
        .send_keys("Checked the basket on staging.")
        .await
        .unwrap();
    b.click("button.approve").await;
    b.wait_for_title("Approved").await;
    let text = b.text().await;
    assert!(
        text.contains(&format!("{} is on its way to production", &SHA[..12])),
        "{text}"
    );
    b.assert_no_problems("the answer page").await;
    b.screenshot(&screenshots(), &format!("{test}-2-approved")).await;

    // The run moves on: production gets the commit, with alice's comment on record.
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
    let history = format!("{:?}", p.run(SHA).await.history);
    assert!(history.contains("Checked the basket on staging."), "{history}");
}

/// A succeeded stage's box, as the browser computes its background (#dafbe1).
const SUCCEEDED_GREEN: &str = "rgba(218, 251, 225, 1)";

async fn a_person_signs_in_by_link_and_reads_the_control_room(b: Browser) {
    let test = "control_room";
    let p = serve(CONFIG).await;
    p.release(SHA).await;
    p.healthy("staging", SHA2);
    p.to_approval(SHA2).await;

    // Anonymous: the sign-in page, and nothing of the runs.
    let home = p.app.link("/");
    b.open(&home).await;
    b.wait_for_title("Sign in").await;
    let text = b.text().await;
    assert!(!text.contains(&SHA[..8]) && !text.contains(&SHA2[..8]), "{text}");
    assert_only_unauthorized(&b).await;
    b.screenshot(&screenshots(), &format!("{test}-0-anonymous")).await;

    // alice opens her sign-in link and presses the button.
    let link =
        slipway::http::auth::sign_in_link(&p.app, &"alice".parse().unwrap(), jiff::SignedDuration::from_hours(1))
            .await
            .unwrap();
    b.open(&link).await;
    b.wait_for_title("Sign in").await;
    assert_styled(&b, "the sign-in link's page", "button.approve", APPROVE_GREEN).await;
    b.screenshot(&screenshots(), &format!("{test}-1-sign-in")).await;
    b.click("button.approve").await;

    // The overview: what runs where, what waits, each run's stages as boxes.
    b.wait_for_title("Pipelines").await;
    assert_styled(&b, "the overview", ".box.succeeded", SUCCEEDED_GREEN).await;
    let text = b.text().await;
    assert!(text.contains("alice (approver)"), "{text}");
    assert!(text.contains(&SHA[..8]) && text.contains(&SHA2[..8]), "{text}");
    assert!(
        text.contains("approved by alice"),
        "production's release says who approved it: {text}"
    );
    b.screenshot(&screenshots(), &format!("{test}-2-pipelines")).await;

    // The approvals waiting, from the bar at the top.
    b.click("nav a[href$='/approvals']").await;
    b.wait_for_title("Approvals").await;
    b.assert_no_problems("the approvals page").await;
    let text = b.text().await;
    assert!(text.contains("0 of 1 approvals"), "{text}");
    assert!(text.contains("Add the basket page"), "what it brings: {text}");
    b.screenshot(&screenshots(), &format!("{test}-3-approvals")).await;

    // The pipeline's history and releases.
    b.open(&p.app.link("/pipelines/shop")).await;
    b.wait_for_title("Pipeline shop").await;
    b.assert_no_problems("the pipeline page").await;
    let text = b.text().await;
    assert!(
        text.contains("Releases") && text.contains("awaiting approval"),
        "{text}"
    );
    b.screenshot(&screenshots(), &format!("{test}-4-pipeline")).await;

    // The delivery figures head it; production's release links to its page.
    assert!(text.contains("Delivery to production"), "{text}");
    b.click("a[href*='/releases/production/']").await;
    b.wait_for_title(&format!("{} to production", &SHA[..12])).await;
    b.assert_no_problems("the release page").await;
    let text = b.text().await;
    assert!(text.contains("What shipped") && text.contains("Approved by"), "{text}");
    b.screenshot(&screenshots(), &format!("{test}-4b-release")).await;

    // alice approves from the approvals page: she lands on the run, which reloads itself
    // while it moves; production then runs the new commit.
    b.open(&p.app.link("/approvals")).await;
    b.wait_for_title("Approvals").await;
    b.click("form button.approve").await;
    b.wait_for_title(&format!("Run {}", &SHA2[..12])).await;
    b.assert_no_problems("the run page after approving").await;
    p.healthy("production", SHA2);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2]);
    b.open(&home).await;
    b.wait_for_title("Pipelines").await;
    let text = b.text().await;
    assert!(text.contains("Nothing waits") || !text.contains("Release "), "{text}");
    b.screenshot(&screenshots(), &format!("{test}-5-released")).await;

    // Production misbehaves: alice rolls it back from its card.
    p.healthy("production", SHA);
    b.click("form[action$='/environments/production/rollback'] button")
        .await;
    b.wait_for_title(&format!("Run {}", &SHA2[..12])).await;
    b.assert_no_problems("the run page after rolling back").await;
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA]);
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);

    // A flaky deploy fails a new commit; alice retries it from the overview.
    const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f90123456789012";
    p.deployer.fail_next("staging", "registry timed out");
    p.healthy("staging", SHA3);
    p.push_after(SHA3, SHA2).await;
    p.ci(SHA3, "success").await;
    p.run_queues().await;
    assert_eq!(p.run(SHA3).await.status(), RunStatus::RolledBack);
    b.open(&home).await;
    b.wait_for_title("Pipelines").await;
    b.screenshot(&screenshots(), &format!("{test}-6-failed")).await;
    b.click("td form button").await;
    b.wait_for_title(&format!("Run {}", &SHA3[..12])).await;
    b.assert_no_problems("the run page after retrying").await;
    p.run_queues().await;
    assert_eq!(p.run(SHA3).await.status(), RunStatus::AwaitingApproval);
    b.open(&p.app.link(&format!("/runs/shop-{SHA3}"))).await;
    b.wait_for_title(&format!("Run {}", &SHA3[..12])).await;
    let text = b.text().await;
    assert!(text.contains("alice asked to retry"), "{text}");
    b.screenshot(&screenshots(), &format!("{test}-7-run-timeline")).await;

    // Signing out ends the session in this browser.
    b.click("nav button").await;
    b.wait_for_title("Sign in").await;
    b.open(&home).await;
    b.wait_for_title("Sign in").await;
    assert_only_unauthorized(&b).await;
}

/// `who` opens a sign-in link and presses its button.
async fn sign_in(b: &Browser, p: &Pipeline, who: &str) {
    let link = slipway::http::auth::sign_in_link(&p.app, &who.parse().unwrap(), jiff::SignedDuration::from_hours(1))
        .await
        .unwrap();
    b.open(&link).await;
    b.wait_for_title("Sign in").await;
    b.click("button.approve").await;
    b.wait_for_title("Pipelines").await;
    b.assert_no_problems("the overview after signing in").await;
}

/// The sign-in page answers 401, which the browser logs; nothing else went wrong.
async fn assert_only_unauthorized(b: &Browser) {
    let problems = b.problems().await;
    assert!(
        problems.iter().all(|p| p.contains("status of 401 (Unauthorized)")),
        "{problems:#?}"
    );
}

/// A pretend CI server on loopback: its build page, and the `Referer` each visit carried.
async fn ci_server() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let referers: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = referers.clone();
    let router = Router::new().route(
        "/builds/42",
        get(move |headers: HeaderMap| async move {
            let referer = headers.get("referer").map(|v| v.to_str().unwrap_or("?").to_owned());
            seen.lock().unwrap().push(referer);
            Html("<!doctype html><link rel=icon href=\"data:,\"><title>Build 42 · CI</title><h1>Build 42</h1><p>All checks passed.</p>")
        }),
    );
    let (listener, base) = browser::listen().await;
    browser::serve(listener, router);
    (format!("{base}/builds/42"), referers)
}

async fn a_script_link_from_a_push_or_ci_never_becomes_a_link_on_the_page(b: Browser) {
    let test = "script_links";
    let p = serve(CONFIG).await;
    let (build_url, referers) = ci_server().await;

    // The push's commit links to a script: the run opens, without the link.
    let mut push: Value = serde_json::from_str(&push_payload("acme/shop", "main", SHA)).unwrap();
    push["head_commit"]["url"] = json!("javascript:alert(document.cookie)");
    let answer = p
        .github("push", "d-js", &serde_json::to_vec(&push).unwrap(), GITHUB_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    // CI first reports a script as its build link (refused), then its real build page.
    let ci = |url: &str| json!({"repo": "acme/shop", "sha": SHA, "status": "success", "build_url": url}).to_string();
    let refused = p.ci_raw(ci("JaVaScRiPt:alert(1)").as_bytes(), CI_SECRET).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let answer = p.ci_raw(ci(&build_url).as_bytes(), CI_SECRET).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    p.run_queues().await;
    let link = p.approval_for("bob").approve_url.unwrap();

    // bob opens his link: every link on the page is http(s), as the browser resolves it.
    b.open(&link).await;
    b.wait_for_title("Promote").await;
    assert_styled(&b, "the approval page", "button.approve", APPROVE_GREEN).await;
    let anchors = b.find_all("a[href]").await;
    let mut hrefs = Vec::new();
    for a in &anchors {
        let resolved = a.prop("href").await.unwrap().unwrap_or_default();
        let scheme = url::Url::parse(&resolved)
            .map(|u| u.scheme().to_owned())
            .unwrap_or_default();
        assert!(
            scheme == "http" || scheme == "https",
            "a link to {resolved:?} on the page"
        );
        hrefs.push(resolved);
    }
    assert!(hrefs.contains(&build_url), "the build link is there: {hrefs:?}");
    let source = b.client.source().await.unwrap();
    assert!(!source.to_lowercase().contains("javascript:"), "{source}");
    let mut linked = Vec::new();
    for code in b.find_all("a code").await {
        linked.push(code.text().await.unwrap());
    }
    assert!(
        !linked.contains(&SHA[..12].to_owned()),
        "the commit is shown as text, not as a link: {linked:?}"
    );
    assert!(b.text().await.contains(&SHA[..12]));
    b.screenshot(&screenshots(), &format!("{test}-1-approval-page")).await;

    // The build link is a real link: clicking it opens the CI's page, and the approval
    // token is not sent along as the Referer.
    b.click(&format!("a[href=\"{build_url}\"]")).await;
    b.wait_for_title("Build 42").await;
    assert_eq!(b.url().await.as_str(), build_url);
    b.assert_no_problems("the CI's build page").await;
    b.screenshot(&screenshots(), &format!("{test}-2-build-page")).await;
    assert_eq!(*referers.lock().unwrap(), [None], "no Referer reaches the CI");
}

/// Three commits of `main`, oldest first (as in git_order.rs).
const ROOT: &str = "0000000000000000000000000000000000000abc";
const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn the_approval_page_of_an_older_commit_points_to_the_newer_run(b: Browser) {
    let test = "newer_commit_notice";
    let p = serve(CONFIG).await;
    // Run pages are for people who signed in: alice did, with her sign-in link.
    sign_in(&b, &p, "alice").await;
    p.healthy("staging", A);
    p.healthy("production", A);
    p.push_after(A, ROOT).await;
    p.ci(A, "success").await;
    p.run_queues().await;
    let link = p.approval_for("alice").approve_url.unwrap();

    // B is deployed to staging; its smoke checks have not run yet, so A's approval stands.
    p.deploy_to_staging_only(B, A).await;
    assert_eq!(p.deployed("staging"), [A, B]);
    assert_eq!(p.approval_stage_status(A).await, StageStatus::Waiting);

    // alice opens A's link: a notice above everything says staging runs a newer commit.
    b.open(&link).await;
    b.wait_for_title("Promote").await;
    assert_styled(&b, "the approval page", "div.warning[role=alert]", WARNING_YELLOW).await;
    let notice = b.find("div.warning[role=alert]").await.text().await.unwrap();
    assert!(
        notice.starts_with(&format!("staging already runs a newer commit: {}", &B[..12])),
        "{notice}"
    );
    assert!(notice.contains("an older commit than staging runs now"), "{notice}");
    b.screenshot(&screenshots(), &format!("{test}-1-approval-page")).await;

    // Its link opens B's run.
    b.click("div.warning a").await;
    b.wait_for_title(&format!("Run {}", &B[..12])).await;
    let url = b.url().await;
    assert!(url.path().ends_with(&format!("/runs/shop-{B}")), "{url}");
    let text = b.text().await;
    assert!(text.contains(&B[..12]), "B's run page: {text}");
    b.assert_no_problems("B's run page").await;
    b.screenshot(&screenshots(), &format!("{test}-2-newer-run")).await;
    assert_eq!(
        p.approval_stage_status(A).await,
        StageStatus::Waiting,
        "nothing changed"
    );
}

async fn an_approver_rolls_production_back_from_the_release_notice(b: Browser) {
    let test = "rollback_link";
    let p = serve(CONFIG).await;
    sign_in(&b, &p, "alice").await;
    p.release(SHA).await;
    p.release(SHA2).await;
    let link = p
        .notifications_of("released")
        .into_iter()
        .find(|n| n.sha == SHA2 && n.approver.as_deref() == Some("alice"))
        .and_then(|n| n.rollback_url)
        .expect("alice's rollback link for the second release");

    // alice opens the link from the release notice: the run page offers the rollback.
    b.open(&link).await;
    b.wait_for_title(&format!("Run {}", &SHA2[..12])).await;
    b.assert_no_problems("the run page").await;
    assert!(b.text().await.contains(&SHA2[..12]));
    b.screenshot(&screenshots(), &format!("{test}-1-run-page")).await;
    let action = b.find("a[href*=\"/rollback/\"]").await;
    assert_eq!(action.text().await.unwrap(), "Roll back production");
    action.click().await.unwrap();

    // The confirmation page names both releases; opening it changed nothing.
    let title = b.wait_for_title("Roll production back to").await;
    assert!(title.contains(&SHA[..12]), "{title}");
    assert_styled(&b, "the rollback confirmation page", "form button.reject", REJECT_RED).await;
    let text = b.text().await;
    assert!(text.contains(&SHA2[..12]) && text.contains(&SHA[..12]), "{text}");
    b.screenshot(&screenshots(), &format!("{test}-2-confirm")).await;
    p.run_queues().await;
    assert_eq!(
        p.deployed("production"),
        [SHA, SHA2],
        "opening the page rolls nothing back"
    );

    // She presses the button: the answer says it is queued, and links the run page.
    p.healthy("production", SHA);
    b.click("form button.reject").await;
    b.wait_for_title("Rollback queued").await;
    b.assert_no_problems("the answer page").await;
    b.screenshot(&screenshots(), &format!("{test}-3-queued")).await;
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA]);
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);

    b.click("a[href*=\"/runs/\"]").await;
    b.wait_for_title(&format!("Run {}", &SHA2[..12])).await;
    assert!(b.url().await.path().ends_with(&format!("/runs/shop-{SHA2}")));
    b.assert_no_problems("the run page after the rollback").await;
    let text = b.text().await;
    assert!(text.contains("alice asked to roll production back"), "{text}");
}

/// The checks above would notice a broken policy: the same approval page, served with a
/// style hash that does not match its stylesheet, reports a violation and shows unstyled
/// buttons.
async fn the_checks_catch_a_page_whose_style_hash_is_wrong(b: Browser) {
    let test = "wrong_style_hash";
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let page = p.get(&p.approval_for("alice").approve_url.unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    let policy = page.headers["content-security-policy"].to_str().unwrap().to_owned();
    let start = policy.find("'sha256-").unwrap() + "'sha256-".len();
    let end = start + policy[start..].find('\'').unwrap();
    let broken = policy.replace(&policy[start..end], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let router = Router::new().route(
        "/approval",
        get(move || async move { ([("content-security-policy", broken)], Html(page.body)).into_response() }),
    );
    let (listener, base) = browser::listen().await;
    browser::serve(listener, router);

    b.open(&format!("{base}/approval")).await;
    b.wait_for_title("Promote").await;
    let problems = b.problems().await;
    assert!(
        problems.iter().any(|p| p.contains("Content Security Policy")),
        "the violation is reported: {problems:#?}"
    );
    let background = b
        .find("button.approve")
        .await
        .css_value("background-color")
        .await
        .unwrap();
    assert_ne!(background, APPROVE_GREEN, "the blocked stylesheet does not apply");
    b.screenshot(&screenshots(), &format!("{test}-1-unstyled")).await;
}

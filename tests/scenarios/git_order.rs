//! Which commit is newer comes from git, not from the order webhooks arrive in: git hosts
//! deliver out of order and retry late, and slipway must never ship an older commit over a
//! newer one because its push came second.

#![allow(clippy::unwrap_used)]

use http::StatusCode;
use jiff::SignedDuration;
use slipway::domain::{RunStatus, StageStatus};
use slipway_tests::{CONFIG, Pipeline};

/// Three commits of `main`, oldest first: A → B → C.
const ROOT: &str = "0000000000000000000000000000000000000abc";
const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

fn deployment() -> String {
    CONFIG.replace("mode = \"delivery\"", "mode = \"deployment\"")
}

/// Both environments answer their smoke checks as running `sha`.
fn healthy(p: &Pipeline, sha: &str) {
    p.healthy("staging", sha);
    p.healthy("production", sha);
}

#[tokio::test(start_paused = true)]
async fn a_push_that_arrives_late_never_puts_its_older_commit_over_a_newer_one() {
    let p = Pipeline::start().await;
    healthy(&p, B);
    // B (pushed on top of A) is delivered first, A's own push second; CI reports B, then A.
    assert_eq!(p.push_after(B, A).await.status, StatusCode::CREATED);
    assert_eq!(p.push_after(A, ROOT).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(B, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    assert_eq!(p.ci(A, "success").await.status, StatusCode::OK);
    p.run_queues().await;

    assert_eq!(p.deployed("staging"), vec![B.to_owned()], "A never goes over B");
    assert_eq!(p.run(A).await.status(), RunStatus::Superseded);
    assert_eq!(p.stage_status(B, "approval:production").await, StageStatus::Waiting);
    assert_eq!(
        p.run(B).await.status(),
        RunStatus::AwaitingApproval,
        "B is not superseded by A"
    );
}

#[tokio::test(start_paused = true)]
async fn git_order_holds_across_pushes_delivered_in_any_order_in_deployment_mode() {
    let p = Pipeline::with_config(&deployment()).await;
    healthy(&p, C);
    // C's push arrives first, then A's, then B's (which links A to C). Each is green at once.
    for (sha, before) in [(C, B), (A, ROOT), (B, A)] {
        assert_eq!(p.push_after(sha, before).await.status, StatusCode::CREATED);
    }
    for sha in [C, A, B] {
        assert_eq!(p.ci(sha, "success").await.status, StatusCode::OK);
        p.run_queues().await;
    }
    assert_eq!(p.deployed("production"), vec![C.to_owned()]);
    assert_eq!(p.deployed("staging"), vec![C.to_owned()]);
    for older in [A, B] {
        assert_eq!(p.run(older).await.status(), RunStatus::Superseded, "{older}");
    }
    assert_eq!(p.run(C).await.status(), RunStatus::Released);
}

#[tokio::test(start_paused = true)]
async fn without_git_facts_arrival_order_decides() {
    let p = Pipeline::with_config(&deployment()).await;
    healthy(&p, A);
    // Two pushes whose `before`s say nothing about each other: the later arrival is newer.
    p.push_after(B, ROOT).await;
    p.advance(SignedDuration::from_secs(5));
    p.push_after(A, ROOT).await;
    p.ci(A, "success").await;
    p.run_queues().await;
    p.ci(B, "success").await;
    p.run_queues().await;
    assert_eq!(p.deployed("production"), vec![A.to_owned()]);
    assert_eq!(p.run(B).await.status(), RunStatus::Superseded);
}

#[tokio::test(start_paused = true)]
async fn the_approval_page_says_when_the_environment_before_runs_a_newer_commit() {
    let p = Pipeline::start().await;
    healthy(&p, A);
    p.push_after(A, ROOT).await;
    p.ci(A, "success").await;
    p.run_queues().await;
    assert_eq!(p.stage_status(A, "approval:production").await, StageStatus::Waiting);
    let link = p.approval_for("alice").approve_url.unwrap();
    let page = p.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("already runs a newer commit"), "{}", page.body);

    // B is deployed to staging; its smoke checks have not run yet, so A's approval stands.
    p.deploy_to_staging_only(B, A).await;
    assert_eq!(p.deployed("staging"), vec![A.to_owned(), B.to_owned()]);
    assert_eq!(p.stage_status(A, "approval:production").await, StageStatus::Waiting);

    let page = p.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("staging already runs a newer commit"),
        "the page says staging is ahead: {}",
        page.body
    );
    assert!(page.body.contains(&format!("/runs/shop-{B}")), "and links B's run");
    assert!(page.body.contains("an older commit than staging runs now"));
}

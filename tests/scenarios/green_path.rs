//! A green commit goes from push to production.

use http::StatusCode;
use jiff::SignedDuration;
use slipway::domain::{RunStatus, StageStatus};
use slipway_tests::{Pipeline, SHA};

#[tokio::test(start_paused = true)]
async fn a_green_commit_reaches_production_after_one_approval() {
    let p = Pipeline::start().await;

    let opened = p.push(SHA).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    assert_eq!(opened.json()["run_id"], format!("shop-{SHA}"));
    assert!(
        p.pending(slipway::ports::QueueName::Deploy).is_empty(),
        "nothing deploys before CI is green"
    );

    assert_eq!(p.ci(SHA, "success").await.status, StatusCode::OK);
    p.run_queues().await;

    // Staging runs the commit, its smoke checks passed, and the approvers were asked.
    assert_eq!(p.deployed("staging"), [SHA]);
    assert!(p.deployed("production").is_empty());
    let run = p.run(SHA).await;
    assert_eq!(run.status(), RunStatus::AwaitingApproval);
    assert_eq!(p.stage_status(SHA, "smoke:staging").await, StageStatus::Succeeded);
    let requests = p.notifications_of("approval_requested");
    let approvers: Vec<_> = requests.iter().filter_map(|n| n.approver.clone()).collect();
    assert_eq!(approvers, ["alice", "bob", "dev"]);

    // Alice opens her link: a confirmation page, nothing changes.
    let link = p.approval_for("alice").approve_url.unwrap();
    let page = p.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Add the basket page"), "{}", page.body);
    assert_eq!(p.approval_stage_status(SHA).await, StageStatus::Waiting);

    p.advance(SignedDuration::from_mins(5));
    let decided = p.post_decision(&link, "approve").await;
    assert_eq!(decided.status, StatusCode::OK, "{}", decided.body);
    p.run_queues().await;

    assert_eq!(p.deployed("production"), [SHA]);
    let run = p.run(SHA).await;
    assert_eq!(run.status(), RunStatus::Released);
    // Each approver hears of the release with their own signed rollback link.
    let released = p.notifications_of("released");
    let to: Vec<_> = released.iter().filter_map(|n| n.approver.as_deref()).collect();
    assert_eq!(to, ["alice", "bob", "dev"]);
    for n in &released {
        assert_eq!(n.environment.as_deref(), Some("production"));
        assert!(
            n.rollback_url.as_deref().is_some_and(|u| u.contains("?token=")),
            "{n:?}"
        );
    }

    // The deploy got the environment's secret from the store, and the artifact CI built.
    let prod = &p.deployer.deploys_to("production")[0];
    assert_eq!(
        prod.secrets,
        [("DATABASE_URL".to_owned(), "postgres://prod-secret@db/shop".to_owned())]
    );
    assert_eq!(
        prod.artifact.as_deref(),
        Some(format!("registry.example.com/shop@sha256:{SHA}").as_str())
    );

    // The history tells the story, with who did what.
    let story: Vec<String> = run.history.iter().map(|h| format!("{}: {}", h.actor, h.what)).collect();
    insta::assert_yaml_snapshot!(story);
}

#[tokio::test(start_paused = true)]
async fn continuous_deployment_releases_without_anyone_clicking() {
    let p = Pipeline::with_config(&slipway_tests::CONFIG.replace("mode = \"delivery\"", "mode = \"deployment\"")).await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    assert_eq!(p.deployed("production"), [SHA]);
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
    assert!(p.notifications_of("approval_requested").is_empty());
    assert_eq!(p.notifications_of("released").len(), 3, "one per approver");
}

#[tokio::test(start_paused = true)]
async fn smoke_checks_wait_for_a_slow_environment_to_come_up() {
    let p = Pipeline::start().await;
    // Staging answers 503 once, then healthy: the check retries and passes.
    p.checker.reset(slipway_tests::STAGING_HEALTH);
    p.checker.answer(slipway_tests::STAGING_HEALTH, 503, "starting");
    p.checker.answer(
        slipway_tests::STAGING_HEALTH,
        200,
        &serde_json::json!({"version": SHA, "database": "ok"}).to_string(),
    );
    p.to_approval(SHA).await;
    let run = p.run(SHA).await;
    let smoke = run.stages.iter().find(|s| s.label() == "smoke:staging").unwrap();
    assert_eq!(smoke.checks[0].attempts, 2);
    assert!(smoke.checks[0].passed);
}

#[tokio::test(start_paused = true)]
async fn the_run_is_visible_through_the_api_and_the_run_page() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let list = p.read("https://slipway.example.com/api/runs").await;
    assert_eq!(list.status, StatusCode::OK);
    let runs = list.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "awaiting_approval");
    assert_eq!(runs[0]["current_stage"], "approval:production");

    let detail = p
        .read(&format!("https://slipway.example.com/api/runs/shop-{SHA}"))
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    let text = detail.body;
    assert!(
        !text.contains("approval-signing-key") && !text.contains("v1."),
        "no tokens or keys in the API"
    );
    assert!(
        !text.contains("prod-secret") && !text.contains("staging-secret"),
        "no secrets in the API"
    );

    let page = p.read(&format!("https://slipway.example.com/runs/shop-{SHA}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("approval:production"));

    assert_eq!(
        p.read("https://slipway.example.com/api/runs/nope").await.status,
        StatusCode::BAD_REQUEST
    );
    let missing = p
        .read(&format!("https://slipway.example.com/api/runs/shop-{}", "f".repeat(40)))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        p.read("https://slipway.example.com/api/runs?repo=acme/other")
            .await
            .json()["runs"],
        serde_json::json!([])
    );
    assert_eq!(
        p.get("https://slipway.example.com/healthz").await.status,
        StatusCode::OK
    );
}

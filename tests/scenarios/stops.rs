//! Runs that stop: a red build, a build CI never reports on, a failing deploy, a failing
//! smoke check.

use http::StatusCode;
use jiff::SignedDuration;
use slipway::domain::{RunStatus, StageStatus};
use slipway::ports::{StateStore as _, StoreKey};
use slipway_tests::{CONFIG, Pipeline, SHA};

#[tokio::test(start_paused = true)]
async fn a_red_build_stops_the_run_and_raises_a_red_main_alert() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    let answer = p.ci(SHA, "failure").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["status"], "failed");
    p.run_queues().await;

    assert!(p.deployer.deploys().is_empty(), "a red build deploys nothing");
    assert_eq!(p.run(SHA).await.status(), RunStatus::Failed);
    let alerts = p.notifications_of("failed");
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].alert, "a red main is an alert");
    assert_eq!(alerts[0].stage.as_deref(), Some("build"));
    assert!(alerts[0].title.contains("main is red"), "{}", alerts[0].title);
}

#[tokio::test(start_paused = true)]
async fn a_ci_rerun_that_goes_green_resumes_the_run() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "failure").await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn a_build_ci_never_reports_on_fails_after_a_day_and_the_team_is_told() {
    let p = Pipeline::start().await;
    p.push(SHA).await;

    // CI never reports. A day is the default build timeout; until it is up, the sweep
    // leaves the run waiting.
    p.advance(SignedDuration::from_hours(23));
    let swept = slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(swept.builds_timed_out, 0, "not due yet");
    assert_eq!(p.stage_status(SHA, "build").await, StageStatus::Waiting);
    p.advance(SignedDuration::from_hours(1));
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().builds_timed_out, 1);
    assert_eq!(
        slipway::sweep::run_once(&p.app).await.unwrap().builds_timed_out,
        0,
        "once"
    );
    p.run_queues().await;

    let run = p.run(SHA).await;
    assert_eq!(run.status(), RunStatus::Failed);
    let failed = p.notifications_of("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].stage.as_deref(), Some("build"));
    assert_eq!(
        failed[0].text,
        "CI never reported within 24h (the pipeline's build_timeout); if its builds take longer, raise build_timeout in the pipeline's configuration"
    );
    assert!(!failed[0].alert, "a silent CI is not a red main");
    // Finished, so the sweep no longer reads it: its marker in the index of open runs is gone.
    assert!(p.store.get(&StoreKey::open_run(&run.id)).await.unwrap().is_none());

    // CI reports at last: too late, and the answer says why and what to do.
    let late = p.ci(SHA, "success").await;
    assert_eq!(late.status, StatusCode::OK);
    let ignored = late.json()["ignored"].as_str().unwrap_or_default().to_owned();
    assert!(
        ignored.starts_with(
            "CI reported after the build's deadline 2026-11-22T09:00:00Z (this pipeline's build_timeout is 24h)"
        ),
        "{ignored}"
    );
    assert!(ignored.contains("raise build_timeout"), "{ignored}");
    p.run_queues().await;
    assert!(
        p.deployer.deploys().is_empty(),
        "a build that timed out deploys nothing"
    );
    assert_eq!(p.run(SHA).await.status(), RunStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_sets_how_long_ci_may_take_and_a_run_keeps_the_timeout_it_opened_with() {
    let two_hours = CONFIG.replacen(
        "approval_expiry = \"24h\"",
        "approval_expiry = \"24h\"\nbuild_timeout = \"2h\"",
        1,
    );
    let p = Pipeline::with_config(&two_hours).await;
    p.push(SHA).await;
    p.advance(SignedDuration::from_mins(119));
    p.ci(SHA, "success").await;
    p.run_queues().await;
    assert_eq!(
        p.stage_status(SHA, "deploy:staging").await,
        StageStatus::Succeeded,
        "a result within the timeout counts"
    );

    // The timeout is fixed when the run opens: a configuration with a day (the default)
    // does not stretch a run opened under two hours.
    let later = slipway_tests::SHA2;
    p.push_after(later, SHA).await;
    let a_day = Pipeline::with_config(CONFIG).await;
    let app = slipway::app::App {
        config: a_day.app.config.clone(),
        ..p.app.clone()
    };
    p.advance(SignedDuration::from_hours(2));
    assert_eq!(slipway::sweep::run_once(&app).await.unwrap().builds_timed_out, 1);
    slipway::worker::drain(&app, 50).await.unwrap();
    assert_eq!(p.run(later).await.status(), RunStatus::Failed);
    let failed = p.notifications_of("failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].text.starts_with("CI never reported within 2h"),
        "{}",
        failed[0].text
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_staging_deploy_stops_the_run_and_says_why() {
    let p = Pipeline::start().await;
    p.deployer.fail_next("staging", "exited with status 3");
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;

    let run = p.run(SHA).await;
    // The deploy took a backup before it failed, so staging is put back: the backup restored.
    assert_eq!(run.status(), RunStatus::RolledBack);
    assert_eq!(
        p.deployer.phases_of("staging"),
        ["backup", "migrate", "release", "restore"]
    );
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Failed);
    assert_eq!(p.stage_status(SHA, "approval:production").await, StageStatus::Skipped);
    let failed = p.notifications_of("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].stage.as_deref(), Some("deploy:staging"));
    assert_eq!(failed[0].text, "exited with status 3 in release");
    assert!(!failed[0].alert);
    assert_eq!(
        p.deployer.deploys().len(),
        1,
        "a failed deploy is not retried by itself"
    );
}

#[tokio::test(start_paused = true)]
async fn failing_staging_smoke_checks_stop_the_run_before_anyone_is_asked() {
    let p = Pipeline::start().await;
    p.broken("staging");
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;

    assert_eq!(p.deployed("staging"), [SHA]);
    assert!(p.deployed("production").is_empty());
    assert_eq!(p.stage_status(SHA, "smoke:staging").await, StageStatus::Failed);
    assert!(
        p.notifications_of("approval_requested").is_empty(),
        "nobody is asked to approve a broken staging"
    );
    let failed = p.notifications_of("failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].text.contains("expected status 200, got 503"),
        "{}",
        failed[0].text
    );
    let run = p.run(SHA).await;
    let smoke = run.stages.iter().find(|s| s.label() == "smoke:staging").unwrap();
    assert!(smoke.checks[0].attempts > 1, "the check was retried before giving up");
}

#[tokio::test(start_paused = true)]
async fn a_smoke_check_that_sees_the_old_version_fails() {
    let p = Pipeline::start().await;
    p.healthy("staging", &"0".repeat(40)); // staging still runs something else
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    assert_eq!(p.stage_status(SHA, "smoke:staging").await, StageStatus::Failed);
}

#[tokio::test(start_paused = true)]
async fn failing_production_smoke_checks_fail_the_run_and_notify() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    p.broken("production");
    let link = p.approval_for("alice").approve_url.unwrap();
    p.post_decision(&link, "approve").await;
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
    // Nothing ran in production before; the deploy's backup is restored.
    assert_eq!(p.run(SHA).await.status(), RunStatus::RolledBack);
    assert_eq!(p.notifications_of("rolled_back").len(), 1);
    assert_eq!(
        p.notifications_of("failed")[0].stage.as_deref(),
        Some("smoke:production")
    );
    assert!(p.notifications_of("released").is_empty());
}

//! The embedded backend: one SQLite file holds state and queues, so a restart of
//! `slipway serve` loses nothing.

use std::sync::Arc;

use http::StatusCode;
use slipway::adapters::local::sqlite::SqliteBackend;
use slipway::app::App;
use slipway::ports::QueueName;
use slipway_tests::{Pipeline, SHA};

/// The harness's slipway, but with state and queues in the SQLite file at `path`.
fn on_sqlite(p: &Pipeline, path: &std::path::Path) -> App {
    let db = SqliteBackend::open(path).expect("database opens");
    App {
        queue: Arc::new(db.clone()),
        ..p.app.over_store(Arc::new(db))
    }
}

#[tokio::test]
async fn queued_work_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slipway.db");
    let p = Pipeline::start().await;

    // Before the restart: the push and the green build are accepted; the deploy is queued.
    {
        let before = on_sqlite(&p, &path);
        let router = slipway::http::router(before.clone());
        let push = http::Request::post("/hooks/github")
            .header("x-github-event", "push")
            .header(
                "x-hub-signature-256",
                slipway::signature::sign(
                    slipway_tests::GITHUB_SECRET.as_bytes(),
                    slipway_tests::push_payload("acme/shop", "main", SHA).as_bytes(),
                ),
            )
            .body(axum::body::Body::from(slipway_tests::push_payload(
                "acme/shop",
                "main",
                SHA,
            )))
            .unwrap();
        use tower::ServiceExt;
        assert_eq!(
            router.clone().oneshot(push).await.unwrap().status(),
            StatusCode::CREATED
        );
        let ci = serde_json::json!({"repo": "acme/shop", "sha": SHA, "status": "success"}).to_string();
        let ci = http::Request::post("/hooks/ci")
            .header(
                "x-slipway-signature",
                slipway::signature::sign(slipway_tests::CI_SECRET.as_bytes(), ci.as_bytes()),
            )
            .body(axum::body::Body::from(ci))
            .unwrap();
        assert_eq!(router.oneshot(ci).await.unwrap().status(), StatusCode::OK);
        assert!(p.deployed("staging").is_empty(), "stopped before any worker ran");
    } // slipway stops: every handle to the database is dropped.

    // After the restart, from the file alone: the queued deploy runs and the run goes on.
    let after = on_sqlite(&p, &path);
    let run = after.list_runs(None).await.unwrap();
    assert_eq!(run.len(), 1, "the run is still there");
    slipway::worker::drain(&after, 50).await.unwrap();
    assert_eq!(p.deployed("staging"), [SHA]);
    let (run, _) = after.load(&run[0].id).await.unwrap().unwrap();
    assert_eq!(run.status(), slipway::domain::RunStatus::AwaitingApproval);
    assert_eq!(p.notifications_of("approval_requested").len(), 3);
    assert!(
        after
            .queue
            .receive(QueueName::Deploy, 10, std::time::Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_deploy_longer_than_the_visibility_timeout_is_not_handed_to_a_second_worker() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::start().await;
    let mut app = on_sqlite(&p, &dir.path().join("slipway.db"));
    app.tuning.visibility = std::time::Duration::from_millis(300);
    p.deployer.take(std::time::Duration::from_millis(1200));
    let id = slipway::domain::RunId::new(&"shop".parse().unwrap(), &SHA.parse().unwrap());
    let new = slipway::domain::NewRun {
        pipeline: "shop".parse().unwrap(),
        repo: "acme/shop".parse().unwrap(),
        branch: "main".parse().unwrap(),
        sha: SHA.parse().unwrap(),
        commit: p.run_commit(),
        plan: app.config.pipelines[0].plan(),
        parents: Vec::new(),
        carried: Default::default(),
    };
    app.open_run(new).await.unwrap();
    let green = slipway::domain::Event::BuildFinished {
        status: slipway::domain::BuildStatus::Success,
        build: Default::default(),
    };
    app.apply(&id, || app.input(slipway::domain::Actor::Ci, green.clone()))
        .await
        .unwrap();

    let worker = {
        let app = app.clone();
        tokio::spawn(async move { slipway::worker::poll(&app, QueueName::Deploy, 1).await })
    };
    // Well past the visibility timeout, while the first worker is still deploying:
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let stolen = app
        .queue
        .receive(QueueName::Deploy, 10, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert!(stolen.is_empty(), "the message stayed hidden while its deploy ran");
    assert_eq!(worker.await.unwrap().unwrap(), 1);
    assert_eq!(p.deployed("staging"), [SHA]);
    assert!(
        app.queue
            .receive(QueueName::Deploy, 10, std::time::Duration::from_secs(5))
            .await
            .unwrap()
            .is_empty(),
        "acked"
    );
}

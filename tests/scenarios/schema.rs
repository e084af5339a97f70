//! The embedded backend's SQLite schema across versions of slipway: a data directory written
//! by an earlier slipway opens, upgrades and keeps its runs and its queue; a fresh one is
//! created at the latest version; one written by a newer slipway is refused and left as it was.
//!
//! `tests/fixtures/schema-v1/slipway.db` was written by slipway at commit 36e8cf6, the last
//! before schema migrations (its schema is migration 1, `PRAGMA user_version` = 1), with
//! [`write_the_schema_v1_fixture`]: a push and a green build of [`SHA`], whose deploy to
//! staging is still queued, and a push of [`WAITING`], still waiting for CI.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use slipway::adapters::local::sqlite::{SCHEMA_VERSION, SqliteBackend, SqliteError};
use slipway::app::App;
use slipway::domain::RunStatus;
use slipway::ports::QueueName;
use slipway_tests::{Pipeline, SHA};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/schema-v1/slipway.db");

/// The fixture's second run, pushed and still waiting for CI.
const WAITING: &str = "3333333333333333333333333333333333333333";

/// The harness's slipway, with state and queues in the SQLite file at `path`.
fn on_sqlite(p: &Pipeline, path: &Path) -> Result<App, SqliteError> {
    let db = SqliteBackend::open(path)?;
    Ok(App {
        queue: Arc::new(db.clone()),
        ..p.app.over_store(Arc::new(db))
    })
}

/// The `user_version` of the file at `path`, read without slipway.
fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

/// A copy of the fixture in a temporary directory, so the test never changes it.
fn copy_of_the_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slipway.db");
    std::fs::copy(FIXTURE, &path).unwrap();
    (dir, path)
}

/// Writes the fixture: `SLIPWAY_FIXTURE_OUT=/abs/path/slipway.db cargo test -p slipway-tests
/// --test scenarios schema::write_the_schema_v1_fixture -- --ignored`. Run at commit 36e8cf6
/// to make the committed file; kept to show what it holds.
#[tokio::test]
#[ignore = "writes the fixture; run by hand"]
async fn write_the_schema_v1_fixture() {
    let out = std::env::var("SLIPWAY_FIXTURE_OUT").expect("SLIPWAY_FIXTURE_OUT names the file to write");
    let _ = std::fs::remove_file(&out);
    let mut p = Pipeline::start().await;
    p.app = on_sqlite(&p, Path::new(&out)).unwrap();
    p.router = slipway::http::router(p.app.clone());
    assert_eq!(p.push(SHA).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA, "success").await.status, StatusCode::OK);
    assert_eq!(
        p.push_to("main", WAITING, "delivery-2").await.status,
        StatusCode::CREATED
    );
    assert!(
        p.deployed("staging").is_empty(),
        "no worker ran: the deploy stays queued"
    );
    // Dropping every handle closes the file and folds the WAL into it.
    drop(p);
}

#[tokio::test]
async fn a_database_from_schema_version_1_opens_upgraded_and_its_queue_delivers() {
    let (_dir, path) = copy_of_the_fixture();
    assert_eq!(user_version(&path), 1, "the fixture is a version-1 database");
    let p = Pipeline::start().await;
    let app = on_sqlite(&p, &path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION, "upgraded to the latest schema");

    // The runs are still there…
    let mut runs: Vec<_> = app
        .list_runs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|run| (run.sha.to_string(), run.status()))
        .collect();
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        runs,
        [
            (WAITING.to_owned(), RunStatus::InProgress),
            (SHA.to_owned(), RunStatus::InProgress)
        ]
    );
    // …and the deploy queued before the upgrade is delivered and carried out.
    slipway::worker::drain(&app, 50).await.unwrap();
    assert_eq!(p.deployed("staging"), [SHA]);
    let run = app.list_runs(None).await.unwrap();
    let released = run.iter().find(|r| r.sha.to_string() == SHA).unwrap();
    assert_eq!(released.status(), RunStatus::AwaitingApproval);
    assert!(
        !p.notifications_of("approval_requested").is_empty(),
        "the approval was asked for"
    );
    for queue in QueueName::ALL {
        assert!(
            app.queue
                .receive(queue, 10, Duration::from_secs(1))
                .await
                .unwrap()
                .is_empty(),
            "{queue:?} is drained"
        );
    }

    // Opened again: nothing left to upgrade, nothing lost.
    drop(app);
    let again = on_sqlite(&p, &path).unwrap();
    assert_eq!(again.list_runs(None).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_fresh_database_is_created_at_the_latest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("slipway.db");
    let p = Pipeline::start().await;
    let app = on_sqlite(&p, &path).unwrap();
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert!(app.list_runs(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_database_from_a_newer_slipway_is_refused_and_left_as_it_was() {
    let (_dir, path) = copy_of_the_fixture();
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let before = std::fs::read(&path).unwrap();

    let p = Pipeline::start().await;
    let err = on_sqlite(&p, &path).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SqliteError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    assert!(message.contains("slipway.db"), "names the file: {message}");
    assert!(message.contains("newer"), "{message}");
    assert!(message.contains("upgrade slipway"), "says what to do: {message}");

    assert_eq!(std::fs::read(&path).unwrap(), before, "the file is not touched");
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
}

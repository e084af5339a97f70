//! An install whose history was written before the read model existed: its runs are indexed
//! once — on the embedded backend and on S3 — and pages list them after every run opened
//! since, newest first.
//!
//! `tests/fixtures/before-read-model/slipway.db` is a data directory written by slipway as it
//! was before the index of runs (commit 855f483): `slipway demo --keep` released one commit,
//! then `slipway serve` took two more pushes — one whose build failed, one still waiting for
//! CI. The S3 test loads the same objects into a moto bucket.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use jiff::Timestamp;
use slipway::adapters::aws::s3::S3Store;
use slipway::adapters::local::sqlite::SqliteBackend;
use slipway::app::Tuning;
use slipway::domain::{PipelineName, RunStatus};
use slipway::ports::{StateStore, StoreKey};
use slipway::views::{Cursor, run_index};
use slipway_tests::counting::CountingProxy;
use slipway_tests::moto::{Moto, sdk_for};
use slipway_tests::{Pipeline, SHA};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/before-read-model/slipway.db");

/// The fixture's runs, newest first: waiting for CI, failed, released.
const LEGACY: [(&str, RunStatus); 3] = [
    ("2222222222222222222222222222222222222222", RunStatus::InProgress),
    ("1111111111111111111111111111111111111111", RunStatus::Failed),
    ("0f65bb4dad02bdd63311162976583de7ea5c5d94", RunStatus::Released),
];

fn shop() -> PipelineName {
    PipelineName::parse("shop").unwrap()
}

/// A copy of the fixture, so the test never changes it.
fn data_dir() -> (tempfile::TempDir, SqliteBackend) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("slipway.db");
    std::fs::copy(FIXTURE, &db).unwrap();
    let backend = SqliteBackend::open(&db).unwrap();
    (dir, backend)
}

/// slipway as it is now, over `store`: a push after the upgrade, then the first sweep.
async fn upgrade(store: Arc<dyn StateStore>) -> Pipeline {
    let mut p = Pipeline::start().await;
    p.app = p.app.over_store(store.clone());
    p.router = slipway::http::router(p.app.clone());
    // Pushed after the upgrade, before the first sweep: it gets a place of its own.
    assert_eq!(p.push(SHA).await.status, http::StatusCode::CREATED);
    slipway::sweep::run_once(&p.app)
        .await
        .expect("the first sweep after the upgrade");
    p
}

async fn every_run(store: &dyn StateStore) -> Vec<(String, RunStatus)> {
    let mut seen = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let (entries, next) = run_index::newest(store, &[shop()], None, &cursor, 2).await.unwrap();
        seen.extend(entries.into_iter().map(|e| (e.sha.to_string(), e.status)));
        match next {
            Some(next) => cursor = next,
            None => return seen,
        }
    }
}

fn expected() -> Vec<(String, RunStatus)> {
    let mut all = vec![(SHA.to_owned(), RunStatus::InProgress)];
    all.extend(LEGACY.iter().map(|(sha, status)| ((*sha).to_owned(), *status)));
    all
}

#[tokio::test]
async fn a_data_directory_from_before_the_read_model_is_indexed_once() {
    let (_dir, db) = data_dir();
    let store: Arc<dyn StateStore> = Arc::new(db.clone());
    assert!(store.get(&StoreKey::views_indexed()).await.unwrap().is_none());
    let p = upgrade(store.clone()).await;
    assert!(store.get(&StoreKey::views_indexed()).await.unwrap().is_some());
    assert_eq!(every_run(store.as_ref()).await, expected());
    // Done once: a second backfill finds nothing to do.
    assert!(
        !run_index::backfill(store.as_ref(), &Tuning::default(), Timestamp::now())
            .await
            .unwrap()
    );
    // The API lists them too.
    let page = p.read("https://slipway.example.com/api/runs?limit=10").await.json();
    let shas: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sha"].as_str().unwrap())
        .collect();
    assert_eq!(shas, [SHA, LEGACY[0].0, LEGACY[1].0, LEGACY[2].0]);
    // The legacy run still waiting for CI finishes, and its entry follows when the sweep drops
    // it from the index of unfinished runs.
    assert_eq!(p.ci(LEGACY[0].0, "failure").await.status, http::StatusCode::OK);
    slipway::sweep::run_once(&p.app).await.unwrap();
    let runs = every_run(store.as_ref()).await;
    assert_eq!(runs[1], (LEGACY[0].0.to_owned(), RunStatus::Failed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_from_before_the_read_model_is_indexed_once_and_pages_stay_cheap() {
    let moto = Moto::start().await;
    moto.create_bucket("slipway-state").await;
    let proxy = CountingProxy::start(&moto.endpoint()).await;
    let s3 = S3Store::new(
        slipway::adapters::aws::s3_client(&sdk_for(&proxy.endpoint()).await),
        "slipway-state",
    );
    // The bucket as that slipway left it: the same objects as the data directory.
    let (_dir, db) = data_dir();
    for key in db.list("").await.unwrap() {
        let object = db.get(&key).await.unwrap().unwrap();
        s3.create(&key, object.value).await.unwrap();
    }
    let store: Arc<dyn StateStore> = Arc::new(s3);
    let p = upgrade(store.clone()).await;
    assert_eq!(every_run(store.as_ref()).await, expected());

    proxy.take();
    let page = p.read("https://slipway.example.com/api/runs?limit=2").await;
    assert_eq!(page.status, http::StatusCode::OK, "{}", page.body);
    let requests = proxy.take();
    // The pipeline's record, the chunk of the legacy runs, and the two runs shown, both
    // unfinished (read for their current status).
    assert_eq!(requests.total(), 4, "{requests}");
}

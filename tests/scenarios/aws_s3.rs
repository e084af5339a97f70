//! The S3 state store against a real S3 API (moto): conditional writes refuse to overwrite,
//! stale versions conflict, and concurrent writers are detected, never lost — also through
//! the engine.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use slipway::adapters::aws::s3::S3Store;
use slipway::app::{App, Applied};
use slipway::domain::{Actor, BuildInfo, BuildStatus, Event, NewRun, RunId, StageKind, StageStatus};
use slipway::ports::{QueueName, StateStore, StoreError, StoreKey, Version};
use slipway_tests::moto::Moto;
use slipway_tests::{Pipeline, SHA};

const BUCKET: &str = "slipway-state";

async fn store(moto: &Moto) -> S3Store {
    moto.create_bucket(BUCKET).await;
    S3Store::new(moto.s3().await, BUCKET)
}

fn key(raw: &str) -> StoreKey {
    StoreKey::from_listed(raw).expect("a known prefix")
}

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("JSON serialises"))
}

#[tokio::test]
async fn create_never_overwrites_and_get_of_nothing_is_none() {
    let moto = Moto::start().await;
    let s3 = store(&moto).await;
    let k = key("runs/shop-1.json");

    assert!(s3.get(&k).await.unwrap().is_none(), "nothing there yet");

    let v1 = s3.create(&k, Bytes::from_static(b"{\"who\":\"first\"}")).await.unwrap();
    let err = s3
        .create(&k, Bytes::from_static(b"{\"who\":\"second\"}"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists(found) if *found == k),
        "{err:?}"
    );

    let stored = s3.get(&k).await.unwrap().expect("created");
    assert_eq!(stored.value, Bytes::from_static(b"{\"who\":\"first\"}"), "unchanged");
    assert_eq!(stored.version, v1, "the version is the ETag create returned");

    // Objects are written as JSON.
    let head = moto
        .s3()
        .await
        .head_object()
        .bucket(BUCKET)
        .key(k.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
}

#[tokio::test]
async fn replace_with_a_stale_version_conflicts_and_changes_nothing() {
    let moto = Moto::start().await;
    let s3 = store(&moto).await;
    let k = key("runs/shop-2.json");
    let v1 = s3.create(&k, Bytes::from_static(b"{\"n\":1}")).await.unwrap();
    let v2 = s3.replace(&k, Bytes::from_static(b"{\"n\":2}"), &v1).await.unwrap();
    assert_ne!(v1, v2);

    // A writer still holding v1 lost the race.
    let err = s3
        .replace(&k, Bytes::from_static(b"{\"n\":99}"), &v1)
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(found) if *found == k), "{err:?}");
    let stored = s3.get(&k).await.unwrap().unwrap();
    assert_eq!(stored.value, Bytes::from_static(b"{\"n\":2}"));
    assert_eq!(stored.version, v2);

    // A version S3 never issued, and an object that is not there, conflict too.
    let made_up = Version("\"0123456789abcdef0123456789abcdef\"".into());
    let err = s3.replace(&k, Bytes::from_static(b"{}"), &made_up).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let missing = key("runs/shop-missing.json");
    let err = s3.replace(&missing, Bytes::from_static(b"{}"), &v2).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(s3.get(&missing).await.unwrap().is_none(), "replace never creates");
}

#[tokio::test]
async fn list_returns_the_keys_under_a_prefix_in_order() {
    let moto = Moto::start().await;
    let s3 = store(&moto).await;
    for raw in ["runs/b.json", "runs/a.json", "notices/n1.3/0", "notices/n1.3/1"] {
        s3.create(&key(raw), Bytes::from_static(b"{}")).await.unwrap();
    }
    // Something slipway did not write, outside its prefixes.
    moto.s3()
        .await
        .put_object()
        .bucket(BUCKET)
        .key("config/slipway.toml")
        .body(Bytes::from_static(b"x").into())
        .send()
        .await
        .unwrap();

    let runs = s3.list(StoreKey::RUNS).await.unwrap();
    assert_eq!(runs, [key("runs/a.json"), key("runs/b.json")]);
    let notices = s3.list("notices/").await.unwrap();
    assert_eq!(notices, [key("notices/n1.3/0"), key("notices/n1.3/1")]);
    let everything = s3.list("").await.unwrap();
    assert_eq!(
        everything.len(),
        4,
        "the config object is not a store key: {everything:?}"
    );
    assert!(s3.list("runs/c").await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_deletes_the_object_and_a_missing_key_is_fine() {
    let moto = Moto::start().await;
    let s3 = store(&moto).await;
    let k = key("open-runs/shop-1");
    s3.create(&k, Bytes::from_static(b"{}")).await.unwrap();
    s3.remove(&k).await.unwrap();
    assert!(s3.get(&k).await.unwrap().is_none());
    assert!(s3.list(StoreKey::OPEN_RUNS).await.unwrap().is_empty());
    s3.remove(&k).await.expect("removing what is not there succeeds");
    s3.create(&k, Bytes::from_static(b"{}"))
        .await
        .expect("and it can be made again");
}

/// One writer's successful write: after how many attempts, and which version it replaced.
#[derive(Debug)]
struct Won {
    writer: usize,
    attempts: u32,
    replaced: Version,
}

/// Read, add one, write back if unchanged; on a conflict, back off (jittered, bounded) and
/// start over. Each writer also signs the object, so no two writers ever write the same bytes.
async fn increment(s3: &S3Store, k: &StoreKey, writer: usize) -> Won {
    let mut backoff = Duration::from_millis(5);
    for attempt in 1..=400 {
        let current = s3.get(k).await.expect("the store answers").expect("the counter exists");
        let mut value: Value = serde_json::from_slice(&current.value).expect("the counter is JSON");
        let n = value["n"].as_u64().expect("a count");
        value["n"] = json!(n + 1);
        value["writers"]
            .as_array_mut()
            .expect("a list of writers")
            .push(json!(writer));
        match s3.replace(k, json_bytes(&value), &current.version).await {
            Ok(_) => {
                return Won {
                    writer,
                    attempts: attempt,
                    replaced: current.version,
                };
            }
            Err(StoreError::Conflict(_)) => {
                let jitter = RandomState::new().hash_one((writer, attempt)) % 1000;
                tokio::time::sleep(backoff.mul_f64(0.5 + jitter as f64 / 1000.0)).await;
                backoff = (backoff * 2).min(Duration::from_millis(80));
            }
            Err(e) => panic!("writer {writer}: replace failed: {e:?}"),
        }
    }
    panic!("writer {writer} never won a write in 400 attempts");
}

/// S3 makes `If-Match` writes atomic. moto 5.2's threaded server does not: it compares the
/// ETag, then stores, without a lock (`moto/s3/responses.py`, `put_object`), so two writers
/// holding the same version can both get 200 on a loaded machine — reported here as
/// "conditional writes that should have failed succeeded", naming the version and writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_updates_of_one_run_none_lost() {
    // Serialized: moto's threaded server does not make conditional PUTs atomic; S3 does.
    let moto = Moto::start_serialized().await;
    let s3 = Arc::new(store(&moto).await);
    let k = key("runs/shop-counter.json");
    s3.create(&k, json_bytes(&json!({"n": 0, "writers": []})))
        .await
        .unwrap();

    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|writer| {
            let (s3, k) = (Arc::clone(&s3), k.clone());
            tokio::spawn(async move { increment(&s3, &k, writer).await })
        })
        .collect();
    let mut won = Vec::new();
    for task in tasks {
        won.push(task.await.unwrap());
    }
    let attempts: Vec<u32> = won.iter().map(|w| w.attempts).collect();

    // Each version was replaced at most once: two writers that both succeeded against the
    // same version mean the store accepted a write it should have refused.
    let mut by_version: std::collections::HashMap<&Version, Vec<usize>> = std::collections::HashMap::new();
    for w in &won {
        by_version.entry(&w.replaced).or_default().push(w.writer);
    }
    let doubled: Vec<_> = by_version.iter().filter(|(_, writers)| writers.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "conditional writes that should have failed succeeded: {doubled:?} ({:?})",
        started.elapsed()
    );

    let stored = s3.get(&k).await.unwrap().unwrap();
    let value: Value = serde_json::from_slice(&stored.value).unwrap();
    let writers: HashSet<u64> = value["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(
        value["writers"].as_array().unwrap().len(),
        writers.len(),
        "a writer counted twice: {value}"
    );
    assert_eq!(writers, (0..50).collect(), "every writer's update is there");
    assert_eq!(
        value["n"],
        50,
        "no update lost ({:?}, {attempts:?} attempts)",
        started.elapsed()
    );
    assert!(
        attempts.iter().any(|&a| a > 1),
        "the writers really raced: {attempts:?}"
    );
}

/// The scenario harness's slipway, with its state in S3.
fn on_s3(p: &Pipeline, s3: S3Store) -> App {
    p.app.over_store(Arc::new(s3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn the_engine_under_twenty_concurrent_ci_reports_leaves_one_consistent_run() {
    // Serialized: moto's threaded server does not make conditional PUTs atomic; S3 does.
    let moto = Moto::start_serialized().await;
    let p = Pipeline::start().await;
    let app = on_s3(&p, store(&moto).await);
    let id = RunId::new(&"shop".parse().unwrap(), &SHA.parse().unwrap());
    let new = NewRun {
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
    let queued_before: usize = QueueName::ALL.iter().map(|&q| p.pending(q).len()).sum();

    // CI reports twenty times at once: duplicated deliveries of green, and red reports.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            let id = id.clone();
            let status = if i % 2 == 0 {
                BuildStatus::Success
            } else {
                BuildStatus::Failure
            };
            tokio::spawn(async move {
                let event = Event::BuildFinished {
                    status,
                    build: BuildInfo::default(),
                };
                app.apply(&id, || app.input(Actor::Ci, event.clone())).await
            })
        })
        .collect();
    let mut changed = Vec::new();
    for task in tasks {
        if let Applied::Changed(run) = task.await.unwrap().expect("no engine error").expect("the run exists") {
            changed.push(run);
        }
    }
    // Some reports change the run (the first; a green re-run after a red one), the rest are
    // ignored as already decided. Every change that was reported is in the stored run, in a
    // single line of history: no write was lost, none forked.
    assert!(!changed.is_empty());
    changed.sort_by_key(|run| run.history.len());
    let (stored, _) = app.load(&id).await.unwrap().unwrap();
    assert_eq!(&stored, changed.last().unwrap(), "what is stored is the last change");
    let opened = stored.history.len() - changed.len();
    for (i, run) in changed.iter().enumerate() {
        assert_eq!(run.history.len(), opened + i + 1, "one history entry per change");
        assert_eq!(
            run.history[..],
            stored.history[..run.history.len()],
            "changes build on each other"
        );
    }
    let queued_after: usize = QueueName::ALL.iter().map(|&q| p.pending(q).len()).sum();
    let sent: usize = changed.iter().map(|run| run.outbox.len()).sum();
    assert_eq!(
        queued_after - queued_before,
        sent,
        "exactly the changes' commands were sent"
    );

    // A green report always wins in the end (first, or as a re-run after a red one): the
    // deploy it queued runs once.
    let build = stored.stage(StageKind::Build, None).expect("a build stage").status;
    assert_eq!(build, StageStatus::Succeeded);
    assert_eq!(p.pending(QueueName::Deploy).len(), 1, "one deploy queued");
    slipway::worker::drain(&app, 50).await.unwrap();
    assert_eq!(p.deployed("staging"), [SHA], "deployed once");
}

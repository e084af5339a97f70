//! The read model: pages and the API read a few small projections, never every run — so their
//! cost stays flat however long the history grows.

use http::StatusCode;
use jiff::SignedDuration;
use serde_json::Value;
use slipway_tests::{Pipeline, SHA};

/// A distinct commit for each `n`, told apart by its first 8 characters.
fn sha(n: u32) -> String {
    format!("{n:08x}{:032x}", 0x5eed_u32)
}

/// slipway's own answer to `path`.
async fn get(p: &Pipeline, path: &str) -> slipway_tests::Answer {
    p.read(&format!("https://slipway.example.com{path}")).await
}

/// `n` pushes, each a new commit on top of the one before, whose builds fail: a history of
/// finished runs, as a pipeline has after months.
async fn history(p: &Pipeline, n: u32) {
    let mut before = "0".repeat(40);
    for i in 1..=n {
        let sha = sha(i);
        assert_eq!(p.push_after(&sha, &before).await.status, StatusCode::CREATED);
        assert_eq!(p.ci(&sha, "failure").await.status, StatusCode::OK);
        p.advance(SignedDuration::from_secs(1));
        before = sha;
    }
    p.run_queues().await;
    // The sweep writes each finished run's final state into the index as it drops it from
    // the index of unfinished runs.
    slipway::sweep::run_once(&p.app).await.expect("the sweep runs");
}

fn shas(page: &Value) -> Vec<String> {
    page["runs"]
        .as_array()
        .expect("a list of runs")
        .iter()
        .map(|r| r["sha"].as_str().expect("a sha").to_owned())
        .collect()
}

#[tokio::test]
async fn api_runs_pages_through_the_history_newest_first_at_a_flat_cost() {
    let p = Pipeline::start().await;
    history(&p, 230).await;

    let reads = p.store.read_count();
    let first = get(&p, "/api/runs?limit=50").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert!(
        p.store.read_count() - reads <= 3,
        "the newest page reads the pipeline's record and a chunk or two, not {} objects",
        p.store.read_count() - reads
    );
    let first = first.json();
    assert_eq!(shas(&first).len(), 50);
    assert_eq!(shas(&first)[0], sha(230));
    assert_eq!(first["runs"][0]["status"], "failed");
    assert_eq!(first["runs"][0]["message"], "Add the basket page");

    // Following `next` shows every run once, newest first, each page as cheap as the first.
    let mut seen = shas(&first);
    let mut next = first["next"].as_str().map(str::to_owned);
    while let Some(cursor) = next {
        let reads = p.store.read_count();
        let page = get(&p, &format!("/api/runs?limit=50&before={cursor}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(p.store.read_count() - reads <= 3, "an older page costs the same");
        let page = page.json();
        seen.extend(shas(&page));
        next = page["next"].as_str().map(str::to_owned);
    }
    let all: Vec<String> = (1..=230).rev().map(sha).collect();
    assert_eq!(seen, all);

    // Filters, and clear refusals.
    let shop = get(&p, "/api/runs?pipeline=shop&repo=acme/shop&limit=5").await.json();
    assert_eq!(shas(&shop).len(), 5);
    let none = get(&p, "/api/runs?repo=acme/other").await.json();
    assert!(shas(&none).is_empty() && none["next"].is_null());
    for (query, status) in [
        ("limit=0", StatusCode::BAD_REQUEST),
        ("limit=201", StatusCode::BAD_REQUEST),
        ("limit=ten", StatusCode::BAD_REQUEST),
        ("before=yesterday", StatusCode::BAD_REQUEST),
        ("repo=not a repo", StatusCode::BAD_REQUEST),
        ("pipeline=nope", StatusCode::NOT_FOUND),
    ] {
        let answer = get(&p, &format!("/api/runs?{}", query.replace(' ', "%20"))).await;
        assert_eq!(answer.status, status, "{query}: {}", answer.body);
        assert!(answer.json()["error"].is_string(), "{query}: {}", answer.body);
    }
}

#[tokio::test]
async fn an_unfinished_run_shows_its_current_status_not_the_index_s_hint() {
    let p = Pipeline::start().await;
    history(&p, 3).await;
    p.to_approval(SHA).await;
    let page = get(&p, "/api/runs?limit=2").await.json();
    assert_eq!(page["runs"][0]["sha"], SHA);
    assert_eq!(page["runs"][0]["status"], "awaiting_approval");
    assert_eq!(page["runs"][0]["current_stage"], "approval:production");
}

#[tokio::test]
async fn the_approval_page_reads_the_same_few_objects_whatever_the_history() {
    let p = Pipeline::start().await;
    history(&p, 250).await;
    // Production runs 250 → A; then B fails its build and C waits for approval.
    let a = sha(1000);
    let b = sha(1001);
    let c = sha(1002);
    p.healthy("staging", &a);
    p.healthy("production", &a);
    p.push_after(&a, &sha(250)).await;
    p.ci(&a, "success").await;
    p.run_queues().await;
    let approve = p.approval_for("alice").approve_url.expect("a link");
    assert_eq!(p.post_decision(&approve, "approve").await.status, StatusCode::OK);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), std::slice::from_ref(&a));
    p.push_after(&b, &a).await;
    p.ci(&b, "failure").await;
    p.healthy("staging", &c);
    p.push_after(&c, &b).await;
    p.ci(&c, "success").await;
    p.run_queues().await;
    let link = p.approval_for("alice").approve_url.expect("a link");
    assert!(link.contains("decision=approve"));

    let reads = p.store.read_count();
    let page = p.get(&link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let cost = p.store.read_count() - reads;
    // The run, the production and staging records, the pipeline's record, one chunk.
    assert!(cost <= 5, "the approval page read {cost} objects");
    let short = |s: &str| s[..8].to_owned();
    assert!(
        page.body.contains(&short(&b)) && page.body.contains(&short(&c)),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(&short(&sha(250))),
        "already in production: {}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_at_once_are_all_opened_and_indexed_without_a_refusal() {
    let p = Pipeline::start().await;
    let writes = p.store.write_count();
    let pushes: Vec<_> = (1..=120u32)
        .map(|n| {
            let router = p.router.clone();
            let body = slipway_tests::push_payload("acme/shop", "main", &sha(n));
            tokio::spawn(async move {
                let request = http::Request::post("/hooks/github")
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("d-{n}"))
                    .header(
                        "x-hub-signature-256",
                        slipway::signature::sign(slipway_tests::GITHUB_SECRET.as_bytes(), body.as_bytes()),
                    )
                    .body(axum::body::Body::from(body))
                    .expect("a request");
                tower::ServiceExt::oneshot(router, request)
                    .await
                    .expect("an answer")
                    .status()
            })
        })
        .collect();
    for push in pushes {
        assert_eq!(push.await.expect("the push task"), StatusCode::CREATED);
    }
    // Each push wrote its run, its open-run marker and (shared with the others waiting then)
    // the pipeline's record: fewer writes than three a push.
    assert!(
        p.store.write_count() - writes < 3 * 120,
        "{}",
        p.store.write_count() - writes
    );
    let page = get(&p, "/api/runs?limit=200").await.json();
    let mut listed = shas(&page);
    listed.sort();
    let mut pushed: Vec<String> = (1..=120).map(sha).collect();
    pushed.sort();
    assert_eq!(listed, pushed, "every run once");
}

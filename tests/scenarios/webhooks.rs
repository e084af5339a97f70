//! The webhook edge: signatures before parsing, size caps, what is ignored, duplicates,
//! and 5xx (never 4xx) when a backing service is down.

use http::StatusCode;
use serde_json::json;
use slipway_tests::{CI_SECRET, GITHUB_SECRET, Pipeline, SHA, push_payload};

#[tokio::test(start_paused = true)]
async fn a_bad_signature_is_401_and_stores_nothing() {
    let p = Pipeline::start().await;
    let body = push_payload("acme/shop", "main", SHA);
    assert_eq!(
        p.github("push", "d1", body.as_bytes(), "wrong-secret").await.status,
        StatusCode::UNAUTHORIZED
    );

    // One flipped byte after signing.
    let mut request = http::Request::post("/hooks/github")
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            slipway::signature::sign(GITHUB_SECRET.as_bytes(), body.as_bytes()),
        );
    let mut flipped = body.clone().into_bytes();
    flipped[10] ^= 1;
    request = request.header("content-type", "application/json");
    let answer = p.send(request.body(axum::body::Body::from(flipped)).unwrap()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.json()["error"].as_str().unwrap().contains("X-Hub-Signature-256"));

    // No signature at all.
    let unsigned = http::Request::post("/hooks/github")
        .header("x-github-event", "push")
        .body(axum::body::Body::from(body))
        .unwrap();
    assert_eq!(p.send(unsigned).await.status, StatusCode::UNAUTHORIZED);
    assert!(p.store.is_empty(), "nothing stored");
    assert_eq!(p.queue.sent_count(), 0, "nothing queued");
}

#[tokio::test(start_paused = true)]
async fn an_oversized_body_is_413_before_it_is_read() {
    let p = Pipeline::start().await;
    let big = vec![b' '; slipway::http::MAX_WEBHOOK_BODY + 1];
    let answer = p.github("push", "d1", &big, GITHUB_SECRET).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let answer = p.ci_raw(&big, CI_SECRET).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(p.store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn ping_is_answered() {
    let p = Pipeline::start().await;
    let answer = p
        .github(
            "ping",
            "d1",
            include_bytes!("../../events/github/ping.json"),
            GITHUB_SECRET,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(p.store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn pushes_that_open_no_run_are_accepted_and_ignored() {
    let p = Pipeline::start().await;
    let cases = [
        (
            "push",
            push_payload("acme/shop", "feature-x", SHA),
            "no pipeline follows acme/shop feature-x",
        ),
        (
            "push",
            push_payload("acme/other", "main", SHA),
            "no pipeline follows acme/other main",
        ),
        (
            "push",
            include_str!("../../events/github/push-tag-created.json").to_owned(),
            "deploys branches, not tags",
        ),
        (
            "push",
            {
                let mut v: serde_json::Value = serde_json::from_str(&push_payload("acme/shop", "main", SHA)).unwrap();
                v["deleted"] = json!(true);
                v["after"] = json!("0".repeat(40));
                v["head_commit"] = json!(null);
                v.to_string()
            },
            "was deleted",
        ),
        (
            "issues",
            r#"{"action":"opened"}"#.to_owned(),
            "does not act on \"issues\" events",
        ),
    ];
    for (event, body, why) in cases {
        let answer = p.github(event, "d1", body.as_bytes(), GITHUB_SECRET).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{why}: {}", answer.body);
        let reason = answer.json()["ignored"].as_str().unwrap().to_owned();
        assert!(reason.contains(why), "{reason:?} should mention {why:?}");
    }
    assert!(p.store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_same_delivery_twice_opens_one_run() {
    let p = Pipeline::start().await;
    assert_eq!(p.push_to("main", SHA, "delivery-7").await.status, StatusCode::CREATED);
    let again = p.push_to("main", SHA, "delivery-7").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["status"], "duplicate");
    let runs = p.app.list_runs(None).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].history.len(), 1);
    p.ci(SHA, "success").await;
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA], "deployed once");
}

#[tokio::test(start_paused = true)]
async fn a_malformed_but_signed_payload_is_400() {
    let p = Pipeline::start().await;
    let answer = p.github("push", "d1", b"{not json", GITHUB_SECRET).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let missing_event = http::Request::post("/hooks/github")
        .header(
            "x-hub-signature-256",
            slipway::signature::sign(GITHUB_SECRET.as_bytes(), b"{}"),
        )
        .body(axum::body::Body::from("{}"))
        .unwrap();
    assert_eq!(p.send(missing_event).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn github_hooks_answer_404_when_not_configured() {
    let config = slipway_tests::CONFIG.replace("[github]\nwebhook_secret = \"/slipway/github/webhook-secret\"\n", "");
    let p = Pipeline::with_config(&config).await;
    let answer = p.push(SHA).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.json()["error"].as_str().unwrap().contains("[github]"));
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_secret_store_is_503_and_nothing_is_half_done() {
    let p = Pipeline::start().await;
    p.secrets.set_unavailable(true);
    let answer = p.push(SHA).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert!(p.store.is_empty());
    p.secrets.set_unavailable(false);
    assert_eq!(p.push(SHA).await.status, StatusCode::CREATED, "the host's retry works");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_state_store_is_503() {
    let p = Pipeline::start().await;
    p.store
        .fail_next("create", slipway::adapters::memory::Fault::Unavailable);
    assert_eq!(p.push(SHA).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p.push(SHA).await.status, StatusCode::CREATED);
}

#[tokio::test(start_paused = true)]
async fn a_lost_queue_send_is_repaired_by_the_hosts_retry() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    // CI's result is stored, but the deploy message cannot be sent: 503, and CI retries.
    p.queue.fail_next_sends(1);
    assert_eq!(p.ci(SHA, "success").await.status, StatusCode::SERVICE_UNAVAILABLE);
    p.run_queues().await;
    assert!(p.deployed("staging").is_empty());
    let retry = p.ci(SHA, "success").await;
    assert_eq!(retry.status, StatusCode::OK);
    assert!(
        retry.json()["ignored"].is_string(),
        "the result itself was already recorded"
    );
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn ci_results_for_unknown_commits_are_404_with_a_hint() {
    let p = Pipeline::start().await;
    let answer = p.ci(SHA, "success").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.json()["error"].as_str().unwrap().contains("push webhook"));
}

#[tokio::test(start_paused = true)]
async fn ci_results_must_be_signed_with_the_pipelines_secret() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    let body = json!({"repo": "acme/shop", "sha": SHA, "status": "success"}).to_string();
    assert_eq!(
        p.ci_raw(body.as_bytes(), "not-the-secret").await.status,
        StatusCode::UNAUTHORIZED
    );
    let unsigned = http::Request::post("/hooks/ci")
        .body(axum::body::Body::from(body.clone()))
        .unwrap();
    let answer = p.send(unsigned).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.json()["error"].as_str().unwrap().contains("X-Slipway-Signature"));
    // Signed correctly, but for a repository this secret does not belong to.
    let other = json!({"repo": "acme/other", "sha": SHA, "status": "success"}).to_string();
    assert_eq!(
        p.ci_raw(other.as_bytes(), CI_SECRET).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        p.stage_status(SHA, "build").await,
        slipway::domain::StageStatus::Waiting
    );
}

#[tokio::test(start_paused = true)]
async fn bad_ci_bodies_are_400_with_the_expected_shape() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    for body in [
        json!({"repo": "acme/shop", "sha": "abc", "status": "success"}),
        json!({"repo": "acme/shop", "sha": SHA, "status": "green"}),
        json!({"repo": "acme/shop", "sha": SHA, "status": "success", "coverage": 140}),
        json!({"sha": SHA, "status": "success"}),
    ] {
        let answer = p.ci_raw(body.to_string().as_bytes(), CI_SECRET).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.body);
    }
    assert_eq!(
        p.stage_status(SHA, "build").await,
        slipway::domain::StageStatus::Waiting
    );
}

#[tokio::test(start_paused = true)]
async fn a_ci_result_never_moves_a_run_backwards() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    let late_red = p.ci(SHA, "failure").await;
    assert_eq!(late_red.status, StatusCode::OK);
    assert!(late_red.json()["ignored"].as_str().unwrap().contains("already"));
    assert_eq!(p.run(SHA).await.status(), slipway::domain::RunStatus::AwaitingApproval);
}

#[tokio::test(start_paused = true)]
async fn unknown_paths_are_json_404s() {
    let p = Pipeline::start().await;
    let answer = p.get("https://slipway.example.com/hooks/sourcehut").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.json()["error"].is_string());
}

#[tokio::test(start_paused = true)]
async fn webhook_errors_are_json_even_from_the_framework() {
    let p = Pipeline::start().await;
    let big = vec![b' '; slipway::http::MAX_WEBHOOK_BODY + 1];
    let too_big = p.github("push", "d1", &big, GITHUB_SECRET).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(too_big.json()["error"].as_str().unwrap().contains("larger than"));
    let get = p.get("https://slipway.example.com/hooks/github").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(get.json()["error"].is_string());
}

#[tokio::test(start_paused = true)]
async fn a_ci_result_reaches_every_pipeline_following_the_commit() {
    let release = slipway_tests::CONFIG.to_owned()
        + r#"
[[pipelines]]
name = "shop-release"
repo = "acme/shop"
branch = "release"
mode = "deployment"
ci_secret = "/slipway/shop/ci-secret"
[[pipelines.environments]]
name = "staging"
deploy = { type = "command", command = ["./deploy.sh"] }
"#;
    let p = Pipeline::with_config(&release).await;
    p.push_to("main", SHA, "d1").await;
    p.push_to("release", SHA, "d2").await;
    let answer = p.ci(SHA, "success").await;
    assert_eq!(answer.status, StatusCode::OK);
    let runs = answer.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2, "{}", answer.body);
    p.run_queues().await;
    assert_eq!(
        p.deployed("staging"),
        [SHA, SHA],
        "each pipeline deploys its own staging"
    );
}

//! Every git host and CI, and approvals from Slack, through the real router.
//!
//! For each provider: a valid signature is accepted; one flipped byte answers 401 and
//! stores nothing; a payload sent to the wrong provider's path answers 401; a provider with
//! no secret configured answers 404; a duplicate delivery opens one run; an unknown event
//! answers 2xx and is ignored.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{Request, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use slipway::domain::{RunStatus, StageStatus};
use slipway_tests::{Answer, CONFIG, GITHUB_SECRET, Pipeline, SHA};

const GITLAB_TOKEN: &str = "gitlab-token";
/// A Standard Webhooks secret: `whsec_` and a base64 key.
const GITLAB_SIGNING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BITBUCKET_SECRET: &str = "bitbucket-secret";
const SLACK_SECRET: &str = "slack-signing-secret";

fn config() -> String {
    CONFIG.replace(
        "id = \"alice\"\naddress = \"alice@example.com\"",
        "id = \"alice\"\naddress = \"alice@example.com\"\nslack = \"U0ALICE\"",
    ) + r#"
[gitlab]
token = "/slipway/gitlab/token"
signing_key = "/slipway/gitlab/signing-key"

[bitbucket]
secret = "/slipway/bitbucket/secret"

[slack]
signing_secret = "/slipway/slack/signing-secret"
"#
}

async fn pipeline_with(config: &str) -> Pipeline {
    let p = Pipeline::with_config(config).await;
    p.secrets.set("/slipway/gitlab/token", GITLAB_TOKEN);
    p.secrets.set("/slipway/gitlab/signing-key", GITLAB_SIGNING);
    p.secrets.set("/slipway/bitbucket/secret", BITBUCKET_SECRET);
    p.secrets.set("/slipway/slack/signing-secret", SLACK_SECRET);
    p
}

async fn pipeline() -> Pipeline {
    pipeline_with(&config()).await
}

fn fixture(path: &str) -> Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------
// GitLab
// ---------------------------------------------------------------------------------------

/// GitLab's documented push example, re-aimed at acme/shop main and `sha`, by dev.
fn gitlab_push(sha: &str) -> Vec<u8> {
    let mut v = fixture("gitlab/push.json");
    v["project"]["path_with_namespace"] = json!("acme/shop");
    v["ref"] = json!("refs/heads/main");
    v["after"] = json!(sha);
    v["checkout_sha"] = json!(sha);
    v["user_username"] = json!("dev");
    v["user_email"] = json!("dev@example.com");
    let commits = v["commits"].as_array_mut().unwrap();
    let last = commits.len() - 1;
    commits[last]["id"] = json!(sha);
    commits[last]["author"] = json!({"name": "Dee Veloper", "email": "dev@example.com"});
    serde_json::to_vec(&v).unwrap()
}

/// Signs a GitLab delivery the Standard Webhooks way: `v1,<base64 HMAC of id.timestamp.body>`.
fn standard_signature(id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(GITLAB_SIGNING.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn gitlab(p: &Pipeline, event: &str, uuid: &str, body: &[u8], token: &str, signed_at: i64) -> Answer {
    let request = Request::post("/hooks/gitlab")
        .header("content-type", "application/json")
        .header("x-gitlab-event", event)
        .header("x-gitlab-token", token)
        .header("x-gitlab-event-uuid", uuid)
        .header("webhook-id", uuid)
        .header("webhook-timestamp", signed_at.to_string())
        .header("webhook-signature", standard_signature(uuid, signed_at, body))
        .body(Body::from(body.to_vec()))
        .unwrap();
    p.send(request).await
}

#[tokio::test(start_paused = true)]
async fn gitlab_pushes_open_runs_once_and_pipelines_report_builds() {
    let config = config().replace(
        "approval_expiry = \"24h\"",
        "approval_expiry = \"24h\"\nrequired_checks = [\"pipeline\"]",
    );
    let p = pipeline_with(&config).await;
    let now = p.now().as_second();
    let body = gitlab_push(SHA);
    let opened = gitlab(&p, "Push Hook", "uuid-1", &body, GITLAB_TOKEN, now).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let run = p.run(SHA).await;
    assert_eq!(run.commit.author_login.as_deref(), Some("dev"));

    let again = gitlab(&p, "Push Hook", "uuid-1", &body, GITLAB_TOKEN, now).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(p.app.list_runs(None).await.unwrap().len(), 1);

    // GitLab's own pipeline event is the CI result.
    let mut pipeline = fixture("gitlab/pipeline.json");
    pipeline["project"]["path_with_namespace"] = json!("acme/shop");
    pipeline["object_attributes"]["sha"] = json!(SHA);
    pipeline["object_attributes"]["ref"] = json!("main");
    pipeline["object_attributes"]["status"] = json!("success");
    let body = serde_json::to_vec(&pipeline).unwrap();
    let built = gitlab(&p, "Pipeline Hook", "uuid-2", &body, GITLAB_TOKEN, now).await;
    assert_eq!(built.status, StatusCode::OK, "{}", built.body);
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn gitlab_refuses_wrong_tokens_flipped_bytes_and_stale_signatures() {
    let p = pipeline().await;
    let now = p.now().as_second();
    let body = gitlab_push(SHA);
    assert_eq!(
        gitlab(&p, "Push Hook", "u1", &body, "wrong-token", now).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Signed, then one byte flipped.
    let mut request = Request::post("/hooks/gitlab")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", GITLAB_TOKEN)
        .header("webhook-id", "u2")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", standard_signature("u2", now, &body));
    request = request.header("content-type", "application/json");
    let mut flipped = body.clone();
    flipped[20] ^= 1;
    assert_eq!(
        p.send(request.body(Body::from(flipped)).unwrap()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Signed 301 s ago.
    let stale = gitlab(&p, "Push Hook", "u3", &body, GITLAB_TOKEN, now - 301).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.body);
    // A GitHub delivery sent to GitLab's path.
    let github = slipway_tests::push_payload("acme/shop", "main", SHA);
    let wrong_path = Request::post("/hooks/gitlab")
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            slipway::signature::sign(GITHUB_SECRET.as_bytes(), github.as_bytes()),
        )
        .body(Body::from(github))
        .unwrap();
    assert_eq!(p.send(wrong_path).await.status, StatusCode::UNAUTHORIZED);
    assert!(p.store.is_empty(), "nothing stored");
}

#[tokio::test(start_paused = true)]
async fn gitlab_ignores_unknown_events_and_answers_404_when_not_configured() {
    let p = pipeline().await;
    let now = p.now().as_second();
    let issue = br#"{"object_kind":"issue","project":{"path_with_namespace":"acme/shop"}}"#;
    let answer = gitlab(&p, "Issue Hook", "u9", issue, GITLAB_TOKEN, now).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let plain = Pipeline::start().await;
    let answer = gitlab(&plain, "Push Hook", "u1", &gitlab_push(SHA), GITLAB_TOKEN, now).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.json()["error"].as_str().unwrap().contains("[gitlab]"));
}

// ---------------------------------------------------------------------------------------
// Bitbucket
// ---------------------------------------------------------------------------------------

async fn bitbucket(p: &Pipeline, event: &str, uuid: &str, body: &[u8], secret: &str) -> Answer {
    let request = Request::post("/hooks/bitbucket")
        .header("content-type", "application/json")
        .header("x-event-key", event)
        .header("x-request-uuid", uuid)
        .header("x-hub-signature", slipway::signature::sign(secret.as_bytes(), body))
        .body(Body::from(body.to_vec()))
        .unwrap();
    p.send(request).await
}

#[tokio::test(start_paused = true)]
async fn bitbucket_pushes_open_runs_once() {
    let p = pipeline().await;
    let body = serde_json::to_vec(&fixture("bitbucket/push.json")).unwrap();
    let opened = bitbucket(&p, "repo:push", "r-1", &body, BITBUCKET_SECRET).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    assert_eq!(p.run(SHA).await.status(), RunStatus::InProgress);
    // The same delivery again, and the same commit in another delivery: still one run.
    assert_eq!(
        bitbucket(&p, "repo:push", "r-1", &body, BITBUCKET_SECRET).await.json()["status"],
        "duplicate"
    );
    assert_eq!(
        bitbucket(&p, "repo:push", "r-2", &body, BITBUCKET_SECRET).await.status,
        StatusCode::OK
    );
    assert_eq!(p.app.list_runs(None).await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn bitbucket_refuses_bad_signatures_and_sha1_and_ignores_unknown_events() {
    let p = pipeline().await;
    let body = serde_json::to_vec(&fixture("bitbucket/push.json")).unwrap();
    assert_eq!(
        bitbucket(&p, "repo:push", "r-1", &body, "wrong").await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut flipped = body.clone();
    flipped[5] ^= 1;
    let request = Request::post("/hooks/bitbucket")
        .header("x-event-key", "repo:push")
        .header(
            "x-hub-signature",
            slipway::signature::sign(BITBUCKET_SECRET.as_bytes(), &body),
        )
        .body(Body::from(flipped))
        .unwrap();
    assert_eq!(p.send(request).await.status, StatusCode::UNAUTHORIZED);
    let sha1 = Request::post("/hooks/bitbucket")
        .header("x-event-key", "repo:push")
        .header("x-hub-signature", "sha1=0123456789abcdef0123456789abcdef01234567")
        .body(Body::from(body.clone()))
        .unwrap();
    let answer = p.send(sha1).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("sha-1"),
        "{}",
        answer.body
    );
    assert!(p.store.is_empty());
    let fork = bitbucket(&p, "repo:fork", "r-3", b"{}", BITBUCKET_SECRET).await;
    assert_eq!(fork.status, StatusCode::ACCEPTED, "{}", fork.body);
    let plain = Pipeline::start().await;
    assert_eq!(
        bitbucket(&plain, "repo:push", "r-1", &body, BITBUCKET_SECRET)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------------
// CI from the hosts' own events
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_github_workflow_run_gates_the_pipeline_that_requires_it() {
    let config = config().replace(
        "approval_expiry = \"24h\"",
        "approval_expiry = \"24h\"\nrequired_checks = [\"CI\"]",
    );
    let p = pipeline_with(&config).await;
    p.push(SHA).await;
    let mut run = fixture("github/workflow-run-completed.json");
    run["repository"]["full_name"] = json!("acme/shop");
    run["workflow_run"]["head_sha"] = json!(SHA);
    run["workflow_run"]["head_branch"] = json!("main");
    run["workflow_run"]["name"] = json!("CI");
    run["workflow_run"]["conclusion"] = json!("failure");
    let red = serde_json::to_vec(&run).unwrap();
    let answer = p.github("workflow_run", "d-2", &red, GITHUB_SECRET).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    p.run_queues().await;
    assert_eq!(p.stage_status(SHA, "build").await, StageStatus::Failed);
    let alert = &p.notifications_of("failed")[0];
    assert!(alert.alert && alert.text.contains("check CI failed"), "{alert:?}");
    // Re-run green.
    run["workflow_run"]["conclusion"] = json!("success");
    let green = serde_json::to_vec(&run).unwrap();
    assert_eq!(
        p.github("workflow_run", "d-3", &green, GITHUB_SECRET).await.status,
        StatusCode::OK
    );
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    // Another workflow is not required: ignored.
    run["workflow_run"]["name"] = json!("docs");
    let docs = serde_json::to_vec(&run).unwrap();
    assert_eq!(
        p.github("workflow_run", "d-4", &docs, GITHUB_SECRET).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(start_paused = true)]
async fn coverage_under_the_minimum_stops_a_green_build() {
    let config = config().replace(
        "approval_expiry = \"24h\"",
        "approval_expiry = \"24h\"\nmin_coverage = 80.0",
    );
    let p = pipeline_with(&config).await;
    p.push(SHA).await;
    let body = json!({"repo": "acme/shop", "sha": SHA, "status": "success", "coverage": 61.5}).to_string();
    assert_eq!(
        p.ci_raw(body.as_bytes(), slipway_tests::CI_SECRET).await.status,
        StatusCode::OK
    );
    p.run_queues().await;
    assert!(p.deployer.deploys().is_empty());
    let failed = &p.notifications_of("failed")[0];
    assert!(failed.text.contains("coverage 61.5% is below"), "{failed:?}");
}

// ---------------------------------------------------------------------------------------
// Slack
// ---------------------------------------------------------------------------------------

async fn slack_click(p: &Pipeline, user: &str, action: &str, token: &str, signed_at: i64) -> Answer {
    let mut payload = fixture("slack/block_actions.json");
    payload["user"]["id"] = json!(user);
    payload["actions"][0]["action_id"] = json!(action);
    payload["actions"][0]["value"] = json!(token);
    payload["response_url"] = json!(null);
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{signed_at}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let request = Request::post("/hooks/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", signed_at.to_string())
        .header("x-slack-signature", signature)
        .body(Body::from(body))
        .unwrap();
    p.send(request).await
}

fn token_of(link: &str) -> String {
    let path = url::Url::parse(link).unwrap().path().to_owned();
    path.trim_start_matches("/approvals/").to_owned()
}

#[tokio::test(start_paused = true)]
async fn an_approver_decides_from_slack() {
    let p = pipeline().await;
    p.to_approval(SHA).await;
    let token = token_of(&p.approval_for("bob").approve_url.unwrap());
    let answer = slack_click(&p, "U0ALICE", "approve", &token, p.now().as_second()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer.json()["text"].as_str().unwrap().contains("You approved"),
        "{}",
        answer.body
    );
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
    let run = p.run(SHA).await;
    let decided = run.stages.iter().find(|s| s.label() == "approval:production").unwrap();
    assert_eq!(
        decided.approval.as_ref().unwrap().decided_by.as_ref().unwrap().as_str(),
        "alice",
        "the clicking approver decided"
    );
}

#[tokio::test(start_paused = true)]
async fn slack_refuses_strangers_and_old_requests_and_changes_nothing() {
    let p = pipeline().await;
    p.to_approval(SHA).await;
    let token = token_of(&p.approval_for("alice").approve_url.unwrap());
    let stranger = slack_click(&p, "U0MALLORY", "approve", &token, p.now().as_second()).await;
    assert_eq!(stranger.status, StatusCode::OK, "Slack is answered, but refused");
    assert!(
        stranger.json()["text"].as_str().unwrap().contains("not an approver"),
        "{}",
        stranger.body
    );
    let old = slack_click(&p, "U0ALICE", "approve", &token, p.now().as_second() - 301).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        p.approval_stage_status(SHA).await,
        StageStatus::Waiting,
        "no state change"
    );
    p.run_queues().await;
    assert!(p.deployed("production").is_empty());
    let plain = Pipeline::start().await;
    assert_eq!(
        slack_click(&plain, "U0ALICE", "approve", &token, plain.now().as_second())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(start_paused = true)]
async fn a_delivery_signed_for_one_provider_is_refused_on_anothers_path() {
    let p = pipeline().await;
    let now = p.now().as_second();
    // A GitLab push (with GitLab's token and signature) posted to GitHub's and Bitbucket's paths.
    let body = gitlab_push(SHA);
    for path in ["/hooks/github", "/hooks/bitbucket"] {
        let request = Request::post(path)
            .header("x-gitlab-event", "Push Hook")
            .header("x-gitlab-token", GITLAB_TOKEN)
            .header("webhook-id", "u1")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", standard_signature("u1", now, &body))
            .body(Body::from(body.clone()))
            .unwrap();
        assert_eq!(p.send(request).await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A Bitbucket push, signed with Bitbucket's secret, posted to GitHub's path: the header
    // name is the one GitHub uses for SHA-1, and GitHub's path reads only its own header.
    let bitbucket_body = serde_json::to_vec(&fixture("bitbucket/push.json")).unwrap();
    let request = Request::post("/hooks/github")
        .header("x-github-event", "push")
        .header(
            "x-hub-signature",
            slipway::signature::sign(BITBUCKET_SECRET.as_bytes(), &bitbucket_body),
        )
        .body(Body::from(bitbucket_body))
        .unwrap();
    assert_eq!(p.send(request).await.status, StatusCode::UNAUTHORIZED);
    assert!(p.store.is_empty(), "nothing stored");
}

#[tokio::test(start_paused = true)]
async fn an_unusable_gitlab_signing_key_is_a_500_naming_it_not_a_401() {
    let p = pipeline().await;
    p.secrets.set("/slipway/gitlab/signing-key", "whsec_not base64!");
    let answer = gitlab(
        &p,
        "Push Hook",
        "u1",
        &gitlab_push(SHA),
        GITLAB_TOKEN,
        p.now().as_second(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", answer.body);
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("/slipway/gitlab/signing-key")
    );
    assert!(
        !answer.body.contains("not base64!"),
        "the secret's value is never echoed"
    );
    assert!(p.store.is_empty());
}

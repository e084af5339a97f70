//! Hardening (issue 10): what a sender of signed payloads cannot make slipway do.
//!
//! - No script links: a link from outside is shown only if it is http(s); pages carry a
//!   strict Content-Security-Policy.
//! - No bearer tokens in logs: request spans name the route, never the path or query.
//! - No unbounded echo: a 600 KB value comes back (or is logged) as a short prefix.
//! - An honest answer when the build result was stored but its work could not be sent.
//! - An unsigned `/hooks/deploy` with no webhook deploy target is 404, like other hooks.
//! - A whole release, logged at TRACE, leaks no secret and no token.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{Request, StatusCode};
use jiff::SignedDuration;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use slipway::domain::{RunStatus, StageStatus};
use slipway::ports::{QueueName, StateStore as _, StoreKey};
use slipway_tests::logs::Logs;
use slipway_tests::{Answer, CI_SECRET, CONFIG, GITHUB_SECRET, Pipeline, SHA, SHA2, push_payload};
use tracing::Level;

const BASE: &str = "https://slipway.example.com";

/// 600 KB of one character: a value no answer or log line should repeat whole.
fn huge() -> String {
    "A".repeat(600 * 1024)
}

/// The answer or log line for a huge value stays this short.
const SHORT: usize = 2_000;

/// A push whose head commit links to `url`.
fn push_linking(url: &str) -> Vec<u8> {
    let mut payload: Value = serde_json::from_str(&push_payload("acme/shop", "main", SHA)).unwrap();
    payload["head_commit"]["url"] = json!(url);
    serde_json::to_vec(&payload).unwrap()
}

async fn ci_json(p: &Pipeline, body: Value) -> Answer {
    p.ci_raw(body.to_string().as_bytes(), CI_SECRET).await
}

// ---------------------------------------------------------------------------------------
// 1. Script links
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_ci_result_with_a_script_link_is_refused_naming_the_field() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    for url in [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "/builds/42",
    ] {
        let answer = ci_json(
            &p,
            json!({"repo": "acme/shop", "sha": SHA, "status": "success", "build_url": url}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{url}: {}", answer.body);
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.starts_with("build_url must be an absolute http(s) link"),
            "{error}"
        );
        assert!(!error.contains("alert"), "the link itself is not repeated: {error}");
    }
    assert_eq!(
        p.stage_status(SHA, "build").await,
        StageStatus::Waiting,
        "nothing recorded"
    );

    // A good link is kept, and shown.
    let answer = ci_json(
        &p,
        json!({"repo": "acme/shop", "sha": SHA, "status": "success", "build_url": "https://ci.example.com/builds/42"}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let run = p.run(SHA).await;
    assert_eq!(run.build.url.as_deref(), Some("https://ci.example.com/builds/42"));
    let page = p.read(&format!("{BASE}/runs/{}", run.id)).await;
    assert!(
        page.body.contains("href=\"https://ci.example.com/builds/42\""),
        "{}",
        page.body
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_with_a_script_link_opens_its_run_without_the_link() {
    let p = Pipeline::start().await;
    let logs = Logs::capture(Level::DEBUG);
    let answer = p
        .github("push", "d-js", &push_linking("javascript:alert(1)"), GITHUB_SECRET)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "git hosts disable hooks that answer 4xx"
    );
    let run = p.run(SHA).await;
    assert_eq!(run.commit.url, None);
    let dropped = logs.lines_with("dropped a link");
    assert_eq!(dropped.len(), 1, "{}", logs.text());
    assert!(dropped[0].contains("scheme=javascript"), "{}", dropped[0]);
    assert!(!logs.text().contains("alert(1)"), "only the scheme is logged");

    p.ci(SHA, "success").await;
    p.run_queues().await;
    let approve = p.approval_for("alice").approve_url.unwrap();
    for page in [p.read(&format!("{BASE}/runs/{}", run.id)).await, p.read(&approve).await] {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(!page.body.contains("javascript:"), "{}", page.body);
        assert!(page.body.contains(&SHA[..12]));
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_stored_with_a_script_link_still_loads_without_it() {
    let p = Pipeline::start().await;
    p.github(
        "push",
        "d1",
        &push_linking("https://github.com/acme/shop/commit/a1"),
        GITHUB_SECRET,
    )
    .await;
    p.ci(SHA, "success").await;
    let run = p.run(SHA).await;
    assert!(run.commit.url.is_some() && run.build.url.is_some());

    // As a run written before links were checked would be.
    let key = StoreKey::run(&run.id);
    let found = p.store.get(&key).await.unwrap().unwrap();
    let mut stored: Value = serde_json::from_slice(&found.value).unwrap();
    stored["commit"]["url"] = json!("javascript:alert(1)");
    stored["build"]["url"] = json!("vbscript:msgbox(1)");
    p.store
        .replace(&key, serde_json::to_vec(&stored).unwrap().into(), &found.version)
        .await
        .unwrap();

    let run = p.run(SHA).await;
    assert_eq!((run.commit.url, run.build.url), (None, None));
    let page = p.read(&format!("{BASE}/runs/{}", run.id)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("script:"), "{}", page.body);
    let api = p.read(&format!("{BASE}/api/runs/{}", run.id)).await;
    assert_eq!(api.status, StatusCode::OK);
    // The run goes on as before.
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

/// The `<style>` a page inlines.
fn inline_style(page: &str) -> &str {
    let start = page.find("<style>").expect("an inline style") + "<style>".len();
    let end = start + page[start..].find("</style>").unwrap();
    &page[start..end]
}

fn assert_strict_policy(answer: &Answer, what: &str) {
    let policy = answer
        .headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"))
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{what}: {policy}");
    }
    assert!(!policy.contains("unsafe"), "{what}: {policy}");
    assert!(!policy.contains("script-src"), "{what}: no script may run: {policy}");
    assert_eq!(
        answer
            .headers
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap()),
        Some("nosniff"),
        "{what}"
    );
    if answer.body.contains("<style>") {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(inline_style(&answer.body)));
        assert!(
            policy.contains(&format!("style-src 'sha256-{hash}'")),
            "{what}: the page's own style is allowed by its hash: {policy}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn every_page_is_sent_with_a_strict_content_security_policy() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let approve = p.approval_for("alice").approve_url.unwrap();
    let run = p.run(SHA).await;
    let confirm = p.get(&approve).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert_strict_policy(&confirm, "approval page");
    assert_strict_policy(&p.read(&format!("{BASE}/runs/{}", run.id)).await, "run page");
    let unknown = p.get(&format!("{BASE}/approvals/v1.not-a-token")).await;
    assert!(unknown.status.is_client_error());
    assert_strict_policy(&unknown, "a refused link's page");
    let decided = p.post_decision(&approve, "approve").await;
    assert_eq!(decided.status, StatusCode::OK);
    assert_strict_policy(&decided, "the decision's page");
    assert_strict_policy(
        &p.get(&format!("{BASE}/rollback/v1.not-a-token")).await,
        "a refused rollback link's page",
    );
    assert_strict_policy(&p.read(&format!("{BASE}/api/runs/{}", run.id)).await, "the API");
    assert_strict_policy(&p.get(&format!("{BASE}/no/such/page")).await, "the fallback");
}

// ---------------------------------------------------------------------------------------
// 2. Bearer tokens in logs
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn request_logs_name_the_route_never_the_token() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let approve = p.approval_for("alice").approve_url.unwrap();
    let token = approve.rsplit('/').next().unwrap().to_owned();
    let logs = Logs::capture(Level::TRACE);
    assert_eq!(p.get(&approve).await.status, StatusCode::OK);
    assert_eq!(
        p.get(&format!("{approve}?decision=approve")).await.status,
        StatusCode::OK
    );
    let run = p.run(SHA).await;
    p.get(&format!("{BASE}/runs/{}?token={token}", run.id)).await;
    p.get(&format!("{BASE}/rollback/{token}")).await;
    let text = logs.text();
    assert!(text.contains(r#"route="/approvals/{token}""#), "{text}");
    assert!(text.contains(r#"route="/runs/{id}""#), "{text}");
    assert!(text.contains(r#"route="/rollback/{token}""#), "{text}");
    assert!(!text.contains(&token), "a token reached the logs:\n{text}");
    assert!(!text.contains("decision=approve"), "a query reached the logs:\n{text}");
}

// ---------------------------------------------------------------------------------------
// 4. Unbounded echo
// ---------------------------------------------------------------------------------------

fn assert_short(what: &str, text: &str) {
    assert!(
        text.len() < SHORT,
        "{what} is {} bytes: {}…",
        text.len(),
        &text[..200.min(text.len())]
    );
}

#[tokio::test(start_paused = true)]
async fn a_huge_ci_status_comes_back_as_a_short_prefix() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    let big = huge();
    let answer = ci_json(&p, json!({"repo": "acme/shop", "sha": SHA, "status": big})).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_short("the answer", &answer.body);
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&format!("{}… ({} bytes)", "A".repeat(64), big.len())),
        "{error}"
    );
    assert!(
        error.contains("expected one of `success`, `failure`, `error`"),
        "{error}"
    );

    // A huge repository name or SHA: the same.
    for body in [
        json!({"repo": big, "sha": SHA, "status": "success"}),
        json!({"repo": "acme/shop", "sha": big, "status": "success"}),
        json!({"repo": "acme/shop", "sha": SHA, "status": "success", "build_url": format!("javascript:{big}")}),
        json!({"repo": "acme/shop", "sha": SHA, "status": "success", "build_url": format!("{big}:x")}),
    ] {
        let answer = ci_json(&p, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_short("the answer", &answer.body);
    }
}

/// A pipeline whose production deploys through a webhook target.
fn with_webhook_target() -> String {
    CONFIG.replace(
        r#"deploy = { type = "command", command = ["./deploy.sh", "production"], timeout = "10m", secrets = { DATABASE_URL = "/slipway/shop/production/database-url" } }"#,
        r#"deploy = { type = "webhook", url = "https://deployer.example.com/slipway", secret = "/slipway/shop/deploy-hook" }"#,
    )
}

async fn deploy_callback(p: &Pipeline, body: &[u8], signature: Option<&str>) -> Answer {
    let mut request = Request::post("/hooks/deploy").header("content-type", "application/json");
    if let Some(secret) = signature {
        request = request.header("x-slipway-signature", slipway::signature::sign(secret.as_bytes(), body));
    }
    p.send(request.body(Body::from(body.to_vec())).unwrap()).await
}

#[tokio::test(start_paused = true)]
async fn a_huge_deploy_phase_comes_back_as_a_short_prefix() {
    let config = with_webhook_target();
    assert_ne!(config, CONFIG, "the production target was replaced");
    let p = Pipeline::with_config(&config).await;
    p.secrets.set("/slipway/shop/deploy-hook", "deploy-hook-secret");
    p.push(SHA).await;
    let run = p.run(SHA).await;
    let body = json!({"run": run.id, "env": "production", "phase": huge(), "status": "succeeded"}).to_string();
    let answer = deploy_callback(&p, body.as_bytes(), Some("deploy-hook-secret")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_short("the answer", &answer.body);
    assert!(answer.body.contains("unknown variant"), "{}", answer.body);
}

const SLACK_SECRET: &str = "slack-signing-secret";
const GITLAB_TOKEN: &str = "gitlab-token";
const BITBUCKET_SECRET: &str = "bitbucket-secret";

/// The scenario pipeline with GitLab, Bitbucket and Slack configured too.
async fn every_host() -> Pipeline {
    let config = format!(
        "{CONFIG}\n[gitlab]\ntoken = \"/slipway/gitlab/token\"\n\n[bitbucket]\nsecret = \"/slipway/bitbucket/secret\"\n\n[slack]\nsigning_secret = \"/slipway/slack/signing-secret\"\n"
    );
    let p = Pipeline::with_config(&config).await;
    p.secrets.set("/slipway/gitlab/token", GITLAB_TOKEN);
    p.secrets.set("/slipway/bitbucket/secret", BITBUCKET_SECRET);
    p.secrets.set("/slipway/slack/signing-secret", SLACK_SECRET);
    p
}

async fn slack(p: &Pipeline, payload: &Value) -> Answer {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let signed_at = p.now().as_second();
    let mut mac = Hmac::<Sha256>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{signed_at}:{body}").as_bytes());
    let request = Request::post("/hooks/slack/interactions")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", signed_at.to_string())
        .header(
            "x-slack-signature",
            format!("v0={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(Body::from(body))
        .unwrap();
    p.send(request).await
}

fn fixture(path: &str) -> Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn huge_slack_values_come_back_as_short_prefixes() {
    let p = every_host().await;
    let logs = Logs::capture(Level::TRACE);
    let big = huge();
    let mut payloads = Vec::new();
    let mut payload = fixture("slack/block_actions.json");
    payload["type"] = json!(big);
    payloads.push(payload);
    let mut payload = fixture("slack/block_actions.json");
    payload["actions"][0]["action_id"] = json!(big);
    payloads.push(payload);
    let mut payload = fixture("slack/block_actions.json");
    payload["actions"][0]["value"] = json!(null);
    payload["actions"][0]["action_id"] = json!("approve");
    payloads.push(payload);
    let mut payload = fixture("slack/block_actions.json");
    payload["user"] = json!(big);
    payloads.push(payload);
    for payload in payloads {
        let answer = slack(&p, &payload).await;
        assert!(answer.status.is_success() || answer.status == StatusCode::BAD_REQUEST);
        assert_short("the answer", &answer.body);
    }
    for line in logs.text().lines() {
        assert_short("a log line", line);
    }
}

#[tokio::test(start_paused = true)]
async fn a_huge_gitlab_event_kind_is_ignored_in_a_short_answer() {
    let p = every_host().await;
    let logs = Logs::capture(Level::TRACE);
    let body = json!({"object_kind": huge(), "project": {"path_with_namespace": "acme/shop"}}).to_string();
    let request = Request::post("/hooks/gitlab")
        .header("content-type", "application/json")
        .header("x-gitlab-token", GITLAB_TOKEN)
        .header("x-gitlab-event", "Note Hook")
        .body(Body::from(body))
        .unwrap();
    let answer = p.send(request).await;
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "{}",
        &answer.body[..200.min(answer.body.len())]
    );
    assert_short("the answer", &answer.body);
    assert!(
        answer.json()["ignored"].as_str().unwrap().contains("bytes)"),
        "{}",
        answer.body
    );
    for line in logs.text().lines() {
        assert_short("a log line", line);
    }
}

#[tokio::test(start_paused = true)]
async fn a_huge_bitbucket_status_key_is_logged_as_a_short_prefix() {
    let p = every_host().await;
    let logs = Logs::capture(Level::TRACE);
    for state in ["INPROGRESS", "SUCCESSFUL"] {
        let mut status = fixture("bitbucket/commit-status-updated.json");
        status["commit_status"]["key"] = json!(huge());
        status["commit_status"]["state"] = json!(state);
        let body = serde_json::to_vec(&status).unwrap();
        let request = Request::post("/hooks/bitbucket")
            .header("content-type", "application/json")
            .header("x-event-key", "repo:commit_status_updated")
            .header("x-request-uuid", format!("uuid-{state}"))
            .header(
                "x-hub-signature",
                slipway::signature::sign(BITBUCKET_SECRET.as_bytes(), &body),
            )
            .body(Body::from(body))
            .unwrap();
        let answer = p.send(request).await;
        assert!(answer.status.is_success(), "{}", answer.status);
        assert_short("the answer", &answer.body);
    }
    let text = logs.text();
    assert!(text.contains("webhook ignored"), "{text}");
    for line in text.lines() {
        assert_short("a log line", line);
    }
}

#[tokio::test(start_paused = true)]
async fn huge_github_headers_and_refs_are_echoed_short() {
    let p = Pipeline::start().await;
    let logs = Logs::capture(Level::TRACE);
    let event = "e".repeat(16 * 1024);
    let answer = p.github(&event, &"d".repeat(16 * 1024), b"{}", GITHUB_SECRET).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_short("the answer", &answer.body);
    let mut payload: Value = serde_json::from_str(&push_payload("acme/shop", "main", SHA)).unwrap();
    payload["ref"] = json!(format!("refs/tags/{}", huge()));
    let answer = p
        .github("push", "d2", &serde_json::to_vec(&payload).unwrap(), GITHUB_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_short("the answer", &answer.body);
    payload["ref"] = json!(format!("refs/heads/{}", huge()));
    let answer = p
        .github("push", "d3", &serde_json::to_vec(&payload).unwrap(), GITHUB_SECRET)
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_short("the answer", &answer.body);
    for line in logs.text().lines() {
        assert_short("a log line", line);
    }
}

// ---------------------------------------------------------------------------------------
// 5. The answer when the result was stored but its work was not sent
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_stored_result_whose_work_was_not_sent_says_so_and_a_retry_sends_it_at_once() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.run_queues().await;
    p.queue.fail_next_sends(1);
    let answer = p.ci(SHA, "success").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(!error.contains("nothing was changed"), "{error}");
    assert!(error.contains("was recorded"), "{error}");
    assert!(error.contains("retry this delivery"), "{error}");
    assert!(error.contains("sweep"), "{error}");
    assert_eq!(
        p.stage_status(SHA, "build").await,
        StageStatus::Succeeded,
        "the result stands"
    );
    assert!(p.pending(QueueName::Deploy).is_empty(), "its work was not sent");

    // CI retries the same delivery: the work is sent at once, not at the next sweep.
    let retry = p.ci(SHA, "success").await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(p.pending(QueueName::Deploy).len(), 1, "sent by the retry itself");
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

// ---------------------------------------------------------------------------------------
// 7. /hooks/deploy without a webhook target
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_deploy_hook_is_404_when_no_webhook_target_is_configured() {
    let p = Pipeline::start().await;
    for signature in [None, Some("anything")] {
        let answer = deploy_callback(&p, b"{}", signature).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
        assert!(answer.body.contains("webhook"), "{}", answer.body);
    }
    // With a webhook target, an unsigned callback is 401.
    let p = Pipeline::with_config(&with_webhook_target()).await;
    p.secrets.set("/slipway/shop/deploy-hook", "deploy-hook-secret");
    assert_eq!(deploy_callback(&p, b"{}", None).await.status, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------------
// A whole release at TRACE: no secret and no token anywhere they should not be
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_release_logged_at_trace_leaks_no_secret_and_no_token() {
    let p = Pipeline::start().await;
    let logs = Logs::capture(Level::TRACE);
    let mut answers = Vec::new();

    // Two releases, so production has an older one to roll back to.
    for sha in [SHA, SHA2] {
        p.healthy("staging", sha);
        p.healthy("production", sha);
        answers.push(p.push(sha).await);
        answers.push(p.ci(sha, "success").await);
        p.run_queues().await;
        assert_eq!(p.deployed("staging").last().map(String::as_str), Some(sha));
        let approve = p.approval_for("alice").approve_url.unwrap();
        answers.push(p.get(&approve).await);
        answers.push(p.post_decision(&approve, "approve").await);
        p.run_queues().await;
        assert_eq!(p.run(sha).await.status(), RunStatus::Released);
        assert_eq!(p.deployed("production").last().map(String::as_str), Some(sha));
        p.advance(SignedDuration::from_mins(5));
    }
    let reject = p.approval_for("bob").reject_url.unwrap();
    let rollback = p
        .notifications_of("released")
        .into_iter()
        .filter(|n| n.sha == SHA2)
        .find_map(|n| n.rollback_url)
        .expect("a rollback link");
    let page = p.get(&rollback).await;
    assert_eq!(page.status, StatusCode::OK);
    let confirm_path = {
        let start = page
            .body
            .find(&format!("href=\"{BASE}/rollback/"))
            .expect("a rollback action")
            + format!("href=\"{BASE}").len();
        let end = start + page.body[start..].find('"').unwrap();
        page.body[start..end].to_owned()
    };
    answers.push(page);
    answers.push(p.get(&format!("{BASE}{confirm_path}")).await);
    assert_eq!(answers.last().unwrap().status, StatusCode::OK);
    p.run_queues().await;

    let secrets = p.secrets.values();
    assert!(secrets.len() >= 5, "{secrets:?}");
    let mut tokens: Vec<String> = p
        .notifications()
        .iter()
        .flat_map(|n| [n.approve_url.clone(), n.reject_url.clone(), n.rollback_url.clone()])
        .flatten()
        .map(|link| token_of(&link))
        .collect();
    tokens.push(token_of(&confirm_path));
    tokens.sort();
    tokens.dedup();
    assert!(tokens.len() >= 4, "{tokens:?}");
    assert!(tokens.contains(&token_of(&reject)));

    let logged = logs.text();
    assert!(
        logged.contains("TRACE") || logged.contains("DEBUG"),
        "the capture saw the fine levels"
    );
    let stored = p.stored_text().await;
    let notified = serde_json::to_string(&p.notifications()).unwrap();
    let answered: String = answers
        .iter()
        .map(|a| format!("{:?}\n{}\n", a.headers, a.body))
        .collect();
    for secret in &secrets {
        for (place, text) in [
            ("the logs", &logged),
            ("the stored state", &stored),
            ("the notifications", &notified),
            ("the answers", &answered),
        ] {
            assert!(!text.contains(secret.as_str()), "secret {secret:?} found in {place}");
        }
    }
    for token in &tokens {
        for (place, text) in [("the logs", &logged), ("the stored state", &stored)] {
            assert!(!text.contains(token.as_str()), "token {token:?} found in {place}");
        }
    }
    // Each link's token reaches only the approver it was made for.
    for n in p.notifications() {
        let own: Vec<String> = [&n.approve_url, &n.reject_url, &n.rollback_url]
            .into_iter()
            .flatten()
            .map(|link| token_of(link))
            .collect();
        let said = serde_json::to_string(&n).unwrap();
        for token in tokens.iter().filter(|t| !own.contains(t)) {
            assert!(
                !said.contains(token.as_str()),
                "another approver's token in {:?}'s notification",
                n.approver
            );
        }
    }
    // Requests were logged, by their route.
    assert!(logged.contains(r#"route="/approvals/{token}""#), "{logged}");
}

/// A link's token: what follows `?token=`, or the last path segment.
fn token_of(link: &str) -> String {
    match link.split_once("?token=") {
        Some((_, token)) => token.split('&').next().unwrap().to_owned(),
        None => link.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_huge_decision_on_the_approval_form_comes_back_short() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let approve = p.approval_for("alice").approve_url.unwrap();
    let path = url::Url::parse(&approve).unwrap().path().to_owned();
    let request = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("decision={}&comment=", "x".repeat(12 * 1024))))
        .unwrap();
    let answer = p.send(request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    // What the page says, without its stylesheet (the same on every page).
    let said = match (answer.body.find("<style>"), answer.body.find("</style>")) {
        (Some(from), Some(to)) => format!("{}{}", &answer.body[..from], &answer.body[to..]),
        _ => answer.body.clone(),
    };
    assert_short("the page", &said);
    assert!(answer.body.contains("(12288 bytes)"), "{}", answer.body);
    assert_eq!(
        p.approval_stage_status(SHA).await,
        StageStatus::Waiting,
        "nothing was decided"
    );
}

#[tokio::test(start_paused = true)]
async fn an_approval_recorded_whose_work_was_not_sent_says_the_sweep_sends_it() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let approve = p.approval_for("alice").approve_url.unwrap();
    p.queue.fail_next_sends(1);
    let page = p.post_decision(&approve, "approve").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("This was recorded"), "{}", page.body);
    assert!(page.body.contains("sweep sends it"), "{}", page.body);
    assert!(!page.body.contains("nothing was changed"), "{}", page.body);
    assert_eq!(p.approval_stage_status(SHA).await, StageStatus::Succeeded);
    // The sweep sends the deploy once the stage has been queued long enough.
    p.advance(SignedDuration::from_mins(3));
    slipway::sweep::run_once(&p.app).await.unwrap();
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
}

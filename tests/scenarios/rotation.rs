//! Rotating secrets and keys: a webhook or CI secret being replaced is still accepted until
//! the configured time, then refused like any wrong signature; links signed before a key
//! rotation keep working until their own expiry, and new ones are signed with the new key.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use http::StatusCode;
use jiff::SignedDuration;
use slipway::config::Config;
use slipway_tests::{CI_SECRET, CONFIG, GITHUB_SECRET, Pipeline, SHA, SHA2, push_payload};

/// A third commit.
const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f9012345678901a";

const OLD_GITHUB_SECRET: &str = "the-github-secret-being-retired";
const OLD_CI_SECRET: &str = "the-ci-secret-being-retired";

/// The harness's clock starts at 2026-11-21T09:00:00Z; the rotation windows end a day later.
const UNTIL: &str = "2026-11-22T09:00:00Z";

/// The scenario pipeline in the middle of rotating its GitHub and CI secrets.
fn rotating_secrets() -> String {
    CONFIG
        .replace(
            "webhook_secret = \"/slipway/github/webhook-secret\"\n",
            &format!(
                "webhook_secret = \"/slipway/github/webhook-secret\"\nprevious_webhook_secret = {{ param = \"/slipway/github/webhook-secret-old\", until = \"{UNTIL}\" }}\n"
            ),
        )
        .replace(
            "ci_secret = \"/slipway/shop/ci-secret\"\n",
            &format!(
                "ci_secret = \"/slipway/shop/ci-secret\"\nprevious_ci_secret = {{ param = \"/slipway/shop/ci-secret-old\", until = \"{UNTIL}\" }}\n"
            ),
        )
}

/// The scenario's `[approvals]` table replaced by `approvals` (a key rotation).
fn with_approvals(approvals: &str) -> String {
    CONFIG.replace(
        "[approvals]\nsigning_key = \"/slipway/approvals/signing-key\"\n",
        &format!("[approvals]\n{approvals}\n"),
    )
}

/// slipway restarted with a new configuration, over the same state, queues and secrets.
fn restart_with(p: &mut Pipeline, toml: &str) {
    let config = Config::parse(toml, Path::new("scenario.toml")).unwrap();
    p.app.config = Arc::new(config);
    p.router = slipway::http::router(p.app.clone());
}

async fn push_signed_with(p: &Pipeline, sha: &str, secret: &str) -> slipway_tests::Answer {
    let body = push_payload("acme/shop", "main", sha);
    p.github("push", &format!("delivery-{sha}"), body.as_bytes(), secret)
        .await
}

fn ci_body(sha: &str) -> Vec<u8> {
    serde_json::json!({"repo": "acme/shop", "sha": sha, "status": "success"})
        .to_string()
        .into_bytes()
}

#[tokio::test(start_paused = true)]
async fn a_push_signed_with_the_old_secret_is_accepted_until_the_window_ends_then_refused() {
    let p = Pipeline::with_config(&rotating_secrets()).await;
    p.secrets.set("/slipway/github/webhook-secret-old", OLD_GITHUB_SECRET);
    p.secrets.set("/slipway/shop/ci-secret-old", OLD_CI_SECRET);

    // During the window: GitHub still signs with the old secret, CI already with the new one.
    assert_eq!(
        push_signed_with(&p, SHA, OLD_GITHUB_SECRET).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        push_signed_with(&p, SHA2, GITHUB_SECRET).await.status,
        StatusCode::CREATED
    );
    assert_eq!(p.ci_raw(&ci_body(SHA), OLD_CI_SECRET).await.status, StatusCode::OK);
    assert_eq!(p.ci_raw(&ci_body(SHA2), CI_SECRET).await.status, StatusCode::OK);

    // The window ends: the old secrets are refused exactly as a wrong one is.
    p.advance(SignedDuration::from_hours(24));
    let old = push_signed_with(&p, SHA3, OLD_GITHUB_SECRET).await;
    let wrong = push_signed_with(&p, SHA3, "a secret nobody configured").await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    assert_eq!((old.status, &old.body), (wrong.status, &wrong.body));
    let old = p.ci_raw(&ci_body(SHA3), OLD_CI_SECRET).await;
    let wrong = p.ci_raw(&ci_body(SHA3), "a secret nobody configured").await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    assert_eq!((old.status, &old.body), (wrong.status, &wrong.body));
    assert!(!old.body.contains(OLD_CI_SECRET) && !old.body.contains("ci-secret-old"));

    // The current secrets work as ever.
    assert_eq!(
        push_signed_with(&p, SHA3, GITHUB_SECRET).await.status,
        StatusCode::CREATED
    );
    assert_eq!(p.ci_raw(&ci_body(SHA3), CI_SECRET).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_approval_link_sent_before_a_key_rotation_still_approves_after_it() {
    let mut p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let sent_before = p.approval_for("alice").approve_url.unwrap();
    assert!(
        !sent_before.contains("/approvals/v1.2026-11."),
        "no key id yet: {sent_before}"
    );

    // The key is rotated: the old one stays, without an id, for the links already sent.
    p.secrets
        .set("/slipway/approvals/signing-key-2026-11", "the-new-approval-signing-key");
    restart_with(
        &mut p,
        &with_approvals(
            "signing_key = \"/slipway/approvals/signing-key-2026-11\"\nkey_id = \"2026-11\"\nprevious_keys = [{ param = \"/slipway/approvals/signing-key\" }]",
        ),
    );
    assert_eq!(p.get(&sent_before).await.status, StatusCode::OK);
    assert_eq!(p.post_decision(&sent_before, "approve").await.status, StatusCode::OK);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);

    // Links sent from now on carry the new key's id, and are checked with the new key.
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    p.to_approval(SHA2).await;
    let sent_after = p.approval_for("bob").approve_url.unwrap();
    assert!(sent_after.contains("/approvals/v1.2026-11."), "{sent_after}");
    assert_eq!(p.get(&sent_after).await.status, StatusCode::OK);

    // A key id no key is configured for is answered as a forged link is.
    let unknown_id = sent_after.replacen("/approvals/v1.2026-11.", "/approvals/v1.2026-09.", 1);
    let forged = format!("{}A", sent_after.split('?').next().unwrap());
    for link in [unknown_id, forged] {
        let page = p.get(&link).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{link}");
        assert!(page.body.contains("Invalid link"), "{}", page.body);
        assert_eq!(p.post_decision(&link, "approve").await.status, StatusCode::FORBIDDEN);
    }

    // The next rotation retires the key without an id: its links are refused now.
    p.secrets.set(
        "/slipway/approvals/signing-key-2026-12",
        "the-next-approval-signing-key",
    );
    restart_with(
        &mut p,
        &with_approvals(
            "signing_key = \"/slipway/approvals/signing-key-2026-12\"\nkey_id = \"2026-12\"\nprevious_keys = [{ id = \"2026-11\", param = \"/slipway/approvals/signing-key-2026-11\" }]",
        ),
    );
    assert_eq!(p.get(&sent_before).await.status, StatusCode::FORBIDDEN);
    assert_eq!(p.post_decision(&sent_after, "approve").await.status, StatusCode::OK);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2]);
}

#[tokio::test(start_paused = true)]
async fn a_link_signed_with_a_previous_key_still_expires() {
    let mut p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("alice").approve_url.unwrap();
    p.secrets
        .set("/slipway/approvals/signing-key-2026-11", "the-new-approval-signing-key");
    restart_with(
        &mut p,
        &with_approvals(
            "signing_key = \"/slipway/approvals/signing-key-2026-11\"\nkey_id = \"2026-11\"\nprevious_keys = [{ param = \"/slipway/approvals/signing-key\" }]",
        ),
    );
    p.advance(SignedDuration::from_hours(25));
    assert_eq!(p.get(&link).await.status, StatusCode::GONE);
    assert_eq!(p.post_decision(&link, "approve").await.status, StatusCode::GONE);
}

// ---------------------------------------------------------------------------------------
// Every other inbound secret: GitLab's token and signing key, Bitbucket, Slack, and the
// webhook deploy target's callbacks.
// ---------------------------------------------------------------------------------------

mod every_inbound_secret {
    use axum::body::Body;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use hmac::{Hmac, Mac};
    use http::{Request, StatusCode};
    use jiff::SignedDuration;
    use sha2::Sha256;
    use slipway_tests::{Answer, CONFIG, Pipeline};

    use super::UNTIL;

    const TOKEN: &str = "gitlab-token-new";
    const OLD_TOKEN: &str = "gitlab-token-old";
    /// `whsec_` + base64 of "gitlab-key-new" / "gitlab-key-old".
    const KEY: &str = "whsec_Z2l0bGFiLWtleS1uZXc=";
    const OLD_KEY: &str = "whsec_Z2l0bGFiLWtleS1vbGQ=";
    const BITBUCKET: &str = "bitbucket-new";
    const OLD_BITBUCKET: &str = "bitbucket-old";
    const SLACK: &str = "slack-new";
    const OLD_SLACK: &str = "slack-old";
    const DEPLOY: &str = "deploy-hook-new";
    const OLD_DEPLOY: &str = "deploy-hook-old";

    fn previous(param: &str) -> String {
        format!("{{ param = \"{param}\", until = \"{UNTIL}\" }}")
    }

    /// Every host configured, each mid-rotation; staging deploys through a webhook target.
    fn config() -> String {
        let staging = "deploy = { type = \"command\", command = [\"./deploy.sh\", \"staging\"], timeout = \"10m\", secrets = { DATABASE_URL = \"/slipway/shop/staging/database-url\" } }";
        assert!(CONFIG.contains(staging));
        CONFIG.replace(
            staging,
            &format!(
                "deploy = {{ type = \"webhook\", url = \"https://deploy.example.com/hook\", secret = \"/s/deploy\", previous_secret = {} }}",
                previous("/s/deploy-old")
            ),
        ) + &format!(
            "
[gitlab]
token = \"/s/gitlab-token\"
previous_token = {}
signing_key = \"/s/gitlab-key\"
previous_signing_key = {}

[bitbucket]
secret = \"/s/bitbucket\"
previous_secret = {}

[slack]
signing_secret = \"/s/slack\"
previous_signing_secret = {}
",
            previous("/s/gitlab-token-old"),
            previous("/s/gitlab-key-old"),
            previous("/s/bitbucket-old"),
            previous("/s/slack-old"),
        )
    }

    async fn pipeline() -> Pipeline {
        let p = Pipeline::with_config(&config()).await;
        for (name, value) in [
            ("/s/gitlab-token", TOKEN),
            ("/s/gitlab-token-old", OLD_TOKEN),
            ("/s/gitlab-key", KEY),
            ("/s/gitlab-key-old", OLD_KEY),
            ("/s/bitbucket", BITBUCKET),
            ("/s/bitbucket-old", OLD_BITBUCKET),
            ("/s/slack", SLACK),
            ("/s/slack-old", OLD_SLACK),
            ("/s/deploy", DEPLOY),
            ("/s/deploy-old", OLD_DEPLOY),
        ] {
            p.secrets.set(name, value);
        }
        p
    }

    fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A GitLab delivery of an event slipway ignores, with `token` and signed with `key`.
    async fn gitlab(p: &Pipeline, token: &str, key: &str) -> Answer {
        let body = br#"{"object_kind":"note"}"#;
        let at = p.now().as_second().to_string();
        let key = BASE64.decode(key.trim_start_matches("whsec_")).unwrap();
        let signature = BASE64.encode(mac(&key, &[b"msg-1.", at.as_bytes(), b".", body]));
        let request = Request::post("/hooks/gitlab")
            .header("x-gitlab-event", "Note Hook")
            .header("x-gitlab-token", token)
            .header("webhook-id", "msg-1")
            .header("webhook-timestamp", &at)
            .header("webhook-signature", format!("v1,{signature}"))
            .body(Body::from(body.to_vec()))
            .unwrap();
        p.send(request).await
    }

    /// A Bitbucket delivery of an event slipway ignores, signed with `secret`.
    async fn bitbucket(p: &Pipeline, secret: &str) -> Answer {
        let body = br#"{"fork":{}}"#;
        let request = Request::post("/hooks/bitbucket")
            .header("x-event-key", "repo:fork")
            .header("x-hub-signature", slipway::signature::sign(secret.as_bytes(), body))
            .body(Body::from(body.to_vec()))
            .unwrap();
        p.send(request).await
    }

    /// A Slack interaction (of a kind slipway ignores), signed with `secret`.
    async fn slack(p: &Pipeline, secret: &str) -> Answer {
        let body = b"payload=%7B%22type%22%3A%22view_submission%22%7D";
        let at = p.now().as_second().to_string();
        let signature = hex::encode(mac(secret.as_bytes(), &[b"v0:", at.as_bytes(), b":", body]));
        let request = Request::post("/hooks/slack/interactions")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", &at)
            .header("x-slack-signature", format!("v0={signature}"))
            .body(Body::from(body.to_vec()))
            .unwrap();
        p.send(request).await
    }

    /// A deploy callback for a run that does not exist, signed with `secret`.
    async fn deploy_callback(p: &Pipeline, secret: &str) -> Answer {
        let body = br#"{"run":"shop-0000000000000000000000000000000000000001","env":"staging","phase":"release","status":"succeeded"}"#;
        let request = Request::post("/hooks/deploy")
            .header("x-slipway-signature", slipway::signature::sign(secret.as_bytes(), body))
            .body(Body::from(body.to_vec()))
            .unwrap();
        p.send(request).await
    }

    /// Each hook's answer to a request signed with the given secrets.
    async fn answers(p: &Pipeline, current: bool) -> Vec<(&'static str, StatusCode)> {
        let pick = |new: &'static str, old: &'static str| if current { new } else { old };
        vec![
            ("gitlab token", gitlab(p, pick(TOKEN, OLD_TOKEN), KEY).await.status),
            ("gitlab signing key", gitlab(p, TOKEN, pick(KEY, OLD_KEY)).await.status),
            ("bitbucket", bitbucket(p, pick(BITBUCKET, OLD_BITBUCKET)).await.status),
            ("slack", slack(p, pick(SLACK, OLD_SLACK)).await.status),
            (
                "deploy callback",
                deploy_callback(p, pick(DEPLOY, OLD_DEPLOY)).await.status,
            ),
        ]
    }

    /// What each hook answers once the signature is accepted: an ignored event, or (for the
    /// callback) no such run.
    const PAST_THE_SIGNATURE: [(&str, StatusCode); 5] = [
        ("gitlab token", StatusCode::ACCEPTED),
        ("gitlab signing key", StatusCode::ACCEPTED),
        ("bitbucket", StatusCode::ACCEPTED),
        ("slack", StatusCode::OK),
        ("deploy callback", StatusCode::NOT_FOUND),
    ];

    #[tokio::test(start_paused = true)]
    async fn each_previous_secret_is_accepted_until_the_window_ends_then_refused() {
        let p = pipeline().await;
        assert_eq!(answers(&p, true).await, PAST_THE_SIGNATURE);
        assert_eq!(answers(&p, false).await, PAST_THE_SIGNATURE);

        p.advance(SignedDuration::from_hours(24));
        assert_eq!(answers(&p, true).await, PAST_THE_SIGNATURE);
        let refused: Vec<_> = PAST_THE_SIGNATURE
            .iter()
            .map(|(hook, _)| (*hook, StatusCode::UNAUTHORIZED))
            .collect();
        assert_eq!(answers(&p, false).await, refused);
    }
}

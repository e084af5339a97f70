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

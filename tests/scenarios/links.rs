//! Links slipway sends are built from `public_url` with `url::Url`: a `public_url` with a path
//! prefix keeps it, and every part taken from data is escaped as one path segment.

// Test helpers are not #[test] functions, so clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

use slipway_tests::{CONFIG, Pipeline, SHA};

async fn behind(public_url: &str) -> Pipeline {
    let config = CONFIG.replace(
        "public_url = \"https://slipway.example.com\"",
        &format!("public_url = \"{public_url}\""),
    );
    assert_ne!(config, CONFIG);
    Pipeline::with_config(&config).await
}

#[tokio::test]
async fn a_public_url_with_a_path_prefix_keeps_it_in_every_link() {
    for public_url in ["https://ci.example.com/slipway", "https://ci.example.com/slipway/"] {
        let p = behind(public_url).await;
        assert_eq!(p.app.link(""), "https://ci.example.com/slipway");
        assert_eq!(p.app.link("/"), "https://ci.example.com/slipway/");
        assert_eq!(p.app.link("/approvals"), "https://ci.example.com/slipway/approvals");
        assert_eq!(
            p.app.link("/runs/shop-1?token=t.1"),
            "https://ci.example.com/slipway/runs/shop-1?token=t.1"
        );

        p.push(SHA).await;
        p.ci(SHA, "success").await;
        p.run_queues().await;
        let asked = p.approval_for("alice");
        let approve = asked.approve_url.unwrap();
        assert!(
            approve.starts_with("https://ci.example.com/slipway/approvals/v1."),
            "{approve}"
        );
        assert!(approve.ends_with("?decision=approve"), "{approve}");
        let reject = asked.reject_url.unwrap();
        assert_eq!(
            reject.trim_end_matches("?decision=reject"),
            approve.trim_end_matches("?decision=approve")
        );
        let run = format!("https://ci.example.com/slipway/runs/shop-{SHA}");
        assert_eq!(asked.run_url, run);
        let sign_in = asked.sign_in_url.unwrap();
        assert!(
            sign_in.starts_with("https://ci.example.com/slipway/login/v1."),
            "{sign_in}"
        );
        // Nothing was joined twice.
        for link in [&approve, &reject, &run, &sign_in] {
            assert!(!link["https://".len()..].contains("//"), "{link}");
        }
    }
}

#[tokio::test]
async fn parts_of_a_link_are_escaped_as_path_segments() {
    let p = behind("https://ci.example.com/slipway").await;
    assert_eq!(
        p.app.url(&["runs", "a b/c?d#e"]).as_str(),
        "https://ci.example.com/slipway/runs/a%20b%2Fc%3Fd%23e"
    );
    let p = Pipeline::start().await;
    assert_eq!(
        p.app
            .url(&["pipelines", "shop", "releases", "production", "1764000000"])
            .as_str(),
        "https://slipway.example.com/pipelines/shop/releases/production/1764000000"
    );
}

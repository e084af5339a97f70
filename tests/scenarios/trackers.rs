//! Ticket watchers: a release comments on each ticket its commits mention — once, whatever
//! the redeliveries and retries — a tracker that is down is retried through the notify queue
//! without holding the release back, and a rollback adds a follow-up. The trackers are fake
//! HTTP servers on 127.0.0.1 that check the requests' shapes.

use base64::Engine as _;
use http::StatusCode;
use jiff::SignedDuration;
use serde_json::{Value, json};
use slipway::domain::{Notice, NoticeKind, RunStatus};
use slipway::ports::{Queue as _, QueueName};
use slipway_tests::logs::Logs;
use slipway_tests::trackers::FakeTracker;
use slipway_tests::{CONFIG, Pipeline, SHA, SHA2};

const JIRA_TOKEN: &str = "jira-api-t0ken-never-logged";
const GITHUB_TOKEN: &str = "ghp-t0ken-never-logged";
const HOOK_SECRET: &str = "tickets-hook-s3cret";
const C1: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const C2: &str = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";
const ZERO: &str = "0000000000000000000000000000000000000000";
const SITE: &str = "https://slipway.example.com";

/// The fake trackers of a scenario.
struct Trackers {
    jira: FakeTracker,
    github: FakeTracker,
    hook: FakeTracker,
}

/// The scenario pipeline with a Jira Cloud tracker (project SHOP), a GitHub tracker and a
/// webhook tracker, each a fake on 127.0.0.1.
async fn start() -> (Pipeline, Trackers) {
    let t = Trackers {
        jira: FakeTracker::start().await,
        github: FakeTracker::start().await,
        hook: FakeTracker::start().await,
    };
    let config = format!(
        r#"{CONFIG}
[[pipelines.trackers]]
kind = "jira"
url = "{jira}/jira"
keys = ["SHOP"]
api = "cloud"
email = "bot@acme.com"
token = "/slipway/jira/token"

[[pipelines.trackers]]
kind = "github"
url = "{github}"
token = "/slipway/github/token"

[[pipelines.trackers]]
kind = "webhook"
url = "{hook}/hooks/tickets"
keys = ["SHOP"]
secret = "/slipway/tickets/hook-secret"
"#,
        jira = t.jira.url,
        github = t.github.url,
        hook = t.hook.url,
    );
    let p = Pipeline::with_config(&config).await;
    p.secrets.set("/slipway/jira/token", JIRA_TOKEN);
    p.secrets.set("/slipway/github/token", GITHUB_TOKEN);
    p.secrets.set("/slipway/tickets/hook-secret", HOOK_SECRET);
    (p, t)
}

/// GitHub delivers a push that moved `main` from `before` to `sha`, carrying `commits`
/// (`(sha, message)`, oldest first, `sha` last).
async fn push_commits(p: &Pipeline, sha: &str, before: &str, commits: &[(&str, &str)]) {
    let listed: Vec<(&str, &str, Option<jiff::Timestamp>)> = commits.iter().map(|(id, m)| (*id, *m, None)).collect();
    p.push_carrying(sha, before, &listed).await;
}

/// `sha`'s push built green and approved by alice; the workers are left to it.
async fn ship(p: &Pipeline, sha: &str, before: &str, commits: &[(&str, &str)]) {
    p.healthy("staging", sha);
    p.healthy("production", sha);
    push_commits(p, sha, before, commits).await;
    assert_eq!(p.ci(sha, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    let approve = p
        .notifications_of("approval_requested")
        .into_iter()
        .rev()
        .find(|n| n.sha == sha && n.approver.as_deref() == Some("alice"))
        .and_then(|n| n.approve_url)
        .expect("an approve link for alice");
    assert_eq!(p.post_decision(&approve, "approve").await.status, StatusCode::OK);
    p.run_queues().await;
}

/// The first release: SHA carries two commits mentioning SHOP-1, SHOP-2 and issue #12.
async fn first_release(p: &Pipeline) {
    ship(
        p,
        SHA,
        ZERO,
        &[
            (C1, "SHOP-1 Add the basket model (#12)\n\nIt holds items."),
            (C2, "SHOP-2 Price the basket"),
            (SHA, "Add the basket page, for SHOP-1"),
        ],
    )
    .await;
}

/// The `released` notice of the run of `sha`, as the transition queued it.
async fn released_notice(p: &Pipeline, sha: &str) -> Notice {
    let run = p.run(sha).await;
    let seq = run
        .history
        .iter()
        .position(|h| h.what.starts_with("released "))
        .expect("the run was released");
    Notice {
        run: run.id,
        seq,
        kind: NoticeKind::Released {
            env: "production".parse().expect("an env"),
        },
    }
}

const SHOP_1: &str = "/jira/rest/api/3/issue/SHOP-1/comment";
const SHOP_2: &str = "/jira/rest/api/3/issue/SHOP-2/comment";
const ISSUE_12: &str = "/repos/acme/shop/issues/12/comments";

/// The text of each paragraph of an ADF document.
fn adf_paragraphs(body: &Value) -> Vec<String> {
    body["body"]["content"]
        .as_array()
        .expect("ADF content")
        .iter()
        .map(|p| {
            assert_eq!(p["type"], "paragraph", "{p}");
            p["content"][0]["text"].as_str().expect("a text node").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_release_comments_once_on_each_ticket_its_commits_mention() {
    let (p, t) = start().await;
    first_release(&p).await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
    let run = p.run(SHA).await;
    let link = format!("{SITE}/runs/{}", run.id);

    // Jira Cloud: REST v3, basic auth with the email and the token, an ADF body.
    assert_eq!(t.jira.taken_paths(), [SHOP_1, SHOP_2]);
    let shop1 = &t.jira.taken(SHOP_1)[0];
    assert_eq!(shop1.method, http::Method::POST);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot@acme.com:{JIRA_TOKEN}"));
    assert_eq!(shop1.header("authorization"), format!("Basic {basic}"));
    assert_eq!(shop1.header("content-type"), "application/json");
    let body = shop1.json();
    assert_eq!(
        (body["body"]["type"].clone(), body["body"]["version"].clone()),
        (json!("doc"), json!(1))
    );
    let text = adf_paragraphs(&body).join("\n");
    assert!(text.contains("Shipped to production"), "{text}");
    assert!(text.contains(&SHA[..12]), "{text}");
    assert!(text.contains(&format!("Run: {link}")), "{text}");
    // The commits that mention SHOP-1, and not the one that does not.
    assert!(
        text.contains(&format!("{} SHOP-1 Add the basket model", &C1[..12])),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} Add the basket page, for SHOP-1", &SHA[..12])),
        "{text}"
    );
    assert!(!text.contains("Price the basket"), "{text}");
    assert!(!text.contains("It holds items."), "subjects only: {text}");

    // GitHub: a comment on #12 of the pipeline's repository.
    assert_eq!(t.github.taken_paths(), [ISSUE_12]);
    let issue = &t.github.taken(ISSUE_12)[0];
    assert_eq!(issue.header("authorization"), format!("Bearer {GITHUB_TOKEN}"));
    assert_eq!(issue.header("accept"), "application/vnd.github+json");
    let comment = issue.json()["body"].as_str().expect("a text body").to_owned();
    assert!(
        comment.contains("Shipped to production") && comment.contains(&link),
        "{comment}"
    );

    // The webhook: one signed POST listing the tickets and commits.
    let posts = t.hook.taken("/hooks/tickets");
    assert_eq!(posts.len(), 1);
    let post = &posts[0];
    assert_eq!(
        slipway::signature::verify(
            HOOK_SECRET.as_bytes(),
            Some(post.header("x-slipway-signature")),
            &post.body
        ),
        Ok(())
    );
    assert_eq!(post.header("x-slipway-event"), "tickets.released");
    let listed = post.json();
    assert_eq!(listed["tickets"], json!(["SHOP-1", "SHOP-2", "acme/shop#12"]));
    let shas: Vec<&str> = listed["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .map(|c| c["sha"].as_str().expect("a sha"))
        .collect();
    assert_eq!(shas, [C1, C2, SHA]);

    // The notify message delivered again, later than a worker's visibility timeout (the
    // notice's own marker then lets its channels be sent again): no tracker hears twice.
    let notice = released_notice(&p, SHA).await;
    for _ in 0..2 {
        p.advance(SignedDuration::from_mins(5));
        slipway::handlers::notify::handle(&p.app, &notice, None)
            .await
            .expect("delivered");
    }
    assert_eq!(t.jira.taken_paths(), [SHOP_1, SHOP_2]);
    assert_eq!(t.github.taken_paths(), [ISSUE_12]);
    assert_eq!(t.hook.received().len(), 1);
}

#[tokio::test]
async fn a_tracker_that_is_down_is_retried_without_holding_the_release_and_comments_once() {
    let logs = Logs::capture(tracing::Level::TRACE);
    let (p, t) = start().await;
    t.jira.fail("SHOP-2", 500);
    first_release(&p).await;

    // Released all the same; the notify message failed and waits for its retry.
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
    assert_eq!(p.deployed("production"), [SHA]);
    assert_eq!(t.jira.taken_paths(), [SHOP_1]);
    assert_eq!(t.jira.received().len(), 2, "SHOP-2 was tried");
    assert_eq!(p.pending(QueueName::Notify).len(), 1, "the notice waits to be retried");
    let channels = p.notifications_of("released").len();
    assert!(channels > 0);

    // Still down at the first retry.
    p.advance(SignedDuration::from_mins(1));
    p.run_queues().await;
    assert_eq!(t.jira.taken_paths(), [SHOP_1]);
    assert_eq!(t.jira.received().len(), 3);

    // Back up: the retry comments on SHOP-2 only, and the channels are not sent again.
    t.jira.recover();
    p.advance(SignedDuration::from_mins(1));
    p.run_queues().await;
    assert_eq!(t.jira.taken_paths(), [SHOP_1, SHOP_2]);
    assert_eq!(t.github.taken_paths(), [ISSUE_12]);
    assert_eq!(t.hook.taken("/hooks/tickets").len(), 1);
    assert_eq!(p.notifications_of("released").len(), channels);
    assert!(p.pending(QueueName::Notify).is_empty());
    assert!(p.queue.dead_letters().await.expect("reads").is_empty());
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);

    // The tokens never reach the logs, as such or encoded.
    let said = logs.text();
    assert!(said.contains("tracker failed; will retry"), "the failure is logged");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot@acme.com:{JIRA_TOKEN}"));
    for secret in [JIRA_TOKEN, GITHUB_TOKEN, HOOK_SECRET, basic.as_str()] {
        assert!(!said.contains(secret), "a token was logged");
    }
}

#[tokio::test]
async fn a_tracker_down_for_good_ends_in_the_dead_letters_and_the_release_stands() {
    let (p, t) = start().await;
    t.github.fail("/repos/", 503);
    first_release(&p).await;
    for _ in 0..8 {
        p.advance(SignedDuration::from_mins(10));
        p.run_queues().await;
    }
    let dead = p.queue.dead_letters().await.expect("reads");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].body.contains("released"), "{}", dead[0].body);
    assert!(t.github.received().len() >= 2, "retried");
    assert!(t.github.taken_paths().is_empty());
    // The others commented once, whatever the retries.
    assert_eq!(t.jira.taken_paths(), [SHOP_1, SHOP_2]);
    assert_eq!(t.hook.received().len(), 1);
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
    assert_eq!(p.deployed("production"), [SHA]);
}

#[tokio::test]
async fn a_rollback_adds_a_follow_up_to_the_tickets_of_the_release_it_undid() {
    let (p, t) = start().await;
    first_release(&p).await;
    p.advance(SignedDuration::from_mins(10));
    ship(&p, SHA2, SHA, &[(SHA2, "SHOP-3 Faster basket")]).await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::Released);
    let shop3 = "/jira/rest/api/3/issue/SHOP-3/comment";
    assert_eq!(
        t.jira.taken_paths(),
        [SHOP_1, SHOP_2, shop3],
        "SHA2 shipped only SHOP-3"
    );

    // alice rolls production back to SHA.
    p.healthy("production", SHA);
    let shop = slipway::domain::PipelineName::parse("shop").expect("a name");
    slipway::handlers::deploy::request_rollback(&p.app, &shop, &"production".parse().expect("an env"), None, "alice")
        .await
        .expect("the rollback is asked for");
    p.run_queues().await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);

    assert_eq!(
        t.jira.taken_paths(),
        [SHOP_1, SHOP_2, shop3, shop3],
        "a follow-up on SHOP-3 only"
    );
    let follow_up = adf_paragraphs(&t.jira.taken(shop3)[1].json()).join("\n");
    assert!(follow_up.contains("Rolled back"), "{follow_up}");
    assert!(
        follow_up.contains(&SHA2[..12]) && follow_up.contains("production"),
        "{follow_up}"
    );
    let posts = t.hook.taken("/hooks/tickets");
    assert_eq!(posts.len(), 3, "two releases and a rollback");
    assert_eq!(posts[2].header("x-slipway-event"), "tickets.rolled_back");
    assert_eq!(posts[2].json()["tickets"], json!(["SHOP-3"]));

    // The rollback notice delivered again: no second follow-up.
    let run = p.run(SHA2).await;
    let seq = run
        .history
        .iter()
        .rposition(|h| h.what.starts_with("rolled production back"))
        .expect("rolled back");
    let notice = Notice {
        run: run.id.clone(),
        seq,
        kind: NoticeKind::RolledBack {
            env: "production".parse().expect("an env"),
            to: Some(SHA.parse().expect("a sha")),
            reason: "asked again".into(),
        },
    };
    p.advance(SignedDuration::from_mins(5));
    slipway::handlers::notify::handle(&p.app, &notice, None)
        .await
        .expect("delivered");
    assert_eq!(t.jira.taken(shop3).len(), 2);
    assert_eq!(t.hook.taken("/hooks/tickets").len(), 3);
}

#[tokio::test]
async fn a_release_rolled_back_before_its_checks_passed_tells_no_ticket() {
    let (p, t) = start().await;
    first_release(&p).await;
    p.advance(SignedDuration::from_mins(10));
    // Production keeps answering with SHA's version: SHA2's smoke checks fail there, and it
    // is rolled back without ever being released.
    p.healthy("staging", SHA2);
    push_commits(&p, SHA2, SHA, &[(SHA2, "SHOP-3 Faster basket")]).await;
    assert_eq!(p.ci(SHA2, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    let approve = p
        .notifications_of("approval_requested")
        .into_iter()
        .rev()
        .find(|n| n.sha == SHA2 && n.approver.as_deref() == Some("alice"))
        .and_then(|n| n.approve_url)
        .expect("an approve link");
    p.post_decision(&approve, "approve").await;
    p.run_queues().await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);
    assert_eq!(t.jira.taken_paths(), [SHOP_1, SHOP_2], "SHOP-3 hears nothing");
    assert_eq!(t.hook.taken("/hooks/tickets").len(), 1);
}

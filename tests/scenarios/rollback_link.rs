//! Rolling back from a link: when a release reaches production, each approver gets a signed
//! link to the run page, which offers "Roll back production". Opening the confirmation page
//! changes nothing; its button queues the rollback once. A link never rolls back anything
//! but the release it was sent for, and approval links, altered links and old links are
//! refused.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use http::{Request, StatusCode};
use jiff::SignedDuration;
use slipway::domain::{EnvName, PipelineName, RunStatus};
use slipway::handlers::deploy::{RollbackRefused, default_rollback_target, request_rollback};
use slipway::ports::Notification;
use slipway_tests::{Answer, CONFIG, Pipeline, SHA, SHA2};

/// A third commit, newer than both of the harness's.
const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f9012345678901a";

const BASE: &str = "https://slipway.example.com";

/// The scenario pipeline with a release bot among the approvers: it is told about
/// approvals, but never gets a rollback link.
fn with_a_bot() -> String {
    CONFIG.replace(
        "[[pipelines.approvers]]\nid = \"dev\"",
        "[[pipelines.approvers]]\nid = \"release-bot\"\naddress = \"#releases\"\nbot = true\n\n[[pipelines.approvers]]\nid = \"dev\"",
    )
}

/// The `released` notifications of the run of `sha`.
fn released(p: &Pipeline, sha: &str) -> Vec<Notification> {
    p.notifications_of("released")
        .into_iter()
        .filter(|n| n.sha == sha)
        .collect()
}

/// `approver`'s rollback link for the release of `sha`.
fn rollback_link(p: &Pipeline, sha: &str, approver: &str) -> String {
    released(p, sha)
        .into_iter()
        .find(|n| n.approver.as_deref() == Some(approver))
        .and_then(|n| n.rollback_url)
        .unwrap_or_else(|| panic!("no rollback link for {approver}: {:#?}", released(p, sha)))
}

/// The confirmation page the run page's "Roll back" action leads to.
fn action_of(page: &Answer) -> String {
    let start = page
        .body
        .find(&format!("href=\"{BASE}/rollback/"))
        .unwrap_or_else(|| panic!("no rollback action on the page: {}", page.body))
        + "href=\"".len();
    let end = start + page.body[start..].find('"').unwrap();
    page.body[start..end].to_owned()
}

/// The token of a link: what follows `?token=`, or the last path segment.
fn token_of(link: &str) -> String {
    match link.split_once("?token=") {
        Some((_, token)) => token.to_owned(),
        None => link.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned(),
    }
}

/// Someone presses the button on the confirmation page.
async fn press(p: &Pipeline, confirm: &str) -> Answer {
    let request = Request::post(confirm.strip_prefix(BASE).unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    p.send(request).await
}

async fn production_runs(p: &Pipeline) -> String {
    let (record, _) = p
        .app
        .environment(
            &PipelineName::parse("shop").unwrap(),
            &EnvName::parse("production").unwrap(),
        )
        .await
        .unwrap();
    record.current.unwrap().sha.to_string()
}

#[tokio::test(start_paused = true)]
async fn an_approver_rolls_production_back_from_the_link_in_the_release_notice() {
    let p = Pipeline::with_config(&with_a_bot()).await;
    p.release(SHA).await;
    p.release(SHA2).await;

    // Every approver who is a person gets their own link; the bot gets none.
    let notices = released(&p, SHA2);
    let mut who: Vec<_> = notices.iter().map(|n| n.approver.clone().unwrap()).collect();
    who.sort();
    assert_eq!(who, ["alice", "bob", "dev"]);
    let mut ids: Vec<_> = notices.iter().map(|n| n.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one id per recipient: {ids:?}");
    let alice = notices.iter().find(|n| n.approver.as_deref() == Some("alice")).unwrap();
    let link = alice.rollback_url.clone().unwrap();
    let run_b = p.run(SHA2).await.id;
    assert!(link.starts_with(&format!("{BASE}/runs/{run_b}?token=")), "{link}");
    assert_eq!(
        alice.expires_at.unwrap(),
        p.now()
            .checked_add(SignedDuration::from_hours(7 * 24 - 1) + SignedDuration::from_mins(50))
            .unwrap(),
        "a week from the release"
    );

    // The run page opened from the link offers the action.
    let page = p.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Roll back production"), "{}", page.body);
    assert_eq!(
        page.headers["referrer-policy"], "no-referrer",
        "the token stays on the page"
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    let confirm = action_of(&page);

    // The confirmation page names what runs now and what it goes back to; opening it
    // (or a chat unfurler opening it) changes nothing.
    let before = p.store.write_count();
    let shown = p.get(&confirm).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert!(shown.body.contains(&SHA2[..12]) && shown.body.contains(&SHA[..12]));
    assert!(shown.body.contains(r#"method="post""#));
    assert_eq!(shown.headers["referrer-policy"], "no-referrer");
    insta::assert_snapshot!("rollback_confirmation_page", shown.body);
    assert_eq!(p.store.write_count(), before, "GET wrote nothing");
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2]);

    // alice presses the button; the workers redeploy the release before.
    p.healthy("production", SHA);
    let done = press(&p, &confirm).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Rollback queued"), "{}", done.body);
    assert!(
        done.body.contains(&format!("href=\"{BASE}/runs/{run_b}\"")),
        "{}",
        done.body
    );
    assert!(
        done.body.contains(&format!("href=\"{BASE}/\"")),
        "and the pipelines: {}",
        done.body
    );
    p.run_queues().await;
    let b = p.run(SHA2).await;
    assert_eq!(b.status(), RunStatus::RolledBack);
    assert!(
        b.history
            .iter()
            .any(|h| h.what.contains("alice asked to roll production back")),
        "{:#?}",
        b.history
    );
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA]);
    let phases = p.deployer.phases_of("production");
    assert_eq!(phases[phases.len() - 3..], ["backup", "migrate", "release"]);
    assert_eq!(production_runs(&p).await, SHA);

    // Pressing again — or bob pressing his own link — rolls nothing back any further.
    let bobs = format!("{BASE}/rollback/{}", token_of(&rollback_link(&p, SHA2, "bob")));
    for again in [confirm.clone(), bobs] {
        let answer = press(&p, &again).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
        let run_a = p.run(SHA).await.id;
        assert!(answer.body.contains(&format!("/runs/{run_a}")), "{}", answer.body);
    }
    assert_eq!(p.get(&confirm).await.status, StatusCode::CONFLICT);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA], "no second rollback");

    // Production runs the first release again, and its own old link cannot "roll back"
    // to the newer release that was just rolled back: there is nothing older.
    let link_a = rollback_link(&p, SHA, "alice");
    let page_a = p.get(&link_a).await;
    assert!(page_a.body.contains("no release of an older commit"), "{}", page_a.body);
    assert!(
        !page_a.body.contains(&format!("href=\"{BASE}/rollback/")),
        "{}",
        page_a.body
    );
    let forward = press(&p, &format!("{BASE}/rollback/{}", token_of(&link_a))).await;
    assert_eq!(forward.status, StatusCode::CONFLICT, "{}", forward.body);

    // The run page says the link no longer applies, and offers nothing.
    let stale = p.get(&link).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert!(stale.body.contains("no longer applies"), "{}", stale.body);
    assert!(
        !stale.body.contains(&format!("href=\"{BASE}/rollback/")),
        "{}",
        stale.body
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_link_the_run_page_shows_the_cli_command_where_the_run_is_current() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.release(SHA2).await;
    let command = "slipway rollback --env production --pipeline shop";

    let current = p.read(&format!("{BASE}/runs/{}", p.run(SHA2).await.id)).await;
    assert_eq!(current.status, StatusCode::OK);
    let exact = format!("{command} --to {}", p.run(SHA).await.id);
    assert!(current.body.contains(&exact), "{}", current.body);
    assert!(
        !current.body.contains(&format!("href=\"{BASE}/rollback/")),
        "no action without a link"
    );

    let older = p.read(&format!("{BASE}/runs/{}", p.run(SHA).await.id)).await;
    assert!(!older.body.contains(command), "{}", older.body);
}

#[tokio::test(start_paused = true)]
async fn two_clicks_at_once_queue_exactly_one_rollback() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.release(SHA2).await;
    let alice = action_of(&p.get(&rollback_link(&p, SHA2, "alice")).await);
    let bob = action_of(&p.get(&rollback_link(&p, SHA2, "bob")).await);
    let (a, b) = tokio::join!(press(&p, &alice), press(&p, &bob));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        a.body,
        b.body
    );
    // Until the workers have done it, the pages say it is under way.
    let later = p.get(&alice).await;
    assert_eq!(later.status, StatusCode::CONFLICT);
    assert!(later.body.contains("still at work on production"), "{}", later.body);
    p.healthy("production", SHA);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA]);
}

#[tokio::test(start_paused = true)]
async fn a_link_for_a_release_that_was_followed_by_a_newer_one_answers_409_naming_it() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.release(SHA2).await;
    let link_b = rollback_link(&p, SHA2, "alice");
    let confirm_b = format!("{BASE}/rollback/{}", token_of(&link_b));
    p.release(SHA3).await;

    let run_c = p.run(SHA3).await.id;
    let answer = press(&p, &confirm_b).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert!(
        answer.body.contains(&format!("href=\"{BASE}/runs/{run_c}\"")),
        "names and links the run production runs now: {}",
        answer.body
    );
    let page = p.get(&link_b).await;
    assert!(page.body.contains("no longer applies"), "{}", page.body);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA3]);
    assert_eq!(p.run(SHA3).await.status(), RunStatus::Released);
}

#[tokio::test(start_paused = true)]
async fn altered_approval_and_garbage_links_roll_nothing_back() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    p.to_approval(SHA2).await;
    let approval = p.approval_for("alice").approve_url.unwrap();
    assert_eq!(p.post_decision(&approval, "approve").await.status, StatusCode::OK);
    p.run_queues().await;
    let writes = p.store.write_count();

    // An altered rollback link (one character of its signature changed).
    let mut tampered = format!("{BASE}/rollback/{}", token_of(&rollback_link(&p, SHA2, "alice"))).into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(p.get(&tampered).await.status, StatusCode::FORBIDDEN);
    assert_eq!(press(&p, &tampered).await.status, StatusCode::FORBIDDEN);

    // alice's approval link for the same run and environment, used as a rollback link.
    let as_rollback = format!("{BASE}/rollback/{}", token_of(approval.split('?').next().unwrap()));
    let refused = press(&p, &as_rollback).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.body.contains("approval link cannot roll anything back"),
        "{}",
        refused.body
    );
    // … and a rollback link used as an approval link.
    let as_approval = format!("{BASE}/approvals/{}", token_of(&rollback_link(&p, SHA2, "alice")));
    assert_eq!(
        p.post_decision(&as_approval, "approve").await.status,
        StatusCode::FORBIDDEN
    );

    // Not a slipway link at all.
    assert_eq!(
        press(&p, &format!("{BASE}/rollback/hello")).await.status,
        StatusCode::NOT_FOUND
    );

    // None of these opens the run page to someone who has not signed in; to someone who
    // has, the page says the link is not valid and how to roll back.
    let run_b = p.run(SHA2).await.id;
    for token in [token_of(&tampered), token_of(&as_rollback), "hello".to_owned()] {
        let anonymous = p.get(&format!("{BASE}/runs/{run_b}?token={token}")).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert!(anonymous.body.contains("Sign in to slipway"), "{}", anonymous.body);
        assert!(
            !anonymous.body.contains("Add the basket page"),
            "no run data: {}",
            anonymous.body
        );
        let page = p.read(&format!("{BASE}/runs/{run_b}?token={token}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("This rollback link is not valid"), "{}", page.body);
        assert!(
            page.body.contains("slipway rollback --env production --pipeline shop"),
            "{}",
            page.body
        );
        assert!(
            !page.body.contains(&format!("href=\"{BASE}/rollback/")),
            "{}",
            page.body
        );
    }

    p.run_queues().await;
    assert_eq!(p.store.write_count(), writes, "nothing changed");
    assert_eq!(p.deployed("production"), [SHA, SHA2]);
    assert_eq!(p.run(SHA2).await.status(), RunStatus::Released);
}

#[tokio::test(start_paused = true)]
async fn an_old_link_has_expired_and_the_page_says_to_use_the_cli() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.release(SHA2).await;
    let link = rollback_link(&p, SHA2, "alice");
    let confirm = format!("{BASE}/rollback/{}", token_of(&link));
    p.advance(SignedDuration::from_hours(7 * 24));

    let page = p.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("This rollback link expired"), "{}", page.body);
    assert!(
        page.body.contains("slipway rollback --env production --pipeline shop"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(&format!("href=\"{BASE}/rollback/")),
        "{}",
        page.body
    );
    assert_eq!(p.get(&confirm).await.status, StatusCode::GONE);
    let answer = press(&p, &confirm).await;
    assert_eq!(answer.status, StatusCode::GONE, "{}", answer.body);
    assert!(answer.body.contains("expired"), "{}", answer.body);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2]);
    assert_eq!(p.run(SHA2).await.status(), RunStatus::Released);
}

#[tokio::test(start_paused = true)]
async fn without_approvers_the_release_notice_is_one_notice_without_a_link() {
    let config = CONFIG.replace("mode = \"delivery\"", "mode = \"deployment\"");
    let config = config.split("[[pipelines.approvers]]").next().unwrap().to_owned()
        + &config[config.find("[[pipelines.environments]]").unwrap()..];
    let p = Pipeline::with_config(&config).await;
    assert_eq!(p.push(SHA).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA, "success").await.status, StatusCode::OK);
    p.run_queues().await;
    let notices = released(&p, SHA);
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert!(notices[0].rollback_url.is_none() && notices[0].approver.is_none());
}

fn shop() -> PipelineName {
    PipelineName::parse("shop").unwrap()
}

fn production() -> EnvName {
    EnvName::parse("production").unwrap()
}

/// `slipway rollback --env production` without `--to`, as the CLI asks the library.
async fn cli_rollback(p: &Pipeline) -> Result<slipway::domain::Run, RollbackRefused> {
    request_rollback(&p.app, &shop(), &production(), None, "carol").await
}

#[tokio::test(start_paused = true)]
async fn the_cli_and_the_link_go_back_to_the_same_release_and_a_second_rollback_is_a_no_op() {
    let p = Pipeline::start().await;
    p.release(SHA).await;
    p.release(SHA2).await;
    p.release(SHA3).await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA3]);

    // The link's confirmation page and the CLI's target agree: the release of SHA2.
    let confirm = action_of(&p.get(&rollback_link(&p, SHA3, "alice")).await);
    let shown = p.get(&confirm).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert!(shown.body.contains(&SHA2[..12]), "{}", shown.body);
    let (from, to) = default_rollback_target(&p.app, &shop(), &production()).await.unwrap();
    assert_eq!((from.sha.as_str(), to.sha.as_str()), (SHA3, SHA2));

    // The CLI rolls back to it.
    let run = cli_rollback(&p).await.unwrap();
    assert_eq!(run.sha.as_str(), SHA3);
    p.healthy("production", SHA2);
    p.run_queues().await;
    assert_eq!(production_runs(&p).await, SHA2);
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA3, SHA2]);

    // Twice in a row: neither back to SHA3 (the old "release before" in time) nor on to
    // SHA; a clear no-op.
    let again = cli_rollback(&p).await.unwrap_err();
    assert!(matches!(again, RollbackRefused::Nothing(_)), "{again:?}");
    assert_eq!(
        again.to_string(),
        format!(
            "production already runs {}, the newest release older than {}; nothing to roll back (name an earlier release with --to to go further back)",
            &SHA2[..12],
            &SHA3[..12]
        )
    );
    // The link of the release now running says the same, and changes nothing either.
    let link_b = format!("{BASE}/rollback/{}", token_of(&rollback_link(&p, SHA2, "alice")));
    let answer = press(&p, &link_b).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert!(answer.body.contains("already runs"), "{}", answer.body);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA3, SHA2], "nothing redeployed");

    // Going further back is still possible, by naming the release.
    let run_a = p.run(SHA).await.id;
    request_rollback(&p.app, &shop(), &production(), Some(&run_a), "carol")
        .await
        .unwrap();
    p.healthy("production", SHA);
    p.run_queues().await;
    assert_eq!(production_runs(&p).await, SHA);
    assert!(matches!(cli_rollback(&p).await, Err(RollbackRefused::Nothing(_))));
}

#[tokio::test(start_paused = true)]
async fn a_rollback_with_nothing_older_is_refused_by_the_cli_and_the_link_alike() {
    let p = Pipeline::start().await;
    let never = cli_rollback(&p).await.unwrap_err();
    assert_eq!(never.to_string(), "nothing was ever released to production in shop");

    p.release(SHA).await;
    let alone = cli_rollback(&p).await.unwrap_err();
    assert!(matches!(alone, RollbackRefused::Nothing(_)), "{alone:?}");
    assert_eq!(
        alone.to_string(),
        format!(
            "production has no release of an older commit than {} to go back to; nothing to roll back",
            &SHA[..12]
        )
    );
    let link = format!("{BASE}/rollback/{}", token_of(&rollback_link(&p, SHA, "alice")));
    let answer = press(&p, &link).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert!(answer.body.contains("no release of an older commit"), "{}", answer.body);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
}

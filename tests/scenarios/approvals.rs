//! Approval links: GET shows, POST decides once; forged, expired, replayed and
//! self-approving links are refused.

use http::StatusCode;
use jiff::SignedDuration;
use slipway::domain::{RunStatus, StageStatus};
use slipway::ports::{StateStore as _, StoreKey};
use slipway_tests::{Pipeline, SHA, SHA2};

#[tokio::test(start_paused = true)]
async fn opening_a_link_many_times_changes_nothing() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("alice").approve_url.unwrap();
    let before = p.store.write_count();
    for _ in 0..3 {
        let page = p.get(&link).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("Approve") && page.body.contains("Reject"));
        assert!(page.body.contains(r#"method="post""#));
        assert_eq!(
            page.headers["referrer-policy"], "no-referrer",
            "the token must not leak to linked sites"
        );
        assert_eq!(page.headers["cache-control"], "no-store");
    }
    insta::assert_snapshot!("confirmation_page", p.get(&link).await.body);
    insta::assert_json_snapshot!("approval_request", p.approval_for("alice"));
    let reject_page = p.get(&p.approval_for("alice").reject_url.unwrap()).await;
    assert!(
        reject_page.body.contains("reject chosen"),
        "the reject link highlights Reject"
    );
    assert_eq!(p.store.write_count(), before, "GET wrote nothing");
    assert_eq!(p.approval_stage_status(SHA).await, StageStatus::Waiting);
    p.run_queues().await;
    assert!(p.deployed("production").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_rejection_ends_the_run_and_tells_the_team() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("bob").reject_url.unwrap();
    let answer = p.post_decision(&link, "reject").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.contains("will not be promoted"));
    p.run_queues().await;
    assert!(p.deployed("production").is_empty());
    assert_eq!(p.run(SHA).await.status(), RunStatus::Rejected);
    let rejected = p.notifications_of("rejected");
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].title.starts_with("bob rejected"));
}

#[tokio::test(start_paused = true)]
async fn a_replayed_link_answers_409_and_deploys_nothing_more() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("alice").approve_url.unwrap();
    assert_eq!(p.post_decision(&link, "approve").await.status, StatusCode::OK);
    let replay = p.post_decision(&link, "approve").await;
    assert_eq!(replay.status, StatusCode::CONFLICT);
    assert!(replay.body.contains("alice already approved"), "{}", replay.body);
    // Another approver's link for the same decision is closed too.
    let bob = p
        .post_decision(&p.approval_for("bob").reject_url.unwrap(), "reject")
        .await;
    assert_eq!(bob.status, StatusCode::CONFLICT);
    // And the GET says so.
    assert_eq!(p.get(&link).await.status, StatusCode::CONFLICT);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn an_expired_link_answers_410_and_the_run_expires() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("alice").approve_url.unwrap();
    p.advance(SignedDuration::from_hours(25));

    let page = p.get(&link).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert_eq!(
        p.approval_stage_status(SHA).await,
        StageStatus::Waiting,
        "GET changes nothing, even now"
    );

    let answer = p.post_decision(&link, "approve").await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert!(answer.body.contains("expired"));
    p.run_queues().await;
    assert!(p.deployed("production").is_empty());
    assert_eq!(p.run(SHA).await.status(), RunStatus::Expired);
    assert_eq!(p.notifications_of("approval_expired").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_tampered_link_is_forbidden_and_garbage_is_not_found() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("alice").approve_url.unwrap();
    let (path, query) = link.split_once('?').unwrap();
    let mut tampered = path.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let tampered = format!("{tampered}?{query}");
    assert_eq!(p.get(&tampered).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        p.post_decision(&tampered, "approve").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        p.get("https://slipway.example.com/approvals/hello").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(p.approval_stage_status(SHA).await, StageStatus::Waiting);
}

#[tokio::test(start_paused = true)]
async fn the_author_cannot_approve_their_own_commit() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let own = p.approval_for("dev").approve_url.unwrap();
    let page = p.get(&own).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("does not allow approving your own commits"));
    assert_eq!(p.post_decision(&own, "approve").await.status, StatusCode::FORBIDDEN);
    assert_eq!(p.approval_stage_status(SHA).await, StageStatus::Waiting);
}

#[tokio::test(start_paused = true)]
async fn self_approval_works_where_the_pipeline_allows_it() {
    let config = slipway_tests::CONFIG.replace(
        "approval_expiry = \"24h\"",
        "approval_expiry = \"24h\"\nallow_self_approval = true",
    );
    let p = Pipeline::with_config(&config).await;
    p.to_approval(SHA).await;
    let own = p.approval_for("dev").approve_url.unwrap();
    assert_eq!(p.post_decision(&own, "approve").await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_bad_decision_is_a_400_and_changes_nothing() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("alice").approve_url.unwrap();
    assert_eq!(p.post_decision(&link, "maybe").await.status, StatusCode::BAD_REQUEST);
    let empty = http::Request::post(link.replace("https://slipway.example.com", ""))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(""))
        .unwrap();
    assert_eq!(p.send(empty).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(p.approval_stage_status(SHA).await, StageStatus::Waiting);
}

#[tokio::test(start_paused = true)]
async fn approve_and_reject_racing_resolve_to_exactly_one_decision() {
    for _ in 0..20 {
        let p = Pipeline::start().await;
        p.to_approval(SHA).await;
        let approve = p.approval_for("alice").approve_url.unwrap();
        let reject = p.approval_for("bob").reject_url.unwrap();
        let (a, r) = tokio::join!(p.post_decision(&approve, "approve"), p.post_decision(&reject, "reject"));
        let mut statuses = [a.status, r.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "{} / {}",
            a.body,
            r.body
        );
        p.run_queues().await;
        let status = p.run(SHA).await.status();
        if a.status == StatusCode::OK {
            assert_eq!((status, p.deployed("production").len()), (RunStatus::Released, 1));
        } else {
            assert_eq!((status, p.deployed("production").len()), (RunStatus::Rejected, 0));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_link_for_a_removed_approver_is_refused() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let link = p.approval_for("bob").approve_url.unwrap();
    // The team removes bob from the approvers and restarts slipway with the same state.
    let config = slipway_tests::CONFIG.replace(
        "[[pipelines.approvers]]\nid = \"bob\"\naddress = \"bob@example.com\"\n",
        "",
    );
    let q = Pipeline::with_config(&config).await;
    // The same store as before, new to this process.
    let app = q.app.over_store(p.app.store.clone());
    let router = slipway::http::router(app);
    let request = http::Request::post(link.replace("https://slipway.example.com", ""))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from("decision=approve"))
        .unwrap();
    use tower::ServiceExt;
    let answer = router.oneshot(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(start_paused = true)]
async fn an_approval_nobody_clicks_expires_by_itself_and_the_team_is_told() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    assert_eq!(
        slipway::sweep::run_once(&p.app).await.unwrap().expired,
        0,
        "not due yet"
    );
    p.advance(SignedDuration::from_hours(24));
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().expired, 1);
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().expired, 0, "once");
    p.run_queues().await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Expired);
    let expired = p.notifications_of("approval_expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(
        p.post_decision(&p.approval_for("alice").approve_url.unwrap(), "approve")
            .await
            .status,
        StatusCode::GONE
    );
    assert!(p.deployed("production").is_empty());
}

/// How `alice`'s approval POST is made in [`reads_of_a_decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Posted {
    /// Straight from the link, no page shown.
    Link,
    /// From her page, shown just before.
    Page,
    /// From her page, with production's record written (its version moved) in between.
    OldPage,
}

/// The store reads of `alice`'s approval POST for a second release, and of the deploy it
/// queues; the decision deploys either way.
async fn reads_of_a_decision(posted: Posted) -> (u64, u64) {
    let p = Pipeline::start().await;
    // Production has a record: the first release wrote it.
    p.release(SHA).await;
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    p.to_approval(SHA2).await;
    let link = p
        .approval_for("alice")
        .approve_url
        .expect("alice's request has an approve link");
    if posted != Posted::Link {
        assert_eq!(p.get(&link).await.status, StatusCode::OK);
    }
    if posted == Posted::OldPage {
        // Someone wrote production's record after the page read it: the same record, a new
        // version.
        let key = StoreKey::environment(&"shop".parse().expect("a name"), &"production".parse().expect("a name"));
        let found = p
            .store
            .get(&key)
            .await
            .expect("a read")
            .expect("production has a record");
        p.store
            .replace(&key, found.value, &found.version)
            .await
            .expect("a write");
    }
    let before = p.store.read_count();
    let answer = p.post_decision(&link, "approve").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let decided = p.store.read_count();
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2]);
    (decided - before, p.store.read_count() - decided)
}

#[tokio::test(start_paused = true)]
async fn a_decision_posted_from_its_page_does_not_read_the_run_again() {
    let (page, _) = reads_of_a_decision(Posted::Page).await;
    let (link, _) = reads_of_a_decision(Posted::Link).await;
    assert_eq!(page + 1, link);
}

/// The page read production's record (what the approval brings is counted from its current
/// release); the deploy the decision queues claims production's lease over that record
/// instead of reading it again, and reads it when it was written since.
#[tokio::test(start_paused = true)]
async fn the_deploy_a_decision_from_its_page_queues_does_not_read_the_environment_again() {
    let (_, page) = reads_of_a_decision(Posted::Page).await;
    let (_, link) = reads_of_a_decision(Posted::Link).await;
    let (_, old) = reads_of_a_decision(Posted::OldPage).await;
    assert_eq!(page + 1, link);
    assert_eq!(
        old, link,
        "a record written since the page is read again, and the deploy goes on"
    );
}

#[tokio::test(start_paused = true)]
async fn a_decision_from_a_page_shown_before_another_approver_decided_meets_that_decision() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let alice = p.approval_for("alice").approve_url.unwrap();
    assert_eq!(p.get(&alice).await.status, StatusCode::OK);
    // bob rejects from his link while alice's page is open: the run her page showed is old.
    let bob = p
        .post_decision(&p.approval_for("bob").reject_url.unwrap(), "reject")
        .await;
    assert_eq!(bob.status, StatusCode::OK, "{}", bob.body);
    let late = p.post_decision(&alice, "approve").await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert!(late.body.contains("bob"), "{}", late.body);
    p.run_queues().await;
    assert!(p.deployed("production").is_empty());
    assert_eq!(p.run(SHA).await.status(), RunStatus::Rejected);
}

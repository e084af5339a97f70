//! At-least-once delivery: duplicated, redelivered and failed messages never deploy twice,
//! and nothing is lost.

#![allow(clippy::unwrap_used)]

use jiff::SignedDuration;
use slipway::adapters::memory::Fault;
use slipway::domain::{RunStatus, StageStatus};
use slipway::ports::{QueueName, StoreKey};

use slipway_tests::{Pipeline, SHA, SHA2};

#[tokio::test(start_paused = true)]
async fn duplicated_messages_deploy_once() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.queue.duplicate_pending(QueueName::Deploy); // 2
    p.queue.duplicate_pending(QueueName::Deploy); // 4
    assert_eq!(p.pending(QueueName::Deploy).len(), 4);
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    assert_eq!(
        p.notifications_of("approval_requested").len(),
        3,
        "one per approver, no duplicates"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_fails_before_deploying_is_retried_and_deploys_once() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // The secret store is down when the deploy message arrives.
    p.secrets.set_unavailable(true);
    p.run_queues().await;
    assert!(p.deployed("staging").is_empty());
    assert_eq!(
        p.stage_status(SHA, "deploy:staging").await,
        StageStatus::Queued,
        "not claimed"
    );
    p.secrets.set_unavailable(false);
    p.advance(SignedDuration::from_mins(1));
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    assert_eq!(p.run(SHA).await.status(), RunStatus::AwaitingApproval);
}

#[tokio::test(start_paused = true)]
async fn a_result_write_that_fails_once_is_retried_in_place_and_deploys_once() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // The claim is written; the first write of the deploy's result finds the store down.
    p.store.fail_later("replace", 1, Fault::Unavailable);
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_handler_that_fails_mid_deploy_is_retried_and_never_deploys_twice() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // The deploy is claimed and carried out, then the store stays down for every attempt
    // to record the result: the handler fails and the message goes back to the queue.
    for _ in 0..4 {
        p.store.fail_later("replace", 1, Fault::Unavailable);
    }
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Running);
    assert_eq!(p.pending(QueueName::Deploy).len(), 1, "the message waits for a retry");

    // Redelivered while the deploy could still be running: it waits, deploying nothing.
    p.advance(SignedDuration::from_mins(2));
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Running);

    // Past the deadline nobody knows the outcome: the stage fails loudly, never redeploys.
    p.advance(SignedDuration::from_mins(10));
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA], "deployed exactly once");
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Failed);
    assert_eq!(p.notifications_of("failed").len(), 1);
    assert!(p.pending(QueueName::Deploy).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_vanished_mid_deploy_is_failed_loudly_after_the_deadline() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // A worker claims the deploy and dies before reporting: simulate the claim alone.
    let id = p.run(SHA).await.id;
    p.app
        .apply(&id, || {
            p.app.input(
                slipway::domain::Actor::Slipway,
                slipway::domain::Event::DeployStarted {
                    env: "staging".parse().unwrap(),
                },
            )
        })
        .await
        .unwrap();
    // Its message comes back; another worker sees the stage claimed and waits.
    p.run_queues().await;
    assert!(p.deployed("staging").is_empty());
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Running);
    // Past the deploy's timeout (10m) and the grace period, it is failed with a clear reason.
    p.advance(SignedDuration::from_mins(12));
    p.run_queues().await;
    assert!(p.deployed("staging").is_empty(), "never deployed a second time");
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Failed);
    let failed = p.notifications_of("failed");
    assert_eq!(failed.len(), 1);
    assert!(failed[0].text.contains("check staging by hand"), "{}", failed[0].text);
}

#[tokio::test(start_paused = true)]
async fn a_message_that_is_not_slipways_goes_to_the_dead_letters_and_others_proceed() {
    let p = Pipeline::start().await;
    p.app
        .queue
        .send(QueueName::Deploy, "{\"hello\":1}", std::time::Duration::ZERO)
        .await
        .unwrap();
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    for _ in 0..8 {
        p.run_queues().await;
        p.advance(SignedDuration::from_mins(10));
    }
    assert_eq!(p.deployed("staging"), [SHA], "the good message went through");
    let dead = p.app.queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "{\"hello\":1}");
    assert_eq!(dead[0].receive_count, 5);
}

#[tokio::test(start_paused = true)]
async fn a_notification_channel_that_fails_is_retried_without_duplicates() {
    let p = Pipeline::start().await;
    p.notifier.fail_next(1);
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    // The first approver's delivery failed; the others went out.
    assert_eq!(p.notifications_of("approval_requested").len(), 2);
    p.advance(SignedDuration::from_mins(1));
    p.run_queues().await;
    let approvers: Vec<_> = p
        .notifications_of("approval_requested")
        .into_iter()
        .filter_map(|n| n.approver)
        .collect();
    assert_eq!(approvers.len(), 3, "{approvers:?}");
    assert!(approvers.contains(&"alice".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_notice_delivered_twice_at_once_is_sent_once() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // Staging deployed and checked: the approval request waits on the notify queue.
    for queue in [QueueName::Deploy, QueueName::Smoke] {
        slipway::worker::poll(&p.app, queue, 10).await.unwrap();
        slipway::worker::poll(&p.app, queue, 10).await.unwrap();
    }
    p.queue.duplicate_pending(QueueName::Notify);
    let notices = p.pending(QueueName::Notify);
    assert_eq!(notices.len(), 2, "{notices:?}");
    let (a, b) = tokio::join!(
        slipway::handlers::handle(&p.app, QueueName::Notify, &notices[0]),
        slipway::handlers::handle(&p.app, QueueName::Notify, &notices[1]),
    );
    a.unwrap();
    b.unwrap();
    let approvers: Vec<_> = p
        .notifications_of("approval_requested")
        .into_iter()
        .filter_map(|n| n.approver)
        .collect();
    assert_eq!(approvers, ["alice", "bob", "dev"], "one per approver, once");
    // A third copy a little later (SQS may deliver one late) finds the notice taken.
    p.advance(SignedDuration::from_secs(5));
    slipway::handlers::handle(&p.app, QueueName::Notify, &notices[0])
        .await
        .unwrap();
    assert_eq!(p.notifications_of("approval_requested").len(), 3);
}

/// A message carries the run as its sender wrote it; when the run changed since, the handler
/// is refused its write and decides again on the stored run — here, a deploy message handled
/// a second time after its deploy finished.
#[tokio::test(start_paused = true)]
async fn a_message_whose_carried_run_is_old_does_not_deploy_again() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    let deploy = p.pending(QueueName::Deploy);
    assert_eq!(deploy.len(), 1);
    assert!(
        deploy[0].contains("\"carried\""),
        "the message carries its run: {}",
        deploy[0]
    );
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
    let before = p.run(SHA).await;

    // The same message again, as a first delivery: its copy of the run says "queued".
    slipway::handlers::handle(&p.app, QueueName::Deploy, &deploy[0])
        .await
        .unwrap();
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA], "deployed once");
    let after = p.run(SHA).await;
    assert_eq!(
        after.stage(slipway::domain::StageKind::Deploy, Some(&"staging".parse().unwrap())),
        before.stage(slipway::domain::StageKind::Deploy, Some(&"staging".parse().unwrap())),
        "the deploy's record is as it was"
    );
    let (staging, _) = p
        .app
        .environment(&"shop".parse().unwrap(), &"staging".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(staging.lease, None, "the lease the old copy took is given back");
    assert_eq!(staging.current.map(|c| c.run), Some(before.id));
}

/// Commit `SHA` pushed, built green and deployed to staging (healthy there), its deploy
/// message handled by hand; its one smoke check's message is taken off the queue and
/// returned, for the test to deliver as it likes.
async fn staging_deployed_check_taken(p: &Pipeline) -> Vec<String> {
    p.healthy("staging", SHA);
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    for body in p.lose_pending(QueueName::Deploy).await {
        slipway::handlers::handle(&p.app, QueueName::Deploy, &body)
            .await
            .unwrap();
    }
    let smoke = p.lose_pending(QueueName::Smoke).await;
    assert_eq!(smoke.len(), 1, "{smoke:?}");
    smoke
}

/// A smoke check's message carries the environment's record as the deploy left it, so the
/// check's end gives the lease back without reading it. When the record changed in between
/// (here a newer run joined the line), the write over the old copy is refused: the record is
/// read and the lease given back all the same, and the newer run is woken.
#[tokio::test(start_paused = true)]
async fn a_smoke_message_whose_carried_environment_is_old_still_frees_the_lease() {
    let p = Pipeline::start().await;
    let staging: slipway::domain::EnvName = "staging".parse().unwrap();
    let shop: slipway::domain::PipelineName = "shop".parse().unwrap();
    let smoke = staging_deployed_check_taken(&p).await;
    assert!(
        smoke[0].contains("\"environment\""),
        "the check carries the environment's record: {}",
        smoke[0]
    );
    let (held, _) = p.app.environment(&shop, &staging).await.unwrap();
    assert_eq!(
        held.lease.map(|l| l.run),
        Some(p.run(SHA).await.id),
        "held through the check"
    );

    // A newer run waits for staging meanwhile: the carried record is now old.
    p.push_after(SHA2, SHA).await;
    p.ci(SHA2, "success").await;
    p.run_queues().await;
    let (waiting, _) = p.app.environment(&shop, &staging).await.unwrap();
    assert_eq!(waiting.waiting.len(), 1, "{waiting:?}");

    slipway::handlers::handle(&p.app, QueueName::Smoke, &smoke[0])
        .await
        .unwrap();
    assert_eq!(p.stage_status(SHA, "smoke:staging").await, StageStatus::Succeeded);
    p.healthy("staging", SHA2);
    p.run_queues().await;
    assert_eq!(
        p.deployed("staging"),
        [SHA, SHA2],
        "the newer run was woken and deployed"
    );
    let (record, _) = p.app.environment(&shop, &staging).await.unwrap();
    assert_eq!(record.lease, None);
    assert!(record.waiting.is_empty(), "{record:?}");
    assert_eq!(record.current.map(|c| c.run), Some(p.run(SHA2).await.id));
}

/// Smoke checks need no claim: the deploy's result starts them. A check whose worker vanished
/// part-way is checked again when its message comes back, instead of being left running until
/// its deadline and then failed because nobody knows how it went.
#[tokio::test(start_paused = true)]
async fn a_smoke_check_whose_worker_vanished_is_checked_again_when_its_message_comes_back() {
    let p = Pipeline::start().await;
    let smoke = staging_deployed_check_taken(&p).await;
    assert_eq!(
        p.stage_status(SHA, "smoke:staging").await,
        StageStatus::Running,
        "started by the deploy's result"
    );

    // The first delivery's worker vanished; the queue delivers the message again.
    slipway::handlers::handle_delivery(&p.app, QueueName::Smoke, &smoke[0], 2)
        .await
        .unwrap();
    assert_eq!(p.stage_status(SHA, "smoke:staging").await, StageStatus::Succeeded);
    p.run_queues().await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::AwaitingApproval);
    assert_eq!(p.notifications_of("approval_requested").len(), 3, "one per approver");

    // A late copy of the same message checks again; its result is not recorded twice.
    let before = p.run(SHA).await;
    slipway::handlers::handle(&p.app, QueueName::Smoke, &smoke[0])
        .await
        .unwrap();
    p.run_queues().await;
    let after = p.run(SHA).await;
    assert_eq!(after.history.len(), before.history.len(), "{:?}", after.history);
    assert_eq!(after.status(), RunStatus::AwaitingApproval);
    assert_eq!(p.notifications_of("approval_requested").len(), 3);
    let (staging, _) = p
        .app
        .environment(&"shop".parse().unwrap(), &"staging".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(staging.lease, None);
    assert_eq!(staging.current.map(|c| c.run), Some(after.id));
}

#[tokio::test(start_paused = true)]
async fn concurrent_workers_deploy_once() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    for _ in 0..3 {
        p.queue.duplicate_pending(QueueName::Deploy); // 8 copies in all
    }
    let (a, b, c) = tokio::join!(
        slipway::worker::poll(&p.app, QueueName::Deploy, 3),
        slipway::worker::poll(&p.app, QueueName::Deploy, 3),
        slipway::worker::poll(&p.app, QueueName::Deploy, 3),
    );
    assert_eq!(a.unwrap() + b.unwrap() + c.unwrap(), 8);
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_resends_work_whose_message_was_lost() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // The deploy message is lost: the state says queued, but the queue is empty.
    p.lose_pending(QueueName::Deploy).await;
    p.advance(SignedDuration::from_secs(60));
    assert_eq!(
        slipway::sweep::run_once(&p.app).await.unwrap().resent,
        0,
        "give the queue time first"
    );
    p.advance(SignedDuration::from_secs(90));
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().resent, 1);
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn the_sweep_fails_a_stage_whose_worker_and_message_both_vanished() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // A worker claimed the deploy, then died; its message is gone too.
    let id = p.run(SHA).await.id;
    let claim = slipway::domain::Event::DeployStarted {
        env: "staging".parse().unwrap(),
    };
    p.app
        .apply(&id, || p.app.input(slipway::domain::Actor::Slipway, claim.clone()))
        .await
        .unwrap();
    p.lose_pending(QueueName::Deploy).await;
    p.advance(SignedDuration::from_mins(10));
    assert_eq!(
        slipway::sweep::run_once(&p.app).await.unwrap().abandoned,
        0,
        "within the deploy timeout"
    );
    p.advance(SignedDuration::from_mins(2));
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().abandoned, 1);
    p.run_queues().await;
    assert_eq!(p.stage_status(SHA, "deploy:staging").await, StageStatus::Failed);
    assert!(p.deployed("staging").is_empty(), "never redone");
    assert_eq!(p.notifications_of("failed").len(), 1);
}

/// A smoke check's message that is gone for good (dead-lettered, say): no check reports, and
/// the sweep fails the stage only once its deadline (the longest check's deadline and
/// timeout, and the grace) has passed, saying that nobody knows whether the environment works.
#[tokio::test(start_paused = true)]
async fn the_sweep_fails_smoke_checks_that_never_reported_once_their_deadline_passed() {
    let p = Pipeline::start().await;
    staging_deployed_check_taken(&p).await;
    p.advance(SignedDuration::from_secs(60));
    assert_eq!(
        slipway::sweep::run_once(&p.app).await.unwrap().abandoned,
        0,
        "within the checks' deadline and the grace"
    );
    assert_eq!(p.stage_status(SHA, "smoke:staging").await, StageStatus::Running);
    p.advance(SignedDuration::from_mins(2));
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().abandoned, 1);
    p.run_queues().await;
    let run = p.run(SHA).await;
    let smoke = run
        .stage(slipway::domain::StageKind::Smoke, Some(&"staging".parse().unwrap()))
        .unwrap();
    assert_eq!(smoke.status, StageStatus::Failed);
    let summary = smoke.summary.as_deref().unwrap_or_default();
    assert!(summary.contains("no smoke check"), "{summary}");
    assert_eq!(run.status(), RunStatus::Failed);
    assert_eq!(p.notifications_of("failed").len(), 1);
    let (staging, _) = p
        .app
        .environment(&"shop".parse().unwrap(), &"staging".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(staging.lease, None, "the lease is given back");
}

// ---------------------------------------------------------------------------------------
// The index of unfinished runs: what the sweep reads instead of every run ever made.
// ---------------------------------------------------------------------------------------

/// The runs the index holds, by commit: those of the markers, and those the pipeline opened
/// since the sweep last marked its runs (whatever their status: what the index holds, not
/// what its readers keep).
async fn indexed(p: &Pipeline) -> Vec<String> {
    use slipway::ports::StateStore as _;
    let mut ids = Vec::new();
    for key in p.store.list(StoreKey::OPEN_RUNS).await.unwrap() {
        ids.push(key.open_run_id().unwrap());
    }
    let shop = slipway::domain::PipelineName::parse("shop").unwrap();
    let (head, _) = slipway::app::read_record::<slipway::views::PipelineRecord>(&p.store, &StoreKey::lineage(&shop))
        .await
        .unwrap();
    for entry in slipway::views::run_index::entries_at(&p.store, &head, &shop, head.unmarked())
        .await
        .unwrap()
    {
        if !ids.contains(&entry.id) {
            ids.push(entry.id);
        }
    }
    let mut shas = Vec::new();
    for id in ids {
        let (run, _) = p.app.load(&id).await.unwrap().unwrap();
        shas.push(run.sha.to_string());
    }
    shas
}

fn continuous() -> String {
    slipway_tests::CONFIG.replace("mode = \"delivery\"", "mode = \"deployment\"")
}

#[tokio::test(start_paused = true)]
async fn the_sweep_reads_only_the_runs_still_moving() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    p.push(SHA2).await;
    p.ci(SHA2, "failure").await;
    p.run_queues().await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::Failed);

    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(indexed(&p).await, [SHA], "the failed run left the index");

    let approval = p.approval_for("alice");
    p.post_decision(approval.approve_url.as_deref().unwrap(), "approve")
        .await;
    p.run_queues().await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert!(indexed(&p).await.is_empty(), "nothing is moving");
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap(), Default::default());
}

#[tokio::test(start_paused = true)]
async fn runs_made_before_the_index_existed_are_still_swept() {
    use slipway::ports::StateStore as _;
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    // A run from before the index: no marker. And its deploy message was lost.
    let id = p.run(SHA).await.id;
    p.store.remove(&StoreKey::open_run(&id)).await.unwrap();
    p.lose_pending(QueueName::Deploy).await;
    p.advance(SignedDuration::from_mins(3));

    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().resent, 1);
    assert_eq!(indexed(&p).await, [SHA], "indexed by the first sweep");
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn a_release_rolled_back_by_hand_is_swept_while_it_moves() {
    let p = Pipeline::with_config(&continuous()).await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    p.advance(SignedDuration::from_mins(10));
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    p.push(SHA2).await;
    p.ci(SHA2, "success").await;
    p.run_queues().await;
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert!(indexed(&p).await.is_empty());

    // A released run moves again: its rollback message is lost on the way.
    let production = "production".parse().unwrap();
    let shop = slipway::domain::PipelineName::parse("shop").unwrap();
    slipway::handlers::deploy::request_rollback(&p.app, &shop, &production, None, "alice")
        .await
        .unwrap();
    assert_eq!(indexed(&p).await, [SHA2], "back in the index");
    p.lose_pending(QueueName::Deploy).await;
    p.advance(SignedDuration::from_mins(3));
    p.healthy("production", SHA);
    assert_eq!(slipway::sweep::run_once(&p.app).await.unwrap().resent, 1);
    p.run_queues().await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert!(indexed(&p).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_marker_left_by_a_crash_before_its_run_was_written_is_dropped_later() {
    use slipway::ports::StateStore as _;
    let p = Pipeline::start().await;
    let id = slipway::domain::RunId::new(
        &slipway::domain::PipelineName::parse("shop").unwrap(),
        &SHA.parse().unwrap(),
    );
    slipway::open_runs::mark(&p.store, &id, p.now()).await.unwrap();
    let markers = || async { p.store.list(StoreKey::OPEN_RUNS).await.unwrap().len() };

    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(markers().await, 1, "its run may still be on its way");
    p.advance(SignedDuration::from_mins(11));
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(markers().await, 0);

    // The push that crashed is redelivered: the run is made and indexed as usual.
    p.push(SHA).await;
    assert_eq!(indexed(&p).await, [SHA]);
}

/// The pipeline's record: where its runs opened since the sweep last marked them start.
async fn unmarked_from(p: &Pipeline) -> Option<i64> {
    let shop = slipway::domain::PipelineName::parse("shop").unwrap();
    slipway::app::read_record::<slipway::views::PipelineRecord>(&p.store, &StoreKey::lineage(&shop))
        .await
        .unwrap()
        .0
        .unmarked_from
}

async fn markers(p: &Pipeline) -> Vec<String> {
    use slipway::ports::StateStore as _;
    p.store
        .list(StoreKey::OPEN_RUNS)
        .await
        .unwrap()
        .iter()
        .map(|k| k.open_run_id().unwrap().sha().to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_push_writes_no_marker_and_the_sweep_marks_its_run_while_it_moves() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    assert!(markers(&p).await.is_empty(), "the push wrote no marker");
    assert_eq!(unmarked_from(&p).await, Some(0));
    assert_eq!(indexed(&p).await, [SHA], "held in the index by the pipeline's record");

    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(markers(&p).await, [SHA], "still moving: marked");
    assert_eq!(unmarked_from(&p).await, None, "nothing left for the next sweep");
    assert_eq!(indexed(&p).await, [SHA]);

    // A run that finishes before any sweep saw it leaves the index with its final state in
    // the index of runs, and never has a marker.
    p.push(SHA2).await;
    p.ci(SHA2, "failure").await;
    p.run_queues().await;
    assert_eq!(unmarked_from(&p).await, Some(1));
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(markers(&p).await, [SHA]);
    assert_eq!(unmarked_from(&p).await, None);
    let shop = slipway::domain::PipelineName::parse("shop").unwrap();
    let entry = slipway::views::run_index::at_place(&p.store, &shop, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, RunStatus::Failed, "its entry is final: {entry:?}");
    assert_eq!(indexed(&p).await, [SHA]);
}

/// The sweep that marks a run reads it once: the pass after, which finds it by its marker,
/// reads no less.
#[tokio::test(start_paused = true)]
async fn the_sweep_that_marks_a_run_does_not_read_it_again() {
    let p = Pipeline::start().await;
    // The marks that say older installs were indexed are read by a process's first sweep.
    slipway::sweep::run_once(&p.app).await.unwrap();
    p.push(SHA).await;
    let reads = |before: u64| p.store.read_count() - before;

    let before = p.store.read_count();
    slipway::sweep::run_once(&p.app).await.unwrap();
    let marking = reads(before);
    assert_eq!(markers(&p).await, [SHA]);

    let before = p.store.read_count();
    slipway::sweep::run_once(&p.app).await.unwrap();
    let after = reads(before);
    assert_eq!(
        marking, after,
        "the marking pass read {marking} times, the next {after}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_push_failed_after_its_place_was_given_is_indexed_when_it_comes() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    // The place is given, then the run cannot be written: the host is answered 503.
    p.store.fail_next("create", Fault::Unavailable);
    assert_eq!(p.push(SHA2).await.status, http::StatusCode::SERVICE_UNAVAILABLE);
    let shop = slipway::domain::PipelineName::parse("shop").unwrap();
    let id = slipway::domain::RunId::new(&shop, &SHA2.parse().unwrap());
    assert!(p.app.load(&id).await.unwrap().is_none(), "no run");
    assert_eq!(unmarked_from(&p).await, Some(0));

    // The sweep cannot tell a crashed push from one under way: it marks the place's run.
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(markers(&p).await, [SHA, SHA2]);
    assert_eq!(unmarked_from(&p).await, None);
    // It never came: its marker goes once it is old.
    p.advance(SignedDuration::from_mins(11));
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(markers(&p).await, [SHA]);

    // The host delivers the push again: the run gets the place it was given, below where the
    // sweep has passed, and is in the index from its write on.
    assert_eq!(p.push(SHA2).await.status, http::StatusCode::CREATED);
    assert_eq!(p.run(SHA2).await.seq, Some(1));
    assert_eq!(unmarked_from(&p).await, Some(1));
    assert_eq!(indexed(&p).await, [SHA, SHA2]);
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(markers(&p).await, [SHA, SHA2]);
}

#[tokio::test(start_paused = true)]
async fn superseding_finds_the_older_approval_through_the_index() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    slipway::sweep::run_once(&p.app).await.unwrap();
    use slipway::ports::StateStore as _;
    assert!(
        p.store.get(&StoreKey::open_runs_indexed()).await.unwrap().is_some(),
        "the sweep built the index"
    );
    p.advance(SignedDuration::from_mins(5));
    p.healthy("staging", SHA2);
    p.to_approval(SHA2).await;
    p.run_queues().await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Superseded);
    slipway::sweep::run_once(&p.app).await.unwrap();
    assert_eq!(indexed(&p).await, [SHA2]);
}

//! At-least-once delivery: duplicated, redelivered and failed messages never deploy twice,
//! and nothing is lost.

use jiff::SignedDuration;
use slipway::adapters::memory::Fault;
use slipway::domain::{RunStatus, StageStatus};
use slipway::ports::{Queue as _, QueueName};

use slipway_tests::{Pipeline, SHA};

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
    let lost = p
        .queue
        .receive(QueueName::Deploy, 10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    for m in &lost {
        p.queue.ack(QueueName::Deploy, &m.receipt).await.unwrap();
    }
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
    for m in p
        .queue
        .receive(QueueName::Deploy, 10, std::time::Duration::from_secs(60))
        .await
        .unwrap()
    {
        p.queue.ack(QueueName::Deploy, &m.receipt).await.unwrap();
    }
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

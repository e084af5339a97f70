//! Safe deployments, as a team lives them: one deploy per environment, newer commits win,
//! a failed migration is restored, a failed rollback raises an alert, approvals need
//! enough people, freezes hold, bakes watch, and a release can be rolled back by hand.

#![allow(clippy::unwrap_used)]

use http::StatusCode;
use jiff::SignedDuration;
use slipway::domain::{EnvName, Phase, PipelineName, RunStatus, StageKind, StageStatus};
use slipway::ports::QueueName;
use slipway_tests::{CONFIG, Pipeline, SHA, SHA2};

/// The scenario pipeline in continuous-deployment mode: no approvals.
fn deployment() -> String {
    CONFIG.replace("mode = \"delivery\"", "mode = \"deployment\"")
}

fn env(name: &str) -> EnvName {
    name.parse().unwrap()
}

fn shop() -> PipelineName {
    PipelineName::parse("shop").unwrap()
}

/// Pushes `sha`, reports it green, and lets the workers run.
async fn ship(p: &Pipeline, sha: &str) {
    assert_eq!(p.push(sha).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(sha, "success").await.status, StatusCode::OK);
    p.run_queues().await;
}

fn deploy_message(p: &Pipeline, sha: &str, env: &str) -> String {
    let run = slipway::domain::RunId::new(&shop(), &sha.parse().unwrap());
    let _ = p;
    serde_json::json!({"type": "deploy", "run": run, "env": env}).to_string()
}

#[tokio::test(start_paused = true)]
async fn two_runs_contend_for_staging_and_exactly_one_holds_the_lease() {
    let p = Pipeline::with_config(&deployment()).await;
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    // Two green commits, a minute apart; their deploys are queued, nobody has run them.
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.advance(SignedDuration::from_mins(1));
    p.push(SHA2).await;
    p.ci(SHA2, "success").await;
    p.deployer.take(std::time::Duration::from_secs(30));

    // Both workers pick up a deploy at the same moment.
    let older = deploy_message(&p, SHA, "staging");
    let newer = deploy_message(&p, SHA2, "staging");
    let (a, b) = tokio::join!(
        slipway::handlers::handle(&p.app, QueueName::Deploy, &older),
        slipway::handlers::handle(&p.app, QueueName::Deploy, &newer),
    );
    let waited = [&a, &b].iter().filter(|r| r.is_err()).count();
    assert_eq!(waited, 1, "exactly one waited: {a:?} {b:?}");
    assert_eq!(p.deployer.deploys_to("staging").len(), 1, "exactly one deployed");
    let first = p.deployed("staging")[0].clone();

    // The holder's work finished and freed staging; the other one goes on by itself, and
    // only if it is newer than what staging now runs.
    p.run_queues().await;
    let staging = p.deployed("staging");
    if first == SHA {
        assert_eq!(staging, [SHA, SHA2], "the newer commit followed the older one");
    } else {
        assert_eq!(staging, [SHA2], "the older commit never went over the newer one");
        assert_eq!(p.run(SHA).await.status(), RunStatus::Superseded);
        assert_eq!(p.notifications_of("superseded").len(), 1);
    }
    let (record, _) = p.app.environment(&shop(), &env("staging")).await.unwrap();
    assert!(record.lease.is_none(), "the lease is free once the work is done");
    assert_eq!(record.current.unwrap().sha.as_str(), SHA2);
}

#[tokio::test(start_paused = true)]
async fn a_newer_commit_joining_the_line_supersedes_the_older_one_waiting_there_at_once() {
    const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f901234567890ab";
    let p = Pipeline::with_config(&deployment()).await;
    for (i, sha) in [SHA, SHA2, SHA3].into_iter().enumerate() {
        if i > 0 {
            p.advance(SignedDuration::from_mins(1));
        }
        p.push(sha).await;
        p.ci(sha, "success").await;
    }
    // The oldest holds staging (its worker is at it).
    let holder = p.run(SHA).await;
    p.app
        .update_environment(&shop(), &env("staging"), |record| {
            let lineage = slipway::domain::Lineage::default();
            record.claim(
                &holder.id,
                holder.created_at,
                0,
                p.app.clock.now(),
                SignedDuration::from_mins(10),
                &lineage,
            )
        })
        .await
        .unwrap();

    // The second asks and waits in line.
    let second = slipway::handlers::handle(&p.app, QueueName::Deploy, &deploy_message(&p, SHA2, "staging")).await;
    assert!(second.is_err(), "it waits: {second:?}");
    let waiting = p.run(SHA2).await;
    let deploy = waiting.stage(StageKind::Deploy, Some(&env("staging"))).unwrap();
    assert_eq!(deploy.status, StageStatus::Queued);

    // The third asks: the second leaves the line, superseded now, not when it asks again.
    let third = slipway::handlers::handle(&p.app, QueueName::Deploy, &deploy_message(&p, SHA3, "staging")).await;
    assert!(third.is_err(), "it waits: {third:?}");
    let overtaken = p.run(SHA2).await;
    assert_eq!(overtaken.status(), RunStatus::Superseded);
    let deploy = overtaken.stage(StageKind::Deploy, Some(&env("staging"))).unwrap();
    assert_eq!(deploy.superseded_by.as_ref(), Some(&p.run(SHA3).await.id));
    let (record, _) = p.app.environment(&shop(), &env("staging")).await.unwrap();
    let line: Vec<_> = record.waiting.iter().map(|w| w.run.clone()).collect();
    assert_eq!(line, [p.run(SHA3).await.id], "one run in line: the newest");

    // The second's own message, back while it waited, finds nothing to do.
    let again = slipway::handlers::handle(&p.app, QueueName::Deploy, &deploy_message(&p, SHA2, "staging")).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(p.deployer.deploys_to("staging").len(), 0, "nothing deployed meanwhile");
    // The team is told once.
    slipway::worker::poll(&p.app, QueueName::Notify, 10).await.unwrap();
    assert_eq!(p.notifications_of("superseded").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_older_commit_waiting_behind_a_newer_one_is_superseded_not_deployed() {
    let p = Pipeline::with_config(&deployment()).await;
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    p.push(SHA).await;
    p.advance(SignedDuration::from_mins(1));
    // The newer commit goes green first and ships.
    ship(&p, SHA2).await;
    assert_eq!(p.deployed("production"), [SHA2]);
    // The older one goes green later: it must not replace the newer release.
    p.ci(SHA, "success").await;
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA2]);
    let run = p.run(SHA).await;
    assert_eq!(run.status(), RunStatus::Superseded);
    let deploy = run.stage(StageKind::Deploy, Some(&env("staging"))).unwrap();
    assert_eq!(deploy.status, StageStatus::Superseded);
    assert_eq!(deploy.superseded_by.as_ref().unwrap(), &p.run(SHA2).await.id);
}

#[tokio::test(start_paused = true)]
async fn a_newer_run_at_the_gate_supersedes_the_older_approval_and_its_links_answer_409() {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    let old_link = p.approval_for("alice").approve_url.unwrap();
    p.advance(SignedDuration::from_mins(5));
    p.healthy("staging", SHA2);
    p.to_approval(SHA2).await;
    p.run_queues().await;

    assert_eq!(p.run(SHA).await.status(), RunStatus::Superseded);
    let answer = p.post_decision(&old_link, "approve").await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    let newer = p.run(SHA2).await.id;
    assert!(answer.body.contains(&format!("/runs/{newer}")), "{}", answer.body);
    assert!(p.deployed("production").is_empty());

    // The newer run's approval page lists every commit it would bring to production.
    let page = p.get(&p.approval_for("alice").approve_url.unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&SHA[..12]) && page.body.contains(&SHA2[..12]),
        "{}",
        page.body
    );
}

/// SHA waits for production's approval; SHA2 is deployed to staging by hand. Returns the
/// message of SHA2's smoke check, not handled yet.
async fn older_at_the_gate_newer_smoke_tested() -> (Pipeline, String) {
    let p = Pipeline::start().await;
    p.to_approval(SHA).await;
    p.advance(SignedDuration::from_mins(5));
    p.healthy("staging", SHA2);
    assert_eq!(p.push(SHA2).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA2, "success").await.status, StatusCode::OK);
    for body in p.lose_pending(QueueName::Deploy).await {
        slipway::handlers::handle(&p.app, QueueName::Deploy, &body)
            .await
            .expect("the deploy is handled");
    }
    let mut smoke = p.lose_pending(QueueName::Smoke).await;
    assert_eq!(smoke.len(), 1, "{smoke:?}");
    (p, smoke.remove(0))
}

/// The smoke check that brings a run to the gate supersedes the older run waiting there
/// before it returns: no message to the deploy queue (one AWS request less per run), and
/// the newer run's approval is asked for as usual.
#[tokio::test(start_paused = true)]
async fn the_smoke_check_that_brings_a_run_to_the_gate_supersedes_the_older_one_there_itself() {
    let (p, smoke) = older_at_the_gate_newer_smoke_tested().await;
    slipway::handlers::handle(&p.app, QueueName::Smoke, &smoke)
        .await
        .expect("the smoke check is handled");

    assert_eq!(p.run(SHA).await.status(), RunStatus::Superseded);
    assert_eq!(p.approval_stage_status(SHA2).await, StageStatus::Waiting);
    assert!(
        p.pending(QueueName::Deploy).is_empty(),
        "nothing left for the deploy queue: {:?}",
        p.pending(QueueName::Deploy)
    );
    p.run_queues().await;
    let asked: Vec<String> = p
        .notifications_of("approval_requested")
        .into_iter()
        .map(|n| n.sha)
        .collect();
    let asked_for = |sha: &str| asked.iter().filter(|s| *s == sha).count();
    assert!(asked_for(SHA2) > 0, "{asked:?}");
    assert_eq!(asked_for(SHA2), asked_for(SHA), "every approver, as for SHA: {asked:?}");
    assert_eq!(p.run(SHA).await.status(), RunStatus::Superseded);
}

/// A smoke check's message redelivered after its result was written, but before the older
/// run at the gate gave way (the worker failed in between), still has it give way: the
/// redelivery sends superseding to the deploy queue, as every command its result gave.
#[tokio::test(start_paused = true)]
async fn superseding_left_undone_by_a_failed_smoke_worker_is_sent_again_by_the_redelivery() {
    let (p, smoke) = older_at_the_gate_newer_smoke_tested().await;
    // The smoke check's result is written, then the store goes away before superseding
    // reads the unfinished runs.
    p.store
        .fail_later("list", 0, slipway::adapters::memory::Fault::Unavailable);
    assert!(
        slipway::handlers::handle_delivery(&p.app, QueueName::Smoke, &smoke, 1)
            .await
            .is_err()
    );
    assert_eq!(p.approval_stage_status(SHA2).await, StageStatus::Waiting);
    assert_eq!(p.approval_stage_status(SHA).await, StageStatus::Waiting);

    slipway::handlers::handle_delivery(&p.app, QueueName::Smoke, &smoke, 2)
        .await
        .expect("the redelivery is handled");
    p.run_queues().await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Superseded);
    assert_eq!(p.approval_stage_status(SHA2).await, StageStatus::Waiting);
}

#[tokio::test(start_paused = true)]
async fn a_failed_migration_is_restored_and_the_previous_release_redeployed() {
    let p = Pipeline::with_config(&deployment()).await;
    ship(&p, SHA).await;
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);

    p.advance(SignedDuration::from_mins(10));
    p.deployer
        .fail_phase("staging", Phase::Migrate, "column price already exists");
    ship(&p, SHA2).await;

    let run = p.run(SHA2).await;
    assert_eq!(run.status(), RunStatus::RolledBack);
    // Backup, then the migration that failed; then the backup restored and SHA redeployed.
    assert_eq!(
        p.deployer.phases_of("staging"),
        [
            "backup", "migrate", "release", "backup", "migrate", "restore", "release"
        ]
    );
    let restore = p
        .deployer
        .phases()
        .into_iter()
        .find(|d| d.phase == Phase::Restore)
        .unwrap();
    assert_eq!(
        restore.backup.as_deref(),
        Some("backup-3"),
        "the backup this deploy took (staging, production, then staging again)"
    );
    assert_eq!(p.deployed("staging"), [SHA, SHA], "the previous release is back");
    // Targets are told which phases belong to the rollback, and whose: SHA's release put
    // back by SHA2's rollback is not SHA's own deploy again.
    let rolling_back: Vec<_> = p
        .deployer
        .phases()
        .into_iter()
        .filter(|d| d.env == "staging")
        .map(|d| d.rolling_back)
        .collect();
    let by = Some(run.id.to_string());
    assert_eq!(
        rolling_back,
        [None, None, None, None, None, by.clone(), by],
        "deploy phases carry no rolling_back; the restore and the redeploy carry SHA2's run"
    );
    assert!(
        p.deployed("production").iter().all(|s| s == SHA),
        "production never saw SHA2"
    );
    let deploy = run.stage(StageKind::Deploy, Some(&env("staging"))).unwrap();
    assert_eq!(
        deploy.phases.len(),
        2,
        "every phase's outcome is recorded: {:?}",
        deploy.phases
    );
    let rolled = p.notifications_of("rolled_back");
    assert_eq!(rolled.len(), 1);
    assert!(rolled[0].text.contains(&SHA[..12]), "{}", rolled[0].text);
    let (record, _) = p.app.environment(&shop(), &env("staging")).await.unwrap();
    assert_eq!(record.current.unwrap().sha.as_str(), SHA);
}

#[tokio::test(start_paused = true)]
async fn a_rollback_that_fails_raises_an_alert_naming_what_is_left_to_do() {
    let p = Pipeline::with_config(&deployment()).await;
    ship(&p, SHA).await;
    p.advance(SignedDuration::from_mins(10));
    p.deployer.fail_phase("staging", Phase::Release, "image pull failed");
    p.deployer
        .fail_phase("staging", Phase::Restore, "pg_restore: connection refused");
    ship(&p, SHA2).await;

    assert_eq!(p.run(SHA2).await.status(), RunStatus::Failed);
    let alerts = p.notifications_of("rollback_failed");
    assert_eq!(alerts.len(), 1, "{:#?}", p.notifications());
    assert!(alerts[0].alert, "a failed rollback is an alert");
    assert!(
        alerts[0].text.contains("restore backup backup-3 on staging"),
        "{}",
        alerts[0].text
    );
    assert!(
        alerts[0].text.contains(&format!("redeploy {}", &SHA[..12])),
        "{}",
        alerts[0].text
    );
}

#[tokio::test(start_paused = true)]
async fn failed_smoke_checks_roll_staging_back() {
    let p = Pipeline::with_config(&deployment()).await;
    ship(&p, SHA).await;
    p.advance(SignedDuration::from_mins(10));
    // SHA2 deploys, but staging still answers with the old version: its checks fail.
    ship(&p, SHA2).await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);
    assert_eq!(p.deployed("staging"), [SHA, SHA2, SHA]);
}

#[tokio::test(start_paused = true)]
async fn production_needs_two_different_people_and_a_bot_never_counts() {
    let config = CONFIG
        .replace(
            "name = \"production\"\n",
            "name = \"production\"\napprovals_required = 2\n",
        )
        .replace(
            "[[pipelines.approvers]]\nid = \"dev\"",
            "[[pipelines.approvers]]\nid = \"release-bot\"\naddress = \"#releases\"\nbot = true\n\n[[pipelines.approvers]]\nid = \"dev\"",
        );
    let p = Pipeline::with_config(&config).await;
    p.to_approval(SHA).await;

    let bot = p
        .post_decision(&p.approval_for("release-bot").approve_url.unwrap(), "approve")
        .await;
    assert_eq!(bot.status, StatusCode::FORBIDDEN, "{}", bot.body);
    let alice = p
        .post_decision(&p.approval_for("alice").approve_url.unwrap(), "approve")
        .await;
    assert_eq!(alice.status, StatusCode::OK);
    assert!(alice.body.contains("1 of 2"), "{}", alice.body);
    p.run_queues().await;
    assert!(
        p.deployed("production").is_empty(),
        "one approval of two deploys nothing"
    );
    let again = p
        .post_decision(&p.approval_for("alice").approve_url.unwrap(), "approve")
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "the same person twice is one approval"
    );

    let bob = p
        .post_decision(&p.approval_for("bob").approve_url.unwrap(), "approve")
        .await;
    assert_eq!(bob.status, StatusCode::OK);
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA]);
}

#[tokio::test(start_paused = true)]
async fn a_freeze_holds_production_and_the_run_resumes_by_itself_when_it_ends() {
    // The harness clock starts at 2026-11-21T09:00:00Z; the freeze ends at 18:00 UTC.
    let config = deployment().replace(
        "name = \"production\"\n",
        "name = \"production\"\nfreezes = [{ from = \"2026-11-21T00:00\", to = \"2026-11-21T18:00\", reason = \"Black Friday\" }]\n",
    );
    let p = Pipeline::with_config(&config).await;
    ship(&p, SHA).await;
    assert_eq!(p.deployed("staging"), [SHA]);
    assert!(p.deployed("production").is_empty(), "held during the freeze");
    let held = p.notifications_of("held");
    assert_eq!(held.len(), 1, "told once: {:#?}", p.notifications());
    assert!(held[0].text.contains("Black Friday"), "{}", held[0].text);
    assert_eq!(p.stage_status(SHA, "deploy:production").await, StageStatus::Queued);

    // Asking again during the freeze holds again, and says nothing new.
    p.advance(SignedDuration::from_hours(4));
    p.run_queues().await;
    assert!(p.deployed("production").is_empty());
    assert_eq!(p.notifications_of("held").len(), 1);

    p.advance(SignedDuration::from_hours(6));
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA], "the run resumed by itself");
    assert_eq!(p.run(SHA).await.status(), RunStatus::Released);
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_bake_rolls_production_back() {
    let config = deployment().replace(
        "name = \"production\"\n",
        "name = \"production\"\nbake = { duration = \"10m\", interval = \"1m\", source = { type = \"http\", url = \"http://127.0.0.1:9103/metrics\", pointer = \"/error_rate\", max = 0.05 } }\n",
    );
    let p = Pipeline::with_config(&config).await;
    ship(&p, SHA).await;
    // The first release bakes healthy for ten minutes.
    for _ in 0..12 {
        p.advance(SignedDuration::from_mins(1));
        p.run_queues().await;
    }
    let first = p.run(SHA).await;
    assert_eq!(first.status(), RunStatus::Released, "{:#?}", first.history);

    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    p.health
        .then(true, "/error_rate = 0.01")
        .then(false, "/error_rate = 0.31 > max 0.05");
    ship(&p, SHA2).await;
    for _ in 0..3 {
        p.advance(SignedDuration::from_mins(1));
        p.run_queues().await;
    }
    let run = p.run(SHA2).await;
    assert_eq!(run.status(), RunStatus::RolledBack, "{:#?}", run.history);
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA]);
    let bake = run.stage(StageKind::Bake, Some(&env("production"))).unwrap();
    assert!(bake.summary.as_deref().unwrap().contains("0.31"), "{:?}", bake.summary);
}

#[tokio::test(start_paused = true)]
async fn every_environment_deploys_the_artifact_ci_reported() {
    let p = Pipeline::with_config(&deployment()).await;
    ship(&p, SHA).await;
    let artifacts: Vec<_> = p.deployer.deploys().into_iter().map(|d| d.artifact).collect();
    let expected = Some(format!("registry.example.com/shop@sha256:{SHA}"));
    assert_eq!(artifacts, [expected.clone(), expected]);
    let run = p.run(SHA).await;
    for e in ["staging", "production"] {
        assert_eq!(
            run.stage(StageKind::Deploy, Some(&env(e))).unwrap().artifact,
            run.build.artifact
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_release_is_rolled_back_by_hand_through_the_same_phases() {
    let p = Pipeline::with_config(&deployment()).await;
    ship(&p, SHA).await;
    p.advance(SignedDuration::from_mins(10));
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    ship(&p, SHA2).await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::Released);

    // Production misbehaves in a way no check caught; someone rolls it back.
    p.healthy("production", SHA);
    let run = slipway::handlers::deploy::request_rollback(&p.app, &shop(), &env("production"), None, "alice")
        .await
        .unwrap();
    assert_eq!(run.sha.as_str(), SHA2, "applied to the run production runs");
    p.run_queues().await;
    assert_eq!(p.run(SHA2).await.status(), RunStatus::RolledBack);
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA]);
    let phases = p.deployer.phases_of("production");
    assert_eq!(phases[phases.len() - 3..], ["backup", "migrate", "release"]);
    let (record, _) = p.app.environment(&shop(), &env("production")).await.unwrap();
    assert_eq!(record.current.unwrap().sha.as_str(), SHA);

    // Rolling back to a run that never ran there is refused, naming why.
    let never = slipway::domain::RunId::new(&shop(), &"c".repeat(40).parse().unwrap());
    let refused =
        slipway::handlers::deploy::request_rollback(&p.app, &shop(), &env("production"), Some(&never), "alice")
            .await
            .unwrap_err();
    assert!(
        refused.to_string().contains("never released to production"),
        "{refused}"
    );
}

/// The automatic kind: SHA2's smoke checks outlast its lease on staging, SHA3 takes the
/// lease and is released, and then SHA2's checks fail. Restoring SHA2's backup now would
/// undo SHA3's release (and record SHA2 as what staging runs, letting older commits over
/// SHA3): the rollback is called off, and SHA2 stays failed.
#[tokio::test(start_paused = true)]
async fn an_automatic_rollback_a_newer_release_overtook_is_called_off_not_run() {
    const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f901234567890ab";
    let p = Pipeline::with_config(&deployment()).await;
    p.healthy("staging", SHA);
    p.healthy("production", SHA);
    ship(&p, SHA).await;
    p.advance(SignedDuration::from_mins(10));

    // SHA2 is released to staging; its smoke check's message is held up.
    assert_eq!(p.push(SHA2).await.status, StatusCode::CREATED);
    assert_eq!(p.ci(SHA2, "success").await.status, StatusCode::OK);
    let deploys = p.lose_pending(QueueName::Deploy).await;
    assert_eq!(deploys.len(), 1);
    slipway::handlers::handle(&p.app, QueueName::Deploy, &deploys[0])
        .await
        .unwrap();
    let smoke = p.lose_pending(QueueName::Smoke).await;
    assert_eq!(smoke.len(), 1);
    assert_eq!(p.deployed("staging"), [SHA, SHA2]);

    // Its lease runs out; SHA3 takes it and goes all the way.
    p.advance(SignedDuration::from_mins(11));
    p.healthy("staging", SHA3);
    p.healthy("production", SHA3);
    ship(&p, SHA3).await;
    assert_eq!(p.deployed("staging"), [SHA, SHA2, SHA3]);
    assert_eq!(p.run(SHA3).await.status(), RunStatus::Released);

    // SHA2's checks run at last, and fail: staging no longer answers with SHA2.
    slipway::handlers::handle(&p.app, QueueName::Smoke, &smoke[0])
        .await
        .unwrap();
    p.run_queues().await;
    let run = p.run(SHA2).await;
    let rollback = run.stage(StageKind::Rollback, Some(&env("staging"))).unwrap();
    assert_eq!(rollback.status, StageStatus::Superseded, "{:?}", rollback.summary);
    assert_eq!(rollback.superseded_by.as_ref(), Some(&p.run(SHA3).await.id));
    assert_eq!(
        run.status(),
        RunStatus::Failed,
        "its checks failed; nothing was put back"
    );
    assert!(
        !p.deployer.phases_of("staging").contains(&"restore"),
        "SHA2's backup was not restored over SHA3: {:?}",
        p.deployer.phases_of("staging")
    );
    assert_eq!(p.deployed("staging"), [SHA, SHA2, SHA3]);
    let (record, _) = p.app.environment(&shop(), &env("staging")).await.unwrap();
    assert_eq!(record.current.unwrap().sha.as_str(), SHA3, "staging still runs SHA3");
    assert!(record.lease.is_none());
    let told = p.notifications_of("superseded");
    let called_off = told
        .iter()
        .find(|n| n.title.contains("rollback of staging called off"))
        .unwrap_or_else(|| panic!("{told:?}"));
    assert!(called_off.text.contains("runs there now"), "{called_off:?}");
}

#[tokio::test(start_paused = true)]
async fn a_rollback_overtaken_by_a_newer_release_is_called_off_not_run() {
    const SHA3: &str = "c3d4e5f60718293a4b5c6d7e8f901234567890ab";
    let p = Pipeline::with_config(&deployment()).await;
    ship(&p, SHA).await;
    p.advance(SignedDuration::from_mins(10));
    p.healthy("staging", SHA2);
    p.healthy("production", SHA2);
    ship(&p, SHA2).await;

    // Someone asks to roll SHA2 back; before a worker gets to it, SHA3 is released.
    slipway::handlers::deploy::request_rollback(&p.app, &shop(), &env("production"), None, "alice")
        .await
        .unwrap();
    let rollback = p.lose_pending(QueueName::Deploy).await;
    assert_eq!(rollback.len(), 1);
    p.advance(SignedDuration::from_mins(10));
    p.healthy("staging", SHA3);
    p.healthy("production", SHA3);
    ship(&p, SHA3).await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA3]);

    // Now the rollback's message arrives: it would take production back over SHA3.
    slipway::handlers::handle(&p.app, QueueName::Deploy, &rollback[0])
        .await
        .unwrap();
    p.run_queues().await;
    assert_eq!(p.deployed("production"), [SHA, SHA2, SHA3], "nothing deployed");
    let run = p.run(SHA2).await;
    assert_eq!(run.status(), RunStatus::Released, "it was released; nothing was undone");
    let stage = run.stage(StageKind::Rollback, Some(&env("production"))).unwrap();
    assert_eq!(stage.status, StageStatus::Superseded);
    assert_eq!(stage.superseded_by.as_ref(), Some(&p.run(SHA3).await.id));
    let told = p.notifications_of("superseded");
    assert_eq!(told.len(), 1);
    assert!(
        told[0].title.contains("rollback of production called off"),
        "{:?}",
        told[0]
    );
    let (record, _) = p.app.environment(&shop(), &env("production")).await.unwrap();
    assert_eq!(record.current.unwrap().sha.as_str(), SHA3);
    assert!(record.lease.is_none());
}

/// Deploys of one environment that a process claims at the same time share one write of its
/// record instead of racing one another for it (a burst of pushes used to lose most of those
/// writes, and the deploy settling the record lost with them); the lease rules hold as they
/// would one claim after the other: one run gets the lease, the newest of the others waits,
/// and the older ones give way.
#[tokio::test(start_paused = true)]
async fn claims_of_one_environment_made_together_share_one_write() {
    let p = Pipeline::start().await;
    let shas: Vec<String> = (1..=6u8).map(|n| format!("{n:02x}").repeat(20)).collect();
    let mut before = SHA.to_owned();
    for sha in &shas {
        assert_eq!(p.push_after(sha, &before).await.status, StatusCode::CREATED);
        before = sha.clone();
    }
    let mut runs = Vec::new();
    for sha in &shas {
        runs.push(p.run(sha).await);
    }
    let staging: EnvName = "staging".parse().unwrap();

    // Every store call yields first: the claims run side by side, as a burst's do.
    p.store.interleave(true);
    let writes = p.store.write_count();
    let claims = futures::future::join_all(
        runs.iter()
            .map(|run| slipway::handlers::envs::claim(&p.app, run, &staging, None)),
    )
    .await;
    p.store.interleave(false);
    let written = p.store.write_count() - writes;

    use slipway::domain::Claim;
    let claims: Vec<Claim> = claims.into_iter().map(|c| c.unwrap().0).collect();
    let granted: Vec<usize> = (0..claims.len())
        .filter(|i| matches!(claims[*i], Claim::Granted))
        .collect();
    assert_eq!(granted.len(), 1, "exactly one run gets the lease: {claims:?}");
    // The first to get its turn writes alone; every claim that waited meanwhile is decided
    // with the others in the next write. One claim after the other, they wrote six times.
    assert!(written <= 2, "{written} writes for {} claims", runs.len());
    let (record, _) = p.app.environment(&"shop".parse().unwrap(), &staging).await.unwrap();
    assert_eq!(record.lease.map(|l| l.run), Some(runs[granted[0]].id.clone()));
    let waiting: Vec<_> = record.waiting.iter().map(|w| w.run.clone()).collect();
    assert_eq!(
        waiting,
        [runs.last().unwrap().id.clone()],
        "the newest waits, the older ones gave way"
    );
}

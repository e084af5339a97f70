//! Manual deploys (`slipway deploy`): an operator runs an environment's phases from their
//! own machine. They respect the environment's freezes and lease, need a confirmation past
//! the first environment, are recorded as the operator's manual release, and leave the
//! pipeline's own order of releases alone.

#![allow(clippy::unwrap_used)]

use slipway::domain::{CommitSha, EnvName, Phase, PhaseStatus, PipelineName};
use slipway::manual_deploy::{self, ManualDeploy, Progress, Refused};
use slipway_tests::{CONFIG, Pipeline, SHA, SHA2};

/// A commit the pipeline never saw.
const HAND: &str = "0123456789abcdef0123456789abcdef01234567";

fn request(env: &str, sha: &str) -> ManualDeploy {
    ManualDeploy {
        pipeline: PipelineName::parse("shop").unwrap(),
        env: EnvName::parse(env).unwrap(),
        sha: CommitSha::parse(sha).unwrap(),
        artifact: None,
        phases: None,
        by: "alice".to_owned(),
        confirmed: false,
    }
}

/// Deploys, collecting the progress it reports.
async fn deploy(p: &Pipeline, request: &ManualDeploy) -> (Result<manual_deploy::Outcome, Refused>, Vec<String>) {
    let mut heard = Vec::new();
    let mut listen = |step: Progress<'_>| match step {
        Progress::Started(phase) => heard.push(format!("start {phase}")),
        Progress::Finished(outcome) => heard.push(format!("{} {:?}", outcome.phase, outcome.status)),
    };
    let result = manual_deploy::deploy(&p.app, request, &mut listen).await;
    (result, heard)
}

#[tokio::test(start_paused = true)]
async fn a_manual_deploy_runs_the_phases_here_and_is_recorded_as_the_callers_release() {
    let p = Pipeline::start().await;
    let (outcome, heard) = deploy(&p, &request("staging", HAND)).await;
    let outcome = outcome.unwrap();
    assert_eq!(p.deployer.phases_of("staging"), ["backup", "migrate", "release"]);
    assert_eq!(p.deployed("staging"), [HAND]);
    assert_eq!(heard.len(), 6, "{heard:?}");
    assert_eq!(heard[0], "start backup");
    assert_eq!(
        outcome.record.describe(),
        format!("manual release of {} by alice", &HAND[..12])
    );

    let (record, _) = p
        .app
        .environment(&request("staging", HAND).pipeline, &request("staging", HAND).env)
        .await
        .unwrap();
    assert_eq!(record.manual_release(), Some(&outcome.record));
    assert!(record.operator.is_none(), "the operator lease was given up");
    assert_eq!(record.current, None, "the pipeline's own releases are untouched");
    // The control room shows it on staging's card, and the API says the same.
    let page = p.read(&p.app.link("/")).await;
    assert!(
        page.body
            .contains(&format!("Runs a manual release of {} by alice", &HAND[..12])),
        "{}",
        page.body
    );
    let api = p.read(&p.app.link("/api/environments")).await;
    assert!(api.body.contains("\"manual\""), "{}", api.body);

    // The pipeline's next deploy there goes ahead as usual and replaces it.
    p.release(SHA).await;
    assert_eq!(p.deployed("staging"), [HAND, SHA]);
    let (record, _) = p
        .app
        .environment(&request("staging", SHA).pipeline, &request("staging", SHA).env)
        .await
        .unwrap();
    assert_eq!(record.current.as_ref().unwrap().sha.as_str(), SHA);
    assert_eq!(record.manual_release(), None);
    assert_eq!(record.manual.len(), 1, "the history keeps it");
    assert!(!p.read(&p.app.link("/")).await.body.contains("Runs a manual release"));
}

#[tokio::test(start_paused = true)]
async fn production_needs_a_confirmation_and_a_freeze_refuses_with_when_it_ends() {
    let config = CONFIG.replace(
        "name = \"production\"\n",
        "name = \"production\"\nfreezes = [{ from = \"2026-11-21T00:00\", to = \"2026-11-21T18:00\", reason = \"Black Friday\" }]\n",
    );
    let p = Pipeline::with_config(&config).await;
    let (refused, _) = deploy(&p, &request("production", HAND)).await;
    let refused = refused.unwrap_err();
    assert!(matches!(refused, Refused::NeedsConfirmation { .. }), "{refused:?}");
    assert!(refused.to_string().contains("needs --yes"), "{refused}");

    let mut confirmed = request("production", HAND);
    confirmed.confirmed = true;
    let (refused, heard) = deploy(&p, &confirmed).await;
    let refused = refused.unwrap_err();
    assert!(matches!(refused, Refused::Held { .. }), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains("Black Friday") && text.contains("2026-11-21T18:00:00Z"),
        "{text}"
    );
    assert!(
        heard.is_empty() && p.deployer.phases_of("production").is_empty(),
        "nothing ran"
    );

    // Once the freeze is over, it goes.
    p.advance(jiff::SignedDuration::from_hours(10));
    let (outcome, _) = deploy(&p, &confirmed).await;
    assert!(outcome.unwrap().record.released());
    assert_eq!(p.deployed("production"), [HAND]);
}

#[tokio::test(start_paused = true)]
async fn only_the_phases_asked_for_run_and_one_the_target_lacks_is_refused() {
    let config = CONFIG.replace(
        "command = [\"./deploy.sh\", \"staging\"]",
        "command = [\"./deploy.sh\", \"staging\"], backup = [\"./backup.sh\"], migrate = [\"./migrate.sh\"]",
    );
    let p = Pipeline::with_config(&config).await;
    let mut some = request("staging", HAND);
    some.phases = Some(vec![Phase::Migrate, Phase::Backup]);
    let (outcome, _) = deploy(&p, &some).await;
    let record = outcome.unwrap().record;
    assert_eq!(
        p.deployer.phases_of("staging"),
        ["backup", "migrate"],
        "in the usual order"
    );
    assert!(!record.released());
    assert_eq!(
        record.describe(),
        format!("manual backup, migrate of {} by alice", &HAND[..12])
    );

    // The harness's own command targets name no backup or migrate program.
    let q = Pipeline::start().await;
    let (refused, _) = deploy(&q, &some).await;
    let refused = refused.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "staging's deploy target has no migrate phase (it has: release)"
    );
    assert!(q.deployer.phases_of("staging").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_phase_stops_the_deploy_and_the_record_says_why() {
    let p = Pipeline::start().await;
    p.deployer.fail_phase("staging", Phase::Migrate, "migration 42 failed");
    let (outcome, _) = deploy(&p, &request("staging", HAND)).await;
    let record = outcome.unwrap().record;
    assert_eq!(
        p.deployer.phases_of("staging"),
        ["backup", "migrate"],
        "release never ran"
    );
    assert_eq!(record.failed.as_deref(), Some("migrate failed: migration 42 failed"));
    assert_eq!(record.phases[1].status, PhaseStatus::Failed);
    assert!(!record.released());
    let (env, _) = p
        .app
        .environment(&request("staging", HAND).pipeline, &request("staging", HAND).env)
        .await
        .unwrap();
    assert_eq!(env.manual.last(), Some(&record));
    assert!(env.operator.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_operator_is_refused_while_a_run_holds_the_environment() {
    let p = Pipeline::start().await;
    let staging = request("staging", HAND);
    // A run holds the lease: the operator is refused, naming it.
    let now = p.now();
    let sha2 = CommitSha::parse(SHA2).unwrap();
    let run = slipway::domain::RunId::new(&staging.pipeline, &sha2);
    p.app
        .update_environment(&staging.pipeline, &staging.env, |record| {
            record.claim(
                &run,
                now,
                0,
                now,
                jiff::SignedDuration::from_mins(10),
                &Default::default(),
            )
        })
        .await
        .unwrap();
    let (refused, _) = deploy(&p, &staging).await;
    let refused = refused.unwrap_err();
    assert!(matches!(refused, Refused::Busy { .. }), "{refused:?}");
    assert!(
        refused.to_string().contains(&format!("run {run} holds it")),
        "{refused}"
    );
    assert!(p.deployer.phases_of("staging").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_deploy_waits_for_an_operator_mid_deploy_and_goes_once_the_lease_frees() {
    let p = Pipeline::start().await;
    let staging = request("staging", HAND);
    // alice's manual deploy holds staging (as while its phases run).
    let now = p.now();
    let lease = jiff::SignedDuration::from_mins(10);
    p.app
        .update_environment(&staging.pipeline, &staging.env, |record| {
            record.claim_for_operator("alice", &staging.sha, now, lease)
        })
        .await
        .unwrap()
        .unwrap();
    p.healthy("staging", SHA);
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    p.run_queues().await;
    assert!(p.deployed("staging").is_empty(), "the run waited");
    let run = p.run(SHA).await;
    let said = format!("alice's manual deploy of {} is working there", &HAND[..12]);
    assert!(run.history.iter().any(|h| h.what.contains(&said)), "{:#?}", run.history);

    // alice's command died: her lease expires, and the run goes ahead.
    p.advance(jiff::SignedDuration::from_mins(11));
    p.run_queues().await;
    assert_eq!(p.deployed("staging"), [SHA]);
}

//! Table tests of every transition: each row starts from a run driven through some events,
//! applies one more, and states the stages and commands that must result — or why it is
//! ignored.

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::domain::run::{EnvPlan, Mode, PhaseOutcome, PhaseStatus};
use crate::domain::{Phase, Release, Stage};

const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

fn env(name: &str) -> EnvName {
    EnvName::parse(name).unwrap()
}

fn plan(mode: Mode) -> Plan {
    Plan {
        mode,
        approval_ttl: SignedDuration::from_hours(24),
        build_timeout: SignedDuration::from_hours(24),
        environments: vec![
            EnvPlan {
                name: env("staging"),
                approval: false,
                smoke: true,
                approvals_required: 1,
                bake: false,
            },
            EnvPlan {
                name: env("production"),
                approval: mode == Mode::Delivery,
                smoke: true,
                approvals_required: 1,
                bake: false,
            },
        ],
        required_checks: Vec::new(),
        min_coverage: None,
    }
}

fn new_run(mode: Mode) -> Run {
    open(
        NewRun {
            pipeline: PipelineName::parse("shop").unwrap(),
            repo: RepoName::parse("acme/shop").unwrap(),
            branch: BranchName::parse("main").unwrap(),
            sha: CommitSha::parse(SHA).unwrap(),
            commit: CommitInfo {
                message: "Add basket\n\nLonger text".into(),
                author_login: Some("dev".into()),
                author_name: "Dee Veloper".into(),
                author_email: Some("dev@example.com".into()),
                url: None,
                pushed_by: "dev".into(),
            },
            plan: plan(mode),
            parents: Vec::new(),
            carried: Default::default(),
        },
        minute(0),
    )
}

/// Minutes after the run opened.
fn minute(m: i64) -> Timestamp {
    "2026-11-21T10:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(m)
}

fn green() -> Event {
    Event::BuildFinished {
        status: BuildStatus::Success,
        build: BuildInfo::default(),
    }
}
fn red() -> Event {
    Event::BuildFinished {
        status: BuildStatus::Failure,
        build: BuildInfo::default(),
    }
}
fn errored() -> Event {
    Event::BuildFinished {
        status: BuildStatus::Error,
        build: BuildInfo::default(),
    }
}
fn deploy_started(e: &str) -> Event {
    Event::DeployStarted { env: env(e) }
}
fn phase(phase: Phase, status: PhaseStatus, reference: Option<&str>) -> PhaseOutcome {
    PhaseOutcome {
        phase,
        status,
        detail: format!("{phase} {status:?}"),
        reference: reference.map(str::to_owned),
        at: minute(0),
    }
}
/// A first deploy to `e` (nothing ran there before) whose target takes no backup.
fn deployed(e: &str) -> Event {
    Event::DeployFinished {
        env: env(e),
        output: "ok".into(),
        result: Ok(()),
        phases: vec![
            phase(Phase::Backup, PhaseStatus::Skipped, None),
            phase(Phase::Migrate, PhaseStatus::Skipped, None),
            phase(Phase::Release, PhaseStatus::Succeeded, None),
        ],
        previous: None,
    }
}
/// A first deploy to `e` that failed in its release, with nothing to go back to.
fn deploy_failed(e: &str) -> Event {
    Event::DeployFinished {
        env: env(e),
        output: "boom".into(),
        result: Err("exit status 1".into()),
        phases: vec![
            phase(Phase::Backup, PhaseStatus::Skipped, None),
            phase(Phase::Migrate, PhaseStatus::Skipped, None),
            phase(Phase::Release, PhaseStatus::Failed, None),
        ],
        previous: None,
    }
}
fn smoke_started(e: &str) -> Event {
    Event::SmokeStarted { env: env(e) }
}
fn smoke(e: &str, passed: bool) -> Event {
    Event::SmokeFinished {
        env: env(e),
        checks: vec![CheckResult {
            name: "health".into(),
            passed,
            attempts: 3,
            detail: if passed {
                "200".into()
            } else {
                "expected status 200, got 503".into()
            },
        }],
    }
}
fn decide(approve: bool) -> Event {
    Event::ApprovalDecided {
        env: env("production"),
        approver: ApproverId::parse("alice").unwrap(),
        approve,
        comment: None,
        bot: false,
    }
}
fn expire() -> Event {
    Event::ApprovalExpired { env: env("production") }
}

/// The minute the build's deadline falls on: the plan's build timeout is a day.
const BUILD_DEADLINE: i64 = 24 * 60;

/// Everything up to an approval request, at minutes 1..=5.
fn to_approval() -> Vec<Event> {
    vec![
        green(),
        deploy_started("staging"),
        deployed("staging"),
        smoke("staging", true),
    ]
}

fn with(mut base: Vec<Event>, more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    base.extend(more);
    base
}

fn input(minute_at: i64, event: Event) -> Input {
    Input {
        at: minute(minute_at),
        actor: Actor::Slipway,
        event,
    }
}

/// Applies `events` one a minute from minute 1; every one must apply.
fn drive(mode: Mode, events: &[Event]) -> Run {
    let mut run = new_run(mode);
    for (i, event) in events.iter().enumerate() {
        match apply(&run, &input(i as i64 + 1, event.clone())) {
            Outcome::Applied { run: next, .. } => run = *next,
            Outcome::Ignored(why) => panic!("setup event {event:?} was ignored: {why}"),
        }
    }
    run
}

fn statuses(run: &Run) -> String {
    run.stages
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s.label(),
                serde_json::to_value(s.status).unwrap().as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .map(|c| match c {
            Command::Deploy { env, .. } => format!("deploy {env}"),
            Command::Smoke { env, .. } => format!("smoke {env}"),
            Command::Bake { env, .. } => format!("bake {env}"),
            Command::Rollback { env, .. } => format!("rollback {env}"),
            Command::Supersede { env, .. } => format!("supersede {env}"),
            Command::Notify(n) => match &n.kind {
                NoticeKind::ApprovalRequested { env, .. } => format!("notify approval_requested {env}"),
                NoticeKind::Released { env } => format!("notify released {env}"),
                NoticeKind::Failed { stage, red_main, .. } => format!("notify failed {stage} red_main={red_main}"),
                NoticeKind::Rejected { env, by, .. } => format!("notify rejected {env} by {by}"),
                NoticeKind::ApprovalExpired { env } => format!("notify expired {env}"),
                NoticeKind::RolledBack { env, .. } => format!("notify rolled_back {env}"),
                NoticeKind::RollbackFailed { env, .. } => format!("notify rollback_failed {env}"),
                NoticeKind::Superseded { env, .. } => format!("notify superseded {env}"),
                NoticeKind::Held { env, .. } => format!("notify held {env}"),
            },
        })
        .collect()
}

enum Expect {
    Applied {
        stages: &'static str,
        commands: &'static [&'static str],
        status: RunStatus,
    },
    Ignored(fn(&Ignored) -> bool),
}

struct Case {
    name: &'static str,
    mode: Mode,
    before: Vec<Event>,
    /// Minutes after the run opened; `None` = one minute after the last setup event.
    at: Option<i64>,
    event: Event,
    expect: Expect,
}

fn case(name: &'static str, before: Vec<Event>, event: Event, expect: Expect) -> Case {
    Case {
        name,
        mode: Mode::Delivery,
        before,
        at: None,
        event,
        expect,
    }
}

#[test]
fn a_new_run_waits_for_ci_and_queues_nothing() {
    let run = new_run(Mode::Delivery);
    assert_eq!(
        statuses(&run),
        // Stages are listed in plan order; the approval belongs to production.
        "build=waiting deploy:staging=pending smoke:staging=pending approval:production=pending deploy:production=pending smoke:production=pending"
    );
    assert_eq!(run.status(), RunStatus::InProgress);
    assert_eq!(run.history.len(), 1);
    assert!(
        run.history[0].what.contains("a1b2c3d4e5f6 on main (Add basket)"),
        "{}",
        run.history[0].what
    );
    assert!(run.outbox.is_empty());
}

#[test]
fn transition_table() {
    use RunStatus::*;
    let cases = vec![
        // ---- build
        case(
            "green build queues the staging deploy",
            vec![],
            green(),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=queued smoke:staging=pending approval:production=pending deploy:production=pending smoke:production=pending",
                commands: &["deploy staging"],
                status: InProgress,
            },
        ),
        case(
            "red build stops the run and raises a red-main alert",
            vec![],
            red(),
            Expect::Applied {
                stages: "build=failed deploy:staging=skipped smoke:staging=skipped approval:production=skipped deploy:production=skipped smoke:production=skipped",
                commands: &["notify failed build red_main=true"],
                status: Failed,
            },
        ),
        case(
            "errored build stops the run too",
            vec![],
            errored(),
            Expect::Applied {
                stages: "build=failed deploy:staging=skipped smoke:staging=skipped approval:production=skipped deploy:production=skipped smoke:production=skipped",
                commands: &["notify failed build red_main=true"],
                status: Failed,
            },
        ),
        case(
            "duplicate green result is ignored",
            vec![green()],
            green(),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Succeeded,
                        ..
                    }
                )
            }),
        ),
        case(
            "red after green never moves the run backwards",
            vec![green()],
            red(),
            Expect::Ignored(|i| matches!(i, Ignored::AlreadyDone { .. })),
        ),
        case(
            "CI re-run going green after red resumes the run",
            vec![red()],
            green(),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=queued smoke:staging=pending approval:production=pending deploy:production=pending smoke:production=pending",
                commands: &["deploy staging"],
                status: InProgress,
            },
        ),
        case(
            "a second red result is ignored",
            vec![red()],
            red(),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Failed,
                        ..
                    }
                )
            }),
        ),
        case(
            "a CI result for a released run is ignored",
            with(
                to_approval(),
                [
                    decide(true),
                    deploy_started("production"),
                    deployed("production"),
                    smoke("production", true),
                ],
            ),
            red(),
            Expect::Ignored(|i| matches!(i, Ignored::AlreadyDone { .. })),
        ),
        // ---- build timeout
        Case {
            at: Some(BUILD_DEADLINE),
            ..case(
                "a build still waiting for CI at its deadline fails, without a red-main alert",
                vec![],
                Event::BuildTimedOut,
                Expect::Applied {
                    stages: "build=failed deploy:staging=skipped smoke:staging=skipped approval:production=skipped deploy:production=skipped smoke:production=skipped",
                    commands: &["notify failed build red_main=false"],
                    status: Failed,
                },
            )
        },
        Case {
            at: Some(BUILD_DEADLINE - 1),
            ..case(
                "a build timeout before the deadline is ignored",
                vec![],
                Event::BuildTimedOut,
                Expect::Ignored(|i| matches!(i, Ignored::BuildNotDueYet { .. })),
            )
        },
        Case {
            at: Some(BUILD_DEADLINE - 1),
            ..case(
                "a result a minute before the deadline still counts",
                vec![],
                green(),
                Expect::Applied {
                    stages: "build=succeeded deploy:staging=queued smoke:staging=pending approval:production=pending deploy:production=pending smoke:production=pending",
                    commands: &["deploy staging"],
                    status: InProgress,
                },
            )
        },
        Case {
            at: Some(BUILD_DEADLINE),
            ..case(
                "a result at the deadline comes too late",
                vec![],
                green(),
                Expect::Ignored(|i| matches!(i, Ignored::BuildTimedOut { .. })),
            )
        },
        Case {
            at: Some(BUILD_DEADLINE + 60),
            ..case(
                "a green re-run of a red build past the deadline comes too late",
                vec![red()],
                green(),
                Expect::Ignored(|i| matches!(i, Ignored::BuildTimedOut { .. })),
            )
        },
        Case {
            at: Some(2 * BUILD_DEADLINE),
            ..case(
                "a build timeout leaves a run waiting for its approval alone",
                to_approval(),
                Event::BuildTimedOut,
                Expect::Ignored(|i| {
                    matches!(
                        i,
                        Ignored::AlreadyDone {
                            status: StageStatus::Succeeded,
                            ..
                        }
                    )
                }),
            )
        },
        Case {
            at: Some(2 * BUILD_DEADLINE),
            ..case(
                "a build timeout is ignored for a run that already ended",
                vec![red()],
                Event::BuildTimedOut,
                Expect::Ignored(|i| {
                    matches!(
                        i,
                        Ignored::AlreadyDone {
                            status: StageStatus::Failed,
                            ..
                        }
                    )
                }),
            )
        },
        // ---- deploy
        case(
            "a worker claims the queued deploy",
            vec![green()],
            deploy_started("staging"),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=running smoke:staging=pending approval:production=pending deploy:production=pending smoke:production=pending",
                commands: &[],
                status: InProgress,
            },
        ),
        case(
            "a redelivered deploy message cannot claim twice",
            vec![green(), deploy_started("staging")],
            deploy_started("staging"),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Running,
                        ..
                    }
                )
            }),
        ),
        case(
            "a deploy message after the deploy finished is ignored",
            vec![green(), deploy_started("staging"), deployed("staging")],
            deploy_started("staging"),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Succeeded,
                        ..
                    }
                )
            }),
        ),
        case(
            "a deploy for an environment not reached yet is refused",
            vec![green()],
            deploy_started("production"),
            Expect::Ignored(|i| matches!(i, Ignored::NotReached { .. })),
        ),
        case(
            "a deploy for an unknown environment is refused",
            vec![green()],
            deploy_started("qa"),
            Expect::Ignored(|i| matches!(i, Ignored::NoSuchStage(s) if s == "deploy:qa")),
        ),
        case(
            "a finished deploy starts the smoke checks, which need no claim of their own",
            vec![green(), deploy_started("staging")],
            deployed("staging"),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=running approval:production=pending deploy:production=pending smoke:production=pending",
                commands: &["smoke staging"],
                status: InProgress,
            },
        ),
        case(
            "a failed deploy stops the run and notifies",
            vec![green(), deploy_started("staging")],
            deploy_failed("staging"),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=failed smoke:staging=skipped approval:production=skipped deploy:production=skipped smoke:production=skipped",
                commands: &["notify failed deploy:staging red_main=false"],
                status: Failed,
            },
        ),
        case(
            "a deploy result without a claim is ignored",
            vec![green()],
            deployed("staging"),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Queued,
                        ..
                    }
                )
            }),
        ),
        case(
            "a claimed deploy whose worker vanished fails loudly",
            vec![green(), deploy_started("staging")],
            Event::StageAbandoned {
                kind: StageKind::Deploy,
                env: env("staging"),
                reason: "outcome unknown".into(),
            },
            Expect::Applied {
                stages: "build=succeeded deploy:staging=failed smoke:staging=skipped approval:production=skipped deploy:production=skipped smoke:production=skipped",
                commands: &["notify failed deploy:staging red_main=false"],
                status: Failed,
            },
        ),
        // ---- smoke
        case(
            "a smoke claim (an older slipway's) is ignored once the checks started",
            vec![green(), deploy_started("staging"), deployed("staging")],
            smoke_started("staging"),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Running,
                        ..
                    }
                )
            }),
        ),
        case(
            "green staging smoke asks for approval",
            vec![green(), deploy_started("staging"), deployed("staging")],
            smoke("staging", true),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=waiting deploy:production=pending smoke:production=pending",
                commands: &["notify approval_requested production", "supersede production"],
                status: AwaitingApproval,
            },
        ),
        case(
            "red staging smoke stops the run and notifies",
            vec![green(), deploy_started("staging"), deployed("staging")],
            smoke("staging", false),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=failed approval:production=skipped deploy:production=skipped smoke:production=skipped",
                commands: &["notify failed smoke:staging red_main=false"],
                status: Failed,
            },
        ),
        // ---- approval
        case(
            "approve queues the production deploy",
            to_approval(),
            decide(true),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=succeeded deploy:production=queued smoke:production=pending",
                commands: &["deploy production"],
                status: InProgress,
            },
        ),
        case(
            "reject ends the run and notifies",
            to_approval(),
            decide(false),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=rejected deploy:production=skipped smoke:production=skipped",
                commands: &["notify rejected production by alice"],
                status: Rejected,
            },
        ),
        case(
            "a second decision is ignored",
            with(to_approval(), [decide(false)]),
            decide(true),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Rejected,
                        ..
                    }
                )
            }),
        ),
        case(
            "a replayed approval is ignored",
            with(to_approval(), [decide(true)]),
            decide(true),
            Expect::Ignored(|i| {
                matches!(
                    i,
                    Ignored::AlreadyDone {
                        status: StageStatus::Succeeded,
                        ..
                    }
                )
            }),
        ),
        case(
            "an approval before the gate is reached is refused",
            vec![green()],
            decide(true),
            Expect::Ignored(|i| matches!(i, Ignored::NotReached { .. })),
        ),
        Case {
            at: Some(5 + 24 * 60),
            ..case(
                "a decision at the deadline is refused",
                to_approval(),
                decide(true),
                Expect::Ignored(|i| matches!(i, Ignored::ApprovalExpired { .. })),
            )
        },
        Case {
            at: Some(60),
            ..case(
                "expiry before the deadline is ignored",
                to_approval(),
                expire(),
                Expect::Ignored(|i| matches!(i, Ignored::NotDueYet { .. })),
            )
        },
        Case {
            at: Some(5 + 24 * 60),
            ..case(
                "expiry at the deadline ends the run and notifies",
                to_approval(),
                expire(),
                Expect::Applied {
                    stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=expired deploy:production=skipped smoke:production=skipped",
                    commands: &["notify expired production"],
                    status: Expired,
                },
            )
        },
        case(
            "expiry after a decision is ignored",
            with(to_approval(), [decide(true)]),
            expire(),
            Expect::Ignored(|i| matches!(i, Ignored::AlreadyDone { .. })),
        ),
        // ---- production
        case(
            "green production smoke releases the run",
            with(
                to_approval(),
                [decide(true), deploy_started("production"), deployed("production")],
            ),
            smoke("production", true),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=succeeded deploy:production=succeeded smoke:production=succeeded",
                commands: &["notify released production"],
                status: Released,
            },
        ),
        case(
            "red production smoke fails the run",
            with(
                to_approval(),
                [decide(true), deploy_started("production"), deployed("production")],
            ),
            smoke("production", false),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=succeeded deploy:production=succeeded smoke:production=failed",
                commands: &["notify failed smoke:production red_main=false"],
                status: Failed,
            },
        ),
        case(
            "events after a failure are ignored",
            vec![red()],
            deploy_started("staging"),
            Expect::Ignored(|i| matches!(i, Ignored::RunEnded(RunStatus::Failed))),
        ),
        // ---- continuous deployment
        Case {
            mode: Mode::Deployment,
            ..case(
                "continuous deployment: green staging goes straight to production",
                vec![green(), deploy_started("staging"), deployed("staging")],
                smoke("staging", true),
                Expect::Applied {
                    stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded deploy:production=queued smoke:production=pending",
                    commands: &["deploy production"],
                    status: InProgress,
                },
            )
        },
        Case {
            mode: Mode::Deployment,
            ..case(
                "continuous deployment has no approval to decide",
                vec![green()],
                decide(true),
                Expect::Ignored(|i| matches!(i, Ignored::NoSuchStage(_))),
            )
        },
    ];

    let mut failures = Vec::new();
    for c in cases {
        let run = drive(c.mode, &c.before);
        let at = c.at.unwrap_or(c.before.len() as i64 + 1);
        let outcome = apply(&run, &input(at, c.event.clone()));
        // Purity: the same input gives the same outcome.
        assert_eq!(
            outcome,
            apply(&run, &input(at, c.event.clone())),
            "{}: not deterministic",
            c.name
        );
        match (&c.expect, outcome) {
            (
                Expect::Applied {
                    stages,
                    commands,
                    status,
                },
                Outcome::Applied {
                    run: next,
                    commands: got,
                },
            ) => {
                if statuses(&next) != *stages || describe(&got) != *commands || next.status() != *status {
                    failures.push(format!(
                        "{}:\n  stages   {}\n  commands {:?}\n  status   {:?}",
                        c.name,
                        statuses(&next),
                        describe(&got),
                        next.status()
                    ));
                }
                // History is append-only: the old history is a prefix of the new one.
                assert!(next.history.len() > run.history.len(), "{}: nothing recorded", c.name);
                assert_eq!(
                    next.history[..run.history.len()],
                    run.history[..],
                    "{}: history rewritten",
                    c.name
                );
                assert_eq!(next.updated_at, minute(at));
            }
            (Expect::Ignored(check), Outcome::Ignored(why)) => {
                if !check(&why) {
                    failures.push(format!("{}: ignored for the wrong reason: {why:?}", c.name));
                }
            }
            (Expect::Applied { .. }, Outcome::Ignored(why)) => failures.push(format!("{}: ignored: {why}", c.name)),
            (Expect::Ignored(_), Outcome::Applied { run, commands }) => failures.push(format!(
                "{}: applied: {} {:?}",
                c.name,
                statuses(&run),
                describe(&commands)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn approval_requests_carry_their_deadline_and_notices_name_their_history_entry() {
    let run = drive(Mode::Delivery, &to_approval()[..3]);
    let Outcome::Applied { run, commands } = apply(&run, &input(5, smoke("staging", true))) else {
        panic!("ignored")
    };
    let approval = run.stage(StageKind::Approval, Some(&env("production"))).unwrap();
    let info = approval.approval.as_ref().unwrap();
    assert_eq!(info.expires_at, minute(5) + SignedDuration::from_hours(24));
    let [Command::Notify(notice), Command::Supersede { .. }] = commands.as_slice() else {
        panic!("{commands:?}")
    };
    assert_eq!(
        notice.kind,
        NoticeKind::ApprovalRequested {
            env: env("production"),
            expires_at: info.expires_at
        }
    );
    assert_eq!(notice.seq, run.history.len() - 1);
    assert!(run.history[notice.seq].what.contains("waiting for approval"));
    assert_eq!(notice.id(), format!("shop-{SHA}.{}", notice.seq));
}

#[test]
fn decisions_record_who_decided_and_why() {
    let run = drive(Mode::Delivery, &to_approval());
    let event = Event::ApprovalDecided {
        env: env("production"),
        approver: ApproverId::parse("bob").unwrap(),
        approve: false,
        comment: Some("wait for the sale to end".into()),
        bot: false,
    };
    let Outcome::Applied { run, .. } = apply(
        &run,
        &Input {
            at: minute(9),
            actor: Actor::Approver(ApproverId::parse("bob").unwrap()),
            event,
        },
    ) else {
        panic!("ignored")
    };
    let stage = run.stage(StageKind::Approval, Some(&env("production"))).unwrap();
    assert_eq!(
        stage.approval.as_ref().unwrap().decided_by.as_ref().unwrap().as_str(),
        "bob"
    );
    let last = run.history.last().unwrap();
    assert_eq!(
        last.what,
        "bob rejected promotion to production: wait for the sale to end"
    );
    assert_eq!(last.actor, Actor::Approver(ApproverId::parse("bob").unwrap()));
}

#[test]
fn failed_deploys_keep_their_output_and_reason() {
    let run = drive(
        Mode::Delivery,
        &[green(), deploy_started("staging"), deploy_failed("staging")],
    );
    let stage = run.stage(StageKind::Deploy, Some(&env("staging"))).unwrap();
    assert_eq!(stage.output.as_deref(), Some("boom"));
    assert_eq!(
        stage.summary.as_deref(),
        Some("deploy:staging failed: exit status 1 in release")
    );
    assert_eq!(stage.attempts, 1);
}

#[test]
fn the_outbox_holds_the_latest_transitions_commands() {
    let run = drive(Mode::Delivery, &[green()]);
    assert_eq!(describe(&run.outbox), ["deploy staging"]);
    let claimed = drive(Mode::Delivery, &[green(), deploy_started("staging")]);
    assert!(claimed.outbox.is_empty(), "a claim sends nothing");
    let waiting = drive(Mode::Delivery, &to_approval());
    assert_eq!(
        describe(&waiting.outbox),
        ["notify approval_requested production", "supersede production"]
    );
}

#[test]
fn only_unclaimed_work_and_notices_are_resent() {
    let queued = drive(Mode::Delivery, &[green()]);
    assert_eq!(describe(&resendable(&queued)), ["deploy staging"]);
    // Once claimed, the outbox still lists the deploy but it must not go out again.
    let mut claimed = drive(Mode::Delivery, &[green(), deploy_started("staging")]);
    claimed.outbox = queued.outbox.clone();
    assert!(resendable(&claimed).is_empty());
    let waiting = drive(Mode::Delivery, &to_approval());
    assert_eq!(
        describe(&resendable(&waiting)),
        ["notify approval_requested production", "supersede production"]
    );
}

#[test]
fn running_smoke_checks_are_resent_since_they_need_no_claim() {
    let checking = drive(
        Mode::Delivery,
        &[green(), deploy_started("staging"), deployed("staging")],
    );
    let smoke = checking.stage(StageKind::Smoke, Some(&env("staging"))).unwrap();
    assert_eq!(smoke.status, StageStatus::Running);
    assert_eq!(smoke.started_at, Some(minute(3)), "started by the deploy's result");
    assert_eq!(smoke.attempts, 1);
    assert_eq!(describe(&resendable(&checking)), ["smoke staging"]);
    let checked = drive(Mode::Delivery, &to_approval());
    assert!(
        !describe(&resendable(&checked)).contains(&"smoke staging".to_owned()),
        "finished checks are not sent again"
    );
}

/// A run written by a slipway from before the checks started with the deploy's result
/// holds a queued smoke stage: its check is claimed, then recorded, as before.
#[test]
fn a_smoke_stage_queued_by_an_older_slipway_is_claimed_then_recorded() {
    let mut run = drive(
        Mode::Deployment,
        &[green(), deploy_started("staging"), deployed("staging")],
    );
    let i = run.stages.iter().position(|s| s.kind == StageKind::Smoke).unwrap();
    run.stages[i].status = StageStatus::Queued;
    run.stages[i].started_at = None;
    run.stages[i].attempts = 0;
    assert_eq!(describe(&resendable(&run)), ["smoke staging"]);
    assert!(
        matches!(
            ignored(&run, 4, smoke("staging", true)),
            Ignored::AlreadyDone {
                status: StageStatus::Queued,
                ..
            }
        ),
        "a result without the claim"
    );
    let (run, _) = step(&run, 4, smoke_started("staging"));
    let stage = run.stage(StageKind::Smoke, Some(&env("staging"))).unwrap();
    assert_eq!(
        (stage.status, stage.started_at),
        (StageStatus::Running, Some(minute(4)))
    );
    let (run, commands) = step(&run, 5, smoke("staging", true));
    let stage = run.stage(StageKind::Smoke, Some(&env("staging"))).unwrap();
    assert_eq!(stage.status, StageStatus::Succeeded);
    assert_eq!(describe(&commands), ["deploy production"]);
}

#[test]
fn runs_round_trip_through_json() {
    let run = drive(Mode::Delivery, &to_approval());
    let json = serde_json::to_string(&run).unwrap();
    let back: Run = serde_json::from_str(&json).unwrap();
    assert_eq!(back, run);
}

#[test]
fn commands_are_tagged_queue_messages() {
    let cmd = Command::Deploy {
        run: RunId::parse(&format!("shop-{SHA}")).unwrap(),
        env: env("staging"),
    };
    let json = serde_json::to_value(&cmd).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "deploy", "run": format!("shop-{SHA}"), "env": "staging"})
    );
    let bad: Result<Command, _> =
        serde_json::from_value(serde_json::json!({"type": "deploy", "run": "../etc", "env": "staging"}));
    assert!(bad.is_err());
}

fn check(name: &str, status: BuildStatus) -> Event {
    Event::CheckReported {
        check: name.into(),
        status,
        url: None,
        coverage: None,
    }
}

/// A delivery-mode run whose build is decided by two host checks, CI and lint.
fn checked_run(min_coverage: Option<f64>) -> Run {
    let mut run = new_run(Mode::Delivery);
    run.plan.required_checks = vec!["CI".into(), "lint".into()];
    run.plan.min_coverage = min_coverage;
    run
}

fn apply_all(mut run: Run, events: &[Event]) -> (Run, Vec<Command>, Option<Ignored>) {
    let mut last = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match apply(&run, &input(i as i64 + 1, event.clone())) {
            Outcome::Applied { run: next, commands } => {
                run = *next;
                last = commands;
            }
            Outcome::Ignored(why) => return (run, last, Some(why)),
        }
    }
    (run, last, None)
}

/// Name, events, the build stage's status after them, the last commands, why the last was ignored.
type CheckCase = (
    &'static str,
    Vec<Event>,
    &'static str,
    Vec<&'static str>,
    Option<fn(&Ignored) -> bool>,
);

#[test]
fn required_checks_table() {
    use BuildStatus::{Error, Failure, Success};
    let cases: Vec<CheckCase> = vec![
        (
            "one green check of two waits for the other",
            vec![check("CI", Success)],
            "waiting",
            vec![],
            None,
        ),
        (
            "both green: the build passes",
            vec![check("CI", Success), check("lint", Success)],
            "succeeded",
            vec!["deploy staging"],
            None,
        ),
        (
            "one red check fails the build at once",
            vec![check("lint", Failure)],
            "failed",
            vec!["notify failed build red_main=true"],
            None,
        ),
        (
            "an errored check fails it too",
            vec![check("CI", Success), check("lint", Error)],
            "failed",
            vec!["notify failed build red_main=true"],
            None,
        ),
        (
            "a check the pipeline does not require is ignored",
            vec![check("docs", Failure)],
            "waiting",
            vec![],
            Some(|i| matches!(i, Ignored::NotRequired(c) if c == "docs")),
        ),
        (
            "a duplicate check report is ignored",
            vec![check("CI", Success), check("CI", Success)],
            "waiting",
            vec![],
            Some(|i| matches!(i, Ignored::AlreadyDone { .. })),
        ),
        (
            "a red check after the build passed never moves it back",
            vec![check("CI", Success), check("lint", Success), check("lint", Failure)],
            "succeeded",
            vec!["deploy staging"],
            Some(|i| matches!(i, Ignored::AlreadyDone { .. })),
        ),
        (
            "a re-run that goes green resumes the run",
            vec![check("CI", Success), check("lint", Failure), check("lint", Success)],
            "succeeded",
            vec!["deploy staging"],
            None,
        ),
    ];
    for (name, events, build_status, commands, ignored) in cases {
        let (run, last, why) = apply_all(checked_run(None), &events);
        assert_eq!(run.stages[0].status.as_str(), build_status, "{name}");
        assert_eq!(describe(&last), commands, "{name}");
        match (ignored, why) {
            (Some(check), Some(why)) => assert!(check(&why), "{name}: wrong reason {why:?}"),
            (None, None) => {}
            (expected, got) => panic!("{name}: expected ignored={}, got {got:?}", expected.is_some()),
        }
    }
}

#[test]
fn a_failed_check_names_itself_and_waiting_says_for_what() {
    let (run, _, _) = apply_all(checked_run(None), &[check("CI", BuildStatus::Success)]);
    assert_eq!(run.history.last().unwrap().what, "check CI passed; waiting for lint");
    let (run, _, _) = apply_all(checked_run(None), &[check("lint", BuildStatus::Failure)]);
    assert_eq!(
        run.stages[0].summary.as_deref(),
        Some("build failed: check lint failed")
    );
}

#[test]
fn the_coverage_gate_holds_a_green_build_back() {
    let with_coverage = |c: Option<f64>| Event::BuildFinished {
        status: BuildStatus::Success,
        build: BuildInfo {
            coverage: c,
            ..BuildInfo::default()
        },
    };
    let gated = || {
        let mut run = new_run(Mode::Delivery);
        run.plan.min_coverage = Some(80.0);
        run
    };
    let (run, commands, _) = apply_all(gated(), &[with_coverage(Some(72.5))]);
    assert_eq!(run.stages[0].status, StageStatus::Failed);
    assert_eq!(
        run.stages[0].summary.as_deref(),
        Some("build failed: coverage 72.5% is below this pipeline's minimum of 80.0%")
    );
    assert_eq!(describe(&commands), ["notify failed build red_main=true"]);
    let (run, _, _) = apply_all(gated(), &[with_coverage(None)]);
    assert!(run.stages[0].summary.as_deref().unwrap().contains("no coverage"));
    let (run, commands, _) = apply_all(gated(), &[with_coverage(Some(80.0))]);
    assert_eq!(run.stages[0].status, StageStatus::Succeeded);
    assert_eq!(describe(&commands), ["deploy staging"]);
    // Host checks carry coverage too (GitLab pipelines report it).
    let mut run = checked_run(Some(80.0));
    run.plan.required_checks = vec!["pipeline".into()];
    let gitlab = Event::CheckReported {
        check: "pipeline".into(),
        status: BuildStatus::Success,
        url: None,
        coverage: Some(91.0),
    };
    let (run, _, _) = apply_all(run, &[gitlab]);
    assert_eq!(run.stages[0].status, StageStatus::Succeeded);
    assert_eq!(run.build.coverage, Some(91.0));
}

#[test]
fn with_required_checks_the_generic_callback_is_the_check_named_ci() {
    // Not required: it cannot bypass the checks that are.
    let (run, _, why) = apply_all(checked_run(None), &[green()]);
    assert!(matches!(why, Some(Ignored::NotRequired(c)) if c == GENERIC_CHECK));
    assert_eq!(run.stages[0].status, StageStatus::Waiting);
    // Required: it gates with the others, and its artifact is kept.
    let mut run = checked_run(None);
    run.plan.required_checks = vec!["ci".into(), "lint".into()];
    let ci = Event::BuildFinished {
        status: BuildStatus::Success,
        build: BuildInfo {
            artifact: Some("registry/shop@sha256:1".into()),
            ..BuildInfo::default()
        },
    };
    let (run, commands, _) = apply_all(run, &[ci, check("lint", BuildStatus::Success)]);
    assert_eq!(run.stages[0].status, StageStatus::Succeeded);
    assert_eq!(run.build.artifact.as_deref(), Some("registry/shop@sha256:1"));
    assert_eq!(describe(&commands), ["deploy staging"]);
}

// ---------------------------------------------------------------------------------------
// Safe deployments: phases, rollback, superseding, N of M, holds, artifact pinning, bake
// ---------------------------------------------------------------------------------------

fn earlier_release() -> Release {
    Release {
        run: RunId::parse("shop-0000000000000000000000000000000000000001").unwrap(),
        sha: CommitSha::parse("0000000000000000000000000000000000000001").unwrap(),
        artifact: Some("shop@sha256:old".into()),
        opened_at: minute(-60),
        at: minute(-59),
    }
}

/// A deploy to `e` over an earlier release, with a backup taken, failing in `failed`.
fn deploy_over_earlier(e: &str, failed: Option<Phase>) -> Event {
    let status = |p: Phase| match failed {
        Some(f) if f == p => PhaseStatus::Failed,
        _ => PhaseStatus::Succeeded,
    };
    let mut phases = vec![phase(Phase::Backup, status(Phase::Backup), Some("dump-42"))];
    for p in [Phase::Migrate, Phase::Release] {
        if phases.iter().any(|o| o.status == PhaseStatus::Failed) {
            break;
        }
        phases.push(phase(p, status(p), None));
    }
    Event::DeployFinished {
        env: env(e),
        output: "…".into(),
        result: match failed {
            Some(p) => Err(format!("{p} exited 1")),
            None => Ok(()),
        },
        phases,
        previous: Some(earlier_release()),
    }
}

fn step(run: &Run, at: i64, event: Event) -> (Run, Vec<Command>) {
    match apply(run, &input(at, event)) {
        Outcome::Applied { run, commands } => (*run, commands),
        Outcome::Ignored(why) => panic!("ignored: {why}"),
    }
}

fn ignored(run: &Run, at: i64, event: Event) -> Ignored {
    match apply(run, &input(at, event)) {
        Outcome::Applied { .. } => panic!("applied"),
        Outcome::Ignored(why) => why,
    }
}

#[test]
fn a_failed_migration_queues_a_rollback_that_restores_the_backup_and_the_previous_release() {
    let run = drive(Mode::Deployment, &[green(), deploy_started("staging")]);
    let (run, commands) = step(&run, 3, deploy_over_earlier("staging", Some(Phase::Migrate)));
    assert_eq!(
        describe(&commands),
        ["notify failed deploy:staging red_main=false", "rollback staging"]
    );
    let rollback = run.stage(StageKind::Rollback, Some(&env("staging"))).unwrap();
    assert_eq!(rollback.status, StageStatus::Queued);
    let plan = rollback.rollback.as_ref().unwrap();
    assert_eq!(plan.backup.as_deref(), Some("dump-42"));
    assert_eq!(plan.to.as_ref().unwrap().sha.short(), "000000000000");
    assert!(!plan.manual);
    assert_eq!(run.status(), RunStatus::InProgress, "not over until the rollback is");
    // Every phase is on record.
    let deploy = run.stage(StageKind::Deploy, Some(&env("staging"))).unwrap();
    let phases: Vec<_> = deploy.phases.iter().map(|p| (p.phase, p.status)).collect();
    assert_eq!(
        phases,
        [
            (Phase::Backup, PhaseStatus::Succeeded),
            (Phase::Migrate, PhaseStatus::Failed)
        ]
    );

    let (run, _) = step(&run, 4, Event::RollbackStarted { env: env("staging") });
    let done = Event::RollbackFinished {
        env: env("staging"),
        phases: vec![
            phase(Phase::Restore, PhaseStatus::Succeeded, None),
            phase(Phase::Release, PhaseStatus::Succeeded, None),
        ],
        result: Ok(()),
    };
    let (run, commands) = step(&run, 5, done);
    assert_eq!(describe(&commands), ["notify rolled_back staging"]);
    assert_eq!(run.status(), RunStatus::RolledBack);
    assert_eq!(
        statuses(&run).split(' ').next_back(),
        Some("rollback:staging=succeeded")
    );
}

#[test]
fn a_failed_backup_changed_nothing_so_nothing_is_rolled_back() {
    let run = drive(Mode::Deployment, &[green(), deploy_started("staging")]);
    let (run, commands) = step(&run, 3, deploy_over_earlier("staging", Some(Phase::Backup)));
    assert_eq!(describe(&commands), ["notify failed deploy:staging red_main=false"]);
    assert!(run.stage(StageKind::Rollback, Some(&env("staging"))).is_none());
    assert_eq!(run.status(), RunStatus::Failed);
}

#[test]
fn failed_smoke_checks_roll_the_environment_back() {
    let run = drive(Mode::Deployment, &[green(), deploy_started("staging")]);
    let (run, _) = step(&run, 3, deploy_over_earlier("staging", None));
    let (run, commands) = step(&run, 5, smoke("staging", false));
    assert_eq!(
        describe(&commands),
        ["notify failed smoke:staging red_main=false", "rollback staging"]
    );
    assert!(run.stage(StageKind::Rollback, Some(&env("staging"))).is_some());
}

#[test]
fn an_automatic_rollback_overtaken_by_a_newer_release_is_called_off_and_the_run_stays_failed() {
    let newer = RunId::parse("shop-cccccccccccccccccccccccccccccccccccccccc").unwrap();
    let overtaken = || Event::RollbackOvertaken {
        env: env("staging"),
        by: newer.clone(),
    };
    let deployed = drive(Mode::Deployment, &[green(), deploy_started("staging")]);
    let (deployed, _) = step(&deployed, 3, deploy_over_earlier("staging", None));
    // Failed smoke checks, a failed migration, an unhealthy bake: each queues a rollback that
    // a newer release reaching staging first calls off.
    for (what, failed) in [
        ("smoke", step(&deployed, 5, smoke("staging", false)).0),
        (
            "migration",
            step(
                &drive(Mode::Deployment, &[green(), deploy_started("staging")]),
                3,
                deploy_over_earlier("staging", Some(Phase::Migrate)),
            )
            .0,
        ),
    ] {
        assert_eq!(failed.status(), RunStatus::InProgress, "{what}: the rollback is queued");
        // A late `Superseded` of the deploy or an approval does not touch it.
        ignored(
            &failed,
            6,
            Event::Superseded {
                env: env("staging"),
                by: newer.clone(),
            },
        );
        let (called_off, commands) = step(&failed, 7, overtaken());
        let stage = called_off.stage(StageKind::Rollback, Some(&env("staging"))).unwrap();
        assert_eq!(stage.status, StageStatus::Superseded, "{what}");
        assert_eq!(stage.superseded_by.as_ref(), Some(&newer), "{what}");
        assert!(
            stage.summary.as_deref().is_some_and(|s| s.contains("called off")),
            "{what}: {:?}",
            stage.summary
        );
        assert_eq!(
            called_off.status(),
            RunStatus::Failed,
            "{what}: the run failed, and nothing was put back"
        );
        assert_eq!(describe(&commands), ["notify superseded staging"], "{what}");
        // Once called off (or once it started), it is not called off again.
        ignored(&called_off, 8, overtaken());
        let (started, _) = step(&failed, 7, Event::RollbackStarted { env: env("staging") });
        ignored(&started, 8, overtaken());
    }
    // A run with no rollback there has nothing to call off.
    assert!(matches!(ignored(&deployed, 6, overtaken()), Ignored::NoSuchStage(_)));
}

#[test]
fn a_rollback_that_fails_is_an_alert_naming_what_is_left_to_do() {
    let run = drive(Mode::Deployment, &[green(), deploy_started("staging")]);
    let (run, _) = step(&run, 3, deploy_over_earlier("staging", Some(Phase::Release)));
    let (run, _) = step(&run, 4, Event::RollbackStarted { env: env("staging") });
    let failed = Event::RollbackFinished {
        env: env("staging"),
        phases: vec![phase(Phase::Restore, PhaseStatus::Failed, None)],
        result: Err("restore exited 2".into()),
    };
    let (run, commands) = step(&run, 5, failed);
    let [
        Command::Notify(Notice {
            kind: NoticeKind::RollbackFailed { by_hand, reason, .. },
            ..
        }),
    ] = commands.as_slice()
    else {
        panic!("{commands:?}")
    };
    assert_eq!(reason, "restore exited 2");
    assert_eq!(
        by_hand,
        &[
            "restore backup dump-42 on staging",
            "redeploy 000000000000 (shop@sha256:old) to staging"
        ]
    );
    assert_eq!(run.status(), RunStatus::Failed);
}

#[test]
fn a_deploy_over_nothing_without_a_backup_has_nothing_to_roll_back_to() {
    let run = drive(Mode::Deployment, &[green(), deploy_started("staging")]);
    let (run, commands) = step(&run, 3, deploy_failed("staging"));
    assert_eq!(describe(&commands), ["notify failed deploy:staging red_main=false"]);
    assert!(
        run.history
            .last()
            .unwrap()
            .what
            .contains("nothing to roll staging back to")
    );
}

#[test]
fn approvals_need_n_different_people_and_bots_never_count() {
    let mut run = new_run(Mode::Delivery);
    run.plan.environments[1].approvals_required = 2;
    let run = to_approval()
        .into_iter()
        .enumerate()
        .fold(run, |run, (i, e)| step(&run, i as i64 + 1, e).0);
    assert_eq!(
        run.stage(StageKind::Approval, Some(&env("production")))
            .unwrap()
            .approval
            .as_ref()
            .unwrap()
            .required,
        2
    );
    let by = |who: &str, bot: bool| Event::ApprovalDecided {
        env: env("production"),
        approver: ApproverId::parse(who).unwrap(),
        approve: true,
        comment: None,
        bot,
    };
    assert!(matches!(ignored(&run, 6, by("release-bot", true)), Ignored::Bot(_)));
    let (run, commands) = step(&run, 6, by("alice", false));
    assert!(commands.is_empty(), "one of two approvals deploys nothing");
    assert_eq!(run.status(), RunStatus::AwaitingApproval);
    assert!(matches!(
        ignored(&run, 7, by("alice", false)),
        Ignored::AlreadyApproved(_)
    ));
    let (run, commands) = step(&run, 7, by("bob", false));
    assert_eq!(describe(&commands), ["deploy production"]);
    let stage = run.stage(StageKind::Approval, Some(&env("production"))).unwrap();
    assert_eq!(
        stage.summary.as_deref(),
        Some("alice and bob approved promotion to production")
    );
}

#[test]
fn a_superseded_approval_points_to_the_newer_run() {
    let run = drive(Mode::Delivery, &to_approval());
    let newer = RunId::parse("shop-ffffffffffffffffffffffffffffffffffffffff").unwrap();
    let (run, commands) = step(
        &run,
        6,
        Event::Superseded {
            env: env("production"),
            by: newer.clone(),
        },
    );
    assert_eq!(describe(&commands), ["notify superseded production"]);
    assert_eq!(run.status(), RunStatus::Superseded);
    assert_eq!(
        ignored(&run, 7, decide(true)),
        Ignored::Superseded {
            stage: "approval:production".into(),
            by: newer
        }
    );
}

#[test]
fn a_hold_is_recorded_once_per_reason() {
    let run = drive(Mode::Deployment, &[green()]);
    let held = |reason: &str| Event::DeployHeld {
        env: env("staging"),
        reason: reason.into(),
        notify: true,
    };
    let (run, commands) = step(&run, 2, held("held before staging: freeze: launch"));
    assert_eq!(describe(&commands), ["notify held staging"]);
    assert_eq!(
        ignored(&run, 3, held("held before staging: freeze: launch")),
        Ignored::Unchanged
    );
    // Still queued: the deploy goes on by itself once the hold ends.
    assert_eq!(
        run.stage(StageKind::Deploy, Some(&env("staging"))).unwrap().status,
        StageStatus::Queued
    );
}

#[test]
fn production_refuses_an_artifact_staging_did_not_verify() {
    let mut run = drive(Mode::Deployment, &[green(), deploy_started("staging")]);
    run.build.artifact = Some("shop@sha256:aaa".into());
    let (run, _) = step(&run, 3, deployed("staging"));
    let (mut run, _) = step(&run, 5, smoke("staging", true));
    assert_eq!(
        run.stage(StageKind::Deploy, Some(&env("staging")))
            .unwrap()
            .artifact
            .as_deref(),
        Some("shop@sha256:aaa")
    );
    // Something changed the run's artifact after staging verified it.
    run.build.artifact = Some("shop@sha256:bbb".into());
    let (run, commands) = step(&run, 6, deploy_started("production"));
    assert_eq!(describe(&commands), ["notify failed deploy:production red_main=false"]);
    let summary = run
        .stage(StageKind::Deploy, Some(&env("production")))
        .unwrap()
        .summary
        .clone()
        .unwrap();
    assert!(
        summary.contains("refuses artifact shop@sha256:bbb because staging verified shop@sha256:aaa"),
        "{summary}"
    );
}

#[test]
fn an_unhealthy_bake_rolls_back_and_a_healthy_one_releases() {
    let mut run = new_run(Mode::Deployment);
    run.plan.environments[1].bake = true;
    run.stages.push(Stage::new(StageKind::Bake, Some(env("production"))));
    let events = [
        green(),
        deploy_started("staging"),
        deployed("staging"),
        smoke("staging", true),
        deploy_started("production"),
        deploy_over_earlier("production", None),
    ];
    let run = events
        .into_iter()
        .enumerate()
        .fold(run, |run, (i, e)| step(&run, i as i64 + 1, e).0);
    let (run, commands) = step(&run, 10, smoke("production", true));
    assert_eq!(describe(&commands), ["bake production"]);
    let (baking, _) = step(&run, 11, Event::BakeStarted { env: env("production") });

    let (healthy, commands) = step(
        &baking,
        21,
        Event::BakeFinished {
            env: env("production"),
            result: Ok("error_rate 0.01".into()),
        },
    );
    assert_eq!(describe(&commands), ["notify released production"]);
    assert_eq!(healthy.status(), RunStatus::Released);

    let (sick, commands) = step(
        &baking,
        12,
        Event::BakeFinished {
            env: env("production"),
            result: Err("error_rate 0.4 > max 0.05".into()),
        },
    );
    assert_eq!(
        describe(&commands),
        ["notify failed bake:production red_main=false", "rollback production"]
    );
    assert_eq!(sick.status(), RunStatus::InProgress);
}

/// A continuous-deployment run that went green through staging and production.
fn released_everywhere() -> Run {
    drive(
        Mode::Deployment,
        &[
            green(),
            deploy_started("staging"),
            deployed("staging"),
            smoke("staging", true),
            deploy_started("production"),
            deployed("production"),
            smoke("production", true),
        ],
    )
}

#[test]
fn a_manual_rollback_is_queued_only_for_a_release_that_ran_there() {
    let released = released_everywhere();
    assert_eq!(released.status(), RunStatus::Released);
    let ask = |to: Release| Event::RollbackRequested {
        env: env("production"),
        to,
        by: "alice".into(),
    };
    let (run, commands) = step(&released, 20, ask(earlier_release()));
    assert_eq!(describe(&commands), ["rollback production"]);
    assert!(
        run.stage(StageKind::Rollback, Some(&env("production")))
            .unwrap()
            .rollback
            .as_ref()
            .unwrap()
            .manual
    );
    // Asking again while it is queued, or rolling back to itself, is refused.
    assert!(matches!(
        ignored(&run, 21, ask(earlier_release())),
        Ignored::CannotRollBack(_)
    ));
    let itself = released.release_in(&env("production")).unwrap();
    assert!(matches!(
        ignored(&released, 21, ask(itself)),
        Ignored::CannotRollBack(_)
    ));
    // A run that never reached production cannot be rolled back there.
    let early = drive(Mode::Deployment, &[green()]);
    assert!(matches!(
        ignored(&early, 3, ask(earlier_release())),
        Ignored::CannotRollBack(_)
    ));
    // A run released to staging but still on its way to production (deploying there, or
    // waiting for its approval) is not rolled back on staging under its own feet.
    let on_staging = [
        green(),
        deploy_started("staging"),
        deployed("staging"),
        smoke("staging", true),
    ];
    for mode in [Mode::Deployment, Mode::Delivery] {
        let on_its_way = drive(mode, &on_staging);
        assert!(!on_its_way.status().is_finished(), "{mode:?}");
        let staging = Event::RollbackRequested {
            env: env("staging"),
            to: earlier_release(),
            by: "alice".into(),
        };
        let why = ignored(&on_its_way, 12, staging);
        assert!(
            matches!(&why, Ignored::CannotRollBack(text) if text.contains("still on its way")),
            "{mode:?}: {why:?}"
        );
    }
}

#[test]
fn a_manual_rollback_overtaken_by_a_newer_release_is_superseded_and_the_run_stays_released() {
    let released = released_everywhere();
    let (asked, _) = step(
        &released,
        20,
        Event::RollbackRequested {
            env: env("production"),
            to: earlier_release(),
            by: "alice".into(),
        },
    );
    assert_eq!(asked.status(), RunStatus::InProgress);
    let newer = RunId::parse("shop-cccccccccccccccccccccccccccccccccccccccc").unwrap();
    // A late `Superseded` (decided while the run still waited for its approval) is not
    // what calls a rollback off.
    ignored(
        &asked,
        21,
        Event::Superseded {
            env: env("production"),
            by: newer.clone(),
        },
    );
    let (called_off, commands) = step(
        &asked,
        21,
        Event::RollbackOvertaken {
            env: env("production"),
            by: newer.clone(),
        },
    );
    let stage = called_off.stage(StageKind::Rollback, Some(&env("production"))).unwrap();
    assert_eq!(stage.status, StageStatus::Superseded);
    assert_eq!(stage.superseded_by.as_ref(), Some(&newer));
    assert_eq!(called_off.status(), RunStatus::Released, "nothing was undone");
    assert_eq!(describe(&commands), ["notify superseded production"]);
    // It can be asked for again, and then counts again.
    let (again, _) = step(
        &called_off,
        22,
        Event::RollbackRequested {
            env: env("production"),
            to: earlier_release(),
            by: "alice".into(),
        },
    );
    assert_eq!(again.status(), RunStatus::InProgress);
    // A released run with nothing pending has nothing to supersede.
    ignored(
        &released,
        23,
        Event::Superseded {
            env: env("production"),
            by: newer,
        },
    );
}

#[test]
fn a_timed_out_build_says_why_and_stays_failed() {
    let run = new_run(Mode::Delivery);
    let Outcome::Applied { run, commands } = apply(&run, &input(BUILD_DEADLINE + 3, Event::BuildTimedOut)) else {
        panic!("the timeout applies past the deadline");
    };
    let [
        Command::Notify(Notice {
            kind: NoticeKind::Failed { stage, reason, .. },
            ..
        }),
    ] = commands.as_slice()
    else {
        panic!("one failed notice: {commands:?}");
    };
    assert_eq!(stage, "build");
    assert_eq!(
        reason,
        "CI never reported within 24h (the pipeline's build_timeout); if its builds take longer, raise build_timeout in the pipeline's configuration"
    );
    assert_eq!(
        run.stage(StageKind::Build, None).unwrap().summary.as_deref(),
        Some(format!("build failed: {reason}").as_str())
    );

    // Idempotent: the sweep finding it again changes nothing.
    assert_eq!(
        apply(&run, &input(BUILD_DEADLINE + 4, Event::BuildTimedOut)),
        Outcome::Ignored(Ignored::AlreadyDone {
            stage: "build".into(),
            status: StageStatus::Failed
        })
    );
    // CI's result, late: ignored, and the answer says why and what to do.
    let Outcome::Ignored(late) = apply(&run, &input(BUILD_DEADLINE + 5, green())) else {
        panic!("a late green result is ignored");
    };
    assert_eq!(
        late.to_string(),
        "CI reported after the build's deadline 2026-11-22T10:00:00Z (this pipeline's build_timeout is 24h), so the run no longer takes build results; push a new commit to build again, or raise build_timeout in the pipeline's configuration"
    );
}

#[test]
fn a_timed_out_build_names_the_checks_that_never_reported() {
    let mut run = new_run(Mode::Delivery);
    run.plan.required_checks = vec!["CI".into(), "lint".into()];
    run.plan.build_timeout = SignedDuration::from_hours(2);
    let ci_green = Event::CheckReported {
        check: "CI".into(),
        status: BuildStatus::Success,
        url: None,
        coverage: None,
    };
    let Outcome::Applied { run, .. } = apply(&run, &input(3, ci_green)) else {
        panic!("the check counts");
    };
    assert_eq!(
        apply(&run, &input(119, Event::BuildTimedOut)),
        Outcome::Ignored(Ignored::BuildNotDueYet { deadline: minute(120) })
    );
    let Outcome::Applied { run, .. } = apply(&run, &input(120, Event::BuildTimedOut)) else {
        panic!("the timeout applies at the deadline");
    };
    assert_eq!(
        run.stage(StageKind::Build, None).unwrap().summary.as_deref(),
        Some(
            "build failed: CI never reported on lint within 2h (the pipeline's build_timeout); if its builds take longer, raise build_timeout in the pipeline's configuration"
        )
    );
}

fn retry(e: &str, newer: Option<&str>) -> Event {
    Event::RetryRequested {
        env: env(e),
        by: "alice".into(),
        newer: newer.map(|n| RunId::parse(n).unwrap()),
    }
}

fn rolled_back(e: &str) -> Vec<Event> {
    vec![
        Event::RollbackStarted { env: env(e) },
        Event::RollbackFinished {
            env: env(e),
            phases: vec![
                phase(Phase::Restore, PhaseStatus::Succeeded, None),
                phase(Phase::Release, PhaseStatus::Succeeded, None),
            ],
            result: Ok(()),
        },
    ]
}

/// A run approved for production whose deploy there failed with nothing to roll back, and
/// then a rollback of staging asked for by hand, followed by `then`.
fn failed_in_production_then_staging_rolled_back(then: &[Event]) -> Vec<Event> {
    let mut events = vec![
        decide(true),
        deploy_started("production"),
        deploy_failed("production"),
        Event::RollbackRequested {
            env: env("staging"),
            to: earlier_release(),
            by: "alice".into(),
        },
    ];
    events.extend_from_slice(then);
    events
}

#[test]
fn retry_table() {
    use RunStatus::*;
    const NEWER: &str = "shop-b2c3d4e5f60718293a4b5c6d7e8f901234567890";
    let fresh = "build=succeeded deploy:staging=queued smoke:staging=pending approval:production=pending deploy:production=pending smoke:production=pending";
    let cases = vec![
        case(
            "a deploy that failed with nothing to roll back is deployed again",
            vec![green(), deploy_started("staging"), deploy_failed("staging")],
            retry("staging", None),
            Expect::Applied {
                stages: fresh,
                commands: &["deploy staging"],
                status: InProgress,
            },
        ),
        case(
            "a deploy that failed and was rolled back is deployed again",
            with(
                vec![
                    green(),
                    deploy_started("staging"),
                    deploy_over_earlier("staging", Some(Phase::Migrate)),
                ],
                rolled_back("staging"),
            ),
            retry("staging", None),
            Expect::Applied {
                stages: fresh,
                commands: &["deploy staging"],
                status: InProgress,
            },
        ),
        case(
            "failed smoke checks are retried from the deploy",
            with(
                vec![green(), deploy_started("staging"), deploy_over_earlier("staging", None)],
                with(vec![smoke("staging", false)], rolled_back("staging")),
            ),
            retry("staging", None),
            Expect::Applied {
                stages: fresh,
                commands: &["deploy staging"],
                status: InProgress,
            },
        ),
        case(
            "a failed production deploy keeps its approval and deploys production again",
            with(
                to_approval(),
                [decide(true), deploy_started("production"), deploy_failed("production")],
            ),
            retry("production", None),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=succeeded deploy:production=queued smoke:production=pending",
                commands: &["deploy production"],
                status: InProgress,
            },
        ),
        case(
            "not while the rollback after the failure is under way",
            vec![
                green(),
                deploy_started("staging"),
                deploy_over_earlier("staging", Some(Phase::Migrate)),
            ],
            retry("staging", None),
            Expect::Ignored(|i| matches!(i, Ignored::CannotRetry(m) if m.contains("still under way"))),
        ),
        case(
            "not while a rollback of another environment, asked for since, is under way",
            with(to_approval(), failed_in_production_then_staging_rolled_back(&[])),
            retry("production", None),
            Expect::Ignored(
                |i| matches!(i, Ignored::CannotRetry(m) if m == "the rollback of staging is still under way; retry once it is done"),
            ),
        ),
        case(
            "not once another environment was rolled back from the commit",
            with(
                to_approval(),
                failed_in_production_then_staging_rolled_back(&[
                    Event::RollbackStarted { env: env("staging") },
                    Event::RollbackFinished {
                        env: env("staging"),
                        phases: vec![phase(Phase::Release, PhaseStatus::Succeeded, None)],
                        result: Ok(()),
                    },
                ]),
            ),
            retry("production", None),
            Expect::Ignored(
                |i| matches!(i, Ignored::CannotRetry(m) if m.starts_with("staging was rolled back from a1b2c3d4e5f6 (that rollback succeeded)") && m.ends_with("push a fix instead")),
            ),
        ),
        case(
            "a rollback of another environment that was called off changed nothing: set aside with the rest",
            with(
                to_approval(),
                failed_in_production_then_staging_rolled_back(&[Event::RollbackOvertaken {
                    env: env("staging"),
                    by: RunId::parse(NEWER).unwrap(),
                }]),
            ),
            retry("production", None),
            Expect::Applied {
                stages: "build=succeeded deploy:staging=succeeded smoke:staging=succeeded approval:production=succeeded deploy:production=queued smoke:production=pending",
                commands: &["deploy production"],
                status: InProgress,
            },
        ),
        case(
            "not once a newer run has passed the environment",
            vec![green(), deploy_started("staging"), deploy_failed("staging")],
            retry("staging", Some(NEWER)),
            Expect::Ignored(|i| matches!(i, Ignored::CannotRetry(m) if m.contains("older commit over it"))),
        ),
        case(
            "not a red build: CI re-runs those",
            vec![red()],
            retry("staging", None),
            Expect::Ignored(|i| matches!(i, Ignored::CannotRetry(m) if m.contains("did not fail at a deploy"))),
        ),
        case(
            "not a run that failed somewhere else",
            vec![green(), deploy_started("staging"), deploy_failed("staging")],
            retry("production", None),
            Expect::Ignored(|i| matches!(i, Ignored::CannotRetry(_))),
        ),
        case(
            "not a run on its way",
            with(to_approval(), []),
            retry("staging", None),
            Expect::Ignored(|i| matches!(i, Ignored::CannotRetry(_))),
        ),
        case(
            "not twice: the first retry's deploy is queued",
            vec![
                green(),
                deploy_started("staging"),
                deploy_failed("staging"),
                retry("staging", None),
            ],
            retry("staging", None),
            Expect::Ignored(|i| matches!(i, Ignored::CannotRetry(_))),
        ),
        case(
            "not an environment the run has no deploy for",
            vec![green(), deploy_started("staging"), deploy_failed("staging")],
            retry("qa", None),
            Expect::Ignored(|i| matches!(i, Ignored::NoSuchStage(_))),
        ),
    ];
    for c in cases {
        let run = drive(c.mode, &c.before);
        let at = c.at.unwrap_or(c.before.len() as i64 + 1);
        match (apply(&run, &input(at, c.event.clone())), c.expect) {
            (
                Outcome::Applied { run, commands },
                Expect::Applied {
                    stages,
                    commands: want,
                    status,
                },
            ) => {
                assert_eq!(statuses(&run), stages, "{}", c.name);
                assert_eq!(describe(&commands), want, "{}", c.name);
                assert_eq!(run.status(), status, "{}", c.name);
            }
            (Outcome::Ignored(why), Expect::Ignored(check)) => assert!(check(&why), "{}: {why:?}", c.name),
            (outcome, _) => panic!("{}: unexpected {outcome:?}", c.name),
        }
    }
}

#[test]
fn a_retry_after_a_rollback_elsewhere_was_called_off_goes_all_the_way() {
    let newer = RunId::parse("shop-cccccccccccccccccccccccccccccccccccccccc").unwrap();
    let run = drive(
        Mode::Delivery,
        &with(
            to_approval(),
            failed_in_production_then_staging_rolled_back(&[Event::RollbackOvertaken {
                env: env("staging"),
                by: newer,
            }]),
        ),
    );
    assert_eq!(run.status(), RunStatus::Failed);
    let (run, _) = step(&run, 20, retry("production", None));
    assert_eq!(
        run.retired.len(),
        1,
        "the called-off rollback is kept as an earlier attempt"
    );
    assert_eq!(run.rollbacks_in(&env("staging")).count(), 1);
    let (run, _) = step(&run, 21, deploy_started("production"));
    let (run, _) = step(&run, 22, deployed("production"));
    let (run, commands) = step(&run, 23, smoke("production", true));
    assert_eq!(describe(&commands), ["notify released production"]);
    assert_eq!(run.status(), RunStatus::Released);
}

#[test]
fn a_retry_keeps_the_rollback_it_follows_and_says_who_asked() {
    let run = drive(
        Mode::Deployment,
        &with(
            vec![
                green(),
                deploy_started("staging"),
                deploy_over_earlier("staging", Some(Phase::Release)),
            ],
            rolled_back("staging"),
        ),
    );
    assert_eq!(run.status(), RunStatus::RolledBack);
    let (run, _) = step(&run, 10, retry("staging", None));
    assert_eq!(run.retired.len(), 1, "the rollback is kept as an earlier attempt");
    assert_eq!(run.retired[0].kind, StageKind::Rollback);
    assert!(run.stage(StageKind::Rollback, None).is_none());
    let deploy = run.stage(StageKind::Deploy, Some(&env("staging"))).unwrap();
    assert_eq!(deploy.attempts, 1, "attempts count across retries");
    assert!(
        deploy.phases.is_empty() && deploy.summary.is_none(),
        "the new attempt starts clean"
    );
    let last = run.history.last().unwrap();
    assert_eq!(
        last.what,
        "alice asked to retry a1b2c3d4e5f6 in staging after deploy:staging failed"
    );
    // The retried deploy goes on as any other: started, deployed, smoke-checked.
    let (run, _) = step(&run, 11, deploy_started("staging"));
    assert_eq!(run.stage(StageKind::Deploy, Some(&env("staging"))).unwrap().attempts, 2);
    let (run, _) = step(&run, 12, deployed("staging"));
    let (run, commands) = step(&run, 14, smoke("staging", true));
    assert_eq!(describe(&commands), ["deploy production"]);
    assert_eq!(run.status(), RunStatus::InProgress);
}

//! The model-based property test of the whole engine: random schedules of pushes, CI
//! results, workers (crashing or racing), store and queue faults, approvals and rollbacks,
//! over the real router and handlers, with five invariants checked after every step (see
//! `slipway_tests::model`). A failing schedule is shrunk and printed as a scenario test.
//!
//! `SLIPWAY_MODEL_CASES` sets how many schedules run (default 500; `.ci/run` runs 100,000);
//! `SLIPWAY_MODEL_SEED` replays a run's random choices (its seed is printed).

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use slipway::domain::Phase;
use slipway_tests::model::{Approver, Build, Env, Model, Op, Q, Schedule, Step, sha};

/// The longest schedule.
const MAX_STEPS: usize = 40;

/// Schedules `cargo test` runs when `SLIPWAY_MODEL_CASES` is not set.
const DEFAULT_CASES: u32 = 500;

fn approver() -> impl Strategy<Value = Approver> {
    prop_oneof![
        4 => Just(Approver::Alice),
        4 => Just(Approver::Bob),
        2 => Just(Approver::Carol),
        1 => Just(Approver::Dev),
        1 => Just(Approver::ReleaseBot),
    ]
}

fn env() -> impl Strategy<Value = Env> {
    prop_oneof![Just(Env::Staging), Just(Env::Production)]
}

fn queue() -> impl Strategy<Value = Q> {
    prop_oneof![3 => Just(Q::Deploy), 2 => Just(Q::Smoke), 2 => Just(Q::Notify)]
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::Backup),
        Just(Phase::Migrate),
        Just(Phase::Release),
        Just(Phase::Restore)
    ]
}

/// One step, for a history of `pushes` pushes carrying commits 1..=`commits`.
fn step(pushes: usize, commits: usize) -> impl Strategy<Value = Step> {
    let commit = 1..=commits;
    prop_oneof![
        5 => (0..pushes).prop_map(Step::Push),
        5 => (commit.clone(), prop_oneof![4 => Just(Build::Green), 1 => Just(Build::Red)]).prop_map(|(n, c)| Step::Ci(n, c)),
        8 => queue().prop_map(Step::Work),
        2 => queue().prop_map(Step::WorkTwo),
        2 => (queue(), 0..12usize).prop_map(|(q, k)| Step::Crash(q, k)),
        4 => Just(Step::Drain),
        2 => (commit.clone(), approver()).prop_map(|(n, a)| Step::View(n, a)),
        5 => (commit.clone(), approver()).prop_map(|(n, a)| Step::Approve(n, a)),
        1 => (commit.clone(), approver(), approver()).prop_map(|(n, a, b)| Step::ApproveTwo(n, a, b)),
        1 => (commit.clone(), approver()).prop_map(|(n, a)| Step::Reject(n, a)),
        1 => env().prop_map(Step::Rollback),
        1 => commit.clone().prop_map(Step::Retry),
        1 => (commit, approver()).prop_map(|(n, a)| Step::RollbackLink(n, a)),
        1 => (prop_oneof![1 => Just(Op::Get), 1 => Just(Op::Create), 2 => Just(Op::Replace)], 0..6usize, any::<bool>())
            .prop_map(|(op, skip, conflict)| Step::StoreFault(op, skip, conflict)),
        1 => (1..3u32).prop_map(Step::SendFails),
        1 => (env(), phase()).prop_map(|(e, p)| Step::DeployFails(e, p)),
        1 => (env(), any::<bool>()).prop_map(|(e, ok)| Step::Health(e, ok)),
        2 => prop_oneof![Just(1i64), Just(3), Just(15), Just(90), Just(60 * 25)].prop_map(Step::Advance),
        1 => Just(Step::Sweep),
    ]
}

/// A history of two or three pushes of one or two commits each, and up to [`MAX_STEPS`] steps.
fn schedule() -> impl Strategy<Value = Schedule> {
    prop::collection::vec(1usize..=2, 2..=3)
        .prop_flat_map(|pushes| {
            let commits = pushes.iter().sum();
            let steps = prop::collection::vec(step(pushes.len(), commits), 1..=MAX_STEPS);
            (Just(pushes), steps)
        })
        .prop_map(|(pushes, steps)| Schedule { pushes, steps })
}

/// Runs one schedule to the end on `rt`.
fn run(rt: &tokio::runtime::Runtime, schedule: &Schedule) -> Result<(), TestCaseError> {
    rt.block_on(async {
        let mut m = Model::start(&schedule.pushes).await;
        for step in &schedule.steps {
            m.try_step(*step).await?;
        }
        m.try_finish().await
    })
    .map_err(|v| TestCaseError::fail(v.what))
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// Runs `cases` schedules from `seed` on this thread.
fn run_cases(cases: u32, seed: u64) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 20_000,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    match runner.run(&schedule(), |s| run(&rt, &s)) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, schedule)) => Err(format!(
            "the model found a schedule that breaks an invariant (seed {seed}).\n\n{why}\n\nShrunk to {} steps; {schedule:?}",
            schedule.steps.len()
        )),
        Err(TestError::Abort(why)) => Err(format!("the model test aborted (seed {seed}): {why}")),
    }
}

#[test]
fn random_schedules_keep_every_invariant() {
    let cases: u32 = env_number("SLIPWAY_MODEL_CASES").unwrap_or(DEFAULT_CASES);
    let seed: u64 = env_number("SLIPWAY_MODEL_SEED").unwrap_or_else(rand_seed);
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 4);
    let threads = u32::try_from(threads).unwrap().min(cases.max(1));
    let started = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = cases / threads + u32::from(t < cases % threads);
                std::thread::Builder::new()
                    .name(format!("model-{t}"))
                    .stack_size(64 << 20)
                    .spawn_scoped(scope, move || run_cases(share, seed.wrapping_add(u64::from(t))))
                    .unwrap()
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "model: ran {cases} random schedules on {threads} thread(s) in {:.1?} (seed {seed}; threads use seed, seed+1, …)",
        started.elapsed()
    );
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The harness itself: a plain schedule releases a commit to production with two approvals,
/// and a rollback link puts the earlier release back — so the model reaches the states its
/// invariants are about.
/// A retry after a failed rollback: commit 3 released to staging, its smoke checks failed
/// and so did restoring the backup, so staging still runs 3 though its record's current
/// release is 2. Retrying 2 must not put it over 3.
#[tokio::test(start_paused = true)]
async fn found_a_retry_never_redeploys_an_older_commit_over_one_a_failed_rollback_left() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 1]).await;
    m.step(DeployFails(Env::Staging, Phase::Restore)).await;
    m.step(Push(0)).await; // before 0, commits [1, 2]
    m.step(Push(1)).await; // before 2, commits [3]
    m.step(Health(Env::Staging, false)).await;
    m.step(Ci(2, Green)).await;
    m.step(Work(Q::Deploy)).await;
    m.step(Ci(3, Green)).await;
    m.step(Advance(15)).await;
    m.step(Drain).await;
    m.step(Push(0)).await; // before 0, commits [1, 2]
    m.step(Drain).await;
    m.step(Retry(2)).await;
    m.finish().await;
}

#[tokio::test(start_paused = true)]
async fn the_model_releases_with_two_approvals_and_rolls_back_from_a_link() {
    use Approver::*;
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[1, 1]).await;
    for n in [1, 2] {
        m.step(Push(n - 1)).await;
        m.step(Ci(n, Green)).await;
        m.step(Drain).await;
        m.step(Approve(n, Alice)).await;
        m.step(Approve(n, Alice)).await;
        m.step(Approve(n, ReleaseBot)).await;
        m.step(Approve(n, Dev)).await;
        m.step(Drain).await;
        assert_eq!(m.p.deployed("production").len(), n - 1, "one approval is not enough");
        m.step(Approve(n, Bob)).await;
        m.step(Drain).await;
        m.step(Advance(15)).await;
    }
    assert_eq!(m.p.deployed("production"), [sha(1), sha(2)]);
    m.step(RollbackLink(2, Carol)).await;
    m.step(Drain).await;
    let production: Vec<_> = m.p.deployer.phases_of("production");
    assert_eq!(
        production.len(),
        9,
        "two deploys and a rollback of three phases: {production:?}"
    );
    m.finish().await;
}

// ---- schedules the model found, kept as scenarios

/// A deploy's worker dies after the release phase and before the environment's record
/// learns of it; the lease expires and is freed. The older commit that was waiting must not
/// go over the newer one that may be running.
#[tokio::test(start_paused = true)]
async fn found_a_worker_dying_after_its_release_never_lets_an_older_commit_over_it() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 1, 2]).await;
    m.step(Push(2)).await;
    m.step(Ci(5, Green)).await;
    m.step(Crash(Q::Deploy, 7)).await;
    m.step(Push(1)).await;
    m.step(Ci(3, Green)).await;
    m.finish().await;
}

/// The deploy's result was stored but its work could not be sent, so the worker stopped
/// before settling the environment; the sweep freed the lease first.
#[tokio::test(start_paused = true)]
async fn found_a_release_whose_settle_was_cut_short_is_recorded_by_the_sweep() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[1, 2]).await;
    m.step(Push(1)).await;
    m.step(Ci(3, Green)).await;
    m.step(SendFails(1)).await;
    m.step(Work(Q::Deploy)).await;
    m.step(Push(0)).await;
    m.step(Push(0)).await;
    m.step(Ci(1, Green)).await;
    m.finish().await;
}

/// Staging is rolled back by hand while its run is still on its way to production: refused,
/// instead of a rollback stage the run would later walk into.
#[tokio::test(start_paused = true)]
async fn found_a_rollback_asked_while_the_run_is_on_its_way_is_refused() {
    use Approver::*;
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[1, 1]).await;
    m.step(Push(1)).await;
    m.step(Push(0)).await;
    m.step(Ci(1, Green)).await;
    m.step(Ci(2, Green)).await;
    m.step(Drain).await;
    m.step(ApproveTwo(2, Alice, Alice)).await;
    m.step(ApproveTwo(2, Alice, Bob)).await;
    m.step(Rollback(Env::Staging)).await;
    m.finish().await;
}

/// Staging's smoke checks fail and the rollback has nothing to redeploy (only the backup is
/// restored), while a store fault cut the environment's update short: the environment still
/// runs the failed commit's code, so an older commit never goes over it.
#[tokio::test(start_paused = true)]
async fn found_a_rollback_with_nothing_to_redeploy_leaves_its_release_current() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 1]).await;
    m.step(Health(Env::Staging, false)).await;
    m.step(Push(1)).await;
    m.step(Ci(3, Green)).await;
    m.step(StoreFault(Op::Replace, 2, false)).await;
    m.step(Drain).await;
    m.step(Push(0)).await;
    m.step(Ci(2, Green)).await;
    m.finish().await;
}

#[tokio::test(start_paused = true)]
async fn found_a_red_then_green_build_under_a_store_fault_keeps_git_order() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 2]).await;
    m.step(Health(Env::Staging, false)).await;
    m.step(StoreFault(Op::Replace, 5, false)).await;
    m.step(Push(1)).await;
    m.step(Ci(4, Red)).await;
    m.step(Ci(4, Green)).await;
    m.step(Push(0)).await;
    m.step(Drain).await;
    m.step(Ci(2, Green)).await;
    m.finish().await;
}

/// Found at seed 7785783752836650624: run 3's worker dies after its release on staging;
/// run 4 then takes the lease and fails its backup. Run 4's known failure must not clear
/// run 3's doubt, or commit 2 (an ancestor of 3) goes over the commit 3 staging runs.
#[tokio::test(start_paused = true)]
async fn found_a_newer_run_failing_before_its_release_keeps_an_earlier_doubt() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 1, 1]).await;
    m.step(Push(2)).await; // before 3, commits [4]
    m.step(Push(1)).await; // before 2, commits [3]
    m.step(Ci(3, Green)).await;
    m.step(Push(0)).await; // before 0, commits [1, 2]
    m.step(Crash(Q::Deploy, 4)).await;
    m.step(DeployFails(Env::Staging, Phase::Backup)).await;
    m.step(Ci(4, Green)).await;
    m.step(Advance(15)).await;
    m.step(Ci(2, Green)).await;
    m.finish().await;
}

/// Found at seed 13043820499402141502: run 3's worker dies after its release on staging
/// while run 1's deploy waits unsent; run 3 is retried and fails its backup. That failure must
/// not clear the doubt the first deploy left, or the sweep's resent deploy of commit 1 (an
/// ancestor of 3) goes over the commit 3 that staging runs.
#[tokio::test(start_paused = true)]
async fn found_a_retry_failing_before_its_release_keeps_the_doubt_of_the_deploy_it_retried() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[1, 2, 1]).await;
    m.step(Push(0)).await; // before 0, commits [1]
    m.step(Push(1)).await; // before 1, commits [2, 3]
    m.step(SendFails(1)).await;
    m.step(Ci(1, Green)).await;
    m.step(Ci(3, Green)).await;
    m.step(Crash(Q::Deploy, 4)).await;
    m.step(Advance(15)).await;
    m.step(Work(Q::Deploy)).await;
    m.step(Retry(3)).await;
    m.step(DeployFails(Env::Staging, Phase::Backup)).await;
    m.finish().await;
}

/// Found at seed 6534632736752704261: commit 2's staging deploy is abandoned by a crashed
/// worker, staging is rolled back by hand, then commit 2's run is retried. The retry sets the
/// rollback aside among the run's retired stages; the accepted rollback must still show there.
#[tokio::test(start_paused = true)]
async fn found_a_retry_keeps_the_rollback_accepted_before_it() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[1, 1]).await;
    m.step(Push(0)).await;
    m.step(Ci(1, Green)).await;
    m.step(Crash(Q::Deploy, 8)).await;
    m.step(Advance(15)).await;
    m.step(Push(1)).await;
    m.step(Ci(2, Green)).await;
    m.step(Work(Q::Deploy)).await;
    m.step(Advance(3)).await;
    m.step(Sweep).await;
    m.step(Rollback(Env::Staging)).await;
    m.step(Work(Q::Deploy)).await;
    m.step(Retry(2)).await;
    m.finish().await;
}

/// Found at seed 143839489583726920: commit 3 is released to staging and fails production's
/// backup; staging is then rolled back by hand, and run 3 is retried in production. The
/// retry started every stage from production's deploy on over — the staging rollback after
/// them too, so the accepted rollback was lost. A retry is now refused while a rollback of
/// another environment is under way, and once one ran.
#[tokio::test(start_paused = true)]
async fn found_a_retry_never_loses_a_rollback_of_another_environment() {
    use Approver::*;
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 1]).await;
    m.step(Push(1)).await; // before 2, commits [3]
    m.step(Push(0)).await; // before 0, commits [1, 2]
    m.step(Ci(2, Green)).await;
    m.step(Ci(3, Green)).await;
    m.step(Drain).await;
    m.step(DeployFails(Env::Production, Phase::Backup)).await;
    m.step(ApproveTwo(3, Alice, Bob)).await;
    m.step(Work(Q::Deploy)).await;
    m.step(Rollback(Env::Staging)).await;
    m.step(Retry(3)).await;
    m.finish().await;
}

/// Found at seed 128414609629935046: commit 6 is released to staging; commit 2, whose
/// relation to 6 no push had shown yet, takes the lease by arrival order and its worker dies
/// before the deploy starts. Then the push of 3 and 4 shows 2 to be an ancestor of 6. The
/// redelivered message found its run holding the lease and was granted it without the
/// newer-first rules, so 2 went over 6.
#[tokio::test(start_paused = true)]
async fn found_a_holder_asking_again_is_superseded_once_git_shows_it_older() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 2, 2]).await;
    m.step(Push(2)).await; // before 4, commits [5, 6]
    m.step(Advance(1)).await;
    m.step(Ci(6, Green)).await;
    m.step(Drain).await;
    m.step(Push(0)).await; // before 0, commits [1, 2]
    m.step(Ci(2, Green)).await;
    m.step(Crash(Q::Deploy, 3)).await;
    m.step(Push(1)).await; // before 2, commits [3, 4]
    m.step(Advance(1)).await;
    m.finish().await;
}

/// Found at seed 3706844830618179362: commit 3 is released to staging, but a store fault
/// loses the settle that records it there; its smoke checks fail and the worker dies right
/// after queueing the rollback. The sweep frees the expired lease while the rollback is still
/// queued: staging still runs 3, so run 3 must stay in doubt there, or commit 2 (an ancestor
/// of 3) takes the lease and goes over it.
#[tokio::test(start_paused = true)]
async fn found_a_lease_freed_while_its_rollback_is_queued_keeps_the_release_in_doubt() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 1, 2]).await;
    m.step(Push(1)).await; // before 2, commits [3]
    m.step(Health(Env::Staging, false)).await;
    m.step(Ci(3, Green)).await;
    m.step(Push(0)).await; // before 0, commits [1, 2]
    m.step(SendFails(1)).await;
    m.step(StoreFault(Op::Replace, 2, false)).await;
    m.step(WorkTwo(Q::Deploy)).await;
    m.step(Ci(2, Green)).await;
    m.step(Ci(3, Green)).await;
    m.step(Crash(Q::Smoke, 2)).await;
    m.finish().await;
}

/// Found at seed 3420243573354294882: run 1's lease expires while its smoke checks run, and
/// run 4 takes it and releases. Run 1's checks then fail and queue its automatic rollback,
/// which must not restore run 1's backup over commit 4 and record commit 1 as what runs, or
/// commit 2 (an ancestor of 4) goes over commit 4. The rollback's lease claim finds commit
/// 4 — neither run 1's release nor the one it goes back to — and calls the rollback off.
#[tokio::test(start_paused = true)]
async fn found_an_automatic_rollback_after_a_newer_release_is_superseded() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[1, 1, 2]).await;
    m.step(Health(Env::Staging, false)).await;
    m.step(Push(0)).await; // before 0, commits [1]
    m.step(Push(2)).await; // before 2, commits [3, 4]
    m.step(Ci(1, Green)).await;
    m.step(Push(0)).await; // before 0, commits [1]
    m.step(Work(Q::Deploy)).await;
    m.step(Advance(15)).await;
    m.step(Ci(4, Green)).await;
    m.step(SendFails(2)).await;
    m.step(Push(1)).await; // before 1, commits [2]
    m.step(Drain).await;
    m.step(SendFails(1)).await;
    m.step(Ci(2, Green)).await;
    m.finish().await;
}

/// Found at seed 14704654883398374138: commit 4's worker dies after releasing to staging,
/// before it records what it did, and its redelivered message marks the deploy failed with
/// its outcome unknown. A retry of run 4 is then queued (its message lost to a failing
/// queue), and the sweep frees the expired lease: the deploy stage, queued again, said
/// "never ran", so the sweep cleared run 4's doubt and commit 2 (an ancestor of 4) went over
/// it. A stage queued, waiting or superseded after an earlier attempt no longer says how that
/// attempt ended: the doubt stays.
#[tokio::test(start_paused = true)]
async fn found_a_retry_queued_after_an_abandoned_deploy_keeps_its_doubt_when_the_sweep_frees_the_lease() {
    use Build::*;
    use Step::*;
    let mut m = Model::start(&[2, 2]).await;
    m.step(Push(1)).await; // before 2, commits [3, 4]
    m.step(Ci(4, Green)).await;
    m.step(Crash(Q::Deploy, 4)).await;
    m.step(SendFails(2)).await;
    m.step(Push(0)).await; // before 0, commits [1, 2]
    m.step(Ci(2, Green)).await;
    m.step(Advance(15)).await;
    m.step(WorkTwo(Q::Deploy)).await;
    m.step(SendFails(1)).await;
    m.step(Retry(4)).await;
    m.step(Sweep).await;
    m.finish().await;
}

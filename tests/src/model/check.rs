//! The invariants the model checks after every step:
//!
//! - **(a)** no phase of a (run, environment) runs twice — a forward deploy's backup, migrate
//!   and release once each per attempt (a retry is the next attempt); each rollback's phases
//!   once per rollback;
//! - **(b)** no environment moves to an older commit except by a rollback: when the target
//!   releases commit Y forward to E, Y is not a known ancestor (by the `before` links and
//!   commit lists of the pushes delivered so far) of what E runs;
//! - **(c)** every approval counts once: no approver twice, never a bot or the author, only
//!   approvers whose click was answered (or is in doubt), and never a passed gate with fewer
//!   than the approvals required;
//! - **(d)** every unfinished run is open for a reason: a stage waits for CI or an approver,
//!   or its work is queued or under way with a message that will move it (or a send may
//!   have been lost, which the sweep repairs); a build fails for CI's silence only once its
//!   build timeout is up; after [`Model::try_finish`] (whose clock passes every build
//!   timeout) every run ended, and no message or lease is left;
//! - **(e)** no update is lost: every push, CI result, approval, rejection and rollback the
//!   engine accepted shows in the run (a rollback that a later retry set aside, among its
//!   retired stages) — a build CI's accepted result decided never times out.

use std::collections::BTreeSet;
use std::fmt;

use slipway::domain::{Phase, Run, StageKind, StageStatus};
use slipway::ports::QueueName;

use super::{APPROVALS_REQUIRED, Approver, Env, Model, Step, commit_of};

/// An invariant that did not hold, and the steps that led there.
#[derive(Debug, Clone)]
pub struct Violation {
    pub what: String,
    pub steps: Vec<Step>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  after steps: {:?}", self.what, self.steps)
    }
}

impl std::error::Error for Violation {}

impl Model {
    /// Checks every invariant as things stand.
    pub(super) async fn check(&mut self) -> Result<(), Violation> {
        self.check_phases()?;
        let runs = self.runs().await;
        for run in &runs {
            self.check_approvals(run)?;
            self.check_reason(run)?;
            self.check_build_timeout(run)?;
        }
        self.check_nothing_lost(&runs)
    }

    async fn runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        for n in 1..=self.git.commits {
            // Another step's injected faults may be pending: read around them.
            for _ in 0..4 {
                match self.p.app.load(&Self::run_id(n)).await {
                    Ok(found) => {
                        runs.extend(found.map(|(run, _)| run));
                        break;
                    }
                    Err(_) => continue,
                }
            }
        }
        runs
    }

    /// (a) and (b), over the phases the fake target carried out since the last check.
    fn check_phases(&mut self) -> Result<(), Violation> {
        let phases = self.p.deployer.phases();
        for record in &phases[self.phases_seen..] {
            let env = match record.env.as_str() {
                "staging" => Env::Staging,
                _ => Env::Production,
            };
            let key = match &record.rolling_back {
                // A retried deploy is a new attempt of the run's deploy: once per attempt.
                None => format!(
                    "deploy #{} of {} to {} ({})",
                    record.attempt.unwrap_or(1),
                    record.run,
                    record.env,
                    record.phase
                ),
                Some(by) => format!(
                    "rollback #{} of {by} in {}: {} of {}",
                    record.attempt.unwrap_or(0),
                    record.env,
                    record.phase,
                    record.sha
                ),
            };
            if !self.phase_keys.insert(key.clone()) {
                return Err(self.violation(format!("(a) a phase ran twice: {key}")));
            }
            if record.phase != Phase::Release {
                continue;
            }
            let Some(to) = commit_of(&record.sha) else { continue };
            if record.rolling_back.is_none()
                && let Some(&runs) = self.current.get(&env)
                && self.is_ancestor(to, runs)
            {
                return Err(self.violation(format!(
                    "(b) {} moved from commit {runs} to commit {to}, which git says is older (commit {to} is an ancestor of {runs} by the pushes delivered), and not by a rollback",
                    record.env
                )));
            }
            if !record.failed {
                self.current.insert(env, to);
            }
        }
        self.phases_seen = phases.len();
        Ok(())
    }

    /// Is commit `a` an ancestor of commit `b`, by the pushes delivered so far?
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![b];
        while let Some(n) = todo.pop() {
            for &parent in self.parents.get(&n).into_iter().flatten() {
                if parent == a {
                    return true;
                }
                if seen.insert(parent) {
                    todo.push(parent);
                }
            }
        }
        false
    }

    /// (c) for one run.
    fn check_approvals(&self, run: &Run) -> Result<(), Violation> {
        let Some(n) = commit_of(run.sha.as_str()) else {
            return Ok(());
        };
        for stage in run.stages.iter().filter(|s| s.kind == StageKind::Approval) {
            let Some(info) = &stage.approval else { continue };
            let env = if stage.label().ends_with("staging") {
                Env::Staging
            } else {
                Env::Production
            };
            let by: Vec<&str> = info.approvals.iter().map(|a| a.by.as_str()).collect();
            let distinct: BTreeSet<&str> = by.iter().copied().collect();
            if distinct.len() != by.len() {
                return Err(self.violation(format!(
                    "(c) an approval counted twice on commit {n}'s {}: {by:?}",
                    stage.label()
                )));
            }
            for who in [Approver::ReleaseBot, Approver::Dev] {
                if distinct.contains(who.as_str()) {
                    return Err(self.violation(format!(
                        "(c) {} may not approve commit {n}, yet counts: {by:?}",
                        who.as_str()
                    )));
                }
            }
            let answered: BTreeSet<&str> = self
                .accepted
                .approvals
                .get(&(n, env))
                .into_iter()
                .flatten()
                .map(|a| a.as_str())
                .collect();
            let doubtful: BTreeSet<&str> = self
                .accepted
                .doubtful
                .get(&(n, env))
                .into_iter()
                .flatten()
                .map(|a| a.as_str())
                .collect();
            if !answered.is_subset(&distinct) || !distinct.iter().all(|a| answered.contains(a) || doubtful.contains(a))
            {
                return Err(self.violation(format!(
                    "(c)/(e) commit {n}'s {} counts approvals {by:?}, but the approvers answered 200 were {answered:?} (and 5xx: {doubtful:?})",
                    stage.label()
                )));
            }
            if stage.status == StageStatus::Succeeded && by.len() < APPROVALS_REQUIRED {
                return Err(self.violation(format!(
                    "(c) commit {n}'s {} passed with {by:?}, fewer than {APPROVALS_REQUIRED} approvals",
                    stage.label()
                )));
            }
        }
        Ok(())
    }

    /// (d) for one run, while the schedule runs.
    fn check_reason(&self, run: &Run) -> Result<(), Violation> {
        if run.status().is_finished() {
            return Ok(());
        }
        let n = commit_of(run.sha.as_str()).unwrap_or(0);
        let moving: Vec<_> = run
            .stages
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    StageStatus::Waiting | StageStatus::Queued | StageStatus::Running
                )
            })
            .collect();
        if moving.is_empty() {
            return Err(self.violation(format!(
                "(d) commit {n}'s run is {} with no stage waiting, queued or running: nothing will move it ({})",
                run.status(),
                stages(run)
            )));
        }
        if self.lossy {
            return Ok(());
        }
        for stage in moving {
            let (queue, kind) = match stage.kind {
                StageKind::Deploy => (QueueName::Deploy, "deploy"),
                StageKind::Rollback => (QueueName::Deploy, "rollback"),
                StageKind::Smoke => (QueueName::Smoke, "smoke"),
                StageKind::Bake => (QueueName::Smoke, "bake"),
                StageKind::Build | StageKind::Approval => continue,
            };
            let env = stage.env.as_ref().map(|e| e.as_str()).unwrap_or_default();
            let has_message = self.p.queue.pending(queue).iter().any(|body| {
                serde_json::from_str::<serde_json::Value>(body)
                    .is_ok_and(|m| m["type"] == kind && m["run"] == run.id.as_str() && m["env"] == env)
            });
            if !has_message {
                return Err(self.violation(format!(
                    "(d) commit {n}'s {} is {} but no {kind} message for it exists, and no send was lost ({})",
                    stage.label(),
                    stage.status,
                    stages(run)
                )));
            }
        }
        Ok(())
    }

    /// (d) and (e) for a build that failed because CI never reported: only past its
    /// deadline, and never after CI's result was accepted.
    fn check_build_timeout(&self, run: &Run) -> Result<(), Violation> {
        let Some(build) = run.stage(StageKind::Build, None) else {
            return Ok(());
        };
        let timed_out = build.status == StageStatus::Failed
            && build
                .summary
                .as_deref()
                .is_some_and(|s| s.starts_with("build failed: CI never reported"));
        if !timed_out {
            return Ok(());
        }
        let n = commit_of(run.sha.as_str()).unwrap_or(0);
        if build.finished_at.is_none_or(|at| at < run.build_deadline()) {
            return Err(self.violation(format!(
                "(d) commit {n}'s build timed out at {:?}, before its deadline {}",
                build.finished_at,
                run.build_deadline()
            )));
        }
        if self.accepted.ci.contains(&n) {
            return Err(self.violation(format!(
                "(e) CI's result for commit {n} was accepted, yet its build timed out"
            )));
        }
        Ok(())
    }

    /// (e): what the engine accepted shows in the runs.
    fn check_nothing_lost(&self, runs: &[Run]) -> Result<(), Violation> {
        let run_of = |n: usize| runs.iter().find(|r| commit_of(r.sha.as_str()) == Some(n));
        for &n in &self.accepted.pushes {
            if run_of(n).is_none() {
                return Err(self.violation(format!("(e) the push of commit {n} was accepted, but it has no run")));
            }
        }
        for &n in &self.accepted.ci {
            let build = run_of(n)
                .and_then(|r| r.stage(StageKind::Build, None))
                .map(|s| s.status);
            if matches!(build, None | Some(StageStatus::Waiting)) {
                return Err(self.violation(format!(
                    "(e) CI's result for commit {n} was accepted, but its build is {build:?}"
                )));
            }
        }
        for &(n, env) in &self.accepted.rejections {
            let status = run_of(n)
                .and_then(|r| r.stage(StageKind::Approval, Some(&env.name())))
                .map(|s| s.status);
            if status != Some(StageStatus::Rejected) {
                return Err(self.violation(format!(
                    "(e) a rejection of commit {n} was accepted, but its approval is {status:?}"
                )));
            }
        }
        for (&(n, env), &asked) in &self.accepted.rollbacks {
            // Those a retry set aside count too.
            let name = env.name();
            let manual = run_of(n).map_or(0, |r| {
                r.rollbacks_in(&name)
                    .filter(|s| s.rollback.as_ref().is_some_and(|p| p.manual))
                    .count()
            });
            if manual < asked {
                return Err(self.violation(format!(
                    "(e) {asked} rollback(s) of {} from commit {n} were accepted, but its run shows {manual}",
                    env.as_str()
                )));
            }
        }
        Ok(())
    }

    /// (d) once the world has settled: every deadline, build timeouts included, has passed
    /// and the sweep ran, so no run is left open — not even one waiting for CI.
    pub(super) async fn check_settled(&self) -> Result<(), Violation> {
        for run in self.runs().await {
            let n = commit_of(run.sha.as_str()).unwrap_or(0);
            if !run.status().is_finished() {
                return Err(self.violation(format!(
                    "(d) after every deadline passed and the sweep ran, commit {n}'s run is still {}: {}",
                    run.status(),
                    stages(&run)
                )));
            }
        }
        for env in Env::ALL {
            let pipeline = slipway::domain::PipelineName::parse("shop").expect("valid");
            if let Ok((record, _)) = self.p.app.environment(&pipeline, &env.name()).await
                && let Some(lease) = record.lease
            {
                return Err(self.violation(format!(
                    "(d) after everything settled, {} is still leased to {}",
                    env.as_str(),
                    lease.run
                )));
            }
        }
        Ok(())
    }
}

/// A run's stages in one line: `build=succeeded deploy:staging=queued …`.
fn stages(run: &Run) -> String {
    run.stages
        .iter()
        .map(|s| format!("{}={}", s.label(), s.status))
        .collect::<Vec<_>>()
        .join(" ")
}

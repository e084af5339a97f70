//! One environment of one pipeline, shared by all its runs: who may deploy to it now (the
//! lease), who is waiting, and what it runs. Pure: callers read the record, decide here,
//! and write it back with a conditional write, so two runs never both hold the lease.
//!
//! The rules:
//! - one run holds the lease while its work for the environment (deploy, smoke checks,
//!   bake, rollback) is under way; the lease expires unless renewed, and only an expired
//!   lease is taken over;
//! - a run that finds the lease held waits in line; when the lease frees, the newest
//!   waiting run goes first, and older ones are superseded;
//! - a run is never deployed over a newer one: if the environment already runs, or a
//!   newer run is waiting for, a newer commit, the older run is superseded.
//!
//! - an operator's manual deploy (`slipway deploy`) holds the environment the same way, under
//!   its own lease ([`Environment::operator`]): runs wait for it as for a run, and it is
//!   refused while a run holds the lease. It is recorded apart from the pipeline's releases
//!   ([`Environment::manual`]), so it never changes which commit the pipeline counts as
//!   running, and the pipeline's next deploy goes ahead as usual;
//! - a rollback asked for without a target goes to [`Environment::rollback_target`]: the
//!   newest release of an older commit than the newest commit released here.
//!
//! "Newer" is git's order where git says ([`Lineage::is_newer`]): a push of B whose
//! `before` is A makes B newer than A whichever of them arrived first; arrival order decides
//! only between commits git's facts do not relate.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_with::formats::PreferMany;
use serde_with::{OneOrMany, serde_as};

use super::ids::{CommitSha, RunId};
use super::lineage::{Lineage, Place};
use super::run::{Phase, PhaseOutcome, PhaseStatus, Release};

/// How many releases an environment remembers, newest last.
pub const RELEASES_KEPT: usize = 50;

/// How many manual deploys an environment remembers, newest last.
pub const MANUAL_KEPT: usize = 20;

/// How many runs in doubt an environment remembers. Each comes from a worker that vanished
/// mid-deploy and stays only until a newer commit's release is recorded, so more than a few
/// at once means something else is wrong; beyond this the earliest marked is forgotten.
pub const DOUBTS_KEPT: usize = 20;

/// A waiting run that has not asked again for this long is forgotten: its run ended or
/// moved on.
pub const WAITER_TTL: SignedDuration = SignedDuration::from_mins(15);

/// An environment's shared record.
#[serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Environment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<Waiter>,
    /// What the environment runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Release>,
    /// Everything released here, oldest first, at most [`RELEASES_KEPT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<Release>,
    /// The runs whose deploy here may have released without slipway knowing yet: each is
    /// marked when its deploy takes the lease, and unmarked once that deploy's outcome is
    /// known or a newer commit's release is recorded here. A worker that died between the
    /// release phase and writing what it did leaves its mark, so no older commit goes over
    /// what may be running — not even after a newer run took the lease and failed before
    /// releasing. At most [`DOUBTS_KEPT`]; a record written before there could be several
    /// holds one.
    #[serde_as(as = "OneOrMany<_, PreferMany>")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_doubt: Vec<Mark>,
    /// The lease an operator's manual deploy (`slipway deploy`) holds while its phases run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorLease>,
    /// Manual deploys made here, oldest first, at most [`MANUAL_KEPT`]. Apart from `current`
    /// and `releases`: they are the pipeline's, and decide which of its commits may deploy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manual: Vec<ManualRelease>,
}

/// The environment held by an operator deploying from their own machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorLease {
    /// Who deploys (`--by`, default `$USER`).
    pub by: String,
    pub sha: CommitSha,
    pub acquired_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A manual deploy (`slipway deploy`): which commit, by whom, which phases ran and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualRelease {
    pub sha: CommitSha,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    pub by: String,
    pub started_at: Timestamp,
    /// When its last phase ended.
    pub at: Timestamp,
    pub phases: Vec<PhaseOutcome>,
    /// Why it failed; `None`: every phase it ran succeeded or had nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl ManualRelease {
    /// Whether it put its commit in place: its release phase succeeded.
    pub fn released(&self) -> bool {
        self.failed.is_none()
            && self
                .phases
                .iter()
                .any(|p| p.phase == Phase::Release && p.status == PhaseStatus::Succeeded)
    }

    /// In a person's words: "manual release of 6113728f27ae by alice", "manual backup, migrate
    /// of … by alice (failed: …)".
    pub fn describe(&self) -> String {
        let what = if self.released() {
            "release".to_owned()
        } else {
            let ran: Vec<&str> = self.phases.iter().map(|p| p.phase.as_str()).collect();
            if ran.is_empty() {
                "deploy".to_owned()
            } else {
                ran.join(", ")
            }
        };
        let mut text = format!("manual {what} of {} by {}", self.sha.short(), self.by);
        if let Some(why) = &self.failed {
            text.push_str(&format!(" (failed: {why})"));
        }
        text
    }
}

/// Who holds an environment, for a waiting run's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A run, deploying, checking, baking or rolling back.
    Run(RunId),
    /// An operator's manual deploy.
    Operator { by: String, sha: CommitSha },
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Run(run) => write!(f, "run {run}"),
            Holder::Operator { by, sha } => write!(f, "{by}'s manual deploy of {}", sha.short()),
        }
    }
}

/// Why [`Environment::rollback_target`] has no release to go back to. Its `Display` is the
/// sentence shown to people, prefixed with the environment's name by [`NoRollback::in_env`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRollback {
    /// Nothing was ever released here.
    NothingReleased,
    /// What runs is the newest release, and no release of an older commit is remembered.
    NothingOlder { current: Box<Release> },
    /// What runs is already older than the newest release: a rollback (or a bake's) went
    /// back already. `current` is the newest release older than `newest` (a rollback to the
    /// default target happened), or older still (one went further back with `--to`).
    AlreadyBack {
        current: Box<Release>,
        newest: Box<Release>,
        default: bool,
    },
}

impl NoRollback {
    /// The refusal, for `env`.
    pub fn in_env(&self, env: &str) -> String {
        match self {
            NoRollback::NothingReleased => format!("nothing was ever released to {env}"),
            NoRollback::NothingOlder { current } => format!(
                "{env} has no release of an older commit than {} to go back to; nothing to roll back",
                current.sha.short()
            ),
            NoRollback::AlreadyBack {
                current,
                newest,
                default: true,
            } => format!(
                "{env} already runs {}, the newest release older than {}; nothing to roll back (name an earlier release with --to to go further back)",
                current.sha.short(),
                newest.sha.short()
            ),
            NoRollback::AlreadyBack { current, newest, .. } => format!(
                "{env} already runs {}, older than its newest release {}; nothing to roll back (name an earlier release with --to to go further back)",
                current.sha.short(),
                newest.sha.short()
            ),
        }
    }
}

/// A run in doubt and its place in line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub run: RunId,
    pub opened_at: Timestamp,
    /// Which attempt of the run's deploy here took the lease: how many times a worker had
    /// started that deploy before (a retry starts it again).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    /// An earlier attempt of this run's deploy here was abandoned before its outcome was
    /// known (its worker vanished) when this one took the lease: whatever this attempt comes
    /// to, that one may have released. Only a release recorded here — this run's, or a newer
    /// commit's — clears the mark; a failure before releasing does not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned_before: bool,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Mark {
    fn place(&self) -> Place<'_> {
        Place::new(&self.run, self.opened_at)
    }
}

/// What a run's work in an environment came to, as [`Environment::settle`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the environment runs because of the run: its release, or the release its
    /// rollback put back.
    pub release: Option<Release>,
    /// Work for the environment is still queued or under way.
    pub busy: bool,
    /// Whether its deploy here released is known (it recorded its phases, or never started).
    /// A deploy abandoned by a vanished worker is not.
    pub known: bool,
}

/// The right to deploy to the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub run: RunId,
    /// When the holding run opened (its commit's place in line).
    pub opened_at: Timestamp,
    pub acquired_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A run waiting for the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub run: RunId,
    pub opened_at: Timestamp,
    /// The last time it asked.
    pub seen_at: Timestamp,
}

impl Waiter {
    fn place(&self) -> Place<'_> {
        Place::new(&self.run, self.opened_at)
    }
}

/// What [`Environment::claim`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The run holds the lease (newly, or still).
    Granted,
    /// Another run (or an operator) holds it until `until`; the asking run is in line.
    /// `overtaken` are the older runs that were in line: they left it, since a newer run
    /// waiting there means they would never deploy, and the caller supersedes them now
    /// instead of when they would have asked again.
    Wait {
        holder: Holder,
        until: Timestamp,
        overtaken: Vec<RunId>,
    },
    /// A newer commit runs here or waits: the asking run must not deploy.
    Superseded { by: RunId },
}

impl Environment {
    /// `run` (opened at `opened_at`) asks for the lease at `now` for the `attempt`-th
    /// attempt of its deploy here (how many times a worker started that deploy before); a
    /// granted lease lasts `ttl`. Which commit is newer comes from `lineage`. Changes the
    /// record as decided; the caller writes it back conditionally.
    pub fn claim(
        &mut self,
        run: &RunId,
        opened_at: Timestamp,
        attempt: u32,
        now: Timestamp,
        ttl: SignedDuration,
        lineage: &Lineage,
    ) -> Claim {
        let me = Place::new(run, opened_at);
        self.waiting
            .retain(|w| w.run != *run && now.duration_since(w.seen_at) < WAITER_TTL);
        // Newer first, also for a run that holds the lease already (a delivery that died
        // after claiming, before its deploy started; a retry before the lease was freed):
        // what git says may have changed since it claimed — a push can show the commit to be
        // older than one that runs here — and no phase of this deploy has run yet.
        let holding = self.lease.as_ref().is_some_and(|lease| lease.run == *run);
        if let Some(by) = self.newer_than(me, lineage) {
            if holding {
                // Given up in the same write; its mark in doubt stays as it was.
                self.lease = None;
            }
            return Claim::Superseded { by };
        }
        if holding && let Some(lease) = self.lease.as_mut() {
            lease.expires_at = later(now, ttl);
            self.mark(run, opened_at, attempt);
            return Claim::Granted;
        }
        let held = self.operator_at(now).map(|o| (o.holder(), o.expires_at)).or_else(|| {
            let lease = self.lease.as_ref().filter(|l| l.expires_at > now)?;
            Some((Holder::Run(lease.run.clone()), lease.expires_at))
        });
        if let Some((holder, until)) = held {
            let overtaken = self
                .waiting
                .extract_if(.., |w| lineage.is_newer(me, w.place()))
                .map(|w| w.run)
                .collect();
            self.waiting.push(Waiter {
                run: run.clone(),
                opened_at,
                seen_at: now,
            });
            return Claim::Wait {
                holder,
                until,
                overtaken,
            };
        }
        self.lease = Some(Lease {
            run: run.clone(),
            opened_at,
            acquired_at: now,
            expires_at: later(now, ttl),
        });
        self.mark(run, opened_at, attempt);
        Claim::Granted
    }

    /// The newest run that keeps `me` from deploying here, if any: the release that runs
    /// here, a run in doubt here, or a run waiting in line, when newer than `me`.
    fn newer_than(&self, me: Place<'_>, lineage: &Lineage) -> Option<RunId> {
        if let Some(current) = &self.current
            && lineage.is_newer(current.place(), me)
        {
            return Some(current.run.clone());
        }
        let doubted = self.in_doubt.iter().filter(|d| lineage.is_newer(d.place(), me));
        if let Some(doubt) = lineage.newest(doubted, |d| d.place()) {
            return Some(doubt.run.clone());
        }
        let newer = self.waiting.iter().filter(|w| lineage.is_newer(w.place(), me));
        lineage.newest(newer, |w| w.place()).map(|w| w.run.clone())
    }

    /// Marks `run`'s deploy in doubt as its `attempt`-th attempt takes the lease. Earlier
    /// marks stay: this deploy may fail before it releases, and what they may have put here
    /// would still be running. So does what this run's own earlier mark says: an earlier
    /// attempt still marked was abandoned, its outcome never known (a retry after its worker
    /// vanished), and may have released.
    fn mark(&mut self, run: &RunId, opened_at: Timestamp, attempt: u32) {
        let abandoned_before = self
            .in_doubt
            .iter()
            .any(|d| d.run == *run && (d.abandoned_before || d.attempt < attempt));
        self.in_doubt.retain(|d| d.run != *run);
        self.in_doubt.push(Mark {
            run: run.clone(),
            opened_at,
            attempt,
            abandoned_before,
        });
        super::keep_newest(&mut self.in_doubt, DOUBTS_KEPT);
    }

    /// Brings the record up to date with `run`'s work here: what it put here is recorded —
    /// always while it holds the lease (a rollback puts an older release back on purpose),
    /// and otherwise only if it is newer than what runs here (a late settle, after the lease
    /// was freed, never puts an older release over a newer one) — and once its work is over,
    /// its doubt is cleared and its lease given up. Returns the waiting run to wake, if the
    /// lease was freed.
    pub fn settle(&mut self, run: &RunId, outcome: &Outcome, lineage: &Lineage) -> Option<RunId> {
        let holds = self.lease.as_ref().is_some_and(|l| l.run == *run);
        if let Some(release) = &outcome.release {
            let newer = || {
                self.current
                    .as_ref()
                    .is_none_or(|c| c.run == release.run || lineage.is_newer(release.place(), c.place()))
            };
            if holds || newer() {
                self.record(release.clone());
                // What runs here now is newer than a run in doubt: whatever that one may
                // have released, nothing older than it can go over this release either.
                self.in_doubt
                    .retain(|d| d.run == *run || !lineage.is_newer(release.place(), d.place()));
            }
        }
        if outcome.busy {
            return None;
        }
        if outcome.known {
            // A known failure before releasing says nothing of an earlier, abandoned deploy.
            self.in_doubt
                .retain(|d| d.run != *run || (d.abandoned_before && outcome.release.is_none()));
        }
        if self.release_lease(run) {
            self.next_in_line(lineage).map(|w| w.run.clone())
        } else {
            None
        }
    }

    /// Whether [`Environment::settle`] would compare two commits — and so needs the
    /// pipeline's lineage. Most settles do not: the run holds the lease and at most one run
    /// waits, so a caller may read the lineage only when this says so.
    pub fn settle_compares(&self, run: &RunId, outcome: &Outcome) -> bool {
        let holds = self.lease.as_ref().is_some_and(|l| l.run == *run);
        let compares_release = outcome
            .release
            .as_ref()
            .is_some_and(|release| !holds && self.current.as_ref().is_some_and(|c| c.run != release.run));
        let wakes_among_several = !outcome.busy && holds && self.waiting.len() > 1;
        let clears_other_doubts = outcome
            .release
            .as_ref()
            .is_some_and(|release| self.in_doubt.iter().any(|d| d.run != release.run));
        compares_release || wakes_among_several || clears_other_doubts
    }

    /// Extends `run`'s lease. `false` if it does not hold it (it expired and was taken).
    pub fn renew(&mut self, run: &RunId, now: Timestamp, ttl: SignedDuration) -> bool {
        match self.lease.as_mut() {
            Some(lease) if lease.run == *run => {
                lease.expires_at = later(now, ttl);
                true
            }
            _ => false,
        }
    }

    /// Gives the lease up if `run` holds it. `true` if it did.
    pub fn release_lease(&mut self, run: &RunId) -> bool {
        if self.lease.as_ref().is_some_and(|l| l.run == *run) {
            self.lease = None;
            true
        } else {
            false
        }
    }

    /// The newest waiting run: the one to wake when the lease frees.
    pub fn next_in_line(&self, lineage: &Lineage) -> Option<&Waiter> {
        lineage.newest(&self.waiting, |w| w.place())
    }

    /// `release` now runs here (a deploy, or a rollback to it). A release already current
    /// changes nothing.
    pub fn record(&mut self, release: Release) {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.run == release.run && c.artifact == release.artifact)
        {
            return;
        }
        self.current = Some(release.clone());
        self.releases.push(release);
        super::keep_newest(&mut self.releases, RELEASES_KEPT);
    }

    /// The release before the current one, of another run: where a rollback goes by default.
    pub fn previous(&self) -> Option<&Release> {
        let current = self.current.as_ref()?;
        self.releases.iter().rev().find(|r| r.run != current.run)
    }

    /// A release of `run` this environment ran.
    pub fn release_of(&self, run: &RunId) -> Option<&Release> {
        self.releases.iter().rev().find(|r| r.run == *run)
    }

    /// The newest release of an older commit than `from` (older by git's order where
    /// `lineage` knows it, else by arrival). Never a newer one — not even a release that came
    /// after `from` and was rolled back, which [`Environment::previous`] would give once
    /// `from` runs again.
    pub fn release_before<'a>(&'a self, from: &Release, lineage: &Lineage) -> Option<&'a Release> {
        self.releases
            .iter()
            .rev()
            .find(|r| lineage.is_newer(from.place(), r.place()))
    }

    /// Where a rollback goes when nobody names a release — the one rule of `slipway rollback`
    /// and of rollback links: the newest release of an older commit than the one running,
    /// while that is the newest commit released here. Once the environment runs an older
    /// commit than its newest release (it was rolled back already), there is nothing to roll
    /// back: asking twice never goes back twice, nor forward again.
    pub fn rollback_target(&self, lineage: &Lineage) -> Result<&Release, NoRollback> {
        let current = self.current.as_ref().ok_or(NoRollback::NothingReleased)?;
        if let Some(newest) = lineage
            .newest(&self.releases, |r| r.place())
            .filter(|n| lineage.is_newer(n.place(), current.place()))
        {
            let default = self
                .release_before(newest, lineage)
                .is_some_and(|r| r.run == current.run);
            return Err(NoRollback::AlreadyBack {
                current: Box::new(current.clone()),
                newest: Box::new(newest.clone()),
                default,
            });
        }
        self.release_before(current, lineage)
            .ok_or_else(|| NoRollback::NothingOlder {
                current: Box::new(current.clone()),
            })
    }

    /// The operator lease, if it is held at `now`.
    pub fn operator_at(&self, now: Timestamp) -> Option<&OperatorLease> {
        self.operator.as_ref().filter(|o| o.expires_at > now)
    }

    /// An operator (`by`, deploying `sha`) asks to hold the environment at `now` for `ttl`.
    /// Refused — with who holds it and until when — while a run holds the lease or another
    /// operator deploys; the same operator's deploy of the same commit takes it over (a
    /// second try after a crash). Runs never supersede it, nor it them: it is not in line.
    pub fn claim_for_operator(
        &mut self,
        by: &str,
        sha: &CommitSha,
        now: Timestamp,
        ttl: SignedDuration,
    ) -> Result<(), (Holder, Timestamp)> {
        if let Some(op) = self.operator_at(now)
            && (op.by != by || op.sha != *sha)
        {
            return Err((op.holder(), op.expires_at));
        }
        if let Some(lease) = self.lease.as_ref().filter(|l| l.expires_at > now) {
            return Err((Holder::Run(lease.run.clone()), lease.expires_at));
        }
        self.operator = Some(OperatorLease {
            by: by.to_owned(),
            sha: sha.clone(),
            acquired_at: now,
            expires_at: later(now, ttl),
        });
        Ok(())
    }

    /// Extends the operator lease of `by`'s deploy of `sha`. `false` if it does not hold it.
    pub fn renew_operator(&mut self, by: &str, sha: &CommitSha, now: Timestamp, ttl: SignedDuration) -> bool {
        match self.operator.as_mut() {
            Some(op) if op.by == by && op.sha == *sha => {
                op.expires_at = later(now, ttl);
                true
            }
            _ => false,
        }
    }

    /// `manual` is over: it joins the history, and its operator lease is given up. Returns
    /// the waiting run to wake, as [`Environment::settle`] does.
    pub fn finish_manual(&mut self, manual: ManualRelease, lineage: &Lineage) -> Option<RunId> {
        if self
            .operator
            .as_ref()
            .is_some_and(|o| o.by == manual.by && o.sha == manual.sha)
        {
            self.operator = None;
        }
        if !self.manual.contains(&manual) {
            self.manual.push(manual);
        }
        super::keep_newest(&mut self.manual, MANUAL_KEPT);
        if self.lease.is_some() {
            return None;
        }
        self.next_in_line(lineage).map(|w| w.run.clone())
    }

    /// The manual release the environment runs, if one came after the pipeline's current
    /// release: the newest manual deploy whose release phase succeeded since then.
    pub fn manual_release(&self) -> Option<&ManualRelease> {
        let since = self.current.as_ref().map(|c| c.at);
        self.manual
            .iter()
            .rev()
            .filter(|m| since.is_none_or(|at| m.at > at))
            .find(|m| m.released())
    }
}

impl OperatorLease {
    fn holder(&self) -> Holder {
        Holder::Operator {
            by: self.by.clone(),
            sha: self.sha.clone(),
        }
    }
}

fn later(now: Timestamp, ttl: SignedDuration) -> Timestamp {
    now.checked_add(ttl).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CommitSha;

    const TTL: SignedDuration = SignedDuration::from_mins(10);
    /// No git facts: arrival order decides.
    static UNKNOWN: Lineage = Lineage::new();

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).unwrap()
    }

    fn run(n: u8) -> RunId {
        RunId::parse(&format!("shop-{}", format!("{n:x}").repeat(40).get(..40).unwrap())).unwrap()
    }

    fn release(n: u8, opened: i64) -> Release {
        Release {
            run: run(n),
            sha: CommitSha::parse(&format!("{n:x}").repeat(40)[..40]).unwrap(),
            artifact: Some(format!("app@sha256:{n}")),
            opened_at: at(opened),
            at: at(opened + 1),
        }
    }

    #[test]
    fn a_free_environment_is_granted_and_the_holder_may_ask_again() {
        let mut env = Environment::default();
        assert_eq!(env.claim(&run(1), at(0), 0, at(1), TTL, &UNKNOWN), Claim::Granted);
        assert_eq!(env.lease.as_ref().unwrap().expires_at, at(11));
        // A redelivered message of the holder renews instead of queueing behind itself.
        assert_eq!(env.claim(&run(1), at(0), 0, at(5), TTL, &UNKNOWN), Claim::Granted);
        assert_eq!(env.lease.as_ref().unwrap().expires_at, at(15));
    }

    #[test]
    fn a_held_lease_makes_others_wait_until_it_expires() {
        let mut env = Environment::default();
        env.claim(&run(1), at(0), 0, at(1), TTL, &UNKNOWN);
        assert_eq!(
            env.claim(&run(2), at(2), 0, at(3), TTL, &UNKNOWN),
            Claim::Wait {
                holder: Holder::Run(run(1)),
                until: at(11),
                overtaken: Vec::new(),
            }
        );
        assert_eq!(env.waiting.len(), 1);
        // Asking again does not queue twice.
        env.claim(&run(2), at(2), 0, at(4), TTL, &UNKNOWN);
        assert_eq!(env.waiting.len(), 1);
        // Past the expiry the waiting run takes over.
        assert_eq!(env.claim(&run(2), at(2), 0, at(12), TTL, &UNKNOWN), Claim::Granted);
        assert_eq!(env.lease.as_ref().unwrap().run, run(2));
        assert!(env.waiting.is_empty());
    }

    #[test]
    fn when_the_lease_frees_the_newest_waiting_run_goes_first_and_older_ones_are_superseded() {
        let mut env = Environment::default();
        env.claim(&run(1), at(0), 0, at(1), TTL, &UNKNOWN);
        env.claim(&run(2), at(2), 0, at(3), TTL, &UNKNOWN);
        env.claim(&run(3), at(4), 0, at(5), TTL, &UNKNOWN);
        assert!(env.release_lease(&run(1)));
        assert_eq!(env.next_in_line(&UNKNOWN).unwrap().run, run(3));
        // The older waiter asks first: it must not go ahead of the newer one.
        assert_eq!(
            env.claim(&run(2), at(2), 0, at(6), TTL, &UNKNOWN),
            Claim::Superseded { by: run(3) }
        );
        assert_eq!(env.claim(&run(3), at(4), 0, at(6), TTL, &UNKNOWN), Claim::Granted);
    }

    #[test]
    fn a_newer_run_joining_the_line_overtakes_the_older_ones_in_it() {
        let mut env = Environment::default();
        env.claim(&run(1), at(0), 0, at(1), TTL, &UNKNOWN);
        let wait = |overtaken: Vec<RunId>| Claim::Wait {
            holder: Holder::Run(run(1)),
            until: at(11),
            overtaken,
        };
        assert_eq!(env.claim(&run(2), at(2), 0, at(3), TTL, &UNKNOWN), wait(vec![]));
        // Lines written before runs overtook held several (each newer than the holder).
        for (n, opened) in [(3, 3), (4, 1)] {
            env.waiting.push(Waiter {
                run: run(n),
                opened_at: at(opened),
                seen_at: at(4),
            });
        }
        // The newest joins: every older one leaves the line, to be superseded by it.
        assert_eq!(
            env.claim(&run(5), at(5), 0, at(6), TTL, &UNKNOWN),
            wait(vec![run(2), run(3), run(4)])
        );
        assert_eq!(
            env.waiting.iter().map(|w| w.run.clone()).collect::<Vec<_>>(),
            vec![run(5)]
        );
        // Asking again overtakes nobody twice.
        assert_eq!(env.claim(&run(5), at(5), 0, at(7), TTL, &UNKNOWN), wait(vec![]));
        // An overtaken run that asks again (it was not told in time) supersedes itself, as an
        // older run joining behind a newer one always did.
        assert_eq!(
            env.claim(&run(3), at(3), 0, at(8), TTL, &UNKNOWN),
            Claim::Superseded { by: run(5) }
        );
        assert_eq!(env.waiting.len(), 1);
    }

    #[test]
    fn an_older_commit_is_never_deployed_over_a_newer_one() {
        let mut env = Environment::default();
        env.record(release(5, 10));
        assert_eq!(
            env.claim(&run(4), at(8), 0, at(20), TTL, &UNKNOWN),
            Claim::Superseded { by: run(5) }
        );
        assert!(env.lease.is_none(), "nothing was taken");
        assert_eq!(env.claim(&run(6), at(12), 0, at(20), TTL, &UNKNOWN), Claim::Granted);
    }

    #[test]
    fn a_waiter_that_stopped_asking_is_forgotten() {
        let mut env = Environment::default();
        env.claim(&run(1), at(0), 0, at(1), TTL, &UNKNOWN);
        env.claim(&run(3), at(4), 0, at(2), TTL, &UNKNOWN);
        env.release_lease(&run(1));
        // Run 3 never came back (its run failed elsewhere): run 2 is not blocked forever.
        assert_eq!(env.claim(&run(2), at(3), 0, at(30), TTL, &UNKNOWN), Claim::Granted);
    }

    #[test]
    fn renewing_or_releasing_someone_elses_lease_does_nothing() {
        let mut env = Environment::default();
        env.claim(&run(1), at(0), 0, at(1), TTL, &UNKNOWN);
        assert!(!env.renew(&run(2), at(2), TTL));
        assert!(!env.release_lease(&run(2)));
        assert!(env.renew(&run(1), at(2), TTL));
        assert_eq!(env.lease.as_ref().unwrap().expires_at, at(12));
    }

    #[test]
    fn releases_are_remembered_and_previous_is_the_one_before_current() {
        let mut env = Environment::default();
        assert!(env.previous().is_none());
        env.record(release(1, 0));
        assert!(env.previous().is_none(), "a first release has nothing before it");
        env.record(release(2, 5));
        env.record(release(2, 5));
        assert_eq!(
            env.releases.len(),
            2,
            "recording the current release again changes nothing"
        );
        assert_eq!(env.previous().unwrap().run, run(1));
        // A rollback to release 1 makes it current again; previous is then release 2.
        env.record(release(1, 0));
        assert_eq!(env.current.as_ref().unwrap().run, run(1));
        assert_eq!(env.previous().unwrap().run, run(2));
        for n in 0..60 {
            env.record(release(n % 7 + 1, i64::from(n)));
        }
        assert!(env.releases.len() <= RELEASES_KEPT);
    }

    /// Pushes `(after, before)`, as a git host reported them.
    fn lineage(pushes: &[(u8, u8)]) -> Lineage {
        let mut lineage = Lineage::default();
        for (after, before) in pushes {
            lineage.learn(&run(*after).sha(), &[run(*before).sha()]);
        }
        lineage
    }

    #[test]
    fn git_order_decides_over_arrival_order() {
        // B (2) was pushed on top of A (1), but B's push arrived first.
        let git = lineage(&[(2, 1)]);
        let mut env = Environment::default();
        env.record(release(2, 0));
        // A arrives later, yet it is the older commit: it never goes over B.
        assert_eq!(
            env.claim(&run(1), at(5), 0, at(6), TTL, &git),
            Claim::Superseded { by: run(2) }
        );
        // Without the fact, arrival order would have let it through.
        assert_eq!(
            env.clone().claim(&run(1), at(5), 0, at(6), TTL, &UNKNOWN),
            Claim::Granted
        );
    }

    /// Found by the model (seed 128414609629935046): B (2) was released; A (1), whose
    /// relation to B nobody had pushed yet, arrived later and took the lease by arrival
    /// order, and its worker died before the deploy started. Then a push showed A to be
    /// B's ancestor. A's message, delivered again, must not deploy A over B.
    #[test]
    fn a_holder_asking_again_is_superseded_when_git_has_since_shown_it_older() {
        let mut env = Environment::default();
        env.record(release(2, 0));
        assert_eq!(env.claim(&run(1), at(5), 0, at(6), TTL, &UNKNOWN), Claim::Granted);
        // Asking again, knowing no more: still granted, the lease renewed.
        assert_eq!(env.claim(&run(1), at(5), 0, at(7), TTL, &UNKNOWN), Claim::Granted);
        assert_eq!(env.lease.as_ref().unwrap().expires_at, at(17));
        let git = lineage(&[(2, 1)]);
        assert_eq!(
            env.claim(&run(1), at(5), 0, at(8), TTL, &git),
            Claim::Superseded { by: run(2) }
        );
        assert!(env.lease.is_none(), "given up in the same write");
        assert!(
            env.in_doubt.iter().any(|d| d.run == run(1)),
            "its mark stays until a newer release clears it"
        );
        // A newer run waiting in line supersedes a holder asking again, as it would anyone.
        let mut env = Environment::default();
        env.claim(&run(1), at(0), 0, at(1), TTL, &UNKNOWN);
        env.waiting.push(Waiter {
            run: run(3),
            opened_at: at(2),
            seen_at: at(2),
        });
        assert_eq!(
            env.claim(&run(1), at(0), 0, at(3), TTL, &UNKNOWN),
            Claim::Superseded { by: run(3) }
        );
        assert!(env.lease.is_none());
    }

    #[test]
    fn the_newest_waiter_by_git_goes_first() {
        // 1 → 2 → 3 in git; they asked in the order 1 (holder), 3, 2.
        let git = lineage(&[(2, 1), (3, 2)]);
        let mut env = Environment::default();
        env.claim(&run(1), at(0), 0, at(1), TTL, &git);
        assert!(matches!(
            env.claim(&run(3), at(1), 0, at(2), TTL, &git),
            Claim::Wait { .. }
        ));
        // 2 arrived last but git says 3 is newer: 2 is superseded, not queued.
        assert_eq!(
            env.claim(&run(2), at(4), 0, at(3), TTL, &git),
            Claim::Superseded { by: run(3) }
        );
        env.release_lease(&run(1));
        assert_eq!(env.next_in_line(&git).unwrap().run, run(3));
    }

    #[test]
    fn a_run_git_says_nothing_about_waits_its_turn_by_arrival() {
        let git = lineage(&[(2, 1)]);
        let mut env = Environment::default();
        env.record(release(2, 0));
        // Commit 7 is unknown to git's facts; it arrived after 2, so it goes ahead.
        assert_eq!(env.claim(&run(7), at(5), 0, at(6), TTL, &git), Claim::Granted);
    }

    fn outcome(release: Option<Release>, busy: bool, known: bool) -> Outcome {
        Outcome { release, busy, known }
    }

    #[test]
    fn a_deploy_whose_outcome_is_unknown_keeps_older_commits_out() {
        let mut env = Environment::default();
        assert_eq!(env.claim(&run(2), at(2), 0, at(3), TTL, &UNKNOWN), Claim::Granted);
        // Its worker vanished mid-deploy; the lease expired and was freed, the deploy abandoned.
        env.settle(&run(2), &outcome(None, false, false), &UNKNOWN);
        assert!(env.lease.is_none());
        assert_eq!(
            env.claim(&run(1), at(1), 0, at(30), TTL, &UNKNOWN),
            Claim::Superseded { by: run(2) }
        );
        // A newer commit goes ahead, and its known outcome clears the doubt.
        assert_eq!(env.claim(&run(3), at(4), 0, at(31), TTL, &UNKNOWN), Claim::Granted);
        env.settle(&run(3), &outcome(Some(release(3, 4)), false, true), &UNKNOWN);
        assert!(env.in_doubt.is_empty());
        assert_eq!(env.current.as_ref().unwrap().run, run(3));
    }

    #[test]
    fn a_known_failure_clears_the_doubt() {
        let mut env = Environment::default();
        env.record(release(1, 1));
        env.claim(&run(3), at(3), 0, at(4), TTL, &UNKNOWN);
        env.settle(&run(3), &outcome(None, false, true), &UNKNOWN);
        assert!(env.in_doubt.is_empty());
        // Commit 2 is newer than what runs (1): it may go.
        assert_eq!(env.claim(&run(2), at(2), 0, at(5), TTL, &UNKNOWN), Claim::Granted);
    }

    /// The rule over each way a deploy can end after run 3's worker vanished mid-deploy (its
    /// doubt left): whether run 3's mark stays. The deploy after it is a newer run's (4), or
    /// run 3's own retry, its next attempt — found by the model test (seed
    /// 13043820499402141502): a retry's failure before releasing cleared the doubt its first
    /// deploy left, and commit 1 went over the commit 3 staging ran.
    #[test]
    fn an_abandoned_doubt_stays_until_a_newer_release_or_this_runs_own() {
        let git = lineage(&[(2, 1), (3, 2), (4, 3)]);
        let cases = [
            // Run 4 released: commit 4 runs, newer than 3; 3's mark goes.
            ("4 released", 4, Some(release(4, 4)), true, false),
            // Run 4 failed before releasing (run 3's doubt found by seed 7785783752836650624).
            ("4 failed", 4, None, true, true),
            // Run 4's worker vanished too: both stay.
            ("4 vanished", 4, None, false, true),
            // The retry released: commit 3 is recorded as running here; the mark goes.
            ("3 retried, released", 3, Some(release(3, 3)), true, false),
            // The retry failed before releasing: the first deploy may still have released.
            ("3 retried, failed", 3, None, true, true),
            ("3 retried, vanished", 3, None, false, true),
        ];
        for (what, next, released, known, stays) in cases {
            let mut env = Environment::default();
            env.record(release(1, 1));
            assert_eq!(env.claim(&run(3), at(3), 0, at(10), TTL, &git), Claim::Granted);
            env.settle(&run(3), &outcome(None, false, false), &git);
            let attempt = u32::from(next == 3);
            let claimed = env.claim(&run(next), at(next.into()), attempt, at(30), TTL, &git);
            assert_eq!(claimed, Claim::Granted, "{what}");
            let ends = outcome(released.clone(), false, known);
            if next == 4 {
                assert_eq!(env.settle_compares(&run(4), &ends), released.is_some(), "{what}");
            }
            env.settle(&run(next), &ends, &git);
            assert_eq!(env.in_doubt.iter().any(|d| d.run == run(3)), stays, "{what}");
            if next == 4 {
                assert_eq!(env.in_doubt.iter().any(|d| d.run == run(4)), !known, "{what}");
            }
            // Commit 2, older than 3, must not go over what may run.
            let older = env.claim(&run(2), at(2), 0, at(31), TTL, &git);
            let newest_doubt = if next == 4 && !known { 4 } else { 3 };
            if stays {
                assert_eq!(older, Claim::Superseded { by: run(newest_doubt) }, "{what}");
            }
        }
    }

    /// The same attempt claiming again (its message delivered twice, or its worker gone
    /// before starting it), the lease still held or freed meanwhile, abandoned nothing: its
    /// known failure clears its mark, as a first claim's does.
    #[test]
    fn the_same_attempt_claiming_again_abandons_nothing() {
        let git = lineage(&[(2, 1), (3, 2)]);
        for freed in [false, true] {
            let mut env = Environment::default();
            env.claim(&run(3), at(3), 0, at(10), TTL, &git);
            if freed {
                env.settle(&run(3), &outcome(None, false, false), &git);
            }
            assert_eq!(env.claim(&run(3), at(3), 0, at(11), TTL, &git), Claim::Granted);
            env.settle(&run(3), &outcome(None, false, true), &git);
            assert!(env.in_doubt.is_empty(), "freed: {freed}");
        }
    }

    /// A retry that finds the lease still held by the attempt it retries (the lease not yet
    /// freed) keeps that attempt's doubt too.
    #[test]
    fn a_retry_holding_the_abandoned_attempts_lease_keeps_its_doubt() {
        let git = lineage(&[(2, 1), (3, 2)]);
        let mut env = Environment::default();
        env.claim(&run(3), at(3), 0, at(10), TTL, &git);
        assert_eq!(env.claim(&run(3), at(3), 1, at(11), TTL, &git), Claim::Granted);
        env.settle(&run(3), &outcome(None, false, true), &git);
        assert!(env.lease.is_none());
        assert_eq!(
            env.claim(&run(2), at(2), 0, at(12), TTL, &git),
            Claim::Superseded { by: run(3) }
        );
        // Its mark, written back, still says so.
        let read: Environment = serde_json::from_value(serde_json::to_value(&env).unwrap()).unwrap();
        assert_eq!(read, env);
        assert!(read.in_doubt[0].abandoned_before);
    }

    #[test]
    fn a_rollback_to_an_older_release_keeps_a_newer_doubt() {
        let git = lineage(&[(2, 1), (3, 2)]);
        let mut env = Environment::default();
        env.record(release(1, 1));
        env.claim(&run(3), at(3), 0, at(10), TTL, &git);
        env.settle(&run(3), &outcome(None, false, false), &git);
        // Run 2's rollback holds the lease and puts commit 1 back.
        env.lease = Some(Lease {
            run: run(2),
            opened_at: at(2),
            acquired_at: at(20),
            expires_at: at(30),
        });
        env.settle(&run(2), &outcome(Some(release(1, 1)), false, true), &git);
        assert_eq!(env.in_doubt.iter().map(|d| d.run.clone()).collect::<Vec<_>>(), [run(3)]);
    }

    #[test]
    fn a_record_with_one_run_in_doubt_reads_as_a_list_of_one() {
        let mark = Mark {
            run: run(3),
            opened_at: at(3),
            attempt: 0,
            abandoned_before: false,
        };
        let old = serde_json::json!({ "in_doubt": mark });
        let env: Environment = serde_json::from_value(old).unwrap();
        assert_eq!(env.in_doubt, std::slice::from_ref(&mark));
        let written = serde_json::to_value(&env).unwrap();
        assert_eq!(written, serde_json::json!({ "in_doubt": [mark] }));
        let none: Environment = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(none.in_doubt.is_empty());
        assert_eq!(serde_json::to_value(&none).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn marks_in_doubt_are_bounded() {
        let mut env = Environment::default();
        for n in 1..=(DOUBTS_KEPT as u8 + 3) {
            assert_eq!(
                env.claim(&run(n), at(n.into()), 0, at(100 * i64::from(n)), TTL, &UNKNOWN),
                Claim::Granted
            );
            env.settle(&run(n), &outcome(None, false, false), &UNKNOWN);
        }
        assert_eq!(env.in_doubt.len(), DOUBTS_KEPT);
        assert_eq!(env.in_doubt.last().unwrap().run, run(DOUBTS_KEPT as u8 + 3));
    }

    #[test]
    fn a_late_settle_records_only_a_newer_release() {
        let mut env = Environment::default();
        env.record(release(1, 1));
        // Run 3's lease was freed before it settled: its release is newer, so it is recorded.
        env.settle(&run(3), &outcome(Some(release(3, 3)), false, true), &UNKNOWN);
        assert_eq!(env.current.as_ref().unwrap().run, run(3));
        // Run 2 settles late: older than what runs, so nothing changes.
        env.settle(&run(2), &outcome(Some(release(2, 2)), false, true), &UNKNOWN);
        assert_eq!(env.current.as_ref().unwrap().run, run(3));
        // While holding the lease, a rollback's older release is recorded as asked.
        env.claim(&run(3), at(3), 0, at(10), TTL, &UNKNOWN);
        env.settle(&run(3), &outcome(Some(release(1, 1)), true, true), &UNKNOWN);
        assert_eq!(env.current.as_ref().unwrap().run, run(1));
        assert!(env.lease.is_some(), "still busy: the lease is kept");
    }

    #[test]
    fn settling_asks_for_the_lineage_only_when_it_compares_commits() {
        // A lineage that would answer "no" everywhere: where settling does not compare, the
        // result must be the same as with the real one.
        let mut env = Environment::default();
        env.claim(&run(2), at(0), 0, at(1), TTL, &UNKNOWN);
        env.record(release(1, 0));
        // The holder releases: no comparison, whatever runs now.
        assert!(!env.settle_compares(&run(2), &outcome(Some(release(2, 0)), false, true)));
        // Another run's release, while an older one runs: a comparison.
        assert!(env.settle_compares(&run(3), &outcome(Some(release(3, 2)), false, true)));
        // Its own release again, without the lease: nothing to compare with.
        let mut own = Environment::default();
        own.record(release(3, 2));
        assert!(!own.settle_compares(&run(3), &outcome(Some(release(3, 2)), false, true)));
        // One waiter is woken without comparing; two (a line written before runs overtook)
        // need the lineage to pick the newest.
        env.claim(&run(4), at(0), 0, at(2), TTL, &UNKNOWN);
        assert!(!env.settle_compares(&run(2), &outcome(None, false, true)));
        env.waiting.push(Waiter {
            run: run(5),
            opened_at: at(0),
            seen_at: at(2),
        });
        assert!(env.settle_compares(&run(2), &outcome(None, false, true)));
        assert!(
            !env.settle_compares(&run(2), &outcome(None, true, true)),
            "busy: nobody is woken"
        );
    }

    #[test]
    fn the_default_rollback_target_is_the_newest_older_release_and_asking_twice_goes_nowhere() {
        let mut env = Environment::default();
        assert_eq!(env.rollback_target(&UNKNOWN), Err(NoRollback::NothingReleased));
        env.record(release(1, 0));
        assert!(matches!(
            env.rollback_target(&UNKNOWN),
            Err(NoRollback::NothingOlder { .. })
        ));
        env.record(release(2, 5));
        env.record(release(3, 10));
        assert_eq!(env.rollback_target(&UNKNOWN).unwrap().run, run(2));
        // Rolled back to 2: asking again neither goes forward to 3 (what `previous` gave)
        // nor further back to 1.
        env.record(release(2, 5));
        assert_eq!(env.previous().unwrap().run, run(3), "the old rule flipped back");
        let again = env.rollback_target(&UNKNOWN).unwrap_err();
        assert!(
            matches!(&again, NoRollback::AlreadyBack { default: true, .. }),
            "{again:?}"
        );
        assert_eq!(
            again.in_env("production"),
            format!(
                "production already runs {}, the newest release older than {}; nothing to roll back (name an earlier release with --to to go further back)",
                release(2, 5).sha.short(),
                release(3, 10).sha.short()
            )
        );
        // Gone further back by hand (`--to`): still nothing by default.
        env.record(release(1, 0));
        assert!(matches!(
            env.rollback_target(&UNKNOWN),
            Err(NoRollback::AlreadyBack { .. })
        ));
        // A newer release makes the rule apply again from it: back to the latest release of
        // an older commit, what ran just before it.
        env.record(release(4, 20));
        assert_eq!(env.rollback_target(&UNKNOWN).unwrap().run, run(1));
    }

    #[test]
    fn the_default_rollback_target_follows_git_order_over_arrival() {
        // 2 was pushed on top of 1 but arrived first: 1 is older, whatever the arrival.
        let git = lineage(&[(2, 1)]);
        let mut env = Environment::default();
        env.record(release(1, 5));
        env.record(release(2, 0));
        assert_eq!(env.rollback_target(&git).unwrap().run, run(1));
        assert!(
            env.rollback_target(&UNKNOWN).is_err(),
            "by arrival alone, 1 would be the newer"
        );
    }

    fn manual(by: &str, n: u8, at_minute: i64, phases: &[(Phase, PhaseStatus)]) -> ManualRelease {
        ManualRelease {
            sha: release(n, 0).sha,
            artifact: None,
            by: by.to_owned(),
            started_at: at(at_minute),
            at: at(at_minute),
            phases: phases
                .iter()
                .map(|(phase, status)| PhaseOutcome {
                    phase: *phase,
                    status: *status,
                    detail: String::new(),
                    reference: None,
                    at: at(at_minute),
                })
                .collect(),
            failed: None,
        }
    }

    #[test]
    fn an_operator_holds_the_environment_runs_wait_for_them_and_the_record_says_who_released() {
        let mut env = Environment::default();
        env.record(release(1, 0));
        let sha = release(9, 0).sha;
        assert_eq!(env.claim_for_operator("alice", &sha, at(2), TTL), Ok(()));
        // Another operator is refused, saying who and until when.
        let (holder, until) = env.claim_for_operator("bob", &sha, at(3), TTL).unwrap_err();
        assert_eq!(holder.to_string(), format!("alice's manual deploy of {}", sha.short()));
        assert_eq!(until, at(12));
        // A run waits in line instead of deploying over the operator.
        assert!(matches!(
            env.claim(&run(2), at(1), 0, at(3), TTL, &UNKNOWN),
            Claim::Wait {
                holder: Holder::Operator { .. },
                ..
            }
        ));
        assert!(env.lease.is_none());
        // The operator finishes: the record keeps the manual release, the waiting run is woken.
        let done = manual("alice", 9, 4, &[(Phase::Release, PhaseStatus::Succeeded)]);
        assert_eq!(env.finish_manual(done.clone(), &UNKNOWN), Some(run(2)));
        assert!(env.operator.is_none());
        assert_eq!(env.manual_release(), Some(&done));
        assert_eq!(done.describe(), format!("manual release of {} by alice", sha.short()));
        // The pipeline's record is untouched: its next deploy goes ahead, and replaces it.
        assert_eq!(env.current.as_ref().unwrap().run, run(1));
        assert_eq!(env.claim(&run(2), at(1), 0, at(5), TTL, &UNKNOWN), Claim::Granted);
        // A run holding the lease keeps operators out.
        assert!(matches!(
            env.claim_for_operator("alice", &sha, at(6), TTL),
            Err((Holder::Run(_), _))
        ));
        let mut later = release(2, 1);
        later.at = at(7);
        env.settle(&run(2), &outcome(Some(later), false, true), &UNKNOWN);
        assert_eq!(env.manual_release(), None, "the pipeline's release came after it");
    }

    #[test]
    fn an_expired_operator_lease_holds_nothing_and_a_partial_deploy_released_nothing() {
        let mut env = Environment::default();
        let sha = release(9, 0).sha;
        env.claim_for_operator("alice", &sha, at(0), TTL).unwrap();
        assert_eq!(env.claim(&run(2), at(1), 0, at(30), TTL, &UNKNOWN), Claim::Granted);
        let backup_only = manual("carol", 9, 40, &[(Phase::Backup, PhaseStatus::Succeeded)]);
        assert!(!backup_only.released());
        assert_eq!(
            backup_only.describe(),
            format!("manual backup of {} by carol", sha.short())
        );
        env.finish_manual(backup_only, &UNKNOWN);
        assert_eq!(env.manual_release(), None);
        assert!(
            env.operator.is_some(),
            "alice's (expired) lease is not carol's to give up"
        );
    }
}

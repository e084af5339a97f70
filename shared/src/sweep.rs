//! Moves on runs that nothing else will move on. The state write and the queue send that
//! follows it are not atomic, and workers can die; the sweep is what makes both harmless:
//!
//! - an approval past its deadline expires, and the team is told;
//! - a build still waiting for CI past the pipeline's `build_timeout` fails, and the team is
//!   told — so a run CI never reported on ends, and leaves the index of open runs;
//! - a stage queued longer than [`RESEND_AFTER`] has its work sent again (its message was
//!   lost between the state write and the send, or is stuck);
//! - a claimed stage silent past its deadline is failed loudly — never redone;
//! - an environment lease whose holder is done, or silent past its expiry, is freed and the
//!   next run in line woken.
//!
//! `slipway serve` runs it every 30 seconds; on AWS the scheduled `sweeper` function does.

use std::time::Duration;

use crate::app::{App, Applied, EngineError};
use crate::domain::{self, Actor, Command, Event, StageKind, StageStatus};
use crate::handlers;
use crate::open_runs;

/// How long a stage may sit queued before its work is sent again. Re-sending is safe —
/// workers claim a stage before acting — so this only trades duplicate messages for delay.
pub const RESEND_AFTER: Duration = Duration::from_secs(120);

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    /// Builds failed because CI never reported within their timeout.
    pub builds_timed_out: usize,
    pub resent: usize,
    pub abandoned: usize,
    /// Environment leases whose holder was done or silent past expiry.
    pub leases_freed: usize,
    /// Release cadence notifications sent (alarms, repeats, all-clears).
    pub cadence_notices: usize,
}

/// Sweeps every unfinished run once (read through the index of open runs, so a pass costs
/// what is in flight, not the whole history).
pub async fn run_once(app: &App) -> Result<Swept, EngineError> {
    let now = app.clock.now();
    let mut swept = Swept::default();
    for run in open_runs::sweep(app, now).await? {
        let waits_for_ci = run
            .stage(StageKind::Build, None)
            .is_some_and(|s| s.status == StageStatus::Waiting);
        if waits_for_ci && run.build_deadline() <= now {
            // Nothing after the build has started: failing it is all there is to do.
            if let Some(Applied::Changed(_)) = app
                .apply(&run.id, || app.input(Actor::Slipway, Event::BuildTimedOut))
                .await?
            {
                tracing::warn!(run = %run.id, timeout = %format_args!("{:#}", run.plan.build_timeout), "CI never reported; the build timed out");
                swept.builds_timed_out += 1;
            }
            continue;
        }
        for stage in &run.stages {
            let Some(env) = &stage.env else { continue };
            match (stage.kind, stage.status) {
                (StageKind::Approval, StageStatus::Waiting) => {
                    let due = stage.approval.as_ref().is_some_and(|a| a.expires_at <= now);
                    let event = Event::ApprovalExpired { env: env.clone() };
                    if due
                        && let Some(Applied::Changed(_)) =
                            app.apply(&run.id, || app.input(Actor::Slipway, event.clone())).await?
                    {
                        tracing::info!(run = %run.id, %env, "approval expired");
                        swept.expired += 1;
                    }
                }
                (
                    kind @ (StageKind::Deploy | StageKind::Smoke | StageKind::Bake | StageKind::Rollback),
                    StageStatus::Queued,
                ) => {
                    let stale = run
                        .updated_at
                        .checked_add(jiff::SignedDuration::try_from(RESEND_AFTER).unwrap_or_default())
                        .is_ok_and(|at| at <= now);
                    if stale {
                        // The stage's own work, not the outbox: a held or waiting deploy's
                        // latest transition sent nothing.
                        let (run_id, env) = (run.id.clone(), env.clone());
                        let command = match kind {
                            StageKind::Deploy => Command::Deploy { run: run_id, env },
                            StageKind::Smoke => Command::Smoke { run: run_id, env },
                            StageKind::Bake => Command::Bake { run: run_id, env },
                            _ => Command::Rollback { run: run_id, env },
                        };
                        tracing::warn!(run = %run.id, stage = %stage.label(), "queued too long; sending its work again");
                        let mut commands = domain::resendable(&run);
                        if !commands.contains(&command) {
                            commands.push(command);
                        }
                        app.dispatch(&commands).await?;
                        swept.resent += 1;
                    }
                }
                (
                    kind @ (StageKind::Deploy | StageKind::Smoke | StageKind::Bake | StageKind::Rollback),
                    StageStatus::Running,
                ) if handlers::give_up_at(app, &run, kind, env).is_some_and(|at| at <= now) => {
                    tracing::error!(run = %run.id, stage = %stage.label(), "worker silent past the deadline; failing the stage");
                    match handlers::abandon(app, &run, kind, env).await {
                        Ok(()) => swept.abandoned += 1,
                        Err(handlers::HandlerError::Engine(e)) => return Err(e),
                        Err(e) => tracing::warn!(run = %run.id, error = %e, "could not fail the stage"),
                    }
                }
                _ => {}
            }
        }
    }
    swept.leases_freed = handlers::envs::sweep(app).await?;
    // A pipeline's cadence is checked on every pass; one that cannot be read now is checked
    // again on the next, and never stops the rest of the sweep.
    match crate::views::cadence::check(app).await {
        Ok(sent) => swept.cadence_notices = sent,
        Err(e) => tracing::warn!(error = %e, "could not check the release cadence; the next sweep tries again"),
    }
    Ok(swept)
}

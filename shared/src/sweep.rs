//! Moves on runs that wait for time alone. Today: approvals past their deadline expire, and
//! the team is told. The workers of `slipway serve` call [`run_once`] periodically; the AWS
//! issue's scheduled sweeper function calls the same code.

use crate::app::{App, Applied, EngineError};
use crate::domain::{Actor, Event, RunStatus, StageKind, StageStatus};

/// Expires every approval whose deadline has passed. Returns how many runs it moved on.
pub async fn run_once(app: &App) -> Result<usize, EngineError> {
    let now = app.clock.now();
    let mut moved = 0;
    for run in app.list_runs(None).await? {
        if run.status() != RunStatus::AwaitingApproval {
            continue;
        }
        let due = run
            .stages
            .iter()
            .filter(|s| s.kind == StageKind::Approval && s.status == StageStatus::Waiting);
        for stage in due {
            let (Some(env), Some(info)) = (&stage.env, &stage.approval) else {
                continue;
            };
            if info.expires_at > now {
                continue;
            }
            let event = Event::ApprovalExpired { env: env.clone() };
            if let Some(Applied::Changed(_)) = app.apply(&run.id, || app.input(Actor::Slipway, event.clone())).await? {
                tracing::info!(run = %run.id, %env, "approval expired");
                moved += 1;
            }
        }
    }
    Ok(moved)
}

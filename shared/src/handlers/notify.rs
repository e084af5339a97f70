//! The notify queue: render a notice for each recipient and deliver it to every channel,
//! once. A marker per (notice, recipient, channel) is created before each delivery — one
//! conditional create, which also keeps two deliveries of one message from both sending — and
//! given back if the delivery fails, so a redelivered message only retries the channels that
//! have not had it yet.

use bytes::Bytes;

use super::HandlerError;
use crate::app::{App, EngineError};
use crate::approvals::{self, Action, ApprovalClaim};
use crate::domain::{Notice, NoticeKind, Run, StageKind, StageStatus};
use crate::ports::{Notification, NotifyError, StoreError, StoreKey};

pub async fn handle(app: &App, notice: &Notice) -> Result<(), HandlerError> {
    let run = super::run_of(app, &notice.run).await?;
    let notifications = render(app, &run, notice).await?;
    let mut failed = Vec::new();
    // Markers of deliveries that succeeded while another failed: rewritten as delivered, so
    // the retry (perhaps after the visibility timeout) does not send them again.
    let mut delivered = Vec::new();
    for notification in &notifications {
        for (c, channel) in app.notifiers.iter().enumerate() {
            let marker = StoreKey::notice_sent(&notification.id, c);
            if !take(app, &marker).await? {
                continue;
            }
            let outcome = match channel.deliver(notification).await {
                Ok(()) => {
                    delivered.push(marker);
                    continue;
                }
                Err(e @ NotifyError::Permanent { .. }) => {
                    // Retrying will not help; say so loudly and do not try again.
                    tracing::error!(notice = %notification.id, channel = channel.name(), error = %e, source = ?std::error::Error::source(&e), "notification refused");
                    format!("refused: {e}")
                }
                Err(e @ NotifyError::Transient { .. }) => {
                    tracing::warn!(notice = %notification.id, channel = channel.name(), error = %e, "notification failed; will retry");
                    failed.push(channel.name());
                    // Given back, so the retry sends it.
                    app.store.remove(&marker).await.map_err(EngineError::from)?;
                    continue;
                }
            };
            settle(app, &marker, outcome).await?;
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    for marker in delivered {
        settle(app, &marker, "delivered".to_owned()).await?;
    }
    Err(HandlerError::Channel(failed.join(", ")))
}

/// What a delivery marker says while its delivery is under way.
const SENDING: &str = "sending";

#[derive(serde::Serialize, serde::Deserialize)]
struct Sending {
    state: String,
    at: jiff::Timestamp,
}

/// Takes the delivery `marker` stands for, with one conditional create: `false` if it was
/// done (or is being done by another worker right now). A delivery whose worker vanished
/// mid-way (its marker still says `sending` after a visibility timeout) is taken again: a
/// notification may then be sent twice, never lost.
async fn take(app: &App, marker: &StoreKey) -> Result<bool, EngineError> {
    let sending = |at| {
        Bytes::from(
            serde_json::to_vec(&Sending {
                state: SENDING.to_owned(),
                at,
            })
            .expect("a marker always serialises"),
        )
    };
    let now = app.clock.now();
    match app.store.create(marker, sending(now)).await {
        Ok(_) => return Ok(true),
        Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(found) = app.store.get(marker).await? else {
        // Given back meanwhile by a worker whose delivery failed: try again.
        return Ok(app.store.create(marker, sending(now)).await.is_ok());
    };
    let Ok(claim) = serde_json::from_slice::<Sending>(&found.value) else {
        return Ok(false); // `delivered` or `refused: …`: done.
    };
    let stale = jiff::SignedDuration::try_from(app.tuning.visibility)
        .ok()
        .and_then(|v| claim.at.checked_add(v).ok())
        .is_some_and(|deadline| deadline <= now);
    if !stale {
        return Ok(false);
    }
    tracing::warn!(marker = %marker, "a delivery was left unfinished by a vanished worker; sending it again");
    Ok(app.store.replace(marker, sending(now), &found.version).await.is_ok())
}

/// Records how a taken delivery ended.
async fn settle(app: &App, marker: &StoreKey, outcome: String) -> Result<(), EngineError> {
    let Some(found) = app.store.get(marker).await? else {
        return Ok(());
    };
    match app.store.replace(marker, Bytes::from(outcome), &found.version).await {
        Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The notifications a notice becomes: one per approver for an approval request (each with
/// their own signed links), one per approver who is not a bot for a release (each with their
/// own signed rollback link; one without a link when there is no such approver), one
/// otherwise.
pub async fn render(app: &App, run: &Run, notice: &Notice) -> Result<Vec<Notification>, HandlerError> {
    let short = run.sha.short();
    let repo = run.repo.as_str();
    let base = Notification {
        kind: String::new(),
        id: notice.id(),
        run_id: run.id.clone(),
        pipeline: run.pipeline.to_string(),
        repo: repo.to_owned(),
        sha: run.sha.to_string(),
        branch: run.branch.to_string(),
        commit_message: run.commit.message.lines().next().unwrap_or("").to_owned(),
        author: run
            .commit
            .author_login
            .clone()
            .unwrap_or_else(|| run.commit.author_name.clone()),
        environment: None,
        title: String::new(),
        text: String::new(),
        stage: None,
        alert: false,
        approver: None,
        address: None,
        approve_url: None,
        reject_url: None,
        rollback_url: None,
        expires_at: None,
        run_url: app.link(&format!("/runs/{}", run.id)),
    };
    let one = |kind: &str, env: Option<&str>, title: String, text: String| Notification {
        kind: kind.to_owned(),
        environment: env.map(str::to_owned),
        title,
        text,
        ..base.clone()
    };
    Ok(match &notice.kind {
        NoticeKind::ApprovalRequested { env, expires_at } => {
            let still_waiting = run
                .stage(StageKind::Approval, Some(env))
                .is_some_and(|s| s.status == StageStatus::Waiting);
            let Some(pipeline) = app.pipeline_of(run).filter(|_| still_waiting) else {
                tracing::info!(run = %run.id, %env, "approval no longer pending; not asking");
                return Ok(Vec::new());
            };
            let key = app.secret(&app.config.approvals.signing_key).await?;
            let key_id = app.config.approvals.key_id.as_ref();
            let passed = run
                .deployed_to()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            pipeline
                .approvers
                .iter()
                .map(|approver| {
                    let token = approvals::issue(
                        &key,
                        key_id,
                        &ApprovalClaim {
                            action: Action::Approve,
                            run: run.id.clone(),
                            env: env.clone(),
                            approver: approver.id.clone(),
                            expires_at: *expires_at,
                        },
                    );
                    let link = app.link(&format!("/approvals/{token}"));
                    Notification {
                        kind: "approval_requested".into(),
                        id: format!("{}.{}", notice.id(), approver.id),
                        environment: Some(env.to_string()),
                        title: format!("Approve {repo} {short} for {env}?"),
                        text: format!(
                            "{short} is green on {}. {}, approve or reject promotion to {env} before {expires_at}.",
                            if passed.is_empty() {
                                "CI".to_owned()
                            } else {
                                passed.clone()
                            },
                            approver.id
                        ),
                        approver: Some(approver.id.to_string()),
                        address: Some(approver.address.clone()),
                        approve_url: Some(format!("{link}?decision=approve")),
                        reject_url: Some(format!("{link}?decision=reject")),
                        expires_at: Some(*expires_at),
                        ..base.clone()
                    }
                })
                .collect()
        }
        NoticeKind::Released { env } => {
            let released = one(
                "released",
                Some(env.as_str()),
                format!("Released {repo} {short} to {env}"),
                format!("\"{}\" by {} is live on {env}.", base.commit_message, base.author),
            );
            let people: Vec<_> = app
                .pipeline_of(run)
                .map(|p| p.approvers.iter().filter(|a| !a.is_bot()).collect())
                .unwrap_or_default();
            if people.is_empty() {
                return Ok(vec![released]);
            }
            // Each person who may approve may also undo: their own link, as for approvals.
            let key = app.secret(&app.config.approvals.signing_key).await?;
            let key_id = app.config.approvals.key_id.as_ref();
            // From when the release happened, so a redelivered notice signs the same links.
            let released_at = run.history.get(notice.seq).map_or_else(|| app.clock.now(), |h| h.at);
            let expires_at = released_at
                .checked_add(approvals::ROLLBACK_LINK_VALIDITY)
                .unwrap_or(jiff::Timestamp::MAX);
            people
                .into_iter()
                .map(|approver| {
                    let token = approvals::issue(
                        &key,
                        key_id,
                        &ApprovalClaim {
                            action: Action::Rollback,
                            run: run.id.clone(),
                            env: env.clone(),
                            approver: approver.id.clone(),
                            expires_at,
                        },
                    );
                    Notification {
                        id: format!("{}.{}", notice.id(), approver.id),
                        text: format!(
                            "{} If it misbehaves, {}, roll {env} back from the run page before {expires_at}.",
                            released.text, approver.id
                        ),
                        approver: Some(approver.id.to_string()),
                        address: Some(approver.address.clone()),
                        rollback_url: Some(app.link(&format!("/runs/{}?token={token}", run.id))),
                        expires_at: Some(expires_at),
                        ..released.clone()
                    }
                })
                .collect()
        }
        NoticeKind::Failed {
            stage,
            reason,
            red_main,
        } => {
            let mut n = if *red_main {
                one(
                    "failed",
                    None,
                    format!("{repo} {} is red: the build of {short} failed", run.branch),
                    format!("Fix {} first — nothing ships until it is green. {reason}", run.branch),
                )
            } else {
                let env = stage.split_once(':').map(|(_, e)| e);
                one("failed", env, format!("{repo} {short}: {stage} failed"), reason.clone())
            };
            n.stage = Some(stage.clone());
            n.alert = *red_main;
            vec![n]
        }
        NoticeKind::Rejected { env, by, comment } => vec![one(
            "rejected",
            Some(env.as_str()),
            format!("{by} rejected {repo} {short} for {env}"),
            comment.clone().unwrap_or_else(|| "No reason given.".into()),
        )],
        NoticeKind::RolledBack { env, to, reason } => vec![one(
            "rolled_back",
            Some(env.as_str()),
            format!("Rolled {repo} {env} back from {short}"),
            match to {
                Some(to) => format!("{reason}. {env} runs {} again.", to.short()),
                None => format!("{reason}. The backup was restored."),
            },
        )],
        NoticeKind::RollbackFailed { env, reason, by_hand } => {
            let mut n = one(
                "rollback_failed",
                Some(env.as_str()),
                format!("ROLLBACK FAILED: {repo} {env} needs a person now"),
                format!(
                    "Rolling {env} back from {short} failed: {reason}. Left to do by hand: {}.",
                    by_hand.join("; ")
                ),
            );
            n.alert = true;
            vec![n]
        }
        NoticeKind::Superseded { env, by }
            if run
                .stage(StageKind::Rollback, Some(env))
                .is_some_and(|s| s.status == StageStatus::Superseded && s.superseded_by.as_ref() == Some(by)) =>
        {
            vec![one(
                "superseded",
                Some(env.as_str()),
                format!("{repo} {short}: rollback of {env} called off"),
                format!(
                    "A newer release (run {by}) reached {env} before the rollback ran; rolling {short} back \
                     would have undone it too. Nothing was deployed. To roll back the newer release, ask again."
                ),
            )]
        }
        NoticeKind::Superseded { env, by } => vec![one(
            "superseded",
            Some(env.as_str()),
            format!("{repo} {short} superseded for {env}"),
            format!("A newer commit (run {by}) takes its place; {short} will not reach {env}."),
        )],
        NoticeKind::Held { env, reason } => vec![one(
            "held",
            Some(env.as_str()),
            format!("{repo} {short} is held before {env}"),
            format!("{reason}. It goes on by itself when {env} opens."),
        )],
        NoticeKind::ApprovalExpired { env } => vec![one(
            "approval_expired",
            Some(env.as_str()),
            format!("Approval of {repo} {short} for {env} expired"),
            format!("Nobody decided in time, so {short} will not reach {env}. Push a new commit to try again."),
        )],
    })
}

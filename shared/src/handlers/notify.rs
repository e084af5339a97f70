//! The notify queue: render a notice for each recipient and deliver it to every channel,
//! once. One marker per notice is created before the deliveries — one conditional create,
//! which also keeps two deliveries of one message from both sending. If some deliveries fail,
//! the marker is rewritten with those that went out, so a redelivered message only retries
//! the recipients and channels that have not had it yet.
//!
//! A release of (or a rollback in) a pipeline's last environment is also told to the
//! pipeline's ticket trackers ([`crate::trackers`]), after the channels and under the same
//! marker; each comment has its own marker besides, so a retry only comments where it has
//! not yet. A tracker that fails makes the message fail like a channel does.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::HandlerError;
use crate::app::{App, EngineError};
use crate::approvals::{self, Action, ApprovalClaim};
use crate::domain::{Notice, NoticeKind, Run, StageKind, StageStatus};
use crate::ports::{Notification, NotifyError, StoreError, StoreKey, Version};

pub async fn handle(app: &App, notice: &Notice, known: super::Known) -> Result<(), HandlerError> {
    let run = super::run_of(app, &notice.run, known).await?;
    let notifications = render(app, &run, notice).await?;
    let watched = crate::trackers::watches(app, &run, notice);
    if notifications.is_empty() && !watched {
        return Ok(());
    }
    let marker = StoreKey::notice_sent(&notice.id());
    let Some((version, mut done)) = take(app, &marker).await? else {
        return Ok(());
    };
    let mut failed = Vec::new();
    for notification in &notifications {
        for (c, channel) in app.notifiers.iter().enumerate() {
            let delivery = format!("{}/{c}", notification.id);
            if done.contains(&delivery) {
                continue;
            }
            match channel.deliver(notification).await {
                Ok(()) => {}
                Err(e @ NotifyError::Permanent { .. }) => {
                    crate::metrics::notification_failed(&channel.name(), true);
                    // Retrying will not help; say so loudly and do not try again.
                    tracing::error!(notice = %notification.id, channel = channel.name(), error = %e, source = ?std::error::Error::source(&e), "notification refused");
                }
                Err(e @ NotifyError::Transient { .. }) => {
                    crate::metrics::notification_failed(&channel.name(), false);
                    tracing::warn!(notice = %notification.id, channel = channel.name(), error = %e, "notification failed; will retry");
                    failed.push(channel.name());
                    continue;
                }
            }
            done.insert(delivery);
        }
    }
    if watched {
        match crate::trackers::announce(app, &run, notice).await {
            Ok(trackers) => failed.extend(trackers.into_iter().map(|t| format!("tracker {t}"))),
            Err(e) => {
                // The marker must say `retry`, or the redelivered message would skip the trackers.
                tracing::warn!(notice = %notice.id(), error = %e, "could not work out what to tell the trackers; will retry");
                failed.push("trackers".to_owned());
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    // Handed back with what went out, so the retry sends only the rest.
    let retry = Deliveries {
        state: DeliveryState::Retry,
        at: app.clock.now(),
        done,
    };
    match app.store.replace(&marker, retry.to_bytes(), &version).await {
        Ok(_) | Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(EngineError::from(e).into()),
    }
    failed.sort_unstable();
    failed.dedup();
    Err(HandlerError::Channel(failed.join(", ")))
}

/// A notice's delivery marker.
#[derive(serde::Serialize, serde::Deserialize)]
struct Deliveries {
    state: DeliveryState,
    /// When the state was last set.
    at: jiff::Timestamp,
    /// The deliveries that are over (sent, or refused for good): `<notification id>/<channel>`.
    #[serde(default)]
    done: BTreeSet<String>,
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum DeliveryState {
    /// A worker is delivering (or delivered everything: the marker is not written again).
    Sending,
    /// Some deliveries failed; the next delivery of the message sends the rest.
    Retry,
}

impl Deliveries {
    fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a marker always serialises"))
    }
}

/// Takes the notice's deliveries with one conditional create of its `marker`: the marker's
/// version and the deliveries already done, or `None` if they are done (or being done by
/// another worker right now). Deliveries left by a worker that failed, or that vanished
/// mid-way (its marker still says `sending` after a visibility timeout), are taken again: a
/// notification may then be sent twice, never lost.
async fn take(app: &App, marker: &StoreKey) -> Result<Option<(Version, BTreeSet<String>)>, EngineError> {
    let now = app.clock.now();
    let sending = |done: BTreeSet<String>| Deliveries {
        state: DeliveryState::Sending,
        at: now,
        done,
    };
    match app.store.create(marker, sending(BTreeSet::new()).to_bytes()).await {
        Ok(version) => return Ok(Some((version, BTreeSet::new()))),
        Err(StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(found) = app.store.get(marker).await? else {
        // Removed meanwhile (by hand): deliver again.
        return Ok(app
            .store
            .create(marker, sending(BTreeSet::new()).to_bytes())
            .await
            .ok()
            .map(|v| (v, BTreeSet::new())));
    };
    let Ok(marked) = serde_json::from_slice::<Deliveries>(&found.value) else {
        return Ok(None); // not a marker this version wrote: leave it be.
    };
    let stale = jiff::SignedDuration::try_from(app.tuning.visibility)
        .ok()
        .and_then(|v| marked.at.checked_add(v).ok())
        .is_some_and(|deadline| deadline <= now);
    match marked.state {
        DeliveryState::Retry => {}
        DeliveryState::Sending if stale => {
            tracing::warn!(marker = %marker, "a delivery was left unfinished by a vanished worker; sending it again");
        }
        DeliveryState::Sending => return Ok(None),
    }
    let again = sending(marked.done);
    match app.store.replace(marker, again.to_bytes(), &found.version).await {
        Ok(version) => Ok(Some((version, again.done))),
        Err(StoreError::Conflict(_)) => Ok(None),
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
        sign_in_url: None,
        run_url: app.url(&["runs", run.id.as_ref()]).into(),
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
            // Each approver's sign-in link, working as long as the links beside it.
            let sign_in = |who: &crate::domain::ApproverId, until: jiff::Timestamp| {
                let token = approvals::seal(&key, key_id, &approvals::SignIn::link(who.clone(), until));
                String::from(app.url(&["login", &token]))
            };
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
                    let link = app.url(&["approvals", &token]);
                    let deciding = |decision: &str| {
                        let mut url = link.clone();
                        url.query_pairs_mut().append_pair("decision", decision);
                        String::from(url)
                    };
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
                        approve_url: Some(deciding("approve")),
                        reject_url: Some(deciding("reject")),
                        expires_at: Some(*expires_at),
                        sign_in_url: Some(sign_in(&approver.id, *expires_at)),
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
                match run.release_in(env) {
                    // The release page: what shipped, who approved, the deploy's phases.
                    Some(release) => format!(
                        "\"{}\" by {} is live on {env}. What shipped: {}",
                        base.commit_message,
                        base.author,
                        app.url(&[
                            "pipelines",
                            run.pipeline.as_str(),
                            "releases",
                            env.as_str(),
                            &release.at.as_second().to_string()
                        ])
                    ),
                    None => format!("\"{}\" by {} is live on {env}.", base.commit_message, base.author),
                },
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
            // Each approver's sign-in link, working as long as the links beside it.
            let sign_in = |who: &crate::domain::ApproverId, until: jiff::Timestamp| {
                let token = approvals::seal(&key, key_id, &approvals::SignIn::link(who.clone(), until));
                String::from(app.url(&["login", &token]))
            };
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
                        rollback_url: Some({
                            let mut url = app.url(&["runs", run.id.as_ref()]);
                            url.query_pairs_mut().append_pair("token", &token);
                            url.into()
                        }),
                        expires_at: Some(expires_at),
                        sign_in_url: Some(sign_in(&approver.id, expires_at)),
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
            let manual = run
                .stage(StageKind::Rollback, Some(env))
                .and_then(|s| s.rollback.as_ref())
                .is_some_and(|p| p.manual);
            let what_now = if manual {
                "To roll back the newer release, ask again."
            } else {
                "The newer release runs there now; if it is unhealthy too, roll it back."
            };
            vec![one(
                "superseded",
                Some(env.as_str()),
                format!("{repo} {short}: rollback of {env} called off"),
                format!(
                    "A newer release (run {by}) reached {env} before the rollback ran; rolling {short} back \
                     would have undone it too. Nothing was deployed. {what_now}"
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

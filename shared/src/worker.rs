//! Pulls messages off the queues and hands them to the [`handlers`](crate::handlers):
//! ack on success, otherwise release for a later retry (the queue dead-letters a message
//! after its maximum receives). One tracing span per message; a bad message never stops
//! the others.

use std::time::Duration;

use tracing::Instrument;

use crate::app::App;
use crate::handlers::{self, HandlerError};
use crate::ports::{Delivery, QueueError, QueueName};

/// Handles one delivered message and acks or releases it. Returns the handler's error, if
/// any, after releasing the message.
pub async fn process(app: &App, queue: QueueName, delivery: &Delivery) -> Result<(), HandlerError> {
    let span = tracing::info_span!("message", %queue, message_id = %delivery.message_id, receive_count = delivery.receive_count);
    async {
        let result = with_heartbeat(app, queue, delivery, handlers::handle_delivery(app, queue, &delivery.body, delivery.receive_count)).await;
        match &result {
            Ok(()) => {
                crate::metrics::queue_message(queue, crate::metrics::Outcome::Done);
                if let Err(e) = app.queue.ack(queue, &delivery.receipt).await {
                    tracing::warn!(error = %e, "could not ack; the message will be handled again (harmlessly)");
                }
            }
            Err(e @ HandlerError::NotYet { .. }) if look_again(app, queue, &delivery.body, e).await => {
                crate::metrics::queue_message(queue, crate::metrics::Outcome::Later);
                if let Err(e) = app.queue.ack(queue, &delivery.receipt).await {
                    tracing::warn!(error = %e, "could not ack a message sent again for later; it will be handled twice (harmlessly)");
                }
            }
            Err(e) => {
                crate::metrics::queue_message(queue, crate::metrics::Outcome::Failed);
                let delay = e.retry_in(delivery.receive_count);
                tracing::warn!(error = %e, ?delay, "message failed; will retry");
                if let Err(e) = app.queue.release(queue, &delivery.receipt, delay).await {
                    tracing::warn!(error = %e, "could not release; it will reappear after its visibility timeout");
                }
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// The longest delay a queue message may carry (SQS `DelaySeconds`).
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Work that is waiting (a freeze, a busy environment, a bake between readings) must not
/// use up the message's receives, or it would end in the dead-letter queue: a fresh copy
/// is sent with a delay instead, and the caller acks the one it has. `false` if the copy
/// could not be sent (the caller then releases the message as for any failure).
pub async fn look_again(app: &App, queue: QueueName, body: &str, why: &HandlerError) -> bool {
    let HandlerError::NotYet { after, .. } = why else {
        return false;
    };
    let delay = (*after).min(MAX_DELAY);
    match app.queue.send(queue, body, delay).await {
        Ok(()) => {
            tracing::info!(error = %why, ?delay, "not yet; will look again");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not send the message again for later");
            false
        }
    }
}

/// Runs `work` while keeping the message hidden from other workers: every half visibility
/// timeout its visibility is extended (SQS `ChangeMessageVisibility`), so a long deploy is
/// not redelivered to a second worker while the first is still at it.
async fn with_heartbeat<F: std::future::Future>(
    app: &App,
    queue: QueueName,
    delivery: &Delivery,
    work: F,
) -> F::Output {
    let visibility = app.tuning.visibility;
    // The first beat is one period from now: an interval's immediate first tick would make
    // every message wait for the timer's next millisecond tick before its work starts.
    let period = visibility / 2;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = beat.tick() => {
                if let Err(e) = app.queue.extend(queue, &delivery.receipt, visibility).await {
                    tracing::warn!(error = %e, "could not extend the message's visibility");
                }
            }
        }
    }
}

/// Receives up to `max` messages from `queue` and handles them one after another, in the
/// order received: deterministic, for tests and one-shot tools. Returns how many were
/// received.
pub async fn poll(app: &App, queue: QueueName, max: usize) -> Result<usize, QueueError> {
    let deliveries = app.queue.receive(queue, max, app.tuning.visibility).await?;
    for delivery in &deliveries {
        let _ = process(app, queue, delivery).await;
    }
    Ok(deliveries.len())
}

/// Handles messages on every queue until a full pass finds none visible, one message at a
/// time. For tests and one-shot tools; at most `max_rounds` passes.
pub async fn drain(app: &App, max_rounds: usize) -> Result<usize, QueueError> {
    let mut total = 0;
    for _ in 0..max_rounds {
        let mut round = 0;
        for queue in QueueName::ALL {
            round += poll(app, queue, 10).await?;
        }
        if round == 0 {
            break;
        }
        total += round;
    }
    Ok(total)
}

/// How often `run` looks for runs that only time moves on (expired approvals, builds CI
/// never reported).
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The most messages one receive asks for (SQS `ReceiveMessage` takes at most 10).
const RECEIVE_AT_MOST: usize = 10;

/// How the workers of [`run`] pace themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long a queue's worker waits before looking again when the queue was empty (less
    /// when the queue says a message arrived: [`crate::ports::Queue::idle`]).
    pub idle: Duration,
    /// The most messages of one queue handled at once. Deploys to different environments
    /// go side by side; each environment's lease still lets only one run work there.
    /// Most of a message's time is spent waiting (on the store, on a deploy program), not
    /// working, so the default (32) is well above the cores: with 8, a burst of pushes to one
    /// pipeline was worked through at about half the rate with the CPU half idle.
    pub concurrency: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            idle: Duration::from_millis(250),
            concurrency: 32,
        }
    }
}

/// Runs a worker for every queue, and the sweep every [`SWEEP_EVERY`], until `shutdown`
/// resolves. Queues are served side by side, so a long deploy does not hold up
/// notifications; and each queue's messages are handled up to `options.concurrency` at
/// once, so a long staging deploy does not hold up a production deploy or rollback.
/// On shutdown the workers stop receiving and finish every message they already hold.
pub async fn run(app: App, options: Options, shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    for queue in QueueName::ALL {
        tasks.spawn(serve_queue(app.clone(), queue, options, shutdown.clone()));
    }
    let mut shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Err(e) = crate::sweep::run_once(&app).await {
                        tracing::warn!(error = %e, "sweep failed; will try again");
                    }
                }
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
    });
    while tasks.join_next().await.is_some() {}
}

/// One queue's worker: receives only as many messages as it has room to start at once
/// (a received message's visibility timeout is already running), handles each in a task of
/// its own, and on shutdown waits for every one of them.
async fn serve_queue(app: App, queue: QueueName, options: Options, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let limit = options.concurrency.max(1);
    let mut handling = tokio::task::JoinSet::new();
    loop {
        while let Some(done) = handling.try_join_next() {
            report(queue, done);
        }
        if *shutdown.borrow() {
            break;
        }
        let room = limit.saturating_sub(handling.len());
        if room == 0 {
            tokio::select! {
                Some(done) = handling.join_next() => report(queue, done),
                _ = shutdown.changed() => break,
            }
            continue;
        }
        // Waiting for messages (an SQS long poll) is cut short by shutdown; handling
        // them never is: a message is finished, or left for redelivery, whole.
        let received = tokio::select! {
            r = app.queue.receive(queue, room.min(RECEIVE_AT_MOST), app.tuning.visibility) => r,
            _ = shutdown.changed() => break,
        };
        let busy = match received {
            Ok(deliveries) => {
                let busy = !deliveries.is_empty();
                for delivery in deliveries {
                    let app = app.clone();
                    handling.spawn(async move {
                        let _ = process(&app, queue, &delivery).await;
                    });
                }
                busy
            }
            Err(e) => {
                tracing::error!(%queue, error = %e, "cannot receive; retrying");
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = app.queue.idle(queue, options.idle) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    while let Some(done) = handling.join_next().await {
        report(queue, done);
    }
}

/// A handler that panicked has neither acked nor released its message: it comes back after
/// its visibility timeout, and the worker goes on with the others.
fn report(queue: QueueName, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(%queue, error = %e, "a message's handler panicked; the message will be delivered again");
    }
}

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
        let result = with_heartbeat(app, queue, delivery, handlers::handle(app, queue, &delivery.body)).await;
        match &result {
            Ok(()) => {
                if let Err(e) = app.queue.ack(queue, &delivery.receipt).await {
                    tracing::warn!(error = %e, "could not ack; the message will be handled again (harmlessly)");
                }
            }
            Err(e @ HandlerError::NotYet { .. }) if look_again(app, queue, &delivery.body, e).await => {
                if let Err(e) = app.queue.ack(queue, &delivery.receipt).await {
                    tracing::warn!(error = %e, "could not ack a message sent again for later; it will be handled twice (harmlessly)");
                }
            }
            Err(e) => {
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

/// Receives up to `max` messages from `queue` and handles them. Returns how many were received.
pub async fn poll(app: &App, queue: QueueName, max: usize) -> Result<usize, QueueError> {
    let deliveries = app.queue.receive(queue, max, app.tuning.visibility).await?;
    for delivery in &deliveries {
        let _ = process(app, queue, delivery).await;
    }
    Ok(deliveries.len())
}

/// Handles messages on every queue until a full pass finds none visible. For tests and
/// one-shot tools; at most `max_rounds` passes.
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

/// How often `run` looks for runs that only time moves on (expired approvals).
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Runs a worker for every queue, and the sweep every [`SWEEP_EVERY`], until `shutdown`
/// resolves, polling every `idle` when there is nothing to do. Queues are served
/// concurrently, so a long deploy does not hold up notifications.
pub async fn run(app: App, idle: Duration, shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    for queue in QueueName::ALL {
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                if *shutdown.borrow() {
                    break;
                }
                // Waiting for messages (an SQS long poll) is cut short by shutdown; handling
                // them never is: a message is finished, or left for redelivery, whole.
                let received = tokio::select! {
                    r = app.queue.receive(queue, 5, app.tuning.visibility) => r,
                    _ = shutdown.changed() => break,
                };
                let busy = match received {
                    Ok(deliveries) => {
                        for delivery in &deliveries {
                            let _ = process(&app, queue, delivery).await;
                        }
                        !deliveries.is_empty()
                    }
                    Err(e) => {
                        tracing::error!(%queue, error = %e, "cannot receive; retrying");
                        false
                    }
                };
                if !busy {
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        });
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

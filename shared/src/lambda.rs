//! Lambda entry points: each function's `main` builds an [`App`] once per container and
//! hands it to one of these.
//!
//! - HTTP functions serve the one router through `lambda_http` (Function URLs and API
//!   Gateway; base64 bodies are decoded before any handler sees them).
//! - SQS functions handle a batch record by record, one span each, and report only the
//!   records that failed (`ReportBatchItemFailures`); one bad record never fails its batch,
//!   and a panic in one is contained to it.
//! - The sweeper runs [`sweep::run_once`](crate::sweep::run_once) on a schedule.
//!
//! Every entry point installs the CloudWatch Embedded Metric Format collector
//! ([`crate::metrics::emf`]) before it serves, and writes what an invocation recorded to
//! standard output when the invocation ends ([`crate::metrics::flush_emf`]): CloudWatch Logs
//! turns those lines into metrics in the `slipway` namespace.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use tracing::Instrument;

use crate::app::App;
use crate::handlers::{self, HandlerError};
use crate::ports::{QueueName, Receipt};

pub type Error = lambda_runtime::Error;

/// Serves the router until the runtime stops.
pub async fn run_http(app: App) -> Result<(), Error> {
    crate::metrics::emf();
    let router = crate::http::router(app).layer(axum::middleware::map_response(metrics_flushed));
    lambda_http::run(router).await
}

/// An HTTP invocation's answer, once its metrics are written.
async fn metrics_flushed(response: axum::response::Response) -> axum::response::Response {
    crate::metrics::flush_emf();
    response
}

/// Consumes `queue`'s SQS batches until the runtime stops.
pub async fn run_queue(app: App, queue: QueueName) -> Result<(), Error> {
    crate::metrics::emf();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let app = app.clone();
        async move {
            let response = handle_batch(&app, queue, event.payload).await;
            crate::metrics::flush_emf();
            Ok::<_, Error>(response)
        }
    }))
    .await
}

/// Runs the sweep on every scheduled invocation.
pub async fn run_sweeper(app: App) -> Result<(), Error> {
    crate::metrics::emf();
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let app = app.clone();
        async move {
            let swept = crate::sweep::run_once(&app).await;
            crate::metrics::flush_emf();
            let swept = swept?;
            tracing::info!(
                expired = swept.expired,
                builds_timed_out = swept.builds_timed_out,
                resent = swept.resent,
                abandoned = swept.abandoned,
                "swept"
            );
            Ok::<_, Error>(serde_json::json!({
                "expired": swept.expired, "builds_timed_out": swept.builds_timed_out,
                "resent": swept.resent, "abandoned": swept.abandoned
            }))
        }
    }))
    .await
}

/// Handles one SQS batch and names the records that failed, so SQS retries only those.
/// A record that must wait (its stage is claimed by another worker) is made visible again
/// when it is worth looking; a failing one backs off by its receive count.
fn body_of(record: &aws_lambda_events::sqs::SqsMessage) -> String {
    record.body.clone().unwrap_or_default()
}

pub async fn handle_batch(app: &App, queue: QueueName, event: SqsEvent) -> SqsBatchResponse {
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let receive_count: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        let span = tracing::info_span!("record", %queue, message_id = %id, receive_count);
        let Some(body) = record.body.clone() else {
            tracing::warn!(parent: &span, "record without a body");
            failures.push(id);
            continue;
        };
        let task = {
            let app = app.clone();
            tokio::spawn(
                async move { handlers::handle_delivery(&app, queue, &body, receive_count).await }
                    .instrument(span.clone()),
            )
        };
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(panic) => Err(HandlerError::BadMessage(format!("the handler panicked: {panic}"))),
        };
        if outcome.is_ok() {
            crate::metrics::queue_message(queue, crate::metrics::Outcome::Done);
        }
        if let Err(e) = outcome {
            if crate::worker::look_again(app, queue, &body_of(&record), &e).await {
                crate::metrics::queue_message(queue, crate::metrics::Outcome::Later);
                continue;
            }
            crate::metrics::queue_message(queue, crate::metrics::Outcome::Failed);
            let delay = e.retry_in(receive_count);
            tracing::warn!(parent: &span, error = %e, ?delay, "record failed; SQS will deliver it again");
            if let Some(receipt) = record.receipt_handle.clone()
                && let Err(e) = app.queue.release(queue, &Receipt(receipt), delay).await
            {
                tracing::warn!(parent: &span, error = %e, "could not delay the retry; it follows the queue's visibility timeout");
            }
            failures.push(id);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .map(|item_identifier| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = item_identifier;
            failure
        })
        .collect();
    response
}

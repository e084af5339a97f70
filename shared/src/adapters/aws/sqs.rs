//! The work queues in SQS: one standard queue per stage, each with a dead-letter queue that
//! SQS's redrive policy fills (`maxReceiveCount`), so this adapter never moves messages itself.
//!
//! SQS counts in whole seconds: delays and visibility timeouts are rounded up (a message is
//! never visible earlier than asked), the long-poll wait is rounded down, and each is capped
//! at SQS's limit (delay 900 s, visibility 12 h, wait 20 s).
//!
//! Receipts: SQS rejects a receipt handle whose message is no longer in flight or no longer in
//! the queue, which this adapter reports as [`QueueError::StaleReceipt`]. SQS's `DeleteMessage`
//! is lenient, though: deleting an already deleted message, or deleting through a superseded
//! receipt of the same message, succeeds. So `ack` through a spent receipt is only refused when
//! the message has left the queue some other way (dead-lettered, expired) or the handle is
//! malformed; acking twice is harmless, as it must be for at-least-once delivery anyway.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use jiff::Timestamp;

use super::QueueUrls;
use crate::ports::{BoxError, DeadLetter, Delivery, Queue, QueueError, QueueName, Receipt};

/// How long `receive` waits for a message by default (SQS long polling).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The message attribute naming the queue a message was sent to.
pub const QUEUE_ATTRIBUTE: &str = "slipway-queue";
/// The message attribute carrying a command's `type` (`deploy`, `smoke`, `notify`).
pub const TYPE_ATTRIBUTE: &str = "slipway-type";

/// SQS's limits, in seconds (or messages).
const MAX_DELAY_SECS: u64 = 900;
const MAX_VISIBILITY_SECS: u64 = 43_200;
const MAX_WAIT_SECS: u64 = 20;
const MAX_BATCH: usize = 10;
/// SQS takes at most 256 KiB of messages per batch, attributes included; the bodies of one
/// batch stay under this, leaving room for the attributes.
const MAX_BATCH_BYTES: usize = 240 * 1024;

/// `bodies` cut into batches SQS takes: at most [`MAX_BATCH`] messages and
/// [`MAX_BATCH_BYTES`] of bodies each (a larger body goes alone), in order.
fn batches(bodies: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        let full = i - start == MAX_BATCH || (i > start && bytes + body.len() > MAX_BATCH_BYTES);
        if full {
            out.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

/// At most this many dead letters are listed per queue.
const MAX_DEAD_LETTERS_PER_QUEUE: usize = 100;
/// At most this many peeks at one dead-letter queue per listing.
const MAX_PEEK_ROUNDS: usize = 20;

/// [`Queue`] on SQS: the work queues and dead-letter queues named by [`QueueUrls`].
#[derive(Debug, Clone)]
pub struct SqsQueues {
    client: aws_sdk_sqs::Client,
    urls: QueueUrls,
    wait: Duration,
}

impl SqsQueues {
    /// Queues at `urls`, reached through `client`; `receive` long-polls for [`DEFAULT_WAIT`].
    pub fn new(client: aws_sdk_sqs::Client, urls: QueueUrls) -> Self {
        Self {
            client,
            urls,
            wait: DEFAULT_WAIT,
        }
    }

    /// The same queues, with `receive` waiting up to `wait` (at most 20 s, whole seconds,
    /// rounded down) for a message when none is visible. Zero returns at once.
    pub fn with_wait(self, wait: Duration) -> Self {
        Self { wait, ..self }
    }

    /// The URLs these queues live at.
    pub fn urls(&self) -> &QueueUrls {
        &self.urls
    }

    fn url(&self, queue: QueueName) -> &str {
        match queue {
            QueueName::Deploy => &self.urls.deploy,
            QueueName::Smoke => &self.urls.smoke,
            QueueName::Notify => &self.urls.notify,
        }
    }

    fn dlq_url(&self, queue: QueueName) -> &str {
        match queue {
            QueueName::Deploy => &self.urls.deploy_dlq,
            QueueName::Smoke => &self.urls.smoke_dlq,
            QueueName::Notify => &self.urls.notify_dlq,
        }
    }

    /// ChangeMessageVisibility, with receipt problems reported as stale.
    async fn change_visibility(&self, queue: QueueName, receipt: &Receipt, secs: i32) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(self.url(queue))
            .receipt_handle(&receipt.0)
            .visibility_timeout(secs)
            .send()
            .await
            .map(drop)
            .map_err(|e| receipt_error(queue, e))
    }

    /// The `maxReceiveCount` of `queue`'s redrive policy: how many deliveries every message in
    /// its dead-letter queue had. `None` if it cannot be read (logged).
    async fn max_receives(&self, queue: QueueName) -> Option<u32> {
        let got = self
            .client
            .get_queue_attributes()
            .queue_url(self.url(queue))
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await;
        let policy = match got {
            Ok(out) => out
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
                .cloned(),
            Err(e) => {
                let e: BoxError = Box::new(e);
                tracing::warn!(%queue, error = %e, "cannot read the redrive policy; dead letters show SQS's receive count");
                None
            }
        };
        policy.as_deref().and_then(max_receive_count)
    }

    /// Up to [`MAX_DEAD_LETTERS_PER_QUEUE`] messages of `queue`'s dead-letter queue, peeked at
    /// without hiding them.
    async fn peek_dead(&self, queue: QueueName) -> Result<Vec<DeadLetter>, QueueError> {
        let max_receives = self.max_receives(queue).await;
        let mut seen = HashSet::new();
        let mut dead = Vec::new();
        for _ in 0..MAX_PEEK_ROUNDS {
            let got = self
                .client
                .receive_message()
                .queue_url(self.dlq_url(queue))
                .max_number_of_messages(MAX_BATCH as i32)
                .visibility_timeout(0)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateFirstReceiveTimestamp)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| QueueError::Unavailable(queue, Box::new(e)))?;
            let mut new = 0;
            for message in got.messages() {
                let Some(id) = message.message_id() else { continue };
                if dead.len() < MAX_DEAD_LETTERS_PER_QUEUE && seen.insert(id.to_owned()) {
                    new += 1;
                    dead.push(dead_letter(queue, message, max_receives));
                }
            }
            if new == 0 || dead.len() >= MAX_DEAD_LETTERS_PER_QUEUE {
                break;
            }
        }
        Ok(dead)
    }
}

/// Whole seconds for SQS: `d` rounded up, capped at `max`.
fn secs_up(d: Duration, max: u64) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i32::try_from(secs.min(max)).unwrap_or(i32::MAX)
}

/// Whole seconds for SQS: `d` rounded down, capped at `max`.
fn secs_down(d: Duration, max: u64) -> i32 {
    i32::try_from(d.as_secs().min(max)).unwrap_or(i32::MAX)
}

/// The command type of a slipway message body (`{"type": "deploy", …}`), if it has a plain
/// one; anything else (not JSON, no `type`, odd characters) has none.
fn body_type(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let kind = value.get("type")?.as_str()?;
    let plain = (1..=64).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    plain.then(|| kind.to_owned())
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, BoxError> {
    Ok(MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()?)
}

/// The message attributes every message carries: its queue, and its command type if any.
fn attributes(queue: QueueName, body: &str) -> Result<HashMap<String, MessageAttributeValue>, BoxError> {
    let mut attributes = HashMap::from([(QUEUE_ATTRIBUTE.to_owned(), string_attribute(queue.as_str())?)]);
    if let Some(kind) = body_type(body) {
        attributes.insert(TYPE_ATTRIBUTE.to_owned(), string_attribute(&kind)?);
    }
    Ok(attributes)
}

/// Whether SQS refused a request because of its receipt handle: the message is no longer in
/// flight, is gone, or the handle is expired or malformed.
fn is_stale_receipt(code: Option<&str>, message: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    let code = code.rsplit('.').next().unwrap_or(code);
    match code {
        "ReceiptHandleIsInvalid" | "MessageNotInflight" | "InvalidIdFormat" => true,
        "InvalidParameterValue" => message.is_some_and(|m| m.to_ascii_lowercase().contains("receipt")),
        _ => false,
    }
}

/// A failed receipt operation: stale if SQS refused the receipt, otherwise unavailable.
fn receipt_error<E>(queue: QueueName, err: SdkError<E, aws_sdk_sqs::config::http::HttpResponse>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let stale = match &err {
        SdkError::ServiceError(service) => is_stale_receipt(service.err().code(), service.err().message()),
        _ => false,
    };
    if stale {
        QueueError::StaleReceipt(queue)
    } else {
        QueueError::Unavailable(queue, Box::new(err))
    }
}

/// The `maxReceiveCount` of a redrive policy (`{"deadLetterTargetArn": …, "maxReceiveCount": 5}`,
/// the count as a number or a string).
fn max_receive_count(policy: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(policy).ok()?;
    match value.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn system_attribute<'m>(message: &'m Message, name: &MessageSystemAttributeName) -> Option<&'m str> {
    message.attributes()?.get(name).map(String::as_str)
}

/// A timestamp attribute (unix milliseconds).
fn timestamp_attribute(message: &Message, name: &MessageSystemAttributeName) -> Option<Timestamp> {
    let ms: i64 = system_attribute(message, name)?.parse().ok()?;
    Timestamp::from_millisecond(ms).ok()
}

/// A dead-letter-queue message as a [`DeadLetter`].
///
/// - `receive_count` is the work queue's `maxReceiveCount` (SQS dead-letters a message after
///   exactly that many deliveries), or, if that cannot be read, the DLQ's
///   `ApproximateReceiveCount` — which our own peeks also increase.
/// - `sent_at` is `SentTimestamp`, when the message was first sent to the work queue (now,
///   should SQS ever leave it out).
/// - `dead_at` is an approximation: SQS records no time of dead-lettering. It is the message's
///   `ApproximateFirstReceiveTimestamp` as the DLQ reports it — the first time the message
///   was received at all (on the work queue when SQS carries the attribute over, otherwise
///   our first peek at the DLQ) — or `SentTimestamp` if absent, and never before `sent_at`.
///   Good for ordering and display, not an exact time of death.
fn dead_letter(queue: QueueName, message: &Message, max_receives: Option<u32>) -> DeadLetter {
    let now = Timestamp::now();
    let sent_at = timestamp_attribute(message, &MessageSystemAttributeName::SentTimestamp).unwrap_or(now);
    let first_received = timestamp_attribute(message, &MessageSystemAttributeName::ApproximateFirstReceiveTimestamp);
    let dead_at = first_received.unwrap_or(sent_at).max(sent_at);
    let receive_count = max_receives.unwrap_or_else(|| {
        system_attribute(message, &MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    });
    DeadLetter {
        message_id: message.message_id().unwrap_or_default().to_owned(),
        queue,
        body: message.body().unwrap_or_default().to_owned(),
        receive_count,
        sent_at,
        dead_at,
    }
}

/// A batch send in which SQS refused some entries.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} messages could not be sent (first refusal: {code}: {message})")]
struct BatchRefused {
    failed: usize,
    total: usize,
    code: String,
    message: String,
}

#[async_trait]
impl Queue for SqsQueues {
    /// SendMessage with `DelaySeconds` (rounded up, at most 900) and the `slipway-queue` and
    /// (for a body with a `type`) `slipway-type` message attributes.
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> Result<(), QueueError> {
        let attributes = attributes(queue, body).map_err(|e| QueueError::Unavailable(queue, e))?;
        self.client
            .send_message()
            .queue_url(self.url(queue))
            .message_body(body)
            .delay_seconds(secs_up(delay, MAX_DELAY_SECS))
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .map(drop)
            .map_err(|e| QueueError::Unavailable(queue, Box::new(e)))
    }

    /// SendMessageBatch, ten at a time. If SQS refuses any entry the call fails naming how many;
    /// the other entries (and earlier batches) were sent, so a retry may send them twice —
    /// harmless, since every slipway message is idempotent.
    async fn send_many(&self, queue: QueueName, bodies: &[String]) -> Result<(), QueueError> {
        let unavailable = |e: BoxError| QueueError::Unavailable(queue, e);
        for chunk in batches(bodies) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    Ok(SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .set_message_attributes(Some(attributes(queue, body)?))
                        .build()?)
                })
                .collect::<Result<Vec<_>, BoxError>>()
                .map_err(unavailable)?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(self.url(queue))
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| unavailable(Box::new(e)))?;
            if let Some(first) = out.failed().first() {
                return Err(unavailable(Box::new(BatchRefused {
                    failed: out.failed().len(),
                    total: chunk.len(),
                    code: first.code().to_owned(),
                    message: first.message().unwrap_or_default().to_owned(),
                })));
            }
        }
        Ok(())
    }

    /// ReceiveMessage: up to `max` (at most 10) messages, hidden for `visibility` (rounded up),
    /// long-polling for the configured wait. SQS's redrive policy moves a message that has
    /// been delivered `maxReceiveCount` times to the dead-letter queue instead.
    async fn receive(&self, queue: QueueName, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .receive_message()
            .queue_url(self.url(queue))
            .max_number_of_messages(max.min(MAX_BATCH) as i32)
            .visibility_timeout(secs_up(visibility, MAX_VISIBILITY_SECS))
            .wait_time_seconds(secs_down(self.wait, MAX_WAIT_SECS))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(queue, Box::new(e)))?;
        let mut deliveries = Vec::new();
        for message in out.messages() {
            let (Some(id), Some(receipt)) = (message.message_id(), message.receipt_handle()) else {
                tracing::warn!(%queue, "SQS returned a message without an id or receipt; skipping it");
                continue;
            };
            let receive_count = system_attribute(message, &MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            deliveries.push(Delivery {
                message_id: id.to_owned(),
                receipt: Receipt(receipt.to_owned()),
                body: message.body().unwrap_or_default().to_owned(),
                receive_count,
            });
        }
        Ok(deliveries)
    }

    /// DeleteMessage. A receipt SQS refuses is [`QueueError::StaleReceipt`] (see the module
    /// docs for which receipts SQS accepts).
    async fn ack(&self, queue: QueueName, receipt: &Receipt) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(self.url(queue))
            .receipt_handle(&receipt.0)
            .send()
            .await
            .map(drop)
            .map_err(|e| receipt_error(queue, e))
    }

    /// ChangeMessageVisibility to `delay` (rounded up, at most 12 h): the message is visible
    /// again then, and this delivery counted towards `maxReceiveCount`.
    async fn release(&self, queue: QueueName, receipt: &Receipt, delay: Duration) -> Result<(), QueueError> {
        self.change_visibility(queue, receipt, secs_up(delay, MAX_VISIBILITY_SECS))
            .await
    }

    /// ChangeMessageVisibility to `visibility` from now (rounded up); the receipt stays valid.
    /// A message no longer in flight is [`QueueError::StaleReceipt`].
    async fn extend(&self, queue: QueueName, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.change_visibility(queue, receipt, secs_up(visibility, MAX_VISIBILITY_SECS))
            .await
    }

    /// Peeks at every dead-letter queue (ReceiveMessage with visibility 0 and no wait,
    /// repeated until a round brings no new message, at most 100 per queue), oldest first.
    /// Peeking hides nothing, but SQS counts it as a receive of the dead letter.
    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let names = [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesNotVisible,
            A::ApproximateNumberOfMessagesDelayed,
        ];
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(self.url(queue))
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(queue, Box::new(e)))?;
        let attributes = answer.attributes.unwrap_or_default();
        Ok(names
            .iter()
            .filter_map(|name| attributes.get(name)?.parse::<u64>().ok())
            .sum())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let mut all = Vec::new();
        for queue in QueueName::ALL {
            all.extend(self.peek_dead(queue).await?);
        }
        all.sort_by(|a, b| (a.dead_at, a.sent_at, &a.message_id).cmp(&(b.dead_at, b.sent_at, &b.message_id)));
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_whole_seconds_within_sqs_limits() {
        assert_eq!(secs_up(Duration::ZERO, MAX_DELAY_SECS), 0);
        assert_eq!(secs_up(Duration::from_millis(1), MAX_DELAY_SECS), 1);
        assert_eq!(secs_up(Duration::from_millis(1500), MAX_DELAY_SECS), 2);
        assert_eq!(secs_up(Duration::from_secs(3600), MAX_DELAY_SECS), 900);
        assert_eq!(secs_up(Duration::MAX, MAX_VISIBILITY_SECS), 43_200);
        assert_eq!(secs_down(Duration::from_millis(1500), MAX_WAIT_SECS), 1);
        assert_eq!(secs_down(Duration::from_secs(60), MAX_WAIT_SECS), 20);
    }

    #[test]
    fn batches_hold_at_most_ten_messages_and_240_kib() {
        let small: Vec<String> = (0..23).map(|i| i.to_string()).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 3]);

        let kib = |n: usize| "x".repeat(n * 1024);
        let large = vec![kib(48), kib(48), kib(48), kib(48), kib(48), kib(48), kib(300), kib(1)];
        let cut: Vec<Vec<usize>> = batches(&large)
            .iter()
            .map(|b| b.iter().map(|m| m.len() / 1024).collect())
            .collect();
        assert_eq!(cut, [vec![48, 48, 48, 48, 48], vec![48], vec![300], vec![1]]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn only_a_plain_type_field_becomes_an_attribute() {
        assert_eq!(body_type(r#"{"type":"deploy","run":"x"}"#).as_deref(), Some("deploy"));
        assert_eq!(body_type(r#"{"kind":"deploy"}"#), None);
        assert_eq!(body_type(r#"{"type":7}"#), None);
        assert_eq!(body_type(r#"{"type":"a\u0000b"}"#), None);
        assert_eq!(body_type("not json"), None);
        let attrs = attributes(QueueName::Smoke, r#"{"type":"smoke"}"#).unwrap();
        assert_eq!(attrs[QUEUE_ATTRIBUTE].string_value(), Some("smoke"));
        assert_eq!(attrs[TYPE_ATTRIBUTE].string_value(), Some("smoke"));
        assert!(
            !attributes(QueueName::Smoke, "hello")
                .unwrap()
                .contains_key(TYPE_ATTRIBUTE)
        );
    }

    #[test]
    fn receipt_refusals_are_stale_and_everything_else_is_not() {
        assert!(is_stale_receipt(Some("ReceiptHandleIsInvalid"), None));
        assert!(is_stale_receipt(
            Some("AWS.SimpleQueueService.MessageNotInflight"),
            None
        ));
        assert!(is_stale_receipt(
            Some("InvalidParameterValue"),
            Some("Value abc for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.")
        ));
        assert!(!is_stale_receipt(
            Some("InvalidParameterValue"),
            Some("Value 50000 for parameter VisibilityTimeout is invalid.")
        ));
        assert!(!is_stale_receipt(Some("RequestThrottled"), None));
        assert!(!is_stale_receipt(None, None));
    }

    #[test]
    fn redrive_policies_give_their_max_receive_count() {
        assert_eq!(
            max_receive_count(r#"{"deadLetterTargetArn":"arn","maxReceiveCount":5}"#),
            Some(5)
        );
        assert_eq!(
            max_receive_count(r#"{"deadLetterTargetArn":"arn","maxReceiveCount":"3"}"#),
            Some(3)
        );
        assert_eq!(max_receive_count("{}"), None);
        assert_eq!(max_receive_count("nope"), None);
    }
}

//! The SQS work queues against a real SQS API (moto): at-least-once delivery with visibility
//! timeouts, batches, delays, receipts that go stale, and dead-lettering by redrive policy.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use slipway::adapters::aws::QueueUrls;
use slipway::adapters::aws::sqs::{QUEUE_ATTRIBUTE, SqsQueues, TYPE_ATTRIBUTE};
use slipway::ports::{Queue, QueueError, QueueName, Receipt};
use slipway_tests::moto::Moto;

const LONG: Duration = Duration::from_secs(30);
/// SQS's smallest visibility timeout or delay above zero.
const ONE_SECOND: Duration = Duration::from_secs(1);
/// Comfortably past [`ONE_SECOND`].
const PAST_ONE_SECOND: Duration = Duration::from_millis(1600);

/// moto, the queues (dead-lettering after `max_receives`) and the adapter, polling without waiting.
async fn queues(max_receives: u32) -> (Moto, QueueUrls, SqsQueues) {
    let moto = Moto::start().await;
    let urls = moto.create_queues(max_receives).await;
    let queues = SqsQueues::new(moto.sqs().await, urls.clone()).with_wait(Duration::ZERO);
    (moto, urls, queues)
}

#[tokio::test]
async fn send_receive_ack() {
    let (_moto, _, q) = queues(5).await;
    let body = r#"{"type":"deploy","run":"shop-a1b2c3","env":"staging"}"#;
    q.send(QueueName::Deploy, body, Duration::ZERO).await.unwrap();
    assert!(
        q.receive(QueueName::Smoke, 10, LONG).await.unwrap().is_empty(),
        "queues are separate"
    );

    assert_eq!(q.depth(QueueName::Deploy).await.unwrap(), 1, "waiting");
    assert_eq!(q.depth(QueueName::Smoke).await.unwrap(), 0);
    let got = q.receive(QueueName::Deploy, 10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body);
    assert_eq!(q.depth(QueueName::Deploy).await.unwrap(), 1, "in flight still counts");
    assert_eq!(got[0].receive_count, 1);
    assert!(
        q.receive(QueueName::Deploy, 10, LONG).await.unwrap().is_empty(),
        "hidden while in flight"
    );

    q.ack(QueueName::Deploy, &got[0].receipt).await.unwrap();
    assert_eq!(q.depth(QueueName::Deploy).await.unwrap(), 0, "acknowledged");
    assert!(
        q.receive(QueueName::Deploy, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "gone"
    );
    assert!(
        q.receive(QueueName::Deploy, 0, LONG).await.unwrap().is_empty(),
        "max 0 takes nothing"
    );
}

#[tokio::test]
async fn messages_carry_their_queue_and_type_and_a_foreign_body_is_just_a_body() {
    let (moto, urls, q) = queues(5).await;
    q.send(QueueName::Notify, r#"{"type":"notify","seq":3}"#, Duration::ZERO)
        .await
        .unwrap();
    q.send(QueueName::Notify, "<not slipway's>", Duration::ZERO)
        .await
        .unwrap();

    // Look at the raw messages: their attributes are what operators filter on.
    let raw = moto
        .sqs()
        .await
        .receive_message()
        .queue_url(&urls.notify)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let messages = raw.messages();
    assert_eq!(messages.len(), 2);
    for m in messages {
        let attrs = m.message_attributes().expect("attributes");
        assert_eq!(attrs[QUEUE_ATTRIBUTE].string_value(), Some("notify"));
        match m.body() {
            Some("<not slipway's>") => assert!(!attrs.contains_key(TYPE_ATTRIBUTE)),
            _ => assert_eq!(attrs[TYPE_ATTRIBUTE].string_value(), Some("notify")),
        }
    }

    let got = q.receive(QueueName::Notify, 10, LONG).await.unwrap();
    let mut bodies: Vec<_> = got.iter().map(|d| d.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["<not slipway's>", r#"{"type":"notify","seq":3}"#]);
}

#[tokio::test]
async fn a_batch_of_25_all_arrive() {
    let (_moto, _, q) = queues(5).await;
    let bodies: Vec<String> = (0..25).map(|i| format!(r#"{{"type":"smoke","n":{i}}}"#)).collect();
    q.send_many(QueueName::Smoke, &bodies).await.unwrap();

    let mut seen = HashSet::new();
    for _ in 0..20 {
        let got = q.receive(QueueName::Smoke, 10, LONG).await.unwrap();
        if got.is_empty() {
            break;
        }
        for d in got {
            assert!(seen.insert(d.body.clone()), "delivered twice: {}", d.body);
            q.ack(QueueName::Smoke, &d.receipt).await.unwrap();
        }
    }
    assert_eq!(seen, bodies.into_iter().collect::<HashSet<_>>());
}

#[tokio::test]
async fn a_delayed_message_is_hidden_until_its_delay_passes() {
    let (_moto, _, q) = queues(5).await;
    q.send(QueueName::Deploy, "later", ONE_SECOND).await.unwrap();
    assert!(
        q.receive(QueueName::Deploy, 10, LONG).await.unwrap().is_empty(),
        "delayed"
    );
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let got = q.receive(QueueName::Deploy, 10, LONG).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "later");
}

#[tokio::test]
async fn an_unacked_message_comes_back_after_its_visibility_timeout() {
    let (_moto, _, q) = queues(5).await;
    q.send(QueueName::Smoke, "check", Duration::ZERO).await.unwrap();
    let first = q.receive(QueueName::Smoke, 1, ONE_SECOND).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(q.receive(QueueName::Smoke, 1, LONG).await.unwrap().is_empty(), "hidden");

    tokio::time::sleep(PAST_ONE_SECOND).await;
    let again = q.receive(QueueName::Smoke, 1, LONG).await.unwrap();
    assert_eq!(again.len(), 1, "redelivered");
    assert_eq!(again[0].message_id, first[0].message_id);
    assert_eq!(again[0].body, "check");
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt, first[0].receipt, "a new receipt per delivery");
    q.ack(QueueName::Smoke, &again[0].receipt).await.unwrap();
}

#[tokio::test]
async fn release_makes_it_visible_after_the_delay() {
    let (_moto, _, q) = queues(5).await;
    q.send(QueueName::Deploy, "retry me", Duration::ZERO).await.unwrap();
    let got = q.receive(QueueName::Deploy, 1, LONG).await.unwrap();
    q.release(QueueName::Deploy, &got[0].receipt, ONE_SECOND).await.unwrap();
    assert!(
        q.receive(QueueName::Deploy, 1, LONG).await.unwrap().is_empty(),
        "hidden until the release delay passes"
    );
    tokio::time::sleep(PAST_ONE_SECOND).await;
    let again = q.receive(QueueName::Deploy, 1, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2, "the released delivery counted");

    // Released without delay, it is back at once.
    q.release(QueueName::Deploy, &again[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let third = q.receive(QueueName::Deploy, 1, LONG).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].receive_count, 3);
}

#[tokio::test]
async fn extend_keeps_a_message_hidden_and_its_receipt_valid() {
    let (_moto, _, q) = queues(5).await;
    q.send(QueueName::Deploy, "long job", Duration::ZERO).await.unwrap();
    let got = q.receive(QueueName::Deploy, 1, ONE_SECOND).await.unwrap();
    q.extend(QueueName::Deploy, &got[0].receipt, LONG).await.unwrap();
    tokio::time::sleep(PAST_ONE_SECOND).await;
    assert!(
        q.receive(QueueName::Deploy, 1, LONG).await.unwrap().is_empty(),
        "still hidden past its first visibility timeout"
    );
    q.extend(QueueName::Deploy, &got[0].receipt, LONG).await.unwrap();
    q.ack(QueueName::Deploy, &got[0].receipt).await.unwrap();

    // Acked: the receipt is spent for extending and releasing.
    let err = q.extend(QueueName::Deploy, &got[0].receipt, LONG).await.unwrap_err();
    assert!(matches!(err, QueueError::StaleReceipt(QueueName::Deploy)), "{err:?}");
    let err = q
        .release(QueueName::Deploy, &got[0].receipt, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::StaleReceipt(QueueName::Deploy)), "{err:?}");
    // SQS's DeleteMessage is idempotent: a second ack through the same receipt is accepted.
    q.ack(QueueName::Deploy, &got[0].receipt).await.unwrap();
}

#[tokio::test]
async fn a_receipt_sqs_does_not_know_is_stale() {
    let (_moto, _, q) = queues(5).await;
    q.send(QueueName::Smoke, "x", Duration::ZERO).await.unwrap();
    let bogus = Receipt("not-a-receipt-handle".into());
    for result in [
        q.ack(QueueName::Smoke, &bogus).await,
        q.release(QueueName::Smoke, &bogus, Duration::ZERO).await,
        q.extend(QueueName::Smoke, &bogus, LONG).await,
    ] {
        assert!(
            matches!(result, Err(QueueError::StaleReceipt(QueueName::Smoke))),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn a_message_delivered_max_times_ends_in_the_dead_letter_queue() {
    let (moto, urls, q) = queues(2).await;
    let poison = r#"{"type":"notify","broken":true}"#;
    q.send(QueueName::Notify, poison, Duration::ZERO).await.unwrap();

    let mut receipts = Vec::new();
    let mut poison_id = String::new();
    for attempt in 1..=2 {
        let got = q.receive(QueueName::Notify, 10, LONG).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        poison_id.clone_from(&got[0].message_id);
        receipts.push(got[0].receipt.clone());
        q.release(QueueName::Notify, &got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(q.dead_letters().await.unwrap().is_empty(), "not dead yet");

    q.send(QueueName::Notify, "healthy", Duration::ZERO).await.unwrap();
    // The third receive finds the poison message at its maximum: SQS moves it to the DLQ.
    let got = q.receive(QueueName::Notify, 10, LONG).await.unwrap();
    assert_eq!(got.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["healthy"]);
    q.ack(QueueName::Notify, &got[0].receipt).await.unwrap();

    // Its old receipts are spent: the message left the queue without being acked.
    let err = q.ack(QueueName::Notify, &receipts[1]).await.unwrap_err();
    assert!(matches!(err, QueueError::StaleReceipt(QueueName::Notify)), "{err:?}");

    for look in 1..=2 {
        let dead = q.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1, "look {look}: {dead:#?}");
        assert_eq!(dead[0].message_id, poison_id);
        assert_eq!(dead[0].queue, QueueName::Notify);
        assert_eq!(dead[0].body, poison);
        assert_eq!(dead[0].receive_count, 2, "the deliveries it had, not our peeks");
        assert!(dead[0].sent_at <= dead[0].dead_at);
    }

    // Peeking left it in the dead-letter queue, visible.
    let raw = moto
        .sqs()
        .await
        .receive_message()
        .queue_url(&urls.notify_dlq)
        .visibility_timeout(0)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.messages().len(), 1);
    assert_eq!(raw.messages()[0].body(), Some(poison));
}

//! Lambda's side of the AWS tests: Function URL events handed to the router the way
//! `lambda_http` does, and SQS batches handed to the queue functions the way an event source
//! mapping does (it receives and deletes; the function only handles).

use aws_lambda_events::event::sqs::SqsEvent;
use axum::body::Body;
use base64::Engine as _;
use http::StatusCode;
use serde_json::{Value, json};
use slipway::app::App;
use slipway::ports::{Queue, QueueName};
use tower::ServiceExt;

/// A Lambda Function URL event (payload format 2.0), as AWS delivers it.
pub fn function_url_event(method: &str, path: &str, headers: Value, body: &[u8], base64: bool) -> Value {
    let body = if base64 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "slipwayurl",
            "domainName": "slipwayurl.lambda-url.us-east-1.on.aws",
            "domainPrefix": "slipwayurl",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795255200000u64
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

/// Hands a Function URL event to the router, the way `lambda_http` does in a function.
pub async fn invoke_http(app: &App, event: Value) -> (StatusCode, String) {
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid Function URL event");
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, Body::from(body.to_vec()));
    let response = slipway::http::router(app.clone())
        .oneshot(request)
        .await
        .expect("the router always answers");
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("the answer's body reads")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Plays the SQS event source mappings: receive a batch from each queue through `mapping`,
/// hand it to that queue's function handler, delete what it did not report as failed. Until
/// all are quiet. `mapping` is the mapping's own client (its requests are not the function's).
pub async fn drain(app: &App, mapping: &dyn Queue) {
    for _round in 0..30 {
        let mut handled = 0;
        for queue in QueueName::ALL {
            let deliveries = mapping
                .receive(queue, 10, std::time::Duration::from_secs(30))
                .await
                .expect("the event source mapping receives");
            if deliveries.is_empty() {
                continue;
            }
            handled += deliveries.len();
            let records: Vec<Value> = deliveries
                .iter()
                .map(|d| {
                    json!({
                        "messageId": d.message_id,
                        "receiptHandle": d.receipt.0,
                        "body": d.body,
                        "attributes": {"ApproximateReceiveCount": d.receive_count.to_string()},
                        "messageAttributes": {},
                        "eventSource": "aws:sqs",
                        "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:test-{queue}"),
                        "awsRegion": "us-east-1"
                    })
                })
                .collect();
            let event: SqsEvent = serde_json::from_value(json!({"Records": records})).expect("an SQS event");
            let response = slipway::lambda::handle_batch(app, queue, event).await;
            let failed: Vec<&str> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            assert!(failed.is_empty(), "{queue} records failed: {failed:?}");
            for d in &deliveries {
                mapping.ack(queue, &d.receipt).await.expect("the mapping deletes");
            }
        }
        if handled == 0 {
            return;
        }
    }
    panic!("the queues never went quiet");
}

//! The Lambda edge: SQS batches report only the records that failed, and every event in
//! events/lambda/ is one the real Lambda types accept.

use aws_lambda_events::event::sqs::SqsEvent;
use http::StatusCode;
use serde_json::json;
use slipway::adapters::memory::Fault;
use slipway::domain::StageStatus;
use slipway::ports::QueueName;
use slipway_tests::{Pipeline, SHA};

fn batch(bodies: &[(&str, String)]) -> SqsEvent {
    let records: Vec<_> = bodies
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id, "receiptHandle": format!("receipt-{id}"), "body": body,
                "attributes": {"ApproximateReceiveCount": "1"}, "eventSource": "aws:sqs"
            })
        })
        .collect();
    serde_json::from_value(json!({"Records": records})).expect("a valid SQS event")
}

#[tokio::test(start_paused = true)]
async fn a_record_that_is_not_a_slipway_message_fails_alone() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    let deploy = p.pending(QueueName::Deploy).remove(0);
    let event = batch(&[
        ("good", deploy),
        ("bad", "hello from a test script".into()),
        ("empty", "{}".into()),
    ]);
    let response = slipway::lambda::handle_batch(&p.app, QueueName::Deploy, event).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["bad", "empty"], "only the bad records are retried");
    assert_eq!(
        p.deployed("staging"),
        [SHA],
        "the good record in the same batch was handled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_record_on_the_wrong_queue_fails_alone() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    let deploy = p.pending(QueueName::Deploy).remove(0);
    let response = slipway::lambda::handle_batch(&p.app, QueueName::Notify, batch(&[("m1", deploy)])).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(p.deployed("staging").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_412_storm_answers_503_and_loses_nothing() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    // Every attempt to record CI's result loses its conditional write.
    for _ in 0..p.app.tuning.max_write_attempts {
        p.store.fail_next("replace", Fault::Conflict);
    }
    let answer = p.ci(SHA, "success").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert_eq!(
        p.stage_status(SHA, "build").await,
        StageStatus::Waiting,
        "nothing half-written"
    );
    // CI retries once the storm has passed.
    assert_eq!(p.ci(SHA, "success").await.status, StatusCode::OK);
    assert_eq!(p.stage_status(SHA, "build").await, StageStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_412_storm_on_a_record_fails_it_for_sqs_to_retry_and_it_deploys_once() {
    let p = Pipeline::start().await;
    p.push(SHA).await;
    p.ci(SHA, "success").await;
    let deploy = p.pending(QueueName::Deploy).remove(0);
    // The handler first writes over the run as it read it (one try), then races as usual
    // (`max_write_attempts` tries): every one of them loses.
    for _ in 0..=p.app.tuning.max_write_attempts {
        p.store.fail_next("replace", Fault::Conflict);
    }
    let first = slipway::lambda::handle_batch(&p.app, QueueName::Deploy, batch(&[("m1", deploy.clone())])).await;
    assert_eq!(
        first.batch_item_failures.len(),
        1,
        "the claim never got written: retry the record"
    );
    assert!(p.deployed("staging").is_empty());
    let again = slipway::lambda::handle_batch(&p.app, QueueName::Deploy, batch(&[("m1", deploy)])).await;
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(p.deployed("staging"), [SHA]);
}

/// Every fixture in events/lambda/ parses with the types the functions use.
#[test]
fn every_lambda_fixture_is_a_valid_event() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/lambda");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        match name.split('.').next().unwrap().split('-').next().unwrap() {
            "push" | "build" | "approval" => {
                lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            "deploy" | "smoke" | "notify" => {
                let event: SqsEvent = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!event.records.is_empty(), "{name}");
            }
            "sweeper" => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["detail-type"], "Scheduled Event", "{name}");
            }
            other => panic!("{name}: no function named {other}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 10);
}

/// The state bucket prefixes each function's role in `infra/template.yaml` grants. New state
/// (environment leases, the index of open runs) once landed without its IAM; moto does not
/// check IAM, so this holds the template to what the code stores.
#[test]
fn every_function_role_grants_the_state_it_uses() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml")).unwrap();
    // A resource runs from its `  Name:` line to the next line indented by exactly two.
    let role = |name: &str| {
        let header = format!("  {name}:");
        let mut lines = template.lines().skip_while(|l| *l != header);
        let first = lines.next().unwrap_or_else(|| panic!("no {name} in the template"));
        let body = lines.take_while(|l| {
            let top = l.len() > 2 && l.starts_with("  ") && !l[2..].starts_with([' ', '#']);
            !top
        });
        std::iter::once(first).chain(body).collect::<Vec<_>>().join("\n")
    };
    let grants = |text: &str, prefix: &str| text.contains(&format!("${{StateBucket.Arn}}/{prefix}*"));
    for prefix in slipway::ports::StoreKey::PREFIXES {
        assert!(grants(&template, prefix), "no function may use {prefix}");
    }
    let needs: [(&str, &[&str]); 7] = [
        (
            "PushWebhookRole",
            &["runs/", "deliveries/", "open-runs/", "lineage/", "views/"],
        ),
        ("BuildResultRole", &["runs/", "deliveries/", "open-runs/", "views/"]),
        (
            "ApprovalRole",
            &[
                "runs/",
                "environments/",
                "open-runs/",
                "deploy-callbacks/",
                "lineage/",
                "views/",
            ],
        ),
        (
            "DeployRole",
            &[
                "runs/",
                "environments/",
                "open-runs/",
                "index/",
                "deploy-callbacks/",
                "lineage/",
                "views/",
            ],
        ),
        (
            "SmokeTestRole",
            &["runs/", "environments/", "open-runs/", "index/", "lineage/", "views/"],
        ),
        ("NotifyRole", &["runs/", "notices/"]),
        (
            "SweeperRole",
            &["runs/", "environments/", "open-runs/", "index/", "lineage/", "views/"],
        ),
    ];
    for (name, prefixes) in needs {
        let text = role(name);
        assert!(text.contains("AWS::IAM::Role"), "{name} is a role:\n{text}");
        for prefix in prefixes {
            assert!(grants(&text, prefix), "{name} does not grant {prefix}");
        }
    }
}

//! A post-deploy bake reading a CloudWatch alarm against a real CloudWatch API (moto): an
//! alarm in `ALARM` is unhealthy and says why, `OK` and `INSUFFICIENT_DATA` are healthy, an
//! unknown alarm is a fault of the source, and a source's endpoint and region override the
//! AWS configuration.
//!
//! aws-sdk-cloudwatch speaks only Smithy RPC v2 CBOR, which moto does not serve (it serves
//! CloudWatch's Query and JSON 1.0 protocols; getmoto/moto#9195). So the SDK talks to a small
//! [`CborBridge`] that re-encodes each call as JSON 1.0 for moto and each answer back as CBOR;
//! moto keeps the alarms and their state, and checks nothing the bridge could hide.

use std::net::SocketAddr;

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;
use slipway::adapters::health::HealthSources;
use slipway::config::HealthSourceConfig;
use slipway::ports::{Health, HealthSource};
use slipway_tests::moto::{self, Moto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALARM: &str = "checkout-5xx";

/// Creates alarm `name` on checkout's 5xx count.
async fn create_alarm(bridge: &CborBridge, name: &str) -> aws_sdk_cloudwatch::Client {
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&bridge.sdk().await);
    cloudwatch
        .put_metric_alarm()
        .alarm_name(name)
        .namespace("shop/checkout")
        .metric_name("5xx")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(5.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put metric alarm {name}: {e:?}"));
    cloudwatch
}

async fn set_state(cloudwatch: &aws_sdk_cloudwatch::Client, name: &str, state: StateValue, reason: &str) {
    cloudwatch
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .unwrap_or_else(|e| panic!("set alarm state of {name}: {e:?}"));
}

fn alarm(name: &str) -> HealthSourceConfig {
    HealthSourceConfig::CloudwatchAlarm {
        alarm: name.into(),
        endpoint_url: None,
        region: None,
    }
}

#[tokio::test]
async fn an_alarm_in_alarm_is_unhealthy_and_says_why() {
    let moto = Moto::start().await;
    let bridge = CborBridge::start(&moto).await;
    let cloudwatch = create_alarm(&bridge, ALARM).await;
    let health = HealthSources::with_sdk(bridge.sdk().await);

    set_state(&cloudwatch, ALARM, StateValue::Alarm, "5xx sum 12 > 5 for 1 datapoint").await;
    assert_eq!(
        health.check(&alarm(ALARM)).await,
        Ok(Health {
            healthy: false,
            detail: "alarm checkout-5xx is ALARM: 5xx sum 12 > 5 for 1 datapoint".into(),
        })
    );
}

#[tokio::test]
async fn ok_and_insufficient_data_are_healthy() {
    let moto = Moto::start().await;
    let bridge = CborBridge::start(&moto).await;
    let cloudwatch = create_alarm(&bridge, ALARM).await;
    let health = HealthSources::with_sdk(bridge.sdk().await);

    set_state(&cloudwatch, ALARM, StateValue::InsufficientData, "no datapoints yet").await;
    assert_eq!(
        health.check(&alarm(ALARM)).await,
        Ok(Health {
            healthy: true,
            detail: "alarm checkout-5xx is INSUFFICIENT_DATA".into(),
        }),
        "no data is not a reason to roll back"
    );

    set_state(&cloudwatch, ALARM, StateValue::Alarm, "5xx sum 12 > 5").await;
    set_state(&cloudwatch, ALARM, StateValue::Ok, "5xx sum 0 <= 5").await;
    assert_eq!(
        health.check(&alarm(ALARM)).await,
        Ok(Health {
            healthy: true,
            detail: "alarm checkout-5xx is OK".into(),
        }),
        "recovered"
    );
}

#[tokio::test]
async fn an_unknown_alarm_is_a_fault_naming_it() {
    let moto = Moto::start().await;
    let bridge = CborBridge::start(&moto).await;
    create_alarm(&bridge, ALARM).await;
    let health = HealthSources::with_sdk(bridge.sdk().await);

    let err = health.check(&alarm("checkout-5xxx")).await.unwrap_err();
    assert_eq!(err, "no CloudWatch alarm named \"checkout-5xxx\" in us-east-1");
}

#[tokio::test]
async fn the_sources_endpoint_and_region_override_the_aws_configuration() {
    let moto = Moto::start().await;
    let bridge = CborBridge::start(&moto).await;
    create_alarm(&bridge, ALARM).await;
    // The configuration points nowhere; the source names moto (through the bridge).
    let nowhere = moto::sdk_for(&format!("http://127.0.0.1:{}", moto::free_port())).await;
    let health = HealthSources::with_sdk(nowhere);
    let endpoint: url::Url = bridge.endpoint.parse().expect("the bridge's endpoint is a URL");
    let source = |region: &str| HealthSourceConfig::CloudwatchAlarm {
        alarm: ALARM.into(),
        endpoint_url: Some(endpoint.clone()),
        region: Some(region.into()),
    };

    let found = health.check(&source("us-east-1")).await;
    assert_eq!(
        found.map(|h| h.healthy),
        Ok(true),
        "the alarm is read from moto's us-east-1"
    );
    let err = health.check(&source("eu-west-1")).await.unwrap_err();
    assert_eq!(
        err, "no CloudWatch alarm named \"checkout-5xx\" in eu-west-1",
        "alarms are per region"
    );
}

/// Serves CloudWatch's RPC v2 CBOR protocol on a loopback port by forwarding each call to
/// moto over JSON 1.0: CBOR maps, arrays, text, numbers and booleans become the same JSON;
/// on the way back, numbers under keys ending in `Timestamp` become CBOR epoch timestamps.
#[derive(Debug)]
struct CborBridge {
    endpoint: String,
}

impl CborBridge {
    async fn start(moto: &Moto) -> CborBridge {
        let upstream: SocketAddr = moto
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .expect("moto listens on a socket address");
        let app = axum::Router::new()
            .route("/service/{service}/operation/{operation}", axum::routing::post(forward))
            .with_state(upstream);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the bridge");
        let addr = listener.local_addr().expect("the bridge's address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("the bridge serves") });
        CborBridge {
            endpoint: format!("http://{addr}"),
        }
    }

    /// An SDK configuration for the bridge, as [`Moto::sdk`] is for moto.
    async fn sdk(&self) -> aws_config::SdkConfig {
        moto::sdk_for(&self.endpoint).await
    }
}

/// One CBOR call, made to moto as JSON 1.0 (signature and all; moto reads the region from it).
async fn forward(
    State(upstream): State<SocketAddr>,
    Path((_service, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let json = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        let mut at = 0;
        decode(&body, &mut at)
    };
    let json = json.to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {upstream}\r\nX-Amz-Target: GraniteServiceVersion20100801.{operation}\r\n\
         Content-Type: application/x-amz-json-1.0\r\nAuthorization: {authorization}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    );
    let mut stream = tokio::net::TcpStream::connect(upstream).await.expect("connect to moto");
    stream.write_all(request.as_bytes()).await.expect("write to moto");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read from moto");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("moto answers with headers");
    let head = String::from_utf8_lossy(&answer[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("moto answers with a status");
    let body = &answer[split + 4..];
    let json: Value = if body.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("moto answered non-JSON ({e}): {head}"))
    };
    let mut cbor = Vec::new();
    encode(&json, "", &mut cbor);
    (
        StatusCode::from_u16(status).expect("moto's status is valid"),
        [("content-type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")],
        cbor,
    )
}

/// Decodes the CBOR item at `*at` (what the SDK sends: maps, arrays, text, numbers, booleans,
/// null and tagged timestamps).
fn decode(bytes: &[u8], at: &mut usize) -> Value {
    let initial = bytes[*at];
    *at += 1;
    let (major, info) = (initial >> 5, initial & 0x1f);
    let mut take = |n: usize| {
        let slice = &bytes[*at..*at + n];
        *at += n;
        slice
    };
    if major == 7 {
        return match info {
            20 => Value::Bool(false),
            21 => Value::Bool(true),
            22 | 23 => Value::Null,
            26 => Value::from(f64::from(f32::from_be_bytes(take(4).try_into().expect("4 bytes")))),
            27 => Value::from(f64::from_be_bytes(take(8).try_into().expect("8 bytes"))),
            other => panic!("CBOR simple value {other} is not supported by the bridge"),
        };
    }
    let argument = match info {
        0..=23 => Some(u64::from(info)),
        24 => Some(u64::from(take(1)[0])),
        25 => Some(u64::from(u16::from_be_bytes(take(2).try_into().expect("2 bytes")))),
        26 => Some(u64::from(u32::from_be_bytes(take(4).try_into().expect("4 bytes")))),
        27 => Some(u64::from_be_bytes(take(8).try_into().expect("8 bytes"))),
        31 => None,
        other => panic!("CBOR additional information {other} is not valid"),
    };
    let at_break = |at: &mut usize| {
        let end = bytes[*at] == 0xff;
        if end {
            *at += 1;
        }
        end
    };
    match (major, argument) {
        (0, Some(n)) => Value::from(n),
        (1, Some(n)) => Value::from(-1 - i64::try_from(n).expect("a small negative integer")),
        (3, Some(len)) => {
            let len = usize::try_from(len).expect("a short text");
            let text = std::str::from_utf8(&bytes[*at..*at + len]).expect("UTF-8 text");
            *at += len;
            Value::from(text)
        }
        (3, None) => {
            let mut text = String::new();
            while !at_break(at) {
                text.push_str(decode(bytes, at).as_str().expect("text chunks"));
            }
            Value::from(text)
        }
        (4, len) => {
            let mut items = Vec::new();
            while len.map_or_else(
                || !at_break(at),
                |len| items.len() < usize::try_from(len).expect("a short array"),
            ) {
                items.push(decode(bytes, at));
            }
            Value::Array(items)
        }
        (5, len) => {
            let mut map = serde_json::Map::new();
            while len.map_or_else(
                || !at_break(at),
                |len| map.len() < usize::try_from(len).expect("a short map"),
            ) {
                let key = decode(bytes, at).as_str().expect("text keys").to_owned();
                map.insert(key, decode(bytes, at));
            }
            Value::Object(map)
        }
        (6, Some(_tag)) => decode(bytes, at),
        (major, argument) => panic!("CBOR major type {major} ({argument:?}) is not supported by the bridge"),
    }
}

/// Encodes `value` (found under `key`) as CBOR.
fn encode(value: &Value, key: &str, out: &mut Vec<u8>) {
    fn head(major: u8, n: u64, out: &mut Vec<u8>) {
        let major = major << 5;
        match n {
            0..=23 => out.push(major | n as u8),
            24..=0xff => out.extend([major | 24, n as u8]),
            0x100..=0xffff => {
                out.push(major | 25);
                out.extend((n as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                out.push(major | 26);
                out.extend((n as u32).to_be_bytes());
            }
            _ => {
                out.push(major | 27);
                out.extend(n.to_be_bytes());
            }
        }
    }
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Number(n) => {
            if key.ends_with("Timestamp") {
                out.push(0xc1); // tag 1: seconds since the epoch
            }
            if let Some(u) = n.as_u64() {
                head(0, u, out);
            } else if let Some(i) = n.as_i64() {
                head(1, (-1 - i) as u64, out);
            } else {
                out.push(0xfb);
                out.extend(n.as_f64().expect("a float").to_be_bytes());
            }
        }
        Value::String(s) => {
            head(3, s.len() as u64, out);
            out.extend(s.as_bytes());
        }
        Value::Array(items) => {
            head(4, items.len() as u64, out);
            for item in items {
                encode(item, key, out);
            }
        }
        Value::Object(map) => {
            head(5, map.len() as u64, out);
            for (k, v) in map {
                encode(&Value::from(k.as_str()), "", out);
                encode(v, k, out);
            }
        }
    }
}

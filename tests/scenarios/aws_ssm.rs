//! Secrets in SSM Parameter Store against a real SSM API (moto): decrypted SecureStrings,
//! missing parameters named, rotation picked up after the cache TTL, an unreachable store
//! reported as unavailable — quickly.

use std::time::{Duration, Instant};

use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::timeout::TimeoutConfig;
use secrecy::ExposeSecret;
use slipway::adapters::aws::ssm::SsmSecrets;
use slipway::domain::ParamName;
use slipway::ports::{SecretError, SecretStore};
use slipway_tests::moto::{self, Moto};

fn name(raw: &str) -> ParamName {
    ParamName::parse(raw).expect("a valid parameter name")
}

#[tokio::test]
async fn a_secure_string_is_read_decrypted() {
    let moto = Moto::start().await;
    moto.put_secret("/slipway/shop/ci-secret", "ci-s3cr3t").await;
    let secrets = SsmSecrets::new(moto.ssm().await);
    let value = secrets.get(&name("/slipway/shop/ci-secret")).await.unwrap();
    assert_eq!(value.expose_secret(), "ci-s3cr3t");
    assert!(!format!("{value:?}").contains("ci-s3cr3t"), "never printed");
}

#[tokio::test]
async fn a_missing_parameter_is_not_found_by_name() {
    let moto = Moto::start().await;
    let secrets = SsmSecrets::new(moto.ssm().await);
    let err = secrets.get(&name("/slipway/nope")).await.unwrap_err();
    assert!(
        matches!(&err, SecretError::NotFound(n) if n.as_str() == "/slipway/nope"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_rotated_value_is_seen_once_the_ttl_has_passed() {
    const TTL: Duration = Duration::from_millis(300);
    let moto = Moto::start().await;
    moto.put_secret("/slipway/approvals/signing-key", "one").await;
    let secrets = SsmSecrets::new(moto.ssm().await).cached(TTL);
    let key = name("/slipway/approvals/signing-key");

    let read_at = Instant::now();
    assert_eq!(secrets.get(&key).await.unwrap().expose_secret(), "one");
    moto.put_secret("/slipway/approvals/signing-key", "two").await;
    let cached = secrets.get(&key).await.unwrap();
    if read_at.elapsed() < TTL {
        assert_eq!(cached.expose_secret(), "one", "within the TTL the cached value is used");
    } // else: this machine is too slow to tell; the next check still holds.

    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    assert_eq!(
        secrets.get(&key).await.unwrap().expose_secret(),
        "two",
        "rotation picked up"
    );
}

#[tokio::test]
async fn an_unreachable_parameter_store_is_unavailable_quickly() {
    let closed = format!("http://127.0.0.1:{}", moto::free_port());
    let sdk = moto::sdk_for(&closed).await;
    let config = aws_sdk_ssm::config::Builder::from(&sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(500))
                .operation_timeout(Duration::from_secs(2))
                .build(),
        )
        .build();
    let secrets = SsmSecrets::new(aws_sdk_ssm::Client::from_conf(config));

    let started = Instant::now();
    let err = secrets.get(&name("/slipway/github/webhook-secret")).await.unwrap_err();
    assert!(
        matches!(&err, SecretError::Unavailable(n, _) if n.as_str() == "/slipway/github/webhook-secret"),
        "{err:?}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the SDK error is kept as the source"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

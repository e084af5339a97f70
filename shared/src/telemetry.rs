//! Logging set-up. `RUST_LOG` filters (default `info`); `SLIPWAY_LOG_FORMAT=json` writes
//! one JSON object per line. Secrets never reach a log: they exist only as `SecretString`,
//! which prints as `[REDACTED]`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Logs to standard error, human-readable or JSON (`SLIPWAY_LOG_FORMAT=json`).
pub fn init() {
    let json = std::env::var("SLIPWAY_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Logs through the test harness's capture, for `TEST_LOG=1`.
pub fn init_for_tests() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("debug"))
        .with_test_writer()
        .try_init();
}

/// Logs for a Lambda function: JSON objects on standard output, which CloudWatch Logs
/// keeps as structured records; no colours, no local timestamps (Lambda adds its own).
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .json()
        .with_current_span(true)
        .with_ansi(false)
        .without_time()
        .try_init();
}

//! `slipway rollback`: what it refuses, and with which exit code. The rule itself (the CLI
//! and rollback links go to the same release; twice in a row is a no-op) is exercised on
//! the library in `tests/scenarios/rollback_link.rs`.

use tempfile::TempDir;

use crate::common::{HELLO_SECRETS, Out, command, finish, minimal_config, write_file};

/// `slipway rollback <args>` in a directory with a configuration and an empty database.
async fn rollback(args: &[&str]) -> Out {
    let dir = TempDir::new().unwrap();
    write_file(&dir.path().join("slipway.toml"), &minimal_config(), 0o644);
    write_file(&dir.path().join("slipway.secrets.toml"), HELLO_SECRETS, 0o600);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    slipway::adapters::local::sqlite::SqliteBackend::open(&dir.path().join("data/slipway.db")).unwrap();
    let mut cmd = command();
    cmd.current_dir(dir.path())
        .args(["rollback", "--data-dir", "data"])
        .args(args);
    finish(cmd).await
}

#[tokio::test]
async fn rollback_with_nothing_released_is_refused_with_exit_5() {
    let out = rollback(&["--env", "staging", "--json"]).await.failure();
    assert_eq!(out.status.code(), Some(5), "{out}");
    out.stderr_has(&["nothing was ever released to staging in hello"]);
    assert!(out.stdout.is_empty(), "no document for a refusal: {out}");
}

#[tokio::test]
async fn rollback_of_an_unknown_environment_or_pipeline_exits_4() {
    let out = rollback(&["--env", "production"]).await.failure();
    assert_eq!(out.status.code(), Some(4), "{out}");
    out.stderr_has(&["pipeline hello has no environment production"]);
    let out = rollback(&["--env", "staging", "--pipeline", "shop"]).await.failure();
    assert_eq!(out.status.code(), Some(4), "{out}");
    out.stderr_has(&["no pipeline shop is configured"]);
}

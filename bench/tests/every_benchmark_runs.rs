//! Every benchmark of `scripts/bench` runs to its figure, at a size small enough for a debug
//! build: a benchmark that no longer runs (an API that now asks for a token, a changed
//! configuration) fails here, in CI, instead of when someone next measures. The figures
//! themselves are not checked — a debug build on a shared machine says nothing of speed.
//!
//! All but `control-room`: its history must be tidied by the server's own sweep, which runs
//! every 30 s, so it waits over two minutes whatever its size. It reads the same pages as the
//! browser tests of the control room, and `scripts/bench` runs it.

use std::path::PathBuf;
use std::process::Command;

/// `target/debug` (or the profile's directory), where this test's own build put the binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<this test>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf()
}

/// Builds what the benchmarks start (`slipway`, the `deploy` function) in this test's own
/// profile; `cargo test` does not build other packages' binaries.
fn build_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--locked", "-p", "slipway-cli", "-p", "deploy"])
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building slipway and the deploy function failed: {status}"
    );
}

fn bench(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway-bench"))
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--json")
        .args(args)
        .output()
        .expect("slipway-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "slipway-bench {args:?} failed:\n{stderr}\n{stdout}"
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("slipway-bench {args:?} printed no JSON result ({e}):\n{stdout}\n{stderr}"));
    for field in ["name", "figure", "baseline", "ratio", "target", "met"] {
        assert!(line.get(field).is_some(), "{args:?}: no {field} in {line}");
    }
}

#[test]
fn every_benchmark_runs_at_a_small_size() {
    build_binaries();
    bench(&["webhook", "--requests", "200", "--concurrency", "20"]);
    bench(&["engine", "--runs", "40", "--concurrency", "4", "--spawns", "20"]);
    bench(&["coldstart", "--starts", "1"]);
    bench(&["requests"]);
    bench(&["pages", "--runs", "120"]);
    bench(&["pages-embedded", "--runs", "120", "--reads", "3"]);
    bench(&["metrics", "--runs", "120", "--reads", "3"]);
}

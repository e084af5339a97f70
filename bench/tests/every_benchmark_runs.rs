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
///
/// Built so that every dependency comes from the `cargo test --workspace` this runs under,
/// leaving only the functions' binaries to build:
/// - as that build resolves features: the whole workspace, its tests included (selecting only
///   the two packages resolves other features, and a hundred crates compile again);
/// - without the variables cargo sets for this test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …):
///   build scripts that watch one (ring's) would run again, and then again in the next
///   `cargo` run outside this test, each time compiling everything that depends on them.
fn build_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--locked", "--workspace", "--bins", "--tests"]);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref());
        if set_for_tests {
            command.env_remove(name.as_ref());
        }
    }
    let status = command.status().expect("cargo runs");
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
    bench(&["webhook", "--requests", "200", "--concurrency", "20", "--loads", "2"]);
    bench(&["engine", "--runs", "40", "--concurrency", "4", "--spawns", "20"]);
    bench(&["coldstart", "--starts", "1"]);
    bench(&["requests"]);
    bench(&["pages", "--runs", "120"]);
    bench(&["pages-embedded", "--runs", "120", "--reads", "3"]);
    bench(&["metrics", "--runs", "120", "--reads", "3"]);
}

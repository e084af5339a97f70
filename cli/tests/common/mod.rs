//! Helpers for driving the real `slipway` binary: run a command with a bounded wait, start
//! `slipway serve` in a scratch directory and talk to it, poll until something is true.
//!
//! Every child is spawned with `kill_on_drop`, so a failing test leaves no process behind.
//! Set `TEST_LOG=1` to see a server's log when a test fails (it is always in the panic text
//! of a failed start, and in `Serve::log`).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

/// How long one `slipway` command (not `serve`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a background step (a deploy, a smoke check, start-up) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A file under the workspace's `events/` directory.
pub fn event(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("events")
        .join(name)
}

/// The binary under test, with no inherited slipway settings and no colour in its logs.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.env_remove("SLIPWAY_DATA_DIR")
        .env_remove("SLIPWAY_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics, showing both streams, unless the command exited 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(self.status.success(), "expected success, got {}\n{self}", self.status);
        self
    }

    /// Panics, showing both streams, if the command exited 0.
    #[track_caller]
    pub fn failure(self) -> Self {
        assert!(
            !self.status.success(),
            "expected a failure, got {}\n{self}",
            self.status
        );
        self
    }

    /// Panics unless standard output contains every one of `needles`.
    #[track_caller]
    pub fn stdout_has(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            assert!(self.stdout.contains(needle), "expected {needle:?} on stdout\n{self}");
        }
        self
    }

    /// Panics unless standard error contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            assert!(self.stderr.contains(needle), "expected {needle:?} on stderr\n{self}");
        }
        self
    }

    /// The line of standard output that contains `needle`.
    #[track_caller]
    pub fn line_with(&self, needle: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} on stdout\n{self}"))
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to the end, or kills it after [`COMMAND_TIMEOUT`].
pub async fn finish(mut cmd: Command) -> Out {
    let what = format!("{cmd:?}");
    let output = tokio::time::timeout(COMMAND_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    Out {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `slipway <args>`, run to the end.
pub async fn slipway<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = command();
    cmd.args(args);
    finish(cmd).await
}

/// Polls `probe` every 100 ms until it answers `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running `slipway serve`. Dropping it kills the process.
/// The API token every test configuration sets (`[dashboard] api_token`), so the tests read
/// `/api/runs` as a script would.
pub const API_TOKEN: &str = "cli-test-api-token";

#[derive(Debug)]
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:<port>`, where it listens.
    pub base: String,
    /// Its standard error: JSON log lines.
    pub log: PathBuf,
    client: reqwest::Client,
}

impl Serve {
    /// Starts `slipway serve <args> --listen 127.0.0.1:0`, logging JSON to `log`, and waits
    /// until it says where it listens and answers `/healthz`.
    pub async fn start(args: &[&OsStr], log: PathBuf) -> Serve {
        Self::start_with_env(args, log, &[]).await
    }

    /// Like [`Serve::start`], with extra environment variables (an emulator's, say).
    pub async fn start_with_env(args: &[&OsStr], log: PathBuf, env: &[(&str, &str)]) -> Serve {
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = command();
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("SLIPWAY_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().unwrap();
        let mut serve = Serve {
            child,
            base: String::new(),
            log,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .default_headers(
                    [(
                        reqwest::header::AUTHORIZATION,
                        reqwest::header::HeaderValue::from_str(&format!("Bearer {API_TOKEN}")).unwrap(),
                    )]
                    .into_iter()
                    .collect(),
                )
                .build()
                .unwrap(),
        };
        let listen = eventually("slipway serve to log where it listens", STEP_TIMEOUT, || {
            let exited = serve.child.try_wait().unwrap();
            let log = serve.log_text();
            async move {
                if let Some(status) = exited {
                    panic!("slipway serve exited early with {status}:\n{log}");
                }
                log.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|l| l["fields"]["message"] == "slipway is serving")
                    .and_then(|l| l["fields"]["listen"].as_str().map(str::to_owned))
            }
        })
        .await;
        serve.base = format!("http://{listen}");
        eventually("/healthz to answer 200", STEP_TIMEOUT, || async {
            let answer = serve.client.get(serve.url("/healthz")).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        serve
    }

    /// What the server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /api/runs/{id}`, or `None` while there is no such run.
    pub async fn run(&self, id: &str) -> Option<Value> {
        let answer = self
            .client
            .get(self.url(&format!("/api/runs/{id}")))
            .send()
            .await
            .unwrap();
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(
            answer.status().is_success(),
            "GET /api/runs/{id} answered {}",
            answer.status()
        );
        Some(answer.json().await.unwrap())
    }

    /// `GET /api/runs`: the summaries.
    pub async fn runs(&self) -> Vec<Value> {
        let answer = self.client.get(self.url("/api/runs")).send().await.unwrap();
        assert!(
            answer.status().is_success(),
            "GET /api/runs answered {}",
            answer.status()
        );
        let body: Value = answer.json().await.unwrap();
        body["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until run `id` has `status`, and returns it. Panics early if the run ends
    /// another way, showing the run and the server's log.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        eventually(&format!("run {id} to be {status}"), STEP_TIMEOUT, || async {
            let run = self.run(id).await?;
            let now = run["status"].as_str().unwrap_or_default().to_owned();
            if now == status {
                return Some(run);
            }
            let finished = [
                "released",
                "failed",
                "rejected",
                "approval_expired",
                "superseded",
                "cancelled",
            ];
            if finished.contains(&now.as_str()) {
                panic!(
                    "run {id} ended {now}, not {status}:\n{run:#}\n--- log ---\n{}",
                    self.log_text()
                );
            }
            None
        })
        .await
    }

    /// POSTs the approval form `decision=…` to `link`; returns the status code.
    pub async fn decide(&self, link: &str, decision: &str) -> reqwest::StatusCode {
        self.client
            .post(link)
            .form(&[("decision", decision)])
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `GET link`: the confirmation page's status code.
    pub async fn open(&self, link: &str) -> reqwest::StatusCode {
        self.client.get(link).send().await.unwrap().status()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("serve is still running").to_string();
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(kill.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "slipway serve ignored SIGTERM for {STEP_TIMEOUT:?}:\n{}",
                    self.log_text()
                )
            })
            .unwrap()
    }
}

/// Writes `text` to `path` with the given unix mode.
pub fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
}

/// A TOML string literal.
pub fn toml_str(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_owned()).to_string()
}

/// A valid configuration for one pipeline, `hello` (Codertocat/Hello-World, master, delivery,
/// approver alice), whose staging deploys with `staging_deploy` (a TOML inline table). The
/// secrets it names are [`HELLO_SECRETS`].
pub fn hello_config(staging_deploy: &str) -> String {
    format!(
        r#"
[approvals]
signing_key = "/slipway/approvals/signing-key"

[[pipelines]]
name = "hello"
repo = "Codertocat/Hello-World"
branch = "master"
mode = "delivery"
ci_secret = "/slipway/hello/ci-secret"

[[pipelines.approvers]]
id = "alice"
address = "alice@example.com"

[[pipelines.environments]]
name = "staging"
deploy = {staging_deploy}
"#
    )
}

/// [`hello_config`] with a staging that deploys with `true`.
pub fn minimal_config() -> String {
    hello_config(r#"{ type = "command", command = ["true"] }"#)
}

/// The secrets [`hello_config`] names.
pub const HELLO_SECRETS: &str = "\"/slipway/approvals/signing-key\" = \"k\"\n\"/slipway/hello/ci-secret\" = \"c\"\n";

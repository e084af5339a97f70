//! `coldstart`: how long a Lambda function binary (`deploy`, built in release) takes from
//! being spawned to asking the Runtime API for its first invocation, and how much memory it
//! holds then — next to a Python 3 + boto3 function doing the same start-up work (S3, SQS and
//! SSM clients, the configuration read from the state bucket) against the same fake Runtime
//! API and the same moto. Medians of several starts each.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use serde_json::json;
use slipway::cloud::{self, Names};
use slipway_tests::moto::Moto;
use tokio::sync::oneshot;

use crate::Bins;
use crate::report::{Outcome, median, ratio};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many cold starts of each.
    #[arg(long, default_value_t = 10)]
    pub starts: usize,
}

impl Default for Args {
    fn default() -> Self {
        Self { starts: 10 }
    }
}

const TARGET_TIME_RATIO: f64 = 0.05;
const TARGET_RSS_RATIO: f64 = 0.3;

/// The Python function's start-up: the three clients, the configuration object read and
/// parsed, then the first `next` invocation long-poll.
const PYTHON_FUNCTION: &str = r#"
import os, tomllib, urllib.request
import boto3
from botocore.config import Config
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
sqs = boto3.client("sqs")
ssm = boto3.client("ssm")
config = s3.get_object(Bucket=os.environ["SLIPWAY_STATE_BUCKET"], Key=os.environ["SLIPWAY_CONFIG_KEY"])["Body"].read()
tomllib.loads(config.decode())
urllib.request.urlopen("http://%s/2018-06-01/runtime/invocation/next" % os.environ["AWS_LAMBDA_RUNTIME_API"])
"#;

/// What the fake Runtime API saw when a function first asked for work.
#[derive(Debug)]
struct Ready {
    at: Instant,
    rss_kib: u64,
}

/// The process being started, and where to report its first `next`.
type Waiting = Arc<Mutex<Option<(u32, oneshot::Sender<anyhow::Result<Ready>>)>>>;

pub async fn run(args: &Args, bins: &Bins) -> anyhow::Result<Outcome> {
    let function = bins.get("deploy")?;
    let moto = Moto::start().await;
    let settings = cloud::bootstrap(
        &moto.sdk().await,
        &Names { stack: "bench".into() },
        slipway_tests::CONFIG,
        &slipway_tests::aws_run::secrets(),
    )
    .await?;

    let waiting: Waiting = Arc::new(Mutex::new(None));
    let api = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", axum::routing::get(next))
        .with_state(waiting.clone());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let runtime_api = listener.local_addr()?.to_string();
    let serving = tokio::spawn(async move { axum::serve(listener, api).await });

    let mut env: HashMap<&str, String> = HashMap::from([
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench-deploy".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench-deploy".into()),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "bench".into()),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_REGION", slipway_tests::moto::REGION.into()),
        ("AWS_DEFAULT_REGION", slipway_tests::moto::REGION.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("SLIPWAY_STATE_BUCKET", settings.bucket.clone()),
        ("SLIPWAY_CONFIG_KEY", settings.config_key.clone()),
        ("SLIPWAY_PARAMETER_PREFIX", settings.parameter_prefix.to_string()),
        ("SLIPWAY_DEPLOY_QUEUE_URL", settings.queues.deploy.clone()),
        ("SLIPWAY_SMOKE_QUEUE_URL", settings.queues.smoke.clone()),
        ("SLIPWAY_NOTIFY_QUEUE_URL", settings.queues.notify.clone()),
        ("SLIPWAY_DEPLOY_DLQ_URL", settings.queues.deploy_dlq.clone()),
        ("SLIPWAY_SMOKE_DLQ_URL", settings.queues.smoke_dlq.clone()),
        ("SLIPWAY_NOTIFY_DLQ_URL", settings.queues.notify_dlq.clone()),
    ]);
    // Neither process may find a developer's own AWS configuration.
    let scratch = tempfile::tempdir()?;
    env.insert("HOME", scratch.path().display().to_string());

    let (mut rust_ms, mut rust_rss, mut python_ms, mut python_rss) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.starts {
        // Alternated, so a slow moment of the machine falls on both.
        let (ms, rss) = start_once(&function, &[], &env, &waiting)
            .await
            .context("the deploy function")?;
        rust_ms.push(ms);
        rust_rss.push(rss);
        let python = Path::new("python3");
        let (ms, rss) = start_once(python, &["-c", PYTHON_FUNCTION], &env, &waiting)
            .await
            .context("the Python function")?;
        python_ms.push(ms);
        python_rss.push(rss);
    }
    serving.abort();

    let (rust_ms, python_ms) = (median(&mut rust_ms), median(&mut python_ms));
    let (rust_mib, python_mib) = (median(&mut rust_rss) / 1024.0, median(&mut python_rss) / 1024.0);
    let (time_ratio, rss_ratio) = (ratio(rust_ms, python_ms), ratio(rust_mib, python_mib));
    Ok(Outcome {
        name: "coldstart",
        figure: format!("deploy function ready in {rust_ms:.1} ms, RSS {rust_mib:.1} MiB"),
        baseline: format!("python3 + boto3 {python_ms:.1} ms, RSS {python_mib:.1} MiB"),
        ratio: format!("time {time_ratio:.2}x, RSS {rss_ratio:.2}x"),
        target: format!("time <= {TARGET_TIME_RATIO}x, RSS <= {TARGET_RSS_RATIO}x"),
        met: time_ratio <= TARGET_TIME_RATIO && rss_ratio <= TARGET_RSS_RATIO,
        values: json!({
            "starts": args.starts,
            "rust_ms": rust_ms, "rust_rss_mib": rust_mib,
            "python_ms": python_ms, "python_rss_mib": python_mib,
            "time_ratio": time_ratio, "rss_ratio": rss_ratio,
        }),
    })
}

/// Spawns `program` and waits for its first `next`: the time from spawn, and its RSS then.
async fn start_once(
    program: &Path,
    args: &[&str],
    env: &HashMap<&str, String>,
    waiting: &Waiting,
) -> anyhow::Result<(f64, f64)> {
    let (tell, ready) = oneshot::channel();
    let log = tempfile::NamedTempFile::new()?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen()?)
        .kill_on_drop(true);
    // The slot is filled before the spawn, so a fast first `next` always finds it.
    let (mut child, spawned) = {
        let mut slot = waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        *slot = Some((child.id().context("the process has no id")?, tell));
        (child, spawned)
    };
    let answer = tokio::select! {
        ready = ready => ready.context("the fake Runtime API stopped")?,
        exited = child.wait() => Err(anyhow::anyhow!(
            "{} exited ({}) before asking for work:\n{}",
            program.display(),
            exited?,
            std::fs::read_to_string(log.path()).unwrap_or_default()
        )),
        () = tokio::time::sleep(Duration::from_secs(30)) => Err(anyhow::anyhow!("{} never asked for work", program.display())),
    };
    let _ = child.kill().await;
    let ready = answer?;
    Ok(((ready.at - spawned).as_secs_f64() * 1000.0, ready.rss_kib as f64))
}

/// `GET /2018-06-01/runtime/invocation/next`: notes the moment and the caller's RSS, then
/// never hands out work (the benchmark kills the process).
async fn next(State(waiting): State<Waiting>) -> axum::http::StatusCode {
    let at = Instant::now();
    let taken = waiting.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some((pid, tell)) = taken {
        let rss = rss_kib(pid).map(|rss_kib| Ready { at, rss_kib });
        let _ = tell.send(rss);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    axum::http::StatusCode::SERVICE_UNAVAILABLE
}

/// A process's resident set size (VmRSS), in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

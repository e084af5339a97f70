//! A moto server (a local AWS emulator) for the AWS adapters' tests: one process per test, on
//! a free loopback port, killed when the [`Moto`] is dropped.
//!
//! ```ignore
//! let moto = Moto::start().await;
//! let sdk = moto.sdk().await;
//! moto.create_bucket("slipway-state").await;
//! let store = S3Store::new(slipway::adapters::aws::s3_client(&sdk), "slipway-state");
//! ```
//!
//! The server is `moto_server` if it is on the `PATH`, else `python3 -m moto.server`; set
//! `MOTO_SERVER` to another command (arguments separated by spaces) to override both. A
//! missing moto fails the test loudly: these tests never skip.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_ssm::types::ParameterType;
use slipway::adapters::aws::QueueUrls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a test run says when moto is missing.
pub const NOT_INSTALLED: &str =
    "moto is not installed: run python3 -m pip install 'moto[server]' (scripts/test installs it for you)";

/// The region every client uses.
pub const REGION: &str = "us-east-1";

/// moto's own server, without threads: `python3 -c SERIAL_LAUNCHER -H <host> -p <port>`.
const SERIAL_LAUNCHER: &str = "import sys
from werkzeug.serving import run_simple
from moto.server import DomainDispatcherApplication, create_backend_app
host = sys.argv[sys.argv.index('-H') + 1]
port = int(sys.argv[sys.argv.index('-p') + 1])
run_simple(host, port, DomainDispatcherApplication(create_backend_app), threaded=False, use_reloader=False)
";

/// How long moto may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(20);

/// A running moto server. Dropping it kills the process.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Moto {
    /// Starts moto on a free loopback port and waits (at most 20 s) until it answers HTTP.
    ///
    /// # Panics
    ///
    /// If moto is not installed (with [`NOT_INSTALLED`]), or does not start in time.
    pub async fn start() -> Moto {
        Self::launch(server_command()).await
    }

    /// Starts moto serving one request at a time.
    ///
    /// moto's threaded server checks `If-Match` / `If-None-Match` and then stores the object
    /// with no lock between, so two racing conditional PUTs can both succeed — which real S3
    /// never allows. Tests of concurrent conditional writes run against this server, where
    /// the check and the write are atomic as they are on S3; the clients still race. Not for
    /// SQS long polls, which would hold every other request up.
    pub async fn start_serialized() -> Moto {
        Self::launch(("python3".to_owned(), vec!["-c".to_owned(), SERIAL_LAUNCHER.to_owned()])).await
    }

    async fn launch((program, mut args): (String, Vec<String>)) -> Moto {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("slipway-moto-{}-{port}.log", std::process::id()));
        args.extend([
            "-H".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ]);
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let stderr = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share {}: {e}", log.display()));
        let spawned = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_file(&log);
                if e.kind() == std::io::ErrorKind::NotFound {
                    panic!("{NOT_INSTALLED} ({program} not found)");
                }
                panic!("cannot start {program} {}: {e}", args.join(" "));
            }
        };
        let mut moto = Moto { child, port, log };
        moto.wait_until_ready(&program).await;
        moto
    }

    /// Polls the port until moto answers an HTTP request; panics if it exits or is too slow.
    async fn wait_until_ready(&mut self, program: &str) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let missing =
                    status.code() == Some(127) || log.contains("No module named") || log.contains("command not found");
                if missing {
                    panic!("{NOT_INSTALLED}\n{program} exited with {status}:\n{log}");
                }
                panic!("moto ({program}) exited with {status} before answering:\n{log}");
            }
            if answers_http(self.port).await {
                return;
            }
            if started.elapsed() > STARTUP {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "moto ({program}) did not answer on port {} within {STARTUP:?}:\n{log}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where moto listens: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK configuration for this server: region `us-east-1`, static `testing` credentials.
    /// The process environment is neither read for these nor changed.
    pub async fn sdk(&self) -> SdkConfig {
        sdk_for(&self.endpoint()).await
    }

    /// An S3 client for this server (path-style, as slipway builds it).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        slipway::adapters::aws::s3_client(&self.sdk().await)
    }

    /// An SQS client for this server.
    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk().await)
    }

    /// An SSM client for this server.
    pub async fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk().await)
    }

    /// Creates bucket `name`, with versioning enabled (as slipway's state bucket is).
    pub async fn create_bucket(&self, name: &str) {
        let s3 = self.s3().await;
        s3.create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
        s3.put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("enable versioning on {name}: {e:?}"));
    }

    /// Creates the three work queues, each with a dead-letter queue that SQS's redrive policy
    /// fills after `max_receive_count` deliveries, and returns their URLs.
    pub async fn create_queues(&self, max_receive_count: u32) -> QueueUrls {
        let sqs = self.sqs().await;
        let mut urls = Vec::new();
        for name in ["deploy", "smoke", "notify"] {
            let dlq = create_queue(&sqs, &format!("slipway-{name}-dlq"), None).await;
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&dlq)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .unwrap_or_else(|e| panic!("read the ARN of {dlq}: {e:?}"))
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .unwrap_or_else(|| panic!("{dlq} has no ARN"));
            let policy =
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive_count.to_string()});
            let queue = create_queue(&sqs, &format!("slipway-{name}"), Some(policy.to_string())).await;
            urls.push((queue, dlq));
        }
        let mut urls = urls.into_iter();
        let mut next = || urls.next().unwrap_or_else(|| unreachable!("three queues were created"));
        let (deploy, deploy_dlq) = next();
        let (smoke, smoke_dlq) = next();
        let (notify, notify_dlq) = next();
        QueueUrls {
            deploy,
            smoke,
            notify,
            deploy_dlq,
            smoke_dlq,
            notify_dlq,
        }
    }

    /// Stores `value` as SecureString parameter `name`, overwriting any earlier value.
    pub async fn put_secret(&self, name: &str, value: &str) {
        self.ssm()
            .await
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("put parameter {name}: {e:?}"));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An SDK configuration for an endpoint: region `us-east-1`, static `testing` credentials,
/// without touching the process environment.
pub async fn sdk_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// A loopback port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// The command that runs moto: `$MOTO_SERVER`, else `moto_server` on the `PATH`, else
/// `python3 -m moto.server`.
fn server_command() -> (String, Vec<String>) {
    if let Some(custom) = std::env::var("MOTO_SERVER").ok().filter(|c| !c.trim().is_empty()) {
        let mut words = custom.split_whitespace().map(str::to_owned);
        let program = words.next().unwrap_or_default();
        return (program, words.collect());
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("moto_server").is_file()));
    if on_path {
        ("moto_server".to_owned(), Vec::new())
    } else {
        ("python3".to_owned(), vec!["-m".to_owned(), "moto.server".to_owned()])
    }
}

/// Whether something on `port` answers an HTTP request.
async fn answers_http(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        stream
            .write_all(b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0_u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str, redrive: Option<String>) -> String {
    let mut request = sqs.create_queue().queue_name(name);
    if let Some(policy) = redrive {
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url()
        .unwrap_or_else(|| panic!("no URL for queue {name}"))
        .to_owned()
}

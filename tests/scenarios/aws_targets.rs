//! The s3 and lambda deploy targets against a real AWS API (moto): a release is promoted,
//! the backup names what ran before it, and a restore puts that back.

use std::net::Ipv4Addr;

use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use jiff::SignedDuration;
use serde_json::Value;
use sha2::{Digest, Sha256};
use slipway::adapters::aws::lambda_target::LambdaTarget;
use slipway::adapters::aws::s3_target::S3Target;
use slipway::config::DeployTargetConfig;
use slipway::domain::{CommitSha, PipelineName, RunId};
use slipway::ports::{DeployError, DeployPurpose, DeployReport, DeployRequest, DeployTarget, Phase};
use slipway_tests::moto::Moto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where CI leaves its builds.
const CI: &str = "shop-ci";
/// The bucket the site is served from.
const SITE: &str = "shop-site";

const SHA1: &str = "1111111111111111111111111111111111111111";
const SHA2: &str = "2222222222222222222222222222222222222222";

fn run(sha: &str) -> RunId {
    RunId::new(
        &PipelineName::parse("shop").expect("a pipeline name"),
        &CommitSha::parse(sha).expect("a commit SHA"),
    )
}

/// One deploy phase of `sha`, as the engine asks for it.
async fn phase(
    target: &dyn DeployTarget,
    config: &DeployTargetConfig,
    phase: Phase,
    sha: &str,
    artifact: Option<&str>,
    backup: Option<&str>,
) -> Result<DeployReport, DeployError> {
    let run = run(sha);
    target
        .deploy(DeployRequest {
            phase,
            run: &run,
            // A restore comes from the run's rollback; every other phase here from its deploy.
            purpose: if phase == Phase::Restore {
                DeployPurpose::Rollback {
                    rolling_back: &run,
                    attempt: 1,
                }
            } else {
                DeployPurpose::Deploy
            },
            repo: "acme/shop",
            sha,
            env: "production",
            artifact,
            backup,
            secrets: Vec::new(),
            target: config,
        })
        .await
}

// ---------------------------------------------------------------------------------------
// s3
// ---------------------------------------------------------------------------------------

/// A site deployed from CI's bucket to its own, under `prefix`.
struct Site {
    moto: Moto,
    s3: aws_sdk_s3::Client,
    target: S3Target,
    config: DeployTargetConfig,
}

impl Site {
    async fn start(prefix: &str) -> Site {
        let moto = Moto::start().await;
        moto.create_bucket(CI).await;
        moto.create_bucket(SITE).await;
        Site {
            s3: moto.s3().await,
            target: S3Target::with_sdk(moto.sdk().await),
            config: s3_config(SITE, prefix),
            moto,
        }
    }

    /// CI uploads a build of `sha` under `artifacts/<sha>/`; returns the artifact.
    async fn build(&self, sha: &str, files: &[(&str, &str)]) -> String {
        for (name, body) in files {
            self.put(CI, &format!("artifacts/{sha}/{name}"), body.as_bytes()).await;
        }
        format!("s3://{CI}/artifacts/{sha}/")
    }

    async fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
    }

    async fn deploy(
        &self,
        p: Phase,
        sha: &str,
        artifact: &str,
        backup: Option<&str>,
    ) -> Result<DeployReport, DeployError> {
        phase(&self.target, &self.config, p, sha, Some(artifact), backup).await
    }

    /// The object at `key` in the site's bucket, if there is one.
    async fn get(&self, key: &str) -> Option<String> {
        match self.s3.get_object().bucket(SITE).key(key).send().await {
            Ok(object) => {
                let body = object.body.collect().await.expect("a body").into_bytes();
                Some(String::from_utf8(body.to_vec()).expect("UTF-8"))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
            Err(e) => panic!("get s3://{SITE}/{key}: {e:?}"),
        }
    }

    /// A pointer (`current`, `previous`) as JSON.
    async fn pointer(&self, key: &str) -> Value {
        let raw = self.get(key).await.unwrap_or_else(|| panic!("no {key}"));
        serde_json::from_str(&raw).expect("the pointer is JSON")
    }

    /// Every key under `prefix` in the site's bucket.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(SITE)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        let mut keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }
}

fn s3_config(bucket: &str, prefix: &str) -> DeployTargetConfig {
    DeployTargetConfig::S3 {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint_url: None,
        region: None,
        timeout: SignedDuration::from_secs(60),
    }
}

#[tokio::test]
async fn a_site_is_released_then_replaced_then_restored() {
    let site = Site::start("production/").await;
    let (run1, run2) = (run(SHA1), run(SHA2));
    let release1 = format!("production/releases/{run1}/");
    let release2 = format!("production/releases/{run2}/");

    // The first deploy: nothing to back up, nothing to migrate.
    let build1 = site
        .build(
            SHA1,
            &[
                ("index.html", "<h1>v1</h1>"),
                ("assets/app.js", "js v1"),
                ("assets/app.css", "css v1"),
            ],
        )
        .await;
    let backup = site.deploy(Phase::Backup, SHA1, &build1, None).await.unwrap();
    assert_eq!(backup.reference.as_deref(), Some("none"));
    assert!(backup.output.contains("nothing to back up"), "{}", backup.output);
    let migrate = site.deploy(Phase::Migrate, SHA1, &build1, None).await.unwrap();
    assert!(migrate.skipped, "{migrate:?}");

    // The release copies the build and points `current` at it.
    let released = site.deploy(Phase::Release, SHA1, &build1, None).await.unwrap();
    assert_eq!(released.reference.as_deref(), Some(release1.as_str()));
    assert!(
        released
            .output
            .contains(&format!("copied 3 objects from {build1} to s3://{SITE}/{release1}")),
        "{}",
        released.output
    );
    assert_eq!(
        site.keys(&release1).await,
        [
            format!("{release1}assets/app.css"),
            format!("{release1}assets/app.js"),
            format!("{release1}index.html")
        ]
    );
    assert_eq!(
        site.get(&format!("{release1}index.html")).await.as_deref(),
        Some("<h1>v1</h1>")
    );
    let current = site.pointer("production/current").await;
    assert_eq!(current["run"], run1.as_str());
    assert_eq!(current["sha"], SHA1);
    assert_eq!(current["artifact"], build1.as_str());
    assert_eq!(current["release_prefix"], release1.as_str());

    // Retried after a crash, the release changes nothing: there is still nothing before it.
    let again = site.deploy(Phase::Release, SHA1, &build1, None).await.unwrap();
    assert_eq!(again.reference, released.reference);
    assert_eq!(site.pointer("production/current").await, current);
    assert_eq!(site.get("production/previous").await, None);

    // The next commit: the backup names the first release, the release moves `current`.
    let build2 = site.build(SHA2, &[("index.html", "<h1>v2</h1>")]).await;
    let backup = site.deploy(Phase::Backup, SHA2, &build2, None).await.unwrap();
    assert_eq!(backup.reference.as_deref(), Some(release1.as_str()));
    let released = site.deploy(Phase::Release, SHA2, &build2, None).await.unwrap();
    assert_eq!(released.reference.as_deref(), Some(release2.as_str()));
    assert_eq!(site.keys(&release2).await, [format!("{release2}index.html")]);
    assert_eq!(site.pointer("production/current").await["run"], run2.as_str());
    assert_eq!(site.pointer("production/previous").await, current);
    assert_eq!(site.keys(&release1).await.len(), 3, "the first release is kept");

    // Smoke checks fail: the rollback restores what the backup named.
    let restored = site
        .deploy(Phase::Restore, SHA2, &build2, backup.reference.as_deref())
        .await
        .unwrap();
    assert!(restored.output.contains("restored"), "{}", restored.output);
    assert_eq!(site.pointer("production/current").await, current);
    assert_eq!(site.pointer("production/previous").await["run"], run2.as_str());

    // A retried restore finds it done.
    let again = site
        .deploy(Phase::Restore, SHA2, &build2, backup.reference.as_deref())
        .await
        .unwrap();
    assert!(again.output.contains("nothing to change"), "{}", again.output);
    assert_eq!(site.pointer("production/current").await, current);
    assert_eq!(site.pointer("production/previous").await["run"], run2.as_str());
}

#[tokio::test]
async fn a_site_at_the_root_of_its_bucket_and_a_rollback_with_nothing_before_it() {
    let site = Site::start("").await;
    let run1 = run(SHA1);
    let build = site.build(SHA1, &[("index.html", "v1")]).await;

    site.deploy(Phase::Release, SHA1, build.trim_end_matches('/'), None)
        .await
        .unwrap();
    assert_eq!(
        site.keys("").await,
        ["current".to_owned(), format!("releases/{run1}/index.html")]
    );
    assert_eq!(
        site.pointer("current").await["release_prefix"],
        format!("releases/{run1}/")
    );

    // The first deploy's backup was `none`: a restore has nothing to put back, and touches
    // nothing (the rollback's release of the previous artifact follows).
    let restored = site.deploy(Phase::Restore, SHA1, &build, Some("none")).await.unwrap();
    assert_eq!(restored.output.trim(), "nothing to restore (no earlier release)");
    assert_eq!(site.pointer("current").await["run"], run1.as_str());
    assert_eq!(site.get("previous").await, None);

    // The rollback then releases the previous artifact under the same run: the release holds
    // that artifact's objects and nothing left over from the one it replaces.
    let previous = site.build(SHA2, &[("home.html", "v0")]).await;
    let released = site.deploy(Phase::Release, SHA1, &previous, None).await.unwrap();
    assert!(
        released
            .output
            .contains("removed 1 stale object from an earlier release"),
        "{}",
        released.output
    );
    assert_eq!(
        site.keys(&format!("releases/{run1}/")).await,
        [format!("releases/{run1}/home.html")]
    );
    assert_eq!(site.pointer("current").await["artifact"], previous.as_str());
}

#[tokio::test]
async fn an_empty_artifact_fails_and_changes_nothing() {
    let site = Site::start("production").await;
    // A neighbour of the artifact prefix, which is not part of it.
    site.put(CI, &format!("artifacts/{SHA1}.log"), b"build log").await;

    let artifact = format!("s3://{CI}/artifacts/{SHA1}/");
    let err = site.deploy(Phase::Release, SHA1, &artifact, None).await.unwrap_err();
    let DeployError::Failed { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        reason,
        &format!("artifact {artifact} is empty: there is no object under it")
    );
    assert!(site.keys("").await.is_empty(), "{:?}", site.keys("").await);
}

#[tokio::test]
async fn what_the_s3_target_cannot_work_with_is_named() {
    let site = Site::start("production").await;
    let build = site.build(SHA1, &[("index.html", "v1")]).await;

    // Not an S3 prefix, or no artifact at all: nothing starts.
    for artifact in [Some("/tmp/build.tar.gz"), Some("s3://shop-ci"), None] {
        let err = phase(&site.target, &site.config, Phase::Release, SHA1, artifact, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DeployError::CouldNotStart { reason } if reason.contains("s3://<bucket>/<prefix>/")),
            "{artifact:?}: {err:?}"
        );
    }
    // A restore without a backup, or of something that is not one of this site's releases.
    for backup in [None, Some("elsewhere/releases/x/")] {
        let err = site.deploy(Phase::Restore, SHA1, &build, backup).await.unwrap_err();
        assert!(matches!(err, DeployError::CouldNotStart { .. }), "{backup:?}: {err:?}");
    }
    // A bucket that does not exist: AWS's error code and the object are in the reason.
    let target = S3Target::with_sdk(site.moto.sdk().await);
    let missing = s3_config("no-such-site", "production");
    let err = phase(&target, &missing, Phase::Backup, SHA1, Some(&build), None)
        .await
        .unwrap_err();
    let DeployError::Failed { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("s3://no-such-site/production/current"), "{reason}");
    assert!(reason.contains("NoSuchBucket"), "{reason}");
    assert!(site.keys("").await.is_empty(), "nothing was written");
}

// ---------------------------------------------------------------------------------------
// lambda
// ---------------------------------------------------------------------------------------

const FUNCTION: &str = "shop-api";
const ROLE: &str = "arn:aws:iam::123456789012:role/lambda-role";

/// A Lambda function whose code CI uploads to its bucket.
struct Api {
    _moto: Moto,
    s3: aws_sdk_s3::Client,
    lambda: aws_sdk_lambda::Client,
    target: LambdaTarget,
    config: DeployTargetConfig,
}

impl Api {
    async fn start() -> Api {
        let moto = Moto::start().await;
        moto.create_bucket(CI).await;
        create_lambda_role(&moto).await;
        Api {
            s3: moto.s3().await,
            lambda: aws_sdk_lambda::Client::new(&moto.sdk().await),
            target: LambdaTarget::with_sdk(moto.sdk().await),
            config: lambda_config(FUNCTION),
            _moto: moto,
        }
    }

    /// CI uploads the package of `sha`; returns the artifact and the package's CodeSha256.
    async fn build(&self, sha: &str) -> (String, String) {
        let package = zip(
            "index.py",
            &format!("def handler(event, context):\n    return {sha:?}\n"),
        );
        let key = format!("builds/{sha}/api.zip");
        self.s3
            .put_object()
            .bucket(CI)
            .key(&key)
            .body(ByteStream::from(package.clone()))
            .send()
            .await
            .expect("upload the package");
        let code_sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&package));
        (format!("s3://{CI}/{key}"), code_sha)
    }

    /// The function as it was created by hand, before slipway: code of `sha`, nothing published.
    async fn create_function(&self, sha: &str) {
        let (artifact, _) = self.build(sha).await;
        let key = artifact.trim_start_matches(&format!("s3://{CI}/")).to_owned();
        self.lambda
            .create_function()
            .function_name(FUNCTION)
            .runtime(aws_sdk_lambda::types::Runtime::Python312)
            .role(ROLE)
            .handler("index.handler")
            .code(
                aws_sdk_lambda::types::FunctionCode::builder()
                    .s3_bucket(CI)
                    .s3_key(key)
                    .build(),
            )
            .send()
            .await
            .expect("create the function");
    }

    async fn deploy(
        &self,
        p: Phase,
        sha: &str,
        artifact: &str,
        backup: Option<&str>,
    ) -> Result<DeployReport, DeployError> {
        phase(&self.target, &self.config, p, sha, Some(artifact), backup).await
    }

    /// The version alias `live` points at.
    async fn live(&self) -> String {
        self.lambda
            .get_alias()
            .function_name(FUNCTION)
            .name("live")
            .send()
            .await
            .expect("the alias exists")
            .function_version()
            .expect("a version")
            .to_owned()
    }

    /// The CodeSha256 of a published version.
    async fn code_of(&self, version: &str) -> String {
        self.lambda
            .get_function_configuration()
            .function_name(FUNCTION)
            .qualifier(version)
            .send()
            .await
            .expect("the version exists")
            .code_sha256()
            .expect("a code hash")
            .to_owned()
    }
}

fn lambda_config(function: &str) -> DeployTargetConfig {
    DeployTargetConfig::Lambda {
        function: function.to_owned(),
        alias: "live".to_owned(),
        endpoint_url: None,
        region: None,
        timeout: SignedDuration::from_secs(60),
    }
}

#[tokio::test]
async fn a_function_is_released_to_its_alias_then_rolled_back() {
    let api = Api::start().await;
    api.create_function(SHA1).await;
    let v1 = api
        .lambda
        .publish_version()
        .function_name(FUNCTION)
        .send()
        .await
        .expect("publish")
        .version()
        .expect("a version")
        .to_owned();
    api.lambda
        .create_alias()
        .function_name(FUNCTION)
        .name("live")
        .function_version(&v1)
        .send()
        .await
        .expect("create the alias");

    let (build2, code2) = api.build(SHA2).await;
    let backup = api.deploy(Phase::Backup, SHA2, &build2, None).await.unwrap();
    assert_eq!(backup.reference.as_deref(), Some(v1.as_str()));
    assert!(api.deploy(Phase::Migrate, SHA2, &build2, None).await.unwrap().skipped);

    let released = api.deploy(Phase::Release, SHA2, &build2, None).await.unwrap();
    let v2 = released.reference.clone().expect("the new version");
    assert_ne!(v2, v1);
    assert_eq!(api.live().await, v2);
    assert_eq!(api.code_of(&v2).await, code2, "the alias runs the new package");
    assert!(
        released.output.contains(&format!("alias live → version {v2}")) && released.output.contains(FUNCTION),
        "{}",
        released.output
    );

    // Retried, the release leaves the alias on the same code. (AWS publishes no new version
    // of unchanged code; moto does, so the version number is not compared.)
    let again = api.deploy(Phase::Release, SHA2, &build2, None).await.unwrap();
    let retried = again.reference.expect("a version");
    assert_eq!(api.live().await, retried);
    assert_eq!(api.code_of(&retried).await, code2);

    let restored = api
        .deploy(Phase::Restore, SHA2, &build2, backup.reference.as_deref())
        .await
        .unwrap();
    assert!(restored.output.contains("restored"), "{}", restored.output);
    assert_eq!(api.live().await, v1);
}

#[tokio::test]
async fn the_first_release_creates_the_alias() {
    let api = Api::start().await;
    api.create_function(SHA1).await;
    let (build, code) = api.build(SHA1).await;

    let backup = api.deploy(Phase::Backup, SHA1, &build, None).await.unwrap();
    assert_eq!(backup.reference.as_deref(), Some("none"));
    assert!(backup.output.contains("nothing to back up"), "{}", backup.output);

    let released = api.deploy(Phase::Release, SHA1, &build, None).await.unwrap();
    let version = released.reference.expect("a version");
    assert_eq!(api.live().await, version);
    assert_eq!(api.code_of(&version).await, code);

    // Nothing ran before: a rollback's restore leaves the alias where it is.
    let restored = api.deploy(Phase::Restore, SHA1, &build, Some("none")).await.unwrap();
    assert_eq!(restored.output.trim(), "nothing to restore (no earlier release)");
    assert_eq!(api.live().await, version);
}

#[tokio::test]
async fn what_the_lambda_target_cannot_work_with_is_named() {
    let api = Api::start().await;
    let (build, _) = api.build(SHA1).await;

    // The artifact must be one object in S3.
    for artifact in [Some("s3://shop-ci/builds/"), Some("api.zip"), None] {
        let err = phase(&api.target, &api.config, Phase::Release, SHA1, artifact, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DeployError::CouldNotStart { reason } if reason.contains("s3://<bucket>/<key>.zip")),
            "{artifact:?}: {err:?}"
        );
    }
    // A restore needs a version.
    for backup in [None, Some("latest-ish")] {
        let err = api.deploy(Phase::Restore, SHA1, &build, backup).await.unwrap_err();
        assert!(matches!(err, DeployError::CouldNotStart { .. }), "{backup:?}: {err:?}");
    }
    // No such function: the backup already says so, with Lambda's error code.
    let err = api.deploy(Phase::Backup, SHA1, &build, None).await.unwrap_err();
    let DeployError::Failed { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        reason.contains(FUNCTION) && reason.contains("ResourceNotFoundException"),
        "{reason}"
    );
}

/// moto checks that a function's role exists. There is no IAM SDK among the test
/// dependencies, so the role is made with one Query API request (moto checks no signature).
async fn create_lambda_role(moto: &Moto) {
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "CreateRole")
        .append_pair("Version", "2010-05-08")
        .append_pair("RoleName", "lambda-role")
        .append_pair("AssumeRolePolicyDocument", policy)
        .finish();
    let port: u16 = moto
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("moto's port");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .expect("connect to moto");
    stream.write_all(request.as_bytes()).await.expect("send CreateRole");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read CreateRole's answer");
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains(ROLE),
        "CreateRole: {response}"
    );
}

/// A zip holding one file, stored uncompressed: the smallest valid deployment package.
fn zip(name: &str, contents: &str) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0_u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let (name, data) = (name.as_bytes(), contents.as_bytes());
    let len = |n: usize| u32::try_from(n).expect("small");
    let name_len = u16::try_from(name.len()).expect("a short name");
    let (crc, size) = (crc32(data), len(data.len()));
    // version 2.0, no flags, stored, 1980-01-01 00:00, then the CRC and both sizes.
    let common = |out: &mut Vec<u8>| {
        for half in [20_u16, 0, 0, 0, 0x21] {
            out.extend(half.to_le_bytes());
        }
        for word in [crc, size, size] {
            out.extend(word.to_le_bytes());
        }
        out.extend(name_len.to_le_bytes());
    };
    let mut zip = 0x0403_4b50_u32.to_le_bytes().to_vec();
    common(&mut zip);
    zip.extend(0_u16.to_le_bytes()); // no extra field
    zip.extend(name);
    zip.extend(data);
    let directory = len(zip.len());
    zip.extend(0x0201_4b50_u32.to_le_bytes());
    zip.extend(20_u16.to_le_bytes()); // made by version 2.0
    common(&mut zip);
    for half in [0_u16, 0, 0, 0] {
        zip.extend(half.to_le_bytes()); // extra, comment, disk, internal attributes
    }
    zip.extend(0_u32.to_le_bytes()); // external attributes
    zip.extend(0_u32.to_le_bytes()); // the local header's offset
    zip.extend(name);
    let directory_size = len(zip.len()) - directory;
    zip.extend(0x0605_4b50_u32.to_le_bytes());
    for half in [0_u16, 0, 1, 1] {
        zip.extend(half.to_le_bytes());
    }
    zip.extend(directory_size.to_le_bytes());
    zip.extend(directory.to_le_bytes());
    zip.extend(0_u16.to_le_bytes());
    zip
}

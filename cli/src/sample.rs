//! The sample app `slipway demo` and `slipway init` deploy, and sample pushes for each git host.
//!
//! The sample app is one small HTTP service per environment: `GET /health` answers from the
//! release its deploy recorded (`current`) and its database file (`db.json`), so smoke checks
//! can prove the new version runs on a migrated database. Its deploy is four scripts, one per
//! phase slipway runs (backup, migrate, release, restore). `slipway demo` serves the
//! environments inside its own process; after `slipway init`, the release script starts
//! `slipway sample-app --detach` once per environment, which keeps serving after the deploy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use crate::send::Host;

/// The deploy scripts, by file name: one per phase the command target runs.
pub(crate) const SCRIPTS: [(&str, &str); 4] = [
    ("backup.sh", BACKUP),
    ("migrate.sh", MIGRATE),
    ("release.sh", RELEASE),
    ("restore.sh", RESTORE),
];

const BACKUP: &str = r#"#!/bin/sh
# backup: runs first. Copies the environment's database and names the copy, so a failed
# migrate or release can be put back by restore.sh. No prompts; a non-zero exit stops the deploy.
set -eu
dir="$APP_ENVS/$SLIPWAY_ENV"
mkdir -p "$dir/backups"
ref="db-before-$(printf %.12s "$SLIPWAY_SHA").json"
cp "$dir/db.json" "$dir/backups/$ref"
echo "copied the database to backups/$ref"
# slipway reads the last such line and gives it to restore.sh as SLIPWAY_BACKUP_REF.
echo "SLIPWAY_BACKUP_REF=$ref"
"#;

const MIGRATE: &str = r#"#!/bin/sh
# migrate: runs after the backup. Brings the database to the schema the new code needs.
set -eu
dir="$APP_ENVS/$SLIPWAY_ENV"
echo "schema 1 -> 2, connecting with password $APP_DB_PASSWORD"
sed 's/"schema": *1/"schema": 2/' "$dir/db.json" > "$dir/db.json.new"
mv "$dir/db.json.new" "$dir/db.json"
"#;

const RELEASE: &str = r#"#!/bin/sh
# release: puts the commit live. Here: records it where the sample app reads its version, and
# starts the sample app if this environment has an address and it is not running yet.
set -eu
dir="$APP_ENVS/$SLIPWAY_ENV"
echo "releasing $SLIPWAY_SHA (artifact $SLIPWAY_ARTIFACT)"
printf '%s' "$SLIPWAY_SHA" > "$dir/current"
if [ -n "${APP_LISTEN:-}" ]; then
  "$APP_SERVER" sample-app --dir "$dir" --listen "$APP_LISTEN" --detach
fi
"#;

const RESTORE: &str = r#"#!/bin/sh
# restore: runs when a phase after the backup failed, or for a rollback. Puts the backup back.
set -eu
dir="$APP_ENVS/$SLIPWAY_ENV"
echo "restoring backups/$SLIPWAY_BACKUP_REF"
cp "$dir/backups/$SLIPWAY_BACKUP_REF" "$dir/db.json"
"#;

/// The schema version the sample app's code needs.
const SCHEMA: u64 = 2;

/// What `/health` says the app is, so `--detach` knows it is talking to a sample app.
const APP_NAME: &str = "slipway-sample-app";

/// An environment's database before its first deploy.
pub(crate) const FRESH_DB: &str = r#"{"schema": 1, "orders": []}"#;

/// Writes the deploy scripts into `dir` (mode 0755), refusing to replace a file unless `force`.
pub(crate) fn write_scripts(dir: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    SCRIPTS
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            write_new(&path, text, 0o755, force)?;
            Ok(path)
        })
        .collect()
}

/// Creates `path` with `mode` (set when the file is created, never loosened afterwards),
/// refusing an existing file unless `force`, which replaces it.
pub(crate) fn write_new(path: &Path, text: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    if force {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `GET /health`: the release in `current` and whether the database has the schema the code needs.
async fn health(State(dir): State<PathBuf>) -> (StatusCode, Json<Value>) {
    let version = std::fs::read_to_string(dir.join("current")).ok();
    let db: Option<Value> = std::fs::read(dir.join("db.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let schema = db.as_ref().and_then(|d| d["schema"].as_u64());
    let database = match schema {
        None => "unreadable".to_owned(),
        Some(s) if s == SCHEMA => "ok".to_owned(),
        Some(s) => format!("schema {s}, needs {SCHEMA}"),
    };
    let healthy = version.is_some() && database == "ok";
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"app": APP_NAME, "dir": dir, "version": version, "database": database})),
    )
}

/// Serves one environment of the sample app from `dir` on `listener`, in the background.
pub(crate) fn spawn_app(dir: PathBuf, listener: tokio::net::TcpListener) {
    let app = axum::Router::new().route("/health", get(health)).with_state(dir);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

/// Makes an environment's directory with a fresh database.
pub(crate) fn prepare_environment(dir: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_new(&dir.join("db.json"), FRESH_DB, 0o644, force)
}

/// `slipway sample-app`: one environment of the sample app `slipway init` writes.
#[derive(Debug, clap::Args)]
pub struct SampleAppArgs {
    /// The environment's directory (`current`, `db.json`); the app stops when it is deleted.
    #[arg(long)]
    dir: PathBuf,
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// Start the app in the background (unless it already answers at --listen), wait until it
    /// answers, and return. Its log is `app.log` and its process id `app.pid` in --dir.
    #[arg(long)]
    detach: bool,
}

/// The directory of the sample app answering `/health` at `addr`, if one does.
async fn answering(client: &reqwest::Client, addr: SocketAddr) -> Option<PathBuf> {
    let response = client.get(format!("http://{addr}/health")).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    (body["app"] == APP_NAME).then(|| PathBuf::from(body["dir"].as_str().unwrap_or_default()))
}

pub async fn sample_app(args: SampleAppArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.dir)?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if args.detach {
        return detach(&dir, args.listen).await;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("sample app for {} on http://{}/health", dir.display(), args.listen);
    spawn_app(dir.clone(), listener);
    // Stop with the directory: a deleted project (or test directory) leaves nothing running.
    while dir.is_dir() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}

async fn detach(dir: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    match answering(&client, listen).await {
        Some(serving) if serving == dir => {
            println!("the sample app already answers at http://{listen}/health");
            return Ok(());
        }
        Some(other) => bail!(
            "the sample app of {} answers at {listen}: stop it (its pid is in app.pid there) or give this environment another APP_LISTEN",
            other.display()
        ),
        None => {}
    }
    let log = std::fs::File::create(dir.join("app.log")).context("cannot create app.log")?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("sample-app")
        .arg("--dir")
        .arg(dir)
        .arg("--listen")
        .arg(listen.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own process group: it outlives the deploy that started it.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().context("cannot start the sample app")?;
    std::fs::write(dir.join("app.pid"), child.id().to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if answering(&client, listen).await.is_some() {
            println!("started the sample app at http://{listen}/health (pid {})", child.id());
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("app.log")).unwrap_or_default();
            bail!("the sample app exited with {status}: {}", log.trim());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the sample app does not answer at http://{listen}/health after 10s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `s` as a TOML string (quoted and escaped).
pub(crate) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// One environment of the sample app, as `slipway.toml` declares it for `slipway init` and
/// the demo: deployed by the phase scripts [`write_scripts`] put in `scripts`, its database
/// password from parameter `db_param`, and smoke-checked at `addr`.
pub(crate) struct Environment<'a> {
    pub(crate) name: &'a str,
    pub(crate) addr: SocketAddr,
    pub(crate) scripts: &'a Path,
    /// Where each environment's files live (`APP_ENVS`).
    pub(crate) envs: &'a Path,
    pub(crate) db_param: &'a str,
    /// The deploy's timeout and the smoke checks' deadline, as config durations.
    pub(crate) timeout: &'a str,
    pub(crate) deadline: &'a str,
    /// The program the release script starts the app with (`APP_SERVER`, listening on
    /// `addr`); `None` when the app is already served (the demo serves it in-process).
    pub(crate) server: Option<&'a Path>,
}

impl Environment<'_> {
    /// Its `[[pipelines.environments]]` table and smoke check.
    pub(crate) fn toml(&self) -> String {
        let script = |phase: &str| toml_str(&self.scripts.join(phase).display().to_string());
        let envs = toml_str(&self.envs.display().to_string());
        let env = match self.server {
            Some(server) => format!(
                "# The sample app's files, where it listens, and the program that serves it.\n\
                 env = {{ APP_ENVS = {envs}, APP_LISTEN = \"{addr}\", APP_SERVER = {server} }}",
                addr = self.addr,
                server = toml_str(&server.display().to_string()),
            ),
            None => format!("# The sample app's files.\nenv = {{ APP_ENVS = {envs} }}"),
        };
        format!(
            r#"
[[pipelines.environments]]
name = "{name}"

[pipelines.environments.deploy]
type = "command"
command = [{release}]
backup = [{backup}]
migrate = [{migrate}]
restore = [{restore}]
timeout = "{timeout}"
{env}
secrets = {{ APP_DB_PASSWORD = {db} }}

[[pipelines.environments.smoke]]
name = "health, version and database"
url = "http://{addr}/health"
json = {{ "/version" = "{{sha}}", "/database" = "ok" }}
timeout = "2s"
deadline = "{deadline}"
backoff = "200ms"
"#,
            name = self.name,
            release = script("release.sh"),
            backup = script("backup.sh"),
            migrate = script("migrate.sh"),
            restore = script("restore.sh"),
            timeout = self.timeout,
            db = toml_str(self.db_param),
            addr = self.addr,
            deadline = self.deadline,
        )
    }
}

/// Who authored and pushed a sample commit.
pub(crate) const AUTHOR: slipway::samples::SampleAuthor<'static> = slipway::samples::SampleAuthor {
    login: "dev",
    name: "Dee Veloper",
    email: "dev@example.com",
};

/// A push of `sha` to `repo`'s `branch`, shaped as `host` sends it: GitHub's and GitLab's
/// documented examples and the Bitbucket sample in `events/`, re-aimed at that commit.
pub(crate) fn push(host: Host, repo: &str, branch: &str, sha: &str, message: &str) -> String {
    // Committed a quarter of an hour before the push, so the delivery figures have a lead time.
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(15);
    match host {
        Host::Github => slipway::samples::github_push(repo, branch, sha, message, AUTHOR, at),
        Host::Gitlab => gitlab_push(repo, branch, sha, message, at),
        Host::Bitbucket => bitbucket_push(repo, branch, sha, message, at),
    }
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

fn gitlab_push(repo: &str, branch: &str, sha: &str, message: &str, at: jiff::Timestamp) -> String {
    let mut v: Value =
        serde_json::from_str(include_str!("../../events/gitlab/push.json")).expect("the bundled fixture is JSON");
    let web = format!("https://gitlab.com/{repo}");
    let name = repo.rsplit('/').next().unwrap_or(repo);
    v["ref"] = json!(format!("refs/heads/{branch}"));
    // A new branch, like the GitHub sample: no compare link to a commit that does not exist.
    v["before"] = json!(ZERO_SHA);
    v["after"] = json!(sha);
    v["checkout_sha"] = json!(sha);
    v["user_name"] = json!(AUTHOR.name);
    v["user_username"] = json!(AUTHOR.login);
    v["user_email"] = json!(AUTHOR.email);
    for key in ["project", "repository"] {
        v[key]["name"] = json!(name);
        v[key]["homepage"] = json!(web);
        v[key]["git_http_url"] = json!(format!("{web}.git"));
        v[key]["git_ssh_url"] = json!(format!("git@gitlab.com:{repo}.git"));
        v[key]["url"] = json!(format!("git@gitlab.com:{repo}.git"));
    }
    v["project"]["web_url"] = json!(web);
    v["project"]["path_with_namespace"] = json!(repo);
    v["project"]["namespace"] = json!(repo.split('/').next().unwrap_or(repo));
    v["project"]["default_branch"] = json!(branch);
    v["commits"] = json!([{
        "id": sha,
        "message": message,
        "title": message.lines().next().unwrap_or(message),
        "timestamp": at.to_string(),
        "url": format!("{web}/-/commit/{sha}"),
        "author": {"name": AUTHOR.name, "email": AUTHOR.email},
        "added": [], "modified": [], "removed": [],
    }]);
    v["total_commits_count"] = json!(1);
    v.to_string()
}

fn bitbucket_push(repo: &str, branch: &str, sha: &str, message: &str, at: jiff::Timestamp) -> String {
    let mut v: Value =
        serde_json::from_str(include_str!("../../events/bitbucket/push.json")).expect("the bundled fixture is JSON");
    let web = format!("https://bitbucket.org/{repo}");
    let author = json!({
        "raw": format!("{} <{}>", AUTHOR.name, AUTHOR.email),
        "type": "author",
        "user": {"type": "user", "display_name": AUTHOR.name, "nickname": AUTHOR.login},
    });
    v["actor"] = json!({"type": "user", "display_name": AUTHOR.name, "nickname": AUTHOR.login});
    v["repository"]["name"] = json!(repo.rsplit('/').next().unwrap_or(repo));
    v["repository"]["full_name"] = json!(repo);
    v["repository"]["links"]["html"]["href"] = json!(web);
    let commit_url = format!("{web}/commits/{sha}");
    // One change: the branch created at that commit.
    v["push"]["changes"] = json!([{
        "old": null,
        "new": {
            "type": "branch",
            "name": branch,
            "target": {
                "type": "commit",
                "hash": sha,
                "date": at.to_string(),
                "message": message,
                "author": author,
                "links": {"html": {"href": commit_url}},
            },
        },
        "created": true,
        "closed": false,
        "forced": false,
        "truncated": false,
        "commits": [{"type": "commit", "hash": sha, "message": message, "date": at.to_string(), "author": author}],
    }]);
    v.to_string()
}

/// The event header value a host sends a push under.
pub(crate) fn push_event(host: Host) -> &'static str {
    match host {
        Host::Github => "push",
        Host::Gitlab => "Push Hook",
        Host::Bitbucket => "repo:push",
    }
}

/// The path of a host's webhook endpoint.
pub(crate) fn hook_path(host: Host) -> &'static str {
    match host {
        Host::Github => "/hooks/github",
        Host::Gitlab => "/hooks/gitlab",
        Host::Bitbucket => "/hooks/bitbucket",
    }
}

/// 20 random bytes as 40 hex digits: a commit SHA for a sample push.
pub(crate) fn random_sha() -> String {
    hex::encode(rand::random::<[u8; 20]>())
}

/// 32 random bytes as 64 hex digits: a fresh secret.
pub(crate) fn random_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

//! The `command` deploy target: runs a program, with no shell, no stdin and a timeout.
//!
//! Each deploy phase runs its own program: `command` releases; `backup`, `migrate` and
//! `restore` are optional (a missing backup or migrate is recorded as skipped; a missing
//! restore fails the rollback loudly). `SLIPWAY_PHASE` names the phase; a restore gets
//! `SLIPWAY_BACKUP_REF`, the reference its backup printed as `SLIPWAY_BACKUP_REF=<ref>`.
//!
//! The program gets `SLIPWAY_REPO`, `SLIPWAY_SHA`, `SLIPWAY_ENV`, `SLIPWAY_RUN` and
//! `SLIPWAY_ARTIFACT`, the target's plain `env` variables, and the environment's secrets under
//! their variable names — in the child's environment only, never in slipway's own or in a log.
//! Its stdout and stderr are merged into one output, every secret value is masked as `***`
//! before anything else sees it, and only the last 64 KiB are kept.
//!
//! Each of the target's `secret_files` is written to a file of its own (mode 0600, created
//! with that mode) in a fresh directory only slipway's user can open (0700), and the variable
//! holds the file's path, so a script can `ssh -i "$SSH_KEY_FILE"`. The directory lives as long
//! as the phase: it is removed when the program has ended — succeeded, failed, or killed at its
//! timeout — and if the deploy is cancelled. The values are masked in the output like the
//! other secrets.
//!
//! The program runs in its own process group, so when it runs out of time the whole group is
//! killed: a deploy script's children (`sleep`, `terraform`, …) die with it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinSet;

use crate::config::DeployTargetConfig;
use crate::domain::{ParamName, RunId};
use crate::ports::{DeployError, DeployReport, DeployRequest, DeployTarget, Phase};

/// How much of a deploy's output is kept: its last 64 KiB.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// What replaces a secret value in captured output.
pub const MASK: &str = "***";

/// The marker put before output that lost its beginning.
const TRIMMED_MARKER: &str = "…(earlier output trimmed)\n";

/// Raw output kept in memory while a deploy runs. Far more than [`OUTPUT_LIMIT`], so a
/// secret cut at this boundary still ends up outside the kept tail.
const RAW_KEEP: usize = 1024 * 1024;

/// A line longer than this is passed on without waiting for its end.
const LONG_LINE: usize = 8 * 1024;

/// How long to keep reading output after the program exited, in case a background process it
/// left behind still holds the pipes open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for a killed program to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Deploys by running the configured program. See the [module docs](self).
/// The only variables of slipway's own environment a deploy inherits.
pub const INHERITED_ENV: [&str; 10] = [
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

#[derive(Debug, Default, Clone, Copy)]
pub struct CommandTarget;

impl CommandTarget {
    /// A command deploy target.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl DeployTarget for CommandTarget {
    async fn deploy(&self, request: DeployRequest<'_>) -> Result<DeployReport, DeployError> {
        let DeployTargetConfig::Command {
            command,
            backup,
            migrate,
            restore,
            working_dir,
            timeout,
            env,
            secret_files,
            ..
        } = request.target
        else {
            return Err(DeployError::CouldNotStart {
                reason: format!("the command target was given a {} target", request.target.kind()),
            });
        };
        let command = match request.phase {
            Phase::Release => command,
            Phase::Backup => match backup {
                Some(c) => c,
                None => return Ok(DeployReport::skipped("no backup command is configured")),
            },
            Phase::Migrate => match migrate {
                Some(c) => c,
                None => return Ok(DeployReport::skipped("no migrate command is configured")),
            },
            Phase::Restore => match restore {
                Some(c) => c,
                None => {
                    return Err(DeployError::CouldNotStart {
                        reason: "no restore command is configured, so the backup cannot be restored".into(),
                    });
                }
            },
        };
        let Some((program, args)) = command.split_first() else {
            return Err(DeployError::CouldNotStart {
                reason: "no command is configured".into(),
            });
        };
        if let Some(dir) = working_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(DeployError::CouldNotStart {
                reason: format!("working directory {}: No such directory", dir.display()),
            });
        }

        // Declared before the child, so it is dropped (the directory removed) after the child
        // is, even when this future is cancelled.
        let files =
            SecretFiles::write(secret_files, &request.secrets).map_err(|reason| DeployError::CouldNotStart {
                reason: format!("cannot write the secret files: {reason}"),
            })?;

        let mut cmd = Command::new(program);
        // A clean environment: slipway's own variables (cloud credentials, tokens) are not
        // the deploy's business. Only what a shell needs to work is passed through.
        cmd.env_clear();
        for var in INHERITED_ENV {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .envs(env);
        for (name, value) in &request.secrets {
            if !secret_files.contains_key(name) {
                cmd.env(name, value.expose_secret());
            }
        }
        if let Some(files) = &files {
            cmd.envs(files.paths.iter().map(|(var, path)| (var, path)));
        }
        // Last, so neither `env` nor a secret can pretend to be another commit.
        cmd.env("SLIPWAY_REPO", request.repo)
            .env("SLIPWAY_SHA", request.sha)
            .env("SLIPWAY_ENV", request.env)
            .env("SLIPWAY_RUN", request.run.as_str())
            .env("SLIPWAY_ARTIFACT", request.artifact.unwrap_or_default())
            .env("SLIPWAY_PHASE", request.phase.as_str())
            .env("SLIPWAY_BACKUP_REF", request.backup.unwrap_or_default())
            .env("SLIPWAY_STAGE", request.purpose.stage())
            .env(
                "SLIPWAY_ROLLING_BACK",
                request.purpose.rolling_back().map(RunId::as_str).unwrap_or_default(),
            );
        #[cfg(unix)]
        cmd.process_group(0);
        if let Some(dir) = working_dir {
            cmd.current_dir(dir);
        }

        let secrets: Vec<&str> = request.secrets.iter().map(|(_, v)| v.expose_secret()).collect();
        let limit = timeout.unsigned_abs();
        let started = Instant::now();
        tracing::info!(
            repo = request.repo,
            sha = request.sha,
            env = request.env,
            run = %request.run,
            program = %program,
            phase = %request.phase,
            timeout = %format_args!("{timeout:#}"),
            "deploy phase started"
        );

        let mut child = cmd.spawn().map_err(|e| DeployError::CouldNotStart {
            reason: format!("{program}: {}", os_error(&e)),
        })?;
        let mut group = GroupGuard(child.id());

        let sink = Arc::new(Mutex::new(Sink::default()));
        let mut pumps = JoinSet::new();
        if let Some(stdout) = child.stdout.take() {
            pumps.spawn(pump(stdout, Arc::clone(&sink)));
        }
        if let Some(stderr) = child.stderr.take() {
            pumps.spawn(pump(stderr, Arc::clone(&sink)));
        }

        let deadline = tokio::time::Instant::now() + limit;
        let outcome = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) => {
                group.disarm();
                // Leftover background processes may hold the pipes open: read what is there,
                // but do not wait for them.
                let _ = tokio::time::timeout(DRAIN_GRACE, drain(&mut pumps)).await;
                match exit_problem(status) {
                    None => Ok(()),
                    Some(reason) => Err(reason),
                }
            }
            Ok(Err(e)) => {
                group.kill();
                let _ = child.start_kill();
                Err(format!("lost track of {program}: {}", os_error(&e)))
            }
            Err(_) => {
                group.kill();
                let _ = child.start_kill();
                let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
                let _ = tokio::time::timeout(DRAIN_GRACE, drain(&mut pumps)).await;
                Err(format!("timed out after {timeout:#}"))
            }
        };
        pumps.abort_all();
        // The program has ended or been killed: its secret files go now.
        if let Some(files) = files {
            files.remove();
        }

        let raw = std::mem::take(&mut *sink.lock().unwrap_or_else(PoisonError::into_inner));
        let output = finish_output(&raw, &secrets);
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => {
                tracing::info!(
                    repo = request.repo,
                    sha = request.sha,
                    env = request.env,
                    run = %request.run,
                    duration_ms,
                    phase = %request.phase,
                    "deploy phase succeeded"
                );
                let reference = match request.phase {
                    Phase::Backup => Some(backup_reference(&output).unwrap_or_else(|| request.run.to_string())),
                    _ => None,
                };
                Ok(DeployReport {
                    output,
                    reference,
                    skipped: false,
                })
            }
            Err(reason) => {
                tracing::warn!(
                    repo = request.repo,
                    sha = request.sha,
                    env = request.env,
                    run = %request.run,
                    duration_ms,
                    reason = %reason,
                    phase = %request.phase,
                    "deploy phase failed"
                );
                Err(DeployError::Failed { reason, output })
            }
        }
    }
}

/// The secret files of one phase: a fresh directory (0700) holding each secret of
/// `secret_files` in a file named after its variable (0600). Dropping it removes the
/// directory; [`SecretFiles::remove`] does too, and says if it could not.
#[derive(Debug)]
struct SecretFiles {
    dir: tempfile::TempDir,
    /// Variable name → the file holding its secret.
    paths: Vec<(String, PathBuf)>,
}

impl SecretFiles {
    /// Writes each secret `wanted` names (by variable) from the resolved `secrets`; `None`
    /// when there are none to write.
    fn write(wanted: &BTreeMap<String, ParamName>, secrets: &[(String, SecretString)]) -> Result<Option<Self>, String> {
        if wanted.is_empty() {
            return Ok(None);
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("slipway-secrets-");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let dir = builder.tempdir().map_err(|e| {
            format!(
                "a private directory in {}: {}",
                std::env::temp_dir().display(),
                os_error(&e)
            )
        })?;
        let mut paths = Vec::with_capacity(wanted.len());
        for (var, param) in wanted {
            let value = secrets
                .iter()
                .find(|(name, _)| name == var)
                .map(|(_, value)| value)
                .ok_or_else(|| format!("{var}: secret {param} was not read"))?;
            let path = dir.path().join(var);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options
                .open(&path)
                .and_then(|mut file| file.write_all(value.expose_secret().as_bytes()))
                .map_err(|e| format!("{}: {}", path.display(), os_error(&e)))?;
            paths.push((var.clone(), path));
        }
        Ok(Some(Self { dir, paths }))
    }

    /// Removes the directory and its files, warning if that fails (a program that changed
    /// their permissions, say).
    fn remove(self) {
        let dir = self.dir.path().to_owned();
        if let Err(e) = self.dir.close() {
            tracing::warn!(dir = %dir.display(), error = %os_error(&e), "could not remove a deploy phase's secret files");
        }
    }
}

/// The reference a backup printed: the value of its last `SLIPWAY_BACKUP_REF=<reference>`
/// line. A backup that prints none is referred to by its run id.
pub fn backup_reference(output: &str) -> Option<String> {
    output
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("SLIPWAY_BACKUP_REF="))
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty() && r != MASK)
}

/// Replaces every non-empty secret value in `output` with `***`, longest secrets first so a
/// secret that contains another is masked whole.
pub fn mask(output: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut masked = output.to_owned();
    for secret in secrets {
        if masked.contains(secret) {
            masked = masked.replace(secret, MASK);
        }
    }
    masked
}

/// Cuts `output` to its last [`OUTPUT_LIMIT`] bytes on a char boundary, marking the cut. With
/// `already_cut`, the marker is added even if what is left fits.
fn trim_tail(output: &str, already_cut: bool) -> String {
    if output.len() <= OUTPUT_LIMIT && !already_cut {
        return output.to_owned();
    }
    let mut start = output.len().saturating_sub(OUTPUT_LIMIT);
    while !output.is_char_boundary(start) {
        start += 1;
    }
    format!("{TRIMMED_MARKER}{}", &output[start..])
}

/// Masks, then trims, the raw captured output.
fn finish_output(raw: &Sink, secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(&raw.bytes);
    trim_tail(&mask(&text, secrets), raw.dropped)
}

/// Why an exit status is a failure, or `None` for success.
fn exit_problem(status: std::process::ExitStatus) -> Option<String> {
    if status.success() {
        return None;
    }
    if let Some(code) = status.code() {
        return Some(format!("exited with status {code}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Some(format!("killed by signal {signal}"));
        }
    }
    Some(format!("ended abnormally ({status})"))
}

/// An OS error in words, without Rust's `(os error 2)` suffix.
fn os_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The merged output, in arrival order, bounded to the last [`RAW_KEEP`] bytes or so.
#[derive(Debug, Default)]
struct Sink {
    bytes: Vec<u8>,
    /// Some of the beginning was dropped.
    dropped: bool,
}

impl Sink {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * RAW_KEEP {
            let cut = self.bytes.len() - RAW_KEEP;
            self.bytes.drain(..cut);
            self.dropped = true;
        }
    }
}

/// Copies one stream into the sink a whole line at a time, so lines from stdout and stderr
/// interleave but do not tear.
async fn pump<R: AsyncRead + Unpin>(mut reader: R, sink: Arc<Mutex<Sink>>) {
    let mut buf = vec![0u8; 8 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let complete = match pending.iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None if pending.len() >= LONG_LINE => pending.len(),
            None => continue,
        };
        let rest = pending.split_off(complete);
        sink.lock().unwrap_or_else(PoisonError::into_inner).push(&pending);
        pending = rest;
    }
    if !pending.is_empty() {
        sink.lock().unwrap_or_else(PoisonError::into_inner).push(&pending);
    }
}

/// Waits for every pump to finish.
async fn drain(pumps: &mut JoinSet<()>) {
    while pumps.join_next().await.is_some() {}
}

/// Kills the deploy's process group unless disarmed: on timeout, and if the deploy is
/// cancelled while the program still runs.
#[derive(Debug)]
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// Sends SIGKILL to the whole process group (its id is the leader's pid, thanks to
    /// `process_group(0)`). `unsafe` is forbidden here and `libc` is not a dependency, so
    /// this asks `kill(1)`.
    fn kill(&mut self) {
        let Some(pgid) = self.0.take() else { return };
        let group = format!("-{pgid}");
        let killed = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !killed {
            // Fall back to the shell's builtin `kill`.
            let _ = std::process::Command::new("/bin/sh")
                .args(["-c", "kill -KILL -- \"$0\"", &group])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use jiff::SignedDuration;
    use secrecy::SecretString;

    use super::*;
    use crate::domain::RunId;

    const SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

    fn run_id() -> RunId {
        RunId::parse(&format!("shop-{SHA}")).unwrap()
    }

    /// Writes an executable `#!/bin/sh` script into `dir`.
    fn script(dir: &Path, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn target(command: Vec<String>, timeout: SignedDuration) -> DeployTargetConfig {
        DeployTargetConfig::Command {
            command,
            backup: None,
            migrate: None,
            restore: None,
            working_dir: None,
            timeout,
            secrets: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            env: BTreeMap::new(),
        }
    }

    async fn deploy(
        target: &DeployTargetConfig,
        secrets: &[(&str, &str)],
        artifact: Option<&str>,
    ) -> Result<DeployReport, DeployError> {
        deploy_phase(target, Phase::Release, None, secrets, artifact).await
    }

    async fn deploy_phase(
        target: &DeployTargetConfig,
        phase: Phase,
        backup: Option<&str>,
        secrets: &[(&str, &str)],
        artifact: Option<&str>,
    ) -> Result<DeployReport, DeployError> {
        deploy_as(
            target,
            phase,
            backup,
            secrets,
            artifact,
            crate::ports::DeployPurpose::Deploy,
        )
        .await
    }

    async fn deploy_as(
        target: &DeployTargetConfig,
        phase: Phase,
        backup: Option<&str>,
        secrets: &[(&str, &str)],
        artifact: Option<&str>,
        purpose: crate::ports::DeployPurpose<'_>,
    ) -> Result<DeployReport, DeployError> {
        let run = run_id();
        // Another test thread forking while this one wrote a script can leave the script
        // briefly "busy"; that is a test artefact, so try again.
        for _ in 0..20 {
            let request = DeployRequest {
                phase,
                backup,
                run: &run,
                purpose,
                repo: "acme/shop",
                sha: SHA,
                env: "staging",
                artifact,
                secrets: secrets
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), SecretString::from(*v)))
                    .collect(),
                target,
            };
            match CommandTarget.deploy(request).await {
                Err(DeployError::CouldNotStart { reason }) if reason.contains("busy") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        panic!("script stayed busy");
    }

    #[tokio::test]
    async fn each_phase_runs_its_own_program_and_a_backup_names_its_reference() {
        let dir = tempfile::tempdir().unwrap();
        let release = script(dir.path(), "release.sh", "echo \"release $SLIPWAY_PHASE\"");
        let backup = script(
            dir.path(),
            "backup.sh",
            "echo dumping\necho SLIPWAY_BACKUP_REF=dump-$SLIPWAY_RUN.sql\necho done",
        );
        let restore = script(dir.path(), "restore.sh", "echo \"restoring $SLIPWAY_BACKUP_REF\"");
        let DeployTargetConfig::Command { command, timeout, .. } = target(vec![release], SignedDuration::from_secs(10))
        else {
            unreachable!()
        };
        let full = DeployTargetConfig::Command {
            command,
            backup: Some(vec![backup]),
            migrate: None,
            restore: Some(vec![restore]),
            working_dir: None,
            timeout,
            secrets: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            env: BTreeMap::new(),
        };

        let made = deploy_phase(&full, Phase::Backup, None, &[], None).await.unwrap();
        assert_eq!(
            made.reference.as_deref(),
            Some(format!("dump-{}.sql", run_id()).as_str())
        );
        assert!(!made.skipped);

        let migrate = deploy_phase(&full, Phase::Migrate, None, &[], None).await.unwrap();
        assert!(migrate.skipped, "no migrate command: skipped, not failed");

        let released = deploy_phase(&full, Phase::Release, None, &[], None).await.unwrap();
        assert_eq!(released.output.trim(), "release release");

        let restored = deploy_phase(&full, Phase::Restore, Some("dump-1.sql"), &[], None)
            .await
            .unwrap();
        assert_eq!(restored.output.trim(), "restoring dump-1.sql");

        // A program can tell a run's own deploy from a rollback redeploying it.
        let stage = script(
            dir.path(),
            "stage.sh",
            "echo \"$SLIPWAY_STAGE of [$SLIPWAY_ROLLING_BACK] putting back $SLIPWAY_RUN\"",
        );
        let by_stage = target(vec![stage], SignedDuration::from_secs(10));
        let own = deploy_phase(&by_stage, Phase::Release, None, &[], None).await.unwrap();
        assert_eq!(own.output.trim(), format!("deploy of [] putting back {}", run_id()));
        let later = RunId::parse("shop-b2c3d4e5f60718293a4b5c6d7e8f901234567890").unwrap();
        let rollback = crate::ports::DeployPurpose::Rollback {
            rolling_back: &later,
            attempt: 1,
        };
        let back = deploy_as(&by_stage, Phase::Release, None, &[], None, rollback)
            .await
            .unwrap();
        assert_eq!(
            back.output.trim(),
            format!("rollback of [{later}] putting back {}", run_id())
        );

        // Without a restore command a rollback cannot restore: that is an error, not a skip.
        let bare = target(vec!["true".into()], SignedDuration::from_secs(10));
        let err = deploy_phase(&bare, Phase::Restore, Some("x"), &[], None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no restore command"), "{err}");
    }

    #[test]
    fn a_backup_reference_is_its_last_marker_line() {
        assert_eq!(
            backup_reference("a\nSLIPWAY_BACKUP_REF=one\nSLIPWAY_BACKUP_REF=two\n").as_deref(),
            Some("two")
        );
        assert_eq!(backup_reference("nothing here"), None);
        assert_eq!(
            backup_reference("SLIPWAY_BACKUP_REF=***"),
            None,
            "a masked secret is no reference"
        );
    }

    #[tokio::test]
    async fn slipways_own_environment_is_not_passed_on() {
        // cargo sets CARGO_MANIFEST_DIR for this test process; a deploy must not see it.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "deploy.sh",
            r#"echo "manifest=[${CARGO_MANIFEST_DIR:-}] path=[${PATH:+set}]""#,
        );
        let config = target(
            vec![dir.path().join("deploy.sh").display().to_string()],
            SignedDuration::from_secs(10),
        );
        let out = deploy(&config, &[], None).await.unwrap().output;
        assert!(out.contains("manifest=[] path=[set]"), "{out}");
    }

    #[tokio::test]
    async fn passes_slipway_variables_plain_env_and_runs_in_the_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "deploy.sh",
            r#"echo "repo=$SLIPWAY_REPO sha=$SLIPWAY_SHA env=$SLIPWAY_ENV"
echo "run=$SLIPWAY_RUN artifact=[$SLIPWAY_ARTIFACT] region=$REGION"
echo "pwd=$(pwd)"
echo "to stderr" >&2"#,
        );
        let mut config = target(vec!["./deploy.sh".into()], SignedDuration::from_secs(10));
        let DeployTargetConfig::Command { working_dir, env, .. } = &mut config else {
            unreachable!()
        };
        *working_dir = Some(dir.path().to_owned());
        env.insert("REGION".into(), "eu-west-1".into());

        let report = deploy(&config, &[], None).await.unwrap();
        let out = report.output;
        assert!(out.contains(&format!("repo=acme/shop sha={SHA} env=staging")), "{out}");
        assert!(
            out.contains(&format!("run=shop-{SHA} artifact=[] region=eu-west-1")),
            "{out}"
        );
        let real_dir = dir.path().canonicalize().unwrap();
        assert!(out.contains(&format!("pwd={}", real_dir.display())), "{out}");
        assert!(out.contains("to stderr"), "{out}");

        let with_artifact = deploy(&config, &[], Some("s3://bucket/shop.zip")).await.unwrap();
        assert!(with_artifact.output.contains("artifact=[s3://bucket/shop.zip]"));
    }

    #[tokio::test]
    async fn secrets_reach_the_program_but_are_masked_in_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            "deploy.sh",
            r#"echo "db=$DATABASE_URL"
echo "token=$API_TOKEN" >&2
test "$DATABASE_URL" = "postgres://u:hunter2@db/shop" && echo "db ok""#,
        );
        let config = target(vec![path], SignedDuration::from_secs(10));
        let report = deploy(
            &config,
            &[
                ("DATABASE_URL", "postgres://u:hunter2@db/shop"),
                ("API_TOKEN", "hunter2"),
            ],
            None,
        )
        .await
        .unwrap();
        assert!(report.output.contains("db=***"), "{}", report.output);
        assert!(report.output.contains("token=***"), "{}", report.output);
        assert!(report.output.contains("db ok"), "{}", report.output);
        assert!(!report.output.contains("hunter2"), "{}", report.output);
    }

    /// `target` with `SSH_KEY_FILE` and `KNOWN_HOSTS_FILE` as secret files.
    fn with_secret_files(mut target: DeployTargetConfig) -> DeployTargetConfig {
        let DeployTargetConfig::Command { secret_files, .. } = &mut target else {
            unreachable!()
        };
        for (var, param) in [
            ("SSH_KEY_FILE", "/slipway/shop/deploy-key"),
            ("KNOWN_HOSTS_FILE", "/slipway/shop/known-hosts"),
        ] {
            secret_files.insert(var.into(), ParamName::parse(param).unwrap());
        }
        target
    }

    const KEY: &str =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    const KNOWN_HOSTS: &str =
        "deploy.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n";

    /// Runs `body` as the release with the two secret files (and `TOKEN` as a plain secret),
    /// in a directory that also holds `expected-key` and `expected-known-hosts` to compare with.
    async fn deploy_with_files(body: &str, timeout: SignedDuration) -> Result<DeployReport, DeployError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("expected-key"), KEY).unwrap();
        std::fs::write(dir.path().join("expected-known-hosts"), KNOWN_HOSTS).unwrap();
        let path = script(dir.path(), "deploy.sh", body);
        let mut config = with_secret_files(target(vec![path], timeout));
        let DeployTargetConfig::Command { working_dir, .. } = &mut config else {
            unreachable!()
        };
        *working_dir = Some(dir.path().to_owned());
        deploy(
            &config,
            &[
                ("SSH_KEY_FILE", KEY),
                ("KNOWN_HOSTS_FILE", KNOWN_HOSTS),
                ("TOKEN", "plain-token"),
            ],
            None,
        )
        .await
    }

    /// The path the script printed as `file=<path>`.
    fn printed_path(output: &str) -> PathBuf {
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix("file="))
            .unwrap_or_else(|| panic!("no file= line in {output}"));
        PathBuf::from(line)
    }

    #[tokio::test]
    async fn secret_files_are_private_files_during_the_phase_and_gone_after_it() {
        // The script looks at what it was given, as a deploy script would use it, and reports.
        let report = deploy_with_files(
            r#"echo "file=$SSH_KEY_FILE"
echo "mode=$(stat -c %a "$SSH_KEY_FILE") dir=$(stat -c %a "$(dirname "$SSH_KEY_FILE")")"
echo "owner=$(stat -c %u "$SSH_KEY_FILE") me=$(id -u)"
[ "$(dirname "$SSH_KEY_FILE")" = "$(dirname "$KNOWN_HOSTS_FILE")" ] && echo "one directory"
cmp -s "$SSH_KEY_FILE" expected-key && echo "key content ok"
cmp -s "$KNOWN_HOSTS_FILE" expected-known-hosts && echo "known_hosts content ok"
echo "token=$TOKEN"
cat "$SSH_KEY_FILE""#,
            SignedDuration::from_secs(10),
        )
        .await
        .unwrap();
        let out = &report.output;
        assert!(out.contains("mode=600 dir=700\n"), "{out}");
        let owner = out.lines().find(|l| l.starts_with("owner=")).unwrap();
        let (owner, me) = owner.split_once(' ').unwrap();
        assert_eq!(owner.trim_start_matches("owner="), me.trim_start_matches("me="));
        assert!(out.contains("one directory"), "{out}");
        assert!(out.contains("key content ok"), "{out}");
        assert!(out.contains("known_hosts content ok"), "{out}");
        assert!(out.contains("token=***"), "a plain secret is still a variable: {out}");
        assert!(
            !out.contains("b3BlbnNzaC1rZXktdjEAAAAA"),
            "the file's secret is masked: {out}"
        );

        let file = printed_path(out);
        assert_eq!(file.file_name().unwrap(), "SSH_KEY_FILE");
        assert!(!file.exists(), "{} outlived its phase", file.display());
        assert!(!file.parent().unwrap().exists(), "its directory outlived its phase");
    }

    #[tokio::test]
    async fn secret_files_are_gone_after_a_failed_phase_and_after_a_timeout() {
        let failed = deploy_with_files("echo \"file=$SSH_KEY_FILE\"\nexit 4", SignedDuration::from_secs(10))
            .await
            .unwrap_err();
        let DeployError::Failed { reason, output } = failed else {
            panic!("expected Failed, got {failed:?}")
        };
        assert_eq!(reason, "exited with status 4");
        let file = printed_path(&output);
        assert!(
            !file.parent().unwrap().exists(),
            "{} outlived a failed phase",
            file.display()
        );

        // There while the phase runs, gone once its timeout killed it.
        let timed_out = deploy_with_files(
            "echo \"file=$SSH_KEY_FILE\"\ntest -f \"$SSH_KEY_FILE\" && echo present\nsleep 30",
            SignedDuration::from_secs(1),
        )
        .await
        .unwrap_err();
        let DeployError::Failed { reason, output } = timed_out else {
            panic!("expected Failed, got {timed_out:?}")
        };
        assert_eq!(reason, "timed out after 1s");
        assert!(output.contains("present"), "{output}");
        let file = printed_path(&output);
        assert!(!file.exists(), "{} outlived a phase that timed out", file.display());
        assert!(!file.parent().unwrap().exists());
    }

    #[tokio::test]
    async fn a_cancelled_phase_removes_its_secret_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("path");
        let path = script(
            dir.path(),
            "deploy.sh",
            &format!("echo \"$SSH_KEY_FILE\" > '{}'\nsleep 30", marker.display()),
        );
        let config = with_secret_files(target(vec![path], SignedDuration::from_secs(60)));
        let secrets = [("SSH_KEY_FILE", KEY), ("KNOWN_HOSTS_FILE", KNOWN_HOSTS)];
        // Give up on the phase once the script has said where its file is.
        let written = async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&marker)
                    && text.ends_with('\n')
                {
                    return PathBuf::from(text.trim());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let file = tokio::select! {
            ended = deploy(&config, &secrets, None) => panic!("the phase ended by itself: {ended:?}"),
            file = written => file,
        };
        assert!(
            !file.parent().unwrap().exists(),
            "{} outlived a cancelled phase",
            file.display()
        );
    }

    #[tokio::test]
    async fn a_secret_file_that_was_not_read_fails_before_running_anything() {
        let config = with_secret_files(target(vec!["true".into()], SignedDuration::from_secs(5)));
        let err = deploy(&config, &[("SSH_KEY_FILE", KEY)], None).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("KNOWN_HOSTS_FILE: secret /slipway/shop/known-hosts was not read"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_non_zero_exit_fails_with_the_status_and_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "deploy.sh", "echo 'migrating'\necho 'boom' >&2\nexit 3");
        let err = deploy(&target(vec![path], SignedDuration::from_secs(10)), &[], None)
            .await
            .unwrap_err();
        let DeployError::Failed { reason, output } = err else {
            panic!("expected Failed, got {err:?}")
        };
        assert_eq!(reason, "exited with status 3");
        assert!(output.contains("migrating") && output.contains("boom"), "{output}");
    }

    #[tokio::test]
    async fn a_program_killed_by_a_signal_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "deploy.sh", "kill -9 $$");
        let err = deploy(&target(vec![path], SignedDuration::from_secs(10)), &[], None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "killed by signal 9");
    }

    #[tokio::test]
    async fn arguments_are_passed_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "deploy.sh", r#"for a in "$@"; do echo "arg=[$a]"; done"#);
        let config = target(
            vec![path, "two words".into(), "$HOME".into(), "; rm -rf /".into()],
            SignedDuration::from_secs(10),
        );
        let out = deploy(&config, &[], None).await.unwrap().output;
        assert_eq!(out, "arg=[two words]\narg=[$HOME]\narg=[; rm -rf /]\n");
    }

    #[tokio::test]
    async fn stdin_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            "deploy.sh",
            r#"if read x; then echo "got [$x]"; else echo "eof"; fi"#,
        );
        let started = Instant::now();
        let report = deploy(&target(vec![path], SignedDuration::from_secs(5)), &[], None)
            .await
            .unwrap();
        assert_eq!(report.output, "eof\n");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleep.pid");
        let path = script(
            dir.path(),
            "deploy.sh",
            &format!("echo starting\nsleep 30 &\necho $! > '{}'\nwait", pid_file.display()),
        );
        let started = Instant::now();
        let err = deploy(&target(vec![path], SignedDuration::from_secs(1)), &[], None)
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        let DeployError::Failed { reason, output } = err else {
            panic!("expected Failed, got {err:?}")
        };
        assert_eq!(reason, "timed out after 1s");
        assert!(output.contains("starting"), "{output}");

        // The background `sleep` died with its script (it may linger as a zombie if nothing
        // reaps orphans in this container, but it no longer runs).
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let stat = Path::new("/proc").join(&pid).join("stat");
        let mut alive = true;
        for _ in 0..50 {
            alive = match std::fs::read_to_string(&stat) {
                Ok(s) => !matches!(
                    s.rsplit(')').next().and_then(|r| r.trim().chars().next()),
                    Some('Z' | 'X')
                ),
                Err(_) => false,
            };
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive, "the background sleep {pid} survived the timeout");
    }

    #[tokio::test]
    async fn a_missing_program_could_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = target(vec!["./deploy.sh".into()], SignedDuration::from_secs(5));
        let DeployTargetConfig::Command { working_dir, .. } = &mut config else {
            unreachable!()
        };
        *working_dir = Some(dir.path().to_owned());
        let err = deploy(&config, &[], None).await.unwrap_err();
        let DeployError::CouldNotStart { reason } = err else {
            panic!("expected CouldNotStart, got {err:?}")
        };
        assert_eq!(reason, "./deploy.sh: No such file or directory");
    }

    #[tokio::test]
    async fn a_missing_working_dir_could_not_start() {
        let mut config = target(vec!["true".into()], SignedDuration::from_secs(5));
        let DeployTargetConfig::Command { working_dir, .. } = &mut config else {
            unreachable!()
        };
        *working_dir = Some("/nonexistent/slipway-deploy".into());
        let err = deploy(&config, &[], None).await.unwrap_err();
        assert!(matches!(err, DeployError::CouldNotStart { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/slipway-deploy"), "{err}");
    }

    #[tokio::test]
    async fn long_output_keeps_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        // About 200 KiB: 5000 lines of 40 bytes, numbered.
        let path = script(
            dir.path(),
            "deploy.sh",
            r#"i=0; while [ $i -lt 5000 ]; do printf 'line %05d %s\n' $i 'secret-value-xxxxxxxxxx'; i=$((i+1)); done
echo "done""#,
        );
        let report = deploy(
            &target(vec![path], SignedDuration::from_secs(30)),
            &[("TOKEN", "secret-value")],
            None,
        )
        .await
        .unwrap();
        let out = report.output;
        assert!(out.starts_with(TRIMMED_MARKER), "{}", &out[..80]);
        assert!(out.len() <= OUTPUT_LIMIT + TRIMMED_MARKER.len());
        assert!(
            out.ends_with("line 04999 ***-xxxxxxxxxx\ndone\n"),
            "{}",
            &out[out.len() - 80..]
        );
        assert!(!out.contains("line 00000"));
        assert!(!out.contains("secret-value"));
    }

    #[test]
    fn mask_replaces_longest_secrets_first_and_ignores_empty_ones() {
        assert_eq!(
            mask("token=abc123 short=abc", &["abc", "abc123", ""]),
            "token=*** short=***"
        );
        assert_eq!(mask("nothing here", &[]), "nothing here");
        assert_eq!(mask("a-b-a", &["a", "a"]), "***-b-***");
    }

    #[test]
    fn trimming_cuts_on_a_char_boundary() {
        let text = "é".repeat(OUTPUT_LIMIT); // 2 bytes each
        let trimmed = trim_tail(&text, false);
        let tail = trimmed.strip_prefix(TRIMMED_MARKER).unwrap();
        assert_eq!(tail.len(), OUTPUT_LIMIT);
        assert!(tail.chars().all(|c| c == 'é'));

        let odd = format!("x{}", "é".repeat(OUTPUT_LIMIT / 2));
        let tail = trim_tail(&odd, false);
        assert_eq!(tail.strip_prefix(TRIMMED_MARKER).unwrap().len(), OUTPUT_LIMIT);

        assert_eq!(trim_tail("short", false), "short");
        assert_eq!(trim_tail("short", true), format!("{TRIMMED_MARKER}short"));
    }
}

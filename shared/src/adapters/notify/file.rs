//! The `file` channel: one JSON object per line, appended to a file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::ports::{Notification, Notifier, NotifyError};

/// Appends each notification to `path` as exactly `serde_json::to_string(&notification)`
/// followed by `\n`: one JSON object per line, the [`Notification`] itself.
///
/// The file is opened for append (and created) on every delivery, and each line goes out in
/// one write to a file opened with `O_APPEND`, so several processes appending to the same
/// file do not interleave their lines. A missing parent directory is created.
#[derive(Debug, Clone)]
pub struct FileNotifier {
    /// The file lines are appended to.
    pub path: PathBuf,
}

impl FileNotifier {
    /// A notifier appending to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

/// What went wrong with the file; the path is in the channel name.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("cannot create the parent directory")]
    CreateDir(#[source] io::Error),
    #[error("cannot open the file for appending")]
    Open(#[source] io::Error),
    #[error("cannot append to the file")]
    Write(#[source] io::Error),
}

#[async_trait]
impl Notifier for FileNotifier {
    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let mut line = serde_json::to_string(notification).map_err(|e| NotifyError::Permanent {
            channel: self.name(),
            source: e.into(),
        })?;
        line.push('\n');
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append(&path, &line))
            .await
            .map_err(|e| self.transient(e.into()))?
            .map_err(|e| self.transient(e.into()))
    }
}

impl FileNotifier {
    fn transient(&self, source: crate::ports::BoxError) -> NotifyError {
        NotifyError::Transient {
            channel: self.name(),
            source,
        }
    }
}

/// Appends `line` to `path` with a single `write_all` on an `O_APPEND` file.
fn append(path: &Path, line: &str) -> Result<(), FileError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(FileError::CreateDir)?;
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(FileError::Open)?;
    file.write_all(line.as_bytes()).map_err(FileError::Write)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::super::fixtures::notification;
    use super::*;

    #[tokio::test]
    async fn appends_one_json_object_per_line_that_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/notifications.jsonl");
        let notifier = FileNotifier::new(&path);
        assert_eq!(notifier.name(), format!("file:{}", path.display()));

        let mut failed = notification("failed");
        failed.alert = true;
        let sent = [notification("approval_requested"), failed];
        for n in &sent {
            notifier.deliver(n).await.unwrap();
        }

        let written = fs::read_to_string(&path).unwrap();
        assert!(written.ends_with('\n'));
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 2);
        for (line, n) in lines.iter().zip(&sent) {
            assert_eq!(*line, serde_json::to_string(n).unwrap());
            assert_eq!(&serde_json::from_str::<Notification>(line).unwrap(), n);
        }

        let approval: Value = serde_json::from_str(lines[0]).unwrap();
        for key in [
            "kind",
            "run_id",
            "repo",
            "sha",
            "environment",
            "approver",
            "approve_url",
            "reject_url",
        ] {
            assert!(
                approval.get(key).is_some_and(|v| !v.is_null()),
                "{key} missing in {approval}"
            );
        }
        assert_eq!(approval["kind"], "approval_requested");
    }

    #[tokio::test]
    async fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.jsonl");
        fs::write(&path, "{\"earlier\":true}\n").unwrap();
        FileNotifier::new(&path)
            .deliver(&notification("released"))
            .await
            .unwrap();
        let written = fs::read_to_string(&path).unwrap();
        assert_eq!(written.lines().count(), 2);
        assert!(written.starts_with("{\"earlier\":true}\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appenders_do_not_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.jsonl");
        let mut n = notification("failed");
        n.text = "x".repeat(64 * 1024);
        let n = Arc::new(n);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                // A notifier each, like separate processes.
                let (notifier, n) = (FileNotifier::new(&path), Arc::clone(&n));
                tokio::spawn(async move { notifier.deliver(&n).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let written = fs::read_to_string(&path).unwrap();
        assert_eq!(written.lines().count(), 32);
        for line in written.lines() {
            assert_eq!(&serde_json::from_str::<Notification>(line).unwrap(), n.as_ref());
        }
    }

    #[tokio::test]
    async fn io_errors_are_transient_and_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // The "directory" is a file, so the notifications file cannot be created in it.
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, "").unwrap();
        let path = blocker.join("notifications.jsonl");
        let err = FileNotifier::new(&path)
            .deliver(&notification("released"))
            .await
            .unwrap_err();
        match &err {
            NotifyError::Transient { channel, source } => {
                assert_eq!(channel, &format!("file:{}", path.display()));
                assert!(source.source().is_some(), "the io::Error is kept: {source:?}");
            }
            other => panic!("expected Transient, got {other:?}"),
        }
    }
}

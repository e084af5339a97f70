//! The `stdout` channel: [`render_text`] blocks on standard output.

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::render_text;
use crate::ports::{Notification, Notifier, NotifyError};

/// Where a [`StdoutNotifier`] writes: standard output, or any shared writer.
pub type SharedWriter = Arc<Mutex<dyn Write + Send>>;

/// Writes each notification as a [`render_text`] block followed by a blank line, flushed
/// after every block. Blocks never interleave: the writer is locked for the whole block.
#[derive(Clone)]
pub struct StdoutNotifier {
    out: SharedWriter,
}

impl StdoutNotifier {
    /// A notifier writing to the process's standard output.
    pub fn new() -> Self {
        Self::with_writer(Arc::new(Mutex::new(io::stdout())))
    }

    /// A notifier writing to `out` instead (a buffer in tests, a log file).
    pub fn with_writer(out: SharedWriter) -> Self {
        Self { out }
    }
}

impl Default for StdoutNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StdoutNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdoutNotifier").finish_non_exhaustive()
    }
}

#[async_trait]
impl Notifier for StdoutNotifier {
    fn name(&self) -> String {
        "stdout".to_owned()
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let block = format!("{}\n\n", render_text(notification));
        let out = Arc::clone(&self.out);
        // A full pipe blocks the writer: keep that off the async workers.
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            // A panic elsewhere while holding the lock leaves nothing half-valid to protect.
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            out.write_all(block.as_bytes())?;
            out.flush()
        })
        .await
        .map_err(|e| transient(e.into()))?
        .map_err(|e| transient(e.into()))
    }
}

fn transient(source: crate::ports::BoxError) -> NotifyError {
    NotifyError::Transient {
        channel: "stdout".to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::notification;
    use super::*;

    #[derive(Debug, Default)]
    struct Buffer(Vec<u8>, usize);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.1 += 1;
            Ok(())
        }
    }

    #[tokio::test]
    async fn writes_one_flushed_block_per_notification() {
        let buffer = Arc::new(Mutex::new(Buffer::default()));
        let notifier = StdoutNotifier::with_writer(buffer.clone());
        assert_eq!(notifier.name(), "stdout");
        let (a, b) = (notification("approval_requested"), notification("released"));
        notifier.deliver(&a).await.unwrap();
        notifier.deliver(&b).await.unwrap();

        let buffer = buffer.lock().unwrap();
        let written = String::from_utf8(buffer.0.clone()).unwrap();
        assert_eq!(written, format!("{}\n\n{}\n\n", render_text(&a), render_text(&b)));
        assert_eq!(buffer.1, 2, "flushed after each block");
    }

    #[derive(Debug)]
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_transient() {
        let notifier = StdoutNotifier::with_writer(Arc::new(Mutex::new(Broken)));
        let err = notifier.deliver(&notification("released")).await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Transient { channel, .. } if channel == "stdout"),
            "{err:?}"
        );
    }
}

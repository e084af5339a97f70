//! Capturing slipway's logs in a test, to check what they say — and what they never say.
//!
//! ```ignore
//! let logs = Logs::capture(tracing::Level::TRACE);
//! p.push(SHA).await;
//! assert!(!logs.text().contains("secret"));
//! ```
//!
//! The capture holds for the current thread (use a current-thread runtime, as
//! `#[tokio::test]` does) until the [`Logs`] is dropped. It records every event of every
//! target, with the fields of the spans it happened in, and every span's opening and closing
//! with its fields.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Captured log lines, in order. See the [module docs](self).
#[allow(missing_debug_implementations)] // holds a dispatcher guard
pub struct Logs {
    buffer: Buffer,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    /// Captures everything at `level` and above, of every target, from now on.
    pub fn capture(level: tracing::Level) -> Self {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_span_events(FmtSpan::FULL)
            .with_ansi(false)
            .with_target(true)
            .with_writer(buffer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // Callsites seen before this subscriber existed re-evaluate whether they are enabled.
        tracing::callsite::rebuild_interest_cache();
        Self { buffer, _guard: guard }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        let bytes = self.buffer.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

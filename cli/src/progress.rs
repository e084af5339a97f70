//! Progress on long commands (`bootstrap`, `deploy`, `rollback`, `watch`): a spinner with what
//! is happening now when stdout is a terminal; nothing extra when it is a pipe or a file, so
//! scripts and `--json` read only the lines they always did.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner, or nothing when stdout is not a terminal (or `quiet`, e.g. under `--json`).
pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    pub(crate) fn start(message: impl Into<String>, quiet: bool) -> Self {
        if quiet || !std::io::stdout().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(Some(bar))
    }

    /// What is happening now.
    pub(crate) fn set(&self, message: impl Into<String>) {
        if let Some(bar) = &self.0 {
            bar.set_message(message.into());
        }
    }

    /// Prints `line` above the spinner (or plainly without one).
    pub(crate) fn println(&self, line: impl AsRef<str>) {
        match &self.0 {
            Some(bar) => bar.println(line.as_ref()),
            None => println!("{}", line.as_ref()),
        }
    }

    /// Removes the spinner; what was printed stays.
    pub(crate) fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}

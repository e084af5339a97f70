//! Progress on long commands (`bootstrap`, `deploy`, `rollback --wait`, `watch`): a spinner
//! with the work under way when stdout is a terminal; plain lines otherwise, so scripts read
//! what they always did.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of a long command: a spinner when standard output is a terminal (and no JSON is
/// asked for), else plain lines — on standard output, or on standard error with `--json`,
/// whose standard output is the one JSON document.
#[derive(Debug)]
pub(crate) struct Progress {
    spinner: Option<ProgressBar>,
    to_stderr: bool,
}

impl Progress {
    pub(crate) fn new(json: bool) -> Self {
        let spinner = (!json && std::io::stdout().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar
        });
        Self {
            spinner,
            to_stderr: json,
        }
    }

    /// Shows `what` as the work under way.
    pub(crate) fn start(&mut self, what: String) {
        match &self.spinner {
            Some(bar) => {
                bar.set_message(what);
                bar.enable_steady_tick(Duration::from_millis(120));
            }
            None => self.say(&what),
        }
    }

    /// Changes what the spinner says (nothing without a spinner: `line` says what ended).
    pub(crate) fn status(&mut self, what: String) {
        if let Some(bar) = &self.spinner {
            bar.set_message(what);
        }
    }

    /// A line that stays.
    pub(crate) fn line(&mut self, text: String) {
        match &self.spinner {
            Some(bar) => bar.println(text),
            None => self.say(&text),
        }
    }

    /// The work ended: `text` replaces the spinner.
    pub(crate) fn finish(&mut self, text: String) {
        match self.spinner.take() {
            Some(bar) => bar.finish_with_message(text),
            None => self.say(&text),
        }
    }

    /// The work ended without a word of its own (an error follows on standard error).
    pub(crate) fn clear(&mut self) {
        if let Some(bar) = self.spinner.take() {
            bar.finish_and_clear();
        }
    }

    fn say(&self, text: &str) {
        if self.to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

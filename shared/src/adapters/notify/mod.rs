//! Notification channels: where a rendered [`Notification`] goes.
//!
//! - [`StdoutNotifier`]: a few human-readable lines on standard output ([`render_text`]).
//! - [`FileNotifier`]: one JSON object per line, appended to a file.
//! - [`SlackNotifier`]: a Block Kit message posted to a Slack incoming webhook ([`blocks`]).
//! - [`WebhookNotifier`]: the notification as JSON, POSTed to a URL with an HMAC signature.
//!
//! [`channels`] builds one notifier per `[[notify]]` entry of `slipway.toml`.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::ChannelConfig;
use crate::ports::{Notification, Notifier, SecretStore};

pub mod file;
pub mod slack;
pub mod stdout;
pub mod webhook;

#[cfg(test)]
mod fixtures;

pub use file::FileNotifier;
pub use slack::{SlackNotifier, blocks};
pub use stdout::StdoutNotifier;
pub use webhook::WebhookNotifier;

/// One notifier per configured channel, in configuration order.
///
/// Slack webhook URLs and webhook signing secrets are not read here: each delivery asks
/// `secrets` for them, so a store that refreshes its values (the AWS parameter store adapter,
/// with its TTL) hands over a rotated URL or secret. The embedded secrets file is read once,
/// at start-up.
pub fn channels(config: &[ChannelConfig], secrets: Arc<dyn SecretStore>) -> Vec<Arc<dyn Notifier>> {
    config
        .iter()
        .map(|channel| -> Arc<dyn Notifier> {
            match channel {
                ChannelConfig::Stdout => Arc::new(StdoutNotifier::new()),
                ChannelConfig::File { path } => Arc::new(FileNotifier::new(path.clone())),
                ChannelConfig::Slack { webhook_url } => {
                    Arc::new(SlackNotifier::new(webhook_url.clone(), Arc::clone(&secrets)))
                }
                ChannelConfig::Webhook { url, secret } => {
                    Arc::new(WebhookNotifier::new(url.clone(), secret.clone(), Arc::clone(&secrets)))
                }
            }
        })
        .collect()
}

/// A short human-readable rendering of `n`: the title; `repo@sha "subject" by author`; the
/// text; for approvals who decides, the approve and reject links and the deadline; for a
/// release, whose rollback link it is and until when it works; the run link. Lines are separated by `\n`, with no trailing newline; other control characters
/// (terminal escape sequences in a commit message) are replaced by `U+FFFD`.
pub fn render_text(n: &Notification) -> String {
    let mut out = String::new();
    if n.alert {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "!! {} is red: fix it before anything else", n.branch);
    }
    let _ = writeln!(out, "{}", n.title);
    let _ = writeln!(
        out,
        "{}@{} \"{}\" by {}",
        n.repo,
        short_sha(&n.sha),
        subject(&n.commit_message),
        n.author
    );
    if let Some(stage) = &n.stage {
        let _ = writeln!(out, "Stage: {stage}");
    }
    if !n.text.trim().is_empty() {
        let _ = writeln!(out, "{}", n.text.trim_end());
    }
    if let Some(approver) = &n.approver {
        match &n.address {
            Some(address) => {
                let _ = writeln!(out, "For: {approver} <{address}>");
            }
            None => {
                let _ = writeln!(out, "For: {approver}");
            }
        }
    }
    if let Some(url) = &n.approve_url {
        let _ = writeln!(out, "Approve: {url}");
    }
    if let Some(url) = &n.reject_url {
        let _ = writeln!(out, "Reject: {url}");
    }
    if let Some(url) = &n.rollback_url {
        let _ = writeln!(out, "Roll back: {url}");
    }
    if let Some(deadline) = &n.expires_at {
        if n.approve_url.is_some() || n.reject_url.is_some() {
            let _ = writeln!(out, "Decide by: {deadline}");
        } else {
            let _ = writeln!(out, "Link works until: {deadline}");
        }
    }
    let _ = write!(out, "Run: {}", n.run_url);
    if let Some(url) = &n.sign_in_url {
        let _ = write!(out, "\nSign in to slipway: {url}");
    }
    // Commit messages and reasons come from outside: no terminal escape sequences.
    out.chars()
        .map(|c| if c.is_control() && c != '\n' { '\u{fffd}' } else { c })
        .collect()
}

/// The 12-character abbreviation of a commit SHA shown to people.
pub(crate) fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The first line of a commit message, trimmed.
pub(crate) fn subject(commit_message: &str) -> &str {
    commit_message.lines().next().unwrap_or("").trim()
}

/// The HTTP client a channel posts with: bounded by `timeout`, and never following a
/// redirect, which would only carry a message (and its signature) somewhere nobody
/// configured.
pub(crate) fn outbound_client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        // Building fails only if the TLS backend cannot start; every request also sets its
        // own timeout, so the default client loses nothing that matters.
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::fixtures::{KINDS, notification};
    use super::*;
    use crate::domain::ParamName;

    #[test]
    fn render_text_for_each_kind() {
        for kind in KINDS {
            insta::assert_snapshot!(format!("render_text_{kind}"), render_text(&notification(kind)));
        }
    }

    #[test]
    fn render_text_for_a_failure_while_main_is_red() {
        let mut n = notification("failed");
        n.alert = true;
        insta::assert_snapshot!(render_text(&n));
    }

    #[test]
    fn render_text_neutralises_control_characters() {
        let mut n = notification("failed");
        n.commit_message = "Fix \u{1b}[2J the screen\r".to_owned();
        n.text = "line one\nline two\u{7}".to_owned();
        let text = render_text(&n);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("\"Fix \u{fffd}[2J the screen\" by bob"), "{text:?}");
        assert!(text.contains("line one\nline two\u{fffd}\n"), "{text:?}");
    }

    #[test]
    fn short_sha_and_subject_tolerate_odd_input() {
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(short_sha("0123456789abcdef"), "0123456789ab");
        assert_eq!(subject(""), "");
        assert_eq!(subject("  Fix it  \n\nBecause."), "Fix it");
    }

    #[test]
    fn channels_builds_one_notifier_per_entry_in_order() {
        #[derive(Debug)]
        struct NoSecrets;
        #[async_trait::async_trait]
        impl SecretStore for NoSecrets {
            async fn get(&self, name: &ParamName) -> Result<secrecy::SecretString, crate::ports::SecretError> {
                Err(crate::ports::SecretError::NotFound(name.clone()))
            }
        }
        let config = [
            ChannelConfig::Stdout,
            ChannelConfig::File {
                path: "out/notifications.jsonl".into(),
            },
            ChannelConfig::Slack {
                webhook_url: ParamName::parse("/slipway/slack/webhook-url").unwrap(),
            },
            ChannelConfig::Webhook {
                url: "https://hooks.example.com/slipway?token=t".parse().unwrap(),
                secret: ParamName::parse("/slipway/webhook/secret").unwrap(),
            },
        ];
        let names: Vec<String> = channels(&config, Arc::new(NoSecrets))
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(
            names,
            [
                "stdout",
                "file:out/notifications.jsonl",
                "slack",
                "webhook:hooks.example.com"
            ]
        );
    }
}

//! Secrets from a local TOML file: the embedded backend's [`SecretStore`].
//!
//! The file is one flat table whose keys are parameter names shaped like SSM Parameter Store
//! paths and whose values are strings:
//!
//! ```toml
//! "/slipway/github/webhook-secret" = "…"
//! "/slipway/shop/ci-secret" = "…"
//! ```
//!
//! Values only ever live in [`SecretString`]s. Neither [`SecretsFile`]'s `Debug` output nor
//! any [`SecretsFileError`] contains a value: a syntax error is reported by line and column
//! only, because the TOML parser's own message quotes the offending line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use secrecy::SecretString;

use crate::domain::{IdError, ParamName};
use crate::ports::{SecretError, SecretStore};

/// Why a secrets file could not be loaded. Every variant names the file (or the `origin`
/// given to [`SecretsFile::from_toml`]) and, where there is one, the key; none contains a
/// secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsFileError {
    /// The file could not be read (missing, permission denied, not UTF-8). For a missing
    /// file the message says how to make one.
    #[error("cannot read the secrets file {}: {}{}", path.display(), crate::config::io_reason(error), read_hint(error))]
    Read { path: PathBuf, error: std::io::Error },
    /// The text is not valid TOML. Only the position is reported: the parser's own message
    /// quotes the offending line, which may hold a secret, so it is deliberately dropped.
    #[error("secrets file {origin} is not valid TOML (line {line}, column {column})")]
    Syntax { origin: String, line: usize, column: usize },
    /// A key is not a parameter name like `/slipway/github/webhook-secret`.
    #[error("secrets file {origin}: key {key:?} is not a valid parameter name")]
    BadName {
        origin: String,
        key: String,
        #[source]
        source: IdError,
    },
    /// A key's value is not a string (a number, a table, …). The value itself is not shown.
    #[error("secrets file {origin}: the value of {key:?} must be a string, found a {found}")]
    NotAString {
        origin: String,
        key: String,
        found: &'static str,
    },
}

/// Named secrets loaded once from a TOML file (or given programmatically), served from memory.
#[derive(Clone)]
pub struct SecretsFile {
    origin: String,
    secrets: BTreeMap<ParamName, SecretString>,
}

impl SecretsFile {
    /// Reads and parses the secrets file at `path` (see [`SecretsFile::from_toml`]).
    ///
    /// On unix, logs a warning (without failing) if the file is readable by its group or by
    /// others, suggesting `chmod 600`.
    pub fn load(path: &Path) -> Result<Self, SecretsFileError> {
        let read_err = |error| SecretsFileError::Read {
            path: path.to_owned(),
            error,
        };
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        warn_if_shared(path);
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses `text`, a flat TOML table of parameter names to string values. `origin` names
    /// where the text came from (a path) in errors and in `Debug` output.
    ///
    /// Fails on the first key that is not a valid [`ParamName`] or whose value is not a
    /// string, and on any TOML syntax error; errors never contain a value.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SecretsFileError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |span| line_and_column(text, span.start));
            SecretsFileError::Syntax {
                origin: origin.to_owned(),
                line,
                column,
            }
        })?;
        let mut secrets = BTreeMap::new();
        for (key, value) in table {
            let name = ParamName::parse(&key).map_err(|source| SecretsFileError::BadName {
                origin: origin.to_owned(),
                key: key.clone(),
                source,
            })?;
            let toml::Value::String(value) = value else {
                return Err(SecretsFileError::NotAString {
                    origin: origin.to_owned(),
                    found: value.type_str(),
                    key,
                });
            };
            secrets.insert(name, SecretString::from(value));
        }
        Ok(Self {
            origin: origin.to_owned(),
            secrets,
        })
    }

    /// Secrets given directly, for tests and programmatic setups. A later pair with the same
    /// name replaces an earlier one.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (ParamName, SecretString)>) -> Self {
        Self {
            origin: "(in memory)".to_owned(),
            secrets: pairs.into_iter().collect(),
        }
    }

    /// The names of every secret held, in lexical order. Never the values.
    pub fn names(&self) -> impl Iterator<Item = &ParamName> {
        self.secrets.keys()
    }
}

impl fmt::Debug for SecretsFile {
    /// Shows where the secrets came from and their names, never their values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsFile")
            .field("origin", &self.origin)
            .field("names", &self.secrets.keys().map(ParamName::as_str).collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl SecretStore for SecretsFile {
    /// The secret named `name`, or [`SecretError::NotFound`] if the file has no such key.
    async fn get(&self, name: &ParamName) -> Result<SecretString, SecretError> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(name.clone()))
    }
}

/// The 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_and_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..at.min(text.len())];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, column)
}

/// Warns if the file at `path` can be read by anyone but its owner.
#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the secrets file is accessible to group or others; consider `chmod 600`"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

fn read_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            " — create one with `slipway init` (it generates random values), or pass --secrets"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use secrecy::ExposeSecret;

    use super::*;

    const FILE: &str = r#"
"/slipway/github/webhook-secret" = "hunter2-webhook"
"/slipway/shop/ci-secret" = "s3cr3t-ci"
"#;

    fn name(s: &str) -> ParamName {
        ParamName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn loads_a_file_and_serves_its_values() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(FILE.as_bytes()).unwrap();
        let secrets = SecretsFile::load(file.path()).unwrap();

        let value = secrets.get(&name("/slipway/shop/ci-secret")).await.unwrap();
        assert_eq!(value.expose_secret(), "s3cr3t-ci");
        let value = secrets.get(&name("/slipway/github/webhook-secret")).await.unwrap();
        assert_eq!(value.expose_secret(), "hunter2-webhook");
        let names: Vec<&str> = secrets.names().map(ParamName::as_str).collect();
        assert_eq!(names, ["/slipway/github/webhook-secret", "/slipway/shop/ci-secret"]);
    }

    #[tokio::test]
    async fn a_missing_name_is_not_found() {
        let secrets = SecretsFile::from_toml(FILE, "test.toml").unwrap();
        let err = secrets.get(&name("/slipway/nope")).await.unwrap_err();
        assert!(
            matches!(&err, SecretError::NotFound(n) if n.as_str() == "/slipway/nope"),
            "{err:?}"
        );
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = SecretsFile::load(&path).unwrap_err();
        assert!(matches!(err, SecretsFileError::Read { .. }));
        assert!(
            err.to_string().contains("absent.toml: No such file or directory — "),
            "{err}"
        );
        assert!(err.to_string().contains("slipway init"), "{err}");
    }

    #[test]
    fn an_invalid_key_is_named_and_the_value_is_not() {
        let text = "\"/slipway/ok\" = \"fine-value\"\n\"slipway no slash\" = \"leaky-value\"\n";
        let err = SecretsFile::from_toml(text, "secrets.toml").unwrap_err();
        assert!(matches!(&err, SecretsFileError::BadName { key, .. } if key == "slipway no slash"));
        let msg = err.to_string();
        assert!(
            msg.contains("slipway no slash") && msg.contains("secrets.toml"),
            "{msg}"
        );
        assert!(!format!("{err:?}").contains("leaky-value"));
    }

    #[test]
    fn a_non_string_value_is_refused_without_showing_it() {
        let err = SecretsFile::from_toml("\"/slipway/port\" = 424242\n", "secrets.toml").unwrap_err();
        assert!(matches!(&err, SecretsFileError::NotAString { key, found: "integer", .. } if key == "/slipway/port"));
        assert!(!err.to_string().contains("424242"), "{err}");
        assert!(!format!("{err:?}").contains("424242"));
        let err = SecretsFile::from_toml("[\"/slipway\"]\nx = \"nested-value\"\n", "secrets.toml").unwrap_err();
        assert!(matches!(&err, SecretsFileError::NotAString { key, found: "table", .. } if key == "/slipway"));
        assert!(!format!("{err} {err:?}").contains("nested-value"));
    }

    #[test]
    fn a_syntax_error_reports_the_line_but_never_the_secret() {
        let text = "\"/slipway/ok\" = \"fine\"\n\"/slipway/broken\" = \"topsecret-123\" trailing\n";
        let err = SecretsFile::from_toml(text, "secrets.toml").unwrap_err();
        assert!(matches!(err, SecretsFileError::Syntax { line: 2, .. }), "{err:?}");
        let mut chain = String::new();
        let mut cur: Option<&dyn std::error::Error> = Some(&err);
        while let Some(e) = cur {
            chain.push_str(&e.to_string());
            cur = e.source();
        }
        assert!(chain.contains("secrets.toml") && chain.contains("line 2"), "{chain}");
        assert!(!chain.contains("topsecret"), "{chain}");
        assert!(!format!("{err:?}").contains("topsecret"));

        // An unterminated string: the parser would quote the line.
        let err = SecretsFile::from_toml("\"/slipway/a\" = \"unterminated-secret\n", "s.toml").unwrap_err();
        assert!(matches!(err, SecretsFileError::Syntax { line: 1, .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("unterminated-secret"));
    }

    #[test]
    fn debug_output_never_contains_values() {
        let secrets = SecretsFile::from_toml(FILE, "test.toml").unwrap();
        let shown = format!("{secrets:?} {secrets:#?}");
        assert!(shown.contains("/slipway/shop/ci-secret"), "{shown}");
        assert!(!shown.contains("s3cr3t-ci") && !shown.contains("hunter2"), "{shown}");

        let pairs = SecretsFile::from_pairs([(name("/slipway/x"), SecretString::from("pair-value"))]);
        assert!(!format!("{pairs:?}").contains("pair-value"));
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("ab", 99), (1, 3));
    }

    #[cfg(unix)]
    #[test]
    fn a_world_readable_file_still_loads() {
        use std::os::unix::fs::PermissionsExt;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(FILE.as_bytes()).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(SecretsFile::load(file.path()).unwrap().names().count(), 2);
    }
}

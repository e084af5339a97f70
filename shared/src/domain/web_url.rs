//! Links that came from outside — a commit's or a build's page, as a git host or CI reported
//! it — and that slipway shows on its pages or sends in notifications.
//!
//! A [`WebUrl`] is an absolute `http` or `https` URL with a host, so a payload saying
//! `"build_url": "javascript:alert(1)"` (or `data:`, `vbscript:`, a relative path) can never
//! become a link anyone clicks. The URL is kept as the `url` crate normalised it (escaped,
//! lower-case scheme and host).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::echo::clip;

/// The longest link accepted, in bytes.
pub const MAX_WEB_URL: usize = 2048;

/// An absolute `http`/`https` URL with a host. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebUrl(url::Url);

/// Why a link was refused. The message never repeats the link itself, only its scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebUrlError {
    #[error("not an absolute URL ({0})")]
    NotAUrl(url::ParseError),
    #[error("its scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("it has no host")]
    NoHost,
    #[error("it is longer than {MAX_WEB_URL} bytes")]
    TooLong,
}

impl WebUrl {
    pub fn parse(s: &str) -> Result<Self, WebUrlError> {
        if s.len() > MAX_WEB_URL {
            return Err(WebUrlError::TooLong);
        }
        let url = url::Url::parse(s).map_err(WebUrlError::NotAUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebUrlError::Scheme(clip(url.scheme()).to_string()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WebUrlError::NoHost);
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }

    /// For a stored link (`#[serde(default, deserialize_with = "WebUrl::lenient")]`): one that
    /// is not a valid [`WebUrl`] — stored before links were checked — reads as `None`, so an
    /// old run always loads, without its bad link.
    pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WebUrl>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Text(String),
            Other(serde::de::IgnoredAny),
        }
        Ok(match Option::<Stored>::deserialize(d)? {
            Some(Stored::Text(s)) => WebUrl::parse(&s).ok(),
            Some(Stored::Other(_)) | None => None,
        })
    }
}

/// The scheme of something that was meant to be a link, for a log line that says why it was
/// dropped without repeating it: `javascript`, or `-` when there is none.
pub fn scheme_of(raw: &str) -> String {
    match raw.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() && scheme.len() <= 32 => clip(scheme).to_string(),
        _ => "-".to_owned(),
    }
}

impl fmt::Display for WebUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link reads as its text: `run.build.url.as_deref()` is an `Option<&str>`.
impl std::ops::Deref for WebUrl {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for WebUrl {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::str::FromStr for WebUrl {
    type Err = WebUrlError;
    fn from_str(s: &str) -> Result<Self, WebUrlError> {
        Self::parse(s)
    }
}

impl Serialize for WebUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WebUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_and_https_links_with_a_host() {
        for ok in [
            "https://ci.example.com/builds/42",
            "http://127.0.0.1:8080/x?y=1#z",
            "HTTPS://GitHub.com/acme/shop/commit/a1",
        ] {
            assert!(WebUrl::parse(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("javascript:alert(1)", "its scheme \"javascript\" is not http or https"),
            (
                "JavaScript:alert(document.cookie)",
                "its scheme \"javascript\" is not http or https",
            ),
            (
                "data:text/html,<script>alert(1)</script>",
                "its scheme \"data\" is not http or https",
            ),
            ("vbscript:msgbox", "its scheme \"vbscript\" is not http or https"),
            ("ftp://example.com/x", "its scheme \"ftp\" is not http or https"),
            ("/relative/path", "not an absolute URL (relative URL without a base)"),
            (
                "//evil.example.com/x",
                "not an absolute URL (relative URL without a base)",
            ),
            ("http://", "not an absolute URL (empty host)"),
        ] {
            assert_eq!(WebUrl::parse(bad).unwrap_err().to_string(), why, "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEB_URL));
        assert_eq!(WebUrl::parse(&long), Err(WebUrlError::TooLong));
    }

    #[test]
    fn links_are_kept_normalised_and_escaped() {
        let url = WebUrl::parse("HTTPS://CI.example.com/a b\"<x>").unwrap();
        assert_eq!(url.as_str(), "https://ci.example.com/a%20b%22%3Cx%3E");
        assert_eq!(serde_json::to_value(&url).unwrap(), url.as_str());
    }

    #[test]
    fn strict_when_read_as_input_lenient_when_read_from_storage() {
        assert!(serde_json::from_str::<WebUrl>(r#""javascript:alert(1)""#).is_err());

        #[derive(Deserialize)]
        struct Stored {
            #[serde(default, deserialize_with = "WebUrl::lenient")]
            url: Option<WebUrl>,
        }
        let read = |json: &str| serde_json::from_str::<Stored>(json).unwrap().url;
        assert_eq!(read(r#"{"url":"javascript:alert(1)"}"#), None);
        assert_eq!(read(r#"{"url":42}"#), None);
        assert_eq!(read(r#"{"url":null}"#), None);
        assert_eq!(read("{}"), None);
        assert_eq!(
            read(r#"{"url":"https://ci.example.com/1"}"#).map(|u| u.to_string()),
            Some("https://ci.example.com/1".to_owned())
        );
    }

    #[test]
    fn a_dropped_link_is_described_by_its_scheme_only() {
        assert_eq!(scheme_of("javascript:alert(document.cookie)"), "javascript");
        assert_eq!(scheme_of("no scheme at all"), "-");
        assert_eq!(scheme_of(&format!("{}:x", "s".repeat(100))), "-");
    }
}

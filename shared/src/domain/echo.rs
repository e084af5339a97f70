//! Values from a request that slipway repeats back — in an answer, an error message or a log
//! line — are cut to a short prefix first, so a 600 KB field never becomes a 600 KB answer or
//! log line. Every such echo goes through [`clip`] (or [`clip_quoted`] for a parser's error
//! message, which quotes the value it choked on).

use std::fmt;

/// How many characters of a value are echoed.
pub const ECHO_CHARS: usize = 64;

/// A longer message (a parser's error, with its own words around the quoted value) is cut
/// here, after its quoted values were clipped.
const MESSAGE_CHARS: usize = 400;

/// A value from outside, ready to echo: at most [`ECHO_CHARS`] characters, then `…` and the
/// original length in bytes when it was longer. `Display` writes control characters escaped
/// (`\n`), so an echoed value cannot start a new log line; `Debug` quotes it.
#[derive(Clone, Copy)]
pub struct Clipped<'a> {
    value: &'a str,
    limit: usize,
}

/// The value as it may be echoed: `clip(&status)` in `format!` or `tracing` fields.
pub fn clip(value: &str) -> Clipped<'_> {
    Clipped {
        value,
        limit: ECHO_CHARS,
    }
}

impl Clipped<'_> {
    /// The kept prefix, and whether anything was cut.
    fn prefix(&self) -> (&str, bool) {
        match self.value.char_indices().nth(self.limit) {
            Some((end, _)) => (&self.value[..end], true),
            None => (self.value, false),
        }
    }

    fn suffix(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "… ({} bytes)", self.value.len())
    }
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, cut) = self.prefix();
        for c in prefix.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        if cut { self.suffix(f) } else { Ok(()) }
    }
}

impl fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, cut) = self.prefix();
        write!(f, "{prefix:?}")?;
        if cut { self.suffix(f) } else { Ok(()) }
    }
}

/// A parser's error message (serde's `unknown variant \`…\``, `invalid type: string "…"`)
/// with every quoted value in it clipped, and the whole cut to a few hundred characters.
pub fn clip_quoted(message: &str) -> String {
    use fmt::Write as _;
    let mut out = String::new();
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest.as_bytes()[open];
        out.push_str(&rest[..=open]);
        let inner = &rest[open + 1..];
        let close = if quote == b'`' {
            inner.find('`')
        } else {
            closing_double_quote(inner)
        };
        match close {
            Some(close) => {
                let _ = write!(out, "{}", clip(&inner[..close]));
                out.push(quote as char);
                rest = &inner[close + 1..];
            }
            None => {
                let _ = write!(out, "{}", clip(inner));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    if out.chars().count() > MESSAGE_CHARS {
        let whole = Clipped {
            value: &out,
            limit: MESSAGE_CHARS,
        };
        return whole.to_string();
    }
    out
}

/// Where a `"…"` that Rust's `Debug` wrote ends: the first `"` not escaped by a backslash.
fn closing_double_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'\\' if !escaped => escaped = true,
            b'"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_echoed_whole() {
        assert_eq!(clip("success").to_string(), "success");
        assert_eq!(format!("{:?}", clip("a\"b")), r#""a\"b""#);
        assert_eq!(clip(&"é".repeat(64)).to_string(), "é".repeat(64));
    }

    #[test]
    fn long_values_keep_a_prefix_and_say_how_long_they_were() {
        let big = "x".repeat(600 * 1024);
        let shown = clip(&big).to_string();
        assert_eq!(shown, format!("{}… (614400 bytes)", "x".repeat(64)));
        let debug = format!("{:?}", clip(&big));
        assert!(debug.len() < 100, "{debug}");
        // A multi-byte character at the cut is kept whole.
        let wide = "é".repeat(100);
        assert_eq!(clip(&wide).to_string(), format!("{}… (200 bytes)", "é".repeat(64)));
    }

    #[test]
    fn control_characters_cannot_start_a_log_line() {
        assert_eq!(clip("a\nb\r\u{1b}[31m").to_string(), "a\\nb\\r\\u{1b}[31m");
    }

    #[test]
    fn parser_messages_keep_their_words_and_clip_the_quoted_value() {
        let big = "y".repeat(600_000);
        let error = serde_json::from_str::<Shape>(&format!(r#"{{"kind":"{big}"}}"#)).unwrap_err();
        let said = clip_quoted(&error.to_string());
        assert!(said.len() < 300, "{said}");
        assert!(
            said.starts_with(&format!("unknown variant `{}… (600000 bytes)`", "y".repeat(64))),
            "{said}"
        );
        assert!(said.contains("expected `circle` or `square`"), "{said}");

        let error = serde_json::from_str::<Shape>(&format!(r#"{{"kind":"circle","size":"{big}"}}"#)).unwrap_err();
        let said = clip_quoted(&error.to_string());
        assert!(
            said.starts_with(&format!("invalid type: string \"{}… (600000 bytes)\"", "y".repeat(64))),
            "{said}"
        );

        // Unbalanced quotes in the value cannot let it through either.
        let sneaky = format!("unknown variant `a`{big}`, expected x");
        assert!(clip_quoted(&sneaky).len() < 1_000);
        assert_eq!(clip_quoted(r#"say "a\"b" `c`"#), r#"say "a\"b" `c`"#);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        kind: Kind,
        #[serde(default)]
        size: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Circle,
        Square,
    }
}

//! Secrets: a type that never prints its value, and redaction of known secret values.
//!
//! Client secrets and tokens live in [`Secret`]; its `Debug` and `Display` print
//! `[redacted]`. Providers sometimes echo a token in an error body (Fitbit does), so
//! every secret the process handles is also registered here, and text that may carry
//! provider content (error messages, log lines) passes through [`redact`].

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::sync::{Mutex, OnceLock, RwLock};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// A secret string: client secret, access or refresh token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value and registers it for redaction.
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

fn registry() -> &'static RwLock<BTreeSet<String>> {
    static SECRETS: OnceLock<RwLock<BTreeSet<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(BTreeSet::new()))
}

/// Remembers a value so [`redact`] removes it from text. Values shorter than 6
/// characters are not registered (they would blank out ordinary words).
pub fn register(value: &str) {
    if value.len() < 6 {
        return;
    }
    if let Ok(read) = registry().read() {
        if read.contains(value) {
            return;
        }
    }
    if let Ok(mut write) = registry().write() {
        write.insert(value.to_owned());
    }
}

/// Replaces every registered secret in `text` with `[redacted]`.
pub fn redact(text: &str) -> String {
    let Ok(secrets) = registry().read() else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    // Longest first, so a secret containing another is removed whole.
    let mut ordered: Vec<&String> = secrets.iter().collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in ordered {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// A log writer that redacts registered secrets from each line before it reaches stderr.
#[derive(Debug, Default)]
pub struct RedactingStderr {
    buffer: Mutex<Vec<u8>>,
}

impl Write for &RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        b.extend_from_slice(buf);
        while let Some(pos) = b.iter().position(|c| *c == b'\n') {
            let line: Vec<u8> = b.drain(..=pos).collect();
            let text = redact(&String::from_utf8_lossy(&line));
            std::io::stderr().write_all(text.as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if !b.is_empty() {
            let text = redact(&String::from_utf8_lossy(&b));
            b.clear();
            std::io::stderr().write_all(text.as_bytes())?;
        }
        std::io::stderr().flush()
    }
}

/// The process-wide redacting log writer.
pub fn log_writer() -> &'static RedactingStderr {
    static WRITER: OnceLock<RedactingStderr> = OnceLock::new();
    WRITER.get_or_init(RedactingStderr::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_are_redacted_from_text() {
        let s = Secret::new("eyJhbGciOi-secret-token");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(
            redact("Access token expired: eyJhbGciOi-secret-token."),
            "Access token expired: [redacted]."
        );
        register("abc");
        assert_eq!(redact("abc"), "abc");
    }
}

//! Secrets: a type that never prints its value, and redaction of known secret values in
//! every form in which they are sent.
//!
//! Client secrets and tokens live in [`Secret`]; its `Debug` and `Display` print
//! `[redacted]`. Providers sometimes echo a token in an error body (Fitbit does), and a
//! token endpoint that echoes the whole request shows secrets as they were sent: inside
//! the Basic credential (`base64(client_id:client_secret)`), percent- or form-encoded
//! (`%2F`, `+` for a space), or JSON-escaped (`\/`). So every secret the process handles
//! is registered here, each registered value is expanded into those encodings, and text
//! that may carry provider content (error messages, log lines, stored statuses) passes
//! through [`redact`].
//!
//! Cost: the encodings of every registered value are compiled into one Aho-Corasick
//! automaton (leftmost-longest, so a secret containing another is removed whole), rebuilt
//! only when the set of values changes; a redaction is one scan of the text. Values are
//! interned: every [`Secret`] of one value shares one allocation, so the registry knows
//! which values are still held. Values no [`Secret`] holds any more stay registered for a
//! while (a late echo of a rotated token is still caught); beyond [`DEAD_KEPT`] of them the
//! oldest are forgotten. Values registered with [`register`] (passwords and client secrets
//! read from the environment or a form) are kept for the life of the process.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are never registered (they would blank out ordinary words).
pub const MIN_LEN: usize = 6;

/// How many values that no [`Secret`] holds any more stay registered.
pub const DEAD_KEPT: usize = 256;

/// What JavaScript's `encodeURIComponent` leaves alone; clients that build query strings
/// by hand often encode like this.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// A secret string: client secret, access or refresh token, PKCE verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value and registers it for redaction.
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        if value.len() < MIN_LEN {
            return Secret(Arc::from(value));
        }
        Secret(global().intern(&value))
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

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
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

/// Remembers a value for the life of the process so [`redact`] removes it from text.
/// Values shorter than [`MIN_LEN`] are not registered.
pub fn register(value: &str) {
    if value.len() >= MIN_LEN {
        global().pin(value);
    }
}

/// The HTTP Basic credential for a client, as sent (`base64(client_id:client_secret)`),
/// registered for redaction in all its forms.
pub fn basic_credential(client_id: &str, client_secret: &Secret) -> Secret {
    Secret::new(STANDARD.encode(format!("{client_id}:{}", client_secret.expose())))
}

/// Replaces every registered secret, in every form it is sent in, with `[redacted]`.
pub fn redact(text: &str) -> String {
    global().redactor().redact(text)
}

/// Redacts every string (and every object key) inside a JSON value.
pub fn redact_json(value: &mut Value) {
    let redactor = global().redactor();
    redactor.redact_value(value);
}

/// The forms in which `value` may appear in text that went over HTTP or through JSON:
/// as is, form-encoded (`+` for a space), percent-encoded (upper- and lower-case hex,
/// everything or only what `encodeURIComponent` encodes), JSON-escaped, and JSON-escaped
/// with `\/` (PHP's default).
pub fn encoded_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let percent = utf8_percent_encode(value, NON_ALPHANUMERIC).to_string();
    let component = utf8_percent_encode(value, URI_COMPONENT).to_string();
    for encoded in [form, percent, component] {
        forms.push(lowercase_hex(&encoded));
        forms.push(encoded);
    }
    if let Ok(quoted) = serde_json::to_string(value) {
        let escaped = quoted[1..quoted.len() - 1].to_owned();
        forms.push(escaped.replace('/', "\\/"));
        forms.push(escaped);
    }
    forms.sort();
    forms.dedup();
    forms
}

/// `%2F` -> `%2f`.
fn lowercase_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_percent = 0;
    for c in text.chars() {
        if c == '%' {
            after_percent = 2;
            out.push(c);
        } else if after_percent > 0 {
            after_percent -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A registered value.
struct Entry {
    /// The interned allocation while some [`Secret`] holds it.
    live: Option<Weak<str>>,
    /// Registered with [`register`]: kept for the life of the process.
    pinned: bool,
    /// When it was last registered or interned (for forgetting the oldest dead ones).
    seq: u64,
}

impl Entry {
    fn dead(&self) -> bool {
        !self.pinned && self.upgrade().is_none()
    }

    fn upgrade(&self) -> Option<Arc<str>> {
        self.live.as_ref().and_then(Weak::upgrade)
    }
}

/// The registered values and the automaton compiled from them.
#[derive(Default)]
struct Registry {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    next_seq: u64,
    /// Prune dead entries when the registry reaches this size.
    prune_at: usize,
    /// `None` when the entries changed since it was built.
    redactor: Option<Arc<Redactor>>,
    /// The automaton over the values registered before [`State::recent`]; `None` when
    /// values were forgotten since, so that it must be rebuilt over all entries.
    base: Option<Arc<AhoCorasick>>,
    /// Values added since `base` was built, matched by a second, small automaton; when
    /// there are more than [`RECENT_MAX`], `base` is rebuilt over all of them.
    recent: Vec<String>,
    /// How often the automaton was built (tests check that redaction does not rebuild).
    builds: u64,
}

impl State {
    fn touch(&mut self, value: &str, pinned: bool) -> &mut Entry {
        self.next_seq += 1;
        let seq = self.next_seq;
        if !self.entries.contains_key(value) {
            if self.entries.len() >= self.prune_at.max(2 * DEAD_KEPT) {
                self.prune();
            }
            self.redactor = None;
            self.recent.push(value.to_owned());
            // More than the small automaton takes: the next redaction rebuilds the
            // large one over every value, so neither is kept until then.
            if self.recent.len() > RECENT_MAX {
                self.recent.clear();
                self.base = None;
            }
        }
        let entry = self.entries.entry(value.to_owned()).or_insert(Entry {
            live: None,
            pinned,
            seq,
        });
        entry.pinned |= pinned;
        entry.seq = seq;
        entry
    }

    /// Forgets the oldest values no [`Secret`] holds, keeping [`DEAD_KEPT`] of them.
    fn prune(&mut self) {
        let mut dead: Vec<(u64, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.dead())
            .map(|(k, e)| (e.seq, k.clone()))
            .collect();
        if dead.len() > DEAD_KEPT {
            dead.sort_unstable();
            for (_, key) in &dead[..dead.len() - DEAD_KEPT] {
                self.entries.remove(key);
            }
            self.redactor = None;
            self.base = None;
        }
        self.prune_at = self.entries.len() + DEAD_KEPT;
    }
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn intern(&self, value: &str) -> Arc<str> {
        if let Some(live) = self.read().entries.get(value).and_then(Entry::upgrade) {
            return live;
        }
        let mut state = self.write();
        let entry = state.touch(value, false);
        if let Some(live) = entry.upgrade() {
            return live;
        }
        let live: Arc<str> = Arc::from(value);
        entry.live = Some(Arc::downgrade(&live));
        live
    }

    fn pin(&self, value: &str) {
        if self.read().entries.get(value).is_some_and(|e| e.pinned) {
            return;
        }
        self.write().touch(value, true);
    }

    fn redactor(&self) -> Arc<Redactor> {
        if let Some(redactor) = &self.read().redactor {
            return redactor.clone();
        }
        let mut state = self.write();
        if let Some(redactor) = &state.redactor {
            return redactor.clone();
        }
        let state = &mut *state;
        if state.base.is_none() || state.recent.len() > RECENT_MAX {
            state.base = Redactor::matcher(state.entries.keys()).map(Arc::new);
            state.recent.clear();
        }
        let recent = Redactor::matcher(state.recent.iter());
        let redactor = Arc::new(Redactor {
            matchers: state
                .base
                .iter()
                .cloned()
                .chain(recent.map(Arc::new))
                .collect(),
        });
        state.builds += 1;
        state.redactor = Some(redactor.clone());
        redactor
    }
}

fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// How many values are added before the large automaton is rebuilt over all values:
/// a new secret (every fetch interns its user's tokens) costs the build of an automaton
/// over at most this many values, not over every value kept.
const RECENT_MAX: usize = 32;

/// The compiled automata over every form of every registered value: one over the values
/// known when it was built, one over those added since.
struct Redactor {
    matchers: Vec<Arc<AhoCorasick>>,
}

impl Redactor {
    fn matcher<'a>(values: impl Iterator<Item = &'a String>) -> Option<AhoCorasick> {
        let mut patterns: Vec<String> = values.flat_map(|v| encoded_forms(v)).collect();
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return None;
        }
        AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .ok()
    }

    fn redact(&self, text: &str) -> String {
        match self.matchers.as_slice() {
            [] => text.to_owned(),
            [matcher] => {
                let mut out = String::with_capacity(text.len());
                matcher.replace_all_with(text, &mut out, |_, _, dst| {
                    dst.push_str(REDACTED);
                    true
                });
                out
            }
            matchers => {
                // Every span either automaton finds is hidden; overlapping spans are
                // hidden as one, so no part of a longer secret stays visible.
                let mut spans: Vec<(usize, usize)> = matchers
                    .iter()
                    .flat_map(|m| m.find_iter(text).map(|f| (f.start(), f.end())))
                    .collect();
                if spans.is_empty() {
                    return text.to_owned();
                }
                spans.sort_unstable();
                let mut out = String::with_capacity(text.len());
                let mut copied = 0;
                let mut i = 0;
                while i < spans.len() {
                    let (start, mut end) = spans[i];
                    i += 1;
                    while i < spans.len() && spans[i].0 < end {
                        end = end.max(spans[i].1);
                        i += 1;
                    }
                    out.push_str(&text[copied..start]);
                    out.push_str(REDACTED);
                    copied = end;
                }
                out.push_str(&text[copied..]);
                out
            }
        }
    }

    fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                let redacted = self.redact(s);
                if redacted != *s {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_value(i)),
            Value::Object(map) => {
                let keys_leak = map.keys().any(|k| self.redact(k) != *k);
                if keys_leak {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        map.insert(self.redact(&k), v);
                    }
                }
                map.values_mut().for_each(|v| self.redact_value(v));
            }
            _ => {}
        }
    }
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

    // Secrets in the forms they were sent in.
    #[test]
    fn encoded_forms_of_a_secret_are_redacted() {
        let secret = Secret::new("s3/cr+et= with space");
        let forms = [
            "s3/cr+et= with space",
            "s3%2Fcr%2Bet%3D+with+space",
            "s3%2fcr%2bet%3d+with+space",
            "s3%2Fcr%2Bet%3D%20with%20space",
            "s3\\/cr+et= with space",
        ];
        for form in forms {
            assert_eq!(redact(&format!("<{form}>")), "<[redacted]>", "{form}");
        }
        let basic = basic_credential("23FAKE", &secret);
        let header = format!("Authorization: Basic {}", basic.expose());
        assert_eq!(redact(&header), "Authorization: Basic [redacted]");
        let escaped = basic.expose().replace('/', "\\/");
        assert_eq!(redact(&escaped), "[redacted]", "{escaped}");
    }

    #[test]
    fn a_secret_containing_another_is_removed_whole() {
        let _short = Secret::new("inner-secret");
        let _long = Secret::new("outer-inner-secret-tail");
        assert_eq!(redact("x outer-inner-secret-tail y"), "x [redacted] y");
        assert_eq!(redact("x inner-secret y"), "x [redacted] y");
    }

    #[test]
    fn strings_and_keys_inside_json_are_redacted() {
        let _s = Secret::new("json-secret-value");
        let mut v = serde_json::json!({"a": ["json-secret-value"], "json-secret-value": 1});
        redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["[redacted]"], "[redacted]": 1}));
    }

    // A new secret builds only the small automaton; spans of both are hidden.
    #[test]
    fn secrets_added_later_are_matched_with_the_earlier_ones() {
        let registry = Registry::default();
        let _outer = registry.intern("outer-inner-secret-tail");
        let _left = registry.intern("left-half-over");
        let first = registry.redactor();
        assert_eq!(first.matchers.len(), 1);
        let _inner = registry.intern("inner-secret");
        let _right = registry.intern("half-over-right");
        let both = registry.redactor();
        assert_eq!(both.matchers.len(), 2, "the large automaton is kept");
        assert!(Arc::ptr_eq(&first.matchers[0], &both.matchers[0]));
        assert_eq!(both.redact("x outer-inner-secret-tail y"), "x [redacted] y");
        assert_eq!(both.redact("x inner-secret y"), "x [redacted] y");
        assert_eq!(both.redact("x left-half-over-right y"), "x [redacted] y");
        for i in 0..=RECENT_MAX {
            registry.pin(&format!("pinned-value-{i:04}"));
        }
        let rebuilt = registry.redactor();
        assert_eq!(
            rebuilt.matchers.len(),
            1,
            "{RECENT_MAX} values later, one again"
        );
        assert_eq!(
            rebuilt.redact("x inner-secret pinned-value-0000"),
            "x [redacted] [redacted]"
        );
    }

    // Redaction cost must not grow with every secret ever seen.
    #[test]
    fn redaction_does_not_rebuild_and_dead_secrets_are_bounded() {
        let registry = Registry::default();
        let pinned = "pinned-password-value";
        registry.pin(pinned);
        let held: Vec<Arc<str>> = (0..5)
            .map(|i| registry.intern(&format!("held-token-{i:04}")))
            .collect();
        for i in 0..(4 * DEAD_KEPT) {
            drop(registry.intern(&format!("dead-token-{i:06}")));
        }
        // Without any redaction in between, the values waiting for an automaton stay
        // bounded too (a server whose fetches all succeed redacts nothing).
        assert!(registry.read().recent.len() <= RECENT_MAX);
        let redactor = registry.redactor();
        let builds = registry.read().builds;
        for _ in 0..100 {
            let _ = registry.redactor().redact("nothing to see here");
        }
        assert_eq!(
            registry.read().builds,
            builds,
            "redaction rebuilt the automaton"
        );
        let state = registry.read();
        let dead = state.entries.values().filter(|e| e.dead()).count();
        assert!(dead <= 2 * DEAD_KEPT, "{dead} dead secrets kept");
        assert!(state.entries.contains_key(pinned));
        drop(state);
        for h in &held {
            assert_eq!(redactor.redact(h), REDACTED, "{h} is still held");
        }
        assert_eq!(redactor.redact(pinned), REDACTED);
        let newest = format!("dead-token-{:06}", 4 * DEAD_KEPT - 1);
        assert_eq!(redactor.redact(&newest), REDACTED, "recent dead ones stay");
        assert_eq!(
            redactor.redact("dead-token-000000"),
            "dead-token-000000",
            "the oldest dead ones are forgotten"
        );
    }
}

//! Secrets encrypted at rest, for either backend: [`SealedStore`] wraps a store and
//! encrypts the secret leaves of the tree on the way in and decrypts them on the way out,
//! so the rest of healthpull reads and writes plain tokens.
//!
//! Which leaves are secret is fixed by their place in the tree ([`SEALED`]): a token's
//! `access_token` and `refresh_token`, a pending consent's PKCE `verifier`, the app's
//! `client_secret` and the setup page's form key `csrf_key`. A sealed leaf is the string `enc:v1:<base64(nonce | ciphertext)>`:
//! XChaCha20-Poly1305 with a random 24-byte nonce, the leaf's path as associated data (a
//! ciphertext copied to another user's token does not open), and the key from the
//! environment variable `store.key_env` names.
//!
//! Without a key, writes store plain text as before and reading a sealed leaf is an
//! error naming the missing key, never an absent token. With a key, plain leaves written
//! before the key was set are read as they are and sealed by the next write.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde_json::Value;

use super::{Store, StoreError, StorePath};

/// The tree positions of secret leaves; `*` stands for any one step.
pub const SEALED: &[&[&str]] = &[
    &[
        "identities",
        "*",
        "plugindata",
        "*",
        "token",
        "access_token",
    ],
    &[
        "identities",
        "*",
        "plugindata",
        "*",
        "token",
        "refresh_token",
    ],
    &["plugindata", "*", "pending", "*", "verifier"],
    &["plugindata", "*", "client_secret"],
    &["plugindata", "*", "csrf_key"],
];

/// The prefix of a sealed leaf.
pub const SEALED_PREFIX: &str = "enc:v1:";

const NONCE_LEN: usize = 24;

/// The at-rest key: 32 bytes.
#[derive(Clone)]
pub struct StoreKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

/// Why a key text is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the store key must be 32 bytes written as base64 (44 characters) or hex (64 digits)")]
pub struct KeyError;

impl StoreKey {
    /// Reads a key written as 64 hex digits or as base64 of 32 bytes (surrounding
    /// whitespace ignored).
    pub fn parse(text: &str) -> Result<StoreKey, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| KeyError))
                .collect::<Result<Vec<u8>, KeyError>>()?
        } else {
            STANDARD.decode(text).map_err(|_| KeyError)?
        };
        if bytes.len() != 32 {
            return Err(KeyError);
        }
        Ok(StoreKey {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
        })
    }

    /// The sealed form of `plain` stored at `path`.
    fn seal(&self, path: &str, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: path.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(bytes))
    }

    /// The plain text of a sealed leaf at `path`.
    fn open(&self, path: &str, sealed: &str) -> Result<String, String> {
        let bytes = STANDARD
            .decode(sealed.trim().trim_start_matches(SEALED_PREFIX))
            .map_err(|_| "the sealed value is not base64".to_owned())?;
        if bytes.len() < NONCE_LEN {
            return Err("the sealed value is too short".to_owned());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: path.as_bytes(),
                },
            )
            .map_err(|_| {
                "it does not open with the configured key (another key, or the value was changed or moved)"
                    .to_owned()
            })?;
        String::from_utf8(plain).map_err(|_| "the opened value is not UTF-8".to_owned())
    }
}

/// A store whose secret leaves are encrypted at rest when a key is configured.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    key: Option<StoreKey>,
}

impl SealedStore {
    /// Wraps `inner`; `key: None` stores plain text and refuses to read sealed leaves.
    pub fn new(inner: Arc<dyn Store>, key: Option<StoreKey>) -> SealedStore {
        SealedStore { inner, key }
    }

    /// Opens the sealed leaves of `value`, read at `path`.
    fn open_leaves(&self, path: &StorePath, value: &mut Value) -> Result<(), StoreError> {
        each_sealed_leaf(path, value, &mut |at, leaf| {
            let Value::String(text) = leaf else {
                return Ok(());
            };
            if !text.starts_with(SEALED_PREFIX) {
                return Ok(());
            }
            let Some(key) = &self.key else {
                return Err(StoreError::Sealed {
                    path: at.to_owned(),
                    detail: "it is encrypted, but no key is configured: set store.key_env to the variable holding the key it was written with".to_owned(),
                });
            };
            let plain = key.open(at, text).map_err(|detail| StoreError::Sealed {
                path: at.to_owned(),
                detail,
            })?;
            *leaf = Value::String(plain);
            Ok(())
        })
    }

    /// `value` as it is written at `path` with `key`: its secret leaves sealed.
    fn sealed(key: &StoreKey, path: &str, value: &Value) -> Result<Value, StoreError> {
        let parsed = StorePath::parse(path)?;
        let mut value = value.clone();
        each_sealed_leaf(&parsed, &mut value, &mut |at, leaf| {
            if let Value::String(text) = leaf {
                if !text.starts_with(SEALED_PREFIX) {
                    *leaf = Value::String(key.seal(at, text));
                }
            }
            Ok(())
        })?;
        Ok(value)
    }
}

/// Calls `visit(full_path, leaf)` on every leaf of `value` (stored at `path`) that sits at
/// a sealed position. Only the branches a sealed position can reach are walked, so large
/// sensor trees cost nothing.
fn each_sealed_leaf(
    path: &StorePath,
    value: &mut Value,
    visit: &mut dyn FnMut(&str, &mut Value) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for pattern in SEALED {
        if path.steps.len() > pattern.len() {
            continue;
        }
        let matches = path
            .steps
            .iter()
            .zip(pattern.iter())
            .all(|(step, p)| *p == "*" || p == step);
        if matches {
            walk(value, &path.text, &pattern[path.steps.len()..], visit)?;
        }
    }
    Ok(())
}

fn walk(
    value: &mut Value,
    at: &str,
    rest: &[&str],
    visit: &mut dyn FnMut(&str, &mut Value) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let Some((first, rest)) = rest.split_first() else {
        return visit(at, value);
    };
    let Value::Object(map) = value else {
        return Ok(());
    };
    if *first == "*" {
        for (key, child) in map.iter_mut() {
            walk(child, &format!("{at}/{key}"), rest, visit)?;
        }
    } else if let Some(child) = map.get_mut(*first) {
        walk(child, &format!("{at}/{first}"), rest, visit)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for SealedStore {
    async fn get(&self, path: &str) -> Result<Option<Value>, StoreError> {
        let parsed = StorePath::parse(path)?;
        let Some(mut value) = self.inner.get(path).await? else {
            return Ok(None);
        };
        self.open_leaves(&parsed, &mut value)?;
        Ok(Some(value))
    }

    async fn get_many(&self, paths: &[&str]) -> Result<Vec<Option<Value>>, StoreError> {
        let parsed = paths
            .iter()
            .map(|path| StorePath::parse(path))
            .collect::<Result<Vec<_>, _>>()?;
        let mut values = self.inner.get_many(paths).await?;
        for (path, value) in parsed.iter().zip(values.iter_mut()) {
            if let Some(value) = value {
                self.open_leaves(path, value)?;
            }
        }
        Ok(values)
    }

    async fn put(&self, path: &str, value: &Value) -> Result<(), StoreError> {
        let Some(key) = &self.key else {
            return self.inner.put(path, value).await;
        };
        self.inner.put(path, &Self::sealed(key, path, value)?).await
    }

    async fn put_many(&self, writes: &[(&str, &Value)]) -> Result<(), StoreError> {
        let Some(key) = &self.key else {
            return self.inner.put_many(writes).await;
        };
        let sealed = writes
            .iter()
            .map(|(path, value)| Ok((*path, Self::sealed(key, path, value)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let writes: Vec<(&str, &Value)> =
            sealed.iter().map(|(path, value)| (*path, value)).collect();
        self.inner.put_many(&writes).await
    }

    async fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.inner.delete(path).await
    }

    /// The subtree as stored: sealed leaves stay sealed.
    async fn export_xml(&self, path: &str) -> Result<Option<String>, StoreError> {
        self.inner.export_xml(path).await
    }

    async fn save(&self) -> Result<(), StoreError> {
        self.inner.save().await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn keys_are_hex_or_base64_of_32_bytes() {
        let from_hex = StoreKey::parse(HEX_KEY).expect("hex");
        let b64 = STANDARD.encode((0u8..32).collect::<Vec<u8>>());
        let from_b64 = StoreKey::parse(&format!(" {b64}\n")).expect("base64");
        let sealed = from_hex.seal("a/b", "token-value");
        assert_eq!(from_b64.open("a/b", &sealed).as_deref(), Ok("token-value"));
        for bad in ["", "abcd", &HEX_KEY[..62], &STANDARD.encode([1u8; 31])] {
            assert_eq!(StoreKey::parse(bad).err(), Some(KeyError), "{bad}");
        }
        assert_eq!(format!("{from_hex:?}"), "StoreKey([redacted])");
    }

    #[test]
    fn a_sealed_value_opens_only_at_its_own_path() {
        let key = StoreKey::parse(HEX_KEY).expect("key");
        let sealed = key.seal("identities/jack/plugindata/p/token/refresh_token", "rt-1");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("rt-1"));
        assert!(
            key.open("identities/jill/plugindata/p/token/refresh_token", &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(
            key.open(
                "identities/jack/plugindata/p/token/refresh_token",
                &tampered
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn reads_and_writes_of_several_paths_seal_and_open_each() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let inner: Arc<dyn Store> =
            Arc::new(super::super::SqliteStore::open(&dir.path().join("s.db")).expect("open"));
        let key = StoreKey::parse(HEX_KEY).expect("key");
        let store = SealedStore::new(inner.clone(), Some(key));
        let user = "identities/jack/plugindata/p";
        let token = serde_json::json!({"token": {"access_token": "at-123456", "scope": "s"}});
        let secret = serde_json::json!("cs-123456");
        store
            .put_many(&[(user, &token), ("plugindata/p/client_secret", &secret)])
            .await
            .expect("write");
        let raw = inner
            .get_many(&[
                &format!("{user}/token/access_token"),
                "plugindata/p/client_secret",
            ])
            .await
            .expect("raw");
        for value in &raw {
            let text = value.as_ref().and_then(Value::as_str).expect("a string");
            assert!(text.starts_with(SEALED_PREFIX), "{text}");
        }
        let read = store
            .get_many(&[user, "plugindata/p/client_secret", "plugindata/p/absent"])
            .await
            .expect("read");
        assert_eq!(read, [Some(token), Some(secret), None]);
        let without_key = SealedStore::new(inner, None);
        let e = without_key
            .get_many(&["plugindata/p/absent", user])
            .await
            .expect_err("sealed");
        assert!(matches!(e, StoreError::Sealed { .. }), "{e}");
    }

    #[test]
    fn only_sealed_positions_are_visited() {
        let path = StorePath::parse("identities/jack").expect("path");
        let mut value = serde_json::json!({
            "plugindata": {
                "p": {"token": {"access_token": "a", "refresh_token": "r", "scope": "s"}, "period": "1m"},
                "q": {"access_token": "not a token position"}
            }
        });
        let mut seen = Vec::new();
        each_sealed_leaf(&path, &mut value, &mut |at, _| {
            seen.push(at.to_owned());
            Ok(())
        })
        .expect("walk");
        assert_eq!(
            seen,
            [
                "identities/jack/plugindata/p/token/access_token",
                "identities/jack/plugindata/p/token/refresh_token"
            ]
        );
    }
}

//! Token-signing keys: generated on first start, kept in the store with their private parts
//! sealed by the operator's key-encryption key (AES-256-GCM, the `kid` as associated data), and
//! held in memory as a [`Keyring`] that every process rebuilds from the store on a timer.
//!
//! Key states follow from `activate_at` alone, so processes never disagree and no update
//! statement is needed: the newest key whose `activate_at` has passed signs; a newer one is
//! published but waits (pre-publication, OIDC Core §10.1.1); older ones stay published until
//! every token they signed has expired plus `keys.retired_grace`, then are deleted.

use crate::config::KekSource;
use aws_lc_rs::aead::{self, Aad, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use segl_core::UnixTime;
use segl_core::audit::{Event, EventKind, Outcome};
use segl_jose::{Alg, SigningKey};
use segl_store::{Store, StoredKey};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// A key problem: bad KEK, undecryptable key, store failure.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key-encryption key is missing or malformed.
    #[error("key-encryption key: {0}")]
    Kek(String),
    /// A stored key could not be opened or parsed.
    #[error("signing key {kid}: {what}")]
    Stored {
        /// Which key.
        kid: String,
        /// What is wrong.
        what: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] segl_store::Error),
    /// Key generation or export failed.
    #[error(transparent)]
    Jose(#[from] segl_jose::Error),
}

/// The operator's key-encryption key.
pub struct Kek(RandomizedNonceKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(…)")
    }
}

impl Kek {
    /// Parses 32 bytes in base64 (standard alphabet, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Kek, KeyError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::Kek("not valid base64".into()))?,
        );
        if bytes.len() != 32 {
            return Err(KeyError::Kek(format!(
                "must be 32 bytes, got {} (make one with: openssl rand -base64 32)",
                bytes.len()
            )));
        }
        let key = RandomizedNonceKey::new(&aead::AES_256_GCM, &bytes)
            .map_err(|_| KeyError::Kek("rejected by AES-256-GCM".into()))?;
        Ok(Kek(key))
    }

    /// Loads the KEK from its configured source; in development mode a missing file is created
    /// (the returned flag says so).
    pub fn load(source: &KekSource, env_value: Option<&str>) -> Result<(Kek, bool), KeyError> {
        match source {
            KekSource::Env => Ok((Kek::from_base64(env_value.unwrap_or(""))?, false)),
            KekSource::File(path) => {
                let text =
                    Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                        KeyError::Kek(format!("cannot read {}: {e}", path.display()))
                    })?);
                Ok((
                    Kek::from_base64(&text)
                        .map_err(|e| KeyError::Kek(format!("{}: {e}", path.display())))?,
                    false,
                ))
            }
            KekSource::DevFile(path) => {
                if path.exists() {
                    return Kek::load(&KekSource::File(path.clone()), None);
                }
                let mut raw = Zeroizing::new([0u8; 32]);
                segl_jose::random_bytes(raw.as_mut())?;
                let text =
                    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw.as_ref()));
                write_private_file(path, text.as_bytes())
                    .map_err(|e| KeyError::Kek(format!("cannot write {}: {e}", path.display())))?;
                Ok((Kek::from_base64(&text)?, true))
            }
        }
    }

    fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut data = plaintext.to_vec();
        let nonce = self
            .0
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut data)
            .map_err(|_| KeyError::Kek("encryption failed".into()))?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&data);
        data.iter_mut().for_each(|b| *b = 0);
        Ok(out)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let bad = |what: &str| KeyError::Stored {
            kid: kid.to_owned(),
            what: what.to_owned(),
        };
        let (nonce, ciphertext) = sealed
            .split_at_checked(aead::NONCE_LEN)
            .ok_or_else(|| bad("sealed key too short"))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("bad nonce"))?;
        let mut data = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut data)
            .map_err(|_| bad("cannot be decrypted: wrong key-encryption key?"))?
            .len();
        data.truncate(plain_len);
        Ok(data)
    }
}

/// Writes a file readable only by its owner.
pub fn write_private_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

/// The state of a key at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signing.
    Current,
    /// Published for verification of tokens it signed.
    Retired,
    /// No longer needed.
    Expired,
}

impl KeyState {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Current => "current",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
        }
    }
}

/// Classifies keys (sorted by `activate_at`) at `now`; `retention` is how long a key stays
/// published after its successor activated.
pub fn classify(keys: &[StoredKey], now: i64, retention: i64) -> Vec<KeyState> {
    let current = keys.iter().rposition(|k| k.activate_at <= now);
    keys.iter()
        .enumerate()
        .map(|(i, k)| match current {
            _ if k.activate_at > now => KeyState::Next,
            Some(c) if c == i => KeyState::Current,
            _ => {
                let retired_at = keys.get(i + 1).map_or(i64::MAX, |n| n.activate_at);
                if now < retired_at.saturating_add(retention) {
                    KeyState::Retired
                } else {
                    KeyState::Expired
                }
            }
        })
        .collect()
}

/// The signing key and published JWKS of one moment.
#[derive(Debug)]
pub struct Keyring {
    /// The key that signs now.
    pub signing: Arc<SigningKey>,
    /// The JWKS document (current, next and retired public keys), serialized once.
    pub jwks_json: Arc<[u8]>,
    /// Verifiers for every published key (our own tokens at userinfo and logout).
    pub verifiers: Vec<segl_jose::VerifyingKey>,
}

/// Loads, creates and refreshes the keys of one server process (rotation: [`rotate`]).
#[derive(Debug)]
pub struct KeyManager {
    store: Arc<dyn Store>,
    kek: Kek,
    retention: i64,
    ring: RwLock<Arc<Keyring>>,
    opened: OpenedKeys,
}

impl KeyManager {
    /// Loads the keys, creating a signing key for `alg` when none is current with that
    /// algorithm. `retention` = longest token lifetime + grace.
    pub async fn start(
        store: Arc<dyn Store>,
        kek: Kek,
        alg: Alg,
        retention: i64,
        now: i64,
    ) -> Result<KeyManager, KeyError> {
        let stored = store.signing_keys().await?;
        let states = classify(&stored, now, retention);
        let usable = stored
            .iter()
            .zip(&states)
            .any(|(k, s)| k.alg == alg.name() && matches!(s, KeyState::Current | KeyState::Next));
        let has_current = states.contains(&KeyState::Current);
        if !usable || !has_current {
            let key = SigningKey::generate(alg)?;
            store
                .insert_signing_key(&seal_key(&kek, &key, now, now)?)
                .await?;
            tracing::info!(kid = key.kid(), alg = %alg, "generated a new token-signing key");
            audit_new_key(store.as_ref(), &key, now, now, "start").await?;
        }
        let opened = RwLock::new(HashMap::new());
        let first = build_ring(store.as_ref(), &kek, &opened, retention, now).await?;
        Ok(KeyManager {
            store,
            kek,
            retention,
            ring: RwLock::new(Arc::new(first)),
            opened,
        })
    }

    /// The keyring now in force.
    pub fn current(&self) -> Arc<Keyring> {
        self.ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Rebuilds the keyring from the store, and deletes keys no longer needed.
    pub async fn refresh(&self, now: i64) -> Result<(), KeyError> {
        let ring = build_ring(
            self.store.as_ref(),
            &self.kek,
            &self.opened,
            self.retention,
            now,
        )
        .await?;
        match self.ring.write() {
            Ok(mut guard) => *guard = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }
}

type OpenedKeys = RwLock<HashMap<String, Arc<SigningKey>>>;

async fn build_ring(
    store: &dyn Store,
    kek: &Kek,
    opened: &OpenedKeys,
    retention: i64,
    now: i64,
) -> Result<Keyring, KeyError> {
    let stored = store.signing_keys().await?;
    let states = classify(&stored, now, retention);
    let mut published = Vec::new();
    let mut verifiers = Vec::new();
    let mut signing = None;
    for (key, state) in stored.iter().zip(&states) {
        match state {
            KeyState::Expired => {
                store.delete_signing_key(&key.kid).await?;
                continue;
            }
            KeyState::Current => signing = Some(open_key(kek, opened, key)?),
            KeyState::Next | KeyState::Retired => {}
        }
        let jwk: serde_json::Value =
            serde_json::from_str(&key.public_jwk).map_err(|_| KeyError::Stored {
                kid: key.kid.clone(),
                what: "public JWK is not JSON".into(),
            })?;
        let parsed: Result<segl_jose::Jwk, _> = serde_json::from_value(jwk.clone());
        if let (Ok(parsed), Ok(alg)) = (parsed, key.alg.parse::<Alg>()) {
            verifiers.push(segl_jose::VerifyingKey::from_jwk(&parsed, alg)?);
        }
        published.push(jwk);
    }
    let Some(signing) = signing else {
        return Err(KeyError::Stored {
            kid: "-".into(),
            what: "no current signing key in the store".into(),
        });
    };
    let jwks_json =
        serde_json::to_vec(&serde_json::json!({ "keys": published })).map_err(|_| {
            KeyError::Stored {
                kid: "-".into(),
                what: "JWKS".into(),
            }
        })?;
    Ok(Keyring {
        signing,
        jwks_json: Arc::from(jwks_json),
        verifiers,
    })
}

/// Decrypts a stored key once; later calls hit the cache.
fn open_key(
    kek: &Kek,
    opened: &OpenedKeys,
    stored: &StoredKey,
) -> Result<Arc<SigningKey>, KeyError> {
    if let Some(k) = opened.read().ok().and_then(|m| m.get(&stored.kid).cloned()) {
        return Ok(k);
    }
    let der = kek.open(&stored.kid, &stored.private_key)?;
    let alg: Alg = stored.alg.parse().map_err(|_| KeyError::Stored {
        kid: stored.kid.clone(),
        what: format!("unknown alg {}", stored.alg),
    })?;
    let key = Arc::new(SigningKey::from_pkcs8(alg, &der)?);
    if let Ok(mut m) = opened.write() {
        m.insert(stored.kid.clone(), key.clone());
    }
    Ok(key)
}

/// Generates and stores a key that signs from `activate_at`, or one second after the newest
/// existing key's activation if that is later (so the new key always takes over, even when
/// rotated within the second the current key was made), and records it in the audit log;
/// returns its kid and activation time.
pub async fn rotate(
    store: &dyn Store,
    kek: &Kek,
    alg: Alg,
    now: i64,
    activate_at: i64,
) -> Result<(String, i64), KeyError> {
    let newest = store
        .signing_keys()
        .await?
        .iter()
        .map(|k| k.activate_at)
        .max();
    let activate_at = newest.map_or(activate_at, |n| activate_at.max(n.saturating_add(1)));
    let key = SigningKey::generate(alg)?;
    store
        .insert_signing_key(&seal_key(kek, &key, now, activate_at)?)
        .await?;
    audit_new_key(store, &key, now, activate_at, "rotate").await?;
    Ok((key.kid().to_owned(), activate_at))
}

/// The `key_rotated` audit event of a new key (its id, never the key), written directly.
async fn audit_new_key(
    store: &dyn Store,
    key: &SigningKey,
    now: i64,
    activate_at: i64,
    via: &str,
) -> Result<(), KeyError> {
    let event =
        Event::new(EventKind::KeyRotated, Outcome::Success, UnixTime(now)).with_detail(&format!(
            "kid={} alg={} activate_at={activate_at} via={via}",
            key.kid(),
            key.alg()
        ));
    crate::audit::append(store, &[event]).await?;
    Ok(())
}

fn seal_key(
    kek: &Kek,
    key: &SigningKey,
    now: i64,
    activate_at: i64,
) -> Result<StoredKey, KeyError> {
    let der = key.to_pkcs8()?;
    Ok(StoredKey {
        kid: key.kid().to_owned(),
        alg: key.alg().name().to_owned(),
        public_jwk: serde_json::to_string(key.public_jwk()).map_err(|_| KeyError::Stored {
            kid: key.kid().to_owned(),
            what: "JWK".into(),
        })?,
        private_key: kek.seal(key.kid(), &der)?,
        created_at: now,
        activate_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, activate_at: i64) -> StoredKey {
        StoredKey {
            kid: kid.into(),
            alg: "ES256".into(),
            public_jwk: "{}".into(),
            private_key: vec![],
            created_at: 0,
            activate_at,
        }
    }

    #[test]
    fn states_follow_from_activation_times() {
        let keys = [key("a", 0), key("b", 100), key("c", 200)];
        use KeyState::*;
        assert_eq!(classify(&keys, 50, 30), [Current, Next, Next]);
        assert_eq!(classify(&keys, 120, 30), [Retired, Current, Next]);
        assert_eq!(classify(&keys, 131, 30), [Expired, Current, Next]);
        assert_eq!(classify(&keys, 229, 30), [Expired, Retired, Current]);
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_kek_and_kid() {
        let kek =
            Kek::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
        let sealed = kek.seal("kid1", b"secret").unwrap();
        assert_eq!(kek.open("kid1", &sealed).unwrap().as_slice(), b"secret");
        assert!(kek.open("kid2", &sealed).is_err());
        let other =
            Kek::from_base64(&base64::engine::general_purpose::STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open("kid1", &sealed).is_err());
        assert!(Kek::from_base64("c2hvcnQ=").is_err());
    }
}

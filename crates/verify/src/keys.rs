//! The issuer's signing keys: parsed once per JWKS into [`KeySet`], held by [`KeyStore`], which
//! refetches the JWKS when a token names an unknown `kid` and when the set is older than its
//! max age — both rate-limited, with concurrent misses sharing one fetch.
//!
//! Rate limit: at most one fetch per `refetch_interval`, counted from the last *attempt*, so a
//! flood of made-up `kid`s (or an unreachable issuer) costs the issuer one request per interval.
//! A failed fetch keeps the keys already held.

use segl_jose::{Alg, Jwks, VerifyingKey};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// One JWKS, parsed for every allowed algorithm each key fits.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    by_kid: HashMap<String, Vec<VerifyingKey>>,
    without_kid: Vec<VerifyingKey>,
}

/// The keys a token's header selects.
pub(crate) enum Selected<'a> {
    /// Keys with the token's `kid` (or the one key for its `alg` when it has none) and `alg`.
    Keys(Vec<&'a VerifyingKey>),
    /// The `kid` is published, but not for this algorithm.
    WrongAlg,
    /// No published key has this `kid`.
    UnknownKid,
    /// No `kid`, and not exactly one key for the algorithm.
    Ambiguous,
}

impl KeySet {
    /// Parses each key for each of `algs` it fits; keys that fit none are skipped (an issuer
    /// may publish encryption keys or algorithms this API does not allow).
    pub(crate) fn from_jwks(jwks: &Jwks, algs: &[Alg]) -> KeySet {
        let mut set = KeySet::default();
        for jwk in &jwks.keys {
            let parsed = algs
                .iter()
                .filter(|&&alg| jwk.fits(alg))
                .filter_map(|&alg| VerifyingKey::from_jwk(jwk, alg).ok());
            match &jwk.kid {
                Some(kid) => set.by_kid.entry(kid.clone()).or_default().extend(parsed),
                None => set.without_kid.extend(parsed),
            }
        }
        set
    }

    /// Number of distinct usable keys (for logs).
    pub(crate) fn len(&self) -> usize {
        self.by_kid.values().filter(|v| !v.is_empty()).count()
            + usize::from(!self.without_kid.is_empty())
    }

    /// Whether some published key has this `kid`.
    pub(crate) fn knows(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    pub(crate) fn select(&self, kid: Option<&str>, alg: Alg) -> Selected<'_> {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => Selected::UnknownKid,
                Some(keys) => {
                    let fit: Vec<&VerifyingKey> = keys.iter().filter(|k| k.alg() == alg).collect();
                    if fit.is_empty() {
                        Selected::WrongAlg
                    } else {
                        Selected::Keys(fit)
                    }
                }
            },
            // RFC 7515 makes kid optional; without one, only an unambiguous key is used.
            None => {
                let mut all = self
                    .by_kid
                    .values()
                    .flatten()
                    .chain(&self.without_kid)
                    .filter(|k| k.alg() == alg);
                match (all.next(), all.next()) {
                    (Some(only), None) => Selected::Keys(vec![only]),
                    _ => Selected::Ambiguous,
                }
            }
        }
    }
}

/// A key set and when it was fetched.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) set: KeySet,
    pub(crate) fetched_at: i64,
    /// Bumped on every successful fetch, so a waiter can tell that another task fetched.
    pub(crate) generation: u64,
}

struct Remote {
    http: reqwest::Client,
    jwks_uri: String,
    algs: Vec<Alg>,
    refetch_interval: i64,
    /// When the last fetch started. Held for the whole fetch: concurrent misses wait here and
    /// then reuse the result.
    last_attempt: Arc<tokio::sync::Mutex<Option<i64>>>,
}

type Current = Arc<RwLock<Arc<Loaded>>>;

/// The current key set, and where to fetch the next one (none for a static JWKS).
pub(crate) struct KeyStore {
    current: Current,
    remote: Option<Arc<Remote>>,
    max_age: i64,
}

impl KeyStore {
    pub(crate) fn fixed(jwks: &Jwks, algs: &[Alg], now: i64) -> KeyStore {
        KeyStore {
            current: Arc::new(RwLock::new(Arc::new(Loaded {
                set: KeySet::from_jwks(jwks, algs),
                fetched_at: now,
                generation: 0,
            }))),
            remote: None,
            max_age: i64::MAX,
        }
    }

    /// Fetches the JWKS once; fails when it cannot be had.
    pub(crate) async fn remote(
        http: reqwest::Client,
        jwks_uri: String,
        algs: &[Alg],
        refetch_interval: i64,
        max_age: i64,
        now: i64,
    ) -> Result<KeyStore, String> {
        let jwks = fetch_jwks(&http, &jwks_uri).await?;
        let set = KeySet::from_jwks(&jwks, algs);
        tracing::info!(jwks_uri, keys = set.len(), "JWKS loaded");
        Ok(KeyStore {
            current: Arc::new(RwLock::new(Arc::new(Loaded {
                set,
                fetched_at: now,
                generation: 0,
            }))),
            remote: Some(Arc::new(Remote {
                http,
                jwks_uri,
                algs: algs.to_vec(),
                refetch_interval,
                last_attempt: Arc::new(tokio::sync::Mutex::new(Some(now))),
            })),
            max_age,
        })
    }

    /// The key set to use now. When it is older than the max age, the first caller to notice
    /// refreshes it (others go on with the current set rather than wait).
    pub(crate) async fn current(&self, now: i64) -> Arc<Loaded> {
        let loaded = snapshot(&self.current);
        if now.saturating_sub(loaded.fetched_at) < self.max_age {
            return loaded;
        }
        let Some(remote) = &self.remote else {
            return loaded;
        };
        let Ok(last_attempt) = remote.last_attempt.clone().try_lock_owned() else {
            return loaded;
        };
        if snapshot(&self.current).generation == loaded.generation {
            self.fetch(remote, last_attempt, now).await;
        }
        snapshot(&self.current)
    }

    /// After a token named a `kid` missing from generation `seen`: the newer key set, if one was
    /// fetched (by this call or by a concurrent one), or `None` when rate-limited or failed.
    pub(crate) async fn refetch_for_unknown_kid(&self, seen: u64, now: i64) -> Option<Arc<Loaded>> {
        let remote = self.remote.as_ref()?;
        let last_attempt = remote.last_attempt.clone().lock_owned().await;
        if snapshot(&self.current).generation == seen {
            self.fetch(remote, last_attempt, now).await;
        }
        let loaded = snapshot(&self.current);
        (loaded.generation != seen).then_some(loaded)
    }

    /// Fetches unless rate-limited. The fetch runs as its own task holding the lock, so a
    /// request that is cancelled while waiting (its client went away) neither cancels the fetch
    /// nor leaves the rate limit spent without a result.
    async fn fetch(
        &self,
        remote: &Arc<Remote>,
        mut last_attempt: tokio::sync::OwnedMutexGuard<Option<i64>>,
        now: i64,
    ) {
        if last_attempt.is_some_and(|t| now >= t && now - t < remote.refetch_interval) {
            tracing::debug!("JWKS refetch is rate-limited");
            return;
        }
        *last_attempt = Some(now);
        let (remote, current) = (Arc::clone(remote), Arc::clone(&self.current));
        let task = tokio::spawn(async move {
            let _held = last_attempt;
            match fetch_jwks(&remote.http, &remote.jwks_uri).await {
                Ok(jwks) => {
                    let set = KeySet::from_jwks(&jwks, &remote.algs);
                    tracing::info!(
                        jwks_uri = remote.jwks_uri,
                        keys = set.len(),
                        "JWKS refetched"
                    );
                    let mut current = current.write().unwrap_or_else(PoisonError::into_inner);
                    let generation = current.generation.wrapping_add(1);
                    *current = Arc::new(Loaded {
                        set,
                        fetched_at: now,
                        generation,
                    });
                }
                Err(e) => tracing::warn!(
                    jwks_uri = remote.jwks_uri,
                    error = %e,
                    "JWKS refetch failed; keeping the keys held"
                ),
            }
        });
        if let Err(e) = task.await {
            tracing::error!(error = %e, "JWKS refetch task failed");
        }
    }
}

fn snapshot(current: &Current) -> Arc<Loaded> {
    // The lock only guards an Arc swap; no panic can happen while it is held.
    Arc::clone(&current.read().unwrap_or_else(PoisonError::into_inner))
}

/// GETs a document of at most [`MAX_JWKS_BYTES`] (discovery or JWKS).
pub(crate) async fn fetch_bytes(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = http
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "{url}: document larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<Jwks, String> {
    let body = fetch_bytes(http, url).await?;
    Jwks::from_json(&body).map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use segl_jose::{Jwk, SigningKey};

    #[test]
    fn keys_are_selected_by_kid_and_alg() {
        let es = SigningKey::generate(Alg::ES256).unwrap();
        let rs = SigningKey::generate(Alg::RS256).unwrap();
        let mut rs_any_alg = rs.public_jwk().clone();
        rs_any_alg.alg = None;
        let enc = Jwk {
            use_: Some("enc".into()),
            ..es.public_jwk().clone()
        };
        let jwks = Jwks {
            keys: vec![es.public_jwk().clone(), rs_any_alg, enc],
        };
        let set = KeySet::from_jwks(&jwks, &Alg::ALL);
        assert_eq!(set.len(), 2);
        assert!(
            matches!(set.select(Some(es.kid()), Alg::ES256), Selected::Keys(k) if k.len() == 1)
        );
        assert!(matches!(
            set.select(Some(es.kid()), Alg::ES384),
            Selected::WrongAlg
        ));
        // An RSA key without `alg` serves every RSA algorithm the verifier allows.
        assert!(matches!(
            set.select(Some(rs.kid()), Alg::PS384),
            Selected::Keys(_)
        ));
        assert!(matches!(
            set.select(Some("nope"), Alg::ES256),
            Selected::UnknownKid
        ));
        assert!(matches!(set.select(None, Alg::ES256), Selected::Keys(_)));
        let two = Jwks {
            keys: vec![
                es.public_jwk().clone(),
                SigningKey::generate(Alg::ES256)
                    .unwrap()
                    .public_jwk()
                    .clone(),
            ],
        };
        assert!(matches!(
            KeySet::from_jwks(&two, &Alg::ALL).select(None, Alg::ES256),
            Selected::Ambiguous
        ));
        // A verifier limited to PS256 parses the RSA key for PS256 only.
        let ps_only = KeySet::from_jwks(&jwks, &[Alg::PS256]);
        assert!(matches!(
            ps_only.select(Some(rs.kid()), Alg::RS256),
            Selected::WrongAlg
        ));
        assert!(matches!(
            ps_only.select(Some(es.kid()), Alg::ES256),
            Selected::WrongAlg
        ));
    }
}

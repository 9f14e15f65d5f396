//! [`Verifier`]: the request-time checks of HELSEID.md §10 and RFC 9449 §7, in order.
//!
//! 1. One `Authorization` header with scheme `Bearer` or `DPoP` that the endpoint accepts.
//! 2. The token: a JWS with an allowed `alg`, `typ` `at+jwt` or `JWT`, signed by the issuer key
//!    its `kid` names (refetching the JWKS, rate-limited, for an unknown `kid`).
//! 3. Its claims: exact `iss`, `aud`, `exp`/`nbf` with bounded skew ([`CheckedClaims`]).
//! 4. Its presentation: an unbound token as Bearer; a `cnf.jkt`-bound token as DPoP with one
//!    proof that passes [`check_proof`] (with `ath` and the optional nonce), made with the
//!    bound key, whose `jti` is new.
//! 5. The required scopes (403 after all of the above, RFC 6750 §3.1).

use crate::config::{DpopNonce, Settings, TokenBinding, VerifierConfig};
use crate::error::{Challenges, ErrorKind, VerifyError};
use crate::keys::{KeySet, KeyStore, Selected, fetch_bytes};
use crate::nonce::NonceKey;
use crate::replay::{Record, ReplayCache};
use crate::token::{CheckedClaims, Cnf, VerifiedToken};
use segl_jose::dpop::{DpopError, NoncePolicy, ProofRequirements, VerifiedDpop, check_proof};
use segl_jose::{Jwks, UnverifiedJws, VerifiedJws};
use segl_proto::discovery::Discovery;
use std::time::Duration;

/// The parts of an HTTP request the verifier reads. Header values are given as received, one
/// entry per header line, so duplicates can be refused.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// The request target: a path (with optional query) that is appended to the configured
    /// public base URL, or an absolute `http(s)` URL the caller vouches for.
    pub target: &'a str,
    /// Every `Authorization` header value.
    pub authorization: &'a [&'a str],
    /// Every `DPoP` header value.
    pub dpop: &'a [&'a str],
}

/// Why a verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration is out of bounds.
    #[error("verifier configuration: {0}")]
    Config(String),
    /// Discovery metadata could not be had or does not name the issuer.
    #[error("discovery: {0}")]
    Discovery(String),
    /// The JWKS could not be had.
    #[error("JWKS: {0}")]
    Jwks(String),
    /// The HTTP client or the random generator failed.
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// Verifies access tokens from one issuer for one API audience. Build it once at start-up and
/// share it (`Arc<Verifier>`); it caches the parsed issuer keys and remembers DPoP proofs.
pub struct Verifier {
    issuer: String,
    settings: Settings,
    keys: KeyStore,
    replay: ReplayCache,
    nonce: Option<NonceKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.settings.audience)
            .field("binding", &self.settings.binding)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Reads `{issuer}/.well-known/openid-configuration`, checks that its `issuer` is exactly
    /// `issuer` (OpenID Connect Discovery §4.3), and loads the JWKS from its `jwks_uri`.
    pub async fn discover(issuer: &str, config: VerifierConfig) -> Result<Verifier, SetupError> {
        #[derive(serde::Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: String,
        }
        let settings = config.check().map_err(SetupError::Config)?;
        let http = http_client(&settings)?;
        let url = format!(
            "{}{}",
            issuer.trim_end_matches('/'),
            segl_proto::paths::DISCOVERY
        );
        let body = fetch_bytes(&http, &url)
            .await
            .map_err(SetupError::Discovery)?;
        let object = segl_jose::parse_object(&body)
            .map_err(|e| SetupError::Discovery(format!("{url}: {e}")))?;
        let metadata: Metadata = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| SetupError::Discovery(format!("{url}: {e}")))?;
        if metadata.issuer != issuer {
            return Err(SetupError::Discovery(format!(
                "{url} names issuer {:?}, not {issuer:?}",
                metadata.issuer
            )));
        }
        Verifier::remote(metadata.issuer, metadata.jwks_uri, settings, http).await
    }

    /// Uses metadata the caller already has (its `issuer` and `jwks_uri`) and loads the JWKS.
    pub async fn from_metadata(
        metadata: &Discovery,
        config: VerifierConfig,
    ) -> Result<Verifier, SetupError> {
        let settings = config.check().map_err(SetupError::Config)?;
        let http = http_client(&settings)?;
        Verifier::remote(
            metadata.issuer.clone(),
            metadata.jwks_uri.clone(),
            settings,
            http,
        )
        .await
    }

    /// A verifier with a fixed JWKS that is never refetched (tests, offline use).
    pub fn from_jwks(
        issuer: impl Into<String>,
        jwks: &Jwks,
        config: VerifierConfig,
    ) -> Result<Verifier, SetupError> {
        let settings = config.check().map_err(SetupError::Config)?;
        let keys = KeyStore::fixed(jwks, &settings.algs, settings.clock.now());
        Verifier::new(issuer.into(), settings, keys)
    }

    async fn remote(
        issuer: String,
        jwks_uri: String,
        settings: Settings,
        http: reqwest::Client,
    ) -> Result<Verifier, SetupError> {
        let keys = KeyStore::remote(
            http,
            jwks_uri,
            &settings.algs,
            settings.refetch_interval,
            settings.jwks_max_age,
            settings.clock.now(),
        )
        .await
        .map_err(SetupError::Jwks)?;
        Verifier::new(issuer, settings, keys)
    }

    fn new(issuer: String, settings: Settings, keys: KeyStore) -> Result<Verifier, SetupError> {
        let nonce = match settings.dpop_nonce {
            DpopNonce::Off => None,
            DpopNonce::Required => {
                Some(NonceKey::generate().map_err(|e| SetupError::Internal(e.to_string()))?)
            }
        };
        Ok(Verifier {
            issuer,
            replay: ReplayCache::new(settings.replay_capacity),
            settings,
            keys,
            nonce,
        })
    }

    /// The issuer tokens must come from.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience tokens must be for.
    pub fn audience(&self) -> &str {
        &self.settings.audience
    }

    /// Which presentations are accepted.
    pub fn binding(&self) -> TokenBinding {
        self.settings.binding
    }

    /// The resource-server nonce to hand out now (RFC 9449 §9), when nonces are required.
    pub fn current_dpop_nonce(&self) -> Option<String> {
        let now = self.settings.clock.now();
        self.nonce.as_ref().map(|k| k.issue(now))
    }

    /// Verifies the access token of one request. See the module documentation for the order of
    /// the checks; each failure carries the answer to send ([`VerifyError::status`],
    /// [`VerifyError::headers`]).
    pub async fn verify(&self, req: &RequestParts<'_>) -> Result<VerifiedToken, VerifyError> {
        let now = self.settings.clock.now();
        // (1) the Authorization header.
        let (scheme, token) = self.presented(req.authorization)?;
        // (2), (3) the token and its claims.
        let claims = self.check_token(token, scheme, now).await?;
        // (4) the presentation.
        let verified = match (scheme, &claims.cnf) {
            (Scheme::Bearer, _) => claims.into_bearer(),
            (Scheme::Dpop, Cnf::Jkt(jkt)) => {
                let proof = self.check_dpop(req, token, jkt, now)?;
                claims.into_dpop(proof)
            }
            (Scheme::Dpop, _) => {
                Err("the token is not DPoP-bound (no cnf.jkt); present it as Bearer".into())
            }
        }
        .map_err(|d| self.reject(ErrorKind::InvalidToken(d), Some(scheme)))?;
        // (5) HELSEID.md §10 (6): the scopes this endpoint needs.
        if !self
            .settings
            .required_scopes
            .iter()
            .all(|s| verified.has_scope(s))
        {
            let scope = self.settings.required_scopes.join(" ");
            return Err(self.reject(ErrorKind::InsufficientScope { scope }, Some(scheme)));
        }
        Ok(verified)
    }

    /// RFC 6750 §2.1, RFC 9449 §7.1: exactly one `Authorization` header, `Bearer` or `DPoP`
    /// (case-insensitive) and a token68 credential, in a scheme this endpoint accepts.
    fn presented<'r>(&self, headers: &[&'r str]) -> Result<(Scheme, &'r str), VerifyError> {
        let value = match headers {
            [] => return Err(self.reject(ErrorKind::NoToken, None)),
            [one] => *one,
            _ => {
                return Err(self.reject(
                    ErrorKind::InvalidRequest("more than one Authorization header".into()),
                    None,
                ));
            }
        };
        let (name, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let scheme = if name.eq_ignore_ascii_case("bearer") {
            Scheme::Bearer
        } else if name.eq_ignore_ascii_case("dpop") {
            Scheme::Dpop
        } else {
            // Another scheme (Basic, …) carries nothing this API understands: RFC 6750 §3.1.
            return Err(self.reject(ErrorKind::NoToken, None));
        };
        let token = credentials.trim_matches(' ');
        if !is_token68(token) {
            return Err(self.reject(
                ErrorKind::InvalidRequest(
                    "the Authorization header has no well-formed token".into(),
                ),
                Some(scheme),
            ));
        }
        let accepted = match scheme {
            Scheme::Bearer => self.settings.binding.accepts_bearer(),
            Scheme::Dpop => self.settings.binding.accepts_dpop(),
        };
        if !accepted {
            let d = match scheme {
                Scheme::Bearer => "this API accepts DPoP-bound tokens only (Authorization: DPoP)",
                Scheme::Dpop => "this API accepts Bearer tokens only",
            };
            return Err(self.reject(ErrorKind::InvalidToken(d.into()), None));
        }
        Ok((scheme, token))
    }

    /// HELSEID.md §10 (1)–(5): signature by the issuer, `typ`, then the claims.
    async fn check_token(
        &self,
        token: &str,
        scheme: Scheme,
        now: i64,
    ) -> Result<CheckedClaims, VerifyError> {
        let bad = |d: String| self.reject(ErrorKind::InvalidToken(d), Some(scheme));
        // (1) A JWS whose alg is allow-listed (none and HMAC never parse into an Alg).
        let jws = UnverifiedJws::parse(token).map_err(|e| bad(format!("not a valid JWT: {e}")))?;
        if !self.settings.algs.contains(&jws.alg()) {
            return Err(bad(format!("alg {} is not accepted", jws.alg())));
        }
        // (2) typ: at+jwt (RFC 9068 §4), or JWT from older HelseID tokens.
        check_typ(&jws).map_err(bad)?;
        // (1) the issuer key the kid names; an unknown kid may be a new key: refetch once.
        let mut loaded = self.keys.current(now).await;
        let kid = jws.unverified_header_str("kid");
        if let Some(kid) = kid
            && !loaded.set.knows(kid)
        {
            loaded = self
                .keys
                .refetch_for_unknown_kid(loaded.generation, now)
                .await
                .ok_or_else(|| bad(format!("no published key has kid {kid}")))?;
        }
        let verified = verify_signature(jws, &loaded.set).map_err(bad)?;
        // (3)–(5) iss, aud, exp/nbf, and the shapes of scope, cnf and act.
        CheckedClaims::check(verified.into_claims(), &self.issuer, &self.settings, now).map_err(bad)
    }

    /// RFC 9449 §4.3 and §7.1 for a token bound to `jkt`.
    fn check_dpop(
        &self,
        req: &RequestParts<'_>,
        token: &str,
        jkt: &str,
        now: i64,
    ) -> Result<VerifiedDpop, VerifyError> {
        let bad = |d: String| self.reject(ErrorKind::InvalidDpopProof(d), Some(Scheme::Dpop));
        // §4.3 (1): exactly one DPoP header.
        let proof = match req.dpop {
            [one] => *one,
            [] => return Err(bad("a DPoP header with a proof is required".into())),
            _ => return Err(bad("more than one DPoP header".into())),
        };
        // §4.3 (9): htu is the URL clients call: the public base URL plus the request path.
        let url = self.htu(req.target).ok_or_else(|| {
            self.reject(
                ErrorKind::InvalidRequest("the request target is not a path or URL".into()),
                Some(Scheme::Dpop),
            )
        })?;
        let nonce_is_current = |n: &str| self.nonce.as_ref().is_some_and(|k| k.is_current(n, now));
        let requirements = ProofRequirements {
            method: req.method,
            url: &url,
            now,
            max_age: self.settings.dpop_max_age,
            algs: &self.settings.dpop_algs,
            access_token: Some(token),
            nonce: match self.nonce {
                Some(_) => NoncePolicy::Required(&nonce_is_current),
                None => NoncePolicy::Off,
            },
        };
        // §4.3 (2)–(12), §9: every stateless check, with ath (§7.1) and the nonce.
        let checked = check_proof(proof, &requirements).map_err(|e| match (e, &self.nonce) {
            (DpopError::UseNonce(d), Some(key)) => self.reject(
                ErrorKind::UseDpopNonce {
                    nonce: key.issue(now),
                    description: d,
                },
                Some(Scheme::Dpop),
            ),
            (DpopError::Invalid(d) | DpopError::UseNonce(d), _) => bad(d),
        })?;
        // §7.1: the proof key is the key the token is bound to (before spending a cache slot).
        if checked.jkt() != jkt {
            return Err(bad(
                "the DPoP proof key is not the key the token is bound to".into(),
            ));
        }
        // §11.1: the jti is new (for as long as the proof's iat is acceptable).
        let until = checked.remember_until(self.settings.dpop_max_age);
        let fresh = match self.replay.record(checked.replay_key(), until, now) {
            Record::Fresh => true,
            Record::Replayed => false,
            Record::Full => {
                tracing::warn!("DPoP replay cache is full; refusing proofs until entries expire");
                return Err(self.reject(
                    ErrorKind::Unavailable("too many recent DPoP proofs; retry shortly".into()),
                    Some(Scheme::Dpop),
                ));
            }
        };
        checked.accept(fresh).map_err(|e| bad(e.to_string()))
    }

    fn htu(&self, target: &str) -> Option<String> {
        if target.starts_with('/') {
            Some(format!("{}{target}", self.settings.base_url.as_deref()?))
        } else if target.starts_with("https://") || target.starts_with("http://") {
            Some(target.to_owned())
        } else {
            None
        }
    }

    /// An error answered with the challenge of `scheme`, or of every accepted scheme.
    fn reject(&self, kind: ErrorKind, scheme: Option<Scheme>) -> VerifyError {
        let binding = self.settings.binding;
        let (bearer, dpop) = match scheme {
            Some(Scheme::Bearer) => (true, false),
            Some(Scheme::Dpop) => (false, true),
            None => (binding.accepts_bearer(), binding.accepts_dpop()),
        };
        let challenges = Challenges {
            bearer,
            dpop: dpop.then(|| self.settings.dpop_challenge_algs.clone()),
        };
        VerifyError::new(kind, challenges)
    }

    /// A malformed request noticed outside [`Verifier::verify`] (e.g. a header that is not
    /// visible ASCII), answered with every accepted scheme's challenge.
    pub fn invalid_request(&self, description: impl Into<String>) -> VerifyError {
        self.reject(ErrorKind::InvalidRequest(description.into()), None)
    }
}

fn http_client(settings: &Settings) -> Result<reqwest::Client, SetupError> {
    match &settings.http {
        Some(http) => Ok(http.clone()),
        None => reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| SetupError::Internal(format!("HTTP client: {e}"))),
    }
}

/// RFC 7235 §2.1 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// HELSEID.md §10 (2): `at+jwt` (RFC 9068 §2.1, also as `application/at+jwt`) or `JWT`.
pub(crate) fn check_typ(jws: &UnverifiedJws) -> Result<(), String> {
    match jws.unverified_header_str("typ") {
        Some(t)
            if t.eq_ignore_ascii_case("at+jwt")
                || t.eq_ignore_ascii_case("application/at+jwt")
                || t.eq_ignore_ascii_case("jwt") =>
        {
            Ok(())
        }
        other => Err(format!("typ {other:?} is not an access token type")),
    }
}

/// The signature, with the key(s) the header selects in `set`.
pub(crate) fn verify_signature(jws: UnverifiedJws, set: &KeySet) -> Result<VerifiedJws, String> {
    let kid = jws.unverified_header_str("kid");
    let keys = match set.select(kid, jws.alg()) {
        Selected::Keys(keys) => keys,
        Selected::UnknownKid => {
            return Err(format!("no published key has kid {}", kid.unwrap_or("")));
        }
        Selected::WrongAlg => {
            return Err(format!(
                "key {} is not published for {}",
                kid.unwrap_or(""),
                jws.alg()
            ));
        }
        Selected::Ambiguous => {
            return Err("the token has no kid and the issuer publishes several keys".into());
        }
    };
    jws.verify_any(keys)
        .map_err(|_| "signature does not verify".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token68() {
        assert!(is_token68("eyJh.eyJ.sig_-"));
        assert!(is_token68("abc=="));
        assert!(!is_token68(""));
        assert!(!is_token68("=="));
        assert!(!is_token68("a b"));
        assert!(!is_token68("a=b"));
        assert!(!is_token68("a,b"));
    }
}

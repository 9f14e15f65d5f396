//! [`VerifierConfig`]: what an API expects of the tokens it accepts, and [`Settings`], the same
//! after its bounds were checked once at construction (parse, don't validate).

use crate::clock::{Clock, SystemClock};
use segl_jose::Alg;
use std::sync::Arc;
use std::time::Duration;

/// The largest clock skew a verifier tolerates for `exp`/`nbf`.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// The longest DPoP proof window (`iat` distance from now).
pub const MAX_DPOP_MAX_AGE: Duration = Duration::from_secs(300);

/// Which presentations of a token an endpoint accepts (HELSEID.md §3: an API endpoint accepts
/// DPoP or Bearer; HelseID is phasing Bearer out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenBinding {
    /// `Authorization: DPoP` with a proof; Bearer is refused.
    DpopOnly,
    /// `Authorization: Bearer` with an unbound token; DPoP is refused.
    BearerOnly,
    /// Either: a DPoP-bound token with its proof, or an unbound token as Bearer.
    Either,
}

impl TokenBinding {
    /// Whether `Authorization: DPoP` is accepted.
    pub fn accepts_dpop(self) -> bool {
        matches!(self, TokenBinding::DpopOnly | TokenBinding::Either)
    }

    /// Whether `Authorization: Bearer` is accepted.
    pub fn accepts_bearer(self) -> bool {
        matches!(self, TokenBinding::BearerOnly | TokenBinding::Either)
    }
}

/// Whether DPoP proofs must carry a nonce issued by this resource server (RFC 9449 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopNonce {
    /// No resource-server nonce; a `nonce` claim in a proof is ignored.
    Off,
    /// Every proof needs a current nonce; a missing or stale one is answered with
    /// `use_dpop_nonce` and a fresh `DPoP-Nonce` header. Nonces are stateless (an HMAC over a
    /// five-minute window under a random per-verifier key) and stay valid 5 to 10 minutes.
    Required,
}

/// What a [`crate::Verifier`] checks. Build with [`VerifierConfig::new`] and the `with_*`
/// methods; bounds are checked when the verifier is built.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub(crate) audience: String,
    pub(crate) require_single_audience: bool,
    pub(crate) required_scopes: Vec<String>,
    pub(crate) algs: Vec<Alg>,
    pub(crate) dpop_algs: Vec<Alg>,
    pub(crate) skew: Duration,
    pub(crate) binding: TokenBinding,
    pub(crate) dpop_max_age: Duration,
    pub(crate) dpop_nonce: DpopNonce,
    pub(crate) public_base_url: Option<String>,
    pub(crate) replay_capacity: usize,
    pub(crate) refetch_interval: Duration,
    pub(crate) jwks_max_age: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) http: Option<reqwest::Client>,
}

impl VerifierConfig {
    /// A configuration for the API `audience` (its HelseID "kortnavn", e.g.
    /// `nhn:reseptformidleren`), with the defaults: single audience required, no required
    /// scopes, RS/PS/ES 256–512 and EdDSA, 10 s skew, DPoP or Bearer, 60 s proof window, no
    /// nonce, 100 000 remembered proofs, JWKS refetch at most every 30 s, JWKS refreshed after
    /// 5 minutes, the system clock.
    pub fn new(audience: impl Into<String>) -> VerifierConfig {
        VerifierConfig {
            audience: audience.into(),
            require_single_audience: true,
            required_scopes: Vec::new(),
            algs: Alg::ALL.to_vec(),
            dpop_algs: Alg::ALL.to_vec(),
            skew: Duration::from_secs(10),
            binding: TokenBinding::Either,
            dpop_max_age: Duration::from_secs(60),
            dpop_nonce: DpopNonce::Off,
            public_base_url: None,
            replay_capacity: 100_000,
            refetch_interval: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(300),
            clock: Arc::new(SystemClock),
            http: None,
        }
    }

    /// Whether `aud` must name this API only (default `true`, as HelseID's samples do).
    pub fn with_single_audience(mut self, required: bool) -> Self {
        self.require_single_audience = required;
        self
    }

    /// Scopes every token must carry (403 `insufficient_scope` otherwise).
    pub fn with_required_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The algorithms accepted for access-token signatures.
    pub fn with_algs(mut self, algs: &[Alg]) -> Self {
        self.algs = algs.to_vec();
        self
    }

    /// The algorithms accepted for DPoP proofs (announced in the `algs` challenge parameter).
    pub fn with_dpop_algs(mut self, algs: &[Alg]) -> Self {
        self.dpop_algs = algs.to_vec();
        self
    }

    /// Clock skew tolerated for `exp` and `nbf` (at most [`MAX_SKEW`]).
    pub fn with_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// Which presentations are accepted (default [`TokenBinding::Either`]).
    pub fn with_binding(mut self, binding: TokenBinding) -> Self {
        self.binding = binding;
        self
    }

    /// How far a proof's `iat` may be from now, either way (1 s to [`MAX_DPOP_MAX_AGE`]).
    /// Proof `jti`s are remembered this long after their `iat`.
    pub fn with_dpop_max_age(mut self, max_age: Duration) -> Self {
        self.dpop_max_age = max_age;
        self
    }

    /// The resource-server nonce policy.
    pub fn with_dpop_nonce(mut self, nonce: DpopNonce) -> Self {
        self.dpop_nonce = nonce;
        self
    }

    /// The public base URL of the API as clients call it, e.g. `https://api.example.no` or
    /// `https://gw.example.no/rf` behind a path-prefixing proxy. A proof's `htu` must equal this
    /// plus the request path. Required when DPoP is accepted.
    pub fn with_public_base_url(mut self, url: impl Into<String>) -> Self {
        self.public_base_url = Some(url.into());
        self
    }

    /// How many proof `jti`s are remembered at most. When the cache is full of unexpired
    /// entries, DPoP requests fail closed (503) until entries expire.
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.replay_capacity = capacity;
        self
    }

    /// The least time between two JWKS fetches caused by unknown `kid`s (default 30 s),
    /// counted from the last fetch of any kind. A key that starts signing sooner than this after
    /// the last fetch is refused until the interval has passed; issuers publish keys well
    /// before they sign with them (Segl: `keys.activation_delay`), so this is not normally seen.
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// After how long the cached JWKS is fetched again even without an unknown `kid`, so that
    /// keys the issuer removed stop being trusted (default 5 minutes).
    pub fn with_jwks_max_age(mut self, max_age: Duration) -> Self {
        self.jwks_max_age = max_age;
        self
    }

    /// The clock (default: the system clock). Tests inject a [`crate::ManualClock`].
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The HTTP client for discovery and JWKS (default: 5 s connect and 10 s total timeouts).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Checks the bounds once; the verifier keeps only the checked form.
    pub(crate) fn check(self) -> Result<Settings, String> {
        if self.audience.is_empty() {
            return Err("audience is empty".into());
        }
        if self.algs.is_empty() || self.dpop_algs.is_empty() {
            return Err("the algorithm lists must not be empty".into());
        }
        if self.skew > MAX_SKEW {
            return Err(format!("skew is larger than {} s", MAX_SKEW.as_secs()));
        }
        if self.dpop_max_age < Duration::from_secs(1) || self.dpop_max_age > MAX_DPOP_MAX_AGE {
            return Err(format!(
                "the DPoP proof window must be 1 to {} s",
                MAX_DPOP_MAX_AGE.as_secs()
            ));
        }
        if self.replay_capacity == 0 {
            return Err("the replay cache needs room for at least one proof".into());
        }
        if self.refetch_interval < Duration::from_secs(1)
            || self.jwks_max_age < self.refetch_interval
        {
            return Err(
                "the JWKS refetch interval must be at least 1 s and at most the JWKS max age"
                    .into(),
            );
        }
        let base_url = match self.public_base_url {
            Some(url) => Some(check_base_url(&url)?),
            None if self.binding.accepts_dpop() => {
                return Err("DPoP needs the API's public base URL (for htu)".into());
            }
            None => None,
        };
        let dpop_challenge_algs = self
            .dpop_algs
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Settings {
            audience: self.audience,
            require_single_audience: self.require_single_audience,
            required_scopes: self.required_scopes,
            algs: self.algs,
            dpop_algs: self.dpop_algs,
            dpop_challenge_algs: dpop_challenge_algs.into(),
            skew: secs(self.skew),
            binding: self.binding,
            dpop_max_age: secs(self.dpop_max_age),
            dpop_nonce: self.dpop_nonce,
            base_url,
            replay_capacity: self.replay_capacity,
            refetch_interval: secs(self.refetch_interval),
            jwks_max_age: secs(self.jwks_max_age),
            clock: self.clock,
            http: self.http,
        })
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// An http(s) URL without query or fragment, stored without a trailing `/` so that the request
/// path (which starts with `/`) can be appended.
fn check_base_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("public base URL {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "public base URL {text:?} must be http(s) without query or fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A [`VerifierConfig`] whose bounds hold.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) audience: String,
    pub(crate) require_single_audience: bool,
    pub(crate) required_scopes: Vec<String>,
    pub(crate) algs: Vec<Alg>,
    pub(crate) dpop_algs: Vec<Alg>,
    pub(crate) dpop_challenge_algs: Arc<str>,
    pub(crate) skew: i64,
    pub(crate) binding: TokenBinding,
    pub(crate) dpop_max_age: i64,
    pub(crate) dpop_nonce: DpopNonce,
    pub(crate) base_url: Option<String>,
    pub(crate) replay_capacity: usize,
    pub(crate) refetch_interval: i64,
    pub(crate) jwks_max_age: i64,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) http: Option<reqwest::Client>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_once() {
        let ok = || VerifierConfig::new("api").with_public_base_url("https://api.test/");
        let s = ok().check().unwrap();
        assert_eq!(s.base_url.as_deref(), Some("https://api.test"));
        assert_eq!(
            &*s.dpop_challenge_algs,
            "RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA"
        );
        assert!(ok().with_skew(Duration::from_secs(301)).check().is_err());
        assert!(ok().with_skew(MAX_SKEW).check().is_ok());
        assert!(ok().with_dpop_max_age(Duration::ZERO).check().is_err());
        assert!(ok().with_replay_capacity(0).check().is_err());
        assert!(ok().with_algs(&[]).check().is_err());
        assert!(VerifierConfig::new("").check().is_err());
        assert!(
            VerifierConfig::new("api").check().is_err(),
            "DPoP without a base URL"
        );
        assert!(
            VerifierConfig::new("api")
                .with_binding(TokenBinding::BearerOnly)
                .check()
                .is_ok()
        );
        assert!(
            ok().with_public_base_url("https://api.test/?q")
                .check()
                .is_err()
        );
        assert!(ok().with_public_base_url("ftp://api.test").check().is_err());
        assert!(
            ok().with_refetch_interval(Duration::from_secs(600))
                .check()
                .is_err()
        );
    }
}

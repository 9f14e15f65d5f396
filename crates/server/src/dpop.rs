//! DPoP at the authorization server (RFC 9449 §5, §8): the proof check of a request, and
//! stateless server nonces.
//!
//! A nonce is `base64url(window || HMAC-SHA256(key, window)[..16])` where `window` is the
//! minute it was issued; the key is shared by every process through the store, so a nonce from
//! one process is accepted by all. A nonce is accepted for the five windows after the one it was
//! issued in (at least five minutes) and one window ahead (clock differences between machines).

use crate::App;
use crate::error::ApiError;
use aws_lc_rs::hmac;
use axum::http::HeaderMap;
use segl_core::{OAuthError, UnixTime};
use segl_jose::dpop::{self, CheckedProof, DpopError, NoncePolicy, ProofRequirements};
use segl_proto::ErrorCode;

/// How far a proof's `iat` may be from the server's time (DESIGN.md contract: 60 s).
pub const PROOF_MAX_AGE: i64 = 60;
const WINDOW: i64 = 60;
const WINDOWS_BACK: i64 = 5;
const TAG_LEN: usize = 16;

/// The `[dpop] nonce` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceMode {
    /// A current nonce is required in every proof.
    Required,
    /// A nonce is checked when present.
    Optional,
    /// Nonces are neither issued nor checked.
    Off,
}

impl NonceMode {
    /// Parses the configuration value (already validated).
    pub fn parse(text: &str) -> NonceMode {
        match text {
            "optional" => NonceMode::Optional,
            "off" => NonceMode::Off,
            _ => NonceMode::Required,
        }
    }
}

/// Issues and checks server nonces.
pub struct Nonces {
    key: hmac::Key,
    mode: NonceMode,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces under a shared 32-byte key.
    pub fn new(key: &[u8], mode: NonceMode) -> Nonces {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            mode,
        }
    }

    /// The mode.
    pub fn mode(&self) -> NonceMode {
        self.mode
    }

    fn tag(&self, window: i64) -> [u8; TAG_LEN] {
        let full = hmac::sign(&self.key, &window.to_be_bytes());
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(full.as_ref().get(..TAG_LEN).unwrap_or(&[0; TAG_LEN]));
        out
    }

    /// The nonce to hand out now.
    pub fn current(&self, now: UnixTime) -> String {
        let window = now.secs().div_euclid(WINDOW);
        let mut raw = window.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.tag(window));
        segl_jose::b64_encode(raw)
    }

    /// Whether `nonce` was issued by a process sharing our key, recently enough.
    pub fn accepts(&self, nonce: &str, now: UnixTime) -> bool {
        let Ok(raw) = segl_jose::b64_decode(nonce) else {
            return false;
        };
        let (Some(w), Some(tag)) = (raw.get(..8), raw.get(8..)) else {
            return false;
        };
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            return false;
        };
        let window = i64::from_be_bytes(w);
        let current = now.secs().div_euclid(WINDOW);
        if window < current - WINDOWS_BACK || window > current + 1 || tag.len() != TAG_LEN {
            return false;
        }
        aws_lc_rs::constant_time::verify_slices_are_equal(tag, &self.tag(window)).is_ok()
    }
}

/// Maps a proof failure to the protocol error.
pub fn to_oauth(e: DpopError) -> OAuthError {
    match e {
        DpopError::Invalid(d) => OAuthError::new(ErrorCode::InvalidDpopProof, d),
        DpopError::UseNonce(d) => OAuthError::new(ErrorCode::UseDpopNonce, d),
    }
}

/// Checks the request's DPoP proof, if it has one, for `POST url`: exactly one header, and
/// every stateless check. The `jti` is recorded later (`token::record_jtis`).
pub fn check(
    app: &App,
    headers: &HeaderMap,
    url: &str,
    now: UnixTime,
) -> Result<Option<CheckedProof>, ApiError> {
    let mut values = headers.get_all("dpop").iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    // RFC 9449 §4.3 (1): exactly one DPoP header.
    if values.next().is_some() {
        return Err(
            OAuthError::new(ErrorCode::InvalidDpopProof, "send exactly one DPoP header").into(),
        );
    }
    let proof = first
        .to_str()
        .map_err(|_| OAuthError::new(ErrorCode::InvalidDpopProof, "DPoP header is not ASCII"))?;
    let accepts = |n: &str| app.nonces.accepts(n, now);
    let nonce = match app.nonces.mode() {
        NonceMode::Required => NoncePolicy::Required(&accepts),
        NonceMode::Optional => NoncePolicy::Optional(&accepts),
        NonceMode::Off => NoncePolicy::Off,
    };
    let requirements = ProofRequirements {
        method: "POST",
        url,
        now: now.secs(),
        max_age: PROOF_MAX_AGE,
        algs: app.policy.profile.accepted_algs(),
        access_token: None,
        nonce,
    };
    dpop::check_proof(proof, &requirements)
        .map(Some)
        .map_err(|e| to_oauth(e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_live_five_windows_and_need_the_key() {
        let n = Nonces::new(&[1; 32], NonceMode::Required);
        let t = UnixTime(1_800_000_000);
        let nonce = n.current(t);
        assert!(n.accepts(&nonce, t));
        assert!(n.accepts(&nonce, t.plus(5 * 60)));
        assert!(!n.accepts(&nonce, t.plus(7 * 60)));
        assert!(n.accepts(&nonce, t.plus(-60)));
        assert!(!n.accepts(&nonce, t.plus(-180)));
        let other = Nonces::new(&[2; 32], NonceMode::Required);
        assert!(!other.accepts(&nonce, t));
        assert!(!n.accepts("garbage", t));
        assert!(!n.accepts("", t));
    }
}

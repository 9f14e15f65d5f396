//! Stateless resource-server DPoP nonces (RFC 9449 §9).
//!
//! A nonce is `base64url(window || HMAC-SHA256(key, window))` where `window` is the current
//! five-minute period and `key` is random per verifier. A nonce is accepted in its own window
//! and the next, so it lives between 5 and 10 minutes, and the server stores nothing. Nonces
//! are not secrets; the HMAC only makes them unforgeable, so clients cannot skip the round trip.

use aws_lc_rs::hmac;
use segl_jose::{b64_decode, b64_encode};

/// Length of one nonce window, seconds.
pub(crate) const WINDOW: i64 = 300;

pub(crate) struct NonceKey {
    key: hmac::Key,
}

impl NonceKey {
    pub(crate) fn generate() -> Result<NonceKey, segl_jose::Error> {
        let mut secret = [0u8; 32];
        segl_jose::random_bytes(&mut secret)?;
        Ok(NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// The nonce to hand out at `now`.
    pub(crate) fn issue(&self, now: i64) -> String {
        let window = now.div_euclid(WINDOW).to_be_bytes();
        let tag = hmac::sign(&self.key, &window);
        let mut bytes = Vec::with_capacity(8 + 32);
        bytes.extend_from_slice(&window);
        bytes.extend_from_slice(tag.as_ref());
        b64_encode(bytes)
    }

    /// Whether `nonce` was issued by this key in the current or the previous window.
    pub(crate) fn is_current(&self, nonce: &str, now: i64) -> bool {
        let Ok(bytes) = b64_decode(nonce) else {
            return false;
        };
        let (Some(window), Some(tag)) = (bytes.get(..8), bytes.get(8..)) else {
            return false;
        };
        let Ok(window_bytes) = <[u8; 8]>::try_from(window) else {
            return false;
        };
        let current = now.div_euclid(WINDOW);
        let issued = i64::from_be_bytes(window_bytes);
        (issued == current || issued == current - 1) && hmac::verify(&self.key, window, tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_live_five_to_ten_minutes_and_are_per_key() {
        let key = NonceKey::generate().unwrap();
        let t = 1_800_000_000 - 1_800_000_000 % WINDOW;
        let n = key.issue(t);
        assert!(key.is_current(&n, t));
        assert!(key.is_current(&n, t + 2 * WINDOW - 1));
        assert!(!key.is_current(&n, t + 2 * WINDOW));
        assert!(!key.is_current(&n, t - 1));
        // Issued at the end of a window: still good five minutes later.
        let late = key.issue(t + WINDOW - 1);
        assert!(key.is_current(&late, t + 2 * WINDOW - 1));
        let other = NonceKey::generate().unwrap();
        assert!(!other.is_current(&n, t));
        assert!(!key.is_current("", t));
        assert!(!key.is_current("not base64!", t));
        let mut forged = b64_decode(&n).unwrap();
        forged[0..8].copy_from_slice(&(t / WINDOW + 1).to_be_bytes());
        assert!(!key.is_current(&b64_encode(forged), t + WINDOW));
    }
}

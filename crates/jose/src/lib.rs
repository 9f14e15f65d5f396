//! JOSE for Segl: algorithms, JWKs, compact JWS parsing and verification, and signing.
//!
//! What this crate owns: turning bytes into keys once (so the hot path never re-parses a key),
//! splitting and decoding a compact JWS, checking a signature against keys the *caller* chose,
//! and producing signed JWTs. JSON is parsed strictly: duplicate member names are rejected
//! (RFC 7515 §4) and non-UTF-8 input never gets past the decoder (RFC 8725 §3.7).
//!
//! What it does not own: which keys are trusted for which kind of JWT, and what the claims
//! must say. Those are decisions of `segl-core` (server) and `segl-verify` (APIs). The crypto is
//! aws-lc-rs; nothing here implements a primitive.

mod alg;
mod b64;
pub mod dpop;
mod error;
mod json;
mod jwk;
mod jws;
mod keys;

pub use alg::{Alg, KeyType};
pub use b64::{decode as b64_decode, encode as b64_encode};
pub use error::Error;
pub use json::{JsonObject, parse_object};
pub use jwk::{Jwk, Jwks};
pub use jws::{MAX_JWS_LEN, UnverifiedJws, VerifiedJws, sign_jwt};
pub use keys::{SigningKey, VerifyingKey};

/// Fills `out` with cryptographically secure random bytes.
pub fn random_bytes(out: &mut [u8]) -> Result<(), Error> {
    aws_lc_rs::rand::fill(out).map_err(|_| Error::Crypto("random generator failed"))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

//! base64url without padding (RFC 7515 §2), strict on decode.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes as base64url without padding.
pub fn encode(data: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url without padding; padding, whitespace and the standard alphabet are errors.
pub fn decode(text: &str) -> Result<Vec<u8>, crate::Error> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| crate::Error::Malformed("invalid base64url"))
}

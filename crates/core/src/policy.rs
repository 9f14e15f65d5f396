//! The server-wide policy a decision is made under: issuer, profile, lifetimes, algorithms.

use segl_jose::Alg;

/// Compatibility profile (SECURITY.md D1, D2, D7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Accepts what HelseID clients send (the default).
    HelseId,
    /// FAPI 2.0: strict algorithms and audience.
    Fapi2,
}

impl Profile {
    /// Algorithms accepted for client assertions, request objects and DPoP proofs.
    pub fn accepted_algs(self) -> &'static [Alg] {
        match self {
            Profile::HelseId => &Alg::ALL,
            Profile::Fapi2 => &[Alg::PS256, Alg::ES256, Alg::EdDSA],
        }
    }
}

/// Allowed clock skew for `iat`/`nbf` in the future and `exp` in the past (FAPI2-SP #13).
pub const CLOCK_SKEW: i64 = 10;
/// Longest accepted client-assertion lifetime, `exp - iat` (HelseID).
pub const MAX_ASSERTION_LIFETIME: i64 = 60;

/// What the server decides under.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The issuer identifier, no trailing slash.
    pub issuer: String,
    /// The token endpoint URL (`{issuer}/connect/token`).
    pub token_endpoint: String,
    /// The profile.
    pub profile: Profile,
    /// Access-token lifetime in seconds.
    pub access_token_lifetime: i64,
}

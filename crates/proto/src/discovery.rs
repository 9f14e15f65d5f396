//! The discovery document (OpenID Connect Discovery 1.0 §3, RFC 8414 §2) and the JWKS shape.

use serde::{Deserialize, Serialize};

/// Authorization server metadata, as Segl publishes it and as clients read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// The issuer identifier; exactly the `iss` of every token.
    pub issuer: String,
    /// Where the public signing keys are.
    pub jwks_uri: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The authorization endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// The PAR endpoint (RFC 9126).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_authorization_request_endpoint: Option<String>,
    /// Userinfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    /// Grant types the token endpoint serves.
    pub grant_types_supported: Vec<String>,
    /// Response types (empty until the authorization endpoint exists).
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    /// Client authentication methods: `private_key_jwt` only.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Algorithms accepted for client assertions.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// Algorithms ID tokens are signed with.
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Algorithms access tokens are signed with.
    #[serde(default)]
    pub access_token_signing_alg_values_supported: Vec<String>,
    /// Algorithms accepted in DPoP proofs.
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// Subject identifier types.
    #[serde(default)]
    pub subject_types_supported: Vec<String>,
    /// Every scope a client can be registered for.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Claims that tokens may carry.
    #[serde(default)]
    pub claims_supported: Vec<String>,
    /// PKCE methods.
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 9207.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// RFC 8707: `resource` is understood at the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_indicators_supported: Option<bool>,
}

/// A JSON Web Key Set as published (public keys only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<serde_json::Value>,
}

//! Refresh tokens (RFC 6749 §6, HELSEID.md §8, SECURITY.md D3): what a refresh-token family
//! remembers, and the checks of a refresh request once the store has rotated the token.
//!
//! Tokens rotate on every use. The successor of a token is derived from it (an HMAC under a
//! server secret), so a retry with the just-replaced token inside the grace window gets the
//! same successor — one family outcome, never two live tokens — and any other reuse revokes the
//! family (the store decides that atomically).

use crate::OAuthError;
use crate::authorize::CodeGrant;
use crate::client_auth::AuthenticatedClient;
use crate::organization::OrgSelection;
use segl_proto::{ErrorCode, claims::scope, grant};
use serde::{Deserialize, Serialize};

/// What a refresh-token family carries from the login: the grant (request and person), the
/// organizations, and the DPoP key the tokens are bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshData {
    /// The original authorization (the person's claims are carried over, not re-asked).
    pub grant: CodeGrant,
    /// The organizations at issue time (a refresh may switch them by assertion).
    pub org: OrgSelection,
    /// DPoP key thumbprint the refresh token is bound to.
    pub dpop_jkt: Option<String>,
}

/// A refresh request (RFC 6749 §6, RFC 8707 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    /// The refresh token.
    pub refresh_token: String,
    /// A narrower scope, if asked.
    pub scope: Option<Vec<String>>,
    /// `resource`: another API among those named at PAR.
    pub resource: Vec<String>,
}

/// Whether a code exchange for `grant` yields a refresh token: `offline_access` was granted
/// and the client has the `refresh_token` grant.
pub fn offered(client: &AuthenticatedClient, grant: &CodeGrant) -> bool {
    grant
        .request
        .scopes
        .iter()
        .any(|s| s == scope::OFFLINE_ACCESS)
        && client.client().has_grant(grant::REFRESH_TOKEN)
}

/// Checks a rotated family's data against the request: the same client, the same DPoP key,
/// a scope no wider than granted (RFC 6749 §6). Returns the grant to issue from.
pub fn check(
    data: &RefreshData,
    client: &AuthenticatedClient,
    request: &RefreshRequest,
    proof_jkt: Option<&str>,
) -> Result<CodeGrant, OAuthError> {
    let client = client.client();
    if data.grant.request.client_id != client.client_id {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the refresh token was issued to another client",
        ));
    }
    if !client.has_grant(grant::REFRESH_TOKEN) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the refresh_token grant",
        ));
    }
    if let Some(bound) = &data.dpop_jkt {
        match proof_jkt {
            Some(jkt) if jkt == bound => {}
            Some(_) => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "the refresh token is bound to another DPoP key",
                ));
            }
            None => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "the refresh token is DPoP-bound: send a proof by its key",
                ));
            }
        }
    }
    let mut grant = data.grant.clone();
    if let Some(requested) = &request.scope {
        if let Some(wider) = requested
            .iter()
            .find(|s| !data.grant.request.scopes.contains(s))
        {
            return Err(OAuthError::invalid_scope(format!(
                "scope {wider} was not granted: a refresh may only narrow the scope"
            )));
        }
        grant.request.scopes = requested.clone();
    }
    Ok(grant)
}

//! Grants: from an authenticated client and a typed request to the claims of an access token.

use crate::authorize::CodeGrant;
use crate::client_auth::AuthenticatedClient;
use crate::organization::OrgSelection;
use crate::registry::Client;
use crate::{Api, OAuthError, Policy, Profile, Registry, Tenancy, UnixTime};
use segl_jose::dpop::VerifiedDpop;
use segl_proto::{ErrorCode, claims as c, grant};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// A `client_credentials` request (RFC 6749 §4.4.2) with resource indicators (RFC 8707).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCredentialsRequest {
    /// The requested scopes, if any.
    pub scope: Option<Vec<String>>,
    /// `resource` values.
    pub resource: Vec<String>,
}

/// The token request after its grant type was recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    /// `client_credentials`.
    ClientCredentials(ClientCredentialsRequest),
    /// `authorization_code`.
    AuthorizationCode(crate::authorize::CodeExchange),
    /// Token exchange (RFC 8693).
    TokenExchange(crate::exchange::ExchangeRequest),
    /// `refresh_token`.
    RefreshToken(crate::refresh::RefreshRequest),
}

impl TokenRequest {
    /// Reads the grant-specific parameters from a form. An unknown grant is
    /// `unsupported_grant_type`; a missing one is `invalid_request`.
    pub fn from_form(form: &mut crate::form::Form) -> Result<TokenRequest, OAuthError> {
        let grant_type = form
            .take("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
        match grant_type.as_str() {
            grant::CLIENT_CREDENTIALS => {
                Ok(TokenRequest::ClientCredentials(ClientCredentialsRequest {
                    scope: form.take("scope").map(|s| split_scope(&s)),
                    resource: form.take_all("resource"),
                }))
            }
            grant::AUTHORIZATION_CODE => Ok(TokenRequest::AuthorizationCode(
                crate::authorize::CodeExchange {
                    code: form
                        .take("code")
                        .ok_or_else(|| OAuthError::invalid_request("code is required"))?,
                    redirect_uri: form.take("redirect_uri"),
                    code_verifier: form.take("code_verifier"),
                    resource: form.take_all("resource"),
                },
            )),
            grant::REFRESH_TOKEN => {
                Ok(TokenRequest::RefreshToken(crate::refresh::RefreshRequest {
                    refresh_token: form
                        .take("refresh_token")
                        .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?,
                    scope: form.take("scope").map(|s| split_scope(&s)),
                    resource: form.take_all("resource"),
                }))
            }
            grant::TOKEN_EXCHANGE => Ok(TokenRequest::TokenExchange(
                crate::exchange::ExchangeRequest {
                    subject_token: form
                        .take("subject_token")
                        .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?,
                    subject_token_type: form.take("subject_token_type"),
                    requested_token_type: form.take("requested_token_type"),
                    scope: form.take("scope").map(|s| split_scope(&s)),
                    resource: form.take_all("resource"),
                    audience: form.take_all("audience"),
                    actor_token_present: form.take("actor_token").is_some()
                        || form.take("actor_token_type").is_some(),
                },
            )),
            other => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type {other} is not supported"),
            )),
        }
    }
}

fn split_scope(scope: &str) -> Vec<String> {
    scope.split_ascii_whitespace().map(str::to_owned).collect()
}

/// The claims of a JWT access token (RFC 9068 §2.2 plus HelseID's client claims).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// The one API audience.
    pub aud: String,
    /// Subject: the client (no person in client_credentials).
    pub sub: String,
    /// The client.
    pub client_id: String,
    /// Granted scopes: an array in profile `helseid`, a string in `fapi2`.
    pub scope: Value,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Unique id.
    pub jti: String,
    /// How the client authenticated.
    pub client_amr: &'static str,
    /// `helseid://claims/client/client_name`.
    #[serde(rename = "helseid://claims/client/client_name")]
    pub client_name: String,
    /// `helseid://claims/client/claims/orgnr_parent`.
    #[serde(rename = "helseid://claims/client/claims/orgnr_parent")]
    pub orgnr_parent: String,
    /// `helseid://claims/client/claims/orgnr_supplier` (multi-tenant clients).
    #[serde(
        rename = "helseid://claims/client/claims/orgnr_supplier",
        skip_serializing_if = "Option::is_none"
    )]
    pub orgnr_supplier: Option<String>,
    /// `helseid://claims/client/claims/orgnr_child`.
    #[serde(
        rename = "helseid://claims/client/claims/orgnr_child",
        skip_serializing_if = "Option::is_none"
    )]
    pub orgnr_child: Option<String>,
    /// `helseid://claims/client/client_tenancy`.
    #[serde(rename = "helseid://claims/client/client_tenancy")]
    pub client_tenancy: &'static str,
    /// Confirmation (RFC 9449 §6): the DPoP key the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The person's claims (after a login), by name.
    #[serde(flatten)]
    pub identity: Map<String, Value>,
}

/// The `cnf` claim of a DPoP-bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: String,
}

impl AccessTokenClaims {
    /// `DPoP` for a bound token, else `Bearer` (RFC 9449 §5).
    pub fn token_type(&self) -> &'static str {
        if self.cnf.is_some() { "DPoP" } else { "Bearer" }
    }
}

/// Sender-constraint policy (RFC 9449 §5, §5.2): a client registered for DPoP-bound tokens must
/// prove possession; otherwise a proof, when sent, binds the token.
pub fn binding(
    client: &AuthenticatedClient,
    dpop: Option<&VerifiedDpop>,
) -> Result<Option<Confirmation>, OAuthError> {
    match dpop {
        Some(proof) => Ok(Some(Confirmation {
            jkt: proof.jkt().to_owned(),
        })),
        None if client.client().require_dpop => Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "this client must send a DPoP proof (require_dpop): tokens for it are DPoP-bound",
        )),
        None => Ok(None),
    }
}

impl AccessTokenClaims {
    /// The granted scopes as the space-separated string of a token response.
    pub fn scope_string(&self) -> String {
        match &self.scope {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    }
}

/// RFC 6749 §4.4: a token for the client itself, for one API.
#[allow(clippy::too_many_arguments)]
pub fn client_credentials(
    client: &AuthenticatedClient,
    request: &ClientCredentialsRequest,
    registry: &Registry,
    policy: &Policy,
    now: UnixTime,
    jti: String,
    dpop: Option<&VerifiedDpop>,
    org: &OrgSelection,
) -> Result<AccessTokenClaims, OAuthError> {
    let cnf = binding(client, dpop)?;
    let client = client.client();
    if !client.has_grant(grant::CLIENT_CREDENTIALS) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the client_credentials grant",
        ));
    }
    let requested: Vec<&str> = match &request.scope {
        Some(scopes) => {
            for s in scopes {
                if !client.scopes.contains(s) {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {s} is not allowed for this client"
                    )));
                }
                if registry.api_of_scope(s).is_none() {
                    return Err(OAuthError::invalid_scope(format!(
                        "scope {s} needs a person login; client_credentials grants API scopes only"
                    )));
                }
            }
            scopes.iter().map(String::as_str).collect()
        }
        None => client
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| registry.api_of_scope(s).is_some())
            .collect(),
    };
    let (api, scopes) = select_api(
        &requested,
        &request.resource,
        registry,
        request.scope.is_some(),
    )?;
    let base = Issue {
        org,
        policy,
        now,
        jti,
        cnf,
    };
    Ok(base.claims(
        client,
        &api.audience,
        &scopes,
        client.client_id.clone(),
        Map::new(),
    ))
}

/// What every issued access token shares: the policy, the time, the id and the binding.
struct Issue<'p> {
    policy: &'p Policy,
    org: &'p OrgSelection,
    now: UnixTime,
    jti: String,
    cnf: Option<Confirmation>,
}

impl Issue<'_> {
    fn claims(
        self,
        client: &Client,
        aud: &str,
        scopes: &[&str],
        sub: String,
        identity: Map<String, Value>,
    ) -> AccessTokenClaims {
        let scope = match self.policy.profile {
            Profile::HelseId => {
                Value::from(scopes.iter().map(|s| Value::from(*s)).collect::<Vec<_>>())
            }
            Profile::Fapi2 => Value::from(scopes.join(" ")),
        };
        let tenancy = match &client.tenancy {
            Tenancy::Single => c::SINGLE_TENANT,
            Tenancy::Multi { .. } => c::MULTI_TENANT,
        };
        let mut identity = identity;
        if let Some(journal) = &self.org.journal_id {
            identity.insert(
                crate::organization::SFM_JOURNAL_ID.into(),
                Value::from(journal.clone()),
            );
        }
        AccessTokenClaims {
            iss: self.policy.issuer.clone(),
            aud: aud.to_owned(),
            sub,
            client_id: client.client_id.clone(),
            scope,
            iat: self.now.secs(),
            nbf: self.now.secs(),
            exp: self.now.secs() + self.policy.access_token_lifetime,
            jti: self.jti,
            client_amr: c::AMR_PRIVATE_KEY_JWT,
            client_name: client.name.clone(),
            orgnr_parent: self.org.parent.clone(),
            orgnr_supplier: self.org.supplier.clone(),
            orgnr_child: self.org.child.clone(),
            client_tenancy: tenancy,
            cnf: self.cnf,
            identity,
        }
    }
}

/// The access token of a code exchange (RFC 6749 §4.1.3): the client's claims enriched with
/// the person's, each identity claim only when its scope was granted. The audience is the API
/// of the granted API scopes — the one `resource` names when they span several (it must be one
/// named at PAR, when PAR named any) — or, with identity scopes only, the issuer itself (for
/// userinfo).
#[allow(clippy::too_many_arguments)]
pub fn code_token(
    client: &AuthenticatedClient,
    grant: &CodeGrant,
    resource: &[String],
    registry: &Registry,
    policy: &Policy,
    now: UnixTime,
    jti: String,
    dpop: Option<&VerifiedDpop>,
    org: &OrgSelection,
) -> Result<AccessTokenClaims, OAuthError> {
    let cnf = binding(client, dpop)?;
    if let [one] = resource
        && !grant.request.resources.is_empty()
        && !grant.request.resources.contains(one)
    {
        return Err(OAuthError::invalid_target(format!(
            "resource {one} was not named in the authorization request"
        )));
    }
    let api_scopes: Vec<&str> = grant
        .request
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|s| registry.api_of_scope(s).is_some())
        .collect();
    let default_resource;
    let resource = match (resource, grant.request.resources.as_slice()) {
        ([], [first, ..]) => {
            default_resource = [first.clone()];
            &default_resource[..]
        }
        (r, _) => r,
    };
    let (aud, api) = if api_scopes.is_empty() && resource.is_empty() {
        (policy.issuer.clone(), Vec::new())
    } else {
        let (api, narrowed) = select_api(&api_scopes, resource, registry, true)?;
        (api.audience.clone(), narrowed)
    };
    let identity_scopes = grant
        .request
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|s| registry.api_of_scope(s).is_none());
    let scopes: Vec<&str> = identity_scopes.chain(api).collect();
    let mut identity = grant.login.access_token_claims(&grant.request.scopes);
    if let Some(obo) = &grant.request.on_behalf_of {
        identity.insert(c::ON_BEHALF_OF.into(), Value::from(obo.clone()));
    }
    let base = Issue {
        org,
        policy,
        now,
        jti,
        cnf,
    };
    Ok(base.claims(
        client.client(),
        &aud,
        &scopes,
        grant.login.pseudonym.clone(),
        identity,
    ))
}

/// The claims of an ID token (OIDC Core §2, §3.1.3.6; HELSEID.md §5.2).
pub fn id_token_claims(
    grant: &CodeGrant,
    policy: &Policy,
    id_token_lifetime: i64,
    now: UnixTime,
    at_hash: String,
) -> Map<String, Value> {
    let login = &grant.login;
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::from(policy.issuer.clone()));
    claims.insert("sub".into(), Value::from(login.pseudonym.clone()));
    claims.insert("aud".into(), Value::from(grant.request.client_id.clone()));
    claims.insert("iat".into(), Value::from(now.secs()));
    claims.insert("exp".into(), Value::from(now.secs() + id_token_lifetime));
    claims.insert("auth_time".into(), Value::from(login.auth_time));
    claims.insert("sid".into(), Value::from(login.sid.clone()));
    claims.insert("idp".into(), Value::from(login.idp.clone()));
    claims.insert("amr".into(), Value::from(login.amr.clone()));
    claims.insert("acr".into(), Value::from(login.acr()));
    claims.insert("at_hash".into(), Value::from(at_hash));
    if let Some(nonce) = &grant.request.nonce {
        claims.insert("nonce".into(), Value::from(nonce.clone()));
    }
    if let Some(obo) = &grant.request.on_behalf_of {
        claims.insert(c::ON_BEHALF_OF.into(), Value::from(obo.clone()));
    }
    claims.extend(login.scoped_claims(&grant.request.scopes));
    claims
}

/// One audience per token: the API of the requested scopes, or the one `resource` names
/// (RFC 8707 §2.2: the scopes are then narrowed to that API).
fn select_api<'r, 's>(
    scopes: &[&'s str],
    resources: &[String],
    registry: &'r Registry,
    explicit_scope: bool,
) -> Result<(&'r Api, Vec<&'s str>), OAuthError> {
    let apis: BTreeSet<&str> = scopes
        .iter()
        .filter_map(|s| registry.api_of_scope(s))
        .map(|a| a.audience.as_str())
        .collect();
    let audience = match resources {
        [] => match apis.len() {
            0 => {
                return Err(OAuthError::invalid_scope(
                    "no API scope requested, and this client has none",
                ));
            }
            1 => apis.into_iter().next().unwrap_or_default().to_owned(),
            _ => {
                let what = if explicit_scope {
                    "the requested scopes span"
                } else {
                    "this client has scopes for"
                };
                return Err(OAuthError::invalid_scope(format!(
                    "{what} several APIs ({}): a token is for one API, so ask for one API's scopes or name it with resource",
                    apis.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        },
        [one] => {
            if registry.api(one).is_none() {
                return Err(OAuthError::invalid_target(format!(
                    "unknown resource {one}"
                )));
            }
            if !apis.contains(one.as_str()) {
                return Err(OAuthError::invalid_target(format!(
                    "resource {one} is not an API of the requested scopes"
                )));
            }
            one.clone()
        }
        _ => {
            return Err(OAuthError::invalid_target(
                "one resource per token request: a token is for one API",
            ));
        }
    };
    let api = registry
        .api(&audience)
        .ok_or_else(|| OAuthError::invalid_target(format!("unknown resource {audience}")))?;
    let narrowed = scopes
        .iter()
        .copied()
        .filter(|s| {
            registry
                .api_of_scope(s)
                .is_some_and(|a| a.audience == audience)
        })
        .collect();
    Ok((api, narrowed))
}

//! HelseID claim and scope names (HELSEID.md §5).

/// `helseid://claims/client/client_name`.
pub const CLIENT_NAME: &str = "helseid://claims/client/client_name";
/// `helseid://claims/client/client_tenancy`.
pub const CLIENT_TENANCY: &str = "helseid://claims/client/client_tenancy";
/// `helseid://claims/client/claims/orgnr_parent`.
pub const ORGNR_PARENT: &str = "helseid://claims/client/claims/orgnr_parent";
/// `helseid://claims/client/claims/orgnr_child`.
pub const ORGNR_CHILD: &str = "helseid://claims/client/claims/orgnr_child";
/// `helseid://claims/client/claims/orgnr_supplier`.
pub const ORGNR_SUPPLIER: &str = "helseid://claims/client/claims/orgnr_supplier";
/// `helseid://claims/client/original_client_id` (after token exchange).
pub const ORIGINAL_CLIENT_ID: &str = "helseid://claims/client/original_client_id";
/// `helseid://claims/client/on_behalf_of`: the organization the person logged in on behalf of.
pub const ON_BEHALF_OF: &str = "helseid://claims/client/on_behalf_of";
/// `client_amr`: how the client authenticated.
pub const CLIENT_AMR: &str = "client_amr";
/// `helseid://claims/identity/pid`.
pub const PID: &str = "helseid://claims/identity/pid";
/// `helseid://claims/identity/pid_pseudonym`.
pub const PID_PSEUDONYM: &str = "helseid://claims/identity/pid_pseudonym";
/// `helseid://claims/identity/security_level`.
pub const SECURITY_LEVEL: &str = "helseid://claims/identity/security_level";
/// `helseid://claims/identity/assurance_level`.
pub const ASSURANCE_LEVEL: &str = "helseid://claims/identity/assurance_level";
/// `helseid://claims/identity/network`.
pub const NETWORK: &str = "helseid://claims/identity/network";
/// `helseid://claims/hpr/hpr_number`.
pub const HPR_NUMBER: &str = "helseid://claims/hpr/hpr_number";

/// `helseid://claims/hpr/hpr_details` (userinfo only).
pub const HPR_DETAILS: &str = "helseid://claims/hpr/hpr_details";

/// Scope names (HELSEID.md §5.1).
pub mod scope {
    /// OpenID Connect.
    pub const OPENID: &str = "openid";
    /// Name claims.
    pub const PROFILE: &str = "profile";
    /// Refresh tokens.
    pub const OFFLINE_ACCESS: &str = "offline_access";
    /// The national identity number.
    pub const PID: &str = "helseid://scopes/identity/pid";
    /// Its pseudonym.
    pub const PID_PSEUDONYM: &str = "helseid://scopes/identity/pid_pseudonym";
    /// Security level.
    pub const SECURITY_LEVEL: &str = "helseid://scopes/identity/security_level";
    /// Assurance level.
    pub const ASSURANCE_LEVEL: &str = "helseid://scopes/identity/assurance_level";
    /// Network.
    pub const NETWORK: &str = "helseid://scopes/identity/network";
    /// HPR number.
    pub const HPR_NUMBER: &str = "helseid://scopes/hpr/hpr_number";
}

/// `client_amr` value for private_key_jwt.
pub const AMR_PRIVATE_KEY_JWT: &str = "private_key_jwt";
/// `client_tenancy` for a single-tenant client.
pub const SINGLE_TENANT: &str = "single-tenant";
/// `client_tenancy` for a multi-tenant client.
pub const MULTI_TENANT: &str = "multi-tenant";

/// The client claims every access token carries, in the order `segl token inspect` explains them.
pub const CLIENT_CLAIMS: [&str; 7] = [
    CLIENT_NAME,
    CLIENT_TENANCY,
    ORGNR_PARENT,
    ORGNR_CHILD,
    ORGNR_SUPPLIER,
    ORIGINAL_CLIENT_ID,
    CLIENT_AMR,
];

/// Identity scopes known to Segl (HELSEID.md §5.1).
pub const IDENTITY_SCOPES: [&str; 9] = [
    "openid",
    "profile",
    "offline_access",
    "helseid://scopes/identity/pid",
    "helseid://scopes/identity/pid_pseudonym",
    "helseid://scopes/identity/security_level",
    "helseid://scopes/identity/assurance_level",
    "helseid://scopes/identity/network",
    "helseid://scopes/hpr/hpr_number",
];

/// A short English explanation of a claim name, for `segl token inspect`.
pub fn describe(name: &str) -> Option<&'static str> {
    Some(match name {
        "iss" => "issuer: the Segl server that signed the token",
        "aud" => "audience: the API this token is for",
        "sub" => "subject: the person (pseudonym) or, without a person, the client",
        "client_id" => "the client system that asked for the token",
        "scope" => "what the token allows at the API",
        "iat" => "issued at",
        "nbf" => "not valid before",
        "exp" => "expires at",
        "jti" => "unique token id (for audit and revocation)",
        "cnf" => "confirmation: the DPoP key the token is bound to",
        "act" => "actor: the service acting on behalf of the subject (token exchange)",
        "idp" => "the identity provider the person logged in with",
        "amr" => "how the person authenticated",
        "auth_time" => "when the person logged in",
        "sid" => "the person's login session",
        "acr" => "the assurance of the login (Level4 = high)",
        "name" => "the person's full name",
        "given_name" => "the person's given name",
        "middle_name" => "the person's middle name",
        "family_name" => "the person's family name",
        "nonce" => "the client's value binding this ID token to its request",
        "at_hash" => "hash of the access token issued with this ID token",
        "nhn:sfm:journal-id" => "the SFM journal the client acts in (multi-tenant SFM clients)",
        HPR_DETAILS => "the person's authorizations in the health personnel register",
        CLIENT_AMR => "how the client authenticated",
        CLIENT_NAME => "the client's registered name",
        CLIENT_TENANCY => "single-tenant (one organization) or multi-tenant (SaaS) client",
        ORGNR_PARENT => "organization number of the legal entity the client acts for",
        ORGNR_CHILD => "organization number of the sub-unit the client acts for",
        ORGNR_SUPPLIER => "organization number of the supplier of a multi-tenant client",
        ORIGINAL_CLIENT_ID => "the first client in a token-exchange chain",
        PID => "the person's national identity number",
        PID_PSEUDONYM => "pseudonym of the person's national identity number",
        SECURITY_LEVEL => "security level of the login (4 = high)",
        ASSURANCE_LEVEL => "eIDAS assurance level of the login",
        NETWORK => "the network the person logged in from",
        HPR_NUMBER => "the person's number in the health personnel register",
        _ => return None,
    })
}

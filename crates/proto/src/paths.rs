//! Endpoint paths. The router and the discovery document both read these constants, so a route
//! can never be served without being advertised (or advertised without being served).

/// Discovery metadata (OpenID Connect Discovery 1.0, RFC 8414).
pub const DISCOVERY: &str = "/.well-known/openid-configuration";
/// The public signing keys.
pub const JWKS: &str = "/.well-known/openid-configuration/jwks";
/// Token endpoint.
pub const TOKEN: &str = "/connect/token";
/// Liveness and readiness.
pub const HEALTH: &str = "/health";
/// Liveness only.
pub const HEALTH_LIVE: &str = "/health/live";
/// Readiness: the store answers.
pub const HEALTH_READY: &str = "/health/ready";
/// Pushed authorization requests (RFC 9126).
pub const PAR: &str = "/connect/par";
/// The authorization endpoint.
pub const AUTHORIZE: &str = "/connect/authorize";
/// OpenID Connect userinfo.
pub const USERINFO: &str = "/connect/userinfo";
/// RP-initiated logout.
pub const END_SESSION: &str = "/connect/endsession";
/// The built-in test identity provider's login form.
pub const TEST_IDP_LOGIN: &str = "/testidp/login";
/// Token revocation (RFC 7009).
pub const REVOCATION: &str = "/connect/revocation";
/// Token introspection (RFC 7662).
pub const INTROSPECTION: &str = "/connect/introspect";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// HelseID's list of identity providers (`available_idps` in discovery).
pub const AVAILABLE_IDPS: &str = "/connect/availableidps";
/// The identity-provider choice page (`?tx=…`, and `&idp=<name>` to choose).
pub const IDP_CHOICE: &str = "/login/idp";
/// Where an upstream identity provider returns the browser: `/federation/<name>/callback`.
pub const FEDERATION_CALLBACK: &str = "/federation/{name}/callback";

//! The Segl client library, for client systems: load a private key, build private_key_jwt client
//! assertions (RFC 7523), read discovery, and request tokens.
//!
//! It depends on the wire types (`segl-proto`) and JOSE (`segl-jose`) only; it works against
//! any server that speaks the same protocol as HelseID.

use segl_jose::{Alg, Jwk, SigningKey};
use segl_proto::discovery::Discovery;
use segl_proto::token::TokenResponse;
use segl_proto::{CLIENT_ASSERTION_TYPE_JWT_BEARER, ErrorResponse};
use serde_json::json;

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key file cannot be read or used.
    #[error("key: {0}")]
    Key(String),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an OAuth error.
    #[error("{status}: {} ({})", .error.error, .error.error_description.as_deref().unwrap_or(""))]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The error body.
        error: ErrorResponse,
    },
    /// The server's answer is not what the protocol says.
    #[error("protocol: {0}")]
    Protocol(String),
    /// JOSE failure (signing, randomness).
    #[error(transparent)]
    Jose(#[from] segl_jose::Error),
}

/// Seconds since the Unix epoch, from the system clock.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Loads a private key: a private JWK file (`{"kty":…, "d":…}`) or a PKCS#8 PEM file (then
/// `alg` is required unless the key is EC or Ed25519… and RS256 is assumed for RSA).
pub fn load_key(path: &std::path::Path, alg: Option<Alg>) -> Result<SigningKey, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Key(format!("{}: {e}", path.display())))?;
    let wrap = |e: segl_jose::Error| Error::Key(format!("{}: {e}", path.display()));
    if text.trim_start().starts_with("-----BEGIN") {
        if !text.contains("BEGIN PRIVATE KEY") {
            return Err(Error::Key(format!(
                "{}: only PKCS#8 PEM (BEGIN PRIVATE KEY) is supported",
                path.display()
            )));
        }
        // Try the algorithm families in turn when none is given.
        let candidates: Vec<Alg> = match alg {
            Some(a) => vec![a],
            None => vec![Alg::RS256, Alg::ES256, Alg::ES384, Alg::ES512, Alg::EdDSA],
        };
        let mut last = None;
        for a in candidates {
            match SigningKey::from_pkcs8_pem(a, &text) {
                Ok(k) => return Ok(k),
                Err(e) => last = Some(e),
            }
        }
        return Err(wrap(last.unwrap_or(segl_jose::Error::Key("no usable key"))));
    }
    let jwk = Jwk::from_json(text.as_bytes()).map_err(wrap)?;
    if !jwk.has_private_members() {
        return Err(Error::Key(format!(
            "{}: this is a public key; the client needs its private JWK",
            path.display()
        )));
    }
    SigningKey::from_private_jwk(&jwk, alg).map_err(wrap)
}

/// A fresh `jti`: 128 random bits, hex.
pub fn new_jti() -> Result<String, Error> {
    let mut b = [0u8; 16];
    segl_jose::random_bytes(&mut b)?;
    Ok(hex::encode(b))
}

/// Builds a client assertion (RFC 7523 §3): `iss` = `sub` = client_id, `aud` = the issuer,
/// a 30-second lifetime, a fresh `jti`, `typ` `client-authentication+jwt`.
pub fn client_assertion(
    key: &SigningKey,
    client_id: &str,
    issuer: &str,
    now: i64,
) -> Result<String, Error> {
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 30,
        "jti": new_jti()?,
    });
    Ok(segl_jose::sign_jwt(
        key,
        segl_proto::typ::CLIENT_AUTHENTICATION,
        &claims,
    )?)
}

/// A DPoP key (RFC 9449) with the server nonces it has been given, per origin.
#[derive(Debug)]
pub struct DpopKey {
    key: SigningKey,
    nonces: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl DpopKey {
    /// A new ephemeral key (ES256 is the usual choice).
    pub fn generate(alg: Alg) -> Result<DpopKey, Error> {
        Ok(DpopKey::new(SigningKey::generate(alg)?))
    }

    /// Wraps an existing key.
    pub fn new(key: SigningKey) -> DpopKey {
        DpopKey {
            key,
            nonces: Default::default(),
        }
    }

    /// The RFC 7638 thumbprint: the `cnf.jkt` of tokens bound to this key.
    pub fn jkt(&self) -> Result<String, Error> {
        Ok(self.key.public_jwk().thumbprint()?)
    }

    fn origin(url: &str) -> String {
        url::Url::parse(url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }

    /// A proof for `method url`, with the nonce last received from that origin and, for API
    /// calls, the access token's hash (`ath`).
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<String, Error> {
        let nonce = self
            .nonces
            .lock()
            .ok()
            .and_then(|m| m.get(&DpopKey::origin(url)).cloned());
        Ok(segl_jose::dpop::create_proof(
            &self.key,
            method,
            url,
            unix_now(),
            nonce.as_deref(),
            access_token,
        )?)
    }

    /// Remembers the `DPoP-Nonce` a response from `url`'s origin carried.
    pub fn remember_nonce(&self, url: &str, headers: &reqwest::header::HeaderMap) {
        let nonce = headers.get("dpop-nonce").and_then(|v| v.to_str().ok());
        if let (Some(n), Ok(mut m)) = (nonce, self.nonces.lock()) {
            m.insert(DpopKey::origin(url), n.to_owned());
        }
    }
}

/// Calls an API with an access token: `Authorization: DPoP` plus a proof (with `ath`) when
/// `dpop` is given, else `Bearer`; retries once when the API asks for a DPoP nonce.
pub async fn call_api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    access_token: &str,
    dpop: Option<&DpopKey>,
) -> Result<reqwest::Response, Error> {
    for attempt in 0..2 {
        let mut request = http.request(method.clone(), url);
        request = match dpop {
            Some(key) => request
                .header("authorization", format!("DPoP {access_token}"))
                .header("dpop", key.proof(method.as_str(), url, Some(access_token))?),
            None => request.header("authorization", format!("Bearer {access_token}")),
        };
        let response = request.send().await?;
        if let Some(key) = dpop {
            key.remember_nonce(url, response.headers());
            let wants_nonce = response.status() == reqwest::StatusCode::UNAUTHORIZED
                && response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("use_dpop_nonce"));
            if wants_nonce && attempt == 0 {
                continue;
            }
        }
        return Ok(response);
    }
    Err(Error::Protocol(
        "the API kept asking for a DPoP nonce".into(),
    ))
}

/// A client of one Segl (or HelseID) issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    http: reqwest::Client,
    metadata: Discovery,
}

impl Issuer {
    /// Reads `{issuer}/.well-known/openid-configuration` and checks that it names `issuer`
    /// exactly (mix-up defence).
    pub async fn discover(http: reqwest::Client, issuer: &str) -> Result<Issuer, Error> {
        let issuer = issuer.trim_end_matches('/');
        let url = format!("{issuer}{}", segl_proto::paths::DISCOVERY);
        let response = http.get(&url).send().await?;
        if !response.status().is_success() {
            return Err(Error::Protocol(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let metadata: Discovery = response.json().await?;
        if metadata.issuer != issuer {
            return Err(Error::Protocol(format!(
                "discovery names issuer {} but {issuer} was asked for",
                metadata.issuer
            )));
        }
        Ok(Issuer { http, metadata })
    }

    /// The metadata.
    pub fn metadata(&self) -> &Discovery {
        &self.metadata
    }

    /// The JWKS, as published.
    pub async fn jwks(&self) -> Result<segl_jose::Jwks, Error> {
        let bytes = self
            .http
            .get(&self.metadata.jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        segl_jose::Jwks::from_json(&bytes).map_err(|e| Error::Protocol(format!("JWKS: {e}")))
    }

    /// `client_credentials` with private_key_jwt; `resource` per RFC 8707. With `dpop`, the
    /// token is DPoP-bound, and a `use_dpop_nonce` answer is retried once with the nonce.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        key: &SigningKey,
        scope: Option<&str>,
        resource: Option<&str>,
        dpop: Option<&DpopKey>,
    ) -> Result<TokenResponse, Error> {
        let mut params: Vec<(&str, &str)> =
            vec![("grant_type", segl_proto::grant::CLIENT_CREDENTIALS)];
        if let Some(s) = scope {
            params.push(("scope", s));
        }
        if let Some(r) = resource {
            params.push(("resource", r));
        }
        self.token_request(client_id, key, &params, dpop).await
    }

    /// Any token request: adds client authentication and, with `dpop`, the proof and the
    /// nonce dance (RFC 9449 §8).
    pub async fn token_request(
        &self,
        client_id: &str,
        key: &SigningKey,
        params: &[(&str, &str)],
        dpop: Option<&DpopKey>,
    ) -> Result<TokenResponse, Error> {
        let url = self.metadata.token_endpoint.clone();
        let bytes = self
            .authenticated_post(&url, client_id, key, params, dpop)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("token response: {e}")))
    }

    /// A pushed authorization request (RFC 9126) with private_key_jwt and, with `dpop`, a proof
    /// whose key the code is then bound to. Returns the `request_uri`.
    pub async fn pushed_authorization_request(
        &self,
        client_id: &str,
        key: &SigningKey,
        params: &[(&str, &str)],
        dpop: Option<&DpopKey>,
    ) -> Result<String, Error> {
        let url = self
            .metadata
            .pushed_authorization_request_endpoint
            .clone()
            .ok_or_else(|| {
                Error::Protocol("the issuer has no pushed_authorization_request_endpoint".into())
            })?;
        let bytes = self
            .authenticated_post(&url, client_id, key, params, dpop)
            .await?;
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("PAR response: {e}")))?;
        body.get("request_uri")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol("PAR response has no request_uri".into()))
    }

    /// The URL that sends the browser to the login, for a pushed request.
    pub fn authorization_url(&self, client_id: &str, request_uri: &str) -> Result<String, Error> {
        let endpoint = self
            .metadata
            .authorization_endpoint
            .as_deref()
            .ok_or_else(|| Error::Protocol("the issuer has no authorization_endpoint".into()))?;
        let mut url = url::Url::parse(endpoint)
            .map_err(|e| Error::Protocol(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("request_uri", request_uri);
        Ok(url.into())
    }

    /// POSTs `params` with client authentication (and a DPoP proof, retrying once for a nonce);
    /// returns the body of a 2xx answer.
    async fn authenticated_post(
        &self,
        url: &str,
        client_id: &str,
        key: &SigningKey,
        params: &[(&str, &str)],
        dpop: Option<&DpopKey>,
    ) -> Result<Vec<u8>, Error> {
        for attempt in 0..2 {
            let assertion = client_assertion(key, client_id, &self.metadata.issuer, unix_now())?;
            let mut form: Vec<(&str, &str)> = params.to_vec();
            form.push(("client_id", client_id));
            form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE_JWT_BEARER));
            form.push(("client_assertion", &assertion));
            let mut request = self.http.post(url).form(&form);
            if let Some(d) = dpop {
                request = request.header("dpop", d.proof("POST", url, None)?);
            }
            let response = request.send().await?;
            if let Some(d) = dpop {
                d.remember_nonce(url, response.headers());
            }
            let status = response.status();
            let bytes = response.bytes().await?;
            if status.is_success() {
                return Ok(bytes.to_vec());
            }
            let error: ErrorResponse = serde_json::from_slice(&bytes).map_err(|_| {
                Error::Protocol(format!(
                    "{url} answered {status} without an OAuth error body"
                ))
            })?;
            if error.error == segl_proto::ErrorCode::UseDpopNonce && dpop.is_some() && attempt == 0
            {
                continue;
            }
            return Err(Error::OAuth {
                status: status.as_u16(),
                error,
            });
        }
        Err(Error::Protocol(format!(
            "{url} kept asking for a DPoP nonce"
        )))
    }
}

/// A PKCE pair (RFC 7636): a 256-bit verifier and its S256 challenge.
#[derive(Debug)]
pub struct Pkce {
    /// The verifier (sent with the code).
    pub verifier: String,
    /// The S256 challenge (sent at PAR).
    pub challenge: String,
}

impl Pkce {
    /// A new pair.
    pub fn new() -> Result<Pkce, Error> {
        let mut raw = [0u8; 32];
        segl_jose::random_bytes(&mut raw)?;
        let verifier = segl_jose::b64_encode(raw);
        let challenge = segl_jose::b64_encode(segl_jose::sha256(verifier.as_bytes()));
        Ok(Pkce {
            verifier,
            challenge,
        })
    }
}

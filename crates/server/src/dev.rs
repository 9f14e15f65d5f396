//! The development server's extras: with no `--config`, Segl registers one client and one API
//! so that a first token is one command away, and keeps the client's key beside the database.

use crate::config::{ApiConfig, ClientConfig};
use crate::keys::write_private_file;
use segl_jose::{Alg, Jwk, SigningKey};
use std::path::{Path, PathBuf};

/// The development client's id.
pub const DEV_CLIENT_ID: &str = "dev-client";
/// The development API's audience.
pub const DEV_AUDIENCE: &str = "segl:dev-api";
/// The development API's scope.
pub const DEV_SCOPE: &str = "segl:dev-api/read";

/// Where the development client's private key is.
pub fn dev_key_path(dir: &Path) -> PathBuf {
    dir.join("segl-dev-client.private.jwk.json")
}

/// Creates the development client's key pair if missing; returns the client and API entries to
/// register, and whether the key was created.
pub fn dev_registration(dir: &Path) -> Result<(ClientConfig, ApiConfig, bool), String> {
    let path = dev_key_path(dir);
    let (jwk, created) = if path.exists() {
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        (
            Jwk::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            false,
        )
    } else {
        let key = SigningKey::generate(Alg::ES256).map_err(|e| e.to_string())?;
        let private = key.to_private_jwk().map_err(|e| e.to_string())?;
        let text = serde_json::to_vec_pretty(&private).map_err(|e| e.to_string())?;
        write_private_file(&path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        (private, true)
    };
    let jwks = serde_json::json!({ "keys": [jwk.to_public()] }).to_string();
    let client = ClientConfig {
        client_id: DEV_CLIENT_ID.into(),
        name: "Segl development client".into(),
        organization: "999977774".into(),
        child_organizations: vec!["999977776".into()],
        grant_types: vec![segl_proto::grant::CLIENT_CREDENTIALS.into()],
        scopes: vec![DEV_SCOPE.into()],
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        jwks_file: None,
        jwks: Some(jwks),
        require_dpop: Some(false),
        token_exchange_actors: vec![],
        introspection: false,
        introspection_audiences: vec![],
        token_exchange: None,
        tenancy: None,
        supplier: None,
    };
    let api = ApiConfig {
        audience: DEV_AUDIENCE.into(),
        scopes: vec![DEV_SCOPE.into()],
    };
    Ok((client, api, created))
}

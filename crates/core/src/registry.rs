//! The registered clients and APIs, as the decisions need them: validated, with every client
//! key parsed once for every algorithm it may sign with.

use segl_jose::{Alg, Jwk, VerifyingKey};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A protected resource: its audience ("kortnavn") and the scopes it defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// The `aud` of its tokens, e.g. `nhn:sfm`.
    pub audience: String,
    /// Its scopes, each `<audience>/<name>`.
    pub scopes: Vec<String>,
}

/// Single- or multi-tenant (HELSEID.md §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenancy {
    /// One system at one organization.
    Single,
    /// A SaaS client serving customers that delegated to `supplier`.
    Multi {
        /// The supplier's organization number.
        supplier: String,
    },
}

/// A registered client.
#[derive(Debug)]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// Its registered name (`client_name` claim).
    pub name: String,
    /// `orgnr_parent`: the organization it acts for.
    pub organization: String,
    /// Child organizations it may ask for.
    pub child_organizations: Vec<String>,
    /// Grant types it may use.
    pub grant_types: BTreeSet<String>,
    /// Scopes it may ask for.
    pub scopes: BTreeSet<String>,
    /// Tenancy.
    pub tenancy: Tenancy,
    /// Whether its tokens must be DPoP-bound.
    pub require_dpop: bool,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Registered post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Audiences whose tokens this client may exchange (it acts for their callers).
    pub exchange_subject_audiences: Vec<String>,
    /// Actors allowed to exchange this client's tokens (empty: any entitled actor).
    pub exchange_actors: Vec<String>,
    /// Whether the client may call the introspection endpoint.
    pub introspection: bool,
    /// Audiences (besides its own client_id) whose tokens it may introspect.
    pub introspection_audiences: Vec<String>,
    /// Its public keys, parsed for each algorithm they fit.
    keys: Vec<VerifyingKey>,
}

impl Client {
    /// Builds a client, parsing each public JWK once for each of `algs` it fits. Fails with a
    /// message when a key has private members or when no key is usable.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client_id: String,
        name: String,
        organization: String,
        child_organizations: Vec<String>,
        grant_types: BTreeSet<String>,
        scopes: BTreeSet<String>,
        tenancy: Tenancy,
        require_dpop: bool,
        jwks: &[Jwk],
        algs: &[Alg],
    ) -> Result<Client, String> {
        let mut keys = Vec::new();
        for (i, jwk) in jwks.iter().enumerate() {
            if jwk.has_private_members() {
                return Err(format!(
                    "key {i} has private members: register only the public key"
                ));
            }
            let mut fitted = false;
            for alg in algs.iter().copied().filter(|a| jwk.fits(*a)) {
                let key = VerifyingKey::from_jwk(jwk, alg)
                    .map_err(|e| format!("key {i} ({}): {e}", jwk.kty))?;
                keys.push(key);
                fitted = true;
            }
            if !fitted {
                return Err(format!(
                    "key {i} (kty {}, alg {}) fits none of the accepted algorithms",
                    jwk.kty,
                    jwk.alg.as_deref().unwrap_or("unset")
                ));
            }
        }
        if keys.is_empty() {
            return Err("no public keys registered".into());
        }
        Ok(Client {
            client_id,
            name,
            organization,
            child_organizations,
            grant_types,
            scopes,
            tenancy,
            require_dpop,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            exchange_subject_audiences: Vec::new(),
            exchange_actors: Vec::new(),
            introspection: false,
            introspection_audiences: Vec::new(),
            keys,
        })
    }

    /// The keys that may have signed a JWS with `alg` and, when given, `kid`.
    pub fn keys_for(&self, alg: Alg, kid: Option<&str>) -> impl Iterator<Item = &VerifyingKey> {
        self.keys
            .iter()
            .filter(move |k| k.alg() == alg && (kid.is_none() || k.kid() == kid))
    }

    /// The client with its registered redirect URIs.
    pub fn with_redirects(
        mut self,
        redirect_uris: Vec<String>,
        post_logout: Vec<String>,
    ) -> Client {
        self.redirect_uris = redirect_uris;
        self.post_logout_redirect_uris = post_logout;
        self
    }

    /// The client with its token-exchange rights.
    pub fn with_exchange(mut self, subject_audiences: Vec<String>, actors: Vec<String>) -> Client {
        self.exchange_subject_audiences = subject_audiences;
        self.exchange_actors = actors;
        self
    }

    /// The client with its introspection rights.
    pub fn with_introspection(mut self, allowed: bool, audiences: Vec<String>) -> Client {
        self.introspection = allowed;
        self.introspection_audiences = audiences;
        self
    }

    /// Whether the client may use `grant_type`.
    pub fn has_grant(&self, grant_type: &str) -> bool {
        self.grant_types.contains(grant_type)
    }
}

/// All clients and APIs.
#[derive(Debug, Default)]
pub struct Registry {
    clients: HashMap<String, Arc<Client>>,
    apis: Vec<Api>,
    scope_api: HashMap<String, usize>,
}

impl Registry {
    /// Builds the registry. Fails on a duplicate client id or audience, or a scope defined twice.
    pub fn new(apis: Vec<Api>, clients: Vec<Client>) -> Result<Registry, String> {
        let mut scope_api = HashMap::new();
        for (i, api) in apis.iter().enumerate() {
            if apis.iter().take(i).any(|a| a.audience == api.audience) {
                return Err(format!("audience {} is defined twice", api.audience));
            }
            for scope in &api.scopes {
                if scope_api.insert(scope.clone(), i).is_some() {
                    return Err(format!("scope {scope} is defined by two APIs"));
                }
            }
        }
        let mut map = HashMap::new();
        for client in clients {
            let id = client.client_id.clone();
            if map.insert(id.clone(), Arc::new(client)).is_some() {
                return Err(format!("client_id {id} is registered twice"));
            }
        }
        Ok(Registry {
            clients: map,
            apis,
            scope_api,
        })
    }

    /// A client by id.
    pub fn client(&self, client_id: &str) -> Option<&Arc<Client>> {
        self.clients.get(client_id)
    }

    /// All clients.
    pub fn clients(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.clients.values()
    }

    /// The API that defines `scope`, if it is an API scope.
    pub fn api_of_scope(&self, scope: &str) -> Option<&Api> {
        self.scope_api.get(scope).and_then(|i| self.apis.get(*i))
    }

    /// An API by audience.
    pub fn api(&self, audience: &str) -> Option<&Api> {
        self.apis.iter().find(|a| a.audience == audience)
    }

    /// All APIs.
    pub fn apis(&self) -> &[Api] {
        &self.apis
    }
}

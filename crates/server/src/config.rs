//! The configuration contract (DESIGN.md): a TOML file, `SEGL_*` environment overrides, and
//! command-line flags, in rising precedence. Loading validates everything a request would
//! otherwise trip over later, and every error names the file, the key and what is wrong.

use segl_core::{Api, Client, Profile, Registry, Tenancy};
use segl_jose::{Alg, Jwk, Jwks};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration problem, already phrased for the operator: `file: key: what`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The configuration file, exactly as written (unknown keys are an error).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileConfig {
    pub issuer: Option<String>,
    pub listen: Option<String>,
    pub database: Option<String>,
    pub profile: Option<String>,
    pub key_encryption_key_file: Option<PathBuf>,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub dpop: DpopConfig,
    #[serde(default)]
    pub test_idp: TestIdpConfig,
    #[serde(default)]
    pub login: LoginConfig,
    #[serde(default)]
    pub token_exchange: ExchangeConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub person: Vec<PersonConfig>,
    #[serde(default)]
    pub api: Vec<ApiConfig>,
    #[serde(default)]
    pub client: Vec<ClientConfig>,
    #[serde(default)]
    pub delegation: Vec<DelegationConfig>,
    #[serde(default)]
    pub idp: Vec<IdpConfig>,
}

/// `[tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct TokensConfig {
    pub signing_alg: String,
    pub access_token_lifetime: i64,
    pub id_token_lifetime: i64,
    pub refresh_token_lifetime: i64,
    pub refresh_token_grace: i64,
    pub authorization_code_lifetime: i64,
    pub par_lifetime: i64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            signing_alg: "RS256".into(),
            access_token_lifetime: 600,
            id_token_lifetime: 300,
            refresh_token_lifetime: 28800,
            refresh_token_grace: 5,
            authorization_code_lifetime: 60,
            par_lifetime: 60,
        }
    }
}

/// `[keys]`: signing-key rotation (an extension of the contract).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Seconds between `segl keys rotate` publishing a key and that key signing.
    pub activation_delay: i64,
    /// Seconds a retired key stays published after its last token expired (JWKS caches).
    pub retired_grace: i64,
    /// Seconds between re-reads of the keys from the store (how fast a rotation made on any
    /// process is seen by all).
    pub refresh_interval: u64,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            activation_delay: 3600,
            retired_grace: 600,
            refresh_interval: 10,
        }
    }
}

/// `[dpop]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopConfig {
    /// `required` | `optional` | `off`.
    pub nonce: String,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            nonce: "required".into(),
        }
    }
}

/// `[test_idp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestIdpConfig {
    /// Whether the built-in test identity provider is on.
    #[serde(default)]
    pub enabled: bool,
    /// Allows the test IdP with an https issuer (a production-like configuration).
    #[serde(default)]
    pub allow_in_production: bool,
}

/// `[rate_limit]` (an extension of the contract): requests per second and burst, per source
/// address (token, PAR and login endpoints) and per authenticated client; 0 turns one off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct RateLimitConfig {
    pub address_rate: f64,
    pub address_burst: f64,
    pub client_rate: f64,
    pub client_burst: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            address_rate: 100.0,
            address_burst: 200.0,
            client_rate: 50.0,
            client_burst: 100.0,
        }
    }
}

/// `[audit]`: the durable audit log (an extension of the contract).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Seconds between signed checkpoints of the audit chain (each process writes one when the
    /// chain has grown since its last).
    pub checkpoint_interval: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_interval: 300,
        }
    }
}

/// `[token_exchange]` (an extension of the contract).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    /// How many exchanges a token may have behind it (`act` nesting).
    pub max_depth: usize,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        ExchangeConfig { max_depth: 3 }
    }
}

/// `[login]`: browser sessions (an extension of the contract).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Seconds a login session (single sign-on) lasts.
    pub session_lifetime: i64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            session_lifetime: 28800,
        }
    }
}

/// `[[person]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PersonConfig {
    pub pid: String,
    pub given_name: String,
    #[serde(default)]
    pub middle_name: Option<String>,
    pub family_name: String,
    #[serde(default)]
    pub hpr_number: Option<String>,
    /// The level the test IdP logs this person in at: `"4"` (default) or `"3"`.
    #[serde(default)]
    pub security_level: Option<String>,
}

/// `[[api]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ApiConfig {
    pub audience: String,
    pub scopes: Vec<String>,
}

/// `[[client]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ClientConfig {
    pub client_id: String,
    pub name: String,
    pub organization: String,
    #[serde(default)]
    pub child_organizations: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub require_dpop: Option<bool>,
    #[serde(default)]
    pub token_exchange_actors: Vec<String>,
    #[serde(default)]
    pub introspection: bool,
    #[serde(default)]
    pub introspection_audiences: Vec<String>,
    #[serde(default)]
    pub token_exchange: Option<TokenExchangeConfig>,
    #[serde(default)]
    pub tenancy: Option<String>,
    #[serde(default)]
    pub supplier: Option<String>,
}

/// `token_exchange = { ... }` inside a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// Audiences whose tokens this client may exchange.
    pub subject_audiences: Vec<String>,
}

/// `[[delegation]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationConfig {
    /// The customer organization.
    pub from: String,
    /// The supplier organization.
    pub to: String,
}

/// `[[idp]]`: an upstream OpenID provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct IdpConfig {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_auth: Option<String>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub acr_values: Vec<String>,
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub acr_map: std::collections::BTreeMap<String, AcrLevels>,
    /// Whether the upstream accepts HelseID's `on_behalf_of` (passed on when a client sends it).
    #[serde(default)]
    pub on_behalf_of: bool,
}

/// One `acr_map` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcrLevels {
    /// `"4"`, `"3"`, …
    pub security_level: String,
    /// `high`, `substantial`, …
    pub assurance_level: String,
}

/// Command-line flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--issuer`.
    pub issuer: Option<String>,
    /// `--database`.
    pub database: Option<String>,
}

/// Where the key-encryption key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSource {
    /// `SEGL_KEY_ENCRYPTION_KEY`.
    Env,
    /// A file (resolved path).
    File(PathBuf),
    /// Development mode: a file that is created when missing.
    DevFile(PathBuf),
}

/// The validated configuration the server runs with.
#[derive(Debug)]
pub struct Settings {
    /// Where the configuration came from (for messages).
    pub origin: String,
    /// Whether this is the development server (no `--config`).
    pub dev_mode: bool,
    /// The issuer, no trailing slash.
    pub issuer: String,
    /// The socket to listen on.
    pub listen: SocketAddr,
    /// The database URL (relative SQLite paths resolved).
    pub database: String,
    /// The profile.
    pub profile: Profile,
    /// The token-signing algorithm.
    pub signing_alg: Alg,
    /// `[tokens]`.
    pub tokens: TokensConfig,
    /// `[keys]`.
    pub keys: KeysConfig,
    /// The key-encryption key's source.
    pub kek: KekSource,
    /// Registered clients and APIs.
    pub registry: Registry,
    /// Whether the test IdP is on.
    pub test_idp: bool,
    /// `[dpop] nonce`: `required`, `optional` or `off`.
    pub dpop_nonce: String,
    /// The person register (`[[person]]`), by pid.
    pub persons: std::collections::HashMap<String, segl_core::identity::Person>,
    /// The test IdP's level for registered persons that set one (`[[person]] security_level`).
    pub person_levels: std::collections::HashMap<String, segl_core::federation::Level>,
    /// Upstream OpenID providers (`[[idp]]`), in configuration order.
    pub upstreams: Vec<UpstreamSettings>,
    /// Seconds a login session lasts.
    pub session_lifetime: i64,
    /// `[token_exchange] max_depth`.
    pub exchange_max_depth: usize,
    /// `[[delegation]]`: customer → supplier.
    pub delegations: Vec<(String, String)>,
    /// `[rate_limit]`.
    pub rate_limit: RateLimitConfig,
    /// `[audit]`.
    pub audit: AuditConfig,
}

/// How Segl authenticates at an upstream's token (and PAR) endpoint.
pub enum UpstreamAuth {
    /// `private_key_jwt` with this key (`key_file`).
    PrivateKeyJwt(Box<segl_jose::SigningKey>),
    /// `client_secret_basic` with the secret from `client_secret_env`.
    ClientSecretBasic(zeroize::Zeroizing<String>),
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAuth::PrivateKeyJwt(k) => write!(f, "private_key_jwt ({k:?})"),
            UpstreamAuth::ClientSecretBasic(_) => {
                f.write_str("client_secret_basic (secret hidden)")
            }
        }
    }
}

/// One validated `[[idp]]`.
#[derive(Debug)]
pub struct UpstreamSettings {
    /// What the decisions need (name, levels, claim names).
    pub policy: segl_core::federation::Upstream,
    /// The upstream's issuer (discovered at `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// Segl's client id at the upstream.
    pub client_id: String,
    /// Client authentication.
    pub auth: UpstreamAuth,
    /// Scopes asked for (always with `openid`).
    pub scopes: Vec<String>,
    /// The limit on every upstream call.
    pub timeout: std::time::Duration,
    /// Whether `on_behalf_of` is passed on.
    pub on_behalf_of: bool,
}

/// Env variables that map to scalar keys: `SEGL_ISSUER`, `SEGL_TOKENS_SIGNING_ALG`, …
const ENV_KEYS: [(&str, &str); 25] = [
    ("issuer", ""),
    ("listen", ""),
    ("database", ""),
    ("profile", ""),
    ("key_encryption_key_file", ""),
    ("signing_alg", "tokens"),
    ("access_token_lifetime", "tokens"),
    ("id_token_lifetime", "tokens"),
    ("refresh_token_lifetime", "tokens"),
    ("refresh_token_grace", "tokens"),
    ("authorization_code_lifetime", "tokens"),
    ("par_lifetime", "tokens"),
    ("activation_delay", "keys"),
    ("retired_grace", "keys"),
    ("refresh_interval", "keys"),
    ("nonce", "dpop"),
    ("enabled", "test_idp"),
    ("allow_in_production", "test_idp"),
    ("session_lifetime", "login"),
    ("max_depth", "token_exchange"),
    ("address_rate", "rate_limit"),
    ("address_burst", "rate_limit"),
    ("client_rate", "rate_limit"),
    ("client_burst", "rate_limit"),
    ("checkpoint_interval", "audit"),
];

/// The development defaults (DESIGN.md: no `--config`).
pub const DEV_ISSUER: &str = "http://127.0.0.1:8080";
/// The development listen address.
pub const DEV_LISTEN: &str = "127.0.0.1:8080";

/// Reads and validates the file at `path` (or the development defaults when `None`), applies
/// `env` (`SEGL_*` pairs) and then `flags`.
pub fn load(
    path: Option<&Path>,
    env: &[(String, String)],
    flags: &Overrides,
    extra_clients: Vec<ClientConfig>,
    extra_apis: Vec<ApiConfig>,
) -> Result<Settings, ConfigError> {
    let (origin, base_dir, mut table) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", p.display())))?;
            // Parse once as the typed struct for errors with line, column and key.
            toml::from_str::<FileConfig>(&text)
                .map_err(|e| ConfigError(format!("{}: {}", p.display(), e.to_string().trim())))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            (p.display().to_string(), dir, table)
        }
        None => (
            "development defaults".to_owned(),
            PathBuf::from("."),
            dev_table(),
        ),
    };
    apply_env(&mut table, env, &origin)?;
    let mut file: FileConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e| ConfigError(format!("{origin} (with SEGL_* environment): {e}")))?;
    if let Some(l) = &flags.listen {
        file.listen = Some(l.clone());
        if flags.issuer.is_none() && path.is_none() && !env.iter().any(|(k, _)| k == "SEGL_ISSUER")
        {
            file.issuer = Some(format!("http://{l}"));
        }
    }
    if let Some(i) = &flags.issuer {
        file.issuer = Some(i.clone());
    }
    if let Some(d) = &flags.database {
        file.database = Some(d.clone());
    }
    file.client.extend(extra_clients);
    file.api.extend(extra_apis);
    let has_env_kek = env.iter().any(|(k, _)| k == "SEGL_KEY_ENCRYPTION_KEY");
    validate(file, &origin, &base_dir, path.is_none(), has_env_kek)
}

fn dev_table() -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("issuer".into(), DEV_ISSUER.into());
    t.insert("listen".into(), DEV_LISTEN.into());
    t.insert("database".into(), "sqlite://segl.db".into());
    let mut idp = toml::Table::new();
    idp.insert("enabled".into(), true.into());
    t.insert("test_idp".into(), idp.into());
    t
}

fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
    origin: &str,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("SEGL_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((key, section)) = ENV_KEYS.iter().find(|(key, section)| {
            if section.is_empty() {
                rest == *key
            } else {
                rest == format!("{section}_{key}")
            }
        }) else {
            continue;
        };
        let parsed = if let Ok(i) = value.parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(b) = value.parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(value.clone())
        };
        let target = if section.is_empty() {
            &mut *table
        } else {
            match table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => return Err(ConfigError(format!("{origin}: {section} must be a table"))),
            }
        };
        target.insert(key.to_string(), parsed);
    }
    Ok(())
}

fn validate(
    file: FileConfig,
    origin: &str,
    base: &Path,
    dev_mode: bool,
    has_env_kek: bool,
) -> Result<Settings, ConfigError> {
    let err = |key: &str, what: String| ConfigError(format!("{origin}: {key}: {what}"));
    let issuer = file
        .issuer
        .clone()
        .ok_or_else(|| err("issuer", "is required".into()))?;
    check_issuer(&issuer).map_err(|w| err("issuer", w))?;
    let listen_text = file.listen.clone().unwrap_or_else(|| DEV_LISTEN.into());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        err(
            "listen",
            format!("{listen_text:?} is not an address like 127.0.0.1:8080"),
        )
    })?;
    let database = resolve_database(file.database.as_deref().unwrap_or("sqlite://segl.db"), base)
        .map_err(|w| err("database", w))?;
    let profile = match file.profile.as_deref().unwrap_or("helseid") {
        "helseid" => Profile::HelseId,
        "fapi2" => Profile::Fapi2,
        other => {
            return Err(err(
                "profile",
                format!("{other:?} is not \"helseid\" or \"fapi2\""),
            ));
        }
    };
    let signing_alg: Alg = file.tokens.signing_alg.parse().map_err(|_| {
        err(
            "tokens.signing_alg",
            format!(
                "{:?} is not RS256, PS256, ES256 or EdDSA",
                file.tokens.signing_alg
            ),
        )
    })?;
    if !matches!(
        signing_alg,
        Alg::RS256 | Alg::PS256 | Alg::ES256 | Alg::EdDSA
    ) {
        return Err(err(
            "tokens.signing_alg",
            format!("{signing_alg} is not RS256, PS256, ES256 or EdDSA"),
        ));
    }
    if profile == Profile::Fapi2 && signing_alg == Alg::RS256 {
        return Err(err(
            "tokens.signing_alg",
            "profile fapi2 signs with PS256, ES256 or EdDSA, not RS256".into(),
        ));
    }
    check_lifetimes(&file.tokens).map_err(|(k, w)| err(&format!("tokens.{k}"), w))?;
    if file.keys.activation_delay < 0 || file.keys.retired_grace < 0 {
        return Err(err("keys", "delays must not be negative".into()));
    }
    if !(1..=3600).contains(&file.keys.refresh_interval) {
        return Err(err(
            "keys.refresh_interval",
            "must be between 1 and 3600 seconds".into(),
        ));
    }
    if !matches!(file.dpop.nonce.as_str(), "required" | "optional" | "off") {
        return Err(err(
            "dpop.nonce",
            format!("{:?} is not required, optional or off", file.dpop.nonce),
        ));
    }
    let kek = match (&file.key_encryption_key_file, has_env_kek, dev_mode) {
        (_, true, _) => KekSource::Env,
        (Some(p), false, false) => KekSource::File(base.join(p)),
        (Some(p), false, true) => KekSource::DevFile(base.join(p)),
        (None, false, true) => KekSource::DevFile(base.join("segl.kek")),
        (None, false, false) => {
            return Err(err(
                "key_encryption_key_file",
                "no key-encryption key: set SEGL_KEY_ENCRYPTION_KEY or key_encryption_key_file to 32 random bytes in base64 (make one with: openssl rand -base64 32 > kek.b64)".into(),
            ));
        }
    };
    let apis = build_apis(&file.api).map_err(|(k, w)| err(&k, w))?;
    let mut clients = Vec::new();
    for (i, c) in file.client.iter().enumerate() {
        let key = format!("client[{i}] (client_id {:?})", c.client_id);
        clients.push(
            build_client(c, &apis, profile, base)
                .map_err(|(k, w)| err(&format!("{key}.{k}"), w))?,
        );
    }
    let registry = Registry::new(apis, clients).map_err(|w| err("client/api", w))?;
    check_organizations(&file).map_err(|(k, w)| err(&k, w))?;
    let persons = build_persons(&file.person).map_err(|(k, w)| err(&k, w))?;
    if file.test_idp.enabled && issuer.starts_with("https://") && !file.test_idp.allow_in_production
    {
        return Err(err(
            "test_idp.enabled",
            "the test identity provider logs anyone in without credentials and this looks like production (https issuer): turn it off, or set test_idp.allow_in_production = true for a test environment".into(),
        ));
    }
    let rl = &file.rate_limit;
    if [
        rl.address_rate,
        rl.address_burst,
        rl.client_rate,
        rl.client_burst,
    ]
    .iter()
    .any(|v| !v.is_finite() || *v < 0.0)
    {
        return Err(err(
            "rate_limit",
            "rates and bursts must be non-negative numbers (0 turns a limit off)".into(),
        ));
    }
    if !(1..=86_400).contains(&file.audit.checkpoint_interval) {
        return Err(err(
            "audit.checkpoint_interval",
            "must be between 1 and 86400 seconds".into(),
        ));
    }
    if !(1..=10).contains(&file.token_exchange.max_depth) {
        return Err(err(
            "token_exchange.max_depth",
            "must be between 1 and 10".into(),
        ));
    }
    if !(60..=7 * 86_400).contains(&file.login.session_lifetime) {
        return Err(err(
            "login.session_lifetime",
            "must be between 60 seconds and 7 days".into(),
        ));
    }
    let person_levels = file
        .person
        .iter()
        .filter_map(|p| Some((p.pid.clone(), p.security_level.as_deref()?)))
        .enumerate()
        .map(|(i, (pid, level))| match level {
            "4" => Ok((pid, segl_core::federation::Level::high())),
            "3" => Ok((pid, segl_core::federation::Level::substantial())),
            other => Err(err(
                &format!("person[{i}] (pid {pid:?}).security_level"),
                format!("{other:?} is not \"4\" or \"3\""),
            )),
        })
        .collect::<Result<_, _>>()?;
    let mut upstreams: Vec<UpstreamSettings> = Vec::new();
    for (i, idp) in file.idp.iter().enumerate() {
        let key = format!("idp[{i}] (name {:?})", idp.name);
        let u = build_upstream(idp, base).map_err(|(k, w)| err(&format!("{key}.{k}"), w))?;
        if upstreams.iter().any(|o| o.policy.name == u.policy.name) {
            return Err(err(&format!("{key}.name"), "is configured twice".into()));
        }
        upstreams.push(u);
    }
    Ok(Settings {
        origin: origin.to_owned(),
        dev_mode,
        issuer,
        listen,
        database,
        profile,
        signing_alg,
        tokens: file.tokens,
        keys: file.keys,
        kek,
        registry,
        test_idp: file.test_idp.enabled,
        dpop_nonce: file.dpop.nonce.clone(),
        persons,
        person_levels,
        upstreams,
        session_lifetime: file.login.session_lifetime,
        exchange_max_depth: file.token_exchange.max_depth,
        delegations: file
            .delegation
            .iter()
            .map(|d| (d.from.clone(), d.to.clone()))
            .collect(),
        rate_limit: file.rate_limit.clone(),
        audit: file.audit.clone(),
    })
}

/// Validates one `[[idp]]` (errors name the key within it).
fn build_upstream(idp: &IdpConfig, base: &Path) -> Result<UpstreamSettings, (String, String)> {
    use segl_core::federation::{ClaimNames, Level, TEST_IDP, Upstream, default_acr_map};
    let e = |k: &str, w: String| (k.to_owned(), w);
    if idp.name.is_empty()
        || idp.name.len() > 64
        || !idp
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(e(
            "name",
            "must be 1–64 letters, digits, '-', '_' or '.' (it appears in acr_values=idp:<name> and in URLs)".into(),
        ));
    }
    if idp.name == TEST_IDP {
        return Err(e(
            "name",
            format!("{TEST_IDP} is the built-in test IdP's name"),
        ));
    }
    // Upstream issuers may end with a slash (ID-porten's does); the rest is as for ours.
    check_issuer(idp.issuer.strip_suffix('/').unwrap_or(&idp.issuer))
        .map_err(|w| e("issuer", w))?;
    if idp.client_id.is_empty() {
        return Err(e("client_id", "must not be empty".into()));
    }
    let auth = match idp.client_auth.as_deref().unwrap_or("private_key_jwt") {
        "private_key_jwt" => {
            if idp.client_secret_env.is_some() {
                return Err(e(
                    "client_secret_env",
                    "is for client_auth = \"client_secret_basic\"; private_key_jwt uses key_file"
                        .into(),
                ));
            }
            let file = idp.key_file.as_ref().ok_or_else(|| {
                e("key_file", "private_key_jwt needs key_file: the private JWK Segl signs its client assertions with (segl keys generate makes one)".into())
            })?;
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|x| e("key_file", format!("{}: {x}", path.display())))?;
            let jwk: segl_jose::Jwk = serde_json::from_str(&text)
                .map_err(|x| e("key_file", format!("{}: not a JWK: {x}", path.display())))?;
            let key = segl_jose::SigningKey::from_private_jwk(&jwk, None).map_err(|x| {
                e(
                    "key_file",
                    format!("{}: not a usable private JWK: {x}", path.display()),
                )
            })?;
            UpstreamAuth::PrivateKeyJwt(Box::new(key))
        }
        "client_secret_basic" => {
            if idp.key_file.is_some() {
                return Err(e(
                    "key_file",
                    "is for client_auth = \"private_key_jwt\"".into(),
                ));
            }
            let var = idp.client_secret_env.as_deref().ok_or_else(|| {
                e("client_secret_env", "client_secret_basic needs client_secret_env: the name of the environment variable that holds the secret".into())
            })?;
            let secret = std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    e(
                        "client_secret_env",
                        format!("the environment variable {var} is not set"),
                    )
                })?;
            UpstreamAuth::ClientSecretBasic(zeroize::Zeroizing::new(secret))
        }
        other => {
            return Err(e(
                "client_auth",
                format!("{other:?} is not private_key_jwt or client_secret_basic"),
            ));
        }
    };
    let scopes = if idp.scopes.is_empty() {
        vec!["openid".to_owned()]
    } else {
        idp.scopes.clone()
    };
    if !scopes.iter().any(|s| s == "openid") {
        return Err(e("scopes", "must include openid".into()));
    }
    let timeout = idp.timeout.unwrap_or(10);
    if !(1..=120).contains(&timeout) {
        return Err(e("timeout", "must be between 1 and 120 seconds".into()));
    }
    let mut claims = ClaimNames::default();
    for (ours, theirs) in &idp.claims {
        if theirs.is_empty() || !claims.set(ours, theirs) {
            return Err(e(
                &format!("claims.{ours}"),
                format!(
                    "claims maps {} to non-empty upstream claim names",
                    ClaimNames::KEYS.join(", ")
                ),
            ));
        }
    }
    let acr_map = if idp.acr_map.is_empty() {
        default_acr_map()
    } else {
        let mut map = std::collections::BTreeMap::new();
        for (acr, l) in &idp.acr_map {
            if !matches!(l.security_level.as_str(), "1" | "2" | "3" | "4")
                || l.assurance_level.is_empty()
            {
                return Err(e(
                    &format!("acr_map.{acr:?}"),
                    "security_level is \"1\" to \"4\" and assurance_level is not empty".into(),
                ));
            }
            map.insert(
                acr.clone(),
                Level {
                    security_level: l.security_level.clone(),
                    assurance_level: l.assurance_level.clone(),
                },
            );
        }
        map
    };
    if let Some(unmapped) = idp.acr_values.iter().find(|a| !acr_map.contains_key(*a)) {
        return Err(e(
            "acr_values",
            format!("{unmapped:?} is asked for but acr_map does not say what level it is"),
        ));
    }
    Ok(UpstreamSettings {
        policy: Upstream {
            name: idp.name.clone(),
            display_name: idp.display_name.clone().unwrap_or_else(|| idp.name.clone()),
            acr_values: idp.acr_values.clone(),
            acr_map,
            claims,
        },
        issuer: idp.issuer.clone(),
        client_id: idp.client_id.clone(),
        auth,
        scopes,
        timeout: std::time::Duration::from_secs(timeout),
        on_behalf_of: idp.on_behalf_of,
    })
}

/// An absolute http(s) URL without query, fragment or trailing slash; `http` only on loopback.
fn check_issuer(issuer: &str) -> Result<(), String> {
    let (scheme, rest) = issuer
        .split_once("://")
        .ok_or_else(|| format!("{issuer:?} is not an absolute URL"))?;
    if issuer.ends_with('/') {
        return Err(format!(
            "{issuer:?} must not end with a slash (it is the exact iss of every token)"
        ));
    }
    if issuer.contains(['?', '#']) {
        return Err(format!("{issuer:?} must not have a query or fragment"));
    }
    let authority = rest.split('/').next().unwrap_or("");
    let host = if authority.starts_with('[') {
        authority
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or("").to_owned()
    };
    if host.is_empty() || authority.contains('@') {
        return Err(format!("{issuer:?} has no valid host"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        "http" => Err(format!(
            "{issuer:?} uses http outside loopback: use https (http is only for 127.0.0.1, [::1] or localhost)"
        )),
        _ => Err(format!("{issuer:?} must use https")),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn resolve_database(url: &str, base: &Path) -> Result<String, String> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err("sqlite URL names no file".into());
        }
        if path.starts_with(':') || Path::new(path).is_absolute() {
            return Ok(url.to_owned());
        }
        return Ok(format!("sqlite://{}", base.join(path).display()));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(url.to_owned());
    }
    Err(format!(
        "{:?} is neither sqlite://FILE nor postgres://…",
        segl_store::redact_url(url)
    ))
}

fn check_lifetimes(t: &TokensConfig) -> Result<(), (&'static str, String)> {
    for (name, value, max) in [
        ("access_token_lifetime", t.access_token_lifetime, 86_400),
        ("id_token_lifetime", t.id_token_lifetime, 86_400),
        (
            "refresh_token_lifetime",
            t.refresh_token_lifetime,
            31_536_000,
        ),
        (
            "authorization_code_lifetime",
            t.authorization_code_lifetime,
            600,
        ),
        ("par_lifetime", t.par_lifetime, 600),
    ] {
        if value <= 0 || value > max {
            return Err((name, format!("{value} must be between 1 and {max} seconds")));
        }
    }
    if t.refresh_token_grace < 0 || t.refresh_token_grace > 300 {
        return Err((
            "refresh_token_grace",
            "must be between 0 and 300 seconds".into(),
        ));
    }
    Ok(())
}

fn build_apis(apis: &[ApiConfig]) -> Result<Vec<Api>, (String, String)> {
    let mut out = Vec::new();
    for (i, a) in apis.iter().enumerate() {
        let key = format!("api[{i}] (audience {:?})", a.audience);
        if a.audience.is_empty() || a.audience.contains(char::is_whitespace) {
            return Err((
                format!("{key}.audience"),
                "must be a non-empty name without spaces".into(),
            ));
        }
        if a.scopes.is_empty() {
            return Err((
                format!("{key}.scopes"),
                "an API needs at least one scope".into(),
            ));
        }
        for s in &a.scopes {
            let ok = s
                .strip_prefix(a.audience.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|n| !n.is_empty() && !n.contains(char::is_whitespace));
            if !ok {
                return Err((
                    format!("{key}.scopes"),
                    format!("{s:?} must start with \"{}/\"", a.audience),
                ));
            }
        }
        out.push(Api {
            audience: a.audience.clone(),
            scopes: a.scopes.clone(),
        });
    }
    Ok(out)
}

const KNOWN_GRANTS: [&str; 4] = [
    segl_proto::grant::CLIENT_CREDENTIALS,
    segl_proto::grant::AUTHORIZATION_CODE,
    segl_proto::grant::REFRESH_TOKEN,
    segl_proto::grant::TOKEN_EXCHANGE,
];

fn build_client(
    c: &ClientConfig,
    apis: &[Api],
    profile: Profile,
    base: &Path,
) -> Result<Client, (String, String)> {
    let fail = |k: &str, w: String| (k.to_owned(), w);
    if c.client_id.is_empty() || c.client_id.len() > 200 || c.client_id.contains(char::is_control) {
        return Err(fail(
            "client_id",
            "must be 1 to 200 printable characters".into(),
        ));
    }
    check_orgnr(&c.organization).map_err(|w| fail("organization", w))?;
    for o in &c.child_organizations {
        check_orgnr(o).map_err(|w| fail("child_organizations", w))?;
    }
    for g in &c.grant_types {
        if !KNOWN_GRANTS.contains(&g.as_str()) {
            return Err(fail(
                "grant_types",
                format!("{g:?} is not one of {}", KNOWN_GRANTS.join(", ")),
            ));
        }
    }
    for s in &c.scopes {
        let under_api = apis.iter().any(|a| a.scopes.contains(s));
        if !under_api && !segl_proto::claims::IDENTITY_SCOPES.contains(&s.as_str()) {
            return Err(fail(
                "scopes",
                format!("{s:?} is not a scope of any [[api]] audience (nor an identity scope)"),
            ));
        }
    }
    let jwks = match (&c.jwks_file, &c.jwks) {
        (Some(_), Some(_)) => return Err(fail("jwks", "give jwks_file or jwks, not both".into())),
        (None, None) => {
            return Err(fail(
                "jwks_file",
                "a client needs its public keys: jwks_file or jwks".into(),
            ));
        }
        (Some(p), None) => {
            let path = base.join(p);
            let bytes = std::fs::read(&path)
                .map_err(|e| fail("jwks_file", format!("cannot read {}: {e}", path.display())))?;
            Jwks::from_json(&bytes)
                .map_err(|e| fail("jwks_file", format!("{}: {e}", path.display())))?
        }
        (None, Some(text)) => {
            Jwks::from_json(text.as_bytes()).map_err(|e| fail("jwks", e.to_string()))?
        }
    };
    let tenancy = match (c.tenancy.as_deref().unwrap_or("single"), &c.supplier) {
        ("single", _) => Tenancy::Single,
        ("multi", Some(s)) => {
            check_orgnr(s).map_err(|w| fail("supplier", w))?;
            Tenancy::Multi {
                supplier: s.clone(),
            }
        }
        ("multi", None) => {
            return Err(fail(
                "supplier",
                "a multi-tenant client needs supplier = \"<orgnr>\"".into(),
            ));
        }
        (other, _) => {
            return Err(fail(
                "tenancy",
                format!("{other:?} is not \"single\" or \"multi\""),
            ));
        }
    };
    for uri in c.redirect_uris.iter().chain(&c.post_logout_redirect_uris) {
        check_redirect_uri(uri).map_err(|w| fail("redirect_uris", w))?;
    }
    let keys: Vec<Jwk> = jwks.keys;
    Client::new(
        c.client_id.clone(),
        c.name.clone(),
        c.organization.clone(),
        c.child_organizations.clone(),
        c.grant_types.iter().cloned().collect::<BTreeSet<_>>(),
        c.scopes.iter().cloned().collect::<BTreeSet<_>>(),
        tenancy,
        c.require_dpop.unwrap_or(profile == Profile::HelseId),
        &keys,
        profile.accepted_algs(),
    )
    .map_err(|w| {
        fail(
            if c.jwks.is_some() {
                "jwks"
            } else {
                "jwks_file"
            },
            w,
        )
    })
    .map(|client| {
        client
            .with_redirects(c.redirect_uris.clone(), c.post_logout_redirect_uris.clone())
            .with_exchange(
                c.token_exchange
                    .as_ref()
                    .map(|t| t.subject_audiences.clone())
                    .unwrap_or_default(),
                c.token_exchange_actors.clone(),
            )
            .with_introspection(c.introspection, c.introspection_audiences.clone())
    })
}

fn build_persons(
    persons: &[PersonConfig],
) -> Result<std::collections::HashMap<String, segl_core::identity::Person>, (String, String)> {
    let mut out = std::collections::HashMap::new();
    for (i, p) in persons.iter().enumerate() {
        let key = format!("person[{i}] (pid {:?})", p.pid);
        if p.pid.len() != 11 || !p.pid.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                format!("{key}.pid"),
                "must be an eleven-digit national identity number".into(),
            ));
        }
        if p.hpr_number
            .as_deref()
            .is_some_and(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err((format!("{key}.hpr_number"), "must be digits".into()));
        }
        let person = segl_core::identity::Person {
            pid: p.pid.clone(),
            given_name: p.given_name.clone(),
            middle_name: p.middle_name.clone(),
            family_name: p.family_name.clone(),
            hpr_number: p.hpr_number.clone(),
        };
        if out.insert(p.pid.clone(), person).is_some() {
            return Err((format!("{key}.pid"), "is registered twice".into()));
        }
    }
    Ok(out)
}

/// Nine digits (the mod-11 check digit is not enforced: HelseID's test organizations fail it).
fn check_orgnr(orgnr: &str) -> Result<(), String> {
    if orgnr.len() == 9 && orgnr.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("{orgnr:?} is not a nine-digit organization number"))
    }
}

/// https, or http on loopback (RFC 9700 §2.6); no fragment.
fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.contains('#') {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    let probe = match uri.split_once("://") {
        Some((scheme, rest)) if scheme == "https" || scheme == "http" => {
            let base = format!("{scheme}://{}", rest.split(['/', '?']).next().unwrap_or(""));
            check_issuer(&base)
        }
        // Private-use URI schemes for native apps (RFC 8252 §7.1) contain a dot.
        Some((scheme, _)) if scheme.contains('.') => Ok(()),
        _ => Err(format!("{uri:?} is not an absolute URL")),
    };
    probe.map_err(|_| format!("{uri:?} must be https (http only on loopback)"))
}

fn check_organizations(file: &FileConfig) -> Result<(), (String, String)> {
    for (i, d) in file.delegation.iter().enumerate() {
        check_orgnr(&d.from).map_err(|w| (format!("delegation[{i}].from"), w))?;
        check_orgnr(&d.to).map_err(|w| (format!("delegation[{i}].to"), w))?;
    }
    let ids: BTreeSet<&str> = file.client.iter().map(|c| c.client_id.as_str()).collect();
    let audiences: BTreeSet<&str> = file.api.iter().map(|a| a.audience.as_str()).collect();
    for (i, c) in file.client.iter().enumerate() {
        let Some(te) = &c.token_exchange else {
            continue;
        };
        let key = format!(
            "client[{i}] (client_id {:?}).token_exchange.subject_audiences",
            c.client_id
        );
        if !c
            .grant_types
            .iter()
            .any(|g| g == segl_proto::grant::TOKEN_EXCHANGE)
        {
            return Err((
                key,
                format!(
                    "the client needs grant type {}",
                    segl_proto::grant::TOKEN_EXCHANGE
                ),
            ));
        }
        if let Some(unknown) = te
            .subject_audiences
            .iter()
            .find(|a| !audiences.contains(a.as_str()))
        {
            return Err((key, format!("{unknown:?} is not an [[api]] audience")));
        }
    }
    for (i, c) in file.client.iter().enumerate() {
        for actor in &c.token_exchange_actors {
            if !ids.contains(actor.as_str()) {
                return Err((
                    format!(
                        "client[{i}] (client_id {:?}).token_exchange_actors",
                        c.client_id
                    ),
                    format!("{actor:?} is not a registered client_id"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! `segl`: the Segl authorization server and its tools.
//!
//! `segl serve` runs the server (with no `--config`, a development server on SQLite with
//! generated keys); `segl migrate` applies database migrations; `segl keys` manages signing
//! keys and generates client keys; `segl token` gets and inspects tokens; `segl audit`
//! verifies and queries the audit log.

/// mimalloc instead of the system allocator: the token path allocates and frees many small
/// objects per request, which glibc's malloc makes a visible share of the CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use segl_core::audit::{Event, EventKind, Outcome};
use segl_jose::{Alg, SigningKey};
use segl_server::config::{self, Overrides, Settings};
use std::path::{Path, PathBuf};

mod audit;
mod login;

#[derive(Parser)]
#[command(
    name = "segl",
    version,
    about = "Segl: a HelseID-compatible OAuth 2.0 / OpenID Connect authorization server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone, Default)]
struct ConfigArgs {
    /// The configuration file (TOML). Without it: the development defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (overrides the file and SEGL_LISTEN).
    #[arg(long)]
    listen: Option<String>,
    /// Issuer URL (overrides the file and SEGL_ISSUER).
    #[arg(long)]
    issuer: Option<String>,
    /// Database URL: sqlite://FILE or postgres://… (overrides the file and SEGL_DATABASE).
    #[arg(long)]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Apply database migrations and exit.
    Migrate(ConfigArgs),
    /// Signing keys (server) and client key pairs.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Get and inspect tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Multi-tenancy: delegations from customer organizations to suppliers (beside the
    /// configuration's `[[delegation]]` entries); running servers see changes within
    /// `keys.refresh_interval`.
    #[command(subcommand)]
    Delegations(DelegationsCommand),
    /// Log a person in as a native app: PAR, the browser login, a loopback redirect, and the
    /// code exchange with PKCE and DPoP; prints the tokens.
    Login(LoginArgs),
    /// The audit log: verify its hash chain and checkpoints, or query its events.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole chain and the signed checkpoints; print `ok: N events, last seq S, head
    /// <hash>`, or name the first problem and exit non-zero.
    Verify(ConfigArgs),
    /// Print the events about a person, client, organization or time range (all events
    /// without filters), as a table or as JSON lines.
    Query(audit::QueryArgs),
}

#[derive(Subcommand)]
enum DelegationsCommand {
    /// List the delegations (configuration and store).
    List(ConfigArgs),
    /// Record that customer FROM delegates to supplier TO.
    Add {
        #[command(flatten)]
        config: ConfigArgs,
        /// The customer organization number.
        #[arg(long)]
        from: String,
        /// The supplier organization number.
        #[arg(long)]
        to: String,
    },
    /// Remove a delegation recorded in the store.
    Remove {
        #[command(flatten)]
        config: ConfigArgs,
        /// The customer organization number.
        #[arg(long)]
        from: String,
        /// The supplier organization number.
        #[arg(long)]
        to: String,
    },
}

#[derive(clap::Args)]
struct LoginArgs {
    /// The issuer URL.
    #[arg(long)]
    issuer: String,
    /// The client id (registered with a redirect URI http://127.0.0.1:<any port>/callback).
    #[arg(long)]
    client_id: String,
    /// The client's private key: a private JWK file or a PKCS#8 PEM file.
    #[arg(long)]
    key: PathBuf,
    /// Scopes, space-separated.
    #[arg(long, default_value = "openid profile")]
    scope: String,
    /// Extra acr_values, e.g. "Level4" or "idp:testidp-oidc".
    #[arg(long)]
    acr_values: Option<String>,
    /// Loopback port for the redirect (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Only print the URL; do not try to open a browser.
    #[arg(long)]
    no_open: bool,
    /// Seconds to wait for the login.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// List the server's signing keys and their states.
    List(ConfigArgs),
    /// Add a new signing key: published at once, signing after the activation delay.
    Rotate {
        #[command(flatten)]
        config: ConfigArgs,
        /// Seconds until the new key signs (default: keys.activation_delay).
        #[arg(long)]
        activate_in: Option<i64>,
    },
    /// Generate a client key pair: NAME.private.jwk.json and NAME.public.jwks.json.
    Generate {
        /// Algorithm of the key.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Output name (a path prefix).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Get a token with client_credentials and private_key_jwt; prints the token response.
    Get {
        /// The issuer URL.
        #[arg(long)]
        issuer: String,
        /// The client id.
        #[arg(long)]
        client_id: String,
        /// The client's private key: a private JWK file or a PKCS#8 PEM file.
        #[arg(long)]
        key: PathBuf,
        /// Signing algorithm, when the key file does not say.
        #[arg(long)]
        alg: Option<String>,
        /// Scopes, space-separated.
        #[arg(long)]
        scope: Option<String>,
        /// The API (RFC 8707 resource indicator).
        #[arg(long)]
        resource: Option<String>,
        /// Ask for a DPoP-bound token, proving possession of a fresh ES256 key (or of the
        /// private JWK in --dpop-key). The proof key's thumbprint is printed on stderr.
        #[arg(long)]
        dpop: bool,
        /// The DPoP key (private JWK); implies --dpop.
        #[arg(long)]
        dpop_key: Option<PathBuf>,
    },
    /// Decode a JWT and explain its claims; with --issuer, verify it against that issuer.
    Inspect {
        /// The token.
        jwt: String,
        /// Verify the signature and claims against this issuer's JWKS.
        #[arg(long)]
        issuer: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter =
        std::env::var("SEGL_LOG").unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    // SEGL_LOG_FORMAT=json: one JSON object per line, with the request span's fields.
    if std::env::var("SEGL_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().with_current_span(true).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("segl: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("segl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let settings = settings(&args, false)?;
            segl_server::app::open_store(&settings.database).await?;
            println!(
                "migrations applied to {}",
                segl_store::redact_url(&settings.database)
            );
            Ok(())
        }
        Command::Keys(KeysCommand::List(args)) => keys_list(args).await,
        Command::Keys(KeysCommand::Rotate {
            config,
            activate_in,
        }) => keys_rotate(config, activate_in).await,
        Command::Keys(KeysCommand::Generate { alg, out }) => keys_generate(&alg, &out),
        Command::Token(get @ TokenCommand::Get { .. }) => token_get(get).await,
        Command::Login(args) => login::run(args).await,
        Command::Delegations(command) => delegations(command).await,
        Command::Audit(AuditCommand::Verify(args)) => audit::verify(args).await,
        Command::Audit(AuditCommand::Query(args)) => audit::query(args).await,
        Command::Token(TokenCommand::Inspect { jwt, issuer }) => {
            inspect(&jwt, issuer.as_deref()).await
        }
    }
}

async fn token_get(command: TokenCommand) -> Result<()> {
    let TokenCommand::Get {
        issuer,
        client_id,
        key,
        alg,
        scope,
        resource,
        dpop,
        dpop_key,
    } = command
    else {
        bail!("not a token get command");
    };
    let alg = alg.map(|a| a.parse::<Alg>()).transpose().context("--alg")?;
    let key = segl_client::load_key(&key, alg)?;
    let dpop = match (dpop, dpop_key) {
        (_, Some(path)) => Some(segl_client::DpopKey::new(segl_client::load_key(
            &path, None,
        )?)),
        (true, None) => Some(segl_client::DpopKey::generate(Alg::ES256)?),
        (false, None) => None,
    };
    if let Some(d) = &dpop {
        eprintln!("DPoP key thumbprint (cnf.jkt): {}", d.jkt()?);
    }
    let issuer = segl_client::Issuer::discover(reqwest::Client::new(), &issuer).await?;
    let response = issuer
        .client_credentials(
            &client_id,
            &key,
            scope.as_deref(),
            resource.as_deref(),
            dpop.as_ref(),
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}

async fn delegations(command: DelegationsCommand) -> Result<()> {
    let orgnr = |s: &str| -> Result<()> {
        if s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(())
        } else {
            bail!("{s:?} is not a nine-digit organization number")
        }
    };
    match command {
        DelegationsCommand::List(args) => {
            let settings = settings(&args, false)?;
            let store = segl_server::app::open_store(&settings.database).await?;
            for (from, to) in &settings.delegations {
                println!("{from} -> {to}  (configuration)");
            }
            for (from, to) in store.delegations().await? {
                println!("{from} -> {to}  (store)");
            }
        }
        DelegationsCommand::Add { config, from, to } => {
            orgnr(&from)?;
            orgnr(&to)?;
            let settings = settings(&config, false)?;
            let store = segl_server::app::open_store(&settings.database).await?;
            store.add_delegation(&from, &to).await?;
            audit_delegation(store.as_ref(), EventKind::DelegationAdded, &from, &to).await?;
            println!("{from} now delegates to {to}");
        }
        DelegationsCommand::Remove { config, from, to } => {
            let settings = settings(&config, false)?;
            let store = segl_server::app::open_store(&settings.database).await?;
            if !store.remove_delegation(&from, &to).await? {
                bail!("no delegation {from} -> {to} in the store");
            }
            audit_delegation(store.as_ref(), EventKind::DelegationRemoved, &from, &to).await?;
            println!("removed {from} -> {to}");
        }
    }
    Ok(())
}

/// The audit event of a delegation change, written directly to the store: the customer as
/// `orgnr_parent`, the supplier as `orgnr_supplier`.
async fn audit_delegation(
    store: &dyn segl_store::Store,
    kind: EventKind,
    from: &str,
    to: &str,
) -> Result<()> {
    let now = segl_core::UnixTime(segl_client::unix_now());
    let event = Event::new(kind, Outcome::Success, now)
        .with_orgs(Some(from), None, Some(to))
        .with_detail("via=cli");
    segl_server::audit::append(store, &[event])
        .await
        .context("the change is made, but its audit event could not be written")?;
    Ok(())
}

fn env_pairs() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("SEGL_"))
        .collect()
}

/// Loads the settings; in development mode registers the development client (creating its key).
fn settings(args: &ConfigArgs, announce: bool) -> Result<Settings> {
    let flags = Overrides {
        listen: args.listen.clone(),
        issuer: args.issuer.clone(),
        database: args.database.clone(),
    };
    let (clients, apis) = if args.config.is_none() {
        let (client, api, created) =
            segl_server::dev::dev_registration(Path::new(".")).map_err(anyhow::Error::msg)?;
        if created && announce {
            println!(
                "created the development client key {}",
                segl_server::dev::dev_key_path(Path::new(".")).display()
            );
        }
        (vec![client], vec![api])
    } else {
        (vec![], vec![])
    };
    Ok(config::load(
        args.config.as_deref(),
        &env_pairs(),
        &flags,
        clients,
        apis,
    )?)
}

async fn serve(args: ConfigArgs) -> Result<()> {
    let settings = settings(&args, true)?;
    let dev = settings.dev_mode;
    let kek_env = std::env::var("SEGL_KEY_ENCRYPTION_KEY").ok();
    let (app, kek_created) = segl_server::App::build(settings, kek_env.as_deref()).await?;
    if let (true, config::KekSource::DevFile(p)) = (kek_created, &app.settings.kek) {
        println!(
            "generated a development key-encryption key in {} (keep it with the database)",
            p.display()
        );
    }
    let listener = segl_server::app::bind(&app).await?;
    let ring = app.keys.current();
    println!(
        "segl {} listening on {} — issuer {} — signing with {} (kid {}) — database {}",
        env!("CARGO_PKG_VERSION"),
        listener.local_addr()?,
        app.settings.issuer,
        ring.signing.alg(),
        ring.signing.kid(),
        segl_store::redact_url(&app.settings.database)
    );
    if dev {
        println!(
            "\nDevelopment server. Get a first token with:\n\n  cargo run --release -- token get --issuer {} --client-id {} --key {} --scope {}\n",
            app.settings.issuer,
            segl_server::dev::DEV_CLIENT_ID,
            segl_server::dev::dev_key_path(Path::new(".")).display(),
            segl_server::dev::DEV_SCOPE
        );
    }
    segl_server::serve(app, listener).await?;
    Ok(())
}

async fn keys_list(args: ConfigArgs) -> Result<()> {
    let settings = settings(&args, false)?;
    let store = segl_server::app::open_store(&settings.database).await?;
    let keys = store.signing_keys().await?;
    let retention = settings
        .tokens
        .access_token_lifetime
        .max(settings.tokens.id_token_lifetime)
        + settings.keys.retired_grace;
    let now = segl_client::unix_now();
    let states = segl_server::keys::classify(&keys, now, retention);
    println!(
        "{:<44} {:<6} {:<8} {:>12} {:>12}",
        "kid", "alg", "state", "activates", "created"
    );
    for (k, s) in keys.iter().zip(states) {
        println!(
            "{:<44} {:<6} {:<8} {:>12} {:>12}",
            k.kid,
            k.alg,
            s.name(),
            k.activate_at,
            k.created_at
        );
    }
    Ok(())
}

async fn keys_rotate(args: ConfigArgs, activate_in: Option<i64>) -> Result<()> {
    let settings = settings(&args, false)?;
    let delay = activate_in.unwrap_or(settings.keys.activation_delay);
    if delay < 0 {
        bail!("--activate-in must not be negative");
    }
    let store = segl_server::app::open_store(&settings.database).await?;
    let kek_env = std::env::var("SEGL_KEY_ENCRYPTION_KEY").ok();
    let (kek, _) = segl_server::keys::Kek::load(&settings.kek, kek_env.as_deref())?;
    let now = segl_client::unix_now();
    let (kid, activate_at) =
        segl_server::keys::rotate(store.as_ref(), &kek, settings.signing_alg, now, now + delay)
            .await?;
    println!(
        "added {} key {kid}: published now, signs in {} s (running servers pick it up within {} s)",
        settings.signing_alg,
        activate_at - now,
        settings.keys.refresh_interval
    );
    Ok(())
}

fn keys_generate(alg: &str, out: &Path) -> Result<()> {
    let alg: Alg = alg.parse().map_err(|_| anyhow::anyhow!("--alg {alg}: use ES256, PS256 or RS256 (or ES384, ES512, PS384, PS512, RS384, RS512, EdDSA)"))?;
    let key = SigningKey::generate(alg)?;
    let private_path = PathBuf::from(format!("{}.private.jwk.json", out.display()));
    let public_path = PathBuf::from(format!("{}.public.jwks.json", out.display()));
    let private = serde_json::to_vec_pretty(&key.to_private_jwk()?)?;
    segl_server::keys::write_private_file(&private_path, &private).with_context(|| {
        format!(
            "cannot write {} (it must not exist yet)",
            private_path.display()
        )
    })?;
    let public = serde_json::to_vec_pretty(&serde_json::json!({ "keys": [key.public_jwk()] }))?;
    std::fs::write(&public_path, public)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    println!(
        "private key: {} (keep it secret)\npublic JWKS: {} (register it as jwks_file)\nkid: {}",
        private_path.display(),
        public_path.display(),
        key.kid()
    );
    Ok(())
}

async fn inspect(jwt: &str, issuer: Option<&str>) -> Result<()> {
    let jws = segl_jose::UnverifiedJws::parse(jwt.trim()).context("not a JWT Segl can read")?;
    println!("header:");
    for (k, v) in jws.unverified_header() {
        println!("  {k:<10} {v}");
    }
    println!("claims:");
    for (k, v) in jws.unverified_claims() {
        let when = match (k.as_str(), v.as_i64()) {
            ("iat" | "nbf" | "exp" | "auth_time", Some(t)) => format!(" ({})", relative(t)),
            _ => String::new(),
        };
        match segl_proto::claims::describe(k) {
            Some(d) => println!("  {k} = {v}{when}\n      {d}"),
            None => println!("  {k} = {v}{when}"),
        }
    }
    let Some(issuer) = issuer else {
        println!("signature: not checked (give --issuer to verify)");
        return Ok(());
    };
    let client = segl_client::Issuer::discover(reqwest::Client::new(), issuer).await?;
    let jwks = client.jwks().await?;
    let expect = segl_verify::Expectations {
        issuer: &client.metadata().issuer,
        now: segl_client::unix_now(),
        skew: 10,
    };
    match segl_verify::verify_access_token(jwt.trim(), &jwks, &expect) {
        Ok(_) => {
            println!("verified: signature by {issuer}, issuer and lifetime OK");
            Ok(())
        }
        Err(e) => bail!("verification failed: {e}"),
    }
}

fn relative(t: i64) -> String {
    let d = t - segl_client::unix_now();
    if d >= 0 {
        format!("in {d} s")
    } else {
        format!("{} s ago", -d)
    }
}

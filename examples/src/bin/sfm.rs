//! `sfm`: the SFM demo service of `segl_examples::sfm`, on a loopback port. It accepts the
//! EHR's DPoP-bound token for `nhn:sfm`, exchanges it for a token to Reseptformidleren, calls
//! Reseptformidleren with it, and answers with what Reseptformidleren said.
//!
//! ```sh
//! sfm --issuer http://127.0.0.1:8080 --key sfm.private.jwk.json [--client-id sfm]
//!     [--listen 127.0.0.1:9200] [--public-url http://127.0.0.1:9200]
//!     [--reseptformidleren http://127.0.0.1:9100] [--binding dpop|either] [--dpop-nonce]
//! ```

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use segl_examples::sfm::{self, Settings, Sfm};
use segl_verify::{DpopNonce, TokenBinding};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// SFM (demo): verifies the EHR's token, exchanges it, and calls Reseptformidleren.
#[derive(Debug, Parser)]
#[command(name = "sfm", version)]
struct Args {
    /// The token issuer (Segl or HelseID), exactly as in its tokens' `iss`.
    #[arg(long, env = "SFM_ISSUER")]
    issuer: String,
    /// SFM's client id at the issuer (the token-exchange actor).
    #[arg(long, default_value = "sfm")]
    client_id: String,
    /// SFM's private client key: a private JWK (`segl keys generate`) or a PKCS#8 PEM file.
    #[arg(long)]
    key: PathBuf,
    /// The base URL of Reseptformidleren.
    #[arg(long, default_value = "http://127.0.0.1:9100")]
    reseptformidleren: String,
    /// The socket address to listen on.
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// The base URL the EHR calls SFM at (DPoP proofs' `htu` must match it).
    #[arg(long)]
    public_url: Option<String>,
    /// Which presentations of the EHR's token are accepted.
    #[arg(long, value_enum, default_value_t = Binding::Dpop)]
    binding: Binding,
    /// Require SFM's own DPoP nonces (RFC 9449 §9).
    #[arg(long)]
    dpop_nonce: bool,
    /// Allow listening on an address other than loopback.
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Binding {
    /// DPoP only (SFM API v2).
    Dpop,
    /// DPoP-bound tokens with a proof, or unbound tokens as Bearer.
    Either,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SFM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
        bail!(
            "{} is not a loopback address; this demo listens on loopback only unless --allow-non-loopback is given",
            args.listen
        );
    }
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let key = segl_client::load_key(&args.key, None)
        .with_context(|| format!("loading SFM's client key {}", args.key.display()))?;
    let settings = Settings {
        issuer: args.issuer.clone(),
        public_url: public_url.clone(),
        client_id: args.client_id.clone(),
        key,
        reseptformidleren_url: args.reseptformidleren.clone(),
        binding: match args.binding {
            Binding::Dpop => TokenBinding::DpopOnly,
            Binding::Either => TokenBinding::Either,
        },
        dpop_nonce: if args.dpop_nonce {
            DpopNonce::Required
        } else {
            DpopNonce::Off
        },
    };
    let service = Sfm::discover(settings)
        .await
        .with_context(|| format!("reading issuer {}", args.issuer))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        public_url,
        issuer = args.issuer,
        client_id = args.client_id,
        reseptformidleren = args.reseptformidleren,
        "SFM (demo) ready: POST {public_url}{}",
        sfm::PRESCRIPTIONS_PATH
    );
    axum::serve(listener, sfm::router(Arc::new(service)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}

//! `reseptformidleren`: the demo API of `segl_examples::reseptformidleren`, on a loopback port.
//!
//! ```sh
//! reseptformidleren --issuer http://127.0.0.1:8080 [--listen 127.0.0.1:9100]
//!     [--public-url http://127.0.0.1:9100] [--binding either|dpop|bearer] [--dpop-nonce]
//! ```

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use segl_examples::reseptformidleren;
use segl_verify::{DpopNonce, TokenBinding, Verifier};
use std::net::SocketAddr;
use std::sync::Arc;

/// The Reseptformidleren demo API: verifies Segl/HelseID access tokens and says who called.
#[derive(Debug, Parser)]
#[command(name = "reseptformidleren", version)]
struct Args {
    /// The token issuer (Segl or HelseID), exactly as in its tokens' `iss`.
    #[arg(long, env = "RF_ISSUER")]
    issuer: String,
    /// The socket address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// The base URL clients call this API at (DPoP proofs' `htu` must match it).
    #[arg(long)]
    public_url: Option<String>,
    /// Which presentations of the token are accepted.
    #[arg(long, value_enum, default_value_t = Binding::Either)]
    binding: Binding,
    /// Require this API's DPoP nonces (RFC 9449 §9).
    #[arg(long)]
    dpop_nonce: bool,
    /// Allow listening on an address other than loopback.
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Binding {
    /// DPoP-bound tokens with a proof, or unbound tokens as Bearer.
    Either,
    /// DPoP only.
    Dpop,
    /// Bearer only.
    Bearer,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RF_LOG")
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
    let binding = match args.binding {
        Binding::Either => TokenBinding::Either,
        Binding::Dpop => TokenBinding::DpopOnly,
        Binding::Bearer => TokenBinding::BearerOnly,
    };
    let nonce = if args.dpop_nonce {
        DpopNonce::Required
    } else {
        DpopNonce::Off
    };
    let config = reseptformidleren::config(&public_url, binding).with_dpop_nonce(nonce);
    let verifier = Verifier::discover(&args.issuer, config)
        .await
        .with_context(|| format!("reading issuer {}", args.issuer))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        public_url,
        issuer = args.issuer,
        ?binding,
        "Reseptformidleren (demo) ready: GET {public_url}{}",
        reseptformidleren::CALLER_PATH
    );
    axum::serve(listener, reseptformidleren::router(Arc::new(verifier)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")
}

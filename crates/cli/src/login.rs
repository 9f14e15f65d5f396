//! `segl login`: the authorization-code flow for a native app (RFC 8252): a loopback redirect
//! listener, PAR with PKCE and a DPoP key, the browser, and the code exchange bound to the same
//! DPoP key.

use crate::LoginArgs;
use anyhow::{Context as _, Result, bail};
use segl_client::{DpopKey, Issuer, Pkce, load_key};
use segl_jose::Alg;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

pub(crate) async fn run(args: LoginArgs) -> Result<()> {
    let key = load_key(&args.key, None)?;
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .context("cannot listen on the loopback interface")?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let issuer = Issuer::discover(reqwest::Client::new(), &args.issuer).await?;
    let dpop = DpopKey::generate(Alg::ES256)?;
    let pkce = Pkce::new()?;
    let state = segl_client::new_jti()?;
    let nonce = segl_client::new_jti()?;
    let mut params = vec![
        ("response_type", "code"),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", args.scope.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if let Some(acr) = &args.acr_values {
        params.push(("acr_values", acr));
    }
    let request_uri = issuer
        .pushed_authorization_request(&args.client_id, &key, &params, Some(&dpop))
        .await?;
    let url = issuer.authorization_url(&args.client_id, &request_uri)?;
    println!("Open this URL in a browser to log in:\n\n  {url}\n");
    if !args.no_open {
        // Best effort: a desktop opens the browser; a server just shows the URL.
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let query = tokio::time::timeout(Duration::from_secs(args.timeout), callback(&listener))
        .await
        .context("no login arrived in time")??;
    let get = |name: &str| -> Option<String> {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if get("state").as_deref() != Some(state.as_str()) {
        bail!("the redirect's state does not match this login");
    }
    // RFC 9207: the response must come from the issuer we asked.
    if get("iss").as_deref() != Some(issuer.metadata().issuer.as_str()) {
        bail!(
            "the redirect's iss does not name {}",
            issuer.metadata().issuer
        );
    }
    if let Some(error) = get("error") {
        bail!(
            "login failed: {error}: {}",
            get("error_description").unwrap_or_default()
        );
    }
    let code = get("code").context("the redirect carries no code")?;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let tokens = issuer
        .token_request(&args.client_id, &key, &exchange, Some(&dpop))
        .await?;
    println!("{}", serde_json::to_string_pretty(&tokens)?);
    Ok(())
}

/// Accepts connections until one is `GET /callback?…`; answers it and returns the query.
async fn callback(listener: &TcpListener) -> Result<String> {
    loop {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .unwrap_or(Ok(0))?;
        let head = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        let target = head
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("GET "))
            .and_then(|l| l.split(' ').next());
        let Some(query) = target.and_then(|t| t.strip_prefix("/callback?")) else {
            let _ = socket
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let page = "<!doctype html><meta charset=utf-8><title>Segl</title><p>Login complete. You can close this window.</p>";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncache-control: no-store\r\nreferrer-policy: no-referrer\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
        return Ok(query.to_owned());
    }
}

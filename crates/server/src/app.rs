//! The application: shared state, the route table (which the router *and* the discovery
//! document are built from), background maintenance, and serving with graceful shutdown.

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::keys::{Kek, KeyError, KeyManager};
use crate::{
    authorize, discovery, endsession, federation, health, introspect, par, revocation, test_idp,
    token, userinfo,
};
use axum::Router;
use axum::routing::{MethodRouter, get, post};
use segl_core::Policy;
use segl_proto::paths;
use segl_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Shared state of one server process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct App(Arc<Inner>);

/// What every handler can reach.
#[derive(Debug)]
pub struct Inner {
    /// The validated configuration (with the client registry).
    pub settings: Settings,
    /// The policy decisions are made under.
    pub policy: Policy,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The signing keys.
    pub keys: KeyManager,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The discovery document, serialized once.
    pub discovery_json: Vec<u8>,
    /// DPoP server nonces.
    pub nonces: crate::dpop::Nonces,
    /// The key of `pid_pseudonym` (shared by every process through the store).
    pub pseudonym_key: aws_lc_rs::hmac::Key,
    /// The key that derives a refresh token's successor (shared through the store).
    pub refresh_key: aws_lc_rs::hmac::Key,
    /// Rate limits.
    pub limits: crate::ratelimit::Limits,
    /// Upstream identity providers' discovered metadata.
    pub upstreams: federation::Upstreams,
    /// Delegations customer → supplier: the configuration's and the store's.
    pub delegations: std::sync::RwLock<std::collections::HashSet<(String, String)>>,
    /// The audit log's writer.
    pub audit: crate::audit::AuditLog,
}

impl Inner {
    /// Whether customer `from` has delegated to supplier `to`.
    pub fn is_delegated(&self, from: &str, to: &str) -> bool {
        let set = self.delegations.read().unwrap_or_else(|e| e.into_inner());
        set.contains(&(from.to_owned(), to.to_owned()))
    }

    /// The successor of a refresh token: derived, so a retry gets the same one.
    pub fn successor(&self, token: &str) -> String {
        segl_jose::b64_encode(aws_lc_rs::hmac::sign(&self.refresh_key, token.as_bytes()).as_ref())
    }

    /// Re-reads the store's delegations (merged with the configuration's).
    pub async fn refresh_delegations(&self) -> Result<(), segl_store::Error> {
        let mut set: std::collections::HashSet<(String, String)> =
            self.settings.delegations.iter().cloned().collect();
        set.extend(self.store.delegations().await?);
        *self.delegations.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(())
    }
}

impl std::ops::Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or migrated.
    #[error("database {url}: {source}")]
    Store {
        /// The (redacted) URL.
        url: String,
        /// The failure.
        source: segl_store::Error,
    },
    /// Keys could not be loaded or created.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The failure.
        source: std::io::Error,
    },
}

/// One row of the route table: the path, its handlers, and the discovery member that
/// advertises it (if any).
pub(crate) struct Route {
    pub metadata: Option<&'static str>,
    pub path: &'static str,
    pub handler: MethodRouter<App>,
}

/// The route table. The router serves exactly these routes, and discovery advertises exactly
/// the ones with a metadata name.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route {
            metadata: None,
            path: paths::DISCOVERY,
            handler: get(discovery::discovery),
        },
        Route {
            metadata: Some("jwks_uri"),
            path: paths::JWKS,
            handler: get(discovery::jwks),
        },
        Route {
            metadata: Some("token_endpoint"),
            path: paths::TOKEN,
            handler: post(token::token),
        },
        Route {
            metadata: Some("pushed_authorization_request_endpoint"),
            path: paths::PAR,
            handler: post(par::par),
        },
        Route {
            metadata: Some("authorization_endpoint"),
            path: paths::AUTHORIZE,
            handler: get(authorize::authorize),
        },
        Route {
            metadata: Some("userinfo_endpoint"),
            path: paths::USERINFO,
            handler: get(userinfo::userinfo).post(userinfo::userinfo),
        },
        Route {
            metadata: Some("end_session_endpoint"),
            path: paths::END_SESSION,
            handler: get(endsession::endsession),
        },
        Route {
            metadata: None,
            path: paths::METRICS,
            handler: get(crate::metrics::render),
        },
        Route {
            metadata: Some("revocation_endpoint"),
            path: paths::REVOCATION,
            handler: post(revocation::revocation),
        },
        Route {
            metadata: Some("introspection_endpoint"),
            path: paths::INTROSPECTION,
            handler: post(introspect::introspect),
        },
        Route {
            metadata: None,
            path: paths::TEST_IDP_LOGIN,
            handler: get(test_idp::form).post(test_idp::submit),
        },
        Route {
            metadata: Some("available_idps"),
            path: paths::AVAILABLE_IDPS,
            handler: get(federation::available),
        },
        Route {
            metadata: None,
            path: paths::IDP_CHOICE,
            handler: get(federation::choose),
        },
        Route {
            metadata: None,
            path: paths::FEDERATION_CALLBACK,
            handler: get(federation::callback),
        },
        Route {
            metadata: None,
            path: paths::HEALTH,
            handler: get(health::ready),
        },
        Route {
            metadata: None,
            path: paths::HEALTH_LIVE,
            handler: get(health::live),
        },
        Route {
            metadata: None,
            path: paths::HEALTH_READY,
            handler: get(health::ready),
        },
    ]
}

impl App {
    /// Opens the store, applies migrations, loads the key-encryption key and the signing keys.
    /// Returns the app and whether a development key-encryption key file was created.
    pub async fn build(
        settings: Settings,
        kek_env: Option<&str>,
    ) -> Result<(App, bool), StartError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        crate::metrics::handle();
        let store = open_store(&settings.database).await?;
        let (kek, kek_created) = Kek::load(&settings.kek, kek_env)?;
        let retention = settings
            .tokens
            .access_token_lifetime
            .max(settings.tokens.id_token_lifetime)
            + settings.keys.retired_grace;
        let keys = KeyManager::start(
            store.clone(),
            kek,
            settings.signing_alg,
            retention,
            clock.now().secs(),
        )
        .await?;
        let policy = Policy {
            issuer: settings.issuer.clone(),
            token_endpoint: format!("{}{}", settings.issuer, paths::TOKEN),
            profile: settings.profile,
            access_token_lifetime: settings.tokens.access_token_lifetime,
        };
        let discovery_json = discovery::document(&settings, &routes());
        let settings_rl = settings.rate_limit.clone();
        let nonces = crate::dpop::Nonces::new(
            &shared_secret(store.as_ref(), &settings, "dpop-nonce-hmac").await?,
            crate::dpop::NonceMode::parse(&settings.dpop_nonce),
        );
        let refresh_key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &shared_secret(store.as_ref(), &settings, "refresh-successor-hmac").await?,
        );
        let pseudonym_key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &shared_secret(store.as_ref(), &settings, "pid-pseudonym-hmac").await?,
        );
        let settings_upstreams = settings.upstreams.len();
        let audit = crate::audit::AuditLog::start(store.clone());
        let app = App(Arc::new(Inner {
            settings,
            policy,
            store,
            keys,
            clock,
            discovery_json,
            nonces,
            pseudonym_key,
            refresh_key,
            limits: crate::ratelimit::Limits {
                address: crate::ratelimit::Limiter::new(
                    settings_rl.address_rate,
                    settings_rl.address_burst,
                ),
                client: crate::ratelimit::Limiter::new(
                    settings_rl.client_rate,
                    settings_rl.client_burst,
                ),
            },
            upstreams: federation::Upstreams::new(settings_upstreams),
            delegations: Default::default(),
            audit,
        }));
        app.refresh_delegations()
            .await
            .map_err(|source| StartError::Store {
                url: segl_store::redact_url(&app.settings.database),
                source,
            })?;
        Ok((app, kek_created))
    }

    /// The axum router for this app. The token, PAR and login endpoints are rate-limited per
    /// source address.
    pub fn router(&self) -> Router {
        const LIMITED: [&str; 5] = [
            paths::TOKEN,
            paths::PAR,
            paths::TEST_IDP_LOGIN,
            paths::IDP_CHOICE,
            paths::FEDERATION_CALLBACK,
        ];
        routes()
            .into_iter()
            .fold(Router::new(), |r, route| {
                let handler = if LIMITED.contains(&route.path) {
                    route.handler.layer(axum::middleware::from_fn_with_state(
                        self.clone(),
                        limit_address,
                    ))
                } else {
                    route.handler
                };
                r.route(route.path, handler)
            })
            // Outermost last: every request gets an id (kept if the caller sent one), the span
            // names the method, path and id — never the query, which may carry one-time values.
            .layer(
                tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                }),
            )
            // Defence in depth: a panic in a handler is a bug, answered as server_error (and
            // logged) rather than a dropped connection.
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                axum::response::IntoResponse::into_response(crate::error::ApiError::Internal("handler panicked".into()))
            }))
            .layer(axum::middleware::from_fn(crate::metrics::track))
            .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
            .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(RandomRequestId))
            .with_state(self.clone())
    }

    /// Starts the background maintenance: key refresh (rotation made on any process is picked
    /// up within `keys.refresh_interval`) and purging of expired one-time records.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(app.settings.keys.refresh_interval);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let now = app.clock.now().secs();
                if let Err(e) = app.keys.refresh(now).await {
                    tracing::warn!(error = %e, "key refresh failed; keeping the current keys");
                }
                crate::metrics::upkeep();
                if let Err(e) = app.refresh_delegations().await {
                    tracing::warn!(error = %e, "delegation refresh failed; keeping the current ones");
                }
                n += 1;
                // Purge about once a minute whatever the refresh interval.
                if n.is_multiple_of((60 / app.settings.keys.refresh_interval).max(1)) {
                    match app.store.purge_expired(now).await {
                        Ok(purged) if purged > 0 => {
                            tracing::debug!(purged, "purged expired one-time records")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "purge failed"),
                    }
                }
            }
        })
    }
}

/// A 32-byte secret shared by every process through the store (HMAC keys).
async fn shared_secret(
    store: &dyn Store,
    settings: &Settings,
    name: &str,
) -> Result<Vec<u8>, StartError> {
    let mut candidate = [0u8; 32];
    segl_jose::random_bytes(&mut candidate).map_err(KeyError::from)?;
    store
        .secret_or_insert(name, &candidate)
        .await
        .map_err(|source| StartError::Store {
            url: segl_store::redact_url(&settings.database),
            source,
        })
}

/// Opens and migrates the store named by `url`.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StartError> {
    let wrap = |source| StartError::Store {
        url: segl_store::redact_url(url),
        source,
    };
    let store = segl_store::open(url).await.map_err(wrap)?;
    store.migrate().await.map_err(wrap)?;
    Ok(store)
}

/// Serves `app` on its configured address until SIGTERM or Ctrl-C; in-flight requests finish.
pub async fn serve(app: App, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let maintenance = app.spawn_maintenance();
    let checkpoints = crate::audit::spawn_checkpoints(&app);
    let service = app
        .router()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    maintenance.abort();
    checkpoints.abort();
    result
}

/// Request ids: 96 random bits, base64url.
#[derive(Debug, Clone, Copy)]
struct RandomRequestId;

impl tower_http::request_id::MakeRequestId for RandomRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let mut raw = [0u8; 12];
        segl_jose::random_bytes(&mut raw).ok()?;
        axum::http::HeaderValue::from_str(&segl_jose::b64_encode(raw))
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// The per-address rate limit (the TCP peer; see `ratelimit` for proxies).
async fn limit_address(
    axum::extract::State(app): axum::extract::State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    if let Some(peer) = peer
        && let Err(wait) = app.limits.address.check(&peer, std::time::Instant::now())
    {
        tracing::warn!(%peer, "rate limit per address reached");
        return crate::error::ApiError::RateLimited(wait).into_response();
    }
    next.run(request).await
}

/// Binds the configured listen address.
pub async fn bind(app: &App) -> Result<tokio::net::TcpListener, StartError> {
    let addr = app.settings.listen;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

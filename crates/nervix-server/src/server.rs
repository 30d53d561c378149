//! The composition root: opens storage, builds the application and its HTTP edge, starts the
//! background workers, and serves until shut down.
//!
//! [`start`] launches the whole server on a listener you bind (tests bind port 0), and
//! [`run_from_args`] is `nervix serve`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::header;
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use nervix_core::quality::CheckPipeline;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::artifact_store::ArtifactStore;
use crate::auth::keys::{self, Keys};
use crate::auth::VerifiedTokens;
use crate::bus::{EventBus, InProcessBus, RedisBus};
use crate::config::{Config, ServeArgs};
use crate::hub::Hub;
use crate::limits::Limits;
use crate::matching::Matcher;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::presence::Presence;
use crate::private_fs::create_private_dir;
use crate::spot_checks::SpotChecks;
use crate::state::AppState;
use crate::stats::PlatformStats;
use crate::supervisor::{every, supervise};
use crate::tls::{ReloadingCert, Tls};
use crate::{api, http, openapi, web, workers};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data folder {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] nervix_store::StoreError),
    #[error("signing keys: {0}")]
    Keys(#[from] crate::auth::keys::KeyError),
    #[error("event bus: {0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("artifact storage: {0}")]
    Artifacts(#[from] crate::artifact_store::ArtifactStoreError),
    #[error("route authorization: {0}")]
    Routes(String),
}

/// Opens storage for `config` (creating the data folder for the embedded default).
pub async fn open_store(
    config: &Config,
    max_connections: u32,
) -> Result<Arc<dyn nervix_store::Store>, ServerError> {
    ensure_data_dir(&config.data_dir)?;
    let opts = nervix_store::ConnectOptions {
        max_connections,
        sqlite_writer_cpu: config.sqlite_writer_cpu,
        ..Default::default()
    };
    Ok(nervix_store::connect(&config.database_url, &opts).await?)
}

/// Creates the data folder (and any missing parent) readable by this user only: it holds the
/// signing keys and the SQLite file. A folder that exists already keeps its mode.
pub fn ensure_data_dir(dir: &std::path::Path) -> Result<(), ServerError> {
    create_private_dir(dir).map_err(|source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    })
}

/// Correlates a request's log lines with the client's view of it; kept when the client sends
/// one, generated otherwise, and echoed on the response.
const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), std::io::Error>>,
    workers: Vec<JoinHandle<()>>,
    outbox_stop: CancellationToken,
    outbox: JoinHandle<()>,
    tls_cert: Option<Arc<ReloadingCert>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, stops the workers, writes the frames
    /// they queued, closes storage.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "server task failed"),
        }
        for w in self.workers {
            let _ = w.await;
        }
        self.outbox_stop.cancel();
        let _ = self.outbox.await;
        self.state.app.store.close().await;
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether this server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Reads the certificate files again now, without waiting for the periodic check.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        match &self.tls_cert {
            Some(cert) => cert.reload(),
            None => Ok(()),
        }
    }
}

/// Builds everything and serves on `listener` until the returned handle is shut down; with
/// `config.tls`, HTTPS and WSS on it.
pub async fn start(listener: TcpListener, config: Config) -> Result<Running, ServerError> {
    let shutdown = CancellationToken::new();
    let config = Arc::new(config);
    // Before anything is opened: a bad certificate is an operator's mistake to report at once.
    let tls = config.tls.as_ref().map(Tls::new).transpose()?;
    let store = open_store(&config, 16).await?;
    // First, before anything is written: a wrong master key stops the start here.
    let master = config.master_key.load()?;
    let ring = keys::open(store.as_ref(), &config.data_dir, master.as_ref()).await?;
    let worker_store = if store.backend() == "sqlite" {
        // One writer per SQLite file: a second store in this process would fight the first
        // for the write lock, and SQLite's busy handler sleeps up to 100 ms per retry. The
        // writer thread serves writes first come, first served, so workers cannot starve the
        // API there.
        store.clone()
    } else {
        // Workers get a pool of their own so a backlog of reaping never starves the API.
        open_store(&config, 2).await?
    };
    let artifacts = ArtifactStore::open(config.artifacts_url.as_deref(), &config.data_dir)?;
    tracing::debug!(location = artifacts.location(), "artifact storage");
    let bus: Arc<dyn EventBus> = match &config.redis_url {
        Some(url) => RedisBus::connect(url, shutdown.clone()).await?,
        None => Arc::new(InProcessBus::default()),
    };
    // Stopped after the HTTP server and the workers, so it writes what they queued.
    let outbox_stop = CancellationToken::new();
    let (outbox, outbox_task) = Outbox::start(store.clone(), bus.clone(), outbox_stop.clone());
    let matcher = Arc::new(Matcher::new(config.match_top_n));
    let indexed = matcher.warm(store.as_ref()).await?;
    tracing::debug!(agents = indexed, "matching index warmed");
    let stats = Arc::new(PlatformStats::load(store.as_ref()).await?);
    let app = App {
        stats,
        checks: Arc::new(CheckPipeline::standard(config.max_submission_bytes)),
        spot_checks: Arc::new(SpotChecks::new(
            config.spot_check_rate,
            config.spot_check_seed,
            config.review_timeout,
        )),
        config: config.clone(),
        presence: Arc::new(Presence::new(store.clone(), matcher.clone())),
        store,
        keys: Arc::new(Keys::new(ring, master)),
        verified: Arc::new(VerifiedTokens::default()),
        message_quota: Arc::new(crate::quota::MessageQuota::new(
            config.rate_limit_messages_per_minute,
        )),
        artifacts: Arc::new(artifacts),
        reputation_pass: Arc::default(),
        bus,
        outbox,
        metrics: Arc::new(Metrics::default()),
        matcher,
    };
    let limits = Arc::new(Limits::new(
        config.rate_limit_enroll_per_minute,
        config.rate_limit_agent_per_second,
    ));
    let hub = Hub::new(
        app.store.clone(),
        app.bus.clone(),
        app.metrics.clone(),
        config.ws.queue,
        config.ws.max_lag,
    );
    let mut workers = workers::spawn_all(
        &app.with_store(worker_store),
        hub.clone(),
        limits.clone(),
        &shutdown,
    );
    let state = AppState { app, limits, hub };
    let app = router(state.clone())?.into_make_service_with_connect_info::<SocketAddr>();
    let addr = listener.local_addr()?;
    let token = shutdown.clone();
    let graceful = async move { token.cancelled().await };
    let tls_cert = tls.as_ref().map(Tls::cert);
    let server = match (tls, &config.tls) {
        (Some(tls), Some(tls_config)) => {
            workers.push(reload_certificate(
                tls.cert(),
                tls_config.reload_interval,
                &shutdown,
            ));
            // `tap_io` only to reuse axum's `ConnectInfo<SocketAddr>` for any listener whose
            // address is one; the tap itself does nothing.
            let listener = axum::serve::ListenerExt::tap_io(tls.listen(listener)?, |_| {});
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(graceful)
                    .await
            })
        }
        _ => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
        }),
    };
    Ok(Running {
        addr,
        state,
        shutdown,
        server,
        workers,
        outbox_stop,
        outbox: outbox_task,
        tls_cert,
    })
}

/// Picks up a renewed certificate: new handshakes get it, open connections keep theirs.
fn reload_certificate(
    cert: Arc<ReloadingCert>,
    interval: std::time::Duration,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    supervise("tls_reload", shutdown.clone(), move |sd| {
        let cert = cert.clone();
        async move {
            every(interval, sd, || async {
                match cert.reload_if_changed() {
                    Ok(true) => tracing::info!("TLS certificate changed on disk; reloaded"),
                    Ok(false) => {}
                    // Mid-renewal the key may not match the certificate yet: keep serving the
                    // old pair and look again next time.
                    Err(e) => tracing::warn!(error = %e, "cannot reload the TLS certificate"),
                }
                Ok::<_, std::convert::Infallible>(())
            })
            .await
        }
    })
}

/// The full HTTP application with its middleware stack.
pub fn router(state: AppState) -> Result<Router, ServerError> {
    let (router, mut openapi) = api::router().split_for_parts();
    let (streamed, streamed_doc) = api::streamed_router().split_for_parts();
    openapi.merge(streamed_doc);
    let contract = openapi::Contract::new(&state.app.config, api::IP_LIMITED);
    let openapi = openapi::served(openapi, &contract);
    let openapi = Arc::new(serde_json::to_value(&openapi).unwrap_or_default());
    let authorization = http::authorize::Authorization {
        state: state.clone(),
        // The document is built from the code's annotations: an error here is a typo there,
        // which every test that starts a server reports.
        routes: Arc::new(
            http::authorize::RouteScopes::from_openapi(&openapi).map_err(ServerError::Routes)?,
        ),
    };
    let config = state.app.config.clone();
    let pages = web::routes(openapi.clone());
    // File transfers stream for as long as the file takes, within their own size limit
    // (`NERVIX_MAX_ARTIFACT_BYTES`, enforced as the bytes arrive): the body limit and the
    // request timeout are for everything else.
    let bounded = router
        .route(
            "/v1/openapi.json",
            get(move || async move { Json((*openapi).clone()) }),
        )
        .merge(pages)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ));
    let streamed = streamed.layer(DefaultBodyLimit::disable());
    Ok(bounded
        .merge(streamed)
        .fallback(http::not_found)
        .layer(from_fn_with_state(
            authorization,
            http::authorize::authorize,
        ))
        .layer(from_fn_with_state(state.clone(), ip_limit))
        .layer(from_fn_with_state(state.clone(), http::track_metrics))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(from_fn(http::problemize))
        .with_state(state))
}

async fn ip_limit(
    state: axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> axum::response::Response {
    let limited = req.extensions().get::<MatchedPath>().is_some_and(|p| {
        api::IP_LIMITED.contains(&p.as_str()) || web::IP_LIMITED.contains(&p.as_str())
    });
    if limited {
        http::limit_by_ip(state, req, next).await
    } else {
        next.run(req).await.into_response()
    }
}

/// `nervix serve`: runs until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn run_from_args(args: ServeArgs) -> Result<(), ServerError> {
    let config = Config::from(&args);
    let listener = TcpListener::bind(args.bind).await?;
    let running = start(listener, config.clone()).await?;
    let addr = running.addr;
    let scheme = if running.is_tls() { "https" } else { "http" };
    tracing::info!(%addr, backend = running.state.app.store.backend(), scheme, "nervix is up");
    println!(
        "Nervix is running ({} storage).",
        running.state.app.store.backend()
    );
    println!("  API:       {scheme}://{addr}/v1  (OpenAPI: {scheme}://{addr}/v1/openapi.json)");
    println!("  Dashboard: {scheme}://{addr}/");
    println!("  Data:      {}", config.data_dir.display());
    if let Some(tls) = &config.tls {
        let min = match tls.min_version {
            crate::config::TlsVersion::Tls13 => "1.3",
            crate::config::TlsVersion::Tls12 => "1.2",
        };
        println!("  TLS:       {} (TLS {min} and up)", tls.cert.display());
    }
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = reload_on_sighup(&running) => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// SIGHUP reads the certificate again at once (what `systemctl reload` and renewal hooks send).
/// Returns only if the signal cannot be listened for.
async fn reload_on_sighup(running: &Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                return std::future::pending().await;
            }
        };
        while hup.recv().await.is_some() {
            match running.reload_tls() {
                Ok(()) if running.is_tls() => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "SIGHUP: cannot reload the TLS certificate"),
            }
        }
    }
    std::future::pending().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

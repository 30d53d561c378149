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
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;
use crate::auth::keys::KeyRing;
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
}

/// Builds everything and serves on `listener` until the returned handle is shut down.
pub async fn start(listener: TcpListener, config: Config) -> Result<Running, ServerError> {
    let shutdown = CancellationToken::new();
    let config = Arc::new(config);
    let store = open_store(&config, 16).await?;
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
    let keys = KeyRing::load_or_create(&config.data_dir)?;
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
        keys: Arc::new(RwLock::new(Arc::new(keys))),
        verified: Arc::new(VerifiedTokens::default()),
        message_quota: Arc::new(crate::quota::MessageQuota::new(
            config.rate_limit_messages_per_minute,
        )),
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
    let workers = workers::spawn_all(
        &app.with_store(worker_store),
        hub.clone(),
        limits.clone(),
        &shutdown,
    );
    let state = AppState { app, limits, hub };
    let app = router(state.clone());
    let addr = listener.local_addr()?;
    let token = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
    });
    Ok(Running {
        addr,
        state,
        shutdown,
        server,
        workers,
        outbox_stop,
        outbox: outbox_task,
    })
}

/// The full HTTP application with its middleware stack.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = api::router().split_for_parts();
    let contract = openapi::Contract::new(&state.app.config, api::IP_LIMITED);
    let openapi = openapi::served(openapi, &contract);
    let openapi = Arc::new(serde_json::to_value(&openapi).unwrap_or_default());
    let config = state.app.config.clone();
    let pages = web::routes(openapi.clone());
    router
        .route(
            "/v1/openapi.json",
            get(move || async move { Json((*openapi).clone()) }),
        )
        .merge(pages)
        .fallback(http::not_found)
        .layer(from_fn_with_state(state.clone(), ip_limit))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        .layer(from_fn_with_state(state.clone(), http::track_metrics))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
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
        .with_state(state)
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
    tracing::info!(%addr, backend = running.state.app.store.backend(), "nervix is up");
    println!(
        "Nervix is running ({} storage).",
        running.state.app.store.backend()
    );
    println!("  API:       http://{addr}/v1  (OpenAPI: http://{addr}/v1/openapi.json)");
    println!("  Dashboard: http://{addr}/");
    println!("  Data:      {}", config.data_dir.display());
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
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

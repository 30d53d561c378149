//! `tracing` output: human-readable by default, JSON lines with `--log-json`.
//! The level comes from `RUST_LOG` (default `info`). Errors are also kept for the admin's
//! system page (`nervix_server::recent_errors`).

use nervix_server::recent_errors::RecentErrors;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let output = if json {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(RecentErrors::layer())
        .try_init();
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

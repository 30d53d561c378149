//! Operator configuration: `nervix serve` flags, each with its `NERVIX_*` environment variable.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::keys::MasterKeySource;

/// Flags of `nervix serve`. Every flag can also be set through the environment variable named
/// in its help text; flags win over the environment. A variable that is set but empty means
/// unset once the command has passed through [`empty_env_means_unset`].
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Listen address.
    #[arg(long, env = "NERVIX_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Data folder: the SQLite file (older versions kept token-signing key files here,
    /// imported into the database on first start).
    #[arg(long, env = "NERVIX_DATA_DIR", default_value = "./nervix-data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default: a SQLite file in the data folder.
    #[arg(long, env = "NERVIX_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL for the event bus across nodes; unset: single node, in-process bus.
    #[arg(long, env = "NERVIX_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Enrollment/auth requests per minute per client IP; 0 turns the limit off.
    #[arg(long, env = "NERVIX_RATE_LIMIT_ENROLL", default_value_t = 30)]
    pub rate_limit_enroll: u32,
    /// Requests per second per authenticated agent; 0 turns the limit off.
    #[arg(long, env = "NERVIX_RATE_LIMIT_AGENT", default_value_t = 100)]
    pub rate_limit_agent: u32,
    /// Messages per minute per agent (REST and WebSocket sends together); 0 turns the limit off.
    #[arg(long, env = "NERVIX_RATE_LIMIT_MESSAGES", default_value_t = 600)]
    pub rate_limit_messages: u32,
    /// Share of accepted submissions held for a human spot check (0.0–1.0).
    #[arg(long, env = "NERVIX_SPOT_CHECK_RATE", default_value_t = 0.05)]
    pub spot_check_rate: f64,
    /// Seed of the spot-check sample, for a reproducible run; unset: random.
    #[arg(long, env = "NERVIX_SPOT_CHECK_SEED")]
    pub spot_check_seed: Option<u64>,
    /// Hours a held submission waits for a reviewer before it is accepted on its automated
    /// score.
    #[arg(long, env = "NERVIX_REVIEW_TIMEOUT_HOURS", default_value_t = 72)]
    pub review_timeout_hours: u32,
    /// Minimum quality score (0–100) to accept a submission.
    #[arg(long, env = "NERVIX_ACCEPT_THRESHOLD", default_value_t = 60)]
    pub accept_threshold: u8,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "NERVIX_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Per-request timeout, in seconds.
    #[arg(long, env = "NERVIX_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout: u64,
    /// Largest task reward, in currency units.
    #[arg(long, env = "NERVIX_MAX_REWARD", default_value = "100000.00")]
    pub max_reward: nervix_core::Money,
    /// Agents notified per matching round.
    #[arg(long, env = "NERVIX_MATCH_TOP_N", default_value_t = 5)]
    pub match_top_n: usize,
    /// Seconds without a claim before matching widens to the next agents.
    #[arg(long, env = "NERVIX_MATCH_WINDOW", default_value_t = 30)]
    pub match_window: u64,
    /// CPU set aside for the SQLite writer, which the rest of the server then keeps off:
    /// `auto` (the last one this process may use, when it may use two or more), `off` (leave
    /// every thread to the OS), or a CPU index. Ignored with PostgreSQL.
    #[arg(long, env = "NERVIX_SQLITE_WRITER_CPU", default_value = "auto")]
    pub sqlite_writer_cpu: nervix_store::WriterCpu,
    /// Days stored agent events (what `since` can replay) and read notifications are kept.
    #[arg(long, env = "NERVIX_EVENT_RETENTION_DAYS", default_value_t = 7)]
    pub event_retention_days: u32,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "NERVIX_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
    #[command(flatten)]
    pub master_key: MasterKeyArgs,
    /// Serve HTTPS and WSS with this certificate chain (PEM); needs --tls-key. Renewed files
    /// are picked up without a restart (checked every --tls-reload-secs, and on SIGHUP).
    #[arg(
        long,
        env = "NERVIX_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "NERVIX_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Oldest TLS version accepted: 1.3 (default) or 1.2 for clients that cannot do 1.3.
    #[arg(long, env = "NERVIX_TLS_MIN_VERSION", default_value = "1.3")]
    pub tls_min_version: TlsVersion,
    /// Seconds between checks of the certificate files for a renewal.
    #[arg(long, env = "NERVIX_TLS_RELOAD_SECS", default_value_t = 60)]
    pub tls_reload_secs: u64,
    /// Where artifacts (files attached to submissions) are stored: `s3://bucket/prefix` (with
    /// the usual `AWS_*` variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT` for an S3-compatible service, ...) or `file:///path`;
    /// default: the `artifacts` folder in the data folder.
    #[arg(long, env = "NERVIX_ARTIFACTS_URL")]
    pub artifacts_url: Option<String>,
    /// Largest artifact upload, in bytes.
    #[arg(long, env = "NERVIX_MAX_ARTIFACT_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_artifact_bytes: u64,
}

/// The oldest TLS version the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    Tls13,
}

/// HTTPS: where the certificate is and what the server accepts.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub min_version: TlsVersion,
    /// How often the files are checked for a renewal.
    pub reload_interval: Duration,
}

/// The operator's master key, which seals the token-signing keys at rest (AES-256-GCM); the
/// same flags for `serve` and the `admin` commands. Every node of a cluster needs the same.
#[derive(Clone, Default, clap::Args)]
pub struct MasterKeyArgs {
    /// Master key sealing the token-signing keys at rest: 32 bytes in base64 (`openssl rand
    /// -base64 32`); every node needs the same. Prefer the variable or --master-key-file: a
    /// flag's value is visible to other users in `ps`. Unset (and no file): the keys are
    /// stored unencrypted, and the server says so at start.
    #[arg(
        long,
        env = "NERVIX_MASTER_KEY",
        hide_env_values = true,
        conflicts_with = "master_key_file"
    )]
    pub master_key: Option<String>,
    /// File holding the master key (base64, mode 0600), instead of NERVIX_MASTER_KEY.
    #[arg(long, env = "NERVIX_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for MasterKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeyArgs")
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("master_key_file", &self.master_key_file)
            .finish()
    }
}

impl MasterKeyArgs {
    pub fn source(&self) -> MasterKeySource {
        match (&self.master_key, &self.master_key_file) {
            (Some(k), _) if !k.is_empty() => MasterKeySource::Value(k.clone().into()),
            (_, Some(f)) if !f.as_os_str().is_empty() => MasterKeySource::File(f.clone()),
            _ => MasterKeySource::None,
        }
    }
}

/// Unbinds every argument of `cmd`, and of its subcommands, whose environment variable is set
/// but empty, so that `NERVIX_DATABASE_URL=` (as docker-compose and `.env` files write it) means
/// the same as an unset variable: the flag's default. Clap reads the variables when the command
/// is built and would otherwise parse the empty value (an empty URL, an invalid number).
/// `var` reads a variable; `nervix` passes `std::env::var_os`.
pub fn empty_env_means_unset(
    cmd: clap::Command,
    var: &dyn Fn(&OsStr) -> Option<OsString>,
) -> clap::Command {
    cmd.mut_args(|arg| {
        let empty = arg.get_env().and_then(var).is_some_and(|v| v.is_empty());
        if empty {
            arg.env(None)
        } else {
            arg
        }
    })
    .mut_subcommands(|sub| empty_env_means_unset(sub, var))
}

/// The lifetime of an enrollment or login token, and the longest a minted one may have.
pub const TOKEN_TTL_SECS: i64 = 90 * 86_400;

/// Resolved configuration the app runs with. Built from [`ServeArgs`] or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub rate_limit_enroll_per_minute: u32,
    pub rate_limit_agent_per_second: u32,
    /// Messages an agent may send per minute; 0: no limit.
    pub rate_limit_messages_per_minute: u32,
    pub spot_check_rate: f64,
    /// Seed of the spot-check sample; `None`: from the OS's randomness.
    pub spot_check_seed: Option<u64>,
    /// How long a held submission waits for a reviewer.
    pub review_timeout: chrono::Duration,
    pub accept_threshold: u8,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub max_reward_cents: i64,
    pub match_top_n: usize,
    pub match_window: Duration,
    pub token_ttl: chrono::Duration,
    pub challenge_ttl: chrono::Duration,
    pub max_submission_bytes: usize,
    pub retry: nervix_store::RetryPolicy,
    pub sqlite_writer_cpu: nervix_store::WriterCpu,
    /// How often background loops tick.
    pub worker_interval: Duration,
    /// How often the public counters (`GET /v1/stats`, `/`) are counted again.
    pub stats_interval: Duration,
    /// How long stored agent events and read notifications are kept.
    pub event_retention: chrono::Duration,
    /// Agent connections (`GET /v1/agent/connect`).
    pub ws: WsConfig,
    /// Seals the token-signing keys at rest.
    pub master_key: MasterKeySource,
    /// How often this node reads the shared signing keys again (a rotation on another node
    /// reaches this one within it).
    pub key_refresh: Duration,
    /// HTTPS and WSS; `None`: plain HTTP (behind a TLS-terminating proxy, or local).
    pub tls: Option<TlsConfig>,
    /// Object storage for artifacts; `None`: the `artifacts` folder in the data folder.
    pub artifacts_url: Option<String>,
    pub max_artifact_bytes: u64,
    /// How long an upload may wait for a submission to reference it before it is deleted.
    pub artifact_orphan_after: chrono::Duration,
}

/// Timings and bounds of agent WebSocket connections.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How long a connection without an `Authorization` header has to send its `auth` frame.
    pub auth_timeout: Duration,
    /// How often the server pings (and keeps the agent's presence fresh).
    pub ping_interval: Duration,
    /// Silence from the client (no frame, not even a pong) after which it is closed.
    pub idle_timeout: Duration,
    /// How often a connection's token is checked again (revoked, expired, agent suspended);
    /// a revocation or suspension on any node is also acted on at once through the bus.
    pub auth_recheck: Duration,
    /// Frames queued for a connection in memory; frames beyond it are read back from the
    /// store.
    pub queue: usize,
    /// Frames a connection may fall behind its agent's stream before it is closed as a slow
    /// consumer (it resumes with `since`).
    pub max_lag: usize,
    /// How long one write to a client may wait for the client to read before the connection
    /// is closed as a slow consumer.
    pub write_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            auth_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(75),
            auth_recheck: Duration::from_secs(30),
            queue: 256,
            max_lag: 4096,
            write_timeout: Duration::from_secs(15),
        }
    }
}

impl Config {
    /// Defaults for a data folder, as `nervix serve` would use them.
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        let database_url = default_database_url(&data_dir);
        Config {
            data_dir,
            database_url,
            redis_url: None,
            rate_limit_enroll_per_minute: 30,
            rate_limit_agent_per_second: 100,
            rate_limit_messages_per_minute: 600,
            spot_check_rate: 0.05,
            spot_check_seed: None,
            review_timeout: chrono::Duration::hours(72),
            accept_threshold: 60,
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_reward_cents: 10_000_000,
            match_top_n: 5,
            match_window: Duration::from_secs(30),
            token_ttl: chrono::Duration::seconds(TOKEN_TTL_SECS),
            challenge_ttl: chrono::Duration::minutes(5),
            max_submission_bytes: 256 * 1024,
            retry: nervix_store::RetryPolicy::default(),
            // Pinning threads is for the one server process that owns the machine (`nervix
            // serve`, whose flag defaults to `auto`); an embedder or a test keeps the OS's say.
            sqlite_writer_cpu: nervix_store::WriterCpu::Off,
            worker_interval: Duration::from_secs(1),
            stats_interval: Duration::from_secs(5),
            event_retention: chrono::Duration::days(7),
            ws: WsConfig::default(),
            master_key: MasterKeySource::None,
            key_refresh: Duration::from_secs(2),
            tls: None,
            artifacts_url: None,
            max_artifact_bytes: 100 * 1024 * 1024,
            artifact_orphan_after: chrono::Duration::days(1),
        }
    }
}

pub fn default_database_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("nervix.db").display())
}

impl From<&ServeArgs> for Config {
    fn from(a: &ServeArgs) -> Self {
        let mut c = Config::for_data_dir(a.data_dir.clone());
        if let Some(url) = a.database_url.as_ref().filter(|u| !u.is_empty()) {
            c.database_url = url.clone();
        }
        c.redis_url = a.redis_url.clone().filter(|u| !u.is_empty());
        c.rate_limit_enroll_per_minute = a.rate_limit_enroll;
        c.rate_limit_agent_per_second = a.rate_limit_agent;
        c.rate_limit_messages_per_minute = a.rate_limit_messages;
        c.spot_check_rate = a.spot_check_rate.clamp(0.0, 1.0);
        c.spot_check_seed = a.spot_check_seed;
        c.review_timeout = chrono::Duration::hours(i64::from(a.review_timeout_hours.max(1)));
        c.accept_threshold = a.accept_threshold.min(100);
        c.body_limit = a.body_limit;
        c.request_timeout = Duration::from_secs(a.request_timeout.max(1));
        c.max_reward_cents = a.max_reward.cents();
        c.match_top_n = a.match_top_n.max(1);
        c.match_window = Duration::from_secs(a.match_window.max(1));
        c.sqlite_writer_cpu = a.sqlite_writer_cpu;
        c.event_retention = chrono::Duration::days(i64::from(a.event_retention_days.max(1)));
        c.master_key = a.master_key.source();
        c.tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                min_version: a.tls_min_version,
                reload_interval: Duration::from_secs(a.tls_reload_secs.max(1)),
            }),
            _ => None,
        };
        c.artifacts_url = a.artifacts_url.clone().filter(|u| !u.is_empty());
        c.max_artifact_bytes = a.max_artifact_bytes;
        c
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, FromArgMatches};

    use super::*;

    fn nervix() -> clap::Command {
        clap::Command::new("nervix")
            .subcommand(ServeArgs::augment_args(clap::Command::new("serve")))
    }

    fn serve_env_bindings(cmd: &clap::Command) -> Vec<String> {
        cmd.find_subcommand("serve")
            .into_iter()
            .flat_map(|s| s.get_arguments())
            .filter_map(|a| a.get_env())
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn empty_variables_are_unbound_in_subcommands() {
        let all = serve_env_bindings(&nervix());
        assert!(all.iter().any(|n| n == "NERVIX_DATABASE_URL"), "{all:?}");
        assert!(all.iter().all(|n| n.starts_with("NERVIX_")), "{all:?}");

        let set = empty_env_means_unset(nervix(), &|_| Some("x".into()));
        assert_eq!(serve_env_bindings(&set), all, "a set variable stays bound");
        let unset = empty_env_means_unset(nervix(), &|_| None);
        assert_eq!(
            serve_env_bindings(&unset),
            all,
            "an unset variable stays bound"
        );

        let db_empty = empty_env_means_unset(nervix(), &|n| {
            (n == "NERVIX_DATABASE_URL").then(OsString::new)
        });
        let left = serve_env_bindings(&db_empty);
        assert_eq!(left.len(), all.len() - 1);
        assert!(!left.iter().any(|n| n == "NERVIX_DATABASE_URL"), "{left:?}");

        let all_empty = empty_env_means_unset(nervix(), &|_| Some(OsString::new()));
        assert_eq!(serve_env_bindings(&all_empty), Vec::<String>::new());
    }

    #[test]
    fn every_variable_empty_gives_the_defaults() {
        let matches = empty_env_means_unset(nervix(), &|_| Some(OsString::new()))
            .try_get_matches_from(["nervix", "serve"])
            .unwrap();
        let (_, serve) = matches.subcommand().unwrap();
        let args = ServeArgs::from_arg_matches(serve).unwrap();
        assert_eq!(args.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.database_url, None);
        assert_eq!(args.redis_url, None);
        assert!(!args.log_json);
        let config = Config::from(&args);
        let defaults = Config::for_data_dir("./nervix-data".into());
        assert_eq!(config.database_url, defaults.database_url);
        assert_eq!(config.rate_limit_enroll_per_minute, 30);
        assert_eq!(config.rate_limit_agent_per_second, 100);
        assert_eq!(config.rate_limit_messages_per_minute, 600);
        assert_eq!(config.max_reward_cents, defaults.max_reward_cents);
        assert_eq!(config.event_retention, chrono::Duration::days(7));
        // `nervix serve` pins the SQLite writer unless told not to; a library user does not.
        assert_eq!(config.sqlite_writer_cpu, nervix_store::WriterCpu::Auto);
        assert_eq!(defaults.sqlite_writer_cpu, nervix_store::WriterCpu::Off);
    }

    #[test]
    fn an_empty_database_url_flag_means_the_default() {
        let matches = nervix()
            .try_get_matches_from(["nervix", "serve", "--data-dir", "/d", "--database-url", ""])
            .unwrap();
        let (_, serve) = matches.subcommand().unwrap();
        let config = Config::from(&ServeArgs::from_arg_matches(serve).unwrap());
        assert_eq!(
            config.database_url,
            default_database_url(std::path::Path::new("/d"))
        );
    }
}

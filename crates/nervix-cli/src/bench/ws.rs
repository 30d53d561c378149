//! `nervix bench ws`: many agents connected at once to one node.
//!
//! Enrolls `--connections` agents and opens one event stream (`/v1/agent/connect`) for each,
//! then measures what the real-time hub costs and how fast it delivers:
//!
//! - connection success;
//! - the server's resident memory per connection (with `--server-pid`, read from
//!   `/proc/<pid>/status` before and after connecting: the bench must run on the server's host);
//! - an admin announcement reaching every connection: p50/p99/max from the POST to each
//!   connection reading the frame;
//! - direct messages sent at a fixed `--rate` between random pairs (end-to-end encrypted with
//!   `crypto_box`, as agents send them): p50/p99 from the send to the recipient reading it.
//!
//! Every connection is a file descriptor on both sides: the bench raises its own open-files
//! limit to the hard limit, and the server under test needs the same (`ulimit -n`, or
//! `LimitNOFILE=` under systemd; see docs/PERFORMANCE.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use nervix_client::{AgentKeys, Client, EnrollRequest, SendMessage};
use rand::Rng as _;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as Ws;
use uuid::Uuid;

use super::{bar_style, micros, ms, run_id, Common, Setup};

#[derive(clap::Args)]
pub struct WsBench {
    #[command(flatten)]
    common: Common,
    /// Agents connected at once.
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: u32,
    /// Announcements broadcast to every connection, one after the other.
    #[arg(long, default_value_t = 5)]
    broadcasts: u32,
    /// Direct messages sent between random pairs of connected agents.
    #[arg(long, default_value_t = 5000)]
    messages: u64,
    /// Direct messages per second (open loop).
    #[arg(long, default_value_t = 1000.0, value_parser = super::parse_rate)]
    rate: f64,
    /// The server's process id, to report its memory per connection (same host only).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bearer token of an admin, who makes the announcements.
    #[arg(long, env = "NERVIX_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

/// A frame a connection read that the bench times.
struct Receipt {
    /// The announcement's or message's id.
    id: Uuid,
    at: Instant,
}

struct Agent {
    client: Client,
    id: Uuid,
    keys: AgentKeys,
}

pub async fn run(args: WsBench) -> anyhow::Result<()> {
    let wanted = u64::from(args.connections) + 1024;
    let limit = raise_open_files_limit(wanted)?;
    if limit < wanted {
        bail!(
            "the open-files limit is {limit}, and {} connections need about {wanted}; raise the \
             hard limit (ulimit -Hn) for the bench and for the server",
            args.connections
        );
    }
    let setup = Setup::new(&args.common)?;
    let admin = setup.base.clone().with_token(args.admin_token.as_str());
    admin
        .verify()
        .await
        .context("the admin token was rejected")?;

    let agents = enroll(&setup, args.connections).await?;
    let rss_before = args.server_pid.map(rss_bytes).transpose()?;

    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<Receipt>();
    let (connected, failed) = connect_all(&setup.server, &agents, receipts_tx).await;
    // Let the server settle (buffers allocated on the first frames, presence writes).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = args.server_pid.map(rss_bytes).transpose()?;
    let per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => Some(a.saturating_sub(b) / connected as u64),
        _ => None,
    };

    let broadcast = bench_broadcasts(&admin, args.broadcasts, connected, &mut receipts).await?;
    let direct = bench_messages(&agents, args.messages, args.rate, &mut receipts).await?;

    let report = json!({
        "bench": "ws",
        "server": setup.server,
        "connections": {"wanted": args.connections, "connected": connected, "failed": failed,
                        "success_percent": 100.0 * connected as f64 / f64::from(args.connections.max(1))},
        "server_rss_bytes": {"before": rss_before, "after": rss_after, "per_connection": per_connection},
        "broadcast": broadcast,
        "direct_messages": direct,
    });
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Raises the soft open-files limit as far as the hard limit allows; returns the new limit.
fn raise_open_files_limit(wanted: u64) -> anyhow::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= wanted {
        return Ok(soft);
    }
    let new = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard)?;
    Ok(new)
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (is the server on this host?)"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib * 1024)
}

async fn enroll(setup: &Setup, count: u32) -> anyhow::Result<Vec<Agent>> {
    let prefix = format!("bench-{}-ws", run_id());
    let bar = ProgressBar::new(u64::from(count)).with_style(bar_style());
    bar.set_message("enrolling agents");
    let agents = futures::stream::iter(0..count)
        .map(|n| {
            let mut client = setup.base.clone();
            let prefix = &prefix;
            let bar = &bar;
            async move {
                let keys = AgentKeys::generate();
                let request =
                    EnrollRequest::new(format!("{prefix}{n}"), &keys).capabilities(["bench"]);
                let token = client.enroll(&keys, &request).await.with_context(|| {
                    "enrolling bench agents (start the server under test with \
                     NERVIX_RATE_LIMIT_ENROLL=0)"
                })?;
                bar.inc(1);
                Ok::<_, anyhow::Error>(Agent {
                    client,
                    id: token.agent.id,
                    keys,
                })
            }
        })
        .buffer_unordered(setup.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>();
    bar.finish_and_clear();
    agents
}

/// Opens one event stream per agent; each connection forwards the frames the bench times.
async fn connect_all(
    server: &str,
    agents: &[Agent],
    receipts: mpsc::UnboundedSender<Receipt>,
) -> (usize, usize) {
    let url = format!(
        "{}/v1/agent/connect",
        server.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let bar = ProgressBar::new(agents.len() as u64).with_style(bar_style());
    bar.set_message("connecting");
    let results: Vec<bool> = futures::stream::iter(agents)
        .map(|agent| {
            let (url, receipts, bar) = (url.clone(), receipts.clone(), bar.clone());
            let token = agent.client.token().unwrap_or_default().to_owned();
            async move {
                let ok = connect_one(&url, &token, receipts).await.is_ok();
                bar.inc(1);
                ok
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    bar.finish_and_clear();
    let connected = results.iter().filter(|ok| **ok).count();
    (connected, results.len() - connected)
}

async fn connect_one(
    url: &str,
    token: &str,
    receipts: mpsc::UnboundedSender<Receipt>,
) -> anyhow::Result<()> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut write, mut read) = socket.split();
    tokio::spawn(async move {
        // Keeps the connection from looking idle to the server, staggered so 10,000
        // connections do not ping in the same instant.
        let first = Duration::from_millis(rand::thread_rng().gen_range(5_000..25_000));
        let mut ping = tokio::time::interval_at(Instant::now() + first, Duration::from_secs(25));
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    if write.send(Ws::text(r#"{"type":"ping"}"#)).await.is_err() {
                        break;
                    }
                }
                msg = read.next() => match msg {
                    Some(Ok(Ws::Text(text))) => {
                        let at = Instant::now();
                        if let Some(id) = timed_frame_id(text.as_str()) {
                            let _ = receipts.send(Receipt { id, at });
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
            }
        }
    });
    Ok(())
}

/// The id of an `announcement` or `message` frame.
fn timed_frame_id(text: &str) -> Option<Uuid> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v["type"].as_str()? {
        "announcement" | "message" => v["data"]["id"].as_str()?.parse().ok(),
        _ => None,
    }
}

async fn bench_broadcasts(
    admin: &Client,
    count: u32,
    connected: usize,
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
) -> anyhow::Result<Value> {
    let mut hist = new_histogram();
    let mut delivered = 0u64;
    for n in 0..count {
        let t0 = Instant::now();
        let (status, body) = admin
            .request(
                reqwest::Method::POST,
                "/v1/admin/announcements",
                Some(&json!({"title": format!("bench {n}"), "body": "bench broadcast"})),
            )
            .await?;
        if status != 201 {
            bail!("announcement refused: HTTP {status}: {body}");
        }
        let id: Uuid = body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("announcement without an id")?;
        let mut got = 0usize;
        let give_up = t0 + Duration::from_secs(30);
        while got < connected {
            match tokio::time::timeout_at(give_up, receipts.recv()).await {
                Ok(Some(r)) if r.id == id => {
                    got += 1;
                    let _ = hist.record(micros(r.at - t0).max(1));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        delivered += got as u64;
        // Quiet gap between broadcasts so each is measured on its own.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(json!({
        "announcements": count,
        "deliveries": delivered,
        "expected": u64::from(count) * connected as u64,
        "latency_ms": quantiles(&hist),
    }))
}

async fn bench_messages(
    agents: &[Agent],
    count: u64,
    rate: f64,
    receipts: &mut mpsc::UnboundedReceiver<Receipt>,
) -> anyhow::Result<Value> {
    if agents.len() < 2 || count == 0 {
        return Ok(Value::Null);
    }
    let encryption_keys: Arc<Vec<String>> = Arc::new(
        agents
            .iter()
            .map(|a| a.keys.encryption_public_key_b64())
            .collect(),
    );
    let sent_at: Arc<parking_lot::Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let in_flight = Arc::new(Semaphore::new(512));
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut errors: HashMap<String, u64> = HashMap::new();
    let (err_tx, mut err_rx) = mpsc::unbounded_channel::<String>();
    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..count {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (from, to) = pick_pair(agents.len(), n);
        let sender = agents[from].client.clone();
        let sealed = agents[from].keys.seal_for(
            &encryption_keys[to],
            format!("bench message {n}").as_bytes(),
        )?;
        let message = SendMessage::encrypted_to(agents[to].id.to_string(), sealed);
        let (sent_at, err_tx) = (sent_at.clone(), err_tx.clone());
        sends.spawn(async move {
            let t0 = Instant::now();
            match sender.send_message(&message, None).await {
                Ok(sent) => {
                    sent_at.lock().insert(sent.id, t0);
                }
                Err(e) => {
                    let _ = err_tx.send(e.status().map_or("transport".into(), |s| s.to_string()));
                }
            }
            drop(permit);
        });
    }
    while sends.join_next().await.is_some() {}
    let send_seconds = started.elapsed().as_secs_f64();
    drop(err_tx);
    while let Some(kind) = err_rx.recv().await {
        *errors.entry(kind).or_default() += 1;
    }
    // Collect deliveries until every accepted message arrived or a quiet second passes.
    let expected = sent_at.lock().len();
    let mut arrived: HashMap<Uuid, Instant> = HashMap::with_capacity(expected);
    while arrived.len() < expected {
        match tokio::time::timeout(Duration::from_secs(1), receipts.recv()).await {
            Ok(Some(r)) => {
                arrived.insert(r.id, r.at);
            }
            _ => break,
        }
    }
    let mut hist = new_histogram();
    let sent = sent_at.lock();
    let mut delivered = 0u64;
    for (id, t0) in sent.iter() {
        if let Some(at) = arrived.get(id) {
            delivered += 1;
            let _ = hist.record(micros(at.saturating_duration_since(*t0)).max(1));
        }
    }
    Ok(json!({
        "messages": count,
        "accepted": sent.len(),
        "delivered": delivered,
        "errors": errors,
        "achieved_rate_per_s": (count as f64 / send_seconds * 10.0).round() / 10.0,
        "latency_ms": quantiles(&hist),
    }))
}

/// Sender and recipient of the `n`th message: random, never the same agent.
fn pick_pair(len: usize, n: u64) -> (usize, usize) {
    let mut rng = rand::thread_rng();
    let from = rng.gen_range(0..len);
    let offset = 1 + (n as usize + rng.gen_range(0..len)) % (len - 1);
    (from, (from + offset) % len)
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min at three significant figures; the bounds are valid constants.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|e| panic!("histogram: {e}")))
}

fn quantiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
    })
}

fn print_report(r: &Value) {
    let c = &r["connections"];
    println!(
        "connections      {}/{} ({:.2} %), {} failed",
        c["connected"],
        c["wanted"],
        c["success_percent"].as_f64().unwrap_or(0.0),
        c["failed"]
    );
    if let Some(per) = r["server_rss_bytes"]["per_connection"].as_u64() {
        println!(
            "server memory    {:.1} KiB per connection (RSS {} → {} MiB)",
            per as f64 / 1024.0,
            r["server_rss_bytes"]["before"].as_u64().unwrap_or(0) >> 20,
            r["server_rss_bytes"]["after"].as_u64().unwrap_or(0) >> 20
        );
    }
    let b = &r["broadcast"];
    println!(
        "broadcast        {} announcements, {}/{} deliveries, latency p50 {} ms, p99 {} ms, max {} ms",
        b["announcements"], b["deliveries"], b["expected"],
        b["latency_ms"]["p50"], b["latency_ms"]["p99"], b["latency_ms"]["max"]
    );
    let d = &r["direct_messages"];
    if !d.is_null() {
        println!(
            "direct messages  {} sent at {}/s, {} delivered, latency p50 {} ms, p99 {} ms, max {} ms, errors {}",
            d["accepted"], d["achieved_rate_per_s"], d["delivered"],
            d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["latency_ms"]["max"], d["errors"]
        );
    }
}

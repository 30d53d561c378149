//! `nervix bench`: load generators against a running server.
//!
//! Every run is bounded twice: by a count (`--requests` / `--cycles`) and by `--max-seconds`
//! (setup included); requests still in flight at the deadline are abandoned and reported as
//! interrupted. Latencies of successful operations go into HDR histograms with microsecond
//! resolution; failures are counted by kind instead, so fast rejections (say, 429s) cannot make
//! the latency figures look better than the service is.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use nervix_client::{
    AgentKeys, ClaimRequest, Client, ClientError, Complexity, Decimal2, EnrollRequest, NewTask,
    Role, SubmitRequest,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio::time::{timeout_at, Instant, MissedTickBehavior};
use uuid::Uuid;

mod ws;

/// What the bench's worker hands in: long and varied enough for the text checks (`length`,
/// `repetition`) to accept it, so every cycle ends in a payout as real work would.
const BENCH_ANSWER: &str = "The report covers the three regions in turn, compares this quarter's \
    figures with last year's, and closes with two recommendations for the operations team to \
    review before the next planning meeting.";

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Full enrollments (enroll + signed respond), each with a fresh key.
    Enroll(EnrollBench),
    /// Authenticated `GET /v1/agents/me`: closed loop, or open loop at a fixed --rate.
    Me(MeBench),
    /// Task cycles: an admin posts a task, a worker agent claims it and submits.
    Tasks(TasksBench),
    /// Many agents connected at once: memory per connection, broadcast and message latency.
    Ws(ws::WsBench),
}

#[derive(clap::Args)]
pub struct Common {
    /// Server base URL.
    #[arg(long, env = "NERVIX_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Operations in flight at once (closed loop: workers; open loop: cap on outstanding requests).
    #[arg(long, short = 'c', default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Stop after this many seconds, setup included, even if work remains.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    max_seconds: u64,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EnrollBench {
    #[command(flatten)]
    common: Common,
    /// Number of enrollments.
    #[arg(long, short = 'n', default_value_t = 1000)]
    requests: u64,
}

#[derive(clap::Args)]
pub struct MeBench {
    #[command(flatten)]
    common: Common,
    /// Number of requests.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    requests: u64,
    /// Send at this fixed rate (requests/s, open loop) instead of as fast as possible.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Agents enrolled up front and used in turn (each is rate limited separately).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    agents: u32,
}

#[derive(clap::Args)]
pub struct TasksBench {
    #[command(flatten)]
    common: Common,
    /// Number of post + claim + submit cycles.
    #[arg(long, short = 'n', default_value_t = 200)]
    cycles: u64,
    /// Bearer token of an admin, who posts the tasks from the treasury (prefer the env var:
    /// command lines are visible to other users).
    #[arg(long, env = "NERVIX_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Enroll(args) => bench_enroll(args).await,
        BenchCommand::Me(args) => bench_me(args).await,
        BenchCommand::Tasks(args) => bench_tasks(args).await,
        BenchCommand::Ws(args) => ws::run(args).await,
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 {
        Ok(rate)
    } else {
        Err("must be between 0 and 1000000 requests/s".to_owned())
    }
}

// ---- the three benchmarks ---------------------------------------------------------------------

async fn bench_enroll(args: EnrollBench) -> anyhow::Result<()> {
    let setup = Setup::new(&args.common)?;
    let op = EnrollOp {
        base: setup.base.clone(),
        run_id: run_id(),
    };
    let plan = setup.plan(
        "enroll",
        "enrollments",
        args.requests,
        &["enroll", "respond"],
        "enrollment is rate limited per client IP; start the server under test with \
         NERVIX_RATE_LIMIT_ENROLL=0",
    );
    let report = closed_loop(&plan, Arc::new(op)).await?;
    report.print(args.common.json)
}

async fn bench_me(args: MeBench) -> anyhow::Result<()> {
    let setup = Setup::new(&args.common)?;
    let clients = setup
        .enroll_agents(&format!("bench-{}-me", run_id()), args.agents, &["bench"])
        .await?;
    let plan = setup.plan(
        "me",
        "requests",
        args.requests,
        &[],
        "requests are rate limited per agent; use more --agents or start the server under test \
         with NERVIX_RATE_LIMIT_AGENT=0",
    );
    let op = Arc::new(MeOp { clients });
    let report = match args.rate {
        Some(rate) => open_loop(&plan, op, rate).await?,
        None => closed_loop(&plan, op).await?,
    };
    report.print(args.common.json)
}

async fn bench_tasks(args: TasksBench) -> anyhow::Result<()> {
    let setup = Setup::new(&args.common)?;
    let admin = setup.base.clone().with_token(args.admin_token.as_str());
    let whoami = admin
        .verify()
        .await
        .context("the admin token was rejected")?;
    if whoami.role != Role::Admin {
        bail!(
            "the token belongs to {} whose role is {}; tasks are posted from the treasury and \
             need an admin token",
            whoami.agent_id,
            whoami.role
        );
    }
    let workers = setup
        .enroll_agents(
            &format!("bench-{}-w", run_id()),
            args.common.concurrency,
            &["bench"],
        )
        .await?;
    let plan = setup.plan(
        "tasks",
        "cycles",
        args.cycles,
        &["post", "claim", "submit"],
        "the admin's requests are rate limited like any agent's; start the server under test \
         with NERVIX_RATE_LIMIT_AGENT=0",
    );
    let op = TaskCycleOp { admin, workers };
    let report = closed_loop(&plan, Arc::new(op)).await?;
    report.print(args.common.json)?;
    report_match_latency(&setup.base).await
}

/// The server's own post → `task_available` latency, read from its Prometheus histogram
/// (bucket resolution: the quantile is the upper bound of the bucket it falls in).
async fn report_match_latency(client: &Client) -> anyhow::Result<()> {
    let raw = client
        .request_raw(reqwest::Method::GET, "/metrics", &[], None)
        .await
        .context("fetching /metrics")?;
    let text = String::from_utf8_lossy(&raw.body);
    let buckets = histogram_buckets(&text, "nervix_match_notify_latency_seconds");
    let Some(total) = buckets.last().map(|b| b.1) else {
        eprintln!("match latency: no samples in /metrics");
        return Ok(());
    };
    let quantile = |q: f64| {
        let rank = (q * total as f64).ceil() as u64;
        buckets
            .iter()
            .find(|b| b.1 >= rank)
            .map_or(f64::INFINITY, |b| b.0)
    };
    eprintln!(
        "match latency (post → task_available, server histogram, {total} tasks): p50 ≤ {:.1} ms, p99 ≤ {:.1} ms",
        quantile(0.50) * 1000.0,
        quantile(0.99) * 1000.0
    );
    Ok(())
}

/// `(upper bound, cumulative count)` of a Prometheus histogram, in order.
fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once('"')?;
            let count = rest
                .trim_start_matches('}')
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count))
        })
        .collect()
}

/// Shared state of a run: one connection pool for every simulated agent, and the deadline.
struct Setup {
    base: Client,
    server: String,
    concurrency: usize,
    deadline: Instant,
    max_latency: Duration,
}

impl Setup {
    fn new(common: &Common) -> anyhow::Result<Self> {
        let concurrency = usize::try_from(common.concurrency)?;
        let max_seconds = Duration::from_secs(common.max_seconds);
        let http = reqwest::Client::builder()
            .user_agent(concat!("nervix-bench/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(concurrency)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: Client::with_http_client(&common.server, http)?,
            server: common.server.clone(),
            concurrency,
            deadline: Instant::now() + max_seconds,
            // Open-loop latency includes queueing, which can grow up to the whole run.
            max_latency: max_seconds + Duration::from_secs(60),
        })
    }

    fn plan(
        &self,
        name: &'static str,
        unit: &'static str,
        total: u64,
        steps: &'static [&'static str],
        rate_limit_hint: &'static str,
    ) -> Plan {
        Plan {
            name,
            unit,
            server: self.server.clone(),
            total,
            concurrency: self.concurrency,
            deadline: self.deadline,
            steps,
            max_latency: self.max_latency,
            rate_limit_hint,
        }
    }

    /// Enrolls `count` agents named `<prefix><n>`, waiting out enrollment rate limits (until
    /// the run's deadline) so back-to-back runs work against a rate-limited server.
    async fn enroll_agents(
        &self,
        prefix: &str,
        count: u32,
        capabilities: &[&str],
    ) -> anyhow::Result<Vec<Client>> {
        let bar = ProgressBar::new(u64::from(count)).with_style(bar_style());
        bar.set_message("enrolling bench agents");
        let mut clients = Vec::new();
        for n in 0..count {
            let keys = AgentKeys::generate();
            let request = EnrollRequest::new(format!("{prefix}{n}"), &keys)
                .capabilities(capabilities.iter().copied());
            let mut backoff = Duration::from_millis(500);
            loop {
                let mut client = self.base.clone();
                match client.enroll(&keys, &request).await {
                    Ok(_) => {
                        clients.push(client);
                        break;
                    }
                    Err(e) if e.status() == Some(429) => {
                        let wait = e.retry_after().unwrap_or(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        if Instant::now() + wait >= self.deadline {
                            bar.abandon();
                            bail!(
                                "enrollment is rate limited and --max-seconds would pass before \
                                 it allows more; start the server under test with \
                                 NERVIX_RATE_LIMIT_ENROLL=0"
                            );
                        }
                        bar.set_message(format!("rate limited; retrying in {wait:?}"));
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        bar.abandon();
                        return Err(e).context("cannot enroll the bench agents");
                    }
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(clients)
    }
}

/// A short random tag so handles from different runs never collide.
fn run_id() -> String {
    Uuid::new_v4().simple().to_string()[..8].to_owned()
}

// ---- operations -------------------------------------------------------------------------------

/// One unit of load. `worker` identifies the closed-loop worker (or, in open loop, the request)
/// so operations can spread over several agents.
trait Operation: Send + Sync + 'static {
    fn run(
        &self,
        index: u64,
        worker: u64,
    ) -> impl Future<Output = Result<Done, ClientError>> + Send;
}

/// A successful operation: the latency of each step (in the plan's step order) and an optional
/// outcome label, tallied in the report.
struct Done {
    steps: Vec<Duration>,
    outcome: Option<String>,
}

struct EnrollOp {
    base: Client,
    run_id: String,
}

impl Operation for EnrollOp {
    async fn run(&self, index: u64, _worker: u64) -> Result<Done, ClientError> {
        // Key generation is a few microseconds, negligible next to the two round trips; signing
        // is part of what an enrollment costs a real agent, so it stays in the timed section.
        let keys = AgentKeys::generate();
        let request = EnrollRequest::new(format!("bench-{}-{index}", self.run_id), &keys)
            .capabilities(["bench"]);
        let mut client = self.base.clone();
        let t0 = Instant::now();
        let challenge = client.start_enroll(&request).await?;
        let t1 = Instant::now();
        let signature = keys.sign_challenge(&challenge.challenge);
        client
            .respond_enroll(challenge.enrollment_id, &signature)
            .await?;
        Ok(Done {
            steps: vec![t1 - t0, t1.elapsed()],
            outcome: None,
        })
    }
}

struct MeOp {
    clients: Vec<Client>,
}

impl Operation for MeOp {
    async fn run(&self, _index: u64, worker: u64) -> Result<Done, ClientError> {
        self.clients[pick(worker, self.clients.len())].me().await?;
        Ok(Done {
            steps: Vec::new(),
            outcome: None,
        })
    }
}

struct TaskCycleOp {
    admin: Client,
    workers: Vec<Client>,
}

impl Operation for TaskCycleOp {
    async fn run(&self, index: u64, worker: u64) -> Result<Done, ClientError> {
        let agent = &self.workers[pick(worker, self.workers.len())];
        let new_task = NewTask {
            complexity: Complexity::Simple,
            deadline: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            ..NewTask::new(
                format!("bench task {index}"),
                "Benchmark task: reply with any non-empty text.",
                Decimal2::from_cents(100),
                &["bench"],
            )
        };
        let t0 = Instant::now();
        let task = self.admin.post_task(&new_task, None).await?;
        let t1 = Instant::now();
        let worked = async {
            agent.claim(task.id, &ClaimRequest::default()).await?;
            let t2 = Instant::now();
            let submitted = agent
                .submit(task.id, &SubmitRequest::text(BENCH_ANSWER), None)
                .await?;
            Ok::<_, ClientError>((t2, submitted))
        }
        .await;
        match worked {
            Ok((t2, submitted)) => Ok(Done {
                steps: vec![t1 - t0, t2 - t1, t2.elapsed()],
                outcome: Some(submitted.submission.status.to_string()),
            }),
            Err(e) => {
                // Best effort: refund the escrow and free the worker's slot so one failure does
                // not turn every later claim by this worker into `at_capacity`.
                let _ = self.admin.cancel(task.id).await;
                Err(e)
            }
        }
    }
}

fn pick(worker: u64, len: usize) -> usize {
    // `len` is never zero (at least one agent is enrolled); the modulo result fits in usize.
    usize::try_from(worker % len.max(1) as u64).unwrap_or(0)
}

// ---- drivers ----------------------------------------------------------------------------------

struct Plan {
    name: &'static str,
    unit: &'static str,
    server: String,
    total: u64,
    concurrency: usize,
    deadline: Instant,
    steps: &'static [&'static str],
    max_latency: Duration,
    rate_limit_hint: &'static str,
}

struct Completion {
    latency: Duration,
    result: Result<Done, Failure>,
}

enum Failure {
    Error {
        kind: String,
        message: String,
    },
    /// Still running when the deadline passed.
    Interrupted,
}

async fn run_bounded<O: Operation>(
    op: &O,
    index: u64,
    worker: u64,
    deadline: Instant,
) -> Result<Done, Failure> {
    match timeout_at(deadline, op.run(index, worker)).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(Failure::Error {
            kind: error_kind(&e),
            message: e.to_string(),
        }),
        Err(_elapsed) => Err(Failure::Interrupted),
    }
}

/// Closed loop: `concurrency` workers each run one operation after another, as fast as the
/// server answers. Measures maximum throughput; latency is per operation from its start.
async fn closed_loop<O: Operation>(plan: &Plan, op: Arc<O>) -> anyhow::Result<Report<'_>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(rx, Recorder::new(plan)?, progress(plan)));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let mut workers = JoinSet::new();
    for worker in 0..plan.concurrency as u64 {
        let (op, next, tx) = (Arc::clone(&op), Arc::clone(&next), tx.clone());
        let (total, deadline) = (plan.total, plan.deadline);
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total || Instant::now() >= deadline {
                    break;
                }
                let begin = Instant::now();
                let result = run_bounded(op.as_ref(), index, worker, deadline).await;
                let interrupted = matches!(result, Err(Failure::Interrupted));
                let latency = begin.elapsed();
                if tx.send(Completion { latency, result }).is_err() || interrupted {
                    break;
                }
            }
        });
    }
    drop(tx);
    while let Some(joined) = workers.join_next().await {
        propagate_panic(joined);
    }
    let elapsed = started.elapsed();
    let recorder = collector.await.context("the result collector failed")?;
    Ok(Report::new(plan, None, elapsed, recorder))
}

/// Open loop: requests are sent on a fixed schedule whatever the server does, and each latency
/// runs from the request's scheduled time. A stalled server therefore shows up as latency
/// rather than as a quietly lower request rate (no coordinated omission).
async fn open_loop<O: Operation>(plan: &Plan, op: Arc<O>, rate: f64) -> anyhow::Result<Report<'_>> {
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(rx, Recorder::new(plan)?, progress(plan)));
    let permits = Arc::new(Semaphore::new(plan.concurrency));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // Ticks missed while the dispatcher waited fire at once with their original times, so the
    // schedule (and the latency reference) never drifts.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();

    let mut inflight = JoinSet::new();
    for index in 0..plan.total {
        let scheduled = ticker.tick().await;
        if scheduled >= plan.deadline {
            break;
        }
        // Waiting for a permit delays the send, not the scheduled time it is measured from.
        let Ok(Ok(permit)) = timeout_at(plan.deadline, Arc::clone(&permits).acquire_owned()).await
        else {
            break;
        };
        let (op, tx, deadline) = (Arc::clone(&op), tx.clone(), plan.deadline);
        inflight.spawn(async move {
            let result = run_bounded(op.as_ref(), index, index, deadline).await;
            drop(permit);
            let _ = tx.send(Completion {
                latency: scheduled.elapsed(),
                result,
            });
        });
        while let Some(joined) = inflight.try_join_next() {
            propagate_panic(joined);
        }
    }
    drop(tx);
    while let Some(joined) = inflight.join_next().await {
        propagate_panic(joined);
    }
    let elapsed = started.elapsed();
    let recorder = collector.await.context("the result collector failed")?;
    Ok(Report::new(plan, Some(rate), elapsed, recorder))
}

fn propagate_panic(joined: Result<(), JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<Completion>,
    mut recorder: Recorder,
    bar: ProgressBar,
) -> Recorder {
    while let Some(completion) = rx.recv().await {
        recorder.record(completion);
        bar.inc(1);
        let failed = recorder.failed();
        if failed > 0 {
            bar.set_message(format!("{failed} failed"));
        }
    }
    bar.finish_and_clear();
    recorder
}

fn progress(plan: &Plan) -> ProgressBar {
    let bar = ProgressBar::new(plan.total).with_style(bar_style());
    bar.set_message(format!("bench {}", plan.name));
    bar
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Api { status, problem } => match &problem.code {
            Some(code) => format!("{status} {code}"),
            None => status.to_string(),
        },
        ClientError::Http(e) if e.is_timeout() => "timeout".to_owned(),
        ClientError::Http(e) if e.is_connect() => "connect".to_owned(),
        ClientError::Http(_) => "transport".to_owned(),
        ClientError::Decode { .. } => "bad response body".to_owned(),
        _ => "other".to_owned(),
    }
}

// ---- results ----------------------------------------------------------------------------------

struct Recorder {
    total: Histogram<u64>,
    steps: Vec<Histogram<u64>>,
    ok: u64,
    interrupted: u64,
    errors: BTreeMap<String, u64>,
    first_error: BTreeMap<String, String>,
    outcomes: BTreeMap<String, u64>,
}

impl Recorder {
    fn new(plan: &Plan) -> anyhow::Result<Self> {
        let max_us = u64::try_from(plan.max_latency.as_micros()).unwrap_or(u64::MAX);
        let histogram =
            || Histogram::new_with_bounds(1, max_us.max(2), 3).context("cannot create a histogram");
        Ok(Self {
            total: histogram()?,
            steps: plan
                .steps
                .iter()
                .map(|_| histogram())
                .collect::<anyhow::Result<_>>()?,
            ok: 0,
            interrupted: 0,
            errors: BTreeMap::new(),
            first_error: BTreeMap::new(),
            outcomes: BTreeMap::new(),
        })
    }

    fn record(&mut self, completion: Completion) {
        match completion.result {
            Ok(done) => {
                self.ok += 1;
                self.total.saturating_record(micros(completion.latency));
                for (histogram, step) in self.steps.iter_mut().zip(done.steps) {
                    histogram.saturating_record(micros(step));
                }
                if let Some(outcome) = done.outcome {
                    *self.outcomes.entry(outcome).or_default() += 1;
                }
            }
            Err(Failure::Error { kind, message }) => {
                *self.errors.entry(kind.clone()).or_default() += 1;
                self.first_error.entry(kind).or_insert(message);
            }
            Err(Failure::Interrupted) => self.interrupted += 1,
        }
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Report<'a> {
    plan: &'a Plan,
    rate: Option<f64>,
    elapsed: Duration,
    recorder: Recorder,
}

impl<'a> Report<'a> {
    fn new(plan: &'a Plan, rate: Option<f64>, elapsed: Duration, recorder: Recorder) -> Self {
        Self {
            plan,
            rate,
            elapsed,
            recorder,
        }
    }

    fn not_started(&self) -> u64 {
        let r = &self.recorder;
        self.plan
            .total
            .saturating_sub(r.ok + r.failed() + r.interrupted)
    }

    fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.recorder.ok as f64 / secs
        } else {
            0.0
        }
    }

    fn latencies(&self) -> Vec<(&'static str, &Histogram<u64>)> {
        let total_name = self.plan.unit.trim_end_matches('s');
        let mut rows = vec![(total_name, &self.recorder.total)];
        rows.extend(self.plan.steps.iter().copied().zip(&self.recorder.steps));
        rows
    }

    fn print(&self, as_json: bool) -> anyhow::Result<()> {
        if as_json {
            println!("{}", serde_json::to_string_pretty(&self.to_json())?);
        } else {
            self.print_table();
        }
        Ok(())
    }

    fn print_table(&self) {
        let (plan, r) = (self.plan, &self.recorder);
        let mode = match self.rate {
            Some(rate) => format!(
                "open loop at {rate} req/s, max {} in flight",
                plan.concurrency
            ),
            None => format!("closed loop, concurrency {}", plan.concurrency),
        };
        println!(
            "nervix bench {} against {} ({mode})",
            plan.name, plan.server
        );
        println!(
            "  {} {} ok, {} failed, {} interrupted, {} not started, in {:.2} s",
            r.ok,
            plan.unit,
            r.failed(),
            r.interrupted,
            self.not_started(),
            self.elapsed.as_secs_f64()
        );
        println!("  throughput  {:.1} {}/s", self.throughput(), plan.unit);
        if r.ok > 0 {
            println!(
                "  latency (ms) {:>10} {:>10} {:>10} {:>10} {:>10}",
                "p50", "p95", "p99", "max", "mean"
            );
            for (i, (name, h)) in self.latencies().into_iter().enumerate() {
                let label = if i == 0 {
                    name.to_owned()
                } else {
                    format!("  {name}")
                };
                println!(
                    "  {label:<12} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                    ms(h.value_at_quantile(0.50)),
                    ms(h.value_at_quantile(0.95)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.max()),
                    h.mean() / 1000.0
                );
            }
        }
        if !r.outcomes.is_empty() {
            let outcomes: Vec<String> =
                r.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("  outcomes    {}", outcomes.join(", "));
        }
        if !r.errors.is_empty() {
            println!("  errors");
            for (kind, n) in &r.errors {
                let first = r.first_error.get(kind).map_or("", String::as_str);
                println!("    {kind:<28} x{n:<8} first: {first}");
            }
        }
        if r.errors.keys().any(|k| k.starts_with("429")) {
            println!("  hint: {}", plan.rate_limit_hint);
        }
    }

    fn to_json(&self) -> Value {
        let (plan, r) = (self.plan, &self.recorder);
        let latency: serde_json::Map<String, Value> = self
            .latencies()
            .into_iter()
            .map(|(name, h)| {
                let summary = json!({
                    "count": h.len(),
                    "p50": h.value_at_quantile(0.50),
                    "p95": h.value_at_quantile(0.95),
                    "p99": h.value_at_quantile(0.99),
                    "max": h.max(),
                    // Sub-microsecond digits of a mean are noise.
                    "mean": (h.mean() * 10.0).round() / 10.0,
                });
                (name.to_owned(), summary)
            })
            .collect();
        json!({
            "bench": plan.name,
            "server": plan.server,
            "mode": if self.rate.is_some() { "open" } else { "closed" },
            "rate_per_second": self.rate,
            "concurrency": plan.concurrency,
            "unit": plan.unit,
            "planned": plan.total,
            "ok": r.ok,
            "failed": r.failed(),
            "interrupted": r.interrupted,
            "not_started": self.not_started(),
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "throughput_per_second": self.throughput(),
            "latency_us": latency,
            "errors": r.errors,
            "outcomes": r.outcomes,
        })
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flaky;

    impl Operation for Flaky {
        async fn run(&self, index: u64, _worker: u64) -> Result<Done, ClientError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if index < 5 {
                return Err(ClientError::InvalidInput("boom".into()));
            }
            Ok(Done {
                steps: vec![Duration::from_micros(300)],
                outcome: Some("accepted".into()),
            })
        }
    }

    #[test]
    fn parses_histogram_buckets() {
        let text = "# TYPE x histogram\nx_bucket{le=\"0.001\"} 3\nx_bucket{le=\"0.01\"} 9\nx_bucket{le=\"+Inf\"} 10\nx_count 10\n";
        let b = histogram_buckets(text, "x");
        assert_eq!(b, vec![(0.001, 3), (0.01, 9), (f64::INFINITY, 10)]);
    }

    fn plan(total: u64, seconds: u64) -> Plan {
        Plan {
            name: "test",
            unit: "cycles",
            server: "http://127.0.0.1:1".into(),
            total,
            concurrency: 4,
            deadline: Instant::now() + Duration::from_secs(seconds),
            steps: &["step"],
            max_latency: Duration::from_secs(seconds + 60),
            rate_limit_hint: "",
        }
    }

    #[tokio::test]
    async fn closed_loop_runs_exactly_the_requested_count() {
        let plan = plan(50, 30);
        let report = closed_loop(&plan, Arc::new(Flaky)).await.unwrap();
        let r = &report.recorder;
        assert_eq!(r.ok, 45);
        assert_eq!(r.errors.get("other"), Some(&5));
        assert_eq!(r.outcomes.get("accepted"), Some(&45));
        assert_eq!(r.steps[0].len(), 45);
        assert_eq!(report.not_started(), 0);
        let v = report.to_json();
        assert_eq!(
            v["latency_us"]["step"]["p50"].as_u64().map(|us| us / 100),
            Some(3)
        );
        assert!(v["latency_us"]["cycle"]["count"] == 45);
    }

    #[tokio::test]
    async fn open_loop_keeps_the_schedule() {
        let plan = plan(20, 30);
        let started = Instant::now();
        let report = open_loop(&plan, Arc::new(Flaky), 200.0).await.unwrap();
        // 20 requests at 200/s take about 0.1 s.
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert_eq!(report.recorder.ok + report.recorder.failed(), 20);
    }

    struct Stuck;

    impl Operation for Stuck {
        async fn run(&self, _index: u64, _worker: u64) -> Result<Done, ClientError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn the_deadline_stops_the_run() {
        let mut plan = plan(1_000, 1);
        plan.deadline = Instant::now() + Duration::from_millis(200);
        let started = Instant::now();
        let report = closed_loop(&plan, Arc::new(Stuck)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(report.recorder.interrupted, 4);
        assert_eq!(report.not_started(), 996);
    }
}

//! `nervix demo`: the whole platform in one minute, for real.
//!
//! Starts a server on a temporary embedded database, enrolls a few agents with different
//! capabilities and skill, each a real WebSocket client through the SDK, posts a DAG workflow
//! and shows its progress live until it completes, then prints who did what, the quality of
//! their work, what they earned, their reputation and the encrypted messages they exchanged.
//! Every step goes over HTTP and WebSocket, as any agent's would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use nervix_client::{
    AgentKeys, ClaimRequest, Client, Complexity, Decimal2, EnrollRequest, EventStream, NewTask,
    NewWorkflow, NewWorkflowTask, Requirements, SendMessage, ServerEvent, SubmitRequest, Task,
    TaskKind, TaskQuery, TaskStatus,
};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long the workflow may take before the demo gives up (it takes seconds).
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);
/// Agents look for open tasks this often besides the offers pushed to them, in case an offer
/// went out before their stream was up.
const POLL_EVERY: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the server running after the demo (Ctrl-C to stop) to look at the web pages.
    #[arg(long)]
    keep_serving: bool,
    /// Address to serve on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: std::net::SocketAddr,
}

/// A demo agent: who it is, what it can do, and how carefully it works (its "skill" sets how
/// much it writes, which the automated checks score).
struct Persona {
    handle: &'static str,
    name: &'static str,
    capabilities: &'static [&'static str],
    /// 1 (terse) to 3 (thorough).
    skill: usize,
    /// Who it tells, by encrypted message, when it hands work on.
    tells: &'static str,
}

const PERSONAS: [Persona; 4] = [
    Persona {
        handle: "ada-coder",
        name: "Ada (coder)",
        capabilities: &["coding"],
        skill: 3,
        tells: "ben-writer",
    },
    Persona {
        handle: "ben-writer",
        name: "Ben (writer)",
        capabilities: &["writing", "research"],
        skill: 3,
        tells: "cy-analyst",
    },
    Persona {
        handle: "cy-analyst",
        name: "Cy (analyst)",
        capabilities: &["data", "research"],
        skill: 2,
        tells: "ada-coder",
    },
    Persona {
        handle: "dee-generalist",
        name: "Dee (generalist)",
        capabilities: &["writing", "coding", "data"],
        skill: 1,
        tells: "ben-writer",
    },
];

/// What agents report to the screen and the summary.
#[derive(Debug)]
enum Report {
    Claimed {
        agent: String,
        title: String,
    },
    Submitted {
        agent: String,
        title: String,
        status: String,
        quality: Option<f64>,
    },
    Message {
        from: String,
        to: String,
        text: String,
    },
}

#[derive(Default)]
struct Tally {
    tasks: Vec<(String, String, Option<f64>)>,
    messages_sent: usize,
    messages_read: usize,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let mut config = nervix_server::Config::for_data_dir(dir.path().to_path_buf());
    // Nobody is there to review a spot check: it would hold the workflow for 72 hours.
    config.spot_check_rate = 0.0;
    let admin_token = nervix_server::operator::create_admin_token(&config)
        .await
        .context("cannot create the demo's admin token")?;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    let server = nervix_server::server::start(listener, config)
        .await
        .context("cannot start the server")?;
    let base = format!("http://{}", server.addr);
    println!("Nervix demo: a server on {base} with a temporary database");

    let result = play(&base, &admin_token).await;
    if result.is_ok() {
        println!();
        println!("Web:      {base}/");
        println!("API:      {base}/v1/openapi.json");
        if args.keep_serving {
            println!("Serving until Ctrl-C.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    server.shutdown().await;
    drop(dir);
    result
}

async fn play(base: &str, admin_token: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let admin = Client::with_http_client(base, http.clone())?.with_token(admin_token);

    let mut agents = Vec::new();
    for p in &PERSONAS {
        let keys = AgentKeys::generate();
        let mut client = Client::with_http_client(base, http.clone())?;
        let mut request =
            EnrollRequest::new(p.handle, &keys).capabilities(p.capabilities.iter().copied());
        request.agent_name = Some(p.name.to_owned());
        request.max_concurrent_tasks = Some(2);
        let enrolled = client
            .enroll(&keys, &request)
            .await
            .with_context(|| format!("enrolling {}", p.handle))?;
        println!(
            "enrolled {:<15} {:<28} capabilities: {}",
            p.handle,
            enrolled.agent.id,
            p.capabilities.join(", ")
        );
        agents.push((p, keys, client, enrolled.agent.id));
    }
    let directory: Arc<BTreeMap<String, (Uuid, String)>> = Arc::new(
        agents
            .iter()
            .map(|(p, keys, _, id)| (p.handle.to_owned(), (*id, keys.encryption_public_key_b64())))
            .collect(),
    );

    let stop = CancellationToken::new();
    let (reports, mut incoming) = mpsc::unbounded_channel();
    let mut running = Vec::new();
    for (persona, keys, client, _) in agents {
        let stream = EventStream::connect(base, client.clone(), None)
            .await
            .with_context(|| format!("{} cannot open its event stream", persona.handle))?;
        let agent = DemoAgent {
            persona,
            keys,
            client,
            directory: directory.clone(),
            reports: reports.clone(),
        };
        running.push(tokio::spawn(agent.run(stream, stop.clone())));
    }
    drop(reports);

    let workflow = admin
        .post_workflow(&sample_workflow(), None)
        .await
        .context("posting the sample workflow")?;
    println!(
        "posted workflow \"{}\" ({} tasks) from the platform treasury",
        workflow.name,
        workflow.tasks.len()
    );

    let bar = ProgressBar::new(workflow.tasks.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} tasks  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut tally = Tally::default();
    let deadline = tokio::time::Instant::now() + GIVE_UP_AFTER;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    let outcome = loop {
        tokio::select! {
            Some(report) = incoming.recv() => show(&bar, &mut tally, report),
            _ = poll.tick() => {
                let wf = admin.workflow(workflow.id).await?;
                if let Some(p) = &wf.progress {
                    bar.set_position(u64::from(p.completed));
                    bar.set_message(format!("{} running, {} failed, {:.0} %", p.running, p.failed, p.percent));
                }
                if wf.status.is_final() {
                    break wf.status.to_string();
                }
                if tokio::time::Instant::now() > deadline {
                    break "timed out".to_owned();
                }
            }
        }
    };
    bar.finish_and_clear();
    // Let the last messages arrive before the agents stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for r in running {
        let _ = r.await;
    }
    while let Ok(report) = incoming.try_recv() {
        show(&bar, &mut tally, report);
    }
    println!("workflow {outcome}");
    summary(base, &http, &directory, &tally).await?;
    if outcome != "completed" {
        bail!("the workflow did not complete ({outcome})");
    }
    Ok(())
}

fn show(bar: &ProgressBar, tally: &mut Tally, report: Report) {
    // Without a terminal the bar is hidden, and so is what it would print.
    let println = |line: String| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    match report {
        Report::Claimed { agent, title } => println(format!("  {agent:<15} claimed   {title}")),
        Report::Submitted {
            agent,
            title,
            status,
            quality,
        } => {
            let q = quality.map_or("-".to_owned(), |q| format!("{q:.1}"));
            println(format!(
                "  {agent:<15} submitted {title}: {status}, quality {q}"
            ));
            if status == "accepted" {
                tally.tasks.push((agent, title, quality));
            }
        }
        Report::Message { from, to, text } => {
            if from == to {
                tally.messages_read += 1;
                println(format!("  {to:<15} decrypted a message: \"{text}\""));
            } else {
                tally.messages_sent += 1;
            }
        }
    }
}

async fn summary(
    base: &str,
    http: &reqwest::Client,
    directory: &BTreeMap<String, (Uuid, String)>,
    tally: &Tally,
) -> anyhow::Result<()> {
    let public = Client::with_http_client(base, http.clone())?;
    println!();
    println!(
        "{:<15} {:>5} {:>8} {:>9} {:>8}  level",
        "agent", "tasks", "quality", "earned", "score"
    );
    for (handle, (id, _)) in directory {
        let done: Vec<_> = tally.tasks.iter().filter(|(a, _, _)| a == handle).collect();
        let scores: Vec<f64> = done.iter().filter_map(|(_, _, q)| *q).collect();
        let quality = if scores.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1}", scores.iter().sum::<f64>() / scores.len() as f64)
        };
        let rep = public.reputation(&id.to_string()).await?;
        let earned = earned_by(&public, *id).await?;
        println!(
            "{handle:<15} {:>5} {quality:>8} {:>9} {:>8}  {}",
            done.len(),
            earned.to_string(),
            rep.score.to_string(),
            rep.level
        );
    }
    println!();
    for (agent, title, _) in &tally.tasks {
        println!("  {agent:<15} did \"{title}\"");
    }
    println!(
        "messages: {} sent end-to-end encrypted, {} received and decrypted",
        tally.messages_sent, tally.messages_read
    );
    Ok(())
}

/// What an agent was paid: the payouts in its public work history.
async fn earned_by(client: &Client, agent: Uuid) -> anyhow::Result<Decimal2> {
    let (status, body) = client
        .request(
            nervix_client::Method::GET,
            &format!("/v1/agents/{agent}/history?limit=200"),
            None,
        )
        .await?;
    if status != 200 {
        bail!("work history of {agent}: HTTP {status}");
    }
    let cents = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["payout"].as_str()?.parse::<Decimal2>().ok())
        .map(Decimal2::cents)
        .sum();
    Ok(Decimal2::from_cents(cents))
}

struct DemoAgent {
    persona: &'static Persona,
    keys: AgentKeys,
    client: Client,
    directory: Arc<BTreeMap<String, (Uuid, String)>>,
    reports: mpsc::UnboundedSender<Report>,
}

impl DemoAgent {
    async fn run(self, mut events: EventStream, stop: CancellationToken) {
        let mut poll = tokio::time::interval(POLL_EVERY);
        let refused = Mutex::new(std::collections::HashSet::new());
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = poll.tick() => {
                    let query = TaskQuery { status: Some(TaskStatus::Available), eligible: Some(true), ..Default::default() };
                    if let Ok(page) = self.client.tasks(&query).await {
                        for t in page.items {
                            if !refused.lock().contains(&t.id) {
                                self.work_on(t.id, &refused).await;
                            }
                        }
                    }
                }
                event = events.next() => match event {
                    Some(Ok(ev)) => match ev.event {
                        ServerEvent::TaskAvailable(offer) => self.work_on(offer.task_id, &refused).await,
                        ServerEvent::Message(m) => self.read_message(&m),
                        _ => {}
                    },
                    Some(Err(_)) | None => break,
                },
            }
        }
        events.close().await;
    }

    async fn work_on(&self, task_id: Uuid, refused: &Mutex<std::collections::HashSet<Uuid>>) {
        let claim = match self.client.claim(task_id, &ClaimRequest::default()).await {
            Ok(c) => c,
            Err(e) => {
                if e.status() == Some(403) {
                    refused.lock().insert(task_id);
                }
                return;
            }
        };
        let task = claim.task;
        let me = self.persona.handle.to_owned();
        let _ = self.reports.send(Report::Claimed {
            agent: me.clone(),
            title: task.title.clone(),
        });
        let answer = answer(&task, self.persona.skill);
        let Ok(submitted) = self.client.submit(task.id, &answer, None).await else {
            let _ = self.client.release(task.id).await;
            return;
        };
        let s = submitted.submission;
        let _ = self.reports.send(Report::Submitted {
            agent: me.clone(),
            title: task.title.clone(),
            status: s.status.to_string(),
            quality: s.quality_score,
        });
        if s.status.to_string() == "accepted" {
            self.tell(&format!(
                "I finished \"{}\"; it is yours to build on.",
                task.title
            ))
            .await;
        }
    }

    /// Sends an end-to-end encrypted note to the agent this persona hands work on to.
    async fn tell(&self, text: &str) {
        let Some((_, their_key)) = self.directory.get(self.persona.tells) else {
            return;
        };
        let Ok(sealed) = self.keys.seal_for(their_key, text.as_bytes()) else {
            return;
        };
        let message = SendMessage::encrypted_to(self.persona.tells, sealed);
        if self.client.send_message(&message, None).await.is_ok() {
            let _ = self.reports.send(Report::Message {
                from: self.persona.handle.to_owned(),
                to: self.persona.tells.to_owned(),
                text: text.to_owned(),
            });
        }
    }

    fn read_message(&self, m: &nervix_client::Message) {
        let sender = self
            .directory
            .iter()
            .find(|(handle, (id, _))| m.from == **handle || m.from == id.to_string());
        let (Some((_, (_, sender_key))), Some(nonce)) = (sender, m.nonce.as_deref()) else {
            return;
        };
        if let Ok(plain) = self.keys.open_from(sender_key, &m.payload, nonce) {
            let me = self.persona.handle.to_owned();
            let _ = self.reports.send(Report::Message {
                from: me.clone(),
                to: me,
                text: String::from_utf8_lossy(&plain).into_owned(),
            });
        }
    }
}

/// The sample workflow: research feeds a dataset and a script, which feed a report.
fn sample_workflow() -> NewWorkflow {
    let task = |key: &str,
                title: &str,
                description: &str,
                caps: &[&str],
                kind: TaskKind,
                deps: &[&str]| {
        NewWorkflowTask {
            key: key.to_owned(),
            task: NewTask {
                title: title.to_owned(),
                description: description.to_owned(),
                requirements: Requirements {
                    capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
                    min_reputation: None,
                },
                reward: Decimal2::from_cents(2_500),
                complexity: Complexity::Simple,
                deadline: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
                kind: Some(kind),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
                ..NewTask::default()
            },
        }
    };
    let mut dataset = task(
        "dataset",
        "Tabulate market shares",
        "Turn the research notes into a JSON table of regions and their market share.",
        &["data"],
        TaskKind::Json,
        &["research"],
    );
    dataset.task.output_schema = Some(json!({
        "type": "object",
        "required": ["regions"],
        "properties": {"regions": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "share"],
            "properties": {"name": {"type": "string"}, "share": {"type": "number"}}}}}
    }));
    let mut script = task(
        "script",
        "Write the share calculator",
        "A Python function that turns unit sales per region into market shares.",
        &["coding"],
        TaskKind::Code,
        &["research"],
    );
    script.task.language = Some("python".to_owned());
    NewWorkflow {
        name: "Quarterly market brief".to_owned(),
        tasks: vec![
            task(
                "research",
                "Research the market",
                "Collect the facts a market brief needs: regions, demand, competitors.",
                &["research"],
                TaskKind::Text,
                &[],
            ),
            dataset,
            script,
            task(
                "report",
                "Write the market brief",
                "A markdown brief from the dataset and the calculator's results.",
                &["writing"],
                TaskKind::Markdown,
                &["dataset", "script"],
            ),
        ],
    }
}

/// The demo agents' "work": answers written to pass the automated checks, more thorough the
/// more skilled the agent.
fn answer(task: &Task, skill: usize) -> SubmitRequest {
    const FACTS: [&str; 6] = [
        "Demand in the northern region grew steadily through the quarter, led by small businesses replacing older equipment.",
        "The southern market stayed flat because two large buyers postponed their orders until next year.",
        "Three competitors cut prices in October, yet none of them gained a meaningful share from it.",
        "Online orders now account for almost half of all unit sales, up from a third a year ago.",
        "Customer surveys point to delivery speed, not price, as the main reason for switching suppliers.",
        "Inventory levels are healthy across every warehouse, so supply should not limit growth next quarter.",
    ];
    let sentences = (2 * skill).clamp(2, FACTS.len());
    match task.kind {
        // The least careful agent forgets a field the schema requires: the check rejects it and
        // the task goes back to someone else.
        TaskKind::Json if skill == 1 => SubmitRequest::json(json!({"regions": [
            {"name": "north", "share": 0.42},
            {"name": "south"}
        ]})),
        TaskKind::Json => SubmitRequest::json(json!({"regions": [
            {"name": "north", "share": 0.42},
            {"name": "south", "share": 0.31},
            {"name": "online", "share": 0.27}
        ]})),
        TaskKind::Code => SubmitRequest::text(
            "def market_shares(sales):\n    \"\"\"Return each region's share of total unit sales.\"\"\"\n    total = sum(sales.values())\n    if total == 0:\n        return {region: 0.0 for region in sales}\n    return {region: units / total for region, units in sales.items()}\n",
        ),
        TaskKind::Markdown => {
            let body: Vec<&str> = FACTS.iter().copied().take(sentences).collect();
            SubmitRequest::text(format!(
                "# Quarterly market brief\n\n## Findings\n\n{}\n\n## Next steps\n\n- Expand online ordering and delivery options.\n- Revisit the southern accounts early next quarter.\n",
                body.join(" ")
            ))
        }
        _ => {
            let body: Vec<&str> = FACTS.iter().copied().take(sentences).collect();
            SubmitRequest::text(body.join(" "))
        }
    }
}

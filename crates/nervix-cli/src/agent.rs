//! `nervix agent`: enroll an agent, log in again, show who we are and how we are doing.
//!
//! The agent's state lives in a small JSON file (server, identity, key path, token) written
//! with mode 0600 (see `profile.rs`), so later commands need no flags and the token never
//! passes through a command line or the terminal.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use nervix_client::{
    Agent, AgentKeys, Client, CreateTokenRequest, Earnings, EnrollRequest, Reputation, Task,
    TaskQuery, TaskStatus, TokenResponse,
};
use serde::Serialize;

use crate::keygen::create_private_parent;
use crate::output::{clip, opt_time, print_json, rfc3339, Format, Table};
use crate::profile::{
    client_for, load_config, save_config, AgentConfig, CaFileArg, ConfigArg, ConnectArgs,
};

#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Enroll a new agent: sign the server's challenge with the agent key and save the token.
    Enroll(EnrollArgs),
    /// Get a fresh token for the saved agent by signing a login challenge.
    Login(ConfigArg),
    /// Show the saved agent's profile (`GET /v1/agents/me`).
    Whoami(ConnectArgs),
    /// Sign a login challenge (as the web sign-in page shows it) with the agent key and print
    /// the signature to paste back. Only login challenges are signed: a key that signed any
    /// text it was handed could be made to sign an enrollment or a message.
    SignChallenge(SignChallengeArgs),
    /// Work as a federated agent: claim offered tasks and run a command for each.
    Run(crate::agent_run::RunArgs),
    /// The agent at a glance: profile, reputation, earnings and the tasks it holds.
    Status(StatusArgs),
    /// Mint a narrower token for the saved agent (least privilege), e.g. read-only for a
    /// dashboard or a monitoring script: `--scope profile:read --scope tasks:read`. Prints
    /// the token (last word of the output); the saved token is not changed.
    Token(TokenArgs),
}

#[derive(clap::Args)]
pub struct TokenArgs {
    /// A scope the token keeps (repeatable): profile:read, profile:write, tasks:read,
    /// tasks:work, tasks:post, reviews, money:read, money:withdraw, messages, notifications,
    /// events, admin.
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// Seconds until it expires [default: the login token lifetime, 90 days].
    #[arg(long)]
    expires_in: Option<i64>,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    format: Format,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    format: Format,
}

#[derive(clap::Args)]
pub struct SignChallengeArgs {
    /// The challenge text exactly as shown, `nervix-auth-v1:<id>:<nonce>`.
    challenge: String,
    /// Agent key file [default: the saved profile's key].
    #[arg(long)]
    key: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(clap::Args)]
pub struct EnrollArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "NERVIX_SERVER")]
    server: String,
    /// The agent's handle: 3-64 characters of a-z, 0-9, `.`, `_`, `-`.
    #[arg(long)]
    agent_id: String,
    /// Comma-separated capabilities, e.g. coding,research.
    #[arg(long, value_delimiter = ',', required = true)]
    capabilities: Vec<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Agent key file; a new key is generated there if it does not exist.
    /// [default: <config dir>/<agent-id>.key]
    #[arg(long)]
    key: Option<PathBuf>,
    #[arg(long)]
    max_concurrent_tasks: Option<u32>,
    /// Replace an existing agent config file (its token is lost; the key file is kept).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    ca_file: CaFileArg,
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Enroll(args) => enroll(args).await,
        AgentCommand::Login(config) => login(&config.resolve()?).await,
        AgentCommand::Whoami(connect) => whoami(&connect).await,
        AgentCommand::SignChallenge(args) => sign_challenge(args),
        AgentCommand::Status(args) => status(args).await,
        AgentCommand::Run(args) => crate::agent_run::run(args).await,
        AgentCommand::Token(args) => token(args).await,
    }
}

async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let connected = args.connect.connect()?;
    let request = CreateTokenRequest {
        scopes: args.scopes,
        expires_in: args.expires_in,
    };
    let created = connected.client.create_token(&request).await;
    connected.finish()?;
    let created = created.context("cannot mint the token")?;
    if args.format.json {
        return print_json(&created);
    }
    println!("scopes   {}", created.scopes.join(" "));
    println!("expires  {}", rfc3339(created.expires_at));
    println!("{}", created.token);
    Ok(())
}

async fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let config_path = args.config.resolve()?;
    // Checked before enrolling: discovering it afterwards would leave an enrolled agent whose
    // token we could not save.
    if config_path.exists() && !args.force {
        bail!(
            "{} already exists (another agent's token?); pass --force to replace it or --config to use another file",
            config_path.display()
        );
    }
    let key_path = match args.key {
        Some(path) => path,
        None => config_path.with_file_name(format!("{}.key", args.agent_id)),
    };
    let keys = load_or_create_key(&key_path)?;
    // Stored absolute so `login` works from any directory.
    let key_path = std::path::absolute(&key_path)
        .with_context(|| format!("cannot resolve {}", key_path.display()))?;

    let ca_file = match args.ca_file.path {
        // Stored absolute so later commands find it from any directory.
        Some(path) => Some(
            std::path::absolute(&path)
                .with_context(|| format!("cannot resolve {}", path.display()))?,
        ),
        None => None,
    };
    let mut client = client_for(&args.server, ca_file.as_deref())?;
    let mut request = EnrollRequest::new(&args.agent_id, &keys).capabilities(args.capabilities);
    request.agent_name = args.name;
    request.max_concurrent_tasks = args.max_concurrent_tasks;
    let token = client
        .enroll(&keys, &request)
        .await
        .context("enrollment failed")?;

    let config = AgentConfig {
        server: args.server,
        agent_id: token.agent.agent_id.clone(),
        agent_uuid: token.agent.id,
        key_path,
        token: token.token.clone(),
        expires_at: token.expires_at,
        ca_file,
    };
    save_config(&config_path, &config)?;
    println!("enrolled {} as {}", config.agent_id, config.agent_uuid);
    println!("key:   {}", config.key_path.display());
    println!(
        "token: saved to {} (expires {})",
        config_path.display(),
        rfc3339(config.expires_at)
    );
    Ok(())
}

async fn login(config_path: &Path) -> anyhow::Result<()> {
    let mut config = load_config(config_path)?;
    let keys = AgentKeys::load(&config.key_path)?;
    let mut client = client_for(&config.server, config.ca_file.as_deref())?;
    let token: TokenResponse = client
        .authenticate(&keys, &config.agent_id)
        .await
        .context("login failed")?;
    config.token = token.token.clone();
    config.expires_at = token.expires_at;
    config.agent_uuid = token.agent.id;
    save_config(config_path, &config)?;
    println!(
        "logged in as {} ({}); token saved to {} (expires {})",
        config.agent_id,
        config.agent_uuid,
        config_path.display(),
        rfc3339(config.expires_at)
    );
    Ok(())
}

fn sign_challenge(args: SignChallengeArgs) -> anyhow::Result<()> {
    let challenge = args.challenge.trim();
    if !challenge.starts_with("nervix-auth-v1:") || challenge.split(':').count() != 3 {
        bail!("not a login challenge (expected nervix-auth-v1:<id>:<nonce>); refusing to sign it");
    }
    let key_path = match args.key {
        Some(path) => path,
        None => load_config(&args.config.resolve()?)?.key_path,
    };
    let keys = AgentKeys::load(&key_path)?;
    println!("{}", keys.sign_challenge(challenge));
    Ok(())
}

async fn whoami(connect: &ConnectArgs) -> anyhow::Result<()> {
    let connected = connect.connect()?;
    let me = connected
        .client
        .me()
        .await
        .context("cannot read the agent's profile");
    let server = connected.client.base_url().to_string();
    let until = connected.client.token_expires_at();
    connected.finish()?;
    let me = me?;
    let role = me.role.map_or_else(|| "?".to_owned(), |r| r.to_string());
    let earnings = me
        .total_earnings
        .map_or_else(|| "?".to_owned(), |e| e.to_string());
    println!("id           {}", me.id);
    println!("agent_id     {}", me.agent_id);
    println!("name         {}", me.agent_name.as_deref().unwrap_or("-"));
    println!("role         {role}");
    println!(
        "reputation   {} ({})",
        me.reputation_score, me.reputation_level
    );
    println!("completed    {} tasks", me.total_tasks_completed);
    println!("earnings     {earnings}");
    println!("capabilities {}", me.capabilities.join(", "));
    println!("online       {}", me.online);
    println!("server       {server}");
    println!("token until  {}", opt_time(until));
    Ok(())
}

/// `nervix agent status --json`.
#[derive(Serialize)]
struct Status {
    agent: Agent,
    reputation: Reputation,
    earnings: Earnings,
    active_tasks: Vec<Task>,
}

/// How many claimed or submitted tasks `status` looks through for the agent's own: the API
/// has no "assigned to me" filter, so they are picked out of the platform's list.
const ACTIVE_SCAN_LIMIT: usize = 2_000;

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let connected = args.connect.connect()?;
    let result = gather_status(&connected.client).await;
    let server = connected.client.base_url().to_string();
    let until = connected.client.token_expires_at();
    connected.finish()?;
    let status = result?;
    if args.format.json {
        return print_json(&status);
    }
    let Status {
        agent: me,
        reputation: rep,
        earnings: e,
        active_tasks,
    } = status;
    let line = |k: &str, v: String| println!("{k:<13}{v}");
    line("agent", format!("{} ({})", me.agent_id, me.id));
    line("name", me.agent_name.clone().unwrap_or_else(|| "-".into()));
    line(
        "role",
        me.role.map_or_else(|| "?".to_owned(), |r| r.to_string()),
    );
    line(
        "reputation",
        format!(
            "{} ({})  automated {} · success {} · peer {}",
            rep.score, rep.level, rep.layers.automated, rep.layers.success, rep.layers.peer
        ),
    );
    line("completed", format!("{} tasks", me.total_tasks_completed));
    line(
        "earnings",
        format!(
            "balance {} · escrowed {} · pending withdrawals {} · earned {} · withdrawn {}",
            e.balance, e.escrowed, e.pending_withdrawals, e.total_earned, e.total_withdrawn
        ),
    );
    line("capabilities", me.capabilities.join(", "));
    if let Some(config) = &me.config {
        line(
            "available",
            format!(
                "{} (at most {} tasks at once)",
                if config.available { "yes" } else { "no" },
                config.max_concurrent_tasks
            ),
        );
    }
    if me.suspended == Some(true) {
        line("suspended", "yes".into());
    }
    line("online", me.online.to_string());
    line("server", server);
    line("token until", opt_time(until));
    println!();
    if active_tasks.is_empty() {
        println!("no active tasks");
        return Ok(());
    }
    println!("active tasks ({}):", active_tasks.len());
    let mut table = Table::new(&["ID", "STATUS", "REWARD", "LEASE UNTIL", "TITLE"]);
    for t in &active_tasks {
        table.row(vec![
            t.id.to_string(),
            t.status.to_string(),
            t.reward.to_string(),
            opt_time(t.lease_expires_at),
            clip(&t.title, 50),
        ]);
    }
    table.print();
    Ok(())
}

async fn gather_status(client: &Client) -> anyhow::Result<Status> {
    let agent = client
        .me()
        .await
        .context("cannot read the agent's profile")?;
    let id = agent.id.to_string();
    let (reputation, earnings, active_tasks) = tokio::try_join!(
        async {
            client
                .reputation(&id)
                .await
                .context("cannot read the reputation")
        },
        async { client.earnings().await.context("cannot read the earnings") },
        active_tasks(client, agent.id),
    )?;
    Ok(Status {
        agent,
        reputation,
        earnings,
        active_tasks,
    })
}

async fn active_tasks(client: &Client, me: uuid::Uuid) -> anyhow::Result<Vec<Task>> {
    let mut mine = Vec::new();
    for status in [TaskStatus::Claimed, TaskStatus::Submitted] {
        let mut pages = client.pages(TaskQuery {
            status: Some(status),
            eligible: Some(false),
            limit: Some(200),
            ..TaskQuery::default()
        });
        let mut seen = 0;
        while let Some(task) = pages.try_next().await.context("cannot list tasks")? {
            if task.assigned_agent_id == Some(me) {
                mine.push(task);
            }
            seen += 1;
            if seen == ACTIVE_SCAN_LIMIT {
                break;
            }
        }
    }
    Ok(mine)
}

fn load_or_create_key(path: &Path) -> anyhow::Result<AgentKeys> {
    if path.exists() {
        return Ok(AgentKeys::load(path)?);
    }
    create_private_parent(path)?;
    let keys = AgentKeys::generate();
    // Saved before enrolling so the key of a successfully enrolled agent can never be lost.
    keys.save(path)?;
    eprintln!("generated a new agent key at {}", path.display());
    Ok(keys)
}

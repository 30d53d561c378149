//! `nervix agent`: enroll an agent, log in again, show who we are.
//!
//! The agent's state lives in a small JSON file (server, identity, key path, token) written
//! with mode 0600, so later commands need no flags and the token never passes through a
//! command line or the terminal.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use nervix_client::{AgentKeys, Client, ClientError, EnrollRequest, TokenResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keygen::create_private_parent;

#[derive(clap::Subcommand)]
pub enum AgentCommand {
    /// Enroll a new agent: sign the server's challenge with the agent key and save the token.
    Enroll(EnrollArgs),
    /// Get a fresh token for the saved agent by signing a login challenge.
    Login(ConfigArg),
    /// Show the saved agent's profile (`GET /v1/agents/me`).
    Whoami(ConfigArg),
    /// Work as a federated agent: claim offered tasks and run a command for each.
    Run(crate::agent_run::RunArgs),
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
}

#[derive(clap::Args)]
pub struct ConfigArg {
    /// Agent config file. [default: ~/.config/nervix/agent.json]
    #[arg(long = "config", env = "NERVIX_AGENT_CONFIG", value_name = "PATH")]
    path: Option<PathBuf>,
}

impl ConfigArg {
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.path {
            return Ok(path.clone());
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
            .context(
                "cannot locate a config directory (no $XDG_CONFIG_HOME or $HOME); pass --config",
            )?;
        Ok(base.join("nervix").join("agent.json"))
    }
}

/// What `nervix agent enroll` leaves behind for the other commands.
#[derive(Serialize, Deserialize)]
pub(crate) struct AgentConfig {
    pub(crate) server: String,
    pub(crate) agent_id: String,
    pub(crate) agent_uuid: Uuid,
    pub(crate) key_path: PathBuf,
    pub(crate) token: String,
    pub(crate) expires_at: DateTime<Utc>,
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Enroll(args) => enroll(args).await,
        AgentCommand::Login(config) => login(&config.resolve()?).await,
        AgentCommand::Whoami(config) => whoami(&config.resolve()?).await,
        AgentCommand::Run(args) => crate::agent_run::run(args).await,
    }
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

    let mut client = Client::new(&args.server)?;
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
    let mut client = Client::new(&config.server)?;
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

async fn whoami(config_path: &Path) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    let client = Client::new(&config.server)?.with_token(config.token.as_str());
    let me = match client.me().await {
        Ok(me) => me,
        Err(e @ ClientError::Api { status: 401, .. }) => {
            return Err(anyhow::Error::new(e)
                .context("the saved token was rejected; run `nervix agent login` for a new one"))
        }
        Err(e) => return Err(e.into()),
    };
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
    println!("server       {}", config.server);
    println!("token until  {}", rfc3339(config.expires_at));
    Ok(())
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
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

pub(crate) fn load_config(path: &Path) -> anyhow::Result<AgentConfig> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the agent config {} (run `nervix agent enroll` first?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid agent config", path.display()))
}

/// Writes the config (it holds a bearer token) with mode 0600, replacing any previous file
/// atomically so an interrupted write never leaves a truncated config behind.
pub(crate) fn save_config(path: &Path, config: &AgentConfig) -> anyhow::Result<()> {
    create_private_parent(path)?;
    let mut body = serde_json::to_vec_pretty(config)?;
    body.push(b'\n');
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", Uuid::new_v4().simple()));
    let tmp = path.with_file_name(tmp_name);

    let written = write_new_private(&tmp, &body).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

fn write_new_private(path: &Path, body: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(body)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip_is_private() {
        let dir = std::env::temp_dir().join(format!("nervix-cli-test-{}", Uuid::new_v4()));
        let path = dir.join("nested").join("agent.json");
        let config = AgentConfig {
            server: "http://127.0.0.1:8080".into(),
            agent_id: "alpha".into(),
            agent_uuid: Uuid::new_v4(),
            key_path: "/tmp/alpha.key".into(),
            token: "t1".into(),
            expires_at: Utc::now(),
        };
        save_config(&path, &config).unwrap();
        let again = AgentConfig {
            token: "t2".into(),
            ..config
        };
        save_config(&path, &again).unwrap();
        let loaded = load_config(&path).unwrap();
        assert_eq!(loaded.token, "t2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir_mode = fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}

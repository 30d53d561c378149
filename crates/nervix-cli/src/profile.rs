//! Where the commands that talk to a server find it and their credentials.
//!
//! `nervix agent enroll` leaves a profile behind: a small JSON file (mode 0600) with the server,
//! the agent's identity, its key file and its token, by default `~/.config/nervix/agent.json`
//! (`--config` / `NERVIX_AGENT_CONFIG` for another). Every other command reads it:
//!
//! - the server is `--server` / `NERVIX_SERVER`, else the profile's;
//! - the token is `NERVIX_TOKEN` (e.g. an operator's admin token; never a flag, so it stays out
//!   of process listings), else the profile's. With the profile's token the SDK renews it
//!   with the profile's key before it expires, and the command saves the new one back;
//! - an `https://` server is verified against the public roots, plus the CA in `--ca-file` /
//!   `NERVIX_CA_FILE`, else the profile's (saved by `enroll` when given there).

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};
use nervix_client::{AgentKeys, Client, Trust};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keygen::create_private_parent;

/// `--config`: the profile file.
#[derive(clap::Args, Clone)]
pub struct ConfigArg {
    /// Agent profile (server, identity, key path, token). [default: ~/.config/nervix/agent.json]
    #[arg(
        long = "config",
        env = "NERVIX_AGENT_CONFIG",
        value_name = "PATH",
        global = true
    )]
    path: Option<PathBuf>,
}

impl ConfigArg {
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
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

/// `--ca-file`: a private CA to trust besides the public ones.
#[derive(clap::Args, Clone, Default)]
pub struct CaFileArg {
    /// PEM file of a CA that signed the server's certificate (a private deployment), trusted
    /// besides the public roots. [default: the profile's]
    // An id of its own: `ConfigArg`'s field is also `path`, and clap ids must be unique.
    #[arg(
        id = "ca_file",
        long = "ca-file",
        env = "NERVIX_CA_FILE",
        value_name = "FILE",
        global = true
    )]
    pub path: Option<PathBuf>,
}

/// A client for `server` trusting `ca_file` (if any) besides the public roots.
pub fn client_for(server: &str, ca_file: Option<&Path>) -> anyhow::Result<Client> {
    let trust = match ca_file {
        Some(path) => Trust::with_ca_file(path)?,
        None => Trust::default(),
    };
    Ok(Client::with_trust(server, trust)?)
}

/// What `nervix agent enroll` leaves behind for the other commands.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentConfig {
    pub server: String,
    pub agent_id: String,
    pub agent_uuid: Uuid,
    pub key_path: PathBuf,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// The private CA the server's certificate was verified with at enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// How a command reaches the server: `--server`, `--config`, `NERVIX_TOKEN`.
#[derive(clap::Args, Clone)]
pub struct ConnectArgs {
    /// Server base URL, e.g. http://127.0.0.1:8080. [default: the profile's]
    #[arg(long, env = "NERVIX_SERVER", global = true)]
    server: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    ca_file: CaFileArg,
}

/// A client ready for a command, and the profile to update if its token is renewed.
pub struct Connected {
    pub client: Client,
    /// The profile's agent, when the command acts with the profile's token.
    pub agent: Option<AgentConfig>,
    profile_path: Option<PathBuf>,
}

impl ConnectArgs {
    pub fn connect(&self) -> anyhow::Result<Connected> {
        let path = self.config.resolve()?;
        let env_token = std::env::var("NERVIX_TOKEN").ok().filter(|t| !t.is_empty());
        let profile = if path.exists() {
            Some(load_config(&path)?)
        } else {
            None
        };
        let server = self
            .server
            .clone()
            .or_else(|| profile.as_ref().map(|p| p.server.clone()));
        let Some(server) = server else {
            bail!(
                "no server: pass --server (or set NERVIX_SERVER), or enroll with `nervix agent enroll` (no profile at {})",
                path.display()
            );
        };
        let ca_file = self
            .ca_file
            .path
            .clone()
            .or_else(|| profile.as_ref().and_then(|p| p.ca_file.clone()));
        let client = client_for(&server, ca_file.as_deref())?;
        if let Some(token) = env_token {
            return Ok(Connected {
                client: client.with_token(token),
                agent: None,
                profile_path: None,
            });
        }
        let Some(profile) = profile else {
            bail!(
                "no credentials: set NERVIX_TOKEN, or enroll with `nervix agent enroll` (no profile at {})",
                path.display()
            );
        };
        let mut client = client.with_token(profile.token.clone());
        // Without its key the saved token is used as it is until it expires.
        if let Ok(keys) = AgentKeys::load(&profile.key_path) {
            client.set_signing_key(Arc::new(keys), profile.agent_id.clone());
        }
        Ok(Connected {
            client,
            agent: Some(profile),
            profile_path: Some(path),
        })
    }
}

impl Connected {
    /// Saves a token the client renewed during the command back to the profile.
    pub fn finish(self) -> anyhow::Result<()> {
        let (Some(path), Some(mut profile)) = (self.profile_path, self.agent) else {
            return Ok(());
        };
        match self.client.token() {
            Some(token) if token != profile.token => {
                profile.token = token;
                if let Some(at) = self.client.token_expires_at() {
                    profile.expires_at = at;
                }
                save_config(&path, &profile)
            }
            _ => Ok(()),
        }
    }
}

pub fn load_config(path: &Path) -> anyhow::Result<AgentConfig> {
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
pub fn save_config(path: &Path, config: &AgentConfig) -> anyhow::Result<()> {
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
            ca_file: None,
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

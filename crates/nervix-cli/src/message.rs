//! `nervix message send|history`: end-to-end encrypted direct messages (and plain channel
//! messages) with the profile's agent key. The server only ever sees ciphertext of direct
//! messages; this command seals before sending and opens after reading, locally.

use std::collections::HashMap;
use std::io::Read as _;

use anyhow::{bail, Context as _};
use nervix_client::{
    new_idempotency_key, AgentKeys, Client, Message, MessageHistoryQuery, SendMessage,
};
use serde::Serialize;
use uuid::Uuid;

use crate::output::{print_json, rfc3339, Format, Table};
use crate::profile::{AgentConfig, ConnectArgs};

#[derive(clap::Args)]
pub struct MessageArgs {
    #[command(subcommand)]
    command: MessageCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    format: Format,
}

#[derive(clap::Subcommand)]
enum MessageCommand {
    /// Send a message: to an agent, sealed with `crypto_box` for its encryption key; or to a
    /// channel, in the clear (`--plain`: channel members share no key).
    Send(SendArgs),
    /// Show a conversation with an agent, or a channel's messages, decrypted; newest last.
    History(HistoryArgs),
}

#[derive(clap::Args)]
#[group(id = "target", required = true, multiple = false)]
struct Target {
    /// The recipient, or the other party of the conversation (UUID or handle).
    #[arg(long, group = "target")]
    to: Option<String>,
    /// A channel you are a member of.
    #[arg(long, group = "target")]
    channel: Option<Uuid>,
}

#[derive(clap::Args)]
struct SendArgs {
    #[command(flatten)]
    target: Target,
    /// The text to send; read from stdin when absent or `-`.
    text: Option<String>,
    /// Send unencrypted. Required for a channel, refused nowhere: the server stores and shows
    /// the bytes as they are.
    #[arg(long)]
    plain: bool,
    /// Retrying with the same key sends the message once.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(clap::Args)]
struct HistoryArgs {
    #[command(flatten)]
    target: Target,
    /// How many messages (the newest).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: u32,
    /// Older messages: the `next_cursor` a previous `--json` run printed.
    #[arg(long)]
    before: Option<String>,
}

pub async fn run(args: MessageArgs) -> anyhow::Result<()> {
    let connected = args.connect.connect()?;
    let keys = agent_keys(connected.agent.as_ref())?;
    let result = match args.command {
        MessageCommand::Send(send) => send_message(&connected.client, &keys, send, args.format)
            .await
            .context("cannot send the message"),
        MessageCommand::History(history) => {
            show_history(&connected.client, &keys, history, args.format)
                .await
                .context("cannot read the history")
        }
    };
    connected.finish()?;
    result
}

/// Messages are sealed and opened with the profile's key, so these commands act as the
/// profile's agent only (an operator's `NERVIX_TOKEN` holds no encryption key).
fn agent_keys(profile: Option<&AgentConfig>) -> anyhow::Result<AgentKeys> {
    let Some(profile) = profile else {
        bail!(
            "messages are encrypted with the agent's key: use an enrolled profile (`nervix agent \
             enroll`), not NERVIX_TOKEN"
        );
    };
    AgentKeys::load(&profile.key_path)
        .with_context(|| format!("cannot load the agent key {}", profile.key_path.display()))
}

async fn send_message(
    client: &Client,
    keys: &AgentKeys,
    args: SendArgs,
    format: Format,
) -> anyhow::Result<()> {
    let text = match args.text.as_deref() {
        None | Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the message from stdin")?;
            text
        }
        Some(text) => text.to_owned(),
    };
    let key = args.idempotency_key.unwrap_or_else(new_idempotency_key);
    let sent = match (args.target.to, args.target.channel) {
        (Some(to), _) if args.plain => {
            client
                .send_message(&SendMessage::plain_to(to, text.as_bytes()), Some(&key))
                .await?
        }
        (Some(to), _) => {
            client
                .send_sealed(keys, &to, text.as_bytes(), Some(&key))
                .await?
        }
        (None, Some(channel)) if args.plain => {
            client
                .send_message(
                    &SendMessage::plain_to_channel(channel, text.as_bytes()),
                    Some(&key),
                )
                .await?
        }
        (None, Some(_)) => bail!(
            "channel messages cannot be end-to-end encrypted (members share no key); pass \
             --plain to send this one in the clear"
        ),
        (None, None) => unreachable!("clap requires --to or --channel"),
    };
    if format.json {
        print_json(&sent)
    } else {
        println!("sent {} at {}", sent.id, rfc3339(sent.created_at));
        Ok(())
    }
}

/// A message as this command shows it: the envelope and what it says.
#[derive(Serialize)]
struct Opened {
    #[serde(flatten)]
    message: Message,
    /// The decrypted text; `None` when it cannot be opened (see `error`).
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct History {
    items: Vec<Opened>,
    next_cursor: Option<String>,
}

async fn show_history(
    client: &Client,
    keys: &AgentKeys,
    args: HistoryArgs,
    format: Format,
) -> anyhow::Result<()> {
    let mut query = match (&args.target.to, args.target.channel) {
        (Some(to), _) => MessageHistoryQuery::with(to.clone()),
        (None, Some(channel)) => MessageHistoryQuery::channel(channel),
        (None, None) => unreachable!("clap requires --to or --channel"),
    }
    .limit(args.limit);
    query.before = args.before;
    let page = client.message_history(&query).await?;

    let mut peers = PeerKeys::new(client, keys);
    let mut items = Vec::with_capacity(page.items.len());
    // Newest first on the wire; a conversation reads oldest first.
    for message in page.items.into_iter().rev() {
        let opened = match peers.open(&message).await {
            Ok(bytes) => Opened {
                text: Some(String::from_utf8_lossy(&bytes).into_owned()),
                error: None,
                message,
            },
            Err(e) => Opened {
                text: None,
                error: Some(format!("{e:#}")),
                message,
            },
        };
        items.push(opened);
    }
    let history = History {
        items,
        next_cursor: page.next_cursor,
    };
    if format.json {
        return print_json(&history);
    }
    let mut table = Table::new(&["AT", "FROM", "", "TEXT"]);
    for item in &history.items {
        let from = peers.name(&item.message.from);
        let lock = if item.message.encrypted { "🔒" } else { "" };
        let text = match (&item.text, &item.error) {
            (Some(text), _) => text.replace('\n', " "),
            (None, Some(e)) => format!("<cannot open: {e}>"),
            (None, None) => String::new(),
        };
        table.row(vec![
            rfc3339(item.message.created_at),
            from,
            lock.to_owned(),
            text,
        ]);
    }
    if history.items.is_empty() {
        println!("no messages");
    } else {
        table.print();
    }
    if let Some(cursor) = &history.next_cursor {
        println!("older: --before {cursor}");
    }
    Ok(())
}

/// The other parties' encryption keys and handles, each looked up once per command.
struct PeerKeys<'a> {
    client: &'a Client,
    own: &'a AgentKeys,
    /// Agent UUID (as messages name it) → (handle, encryption key).
    known: HashMap<String, (String, Option<String>)>,
}

impl<'a> PeerKeys<'a> {
    fn new(client: &'a Client, own: &'a AgentKeys) -> Self {
        PeerKeys {
            client,
            own,
            known: HashMap::new(),
        }
    }

    async fn lookup(&mut self, agent: &str) -> anyhow::Result<&(String, Option<String>)> {
        if !self.known.contains_key(agent) {
            let found = self
                .client
                .agent(agent)
                .await
                .with_context(|| format!("cannot look up agent {agent}"))?;
            self.known.insert(
                agent.to_owned(),
                (found.agent_id, found.encryption_public_key),
            );
        }
        Ok(&self.known[agent])
    }

    /// The message's bytes. A sealed box is opened with the other party's key: the sender's,
    /// or for a message this agent sent, the recipient's (the box was made for them).
    async fn open(&mut self, message: &Message) -> anyhow::Result<Vec<u8>> {
        // Looked up for plain messages too: the table names every sender.
        let sender_key = self.lookup(&message.from).await?.1.clone();
        if !message.encrypted {
            return Ok(message.open(self.own, "")?);
        }
        let own_key = self.own.encryption_public_key_b64();
        let peer_key = match sender_key {
            Some(key) if key != own_key => key,
            Some(_) => {
                let to = message
                    .to
                    .as_deref()
                    .context("an encrypted message without a recipient")?;
                self.lookup(to)
                    .await?
                    .1
                    .clone()
                    .with_context(|| format!("agent {to} has no encryption key"))?
            }
            None => bail!("agent {} has no encryption key", message.from),
        };
        Ok(message.open(self.own, &peer_key)?)
    }

    /// The sender's handle where it was looked up, marked `(me)` for this agent.
    fn name(&self, agent: &str) -> String {
        match self.known.get(agent) {
            Some((handle, Some(key))) if *key == self.own.encryption_public_key_b64() => {
                format!("{handle} (me)")
            }
            Some((handle, _)) => handle.clone(),
            None => agent.to_owned(),
        }
    }
}

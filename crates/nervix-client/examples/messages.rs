//! Send an end-to-end encrypted message and read the conversation back.
//!
//! ```sh
//! cargo run -p nervix-client --example messages -- http://127.0.0.1:8080 my-agent ./my-agent.key other-agent
//! ```
//!
//! The message is sealed with NaCl `crypto_box` for the recipient's `encryption_public_key`;
//! the server only ever sees ciphertext.

use std::sync::Arc;

use nervix_client::{AgentKeys, Client, MessageHistoryQuery};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(handle), Some(key_path), Some(peer)) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        return Err("usage: messages SERVER AGENT_ID KEY_FILE PEER".into());
    };
    let keys = Arc::new(AgentKeys::load(&key_path)?);
    let mut client = Client::new(&server)?;
    client.login(keys.clone(), &handle).await?;

    let sent = client
        .send_sealed(&keys, &peer, b"hello from the SDK example", None)
        .await?;
    println!("sent {} at {}", sent.id, sent.created_at);

    let history = client
        .message_history(&MessageHistoryQuery::with(&peer).limit(20))
        .await?;
    for message in &history.items {
        let text = client.open_message(&keys, message).await?;
        println!(
            "{} {}: {}",
            message.created_at,
            message.from,
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

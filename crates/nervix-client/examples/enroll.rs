//! Enroll an agent and look at its profile.
//!
//! ```sh
//! cargo run -p nervix-client --example enroll -- http://127.0.0.1:8080 my-agent ./my-agent.key
//! ```
//!
//! The key file is created (mode 0600) if it does not exist. Keep it: it is the agent's
//! identity, and the only way to log in again.

use std::sync::Arc;

use nervix_client::{AgentKeys, Client, EnrollRequest, ReputationHistoryQuery};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let handle = args.next().unwrap_or_else(|| "example-agent".into());
    let key_path = args.next().unwrap_or_else(|| format!("{handle}.key"));

    let keys = match AgentKeys::load(&key_path) {
        Ok(keys) => keys,
        Err(_) => {
            let keys = AgentKeys::generate();
            keys.save(&key_path)?;
            keys
        }
    };
    let keys = Arc::new(keys);

    let mut client = Client::new(&server)?;
    let request = EnrollRequest::new(&handle, &keys)
        .name("An example agent")
        .capabilities(["writing", "research"])
        .max_concurrent_tasks(2);
    let enrolled = client.enroll(&keys, &request).await?;
    // From here on the client renews its token by itself before it expires.
    client.set_signing_key(keys.clone(), &handle);
    println!(
        "enrolled {} as {} (token until {})",
        enrolled.agent.agent_id, enrolled.agent.id, enrolled.expires_at
    );

    let me = client.me().await?;
    println!(
        "reputation {} ({}), capabilities {:?}",
        me.reputation_score, me.reputation_level, me.capabilities
    );
    let history = client
        .reputation_history(&ReputationHistoryQuery::of(&handle))
        .await?;
    println!("{} reputation snapshots so far", history.items.len());
    Ok(())
}

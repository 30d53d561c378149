//! Post a task and list the open ones, page by page.
//!
//! ```sh
//! NERVIX_TOKEN=$(nervix admin create-token | awk '{print $NF}') \
//!     cargo run -p nervix-client --example post_and_list -- http://127.0.0.1:8080
//! ```
//!
//! The token's agent pays the reward into escrow (an admin posts from the treasury).

use futures::TryStreamExt as _;
use nervix_client::{new_idempotency_key, Client, Decimal2, NewTask, TaskQuery, TaskStatus};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let token = std::env::var("NERVIX_TOKEN").map_err(|_| "set NERVIX_TOKEN")?;
    let client = Client::new(&server)?.with_token(token);

    let task = NewTask::new(
        "Summarize the release notes",
        "Three paragraphs for a general audience.",
        "12.50".parse::<Decimal2>()?,
        &["writing"],
    )
    .due_in(chrono::Duration::hours(24));
    // A retry with the same key returns the first response instead of posting twice.
    let posted = client
        .post_task(&task, Some(&new_idempotency_key()))
        .await?;
    println!(
        "posted {} ({}), reward {}",
        posted.id, posted.status, posted.reward
    );

    let query = TaskQuery {
        status: Some(TaskStatus::Available),
        eligible: Some(false),
        limit: Some(50),
        ..TaskQuery::default()
    };
    let open: Vec<_> = client.pages(query).into_stream().try_collect().await?;
    println!("{} open tasks:", open.len());
    for task in open {
        println!("  {}  {:>10}  {}", task.id, task.reward, task.title);
    }
    Ok(())
}

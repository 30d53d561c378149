//! A whole worker: take what the server offers, claim it, answer, submit. Run with
//! `NERVIX_SERVER=http://127.0.0.1:8080 NERVIX_TOKEN=<agent token> cargo run --example worker`.
use nervix_client::{ClaimRequest, Client, ClientError, EventStream, ServerEvent, SubmitRequest};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let server = std::env::var("NERVIX_SERVER").unwrap_or("http://127.0.0.1:8080".into());
    let token = std::env::var("NERVIX_TOKEN")
        .map_err(|_| ClientError::InvalidInput("set NERVIX_TOKEN".into()))?;
    let client = Client::new(&server)?.with_token(token);
    // Reconnects and resumes by itself: every offer arrives once, in order.
    let mut events = EventStream::connect(&server, client.clone(), None).await?;
    while let Some(event) = events.next().await {
        let ServerEvent::TaskAvailable(offer) = event?.event else {
            continue;
        };
        if client
            .claim(offer.task_id, &ClaimRequest::default())
            .await
            .is_ok()
        {
            let answer = format!(
                "A careful answer to \"{}\" would go here, written by a model or a script.",
                offer.title
            );
            let done = client
                .submit(offer.task_id, &SubmitRequest::text(answer), None)
                .await?;
            println!(
                "{}: {} ({:?})",
                offer.title, done.submission.status, done.submission.quality_score
            );
        }
    }
    Ok(())
}

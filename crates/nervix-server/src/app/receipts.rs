//! Signed reputation receipts: portable proof of an agent's track record.
//!
//! Every accepted submission (at the submit, by a reviewer, or by the review deadline) gets
//! one receipt: a compact JWS, signed with the platform's current token-signing key (the key
//! ring's active key), over the RFC 8785 canonical form of `nervix_core::receipt::Receipt`,
//! which anyone verifies offline with `/.well-known/jwks.json`. It is stored as issued and
//! served by `GET /v1/agents/{id}/receipts`, in the A2A artifact of the completed task, and
//! summarised on the agent's A2A card.
//!
//! Receipts are issued by the reputation pass, not on the request path: the acceptance's own
//! transaction records that a receipt is due (a trigger, migration 0016), `accepted` wakes
//! this node's pass, and the pass, which reads the agent's evidence to score it anyway, signs
//! the due receipts from that same read and stores them in one write. So accepting work costs
//! no signature and no evidence read, a crash cannot lose a receipt (the due row outlives it),
//! and a receipt is served a moment (one pass, ~100 ms) after its acceptance.
//!
//! "Reputation after" is the score of the evidence up to and including the accepted work, at
//! the moment it was accepted (`reputation::after`): the score this work led to, whenever the
//! receipt is signed.
//!
//! Key rotation: receipts name their key (`kid`), and a rotation keeps every older key in
//! the JWKS while it may still be needed: a rotation prunes only keys retired longer than the
//! token lifetime (90 days) that signed no receipt (`Store::prune_signing_keys`). So a receipt
//! verifies against the live JWKS for as long as the platform runs, and forever against a
//! JWKS saved with it (`nervix receipt verify --jwks FILE`).

use chrono::{DateTime, SecondsFormat, Utc};
use nervix_core::quality::CheckResult;
use nervix_core::receipt::{
    canonical, protected_header, signing_input, ChecksSummary, Receipt, ReceiptAgent, ReceiptTask,
    ReputationAfter, RECEIPT_ISSUER, RECEIPT_TYP,
};
use nervix_core::{Level, Money, Reputation};
use nervix_store::{
    AgentRecord, DueReceipt, NewReceipt, PageQuery, ReceiptRecord, ReceiptSummary,
    SubmissionRecord, SubmissionStatus,
};
use uuid::Uuid;

use super::{events, App, Error, Result};

/// Signs `payload` (its canonical bytes) with the active key: the compact JWS and its `kid`.
pub fn sign_compact(app: &App, typ: &str, payload: &serde_json::Value) -> Result<(String, String)> {
    let keys = app.keys();
    let key = keys.active();
    let input = signing_input(&protected_header(&key.kid, typ), &canonical(payload));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &key.encoding,
        jsonwebtoken::Algorithm::EdDSA,
    )
    .map_err(Error::internal)?;
    Ok((format!("{input}.{sig}"), key.kid.clone()))
}

/// Work was decided: when it was accepted, its receipt is due and this node's reputation
/// pass is woken to issue it.
pub fn decided(app: &App, s: &SubmissionRecord) {
    if s.status == SubmissionStatus::Accepted {
        app.reputation_pass.notify_one();
    }
}

/// Signs the due receipt of `agent`'s accepted work, stating the reputation it led to.
pub fn sign(
    app: &App,
    agent: &AgentRecord,
    due: &DueReceipt,
    score: Reputation,
    level: Level,
    now: DateTime<Utc>,
) -> Result<NewReceipt> {
    let checks: Vec<CheckResult> = serde_json::from_value(due.checks.clone()).unwrap_or_default();
    let id = Uuid::now_v7();
    let receipt = Receipt {
        iss: RECEIPT_ISSUER.to_owned(),
        jti: id.to_string(),
        iat: now.timestamp(),
        sub: agent.handle.clone(),
        agent: ReceiptAgent {
            handle: agent.handle.clone(),
            public_key: agent.public_key.clone(),
        },
        task: ReceiptTask {
            id: due.task_id.to_string(),
            title: due.task_title.clone(),
        },
        poster: due
            .poster_handle
            .clone()
            .unwrap_or_else(|| due.posted_by.to_string()),
        submission_id: due.submission_id.to_string(),
        quality_score: due.final_score.unwrap_or(due.quality_score),
        checks: ChecksSummary {
            passed: checks.iter().filter(|c| c.passed).count() as u32,
            total: checks.len() as u32,
            names: checks.iter().map(|c| c.name.clone()).collect(),
        },
        reward_paid: Money::from_cents(due.payout_cents.unwrap_or(0)).to_string(),
        completed_at: due.decided_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        reputation_after: ReputationAfter {
            score: score.to_string(),
            level: level.to_string(),
        },
    };
    let payload = serde_json::to_value(&receipt).map_err(Error::internal)?;
    let (jws, kid) = sign_compact(app, RECEIPT_TYP, &payload)?;
    Ok(NewReceipt {
        id,
        submission_id: due.submission_id,
        task_id: due.task_id,
        agent_id: agent.id,
        kid,
        jws,
        created_at: now,
    })
}

/// Stores signed receipts in one write and tells whoever waits for them.
pub async fn store(app: &App, receipts: &[NewReceipt]) -> Result<()> {
    if receipts.is_empty() {
        return Ok(());
    }
    app.store.insert_receipts(receipts).await?;
    events::receipts_issued(app, receipts.iter().map(|r| r.task_id).collect()).await;
    Ok(())
}

/// An agent's receipts, newest first (public).
pub async fn of(app: &App, id_or_handle: &str, q: PageQuery) -> Result<Vec<ReceiptRecord>> {
    let agent = app.find_agent(id_or_handle).await?;
    Ok(app.store.receipts_of(agent.id, &q).await?)
}

pub async fn summary(app: &App, agent: Uuid) -> Result<ReceiptSummary> {
    Ok(app.store.receipt_summary(agent).await?)
}

pub async fn for_task(app: &App, task: Uuid) -> Result<Option<ReceiptRecord>> {
    Ok(app.store.receipt_for_task(task).await?)
}

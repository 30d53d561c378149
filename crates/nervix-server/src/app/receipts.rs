//! Signed reputation receipts: portable proof of an agent's track record.
//!
//! When a submission is accepted (at the submit, by a reviewer, or by the review reaper) the
//! platform signs a receipt with its current token-signing key (the key ring's active key):
//! a compact JWS over the RFC 8785 canonical form of `nervix_core::receipt::Receipt`, which
//! anyone verifies offline with `/.well-known/jwks.json`. It is stored as issued (one per
//! submission) and served by `GET /v1/agents/{id}/receipts`, in the A2A artifact of the
//! completed task, and summarised on the agent's A2A card.
//!
//! "Reputation after" is computed from the agent's evidence right after the acceptance
//! committed (the same maths as the reputation worker, which records it a moment later), so
//! the receipt states the score this work led to, not the one before it.
//!
//! Issuing runs after the acceptance's commit: a crash in between leaves that submission
//! without a receipt (the acceptance and the payout stand). The window is that of the outbox.
//!
//! Key rotation: receipts name their key (`kid`), and a rotation keeps every older key in
//! the JWKS while it may still be needed: a rotation prunes only keys retired longer than the
//! token lifetime (90 days) that signed no receipt (`Store::prune_signing_keys`). So a receipt
//! verifies against the live JWKS for as long as the platform runs, and forever against a
//! JWKS saved with it (`nervix receipt verify --jwks FILE`).

use chrono::{SecondsFormat, Utc};
use nervix_core::quality::CheckResult;
use nervix_core::receipt::{
    canonical, protected_header, signing_input, ChecksSummary, Receipt, ReceiptAgent, ReceiptTask,
    ReputationAfter, RECEIPT_ISSUER, RECEIPT_TYP,
};
use nervix_core::reputation::layers;
use nervix_core::{Level, Money};
use nervix_store::{
    NewReceipt, PageQuery, ReceiptRecord, ReceiptSummary, SubmissionRecord, SubmissionStatus,
    TaskRecord,
};
use uuid::Uuid;

use super::{reputation, App, Error, Result};

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

/// Issues the receipt of an accepted submission (a no-op for any other); once per submission.
pub async fn issue(
    app: &App,
    s: &SubmissionRecord,
    task: &TaskRecord,
) -> Result<Option<ReceiptRecord>> {
    if s.status != SubmissionStatus::Accepted {
        return Ok(None);
    }
    let agent = app
        .store
        .agent(s.agent_id)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    let poster = app
        .store
        .agent(task.posted_by)
        .await?
        .map(|p| p.handle)
        .unwrap_or_else(|| task.posted_by.to_string());
    let evidence = app.store.reputation_evidence(agent.id).await?;
    let now = Utc::now();
    let score = layers(&reputation::evidence(&evidence), now).score();
    // This acceptance counts towards the level, whether or not the counter has caught up.
    let level = Level::of(score, agent.tasks_completed.max(1));
    let checks: Vec<CheckResult> = serde_json::from_value(s.checks.clone()).unwrap_or_default();
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
            id: task.id.to_string(),
            title: task.title.clone(),
        },
        poster,
        submission_id: s.id.to_string(),
        quality_score: s.final_score.unwrap_or(s.quality_score),
        checks: ChecksSummary {
            passed: checks.iter().filter(|c| c.passed).count() as u32,
            total: checks.len() as u32,
            names: checks.iter().map(|c| c.name.clone()).collect(),
        },
        reward_paid: Money::from_cents(s.payout_cents.unwrap_or(0)).to_string(),
        completed_at: s
            .decided_at
            .unwrap_or(now)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
        reputation_after: ReputationAfter {
            score: score.to_string(),
            level: level.to_string(),
        },
    };
    let payload = serde_json::to_value(&receipt).map_err(Error::internal)?;
    let (jws, kid) = sign_compact(app, RECEIPT_TYP, &payload)?;
    let stored = app
        .store
        .insert_receipt(&NewReceipt {
            id,
            submission_id: s.id,
            task_id: task.id,
            agent_id: agent.id,
            kid,
            jws,
            created_at: now,
        })
        .await?;
    Ok(Some(stored))
}

/// Issues a receipt after an acceptance, logging (not failing) when it cannot: the acceptance
/// and its payout have committed already.
pub async fn after_decision(app: &App, s: &SubmissionRecord, task: &TaskRecord) {
    if let Err(e) = issue(app, s, task).await {
        tracing::warn!(submission = %s.id, error = %e, "receipt not issued");
    }
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

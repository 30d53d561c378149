//! Reputation: recomputing agents' scores when their evidence changes, issuing the receipts
//! of accepted work, and reading scores and histories.
//!
//! Evidence is written by other operations (a submission decided, a review, a task released
//! or lost), each of which bumps the agent's evidence version in its own transaction (and,
//! for accepted work, records that its receipt is due). The pass (a background worker on
//! every node, woken early by an acceptance) reads each such agent's evidence once, outside
//! any transaction, computes the layers with `nervix_core::reputation`, records the result
//! only if no newer evidence arrived meanwhile (an update can be late, never lost), and signs
//! the agent's due receipts from the same evidence, stored in one write per pass.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use nervix_core::reputation::{layers, Evidence, PeerReview, TaskEvidence, TaskOutcome};
use nervix_core::{Level, Reputation};
use nervix_store::{
    AgentRecord, DueReceipt, EvidenceRecords, HistoryEntry, PageQuery, ReputationSnapshot,
    ReputationUpdate, StaleReputation, WorkOutcome,
};
use uuid::Uuid;

use super::{events, notifications, receipts, App, Error, Result};
use crate::bus::Frame;

/// One pass over up to `limit` agents whose evidence changed and up to `limit` due receipts;
/// `true` when either batch came back full (more is waiting: run again at once).
pub async fn pass(app: &App, limit: i64) -> Result<bool> {
    let stale = app.store.stale_reputations(limit).await?;
    let due = app.store.receipts_due(limit).await?;
    let full = stale.len() as i64 == limit || due.len() as i64 == limit;
    let mut due_of: HashMap<Uuid, Vec<DueReceipt>> = HashMap::new();
    for d in due {
        due_of.entry(d.agent_id).or_default().push(d);
    }
    let mut signed = Vec::new();
    for s in stale {
        let evidence = evidence_of(app, s.agent_id).await?;
        if let Some(due) = due_of.remove(&s.agent_id) {
            signed.extend(sign_receipts(app, s.agent_id, &evidence, &due).await?);
        }
        recompute(app, &s, &evidence).await?;
    }
    // Acceptances that committed after the stale agents were read, or agents another node
    // scored first: their receipts are due all the same.
    for (agent, due) in due_of {
        let evidence = evidence_of(app, agent).await?;
        signed.extend(sign_receipts(app, agent, &evidence, &due).await?);
    }
    receipts::store(app, &signed).await?;
    Ok(full)
}

/// The agent's stored evidence as the reputation maths takes it.
async fn evidence_of(app: &App, agent: Uuid) -> Result<Evidence> {
    Ok(evidence(&app.store.reputation_evidence(agent).await?))
}

async fn sign_receipts(
    app: &App,
    agent: Uuid,
    evidence: &Evidence,
    due: &[DueReceipt],
) -> Result<Vec<nervix_store::NewReceipt>> {
    let agent = app
        .store
        .agent(agent)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    let now = Utc::now();
    due.iter()
        .map(|d| {
            let (score, level) = after(evidence, agent.tasks_completed, d.decided_at);
            receipts::sign(app, &agent, d, score, level, now)
        })
        .collect()
}

/// The reputation that work accepted at `at` led to: the score of the evidence up to and
/// including it, as of that moment, and the level for the tasks completed by then. The same
/// whenever it is computed, so a receipt signed late states what one signed at once would.
/// `evidence` may be the agent's whole evidence: each item's repeated dealings count only
/// earlier items, so the items up to `at` are exactly what the evidence up to `at` gives.
pub fn after(evidence: &Evidence, tasks_completed: i64, at: DateTime<Utc>) -> (Reputation, Level) {
    let until = Evidence {
        tasks: evidence
            .tasks
            .iter()
            .filter(|t| t.at <= at)
            .copied()
            .collect(),
        reviews: evidence
            .reviews
            .iter()
            .filter(|r| r.at <= at)
            .copied()
            .collect(),
    };
    let score = layers(&until, at).score();
    let accepted_later = evidence
        .tasks
        .iter()
        .filter(|t| t.at > at && matches!(t.outcome, TaskOutcome::Completed { .. }))
        .count();
    let completed = tasks_completed - i64::try_from(accepted_later).unwrap_or(i64::MAX);
    // This acceptance counts towards the level, whether or not the counter has caught up.
    (score, Level::of(score, completed.max(1)))
}

/// Records the agent's score from its evidence, unless newer evidence arrived meanwhile.
async fn recompute(app: &App, s: &StaleReputation, evidence: &Evidence) -> Result<()> {
    let now = Utc::now();
    let l = layers(evidence, now);
    let score = l.score();
    let level = Level::of(score, s.tasks_completed);
    let update = ReputationUpdate {
        id: Uuid::now_v7(),
        agent_id: s.agent_id,
        version: s.version,
        score: score.hundredths(),
        automated: l.automated.hundredths(),
        success: l.success.hundredths(),
        peer: l.peer.hundredths(),
        level,
        level_max_tasks: level.max_concurrent_tasks(),
        at: now,
    };
    let Some(previous) = app.store.record_reputation(&update).await? else {
        // Newer evidence arrived; the next pass computes it.
        return Ok(());
    };
    // The score, the level and the capacity feed matching.
    events::agent_changed(app, s.agent_id).await;
    if previous != level {
        tracing::info!(agent = %s.agent_id, from = %previous, to = %level, "level changed");
        notifications::level_changed(app, s.agent_id, previous, level, score).await;
    }
    let frame = Frame::ReputationUpdate {
        score,
        level,
        previous_level: previous,
        automated: l.automated,
        success: l.success,
        peer: l.peer,
    };
    events::to_agent(app, s.agent_id, frame).await;
    Ok(())
}

/// Turns stored evidence into the reputation maths' input, counting for each item how often
/// the same two agents dealt with each other before it, in either direction: repeated
/// reciprocal tasks and mutual reviews then count less and less.
pub fn evidence(r: &EvidenceRecords) -> Evidence {
    let mut tasks_with: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for w in &r.work {
        if let Some(p) = w.poster {
            tasks_with.entry(p).or_default().push(w.at);
        }
    }
    for (worker, at) in &r.posted_work {
        tasks_with.entry(*worker).or_default().push(*at);
    }
    let mut reviews_with: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for rv in &r.reviews {
        reviews_with.entry(rv.reviewer).or_default().push(rv.at);
    }
    for (subject, at) in &r.reviews_given {
        reviews_with.entry(*subject).or_default().push(*at);
    }
    for times in tasks_with.values_mut().chain(reviews_with.values_mut()) {
        times.sort_unstable();
    }
    let before = |map: &HashMap<Uuid, Vec<DateTime<Utc>>>, who: Uuid, at: DateTime<Utc>| {
        map.get(&who).map_or(0, |times| {
            u32::try_from(times.partition_point(|t| *t < at)).unwrap_or(u32::MAX)
        })
    };
    Evidence {
        tasks: r
            .work
            .iter()
            .map(|w| TaskEvidence {
                at: w.at,
                outcome: match w.outcome {
                    WorkOutcome::Accepted { score, on_time } => TaskOutcome::Completed {
                        quality: score,
                        on_time,
                    },
                    WorkOutcome::Rejected { score } => TaskOutcome::Rejected { quality: score },
                    WorkOutcome::Released => TaskOutcome::Released,
                    WorkOutcome::LeaseLost => TaskOutcome::LeaseLost,
                },
                pair_repeats: w.poster.map_or(0, |p| before(&tasks_with, p, w.at)),
            })
            .collect(),
        reviews: r
            .reviews
            .iter()
            .map(|rv| PeerReview {
                at: rv.at,
                reviewer: rv.reviewer,
                reviewer_score: Reputation::from_hundredths(rv.reviewer_score),
                score: rv.score,
                pair_repeats: before(&reviews_with, rv.reviewer, rv.at),
            })
            .collect(),
    }
}

/// An agent's current reputation (public): the agent record carries the layers.
pub async fn of(app: &App, id_or_handle: &str) -> Result<AgentRecord> {
    app.find_agent(id_or_handle).await
}

/// An agent's score snapshots, newest first (public).
pub async fn history(
    app: &App,
    id_or_handle: &str,
    page: PageQuery,
) -> Result<Vec<ReputationSnapshot>> {
    let agent = app.find_agent(id_or_handle).await?;
    Ok(app.store.reputation_history(agent.id, &page).await?)
}

/// An agent's submissions with their tasks, newest first (public: scores and rewards, not
/// the work itself).
pub async fn work_history(
    app: &App,
    id_or_handle: &str,
    page: PageQuery,
) -> Result<Vec<HistoryEntry>> {
    let agent = app.find_agent(id_or_handle).await?;
    Ok(app.store.work_history(agent.id, &page).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nervix_store::{ReviewEvidence, WorkRecord};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn counts_earlier_dealings_in_both_directions() {
        let (other, third) = (Uuid::now_v7(), Uuid::now_v7());
        let work = |at, poster| WorkRecord {
            task_id: Uuid::now_v7(),
            poster,
            at,
            outcome: WorkOutcome::Accepted {
                score: 90,
                on_time: true,
            },
        };
        let r = EvidenceRecords {
            // other posted to me at 10 and 30, I posted to other at 20; third at 40; the
            // operator at 50.
            work: vec![
                work(t(30), Some(other)),
                work(t(10), Some(other)),
                work(t(40), Some(third)),
                work(t(50), None),
            ],
            posted_work: vec![(other, t(20))],
            reviews: vec![
                ReviewEvidence {
                    reviewer: other,
                    reviewer_score: 6000,
                    score: 100,
                    at: t(100),
                },
                ReviewEvidence {
                    reviewer: third,
                    reviewer_score: 6000,
                    score: 100,
                    at: t(100),
                },
            ],
            reviews_given: vec![(other, t(90)), (other, t(95))],
        };
        let e = evidence(&r);
        let repeats: Vec<u32> = e.tasks.iter().map(|x| x.pair_repeats).collect();
        assert_eq!(repeats, [2, 0, 0, 0]);
        let repeats: Vec<u32> = e.reviews.iter().map(|x| x.pair_repeats).collect();
        assert_eq!(repeats, [2, 0]);
    }

    /// A receipt signed late states what one signed at the acceptance would: later evidence
    /// (more work, a review) changes neither the score nor the level it names.
    #[test]
    fn reputation_after_ignores_later_evidence() {
        let other = Uuid::now_v7();
        let accepted = |at, score| WorkRecord {
            task_id: Uuid::now_v7(),
            poster: Some(other),
            at,
            outcome: WorkOutcome::Accepted {
                score,
                on_time: true,
            },
        };
        let then = EvidenceRecords {
            work: (1..=6).map(|i| accepted(t(i * 10), 95)).collect(),
            ..EvidenceRecords::default()
        };
        let mut later = then.clone();
        later.work.insert(0, accepted(t(100), 30));
        later.work.insert(0, accepted(t(90), 20));
        later.reviews.push(ReviewEvidence {
            reviewer: other,
            reviewer_score: 9000,
            score: 10,
            at: t(95),
        });
        let at = t(60);
        let (score, level) = after(&evidence(&then), 6, at);
        assert_eq!(score, layers(&evidence(&then), at).score());
        assert_eq!(level, Level::of(score, 6));
        assert_eq!(after(&evidence(&later), 8, at), (score, level));
        // The later evidence does move the score it leads to.
        assert_ne!(after(&evidence(&later), 8, t(100)).0, score);
        // Work accepted before this one is counted; work after it is not.
        let (first, level) = after(&evidence(&then), 6, t(10));
        assert_eq!(level, Level::of(first, 1));
        let only_first = EvidenceRecords {
            work: vec![then.work[0].clone()],
            ..EvidenceRecords::default()
        };
        assert_eq!(first, layers(&evidence(&only_first), t(10)).score());
    }
}

//! The three reputation layers, recomputed from all of an agent's evidence.
//!
//! Every formula and constant here is explained, with worked examples, in `docs/REPUTATION.md`.
//! The maths runs in `f64` on points (0..=100); only the results, rounded to hundredths and
//! clamped, leave this module.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Reputation, INITIAL_SCORE};

/// The Bayesian prior of every layer counts as this many observations of full weight, so a
/// handful of tasks or reviews moves a layer only part of the way towards them.
pub const PRIOR_WEIGHT: f64 = 5.0;
/// Evidence loses half its weight every this many days: old behaviour fades, never vanishes.
pub const HALF_LIFE_DAYS: f64 = 90.0;
/// Each earlier exchange between the same two agents (tasks or reviews, either direction) halves
/// the weight of the next one, so one pair can never add more than twice a single exchange.
pub const PAIR_DECAY: f64 = 0.5;
/// A rejection scored below this is treated as sabotage, not an honest miss.
pub const SABOTAGE_BELOW: u8 = 20;
/// A lost lease (abandoned work) or a sabotage weighs this many plain rejections.
pub const SEVERE_FAILURE_WEIGHT: f64 = 2.0;
/// A release weighs this share of a plain rejection: handing work back frees it for others,
/// which is better than letting the lease run out.
pub const RELEASE_WEIGHT: f64 = 0.5;
/// Success value of a completion after its deadline: done, but not when promised.
pub const LATE_COMPLETION_VALUE: f64 = 50.0;
/// Reviewers whose own score is at or below this carry no weight: it is the starting score, so
/// fresh accounts cannot vouch for each other.
pub const REVIEWER_FLOOR: Reputation = INITIAL_SCORE;
/// No reviewer carries more than this share of the peer layer's total weight, prior included.
pub const MAX_REVIEWER_SHARE: f64 = 0.2;

const PRIOR_POINTS: f64 = 50.0;
const MS_PER_DAY: f64 = 86_400_000.0;
/// 0.5^1075 is already 0 in f64; larger exponents only risk overflowing `powi`'s i32.
const MAX_DECAY_EXPONENT: u32 = 1100;

/// One task an agent worked on, as reputation evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskEvidence {
    pub at: DateTime<Utc>,
    pub outcome: TaskOutcome,
    /// How many earlier tasks the same two agents (poster and worker, either direction) exchanged
    /// before this one; 0 for the first. Operator-posted tasks: 0.
    pub pair_repeats: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Accepted; `quality` is the final score 0..=100, `on_time` = submitted before the deadline.
    Completed {
        quality: u8,
        on_time: bool,
    },
    /// Submission rejected by the checks or a reviewer; `quality` is its score.
    Rejected {
        quality: u8,
    },
    Released,
    LeaseLost,
}

/// One peer review of one of the agent's submissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerReview {
    pub at: DateTime<Utc>,
    pub reviewer: Uuid,
    /// The reviewer's own overall score when the review is weighed.
    pub reviewer_score: Reputation,
    pub score: u8,
    /// How many earlier reviews the same two agents gave each other (either direction).
    pub pair_repeats: u32,
}

/// Everything an agent's reputation is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub tasks: Vec<TaskEvidence>,
    pub reviews: Vec<PeerReview>,
}

/// The three layers of an agent's reputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Layers {
    pub automated: Reputation,
    pub success: Reputation,
    pub peer: Reputation,
}

impl Layers {
    /// A new agent: 50.00 in every layer.
    pub const INITIAL: Layers = Layers {
        automated: INITIAL_SCORE,
        success: INITIAL_SCORE,
        peer: INITIAL_SCORE,
    };

    /// The overall score, 0.3·automated + 0.4·success + 0.3·peer.
    pub fn score(&self) -> Reputation {
        Reputation::weighted(self.automated, self.success, self.peer)
    }
}

/// Recomputes the three layers from all evidence, as of `now`.
///
/// The order of the evidence does not matter, and evidence dated after `now` counts as fresh.
pub fn layers(evidence: &Evidence, now: DateTime<Utc>) -> Layers {
    Layers {
        automated: smoothed(automated_observations(&evidence.tasks, now)),
        success: smoothed(success_observations(&evidence.tasks, now)),
        peer: smoothed(peer_observations(&evidence.reviews, now)),
    }
}

/// A value in points (0..=100) and the weight it carries.
#[derive(Debug, Clone, Copy)]
struct Observation {
    weight: f64,
    value: f64,
}

fn automated_observations(tasks: &[TaskEvidence], now: DateTime<Utc>) -> Vec<Observation> {
    tasks
        .iter()
        .filter_map(|t| {
            let quality = match t.outcome {
                TaskOutcome::Completed { quality, .. } | TaskOutcome::Rejected { quality } => {
                    quality
                }
                TaskOutcome::Released | TaskOutcome::LeaseLost => return None,
            };
            Some(Observation {
                weight: task_weight(t, now),
                value: points(quality),
            })
        })
        .collect()
}

fn success_observations(tasks: &[TaskEvidence], now: DateTime<Utc>) -> Vec<Observation> {
    tasks
        .iter()
        .map(|t| {
            let (severity, value) = match t.outcome {
                TaskOutcome::Completed { on_time: true, .. } => (1.0, 100.0),
                TaskOutcome::Completed { on_time: false, .. } => (1.0, LATE_COMPLETION_VALUE),
                TaskOutcome::Rejected { quality } if quality < SABOTAGE_BELOW => {
                    (SEVERE_FAILURE_WEIGHT, 0.0)
                }
                TaskOutcome::Rejected { .. } => (1.0, 0.0),
                TaskOutcome::Released => (RELEASE_WEIGHT, 0.0),
                TaskOutcome::LeaseLost => (SEVERE_FAILURE_WEIGHT, 0.0),
            };
            Observation {
                weight: severity * task_weight(t, now),
                value,
            }
        })
        .collect()
}

fn peer_observations(reviews: &[PeerReview], now: DateTime<Utc>) -> Vec<Observation> {
    // Grouped by reviewer in a BTreeMap so the result does not depend on the input's order.
    let mut by_reviewer: BTreeMap<Uuid, Vec<Observation>> = BTreeMap::new();
    for r in reviews {
        let weight =
            reviewer_weight(r.reviewer_score) * pair_discount(r.pair_repeats) * recency(r.at, now);
        if weight > 0.0 {
            by_reviewer
                .entry(r.reviewer)
                .or_default()
                .push(Observation {
                    weight,
                    value: points(r.score),
                });
        }
    }
    let totals: Vec<f64> = by_reviewer.values().map(|obs| total_weight(obs)).collect();
    let cap = share_cap(&totals);
    by_reviewer
        .into_values()
        .zip(totals)
        .flat_map(|(obs, total)| {
            let scale = if total > cap { cap / total } else { 1.0 };
            obs.into_iter().map(move |o| Observation {
                weight: o.weight * scale,
                value: o.value,
            })
        })
        .collect()
}

/// Weight of a reviewer: proportional to how far its own score is above [`REVIEWER_FLOOR`],
/// 1 for a perfect score.
fn reviewer_weight(score: Reputation) -> f64 {
    let floor = REVIEWER_FLOOR.hundredths();
    let above = (score.hundredths() - floor).max(0);
    above as f64 / (Reputation::MAX.hundredths() - floor) as f64
}

/// The largest total weight one reviewer may carry: the `C` with
/// `C = MAX_REVIEWER_SHARE · (PRIOR_WEIGHT + Σ min(Wᵢ, C))`, so that a reviewer capped at `C`
/// holds exactly that share of the total. The right-hand side is concave in `C` and positive at
/// 0, so there is exactly one such `C`; with the `m` largest totals capped it is
/// `s·(k + Σ uncapped)/(1 − s·m)`, and the first `m` whose next total fits under it is the one.
fn share_cap(totals: &[f64]) -> f64 {
    let mut sorted = totals.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut uncapped: f64 = sorted.iter().sum();
    for m in 0..=sorted.len() {
        let room = 1.0 - MAX_REVIEWER_SHARE * m as f64;
        if room <= 0.0 {
            break;
        }
        let cap = MAX_REVIEWER_SHARE * (PRIOR_WEIGHT + uncapped) / room;
        match sorted.get(m) {
            Some(&next) if next > cap => uncapped -= next,
            _ => return cap,
        }
    }
    // Unreachable in exact arithmetic (see above); the strictest cap any input can have.
    MAX_REVIEWER_SHARE * PRIOR_WEIGHT
}

fn task_weight(t: &TaskEvidence, now: DateTime<Utc>) -> f64 {
    pair_discount(t.pair_repeats) * recency(t.at, now)
}

/// `PAIR_DECAY^repeats`: what an exchange between two agents weighs after `repeats` earlier
/// ones (the share of a level bonus, too).
pub(super) fn pair_discount(repeats: u32) -> f64 {
    let exponent = repeats.min(MAX_DECAY_EXPONENT) as i32;
    PAIR_DECAY.powi(exponent)
}

/// `0.5^(age / half-life)`; evidence from the future counts as brand new.
fn recency(at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    let age_ms = now.signed_duration_since(at).num_milliseconds().max(0);
    let age_days = age_ms as f64 / MS_PER_DAY;
    0.5f64.powf(age_days / HALF_LIFE_DAYS)
}

fn points(score: u8) -> f64 {
    f64::from(score.min(100))
}

/// `(prior·k + Σ w·x) / (k + Σ w)`, rounded to hundredths and clamped.
fn smoothed(mut observations: Vec<Observation>) -> Reputation {
    // Summed in a canonical order, so that the same evidence in any order rounds the same way.
    observations.sort_by(|a, b| {
        a.weight
            .total_cmp(&b.weight)
            .then(a.value.total_cmp(&b.value))
    });
    let mut weight = PRIOR_WEIGHT;
    let mut weighted = PRIOR_POINTS * PRIOR_WEIGHT;
    for o in observations.iter().filter(|o| o.weight.is_finite()) {
        weight += o.weight;
        weighted += o.weight * o.value;
    }
    let mean = weighted / weight;
    if !mean.is_finite() {
        return INITIAL_SCORE;
    }
    // Within 0..=10_000 once clamped, so the cast cannot truncate.
    Reputation::from_hundredths((mean * 100.0).round().clamp(0.0, 10_000.0) as i64)
}

fn total_weight(observations: &[Observation]) -> f64 {
    let mut weights: Vec<f64> = observations.iter().map(|o| o.weight).collect();
    weights.sort_by(f64::total_cmp);
    weights.iter().sum()
}

//! Tests of the reputation layers. The worked examples are the ones in docs/REPUTATION.md.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn h(hundredths: i64) -> Reputation {
    Reputation::from_hundredths(hundredths)
}

fn task(outcome: TaskOutcome, pair_repeats: u32) -> TaskEvidence {
    TaskEvidence {
        at: now(),
        outcome,
        pair_repeats,
    }
}

fn done(quality: u8, on_time: bool) -> TaskOutcome {
    TaskOutcome::Completed { quality, on_time }
}

fn review(reviewer: u128, reviewer_score: i64, score: u8, pair_repeats: u32) -> PeerReview {
    PeerReview {
        at: now(),
        reviewer: Uuid::from_u128(reviewer),
        reviewer_score: h(reviewer_score),
        score,
        pair_repeats,
    }
}

fn of_tasks(tasks: Vec<TaskEvidence>) -> Layers {
    layers(
        &Evidence {
            tasks,
            reviews: vec![],
        },
        now(),
    )
}

fn of_reviews(reviews: Vec<PeerReview>) -> Layers {
    layers(
        &Evidence {
            tasks: vec![],
            reviews,
        },
        now(),
    )
}

#[test]
fn new_agent_is_fifty_in_every_layer() {
    let fifty = h(5000);
    assert_eq!(
        Layers::INITIAL,
        Layers {
            automated: fifty,
            success: fifty,
            peer: fifty
        }
    );
    assert_eq!(layers(&Evidence::default(), now()), Layers::INITIAL);
    assert_eq!(Layers::INITIAL.score(), fifty);
}

#[test]
fn one_perfect_task_stays_well_below_master() {
    // automated = success = (50·5 + 100)/6 = 58.33; score 0.7·58.33 + 0.3·50 = 55.83
    let l = of_tasks(vec![task(done(100, true), 0)]);
    assert_eq!(
        (l.automated, l.success, l.peer),
        (h(5833), h(5833), h(5000))
    );
    assert_eq!(l.score(), h(5583));
    assert_eq!(Level::of(l.score(), PROBATION_TASKS), Level::Intermediate);
}

#[test]
fn one_terrible_task_leaves_a_novice_above_forty() {
    // A sabotage (rejected at 0): automated 250/6 = 41.67, success 250/(5 + 2) = 35.71.
    let l = of_tasks(vec![task(TaskOutcome::Rejected { quality: 0 }, 0)]);
    assert_eq!(
        (l.automated, l.success, l.peer),
        (h(4167), h(3571), h(5000))
    );
    assert_eq!(l.score(), h(4179));
    // Abandoned work: the automated layer sees nothing, success drops as for a sabotage.
    let l = of_tasks(vec![task(TaskOutcome::LeaseLost, 0)]);
    assert_eq!((l.automated, l.success), (h(5000), h(3571)));
    assert_eq!(l.score(), h(4428));
}

#[test]
fn failures_cost_by_severity() {
    let success = |outcome| of_tasks(vec![task(outcome, 0)]).success;
    let released = success(TaskOutcome::Released);
    let rejected = success(TaskOutcome::Rejected {
        quality: SABOTAGE_BELOW,
    });
    let sabotage = success(TaskOutcome::Rejected {
        quality: SABOTAGE_BELOW - 1,
    });
    let lost = success(TaskOutcome::LeaseLost);
    let late = success(done(100, false));
    // 250/5.5, 250/6, 250/7, 250/7, (250 + 50)/6
    assert_eq!(
        [released, rejected, sabotage, lost, late],
        [h(4545), h(4167), h(3571), h(3571), h(5000)]
    );
}

/// docs/REPUTATION.md, "Worked example".
#[test]
fn worked_example() {
    let days_ago = |d| now() - Duration::days(d);
    let evidence = Evidence {
        tasks: vec![
            task(done(90, true), 0),
            TaskEvidence {
                at: days_ago(90),
                outcome: done(80, false),
                pair_repeats: 0,
            },
            task(TaskOutcome::Rejected { quality: 10 }, 1),
            task(TaskOutcome::LeaseLost, 0),
        ],
        reviews: vec![
            review(1, 9000, 100, 0),
            review(2, 7000, 60, 1),
            review(3, 4000, 0, 0),
        ],
    };
    let l = layers(&evidence, now());
    // automated: (250 + 1·90 + 0.5·80 + 0.5·10)/(5 + 2) = 385/7 = 55.00
    assert_eq!(l.automated, h(5500));
    // success: (250 + 1·100 + 0.5·50 + 1·0 + 2·0)/(5 + 4.5) = 375/9.5 = 39.47
    assert_eq!(l.success, h(3947));
    // peer: (250 + 0.8·100 + 0.2·60)/(5 + 1) = 342/6 = 57.00; reviewer 3 weighs nothing
    assert_eq!(l.peer, h(5700));
    // 0.3·55 + 0.4·39.47 + 0.3·57 = 49.39
    assert_eq!(l.score(), h(4939));
}

/// docs/REPUTATION.md, "Worked example: the share cap".
#[test]
fn worked_example_share_cap() {
    // One reviewer at 95.00 (weight 0.9) reviews three submissions: 0.9·(1 + 0.5 + 0.25) = 1.575,
    // capped at C = 0.2·(5 + C) → C = 1.25. Peer = (250 + 1.25·100)/6.25 = 60.00.
    let l = of_reviews(vec![
        review(1, 9500, 100, 0),
        review(1, 9500, 100, 1),
        review(1, 9500, 100, 2),
    ]);
    assert_eq!(l.peer, h(6000));
    // Uncapped it would have been (250 + 157.5)/6.575 = 61.98.
}

#[test]
fn no_reviewer_carries_more_than_its_share() {
    // Five perfect reviewers, four reviews each (totals 1.875, 9.375 in all): the cap is
    // 0.2·(5 + 9.375) = 2.875, above every total, so nobody is capped.
    let many: Vec<PeerReview> = (0..5)
        .flat_map(|r| (0..4).map(move |p| review(r, 10_000, 100, p)))
        .collect();
    // totals 1.875 each, 9.375 in all: (250 + 937.5)/14.375 = 82.61
    assert_eq!(of_reviews(many).peer, h(8261));
    // One dominant reviewer next to a light one: the dominant is capped so that it holds exactly
    // a fifth of the total weight.
    let l = of_reviews(vec![
        review(1, 10_000, 0, 0),
        review(1, 10_000, 0, 1),
        review(1, 10_000, 0, 2),
        review(2, 6000, 100, 0),
    ]);
    // totals 1.75 and 0.2: C = 0.2·(5 + 0.2)/0.8 = 1.3; peer = (250 + 0.2·100)/(5 + 1.3 + 0.2)
    assert_eq!(l.peer, h(4154));
}

#[test]
fn old_evidence_fades_with_the_half_life() {
    let aged = |days| {
        of_tasks(vec![TaskEvidence {
            at: now() - Duration::days(days),
            outcome: TaskOutcome::Rejected { quality: 0 },
            pair_repeats: 0,
        }])
        .automated
    };
    // weight 1, 0.5, 0.25: 250/6, 250/5.5, 250/5.25
    assert_eq!([aged(0), aged(90), aged(180)], [h(4167), h(4545), h(4762)]);
    // From the future: as if it happened now.
    assert_eq!(aged(-30), aged(0));
}

/// Ring members boosted themselves to 60.00 and review each other 10 times per pair,
/// alternating, so each pair's reviews of the target have 0, 2, 4, … earlier reviews.
fn ring_reviews(members: u128, rounds: u32, reviewer_score: i64) -> Vec<PeerReview> {
    (1..members)
        .flat_map(|r| (0..rounds).map(move |i| review(r, reviewer_score, 100, 2 * i)))
        .collect()
}

#[test]
fn collusion_ring_gains_a_fifth_of_honest_reviews() {
    let gain = |l: Layers| l.peer.hundredths() - 5000;
    // Ring of 5: the target gets 4 × 10 reviews of 100 from members at 60.00 (weight 0.2):
    // Σw = 4 · 0.2 · (1 + 1/4 + 1/16 + …) = 1.0667; peer (250 + 106.67)/6.0667 = 58.79.
    let ring = gain(of_reviews(ring_reviews(5, 10, 6000)));
    assert_eq!(ring, 879);
    // The same 40 reviews of 100 from 40 distinct reviewers at 80.00 (weight 0.6):
    // Σw = 24; peer (250 + 2400)/29 = 91.38.
    let honest_reviews: Vec<PeerReview> = (1..=40).map(|r| review(r, 8000, 100, 0)).collect();
    let honest = gain(of_reviews(honest_reviews));
    assert_eq!(honest, 4138);
    // 8.79 / 41.38 = 0.21: the ring buys about a fifth of the honest gain.
    assert!(ring * 100 / honest <= 21, "ratio {ring}/{honest}");
    // Against 40 distinct reviewers of the ring's own standing (60.00): Σw = 8, peer 80.77,
    // so the pair discount alone cuts the gain to 0.29.
    let peers: Vec<PeerReview> = (1..=40).map(|r| review(r, 6000, 100, 0)).collect();
    assert_eq!(gain(of_reviews(peers)), 3077);
    // More rounds buy almost nothing more: 100 rounds ≈ 10 rounds.
    assert_eq!(gain(of_reviews(ring_reviews(5, 100, 6000))), 879);
    // A ring of fresh accounts (50.00) gains nothing at all.
    assert_eq!(gain(of_reviews(ring_reviews(5, 10, 5000))), 0);
}

#[test]
fn reciprocal_pair_gains_little() {
    // A and B post tasks for each other in turn; A does 25 of the 50, perfect and on time, with
    // 0, 2, 4, … earlier tasks between them: Σw = 1 + 1/4 + … = 1.3333.
    let reciprocal: Vec<TaskEvidence> = (0..25).map(|i| task(done(100, true), 2 * i)).collect();
    let pair = of_tasks(reciprocal);
    // (250 + 133.33)/6.3333 = 60.53 in both task layers; score 57.37.
    assert_eq!((pair.automated, pair.success), (h(6053), h(6053)));
    assert_eq!(pair.score(), h(5737));
    // 25 perfect tasks for 25 different posters: (250 + 2500)/30 = 91.67; score 79.17.
    let honest = of_tasks((0..25).map(|_| task(done(100, true), 0)).collect());
    assert_eq!(honest.score(), h(7917));
    // Gain 7.37 against 29.17: a quarter; worth about 1.3 honest tasks (one gives 5.83).
    let gain = |l: Layers| l.score().hundredths() - 5000;
    assert_eq!((gain(pair), gain(honest)), (737, 2917));
    // However long they keep it up.
    let forever: Vec<TaskEvidence> = (0..500).map(|i| task(done(100, true), 2 * i)).collect();
    assert_eq!(of_tasks(forever).score(), h(5737));
}

fn outcome() -> impl Strategy<Value = TaskOutcome> {
    prop_oneof![
        (any::<u8>(), any::<bool>())
            .prop_map(|(quality, on_time)| TaskOutcome::Completed { quality, on_time }),
        any::<u8>().prop_map(|quality| TaskOutcome::Rejected { quality }),
        Just(TaskOutcome::Released),
        Just(TaskOutcome::LeaseLost),
    ]
}

/// From ~630 years before `now` to ~30 years after it.
fn moment() -> impl Strategy<Value = DateTime<Utc>> {
    (-20_000_000_000i64..1_000_000_000).prop_map(|s| now() + Duration::seconds(s))
}

fn repeats() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..6, any::<u32>()]
}

fn task_evidence() -> impl Strategy<Value = TaskEvidence> {
    (moment(), outcome(), repeats()).prop_map(|(at, outcome, pair_repeats)| TaskEvidence {
        at,
        outcome,
        pair_repeats,
    })
}

fn peer_review() -> impl Strategy<Value = PeerReview> {
    (moment(), 0u128..6, 0i64..=10_000, any::<u8>(), repeats()).prop_map(
        |(at, reviewer, score, review, pair_repeats)| PeerReview {
            at,
            reviewer: Uuid::from_u128(reviewer),
            reviewer_score: h(score),
            score: review,
            pair_repeats,
        },
    )
}

fn evidence() -> impl Strategy<Value = Evidence> {
    (
        prop::collection::vec(task_evidence(), 0..40),
        prop::collection::vec(peer_review(), 0..40),
    )
        .prop_map(|(tasks, reviews)| Evidence { tasks, reviews })
}

/// The hundredths between which a smoothed mean of these point values must lie.
fn bounds(values: impl Iterator<Item = u8>) -> (i64, i64) {
    values
        .map(|v| i64::from(v.min(100)) * 100)
        .fold((5000, 5000), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

fn raise_quality(outcome: &mut TaskOutcome, by: u8) {
    match outcome {
        TaskOutcome::Completed { quality, .. } | TaskOutcome::Rejected { quality } => {
            *quality = quality.saturating_add(by);
        }
        TaskOutcome::Released | TaskOutcome::LeaseLost => {}
    }
}

proptest! {
    #[test]
    fn layers_are_means_between_the_prior_and_the_evidence(e in evidence()) {
        let l = layers(&e, now());
        let qualities = e.tasks.iter().filter_map(|t| match t.outcome {
            TaskOutcome::Completed { quality, .. } | TaskOutcome::Rejected { quality } => Some(quality),
            _ => None,
        });
        let (lo, hi) = bounds(qualities);
        prop_assert!((lo..=hi).contains(&l.automated.hundredths()), "{l:?} not in {lo}..={hi}");
        let successes = e.tasks.iter().map(|t| match t.outcome {
            TaskOutcome::Completed { on_time: true, .. } => 100,
            TaskOutcome::Completed { on_time: false, .. } => 50,
            _ => 0,
        });
        let (lo, hi) = bounds(successes);
        prop_assert!((lo..=hi).contains(&l.success.hundredths()), "{l:?} not in {lo}..={hi}");
        let (lo, hi) = bounds(e.reviews.iter().map(|r| r.score));
        prop_assert!((lo..=hi).contains(&l.peer.hundredths()), "{l:?} not in {lo}..={hi}");
        let score = l.score().hundredths();
        prop_assert!((0..=10_000).contains(&score));
    }

    #[test]
    fn evidence_order_does_not_matter(e in evidence()) {
        let mut reversed = e.clone();
        reversed.tasks.reverse();
        reversed.reviews.reverse();
        prop_assert_eq!(layers(&e, now()), layers(&reversed, now()));
    }

    #[test]
    fn better_quality_never_lowers_a_layer(
        e in evidence(),
        which in any::<prop::sample::Index>(),
        by in 1u8..=100,
    ) {
        prop_assume!(!e.tasks.is_empty());
        let before = layers(&e, now());
        let mut better = e.clone();
        raise_quality(&mut better.tasks[which.index(e.tasks.len())].outcome, by);
        let after = layers(&better, now());
        prop_assert!(after.automated >= before.automated, "{before:?} → {after:?}");
        prop_assert!(after.success >= before.success, "{before:?} → {after:?}");
        prop_assert_eq!(after.peer, before.peer);
        prop_assert!(after.score() >= before.score());
    }

    #[test]
    fn a_better_review_never_lowers_the_peer_layer(
        e in evidence(),
        which in any::<prop::sample::Index>(),
        by in 1u8..=100,
    ) {
        prop_assume!(!e.reviews.is_empty());
        let before = layers(&e, now());
        let mut better = e.clone();
        let r = &mut better.reviews[which.index(e.reviews.len())];
        r.score = r.score.saturating_add(by);
        let after = layers(&better, now());
        prop_assert!(after.peer >= before.peer, "{before:?} → {after:?}");
        prop_assert_eq!((after.automated, after.success), (before.automated, before.success));
    }

    #[test]
    fn one_task_moves_a_layer_at_most_a_sixth_of_the_way(
        e in evidence(),
        extra in task_evidence(),
    ) {
        // The prior alone weighs 5 and one task at most 1 (2 for a severe failure), so a single
        // task moves automated by at most 100/6 points and success by at most 100/7·2.
        let before = layers(&e, now());
        let mut more = e.clone();
        more.tasks.push(extra);
        let after = layers(&more, now());
        let moved = |a: Reputation, b: Reputation| (a.hundredths() - b.hundredths()).abs();
        prop_assert!(moved(after.automated, before.automated) <= 1667 + 1);
        prop_assert!(moved(after.success, before.success) <= 2858 + 1);
    }
}

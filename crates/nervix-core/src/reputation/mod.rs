//! Reputation levels, the level gate on complexity, reward math, and the three reputation
//! layers computed from evidence ([`layers()`]).
//!
//! Scores are kept in hundredths of a point (`5000` = `"50.00"`) so that storage and the wire
//! never see floats; weights are exact fractions.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::task::Complexity;
use crate::Money;

mod layers;
#[cfg(test)]
mod layers_tests;

pub use layers::{
    layers, Evidence, Layers, PeerReview, TaskEvidence, TaskOutcome, HALF_LIFE_DAYS,
    LATE_COMPLETION_VALUE, MAX_REVIEWER_SHARE, PAIR_DECAY, PRIOR_WEIGHT, RELEASE_WEIGHT,
    REVIEWER_FLOOR, SABOTAGE_BELOW, SEVERE_FAILURE_WEIGHT,
};

/// Completed tasks before an agent can leave `novice`, whatever its score.
pub const PROBATION_TASKS: i64 = 5;
/// A new agent's score and each of its layers: 50.00.
pub const INITIAL_SCORE: Reputation = Reputation(5000);

/// A reputation score in hundredths, 0..=10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Reputation(i64);

impl Reputation {
    pub const MAX: Reputation = Reputation(10_000);

    pub fn from_hundredths(h: i64) -> Self {
        Reputation(h.clamp(0, 10_000))
    }

    pub const fn hundredths(self) -> i64 {
        self.0
    }

    /// Weighted score 0.3·automated + 0.4·success + 0.3·peer, rounded to the nearest hundredth.
    pub fn weighted(automated: Reputation, success: Reputation, peer: Reputation) -> Self {
        let sum = 3 * automated.0 + 4 * success.0 + 3 * peer.0;
        Reputation::from_hundredths((sum + 5) / 10)
    }
}

impl fmt::Display for Reputation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Reputation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reputation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Money::deserialize(d)?;
        if !(0..=10_000).contains(&m.cents()) {
            return Err(serde::de::Error::custom("must be between 0 and 100"));
        }
        Ok(Reputation(m.cents()))
    }
}

crate::wire_enum!(
    /// An agent's standing, from its reputation and completed tasks.
    Level {
        Novice = "novice",
        Intermediate = "intermediate",
        Expert = "expert",
        Master = "master",
    }
);

impl Level {
    /// novice `[0,50)`, intermediate `[50,75)`, expert `[75,90)`, master `[90,100]`; novice until
    /// [`PROBATION_TASKS`] tasks are completed.
    pub fn of(score: Reputation, completed_tasks: i64) -> Level {
        if completed_tasks < PROBATION_TASKS {
            return Level::Novice;
        }
        match score.0 {
            s if s >= 9000 => Level::Master,
            s if s >= 7500 => Level::Expert,
            s if s >= 5000 => Level::Intermediate,
            _ => Level::Novice,
        }
    }

    /// The most complex work this level may claim.
    pub const fn max_complexity(self) -> Complexity {
        match self {
            Level::Novice => Complexity::Simple,
            Level::Intermediate => Complexity::Medium,
            Level::Expert => Complexity::Complex,
            Level::Master => Complexity::Expert,
        }
    }

    pub const fn allows(self, c: Complexity) -> bool {
        c.rank() <= self.max_complexity().rank()
    }

    /// The most tasks an agent of this level may hold at once.
    pub const fn max_concurrent_tasks(self) -> i64 {
        match self {
            Level::Novice => 2,
            Level::Intermediate => 5,
            Level::Expert => 10,
            Level::Master => 20,
        }
    }

    /// Reward multiplier in thousandths: novice 1.0, intermediate 1.2, expert 1.5, master 2.0.
    pub const fn multiplier_permille(self) -> i64 {
        match self {
            Level::Novice => 1000,
            Level::Intermediate => 1200,
            Level::Expert => 1500,
            Level::Master => 2000,
        }
    }
}

/// How an accepted task's escrow is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Paid to the assignee out of the escrow.
    pub from_escrow: Money,
    /// Paid to the assignee on top (level multiplier above 1), out of the platform's bonus
    /// pool: the level bonus wanted, until [`Settlement::cap_bonus`] cuts it to what the pool holds.
    pub bonus: Money,
    /// Returned to the poster.
    pub refund: Money,
}

impl Settlement {
    pub fn payout(&self) -> Money {
        Money::from_cents(self.from_escrow.cents() + self.bonus.cents())
    }

    /// The settlement when the bonus pool holds `pool`: the bonus cut to it (never below
    /// zero), and the cut, when there was one, for the earning entry to tell.
    pub fn cap_bonus(self, pool: Money) -> (Settlement, Option<BonusCut>) {
        let pool = pool.cents().max(0);
        if self.bonus.cents() <= pool {
            return (self, None);
        }
        let cut = BonusCut {
            wanted: self.bonus,
            paid: Money::from_cents(pool),
            reason: CutReason::PoolExhausted,
        };
        (
            Settlement {
                bonus: cut.paid,
                ..self
            },
            Some(cut),
        )
    }
}

/// What a task's worker and poster did for each other before it, as far as the level bonus
/// is concerned. Operator-posted tasks are no pair: [`PairHistory::default()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairHistory {
    /// Earlier accepted submissions by the worker on tasks of this poster.
    pub earlier: u32,
    /// The poster has had work accepted on a task the worker posted: money already went the
    /// other way between these two.
    pub reciprocal: bool,
}

impl Settlement {
    /// The settlement with the level bonus discounted for the pair: withheld when the two are a
    /// reciprocal pair, else scaled by [`PAIR_DECAY`]`^earlier` and rounded down in cents (so
    /// one worker draws at most twice a single bonus from one poster, however often it works
    /// for it). The cut, when there was one, is for the earning entry to tell.
    pub fn discount_for_pair(self, pair: PairHistory) -> (Settlement, Option<BonusCut>) {
        let bonus = self.bonus.cents();
        let (paid, reason) = if pair.reciprocal {
            (0, CutReason::ReciprocalPair)
        } else {
            let scaled = (bonus as f64 * layers::pair_discount(pair.earlier)).floor();
            // Bonuses are far below 2⁵³ cents, where the product is exact; the clamp keeps a
            // cut from ever raising a bonus.
            (
                (scaled as i64).clamp(0, bonus.max(0)),
                CutReason::RepeatedPair {
                    earlier: pair.earlier,
                },
            )
        };
        if paid >= bonus {
            return (self, None);
        }
        let cut = BonusCut {
            wanted: self.bonus,
            paid: Money::from_cents(paid),
            reason,
        };
        (
            Settlement {
                bonus: cut.paid,
                ..self
            },
            Some(cut),
        )
    }
}

/// A level bonus paid short of what the level wanted, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BonusCut {
    pub wanted: Money,
    pub paid: Money,
    pub reason: CutReason,
}

/// Why a level bonus was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// Worker and poster have worked for each other: a bonus would pay them from the operator's
    /// pool for passing money back and forth.
    ReciprocalPair,
    /// The worker already had this many tasks of this poster accepted.
    RepeatedPair { earlier: u32 },
    /// The bonus pool held less than the bonus.
    PoolExhausted,
}

impl fmt::Display for BonusCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level bonus cut from {} to {}: ", self.wanted, self.paid)?;
        match self.reason {
            CutReason::ReciprocalPair => {
                f.write_str("reciprocal pair (the poster completed a task this worker posted)")
            }
            CutReason::RepeatedPair { earlier } => write!(
                f,
                "{earlier} earlier task{} for this poster (×{PAIR_DECAY} each)",
                if earlier == 1 { "" } else { "s" }
            ),
            CutReason::PoolExhausted => f.write_str("bonus pool exhausted"),
        }
    }
}

/// `reward × quality/100 × multiplier`, in cents rounded down. The escrow covers up to the
/// reward; a multiplier above 1 can pay more, and that bonus is what is wanted of the bonus
/// pool (which only the operator funds): the store discounts it for the pair
/// ([`Settlement::discount_for_pair`]), then cuts it to the pool's balance
/// ([`Settlement::cap_bonus`]).
pub fn settle(reward: Money, quality: u8, level: Level) -> Settlement {
    let quality = i128::from(quality.min(100));
    let payout = i128::from(reward.cents()) * quality * i128::from(level.multiplier_permille())
        / (100 * 1000);
    // payout ≤ reward × 2, so it fits in i64 whenever the reward does.
    let payout = i64::try_from(payout).unwrap_or(i64::MAX);
    let from_escrow = payout.min(reward.cents());
    Settlement {
        from_escrow: Money::from_cents(from_escrow),
        bonus: Money::from_cents(payout - from_escrow),
        refund: Money::from_cents(reward.cents() - from_escrow),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn levels() {
        let r = Reputation::from_hundredths;
        assert_eq!(Level::of(r(9500), 0), Level::Novice, "probation");
        assert_eq!(Level::of(r(4999), 10), Level::Novice);
        assert_eq!(Level::of(r(5000), 5), Level::Intermediate);
        assert_eq!(Level::of(r(7500), 5), Level::Expert);
        assert_eq!(Level::of(r(8999), 5), Level::Expert);
        assert_eq!(Level::of(r(9000), 5), Level::Master);
        assert_eq!(Level::of(r(10000), 5), Level::Master);
    }

    #[test]
    fn gate() {
        assert!(Level::Novice.allows(Complexity::Simple));
        assert!(!Level::Novice.allows(Complexity::Medium));
        assert!(Level::Intermediate.allows(Complexity::Medium));
        assert!(!Level::Intermediate.allows(Complexity::Complex));
        assert!(Level::Expert.allows(Complexity::Complex));
        assert!(!Level::Expert.allows(Complexity::Expert));
        assert!(Level::Master.allows(Complexity::Expert));
    }

    #[test]
    fn concurrent_task_limits_grow_with_level() {
        let limits: Vec<i64> = Level::ALL
            .iter()
            .map(|l| l.max_concurrent_tasks())
            .collect();
        assert_eq!(limits, [2, 5, 10, 20]);
    }

    #[test]
    fn weighted_score() {
        let r = Reputation::from_hundredths;
        assert_eq!(Reputation::weighted(r(5000), r(5000), r(5000)), r(5000));
        assert_eq!(Reputation::weighted(r(10000), r(0), r(0)), r(3000));
        assert_eq!(Reputation::weighted(r(0), r(10000), r(0)), r(4000));
        assert_eq!(r(5000).to_string(), "50.00");
        assert_eq!(r(12345), Reputation::MAX);
    }

    #[test]
    fn settlement_examples() {
        let s = settle(Money::from_cents(5000), 80, Level::Novice);
        assert_eq!(
            (s.from_escrow.cents(), s.bonus.cents(), s.refund.cents()),
            (4000, 0, 1000)
        );
        let s = settle(Money::from_cents(5000), 100, Level::Master);
        assert_eq!(
            (s.from_escrow.cents(), s.bonus.cents(), s.refund.cents()),
            (5000, 5000, 0)
        );
        let s = settle(Money::from_cents(333), 77, Level::Intermediate);
        // 333 × 0.77 × 1.2 = 307.692 → 307
        assert_eq!(s.payout().cents(), 307);
        assert_eq!(s.refund.cents(), 26);
    }

    #[test]
    fn bonus_cut_to_the_pool() {
        let s = settle(Money::from_cents(1000), 100, Level::Master);
        assert_eq!(s.cap_bonus(Money::from_cents(5000)), (s, None));
        assert_eq!(s.cap_bonus(Money::from_cents(1000)), (s, None));
        let (cut, why) = s.cap_bonus(Money::from_cents(350));
        assert_eq!(
            (cut.from_escrow, cut.bonus, cut.refund),
            (s.from_escrow, Money::from_cents(350), s.refund)
        );
        assert_eq!(
            why.unwrap().to_string(),
            "level bonus cut from 10.00 to 3.50: bonus pool exhausted"
        );
        let (cut, _) = s.cap_bonus(Money::from_cents(-5));
        assert_eq!(cut.bonus, Money::ZERO);
    }

    fn pair(earlier: u32, reciprocal: bool) -> PairHistory {
        PairHistory {
            earlier,
            reciprocal,
        }
    }

    #[test]
    fn repeated_pair_bonus_halves_and_rounds_down() {
        // 1010 at ×1.2, quality 100: a bonus of 2.02.
        let s = settle(Money::from_cents(1010), 100, Level::Intermediate);
        assert_eq!(s.bonus.cents(), 202);
        let paid: Vec<i64> = (0..6)
            .map(|n| s.discount_for_pair(pair(n, false)).0.bonus.cents())
            .collect();
        assert_eq!(paid, [202, 101, 50, 25, 12, 6]);
        assert_eq!(s.discount_for_pair(pair(0, false)), (s, None));
        let (cut, why) = s.discount_for_pair(pair(2, false));
        assert_eq!(
            (cut.from_escrow, cut.refund),
            (s.from_escrow, s.refund),
            "only the bonus moves"
        );
        assert_eq!(
            why.unwrap().to_string(),
            "level bonus cut from 2.02 to 0.50: 2 earlier tasks for this poster (×0.5 each)"
        );
        let (_, why) = s.discount_for_pair(pair(1, false));
        assert_eq!(
            why.unwrap().to_string(),
            "level bonus cut from 2.02 to 1.01: 1 earlier task for this poster (×0.5 each)"
        );
        // Far past where the bonus rounds to nothing.
        let (cut, _) = s.discount_for_pair(pair(u32::MAX, false));
        assert_eq!(cut.bonus, Money::ZERO);
    }

    #[test]
    fn reciprocal_pair_bonus_is_withheld() {
        let s = settle(Money::from_cents(1000), 100, Level::Master);
        let (cut, why) = s.discount_for_pair(pair(0, true));
        assert_eq!(
            (cut.from_escrow, cut.bonus, cut.refund),
            (s.from_escrow, Money::ZERO, s.refund)
        );
        assert_eq!(
            why.unwrap().to_string(),
            "level bonus cut from 10.00 to 0.00: reciprocal pair (the poster completed a task \
             this worker posted)"
        );
        // No bonus wanted (novice): nothing to cut, nothing to tell.
        let novice = settle(Money::from_cents(1000), 100, Level::Novice);
        assert_eq!(novice.discount_for_pair(pair(3, true)), (novice, None));
    }

    #[test]
    fn operator_tasks_are_no_pair() {
        let s = settle(Money::from_cents(1000), 100, Level::Expert);
        assert_eq!(s.discount_for_pair(PairHistory::default()), (s, None));
    }

    proptest! {
        #[test]
        fn capped_bonus_never_exceeds_the_pool(reward in 1i64..1_000_000_000, q in 0u8..=100, l in 0usize..4, pool in -10i64..2_000_000_000) {
            let level = [Level::Novice, Level::Intermediate, Level::Expert, Level::Master][l];
            let s = settle(Money::from_cents(reward), q, level);
            let (c, cut) = s.cap_bonus(Money::from_cents(pool));
            prop_assert!(c.bonus.cents() >= 0 && c.bonus.cents() <= pool.max(0));
            prop_assert_eq!(c.bonus.cents(), s.bonus.cents().min(pool.max(0)));
            prop_assert_eq!((c.from_escrow, c.refund), (s.from_escrow, s.refund));
            prop_assert_eq!(cut.is_some(), s.bonus.cents() > pool.max(0));
        }

        #[test]
        fn pair_discount_only_lowers_the_bonus(reward in 1i64..1_000_000_000_000, q in 0u8..=100, l in 0usize..4, earlier in prop_oneof![0u32..70, any::<u32>()], reciprocal: bool) {
            let level = [Level::Novice, Level::Intermediate, Level::Expert, Level::Master][l];
            let s = settle(Money::from_cents(reward), q, level);
            let (d, cut) = s.discount_for_pair(pair(earlier, reciprocal));
            prop_assert_eq!((d.from_escrow, d.refund), (s.from_escrow, s.refund));
            prop_assert!(d.bonus.cents() >= 0 && d.bonus <= s.bonus);
            prop_assert_eq!(cut.is_some(), d.bonus < s.bonus);
            if reciprocal {
                prop_assert_eq!(d.bonus, Money::ZERO);
            }
            if let Some(cut) = cut {
                prop_assert_eq!((cut.wanted, cut.paid), (s.bonus, d.bonus));
            }
        }

        /// However often one worker works for one poster, the bonuses it draws from the pool for
        /// that add up to at most twice the first.
        #[test]
        fn a_pair_draws_at_most_two_bonuses(reward in 1i64..1_000_000_000_000, q in 0u8..=100, l in 1usize..4, repeats in 1u32..200) {
            let level = [Level::Novice, Level::Intermediate, Level::Expert, Level::Master][l];
            let s = settle(Money::from_cents(reward), q, level);
            let paid: Vec<i64> = (0..repeats)
                .map(|n| s.discount_for_pair(pair(n, false)).0.bonus.cents())
                .collect();
            prop_assert!(paid.windows(2).all(|w| w[1] <= w[0]), "{:?}", paid);
            prop_assert!(paid.iter().sum::<i64>() <= 2 * s.bonus.cents());
            // Exactly halved, rounded down, at each repeat.
            prop_assert!(paid.windows(2).all(|w| w[1] == w[0] / 2), "{:?}", paid);
        }

        #[test]
        fn settlement_conserves_escrow(reward in 1i64..1_000_000_000_000, q in 0u8..=100, l in 0usize..4) {
            let level = [Level::Novice, Level::Intermediate, Level::Expert, Level::Master][l];
            let s = settle(Money::from_cents(reward), q, level);
            prop_assert_eq!(s.from_escrow.cents() + s.refund.cents(), reward);
            prop_assert!(s.from_escrow.cents() >= 0 && s.refund.cents() >= 0 && s.bonus.cents() >= 0);
            prop_assert!(s.payout().cents() <= reward * 2);
        }
    }
}

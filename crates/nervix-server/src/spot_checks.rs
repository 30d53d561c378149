//! The spot-check sample: which would-be accepted submissions are held for a person's
//! review. One sampler per node, shared by every request.

use chrono::{DateTime, Utc};
use nervix_core::spot_check::Sampler;
use nervix_store::Decision;
use parking_lot::Mutex;

pub struct SpotChecks {
    sampler: Mutex<Sampler>,
    review_timeout: chrono::Duration,
}

impl SpotChecks {
    /// `seed`: a fixed seed for a reproducible sample; `None`: the OS's randomness.
    pub fn new(rate: f64, seed: Option<u64>, review_timeout: chrono::Duration) -> Self {
        let seed = seed.unwrap_or_else(rand::random);
        SpotChecks {
            sampler: Mutex::new(Sampler::new(rate, seed)),
            review_timeout,
        }
    }

    /// What becomes of a submission that scored `score` against `threshold`: rejected under
    /// it; else held for a spot check when sampled, or accepted.
    pub fn decide(&self, score: u8, threshold: u8, now: DateTime<Utc>) -> Decision {
        if score < threshold {
            Decision::Reject
        } else if self.sampler.lock().hold() {
            Decision::Hold {
                review_deadline: now + self.review_timeout,
            }
        } else {
            Decision::Accept
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_work_that_would_be_accepted_is_sampled() {
        let now = Utc::now();
        let always = SpotChecks::new(1.0, Some(7), chrono::Duration::hours(72));
        assert_eq!(always.decide(59, 60, now), Decision::Reject);
        assert_eq!(
            always.decide(60, 60, now),
            Decision::Hold {
                review_deadline: now + chrono::Duration::hours(72)
            }
        );
        let never = SpotChecks::new(0.0, None, chrono::Duration::hours(72));
        assert_eq!(never.decide(100, 60, now), Decision::Accept);
        assert_eq!(never.decide(0, 60, now), Decision::Reject);
    }
}

//! A peer review as a reviewer sends it: a score and what to tell the worker.

use crate::{FieldError, FieldErrors};

/// A parsed review: score 0..=100, feedback of at most [`Review::MAX_FEEDBACK_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub score: u8,
    pub feedback: String,
}

impl Review {
    pub const MAX_FEEDBACK_CHARS: usize = 4_000;

    /// Every field's error at once, under its wire name.
    pub fn parse(score: i64, feedback: Option<&str>) -> Result<Review, FieldErrors> {
        let mut errors = FieldErrors::default();
        let score = errors.check(
            u8::try_from(score)
                .ok()
                .filter(|s| *s <= 100)
                .ok_or_else(|| FieldError::new("score", "must be an integer from 0 to 100")),
        );
        let feedback = feedback.unwrap_or_default().trim();
        if feedback.chars().count() > Self::MAX_FEEDBACK_CHARS {
            errors.push("feedback", "must be at most 4000 characters");
        }
        errors.into_result()?;
        Ok(Review {
            score: score.unwrap_or_default(),
            feedback: feedback.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bounds() {
        assert_eq!(Review::parse(0, None).unwrap().score, 0);
        assert_eq!(Review::parse(100, Some(" ok ")).unwrap().feedback, "ok");
        let e = Review::parse(101, Some(&"x".repeat(4001))).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["score", "feedback"]);
        assert!(Review::parse(-1, None).is_err());
    }
}

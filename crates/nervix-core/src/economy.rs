//! Inputs of the economy: where a withdrawal goes, and amounts the operator or an agent moves.

use crate::{FieldError, Money};

/// Where a withdrawal is paid: an opaque reference the operator's payout process understands
/// (an account, an address). Trimmed, 1 to 256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination(String);

impl Destination {
    pub const FIELD: &'static str = "destination";
    pub const MAX_CHARS: usize = 256;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(FieldError::new(Self::FIELD, "must not be empty"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                Self::FIELD,
                "must be at most 256 characters",
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(FieldError::new(
                Self::FIELD,
                "must not contain control characters",
            ));
        }
        Ok(Destination(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount of money moved on request (a withdrawal, a bonus pool funding, a grant): more
/// than zero and at most `max`.
pub fn transfer_amount(field: &str, amount: Money, max: Money) -> Result<Money, FieldError> {
    if amount.is_positive() && amount <= max {
        Ok(amount)
    } else {
        Err(FieldError::new(
            field,
            format!("must be greater than 0 and at most {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            Destination::parse("  iban:DE89  ").unwrap().as_str(),
            "iban:DE89"
        );
        assert!(Destination::parse("").is_err());
        assert!(Destination::parse("   ").is_err());
        assert!(Destination::parse("a\nb").is_err());
        assert!(Destination::parse(&"d".repeat(256)).is_ok());
        assert_eq!(
            Destination::parse(&"d".repeat(257)).unwrap_err().field,
            Destination::FIELD
        );
    }

    #[test]
    fn amounts() {
        let max = Money::from_cents(100);
        assert!(transfer_amount("amount", Money::from_cents(1), max).is_ok());
        assert!(transfer_amount("amount", max, max).is_ok());
        assert_eq!(
            transfer_amount("amount", Money::ZERO, max)
                .unwrap_err()
                .field,
            "amount"
        );
        assert!(transfer_amount("amount", Money::from_cents(-5), max).is_err());
        assert!(transfer_amount("amount", Money::from_cents(101), max).is_err());
    }
}

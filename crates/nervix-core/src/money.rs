//! Money is integer cents. On the wire it is a decimal string with exactly two decimals
//! (`"50.00"`); requests may send a JSON number or a decimal string with at most two decimals.
//! Floats never take part in arithmetic: a JSON number is read back from its shortest decimal
//! text, which is exactly what the client wrote for any amount with two decimals.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a decimal amount with at most two decimals")]
    Malformed,
    #[error("amount is too large")]
    Overflow,
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_cents(cents: i64) -> Self {
        Money(cents)
    }

    pub const fn cents(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, o: Money) -> Option<Money> {
        self.0.checked_add(o.0).map(Money)
    }

    pub fn checked_sub(self, o: Money) -> Option<Money> {
        self.0.checked_sub(o.0).map(Money)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 2 {
            return Err(MoneyError::Malformed);
        }
        if body.ends_with('.') {
            return Err(MoneyError::Malformed);
        }
        let whole: i64 = int.parse().map_err(|_| MoneyError::Overflow)?;
        let frac_cents: i64 = match frac.len() {
            0 => 0,
            1 => i64::from(frac.as_bytes()[0] - b'0') * 10,
            _ => frac.parse().map_err(|_| MoneyError::Malformed)?,
        };
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac_cents))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money(if neg { -cents } else { cents }))
    }
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.trim().parse().map_err(D::Error::custom),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    i.checked_mul(100)
                        .map(Money)
                        .ok_or_else(|| D::Error::custom(MoneyError::Overflow))
                } else {
                    // `Number`'s Display is the shortest text that round-trips the parsed f64,
                    // i.e. the decimal the client wrote when it has few significant digits.
                    n.to_string().parse().map_err(D::Error::custom)
                }
            }
            _ => Err(D::Error::custom(MoneyError::Malformed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display() {
        assert_eq!(Money::from_cents(5000).to_string(), "50.00");
        assert_eq!(Money::from_cents(5).to_string(), "0.05");
        assert_eq!(Money::from_cents(-150).to_string(), "-1.50");
        assert_eq!(Money::ZERO.to_string(), "0.00");
    }

    #[test]
    fn parse_strings() {
        assert_eq!("50".parse::<Money>().unwrap().cents(), 5000);
        assert_eq!("50.5".parse::<Money>().unwrap().cents(), 5050);
        assert_eq!("50.05".parse::<Money>().unwrap().cents(), 5005);
        assert_eq!("0.01".parse::<Money>().unwrap().cents(), 1);
        for bad in [
            "", ".", "1.", ".5", "1.234", "1e3", "abc", "1,00", "--1", "1.-1", "+1",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad}");
        }
        assert_eq!(
            "99999999999999999999".parse::<Money>(),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn parse_json() {
        let m: Money = serde_json::from_str("50").unwrap();
        assert_eq!(m.cents(), 5000);
        let m: Money = serde_json::from_str("0.1").unwrap();
        assert_eq!(m.cents(), 10);
        let m: Money = serde_json::from_str("19.99").unwrap();
        assert_eq!(m.cents(), 1999);
        let m: Money = serde_json::from_str("\"12.30\"").unwrap();
        assert_eq!(m.cents(), 1230);
        assert!(serde_json::from_str::<Money>("1.001").is_err());
        assert!(serde_json::from_str::<Money>("true").is_err());
        assert_eq!(
            serde_json::to_string(&Money::from_cents(1230)).unwrap(),
            "\"12.30\""
        );
    }

    proptest! {
        #[test]
        fn string_roundtrip(c in -1_000_000_000_000i64..1_000_000_000_000) {
            let m = Money::from_cents(c);
            prop_assert_eq!(m.to_string().parse::<Money>().unwrap(), m);
        }

        #[test]
        fn json_number_with_two_decimals_is_exact(c in 0i64..10_000_000_000) {
            let text = Money::from_cents(c).to_string();
            let m: Money = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(m.cents(), c);
        }
    }
}

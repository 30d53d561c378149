//! Fixed-point decimals with two fractional digits, as the API writes money (`"50.00"`) and
//! reputation scores. Kept as an integer number of hundredths so no float rounding creeps into
//! amounts a test or an agent compares.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A decimal with exactly two fractional digits. For money, one unit of [`Decimal2::cents`] is a
/// cent. Serializes as a string (`"1.50"`); deserializes from such a string or a JSON number with
/// at most two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal2(i64);

/// Text that is not a decimal with at most two fractional digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a decimal with at most two fractional digits: {0:?}")]
pub struct ParseDecimalError(String);

impl Decimal2 {
    /// Zero.
    pub const ZERO: Decimal2 = Decimal2(0);

    /// The decimal with this many hundredths (cents, for money).
    pub const fn from_cents(cents: i64) -> Self {
        Decimal2(cents)
    }

    /// The number of hundredths (cents, for money).
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// For display and charts only; do not do arithmetic on money through this.
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Decimal2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl FromStr for Decimal2 {
    type Err = ParseDecimalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDecimalError(s.to_owned());
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(frac)
            || frac.len() > 2
            || body.ends_with('.')
        {
            return Err(err());
        }
        let whole: i64 = whole.parse().map_err(|_| err())?;
        // "1.5" is 50 hundredths, "1.05" is 5.
        let frac = match frac.len() {
            0 => 0,
            1 => i64::from(frac.as_bytes()[0] - b'0') * 10,
            _ => frac.parse().map_err(|_| err())?,
        };
        let magnitude = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac))
            .ok_or_else(err)?;
        Ok(Decimal2(if negative { -magnitude } else { magnitude }))
    }
}

impl Serialize for Decimal2 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal2 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DecimalVisitor)
    }
}

struct DecimalVisitor;

impl Visitor<'_> for DecimalVisitor {
    type Value = Decimal2;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal string or number with at most two fractional digits")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal2, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal2, E> {
        v.checked_mul(100)
            .map(Decimal2)
            .ok_or_else(|| E::custom("decimal out of range"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal2, E> {
        i64::try_from(v)
            .map_err(|_| E::custom("decimal out of range"))
            .and_then(|v| self.visit_i64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal2, E> {
        // Rust prints the shortest text that reads back as the same f64, which for a value
        // written with two decimals is exactly that text; parsing it avoids float rounding.
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for (text, cents, shown) in [
            ("50.00", 5000, "50.00"),
            ("50", 5000, "50.00"),
            ("1.5", 150, "1.50"),
            ("1.05", 105, "1.05"),
            ("0.01", 1, "0.01"),
            ("-2.30", -230, "-2.30"),
            ("0", 0, "0.00"),
        ] {
            let d: Decimal2 = text.parse().unwrap();
            assert_eq!(d.cents(), cents, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
        for bad in [
            "", ".", "1.", ".5", "1.234", "1,00", "abc", "--1", "1e3", " 1",
        ] {
            assert!(bad.parse::<Decimal2>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        let d: Decimal2 = serde_json::from_str("\"12.34\"").unwrap();
        assert_eq!(d.cents(), 1234);
        let d: Decimal2 = serde_json::from_str("12.34").unwrap();
        assert_eq!(d.cents(), 1234);
        let d: Decimal2 = serde_json::from_str("0.1").unwrap();
        assert_eq!(d.cents(), 10);
        let d: Decimal2 = serde_json::from_str("7").unwrap();
        assert_eq!(d.cents(), 700);
        assert!(serde_json::from_str::<Decimal2>("0.125").is_err());
        assert_eq!(
            serde_json::to_string(&Decimal2::from_cents(100)).unwrap(),
            "\"1.00\""
        );
    }
}

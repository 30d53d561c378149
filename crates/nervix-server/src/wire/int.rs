//! Integers in request bodies. JSON Schema (and so the OpenAPI document) calls `3.0` an
//! integer, and some JSON encoders write whole numbers that way, so an integer field takes any
//! JSON number without a fractional part; `3.5` is refused naming the field.

use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// For `Option<i64>` fields: null or absent is `None`.
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<Number>::deserialize(d)?
        .map(|n| whole(&n).ok_or_else(|| serde::de::Error::custom("must be an integer")))
        .transpose()
}

/// For required `i64` fields.
pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = Number::deserialize(d)?;
    whole(&n).ok_or_else(|| serde::de::Error::custom("must be an integer"))
}

/// The integer a JSON number stands for, if it has no fractional part and fits an `i64`.
fn whole(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // Every f64 in this range with no fractional part converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "optional")]
        n: Option<i64>,
    }

    fn n(json: &str) -> Result<Option<i64>, String> {
        serde_json::from_str::<T>(json)
            .map(|t| t.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_any_spelling() {
        assert_eq!(n(r#"{"n": 3}"#), Ok(Some(3)));
        assert_eq!(n(r#"{"n": 3.0}"#), Ok(Some(3)));
        assert_eq!(n(r#"{"n": 1e2}"#), Ok(Some(100)));
        assert_eq!(n(r#"{"n": -0.0}"#), Ok(Some(0)));
        assert_eq!(n(r#"{"n": null}"#), Ok(None));
        assert_eq!(n("{}"), Ok(None));
        for bad in [
            r#"{"n": 3.5}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": 9223372036854775808}"#,
            r#"{"n": "3"}"#,
        ] {
            assert!(n(bad).is_err(), "{bad}");
        }
    }
}

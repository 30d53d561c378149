//! `non_empty` and `size_limit`: the checks every kind of work gets first.

use std::io;

use serde_json::Value;

use super::{Analysis, Check, CheckResult};

/// `non_empty`: the content says something. Blank strings, `null`, `{}` and `[]` fail; any
/// number or boolean counts as content (for kind json, `0` or `false` can be the answer).
#[derive(Debug, Clone, Copy, Default)]
pub struct NonEmpty;

impl NonEmpty {
    pub const NAME: &'static str = "non_empty";
}

impl Check for NonEmpty {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        let problem = match s.content {
            Value::Null => Some("content is null"),
            Value::String(t) if t.trim().is_empty() => Some("content is empty or only whitespace"),
            Value::Array(a) if a.is_empty() => Some("content is an empty array"),
            Value::Object(o) if o.is_empty() => Some("content is an empty object"),
            _ => None,
        };
        Some(match problem {
            Some(p) => CheckResult::fail(Self::NAME, 0, p),
            None => CheckResult::pass(Self::NAME, "content is not empty"),
        })
    }
}

/// `size_limit`: the content, serialized as compact JSON (as it is stored), is at most
/// `max_bytes` bytes.
#[derive(Debug, Clone, Copy)]
pub struct SizeLimit {
    pub max_bytes: usize,
}

impl SizeLimit {
    pub const NAME: &'static str = "size_limit";
}

impl Check for SizeLimit {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        let size = serialized_len(s.content);
        let details = format!("content is {size} bytes (limit {} bytes)", self.max_bytes);
        Some(if size <= self.max_bytes {
            CheckResult::pass(Self::NAME, details)
        } else {
            CheckResult::fail(Self::NAME, 0, details)
        })
    }
}

/// Length of `value` as compact JSON, counted without materialising the text.
fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::testing::{run_one, sub};
    use crate::task::TaskKind;
    use serde_json::json;

    #[test]
    fn non_empty() {
        for ok in [
            json!("hello"),
            json!(0),
            json!(false),
            json!([1]),
            json!({"a": null}),
            json!("  x "),
        ] {
            let r = run_one(&NonEmpty, &sub(TaskKind::Json, None, &ok));
            assert!(r.passed, "{ok}");
            assert_eq!(r.score, 100);
        }
        for (bad, why) in [
            (json!(""), "empty"),
            (json!(" \n\t"), "whitespace"),
            (json!(null), "null"),
            (json!([]), "empty array"),
            (json!({}), "empty object"),
        ] {
            let r = run_one(&NonEmpty, &sub(TaskKind::Text, None, &bad));
            assert!(!r.passed, "{bad}");
            assert_eq!(r.score, 0);
            assert!(r.details.contains(why), "{}", r.details);
        }
    }

    #[test]
    fn size_limit() {
        let content = json!("abc"); // serialized: "abc" with quotes = 5 bytes
        let r = run_one(
            &SizeLimit { max_bytes: 5 },
            &sub(TaskKind::Text, None, &content),
        );
        assert!(r.passed);
        assert_eq!(r.details, "content is 5 bytes (limit 5 bytes)");

        let r = run_one(
            &SizeLimit { max_bytes: 4 },
            &sub(TaskKind::Text, None, &content),
        );
        assert!(!r.passed);
        assert_eq!(r.score, 0);
        assert_eq!(r.details, "content is 5 bytes (limit 4 bytes)");

        let nested = json!({"a": [1, 2, {"b": "é\n"}]});
        assert_eq!(
            serialized_len(&nested),
            serde_json::to_vec(&nested).unwrap().len()
        );
    }
}

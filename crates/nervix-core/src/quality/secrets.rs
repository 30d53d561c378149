//! `secret_scan`: credentials in the work, found by pattern and by entropy, named by rule and
//! place and never echoed.

use std::fmt::Write as _;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::{Analysis, Check, CheckResult, LineIndex};

/// How many findings the details place; the rest are only counted.
const MAX_SHOWN: usize = 10;

/// A generic assignment's value is reported when its Shannon entropy is at least this many
/// bits per character: random keys of 16+ characters reach 3.8–4.5, words and placeholders
/// stay below 3.5.
const MIN_ENTROPY: f64 = 3.5;
const MIN_GENERIC_LEN: usize = 12;

/// A rule: a name shown to the submitter, and a pattern.
struct Rule {
    name: &'static str,
    pattern: Regex,
}

fn rule(name: &'static str, pattern: &str) -> Rule {
    // The patterns are fixed and covered by the tests: compiling them cannot fail.
    #[allow(clippy::unwrap_used)]
    Rule {
        name,
        pattern: Regex::new(pattern).unwrap(),
    }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        rule(
            "aws_access_key_id",
            r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
        ),
        rule(
            "private_key",
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        ),
        rule(
            "github_token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        ),
        rule(
            "slack_token",
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9_/]{20,}",
        ),
        rule("stripe_key", r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b"),
        rule(
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        ),
    ]
});

/// `name = value`, `name: value`, `"name": "value"`, `name => value`, `name := value`, where
/// the name mentions a secret. The value is judged by [`generic_value`].
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)]
    Regex::new(
        r#"(?i)["']?[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key|credentials?)[a-z0-9_.-]*["']?\s*(?::=|=>|[:=])\s*(["']?)([^\s"'`,;]+)"#,
    )
    .unwrap()
});

/// Shannon entropy of `s` in bits per character.
pub(crate) fn shannon_entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// Does an assigned value look like a credential rather than code, a word or a placeholder?
/// An unquoted value needs a digit: without one it is far more often an identifier
/// (`token = config.api_token`) than a key.
fn generic_value(value: &str, quoted: bool) -> bool {
    (quoted || value.chars().any(|c| c.is_ascii_digit()))
        && value.chars().count() >= MIN_GENERIC_LEN
        // A call, an interpolation or a reference is code, not a literal.
        && !value.contains(['(', ')', '{', '}', '$', '<', '>', '[', ']'])
        && !value.starts_with("process.env")
        && !value.starts_with("os.environ")
        && shannon_entropy(value) >= MIN_ENTROPY
}

/// Byte offsets and rule names of the credentials in `text`, in order of offset.
fn scan(text: &str) -> Vec<(usize, &'static str)> {
    let mut found: Vec<(usize, &'static str)> = Vec::new();
    for rule in RULES.iter() {
        found.extend(rule.pattern.find_iter(text).map(|m| (m.start(), rule.name)));
    }
    for caps in ASSIGNMENT.captures_iter(text) {
        let (Some(all), Some(value)) = (caps.get(0), caps.get(2)) else {
            continue;
        };
        let quoted = caps.get(1).is_some_and(|q| !q.is_empty());
        // A value a specific rule already names is reported once, under that rule.
        let known = found
            .iter()
            .any(|(o, _)| (value.start()..value.end()).contains(o));
        if !known && generic_value(value.as_str(), quoted) {
            found.push((all.start(), "generic_secret"));
        }
    }
    found.sort_unstable();
    found
}

/// The strings of a JSON document as lines of one text to scan (`key: value` for object
/// members, so the assignment rule sees names), with the offset each string's line starts at,
/// in document order.
///
/// JSON pointers are not built here: a large document has tens of thousands of strings and
/// usually no finding, so cloning a pointer per string cost more than the scan itself.
/// [`pointers`] names the few strings that need it afterwards.
fn flatten(value: &Value) -> (String, Vec<usize>) {
    fn walk(v: &Value, key: Option<&str>, text: &mut String, starts: &mut Vec<usize>) {
        match v {
            Value::String(s) => {
                starts.push(text.len());
                if let Some(k) = key {
                    text.push_str(k);
                    text.push_str(": ");
                }
                text.push_str(s);
                text.push('\n');
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, None, text, starts);
                }
            }
            Value::Object(members) => {
                for (k, item) in members {
                    walk(item, Some(k), text, starts);
                }
            }
            _ => {}
        }
    }
    let (mut text, mut starts) = (String::new(), Vec::new());
    walk(value, None, &mut text, &mut starts);
    (text, starts)
}

/// The JSON pointers of the strings numbered `wanted` (ascending; 0-based, in the document
/// order of [`flatten`]), `(root)` for the document itself, found in one walk.
fn pointers(value: &Value, wanted: &[usize]) -> Vec<String> {
    struct Walk<'w> {
        wanted: &'w [usize],
        /// Strings passed so far.
        seen: usize,
        path: String,
        out: Vec<String>,
    }
    impl Walk<'_> {
        /// `false` once every wanted pointer is found, to stop early.
        fn walk(&mut self, v: &Value) -> bool {
            match v {
                Value::String(_) => {
                    while self.wanted.first() == Some(&self.seen) {
                        self.out.push(if self.path.is_empty() {
                            "(root)".to_owned()
                        } else {
                            self.path.clone()
                        });
                        self.wanted = &self.wanted[1..];
                    }
                    self.seen += 1;
                    !self.wanted.is_empty()
                }
                Value::Array(items) => items.iter().enumerate().all(|(i, item)| {
                    let len = self.path.len();
                    let _ = write!(self.path, "/{i}");
                    let more = self.walk(item);
                    self.path.truncate(len);
                    more
                }),
                Value::Object(members) => members.iter().all(|(k, item)| {
                    let len = self.path.len();
                    self.path.push('/');
                    // RFC 6901 escaping, `~` first.
                    self.path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    let more = self.walk(item);
                    self.path.truncate(len);
                    more
                }),
                _ => true,
            }
        }
    }
    let mut w = Walk {
        wanted,
        seen: 0,
        path: String::new(),
        out: Vec::with_capacity(wanted.len()),
    };
    if !wanted.is_empty() {
        w.walk(value);
    }
    w.out
}

/// `secret_scan` (every kind): no AWS access key id, private key block, GitHub, Slack or
/// Stripe token, JWT, or high-entropy value assigned to a name like `password` or `api_key`.
/// Findings are named by rule and place (`line:column`, or the JSON pointer of the string);
/// the value itself is never repeated.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretScan;

impl SecretScan {
    pub const NAME: &'static str = "secret_scan";
}

impl Check for SecretScan {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        // Only the first MAX_SHOWN findings are placed; the rest are only counted.
        let (n, places): (usize, Vec<String>) = match s.text() {
            Some(text) => {
                let lines: &LineIndex = s.lines();
                let found = scan(text);
                let places = found
                    .iter()
                    .take(MAX_SHOWN)
                    .map(|&(o, rule)| format!("{rule} at {}", lines.position(text, o)))
                    .collect();
                (found.len(), places)
            }
            None => {
                let (text, starts) = flatten(s.content);
                let found = scan(&text);
                let shown = &found[..found.len().min(MAX_SHOWN)];
                // The string each finding is in: the last one starting at or before it.
                let strings: Vec<usize> = shown
                    .iter()
                    .map(|&(o, _)| {
                        starts
                            .partition_point(|&start| start <= o)
                            .saturating_sub(1)
                    })
                    .collect();
                let paths = pointers(s.content, &strings);
                let places = shown
                    .iter()
                    .zip(&paths)
                    .map(|((_, rule), path)| format!("{rule} at {path}"))
                    .collect();
                (found.len(), places)
            }
        };
        Some(if n == 0 {
            CheckResult::pass(Self::NAME, "no credentials found")
        } else {
            let mut details = format!(
                "{n} possible credential{} (values not shown): {}",
                if n == 1 { "" } else { "s" },
                places.join("; ")
            );
            if n > MAX_SHOWN {
                details.push_str(&format!("; and {} more", n - MAX_SHOWN));
            }
            CheckResult::fail(Self::NAME, 0, details)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::testing::{run_one, sub};
    use crate::task::TaskKind;
    use serde_json::json;

    // Built at run time so that this file holds no credential-shaped literal.
    fn secrets() -> Vec<(&'static str, String)> {
        let tail = "Zq7Rt2Lm9Xw4Kp8Vn3Bc6Hd1Jf5Gs0Ty";
        vec![
            ("aws_access_key_id", format!("AKIA{}", "QW7RT2LM9XW4KP8V")),
            (
                "private_key",
                format!(
                    "-----BEGIN RSA {}-----\nMIIEow{tail}\n-----END RSA PRIVATE KEY-----",
                    "PRIVATE KEY"
                ),
            ),
            ("github_token", format!("ghp_{tail}{}", "Ab12")),
            ("github_token", format!("github_pat_{tail}_{tail}")),
            ("slack_token", format!("xoxb-{}-{tail}", "1234567890")),
            ("stripe_key", format!("sk_live_{tail}")),
            (
                "jwt",
                format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.{tail}"),
            ),
            ("generic_secret", format!("password = \"{tail}\"")),
            ("generic_secret", format!("API_KEY: {tail}")),
            ("generic_secret", format!("\"client_secret\": \"{tail}\"")),
        ]
    }

    /// The part of a sample that must never appear in details.
    fn core(sample: &str) -> &str {
        sample
            .rsplit(['"', ' ', '\n'])
            .find(|p| p.len() >= 12)
            .unwrap_or(sample)
    }

    #[test]
    fn finds_each_rule_and_never_echoes() {
        for (rule, secret) in secrets() {
            let content = json!(format!("Here is the config:\n  {secret}\nthanks"));
            let r = run_one(&SecretScan, &sub(TaskKind::Text, None, &content));
            assert!(!r.passed, "{rule}: {}", r.details);
            assert_eq!(r.score, 0);
            assert!(
                r.details.contains(&format!("{rule} at 2:3")),
                "{rule}: {}",
                r.details
            );
            assert!(
                !r.details.contains(core(&secret)),
                "{rule} echoed: {}",
                r.details
            );
            assert!(
                !r.details.contains("Zq7Rt2"),
                "{rule} echoed: {}",
                r.details
            );
        }
    }

    #[test]
    fn json_findings_name_the_pointer() {
        let tail = "Zq7Rt2Lm9Xw4Kp8Vn3Bc6Hd1Jf5Gs0Ty";
        let content = json!({"service": {"api_key": tail, "name": "x"}, "list": ["ok", format!("ghp_{tail}Ab12")], "a/b": {"token": tail}});
        let r = run_one(&SecretScan, &sub(TaskKind::Json, None, &content));
        assert!(!r.passed);
        assert!(
            r.details
                .starts_with("3 possible credentials (values not shown): "),
            "{}",
            r.details
        );
        assert!(
            r.details.contains("generic_secret at /service/api_key"),
            "{}",
            r.details
        );
        assert!(
            r.details.contains("github_token at /list/1"),
            "{}",
            r.details
        );
        assert!(
            r.details.contains("generic_secret at /a~1b/token"),
            "{}",
            r.details
        );
        assert!(!r.details.contains("Zq7Rt2"), "{}", r.details);
    }

    #[test]
    fn json_findings_beyond_the_shown_are_counted_and_pointers_stay_in_order() {
        let tail = "Zq7Rt2Lm9Xw4Kp8Vn3Bc6Hd1Jf5Gs0Ty";
        let key = format!("AKIA{}", "QW7RT2LM9XW4KP8V");
        // Twelve findings: two in one string, one under a key needing `~` escaping, the rest
        // in an array after clean strings and non-strings.
        let mut items = vec![json!("clean"), json!(3), json!(null)];
        items.extend((0..9).map(|_| json!(key.clone())));
        let content = json!({
            "a~b": {"password": tail},
            "both": format!("{key} and {key}"),
            "list": items,
        });
        let r = run_one(&SecretScan, &sub(TaskKind::Json, None, &content));
        assert!(
            r.details
                .starts_with("12 possible credentials (values not shown): "),
            "{}",
            r.details
        );
        let places = r
            .details
            .split_once(": ")
            .unwrap()
            .1
            .split("; ")
            .collect::<Vec<_>>();
        let mut expected = vec![
            "generic_secret at /a~0b/password".to_owned(),
            "aws_access_key_id at /both".to_owned(),
            "aws_access_key_id at /both".to_owned(),
        ];
        expected.extend((3..10).map(|i| format!("aws_access_key_id at /list/{i}")));
        expected.push("and 2 more".to_owned());
        assert_eq!(places, expected, "{}", r.details);
    }

    #[test]
    fn ordinary_content_passes() {
        for clean in [
            "password = get_password()",
            "let token = std::env::var(\"TOKEN\")?;",
            "api_key: <YOUR_API_KEY>",
            "password: changeme",
            "secret = process.env.SECRET_VALUE_FOR_APP",
            "The token bucket refills at 10 per second; see AKIA docs.",
            "password = \"aaaaaaaaaaaaaaaaaaaa\"",
            "auth_token = config.get_token",
        ] {
            let content = json!(clean);
            let r = run_one(&SecretScan, &sub(TaskKind::Code, None, &content));
            assert!(r.passed, "{clean}: {}", r.details);
            assert_eq!(r.details, "no credentials found");
        }
        let r = run_one(&SecretScan, &sub(TaskKind::Json, None, &json!({"n": 1})));
        assert!(r.passed);
    }

    #[test]
    fn entropy() {
        assert!(shannon_entropy("") == 0.0);
        assert!(shannon_entropy("aaaa") == 0.0);
        assert!((shannon_entropy("abab") - 1.0).abs() < 1e-9);
        assert!((shannon_entropy("abcdefgh") - 3.0).abs() < 1e-9);
        assert!(shannon_entropy("Zq7Rt2Lm9Xw4Kp8Vn3Bc6Hd1Jf5Gs0Ty") > 4.5);
    }

    #[test]
    fn many_findings_are_counted() {
        let key = format!("AKIA{}", "QW7RT2LM9XW4KP8V");
        let content = json!(format!("{key}\n").repeat(12));
        let r = run_one(&SecretScan, &sub(TaskKind::Text, None, &content));
        assert!(
            r.details.starts_with("12 possible credentials"),
            "{}",
            r.details
        );
        assert!(r.details.ends_with("; and 2 more"), "{}", r.details);
    }
}

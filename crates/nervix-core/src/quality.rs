//! Automated checks run on every submission, and the quality score derived from them.
//!
//! A check is anything implementing [`Check`]; [`CheckPipeline`] runs a list of them and keeps
//! the results of those that apply. New checks (syntax, lint, secret scanning, ...) plug in with
//! [`CheckPipeline::with`] and need no change here.

use std::fmt::Write as _;
use std::io;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::TaskKind;
use crate::FieldError;

/// Highest quality score a submission can get while any check fails; below the default
/// acceptance threshold of 60, so a failed check alone gets work rejected.
pub const FAILED_CHECK_CAP: u8 = 40;

/// How many schema violations `json_schema` spells out; the rest are only counted.
const MAX_SCHEMA_ERRORS_SHOWN: usize = 5;

/// The wire field that [`normalize_content`] errors point at.
const CONTENT_FIELD: &str = "submission_data.content";

/// The outcome of one check, as it appears in a submission's `checks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// 0..=100.
    pub score: u8,
    /// Human-readable explanation, shown to the submitter.
    pub details: String,
}

impl CheckResult {
    /// A passed check with full marks.
    pub fn pass(name: &str, details: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            passed: true,
            score: 100,
            details: details.into(),
        }
    }

    /// A failed check; `score` above 100 is clamped.
    pub fn fail(name: &str, score: u8, details: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            passed: false,
            score: score.min(100),
            details: details.into(),
        }
    }
}

/// What the checks look at.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    pub kind: TaskKind,
    /// The task's `output_schema`, if it has one.
    pub output_schema: Option<&'a Value>,
    /// The content after [`normalize_content`].
    pub content: &'a Value,
}

/// One automated check.
///
/// Checks are pure and cheap enough to run inline before the submit response; they must not
/// panic on any input.
pub trait Check: Send + Sync {
    /// Stable snake_case name, reported as the result's `name`.
    fn name(&self) -> &'static str;

    /// `None` when the check does not apply to this submission (say, a JSON check on text).
    fn run(&self, s: &Submission<'_>) -> Option<CheckResult>;
}

/// An ordered list of checks.
#[derive(Default)]
pub struct CheckPipeline {
    checks: Vec<Box<dyn Check>>,
}

impl std::fmt::Debug for CheckPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|c| c.name()))
            .finish()
    }
}

impl CheckPipeline {
    /// A pipeline without checks.
    pub fn new() -> Self {
        Self::default()
    }

    /// `non_empty`, `size_limit(max_content_bytes)` and `json_schema` (kind json only).
    pub fn standard(max_content_bytes: usize) -> Self {
        Self::new()
            .with(NonEmpty)
            .with(SizeLimit {
                max_bytes: max_content_bytes,
            })
            .with(JsonSchema)
    }

    /// Appends `check`; checks run in the order they were added.
    pub fn with(mut self, check: impl Check + 'static) -> Self {
        self.checks.push(Box::new(check));
        self
    }

    /// Names of the checks, in run order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.checks.iter().map(|c| c.name())
    }

    /// Results of the checks that apply to `s`, in run order.
    pub fn run(&self, s: &Submission<'_>) -> Vec<CheckResult> {
        self.checks.iter().filter_map(|c| c.run(s)).collect()
    }
}

/// 0..=100 from the checks: the rounded mean of their scores, capped at [`FAILED_CHECK_CAP`]
/// when any failed. No checks → 0: nothing vouches for the work.
pub fn quality_score(checks: &[CheckResult]) -> u8 {
    if checks.is_empty() {
        return 0;
    }
    let n = checks.len() as u64;
    let sum: u64 = checks.iter().map(|c| u64::from(c.score.min(100))).sum();
    // The mean of values ≤ 100 is ≤ 100, so it fits in a u8.
    let mean = u8::try_from((sum + n / 2) / n).unwrap_or(100);
    if checks.iter().any(|c| !c.passed) {
        mean.min(FAILED_CHECK_CAP)
    } else {
        mean
    }
}

/// Brings submitted `content` into the shape the checks and storage expect.
///
/// For kind json any JSON value is taken as is, and a string is parsed as the JSON it holds
/// (clients often send serialized JSON); a string that does not parse is rejected rather than
/// kept as a JSON string, since that is almost always a malformed submission. Every other kind
/// needs a string.
pub fn normalize_content(kind: TaskKind, content: &Value) -> Result<Value, FieldError> {
    match (kind, content) {
        (TaskKind::Json, Value::String(text)) => serde_json::from_str(text).map_err(|e| {
            FieldError::new(
                CONTENT_FIELD,
                format!("must be JSON, or a string holding JSON; the string does not parse: {e}"),
            )
        }),
        (TaskKind::Json, other) => Ok(other.clone()),
        (_, Value::String(_)) => Ok(content.clone()),
        (kind, _) => Err(FieldError::new(
            CONTENT_FIELD,
            format!("must be a string for tasks of kind '{kind}'"),
        )),
    }
}

/// Is `schema` a usable `output_schema`? `Err` carries a message for the API error.
///
/// Beyond being valid against its meta-schema (draft auto-detected from `$schema`, 2020-12 by
/// default), the schema must compile the way [`JsonSchema`] will compile it at submit time: no
/// external `$ref`s and only linear-time regular expressions, since posters are untrusted.
/// Booleans are valid schemas, but `true` checks nothing and `false` rejects all work, so an
/// object is required.
pub fn validate_output_schema(schema: &Value) -> Result<(), String> {
    if !schema.is_object() {
        return Err("output_schema must be a JSON object".to_owned());
    }
    match jsonschema::meta::try_validate(schema) {
        Err(e) => return Err(format!("output_schema has an unsupported $schema: {e}")),
        Ok(Err(e)) => {
            return Err(format!(
                "output_schema is not a valid JSON Schema: {e} (at {})",
                pointer_or_root(e.instance_path.as_str())
            ))
        }
        Ok(Ok(())) => {}
    }
    compile(schema)
        .map(drop)
        .map_err(|e| format!("output_schema cannot be used: {e}"))
}

/// Builds the validator for a task's schema. Remote references are refused (checks do no I/O,
/// whatever features other crates enable on `jsonschema`), and patterns use the linear-time
/// `regex` engine so a poster cannot stall submissions with a catastrophic pattern.
fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_retriever(NoRetrieval)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| e.to_string())
}

struct NoRetrieval;

impl jsonschema::Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external references are not supported (tried to load '{uri}')").into())
    }
}

fn pointer_or_root(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(root)"
    } else {
        pointer
    }
}

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

    fn run(&self, s: &Submission<'_>) -> Option<CheckResult> {
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

    fn run(&self, s: &Submission<'_>) -> Option<CheckResult> {
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

/// `json_schema` (kind json only): the content validates against the task's `output_schema`;
/// without a schema it passes for being JSON at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSchema;

impl JsonSchema {
    pub const NAME: &'static str = "json_schema";
}

impl Check for JsonSchema {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Submission<'_>) -> Option<CheckResult> {
        if s.kind != TaskKind::Json {
            return None;
        }
        let Some(schema) = s.output_schema else {
            return Some(CheckResult::pass(
                Self::NAME,
                "content is valid JSON (the task has no output_schema)",
            ));
        };
        let validator = match compile(schema) {
            Ok(v) => v,
            // Schemas are vetted when the task is posted, so this is a task predating that
            // check. Fail closed: unverifiable work must not be paid automatically.
            Err(e) => {
                return Some(CheckResult::fail(
                    Self::NAME,
                    0,
                    format!("the task's output_schema cannot be used, so content could not be validated: {e}"),
                ))
            }
        };

        let mut shown = String::new();
        let mut total = 0usize;
        for error in validator.iter_errors(s.content) {
            total += 1;
            if total <= MAX_SCHEMA_ERRORS_SHOWN {
                let sep = if total == 1 { "" } else { "; " };
                let _ = write!(
                    shown,
                    "{sep}{}: {error}",
                    pointer_or_root(error.instance_path.as_str())
                );
            }
        }
        Some(match total {
            0 => CheckResult::pass(Self::NAME, "content matches the output_schema"),
            _ => {
                let noun = if total == 1 { "error" } else { "errors" };
                let mut details =
                    format!("content does not match the output_schema ({total} {noun}): {shown}");
                if total > MAX_SCHEMA_ERRORS_SHOWN {
                    let _ = write!(details, "; and {} more", total - MAX_SCHEMA_ERRORS_SHOWN);
                }
                CheckResult::fail(Self::NAME, 0, details)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub<'a>(kind: TaskKind, schema: Option<&'a Value>, content: &'a Value) -> Submission<'a> {
        Submission {
            kind,
            output_schema: schema,
            content,
        }
    }

    fn run_one(check: &dyn Check, s: &Submission<'_>) -> CheckResult {
        let r = check.run(s).unwrap();
        assert_eq!(r.name, check.name());
        assert!(r.score <= 100);
        r
    }

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

    #[test]
    fn json_schema_applies_to_json_only() {
        let content = json!("text");
        for kind in [TaskKind::Text, TaskKind::Markdown, TaskKind::Code] {
            assert!(JsonSchema.run(&sub(kind, None, &content)).is_none());
        }
        let r = run_one(&JsonSchema, &sub(TaskKind::Json, None, &json!({"a": 1})));
        assert!(r.passed);
        assert!(r.details.contains("no output_schema"));
    }

    #[test]
    fn json_schema_validates() {
        let schema = json!({
            "type": "object",
            "required": ["name", "tags"],
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        });
        let good = json!({"name": "x", "tags": ["a"]});
        let r = run_one(&JsonSchema, &sub(TaskKind::Json, Some(&schema), &good));
        assert!(r.passed, "{}", r.details);
        assert_eq!(r.score, 100);

        let bad = json!({"name": 5, "tags": ["a", 1]});
        let r = run_one(&JsonSchema, &sub(TaskKind::Json, Some(&schema), &bad));
        assert!(!r.passed);
        assert_eq!(r.score, 0);
        assert!(r.details.contains("(2 errors)"), "{}", r.details);
        assert!(
            r.details.contains("/name: 5 is not of type \"string\""),
            "{}",
            r.details
        );
        assert!(
            r.details.contains("/tags/1: 1 is not of type \"string\""),
            "{}",
            r.details
        );

        let r = run_one(
            &JsonSchema,
            &sub(TaskKind::Json, Some(&schema), &json!({"name": "x"})),
        );
        assert!(r.details.contains("(1 error)"), "{}", r.details);
        assert!(
            r.details
                .contains("(root): \"tags\" is a required property"),
            "{}",
            r.details
        );
    }

    #[test]
    fn json_schema_lists_at_most_five_errors() {
        let schema = json!({"type": "array", "items": {"type": "integer"}});
        let content = json!(["a", "b", "c", "d", "e", "f", "g", 1]);
        let r = run_one(&JsonSchema, &sub(TaskKind::Json, Some(&schema), &content));
        assert!(!r.passed);
        assert!(r.details.contains("(7 errors)"), "{}", r.details);
        assert!(r.details.contains("/4: \"e\""), "{}", r.details);
        assert!(!r.details.contains("/5:"), "{}", r.details);
        assert!(r.details.ends_with("; and 2 more"), "{}", r.details);
    }

    #[test]
    fn json_schema_fails_closed_on_unusable_schema() {
        let schema = json!({"$ref": "https://example.com/schema.json"});
        let r = run_one(&JsonSchema, &sub(TaskKind::Json, Some(&schema), &json!({})));
        assert!(!r.passed);
        assert!(r.details.contains("cannot be used"), "{}", r.details);
    }

    #[test]
    fn output_schema_validation() {
        assert_eq!(validate_output_schema(&json!({"type": "object"})), Ok(()));
        assert_eq!(validate_output_schema(&json!({})), Ok(()));
        assert_eq!(
            validate_output_schema(&json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "definitions": {"n": {"type": "integer"}},
                "properties": {"n": {"$ref": "#/definitions/n"}}
            })),
            Ok(())
        );

        let err = validate_output_schema(&json!({"type": "invalid_type"})).unwrap_err();
        assert!(
            err.starts_with("output_schema is not a valid JSON Schema"),
            "{err}"
        );
        let err =
            validate_output_schema(&json!({"properties": {"a": {"minLength": -1}}})).unwrap_err();
        assert!(err.contains("/properties/a/minLength"), "{err}");

        assert!(validate_output_schema(&json!(true)).is_err());
        assert!(validate_output_schema(&json!("object")).is_err());
        let err = validate_output_schema(&json!({"$schema": "invalid-uri"})).unwrap_err();
        assert!(err.contains("unsupported $schema"), "{err}");

        let err =
            validate_output_schema(&json!({"$ref": "https://example.com/s.json"})).unwrap_err();
        assert!(err.contains("cannot be used"), "{err}");
        let err = validate_output_schema(&json!({"$ref": "file:///etc/passwd"})).unwrap_err();
        assert!(err.contains("cannot be used"), "{err}");

        // Backtracking constructs have no linear-time implementation, so they are refused.
        assert!(validate_output_schema(&json!({"pattern": "^(a+)+$"})).is_ok());
        assert!(validate_output_schema(&json!({"pattern": "(?=a)b"})).is_err());
        assert!(validate_output_schema(&json!({"pattern": "(a)\\1"})).is_err());
    }

    #[test]
    fn normalize() {
        let parsed = normalize_content(TaskKind::Json, &json!("{\"a\": [1, 2]}")).unwrap();
        assert_eq!(parsed, json!({"a": [1, 2]}));
        assert_eq!(
            normalize_content(TaskKind::Json, &json!("3")).unwrap(),
            json!(3)
        );
        assert_eq!(
            normalize_content(TaskKind::Json, &json!({"a": 1})).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            normalize_content(TaskKind::Json, &json!(null)).unwrap(),
            json!(null)
        );

        let err = normalize_content(TaskKind::Json, &json!("{not json")).unwrap_err();
        assert_eq!(err.field, "submission_data.content");
        assert!(err.message.contains("does not parse"), "{}", err.message);

        for kind in [TaskKind::Text, TaskKind::Markdown, TaskKind::Code] {
            assert_eq!(
                normalize_content(kind, &json!("# hi")).unwrap(),
                json!("# hi")
            );
            let err = normalize_content(kind, &json!({"a": 1})).unwrap_err();
            assert_eq!(err.field, "submission_data.content");
            assert_eq!(
                err.message,
                format!("must be a string for tasks of kind '{kind}'")
            );
        }
        // A string holding JSON is still just text for a text task.
        assert_eq!(
            normalize_content(TaskKind::Text, &json!("{}")).unwrap(),
            json!("{}")
        );
    }

    #[test]
    fn score_rule() {
        let pass = |s: u8| CheckResult {
            score: s,
            ..CheckResult::pass("x", "")
        };
        let fail = |s: u8| CheckResult::fail("x", s, "");
        assert_eq!(quality_score(&[]), 0);
        assert_eq!(quality_score(&[pass(100), pass(100)]), 100);
        assert_eq!(quality_score(&[pass(100), pass(81)]), 91, "90.5 rounds up");
        assert_eq!(quality_score(&[pass(100), pass(80)]), 90);
        assert_eq!(
            quality_score(&[pass(100), pass(100), fail(0)]),
            40,
            "67 capped at 40"
        );
        assert_eq!(
            quality_score(&[pass(30), fail(10)]),
            20,
            "below the cap stays"
        );
        assert_eq!(quality_score(&[fail(100)]), 40);
        let weird = CheckResult {
            score: 255,
            ..CheckResult::pass("x", "")
        };
        assert_eq!(
            quality_score(&[weird]),
            100,
            "out-of-range scores count as 100"
        );
        assert!(quality_score(&[pass(100), fail(100)]) < 60);
    }

    struct AlwaysNotApplicable;
    impl Check for AlwaysNotApplicable {
        fn name(&self) -> &'static str {
            "never"
        }
        fn run(&self, _: &Submission<'_>) -> Option<CheckResult> {
            None
        }
    }

    struct MentionsRust;
    impl Check for MentionsRust {
        fn name(&self) -> &'static str {
            "mentions_rust"
        }
        fn run(&self, s: &Submission<'_>) -> Option<CheckResult> {
            let text = s.content.as_str()?;
            Some(if text.contains("rust") {
                CheckResult::pass(self.name(), "mentions rust")
            } else {
                CheckResult::fail(self.name(), 20, "does not mention rust")
            })
        }
    }

    #[test]
    fn pipeline() {
        let p = CheckPipeline::standard(1000);
        assert_eq!(
            p.names().collect::<Vec<_>>(),
            ["non_empty", "size_limit", "json_schema"]
        );
        assert_eq!(
            format!("{p:?}"),
            r#"["non_empty", "size_limit", "json_schema"]"#
        );

        let text = json!("all about rust");
        let results = p.run(&sub(TaskKind::Text, None, &text));
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["non_empty", "size_limit"],
            "json_schema does not apply to text"
        );
        assert_eq!(quality_score(&results), 100);

        let schema = json!({"type": "object", "required": ["answer"]});
        let content = json!({"other": 1});
        let results = p.run(&sub(TaskKind::Json, Some(&schema), &content));
        assert_eq!(results.len(), 3);
        assert!(!results[2].passed);
        assert_eq!(quality_score(&results), 40);

        let p = CheckPipeline::standard(1000)
            .with(AlwaysNotApplicable)
            .with(MentionsRust);
        let results = p.run(&sub(TaskKind::Code, None, &json!("fn main() {}")));
        assert_eq!(results.len(), 3);
        assert_eq!(results[2].name, "mentions_rust");
        assert_eq!(quality_score(&results), 40);
        assert!(CheckPipeline::new()
            .run(&sub(TaskKind::Text, None, &text))
            .is_empty());
    }

    #[test]
    fn check_result_wire_shape() {
        let r = CheckResult::fail("non_empty", 200, "content is null");
        assert_eq!(r.score, 100);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"name": "non_empty", "passed": false, "score": 100, "details": "content is null"})
        );
        assert_eq!(serde_json::from_value::<CheckResult>(v).unwrap(), r);
    }
}

//! `json_schema`: JSON work against the task's `output_schema`, and what a usable schema is.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Analysis, Check, CheckResult};
use crate::task::TaskKind;

/// How many schema violations `json_schema` spells out; the rest are only counted.
const MAX_SCHEMA_ERRORS_SHOWN: usize = 5;

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

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
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

        // `is_valid` stops at the first violation and builds no error values; collecting the
        // errors of a large valid document through `iter_errors` costs as much as validating it
        // twice over. Only failing work pays for the full list.
        if validator.is_valid(s.content) {
            return Some(CheckResult::pass(
                Self::NAME,
                "content matches the output_schema",
            ));
        }
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
    use crate::quality::testing::{run_one, sub};
    use serde_json::json;

    #[test]
    fn json_schema_applies_to_json_only() {
        let content = json!("text");
        for kind in [TaskKind::Text, TaskKind::Markdown, TaskKind::Code] {
            assert!(JsonSchema
                .run(&crate::quality::Analysis::new(sub(kind, None, &content)))
                .is_none());
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
}

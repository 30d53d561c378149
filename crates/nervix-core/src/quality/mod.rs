//! Automated checks run on every submission, and the quality score derived from them.
//!
//! A check is anything implementing [`Check`]; [`CheckPipeline`] runs a list of them and keeps
//! the results of those that apply. One file per family:
//!
//! | file | checks | kinds |
//! |---|---|---|
//! | `basic.rs` | `non_empty`, `size_limit` | all |
//! | `json.rs` | `json_schema` | json |
//! | `code.rs`, `lint.rs` | `syntax` (tree-sitter), `lint` | code |
//! | `markdown.rs` | `markdown` (structure and links) | markdown |
//! | `text.rs` | `length`, `repetition` | text, markdown |
//! | `secrets.rs` | `secret_scan` | all |
//!
//! Every check reports where a problem is: `line:column` (1-based, columns in characters) for
//! text, a JSON pointer for JSON.

use std::cell::OnceCell;
use std::fmt::Write as _;
use std::ops::Deref;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::task::TaskKind;
use crate::FieldError;

mod basic;
mod code;
mod json;
mod lint;
mod markdown;
mod secrets;
mod text;

pub use basic::{NonEmpty, SizeLimit};
pub use code::{Language, Syntax};
pub use json::{validate_output_schema, JsonSchema};
pub use lint::Lint;
pub use markdown::Markdown;
pub use secrets::SecretScan;
pub use text::{Length, Repetition};

/// Highest quality score a submission can get while a critical check fails (see
/// [`quality_score`]); below the default acceptance threshold of 60, so such a failure alone
/// gets work rejected.
pub const FAILED_CHECK_CAP: u8 = 40;

/// The task's `min_words` when the poster names none (text and markdown tasks).
pub const DEFAULT_MIN_WORDS: u32 = 20;

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

    /// A check with a graded score that passes from `pass_mark` on.
    pub fn graded(name: &str, score: u8, pass_mark: u8, details: impl Into<String>) -> Self {
        let score = score.min(100);
        Self {
            name: name.to_owned(),
            passed: score >= pass_mark,
            score,
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
    /// The task's `language` (code tasks), as the poster wrote it.
    pub language: Option<&'a str>,
    /// The task's `min_words` (text and markdown tasks).
    pub min_words: u32,
    /// The content after [`normalize_content`].
    pub content: &'a Value,
}

/// A submission plus what the checks derive from it, each derived once per pipeline run
/// however many checks use it (the syntax tree serves `syntax` and `lint`; the words serve
/// `length`, `repetition` and `markdown`).
pub struct Analysis<'a> {
    submission: Submission<'a>,
    code: OnceCell<code::CodeState>,
    words: OnceCell<Vec<String>>,
    lines: OnceCell<LineIndex>,
}

impl<'a> Analysis<'a> {
    pub fn new(submission: Submission<'a>) -> Self {
        Self {
            submission,
            code: OnceCell::new(),
            words: OnceCell::new(),
            lines: OnceCell::new(),
        }
    }

    /// The content as text; `None` for JSON values that are not strings.
    pub fn text(&self) -> Option<&'a str> {
        self.submission.content.as_str()
    }

    /// The parsed program (code tasks with a supported language).
    fn code(&self) -> &code::CodeState {
        self.code.get_or_init(|| {
            code::CodeState::of(self.submission.language, self.text().unwrap_or(""))
        })
    }

    /// The words of the prose, lowercased and stripped of surrounding punctuation; for
    /// markdown, the rendered text without code blocks.
    fn words(&self) -> &[String] {
        self.words.get_or_init(|| {
            let text = self.text().unwrap_or("");
            match self.submission.kind {
                TaskKind::Markdown => text::words(&markdown::prose(text)),
                _ => text::words(text),
            }
        })
    }

    fn lines(&self) -> &LineIndex {
        self.lines
            .get_or_init(|| LineIndex::new(self.text().unwrap_or("")))
    }
}

impl<'a> Deref for Analysis<'a> {
    type Target = Submission<'a>;

    fn deref(&self) -> &Submission<'a> {
        &self.submission
    }
}

/// Byte offsets → 1-based `line:column` (columns count characters).
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    /// Number of lines (a trailing newline does not start another).
    pub(crate) fn count(&self, text: &str) -> usize {
        if text.ends_with('\n') {
            self.starts.len() - 1
        } else {
            self.starts.len()
        }
    }

    /// 1-based line of `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }

    /// `line:column` of byte `offset` in `text`, both 1-based.
    pub(crate) fn position(&self, text: &str, offset: usize) -> Position {
        let line = self.line(offset);
        let start = self.starts[line - 1];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Position { line, column }
    }
}

/// A 1-based place in text, shown as `line:column`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One automated check.
///
/// Checks are pure and cheap enough to run inline before the submit response; they must not
/// panic on any input.
pub trait Check: Send + Sync {
    /// Stable snake_case name, reported as the result's `name`.
    fn name(&self) -> &'static str;

    /// `None` when the check does not apply to this submission (say, a JSON check on text).
    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult>;
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

    /// Every check of this module, each applying to the kinds in the module table:
    /// `non_empty`, `size_limit(max_content_bytes)`, `json_schema`, `syntax`, `lint`,
    /// `markdown`, `length`, `repetition`, `secret_scan`.
    pub fn standard(max_content_bytes: usize) -> Self {
        Self::new()
            .with(NonEmpty)
            .with(SizeLimit {
                max_bytes: max_content_bytes,
            })
            .with(JsonSchema)
            .with(Syntax)
            .with(Lint)
            .with(Markdown)
            .with(Length)
            .with(Repetition)
            .with(SecretScan)
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
        let analysis = Analysis::new(*s);
        self.checks
            .iter()
            .filter_map(|c| c.run(&analysis))
            .collect()
    }
}

/// How a check counts in [`quality_score`]: its weight, and whether failing it is critical.
///
/// | check | weight | critical | why |
/// |---|---|---|---|
/// | `json_schema` | 4 | yes | the shape the poster asked for |
/// | `syntax` | 4 | yes | a program that does not parse does not work |
/// | `length` | 2 | yes | too short to be the work asked for |
/// | `repetition` | 2 | yes | filler, not work |
/// | `lint` | 2 | no | style and likely mistakes: lowers the score only |
/// | `markdown` | 2 | no | structure and link problems: lowers the score only |
/// | `non_empty` | 1 | yes | nothing was handed in |
/// | `size_limit` | 1 | yes | more than the platform stores |
/// | `secret_scan` | 1 | yes | a credential must never be published as work |
/// | anything else | 1 | yes | checks added with [`CheckPipeline::with`] |
pub fn weight(check: &str) -> (u64, bool) {
    match check {
        "json_schema" | "syntax" => (4, true),
        "length" | "repetition" => (2, true),
        "lint" | "markdown" => (2, false),
        _ => (1, true),
    }
}

/// 0..=100 from the checks: the rounded mean of their scores weighted by [`weight`], capped
/// at [`FAILED_CHECK_CAP`] when a critical check failed. A failed non-critical check
/// (`lint`, `markdown`) only lowers the mean through its score. No checks → 0: nothing
/// vouches for the work.
pub fn quality_score(checks: &[CheckResult]) -> u8 {
    let (mut total, mut weights) = (0u64, 0u64);
    for c in checks {
        let (w, _) = weight(&c.name);
        total += w * u64::from(c.score.min(100));
        weights += w;
    }
    if weights == 0 {
        return 0;
    }
    // The weighted mean of values ≤ 100 is ≤ 100, so it fits in a u8.
    let mean = u8::try_from((total + weights / 2) / weights).unwrap_or(100);
    if checks.iter().any(|c| !c.passed && weight(&c.name).1) {
        mean.min(FAILED_CHECK_CAP)
    } else {
        mean
    }
}

/// What to do about a failed check, by name.
fn how_to_fix(check: &str) -> &'static str {
    match check {
        "non_empty" => "put the work itself in submission_data.content",
        "size_limit" => "shorten the content or hand in less at once",
        "json_schema" => "make the content validate against the task's output_schema at the paths shown",
        "syntax" => "fix the syntax errors at the positions shown: the code must parse as the task's language",
        "lint" => "shorten long lines, resolve TODO/FIXME markers, fill or remove empty functions, remove code after return",
        "markdown" => "use heading levels in order, give every section content, and close or define every link",
        "length" => "write at least the task's min_words words",
        "repetition" => "say things once: rephrase the repeated words and phrases",
        "secret_scan" => "remove the credential and put a placeholder such as <API_KEY> in its place; revoke the credential, it has left your hands",
        _ => "see the details",
    }
}

/// The feedback a submitter reads: the decision on its first line, then one line per failed
/// check saying what failed and how to fix it.
pub fn feedback(checks: &[CheckResult], score: u8, threshold: u8) -> String {
    let mut out = if score >= threshold {
        format!("accepted with quality score {score} (threshold {threshold})")
    } else {
        format!("rejected: quality score {score} is under the acceptance threshold {threshold}")
    };
    for c in checks.iter().filter(|c| !c.passed) {
        let _ = write!(
            out,
            "\n{} failed: {}; to fix: {}",
            c.name,
            c.details,
            how_to_fix(&c.name)
        );
    }
    out
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

/// Helpers for the checks' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn sub<'a>(
        kind: TaskKind,
        schema: Option<&'a Value>,
        content: &'a Value,
    ) -> Submission<'a> {
        Submission {
            kind,
            output_schema: schema,
            language: None,
            min_words: DEFAULT_MIN_WORDS,
            content,
        }
    }

    /// Ordinary prose: 54 words, no repetition.
    pub const PROSE: &str = "The river rises in the northern hills and runs south for \
        about two hundred kilometres before it reaches the sea. Farmers along its banks grow \
        rice and vegetables, and each spring the water floods the lower fields, leaving rich \
        soil behind when it retreats. Several small towns grew up at the old ferry crossings.";

    /// Runs `check`, which must apply, and checks the result's invariants.
    pub fn run_one(check: &dyn Check, s: &Submission<'_>) -> CheckResult {
        let r = check
            .run(&Analysis::new(*s))
            .unwrap_or_else(|| panic!("{} does not apply", check.name()));
        assert_eq!(r.name, check.name());
        assert!(r.score <= 100);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::testing::sub;
    use super::*;
    use serde_json::json;

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
        fn run(&self, _: &Analysis<'_>) -> Option<CheckResult> {
            None
        }
    }

    struct MentionsRust;
    impl Check for MentionsRust {
        fn name(&self) -> &'static str {
            "mentions_rust"
        }
        fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
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
        let all = [
            "non_empty",
            "size_limit",
            "json_schema",
            "syntax",
            "lint",
            "markdown",
            "length",
            "repetition",
            "secret_scan",
        ];
        assert_eq!(p.names().collect::<Vec<_>>(), all);
        assert_eq!(format!("{p:?}"), format!("{all:?}"));

        let names = |results: &[CheckResult]| -> Vec<String> {
            results.iter().map(|r| r.name.clone()).collect()
        };
        let text = json!(testing::PROSE);
        let results = p.run(&sub(TaskKind::Text, None, &text));
        assert_eq!(
            names(&results),
            [
                "non_empty",
                "size_limit",
                "length",
                "repetition",
                "secret_scan"
            ]
        );
        assert_eq!(quality_score(&results), 100);

        let md = json!(format!("# Notes\n\n{}\n", testing::PROSE));
        let results = p.run(&sub(TaskKind::Markdown, None, &md));
        assert_eq!(
            names(&results),
            [
                "non_empty",
                "size_limit",
                "markdown",
                "length",
                "repetition",
                "secret_scan"
            ]
        );
        assert_eq!(quality_score(&results), 100);

        let program = json!("def f(x):\n    return x + 1\n");
        let s = Submission {
            language: Some("python"),
            ..sub(TaskKind::Code, None, &program)
        };
        let results = p.run(&s);
        assert_eq!(
            names(&results),
            ["non_empty", "size_limit", "syntax", "lint", "secret_scan"]
        );
        assert_eq!(quality_score(&results), 100);

        let schema = json!({"type": "object", "required": ["answer"]});
        let content = json!({"other": 1});
        let results = p.run(&sub(TaskKind::Json, Some(&schema), &content));
        assert_eq!(
            names(&results),
            ["non_empty", "size_limit", "json_schema", "secret_scan"]
        );
        assert!(!results[2].passed);
        assert_eq!(quality_score(&results), 40);

        let p = CheckPipeline::new()
            .with(NonEmpty)
            .with(AlwaysNotApplicable)
            .with(MentionsRust);
        let results = p.run(&sub(TaskKind::Code, None, &json!("fn main() {}")));
        assert_eq!(results.len(), 2);
        assert_eq!(results[1].name, "mentions_rust");
        assert_eq!(quality_score(&results), 40);
        assert!(CheckPipeline::new()
            .run(&sub(TaskKind::Text, None, &text))
            .is_empty());
    }

    #[test]
    fn weights_and_criticality() {
        let named = |name: &str, score: u8, passed: bool| CheckResult {
            name: name.to_owned(),
            passed,
            score,
            details: String::new(),
        };
        // (4·100 + 2·50) / 6 = 83.3: a failed lint lowers the score but does not cap it.
        assert_eq!(
            quality_score(&[named("syntax", 100, true), named("lint", 50, false)]),
            83
        );
        // The same numbers with a failed critical check are capped.
        assert_eq!(
            quality_score(&[named("syntax", 100, false), named("lint", 50, true)]),
            40
        );
        assert_eq!(
            quality_score(&[named("markdown", 40, false), named("length", 100, true)]),
            70
        );
        for critical in [
            "non_empty",
            "size_limit",
            "json_schema",
            "syntax",
            "secret_scan",
            "length",
            "repetition",
            "custom",
        ] {
            assert!(weight(critical).1, "{critical}");
        }
        assert!(!weight("lint").1 && !weight("markdown").1);
    }

    #[test]
    fn feedback_names_each_failed_check_and_its_fix() {
        let checks = [
            CheckResult::pass("non_empty", "content is not empty"),
            CheckResult::fail("length", 5, "1 word; the task asks for at least 20 words"),
            CheckResult::fail(
                "secret_scan",
                0,
                "1 possible credential (values not shown): jwt at 1:1",
            ),
        ];
        let f = feedback(&checks, 30, 60);
        let lines: Vec<&str> = f.lines().collect();
        assert_eq!(lines.len(), 3, "{f}");
        assert_eq!(
            lines[0],
            "rejected: quality score 30 is under the acceptance threshold 60"
        );
        assert_eq!(
            lines[1],
            "length failed: 1 word; the task asks for at least 20 words; to fix: write at least the task's min_words words"
        );
        assert!(
            lines[2].starts_with("secret_scan failed: 1 possible credential"),
            "{f}"
        );
        assert!(lines[2].contains("to fix: remove the credential"), "{f}");

        let f = feedback(&[CheckResult::pass("non_empty", "")], 100, 60);
        assert_eq!(f, "accepted with quality score 100 (threshold 60)");
        let lint = CheckResult::graded("lint", 50, 60, "3 empty functions");
        let f = feedback(&[lint], 80, 60);
        assert!(f.starts_with("accepted with quality score 80"), "{f}");
        assert!(
            f.contains("\nlint failed: 3 empty functions; to fix: "),
            "{f}"
        );
    }

    #[test]
    fn positions_count_characters_from_one() {
        let text = "ab\néx\n\nz";
        let lines = LineIndex::new(text);
        assert_eq!(lines.position(text, 0).to_string(), "1:1");
        assert_eq!(
            lines.position(text, 5).to_string(),
            "2:2",
            "é is one character"
        );
        assert_eq!(lines.position(text, 8).to_string(), "4:1");
        assert_eq!(lines.count(text), 4);
        assert_eq!(LineIndex::new("a\n").count("a\n"), 1);
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

//! `lint`: a few explainable rules about code, scored rather than only passed or failed.
//!
//! | rule | points off | at most |
//! |---|---|---|
//! | line longer than 120 characters | 2 per line | 20 |
//! | TODO / FIXME / XXX / HACK markers | 10 per marker per 100 lines | 20 |
//! | empty function (no statement, or only `pass` / `...`) | 5 per function | 20 |
//! | unreachable statement after return / raise / throw / break / continue | 10 each | 30 |
//!
//! The last two need the syntax tree, so they apply only to the languages with a parser.
//! The check passes from 60 and is not critical (see [`super::weight`]).

use std::sync::LazyLock;

use regex::Regex;
use tree_sitter::{Node, Tree};

use super::code::CodeState;
use super::{Analysis, Check, CheckResult, LineIndex};
use crate::task::TaskKind;

const MAX_LINE_CHARS: usize = 120;
const LINT_PASS: u8 = 60;
/// How many places per rule the details name.
const MAX_PLACES: usize = 3;

static MARKER: LazyLock<Regex> = LazyLock::new(|| {
    // A fixed, valid pattern: compiling it cannot fail.
    #[allow(clippy::unwrap_used)]
    Regex::new(r"\b(?:TODO|FIXME|XXX|HACK)\b").unwrap()
});

/// Function definitions whose `body` field is their block.
const FUNCTIONS: &[&str] = &[
    "function_definition",            // python
    "function_declaration",           // javascript, typescript, go
    "function_expression",            // javascript, typescript
    "function",                       // older javascript grammars
    "generator_function_declaration", // javascript, typescript
    "generator_function",
    "arrow_function",     // javascript, typescript (when the body is a block)
    "method_definition",  // javascript, typescript
    "function_item",      // rust
    "method_declaration", // go
    "func_literal",       // go
];

/// Nodes whose named children are statements run in order.
const STATEMENT_LISTS: &[&str] = &[
    "block",           // python, rust, go (older grammars)
    "statement_block", // javascript, typescript
    "statement_list",  // go
    "switch_case",     // javascript, typescript
    "switch_default",
    "expression_case", // go
    "default_case",
    "type_case",
    "communication_case",
    "module", // python, top level
    "program",
];

/// Statements after which nothing in the same list runs.
const TERMINATORS: &[&str] = &[
    "return_statement",
    "raise_statement",
    "throw_statement",
    "break_statement",
    "continue_statement",
    "goto_statement",
];

/// Rust's jumps are expressions, wrapped in an expression statement.
const RUST_JUMPS: &[&str] = &[
    "return_expression",
    "break_expression",
    "continue_expression",
];

fn is_comment(node: Node<'_>) -> bool {
    node.kind().contains("comment")
}

fn terminates(node: Node<'_>) -> bool {
    if TERMINATORS.contains(&node.kind()) {
        return true;
    }
    node.kind() == "expression_statement"
        && node
            .named_child(0)
            .is_some_and(|c| RUST_JUMPS.contains(&c.kind()))
}

/// A body that does nothing: no statements, or only Python's placeholders.
fn is_empty_body(body: Node<'_>) -> bool {
    if !STATEMENT_LISTS.contains(&body.kind()) {
        return false; // an arrow function's expression body
    }
    let mut cursor = body.walk();
    let result = body.named_children(&mut cursor).all(|c| {
        is_comment(c)
            || c.kind() == "pass_statement"
            || (c.kind() == "expression_statement"
                && c.named_child_count() == 1
                && c.named_child(0).is_some_and(|e| e.kind() == "ellipsis"))
            || c.kind() == "statement_list" && is_empty_body(c)
    });
    result
}

/// Start bytes of empty functions and of unreachable statements, in document order.
///
/// One cursor walks the whole tree in document order, visiting named nodes and descending only
/// into them (anonymous nodes are tokens). A second cursor, reset per statement list, reads the
/// lists; a walk that collected every node's children into a vector of its own spent more time
/// allocating than the rules spend looking.
fn tree_findings(tree: &Tree) -> (Vec<usize>, Vec<usize>) {
    let (mut empty, mut unreachable) = (Vec::new(), Vec::new());
    let mut walk = tree.walk();
    let mut list = tree.walk();
    loop {
        let node = walk.node();
        if node.is_named() {
            if FUNCTIONS.contains(&node.kind()) {
                if let Some(body) = node.child_by_field_name("body") {
                    if is_empty_body(body) {
                        empty.push(node.start_byte());
                    }
                }
            }
            if STATEMENT_LISTS.contains(&node.kind()) {
                list.reset(node);
                let mut after_jump = false;
                for child in node.named_children(&mut list) {
                    if is_comment(child) {
                        continue;
                    }
                    if after_jump {
                        unreachable.push(child.start_byte());
                        break; // one finding per list: the rest is the same dead code
                    }
                    after_jump = terminates(child);
                }
            }
            if walk.goto_first_child() {
                continue;
            }
        }
        // Next in document order: the next sibling of this node or of its nearest ancestor.
        loop {
            if walk.goto_next_sibling() {
                break;
            }
            if !walk.goto_parent() {
                // Pre-order is already document order, but keep the contract explicit.
                empty.sort_unstable();
                unreachable.sort_unstable();
                return (empty, unreachable);
            }
        }
    }
}

/// One rule's findings: how many, the points they cost, and where the first are.
struct Finding {
    what: String,
    points: usize,
    places: Vec<String>,
}

fn places(text: &str, lines: &LineIndex, offsets: &[usize]) -> Vec<String> {
    offsets
        .iter()
        .take(MAX_PLACES)
        .map(|&o| lines.position(text, o).to_string())
        .collect()
}

/// `lint` (kind code): see the module table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lint;

impl Lint {
    pub const NAME: &'static str = "lint";
}

impl Check for Lint {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        if s.kind != TaskKind::Code {
            return None;
        }
        let text = s.text()?;
        let lines = s.lines();
        let line_count = lines.count(text).max(1);
        let mut findings = Vec::new();

        let mut long = Vec::new();
        let mut markers = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            if body.chars().count() > MAX_LINE_CHARS {
                long.push(offset);
            }
            markers.extend(MARKER.find_iter(body).map(|m| offset + m.start()));
            offset += line.len();
        }
        if !long.is_empty() {
            findings.push(Finding {
                what: format!("{} lines over {MAX_LINE_CHARS} characters", long.len()),
                points: (2 * long.len()).min(20),
                places: places(text, lines, &long),
            });
        }
        if !markers.is_empty() {
            // 10 points per marker per 100 lines, rounded up.
            let points = (markers.len() * 1000).div_ceil(line_count).min(20);
            findings.push(Finding {
                what: format!("{} TODO/FIXME markers in {line_count} lines", markers.len()),
                points,
                places: places(text, lines, &markers),
            });
        }
        let tree_rules = match s.code() {
            CodeState::Parsed(_, tree) => {
                let (empty, unreachable) = tree_findings(tree);
                if !empty.is_empty() {
                    findings.push(Finding {
                        what: format!("{} empty functions", empty.len()),
                        points: (5 * empty.len()).min(20),
                        places: places(text, lines, &empty),
                    });
                }
                if !unreachable.is_empty() {
                    findings.push(Finding {
                        what: format!(
                            "{} unreachable statements after return/raise/break",
                            unreachable.len()
                        ),
                        points: (10 * unreachable.len()).min(30),
                        places: places(text, lines, &unreachable),
                    });
                }
                true
            }
            _ => false,
        };

        let points: usize = findings.iter().map(|f| f.points).sum();
        let score = u8::try_from(100usize.saturating_sub(points)).unwrap_or(0);
        let mut details = if findings.is_empty() {
            "no findings".to_owned()
        } else {
            findings
                .iter()
                .map(|f| format!("{} (-{}; at {})", f.what, f.points, f.places.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if !tree_rules {
            details
                .push_str(" (empty-function and unreachable-code rules need a supported language)");
        }
        Some(CheckResult::graded(Self::NAME, score, LINT_PASS, details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::testing::{run_one, sub};
    use crate::quality::Submission;
    use serde_json::{json, Value};

    fn lint(language: &str, content: &str) -> CheckResult {
        let content: Value = json!(content);
        let s = Submission {
            language: Some(language),
            ..sub(TaskKind::Code, None, &content)
        };
        run_one(&Lint, &s)
    }

    #[test]
    fn clean_code_scores_full_marks() {
        let r = lint("rust", "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n");
        assert!(r.passed);
        assert_eq!(r.score, 100);
        assert_eq!(r.details, "no findings");
    }

    #[test]
    fn long_lines_cost_two_points_each() {
        let code = format!("x = 1\ny = '{}'\n", "a".repeat(130));
        let r = lint("python", &code);
        assert!(r.passed);
        assert_eq!(r.score, 98);
        assert!(
            r.details
                .contains("1 lines over 120 characters (-2; at 2:1)"),
            "{}",
            r.details
        );
    }

    #[test]
    fn todo_density_counts() {
        let dense = "// TODO: a\n// FIXME: b\nfn main() {\n    run();\n}\n";
        let r = lint("rust", dense);
        assert_eq!(r.score, 80, "{}", r.details);
        assert!(
            r.details
                .contains("2 TODO/FIXME markers in 5 lines (-20; at 1:4, 2:4)"),
            "{}",
            r.details
        );
        // One marker in 200 lines costs 5 points.
        let sparse = "// TODO: later\n".to_owned() + &"let x = 1;\n".repeat(199);
        let r = lint("js", &sparse);
        assert_eq!(r.score, 95, "{}", r.details);
    }

    #[test]
    fn empty_functions_in_each_language() {
        for (lang, code) in [
            ("python", "def f():\n    pass\n\ndef g():\n    ...\n"),
            (
                "javascript",
                "function f() {}\nconst g = function () { /* c */ };\n",
            ),
            (
                "typescript",
                "class A {\n  m(): void {}\n}\nfunction f(): void {}\n",
            ),
            ("rust", "fn f() {}\nfn g() {\n    // nothing\n}\n"),
            ("go", "package main\n\nfunc f() {}\n\nfunc g() {\n}\n"),
        ] {
            let r = lint(lang, code);
            assert!(
                r.details.contains("2 empty functions (-10"),
                "{lang}: {}",
                r.details
            );
            assert_eq!(r.score, 90, "{lang}: {}", r.details);
        }
        let r = lint("python", "def f():\n    \"\"\"Doc.\"\"\"\n    return 1\n");
        assert_eq!(r.score, 100, "{}", r.details);
    }

    #[test]
    fn unreachable_code_in_each_language() {
        for (lang, code, at) in [
            (
                "python",
                "def f():\n    return 1\n    print('never')\n",
                "3:5",
            ),
            (
                "javascript",
                "function f() {\n  throw new Error('x');\n  g();\n}\n",
                "3:3",
            ),
            (
                "typescript",
                "function f(): number {\n  return 1;\n  // why\n  g();\n}\n",
                "4:3",
            ),
            (
                "rust",
                "fn f() -> i32 {\n    return 1;\n    let x = 2;\n}\n",
                "3:5",
            ),
            (
                "go",
                "package main\n\nfunc f() int {\n\treturn 1\n\tg()\n}\n",
                "5:2",
            ),
        ] {
            let r = lint(lang, code);
            assert!(
                r.details.contains(&format!(
                    "1 unreachable statements after return/raise/break (-10; at {at})"
                )),
                "{lang}: {}",
                r.details
            );
            assert_eq!(r.score, 90, "{lang}: {}", r.details);
        }
        let r = lint(
            "python",
            "for x in y:\n    if x:\n        break\n    print(x)\n",
        );
        assert_eq!(r.score, 100, "{}", r.details);
    }

    #[test]
    fn many_findings_fail() {
        let code =
            "def a():\n    pass\n\ndef b():\n    pass\n\ndef c():\n    return 1\n    x = 2\n\
                    def d():\n    raise E\n    y = 3\n# TODO one\n# FIXME two\n";
        let r = lint("python", code);
        assert!(!r.passed, "{}", r.details);
        assert!(r.score < 60, "{}", r.details);
    }

    #[test]
    fn unknown_language_gets_the_text_rules() {
        let r = lint("cobol", "DISPLAY 'HI'. *> TODO\n");
        assert_eq!(r.score, 80, "{}", r.details);
        assert!(
            r.details.ends_with("need a supported language)"),
            "{}",
            r.details
        );
    }
}

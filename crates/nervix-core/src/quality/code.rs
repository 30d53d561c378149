//! `syntax`: code work parsed with the tree-sitter grammar of the task's `language`. The tree
//! is kept for `lint`.

use tree_sitter::{Node, Parser, Tree};

use super::{Analysis, Check, CheckResult};
use crate::task::TaskKind;

/// How many syntax errors the details place; the rest are only counted.
const MAX_SHOWN: usize = 5;

/// The languages with a parser. A task's `language` names one of them, or one of its usual
/// aliases, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
    /// TypeScript with JSX: a grammar of its own.
    Tsx,
    Rust,
    Go,
}

impl Language {
    pub const ALL: &'static [Language] = &[
        Language::Python,
        Language::JavaScript,
        Language::TypeScript,
        Language::Tsx,
        Language::Rust,
        Language::Go,
    ];

    /// The language a task's `language` names, if a parser for it is built in.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase();
        Some(match name.as_str() {
            "python" | "py" | "python3" | "py3" => Language::Python,
            "javascript" | "js" | "jsx" | "node" | "nodejs" | "node.js" | "ecmascript" | "mjs"
            | "cjs" => Language::JavaScript,
            "typescript" | "ts" | "mts" | "cts" => Language::TypeScript,
            "tsx" => Language::Tsx,
            "rust" | "rs" => Language::Rust,
            "go" | "golang" => Language::Go,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Tsx => "tsx",
            Language::Rust => "rust",
            Language::Go => "go",
        }
    }

    fn grammar(self) -> tree_sitter::Language {
        match self {
            Language::Python => tree_sitter_python::LANGUAGE.into(),
            Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
            Language::Go => tree_sitter_go::LANGUAGE.into(),
        }
    }

    /// A syntax tree of `text`; `None` if the grammar cannot be loaded (an ABI mismatch the
    /// tests rule out) or parsing gave up.
    pub(crate) fn parse(self, text: &str) -> Option<Tree> {
        let mut parser = Parser::new();
        parser.set_language(&self.grammar()).ok()?;
        parser.parse(text, None)
    }
}

/// What the code checks have to work with.
pub(crate) enum CodeState {
    /// The task names no language.
    NoLanguage,
    /// The task names a language without a parser here.
    Unsupported(String),
    Parsed(Language, Tree),
    /// The parser could not produce a tree.
    Failed(Language),
}

impl CodeState {
    pub(crate) fn of(language: Option<&str>, text: &str) -> Self {
        let Some(name) = language else {
            return CodeState::NoLanguage;
        };
        let Some(lang) = Language::from_name(name) else {
            return CodeState::Unsupported(name.to_owned());
        };
        match lang.parse(text) {
            Some(tree) => CodeState::Parsed(lang, tree),
            None => CodeState::Failed(lang),
        }
    }
}

fn supported() -> String {
    Language::ALL
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `syntax` (kind code): the content parses as the task's language. Reports how many syntax
/// errors there are and where the first five are; the score is the share of lines free of
/// them. A task without a language, or in a language without a parser, is not checked: the
/// result passes and says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct Syntax;

impl Syntax {
    pub const NAME: &'static str = "syntax";
}

/// An error node or a missing token, found in the tree.
struct SyntaxError {
    start: usize,
    /// Rows the error spans, 0-based, inclusive.
    rows: (usize, usize),
    /// The token the parser expected, for a missing one.
    missing: Option<&'static str>,
}

/// The outermost error nodes and the missing tokens of `tree`, in document order. An error
/// node's inside is not searched: one mistake often yields nested errors.
fn syntax_errors(tree: &Tree) -> Vec<SyntaxError> {
    let mut out = Vec::new();
    let mut stack: Vec<Node<'_>> = vec![tree.root_node()];
    while let Some(node) = stack.pop() {
        if node.is_error() || node.is_missing() {
            out.push(SyntaxError {
                start: node.start_byte(),
                rows: (node.start_position().row, node.end_position().row),
                missing: node.is_missing().then(|| node.kind()),
            });
            continue;
        }
        if !node.has_error() {
            continue;
        }
        let mut cursor = node.walk();
        let children: Vec<Node<'_>> = node.children(&mut cursor).collect();
        stack.extend(children.into_iter().rev());
    }
    out
}

impl Check for Syntax {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        if s.kind != TaskKind::Code {
            return None;
        }
        let text = s.text()?;
        let (lang, tree) = match s.code() {
            CodeState::NoLanguage => {
                return Some(CheckResult::pass(
                    Self::NAME,
                    "not checked: the task names no language",
                ))
            }
            CodeState::Unsupported(name) => {
                return Some(CheckResult::pass(
                    Self::NAME,
                    format!(
                        "not checked: no parser for language '{name}' (parsers: {})",
                        supported()
                    ),
                ))
            }
            CodeState::Failed(lang) => {
                return Some(CheckResult::fail(
                    Self::NAME,
                    0,
                    format!("the {} parser could not read the content", lang.name()),
                ))
            }
            CodeState::Parsed(lang, tree) => (*lang, tree),
        };
        let errors = syntax_errors(tree);
        if errors.is_empty() {
            return Some(CheckResult::pass(
                Self::NAME,
                format!("parses as {}", lang.name()),
            ));
        }
        let lines = s.lines();
        let total_lines = lines.count(text).max(1);
        let mut bad_rows: Vec<usize> = errors.iter().flat_map(|e| e.rows.0..=e.rows.1).collect();
        bad_rows.sort_unstable();
        bad_rows.dedup();
        let clean = total_lines.saturating_sub(bad_rows.len());
        // A failed check never gets full marks, however long the file.
        let score = u8::try_from(clean * 100 / total_lines)
            .unwrap_or(100)
            .min(99);
        let shown: Vec<String> = errors
            .iter()
            .take(MAX_SHOWN)
            .map(|e| {
                let at = lines.position(text, e.start);
                match e.missing {
                    Some(token) => format!("{at} missing \"{token}\""),
                    None => format!("{at} unexpected input"),
                }
            })
            .collect();
        let n = errors.len();
        let mut details = format!(
            "{n} syntax error{} ({}): {}",
            if n == 1 { "" } else { "s" },
            lang.name(),
            shown.join("; ")
        );
        if n > MAX_SHOWN {
            details.push_str(&format!("; and {} more", n - MAX_SHOWN));
        }
        Some(CheckResult::fail(Self::NAME, score, details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::testing::{run_one, sub};
    use crate::quality::Submission;
    use serde_json::{json, Value};

    fn code<'a>(language: &'a str, content: &'a Value) -> Submission<'a> {
        Submission {
            language: Some(language),
            ..sub(TaskKind::Code, None, content)
        }
    }

    /// A valid and a broken program per language, and where the first error is.
    const PROGRAMS: &[(&str, &str, &str, &str)] = &[
        (
            "python",
            "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
            "def add(a, b)\n    return a + b\n",
            "1:",
        ),
        (
            "javascript",
            "function add(a, b) {\n  return a + b;\n}\nconsole.log(add(1, 2));\n",
            "function add(a, b) {\n  return a + ;\n}\n",
            "2:",
        ),
        (
            "typescript",
            "function add(a: number, b: number): number {\n  return a + b;\n}\n",
            "function add(a: number, b: number): number {\n  return a +* b;\n",
            "2:",
        ),
        (
            "rust",
            "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\nfn main() {\n    println!(\"{}\", add(1, 2));\n}\n",
            "fn add(a: i32, b: i32) -> i32 {\n    let x = ;\n    a + b\n}\n",
            "2:",
        ),
        (
            "go",
            "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(1 + 2)\n}\n",
            "package main\n\nfunc main() {\n\tx := \n}\n",
            "4:",
        ),
    ];

    #[test]
    fn every_grammar_loads() {
        for lang in Language::ALL {
            assert!(lang.parse("").is_some(), "{lang:?}: ABI mismatch");
        }
    }

    #[test]
    fn valid_programs_pass() {
        for (lang, good, _, _) in PROGRAMS {
            let content = json!(good);
            let r = run_one(&Syntax, &code(lang, &content));
            assert!(r.passed, "{lang}: {}", r.details);
            assert_eq!(r.score, 100);
            assert_eq!(r.details, format!("parses as {lang}"));
        }
    }

    #[test]
    fn broken_programs_fail_with_positions() {
        for (lang, _, bad, first) in PROGRAMS {
            let content = json!(bad);
            let r = run_one(&Syntax, &code(lang, &content));
            assert!(!r.passed, "{lang}: {}", r.details);
            assert!(r.score < 100);
            let prefix = format!("({lang}): {first}");
            assert!(r.details.contains(&prefix), "{lang}: {}", r.details);
            assert!(r.details.contains("syntax error"), "{lang}: {}", r.details);
        }
    }

    #[test]
    fn positions_are_one_based_with_character_columns() {
        let content = json!("x = 'é'\ny = (1,\n");
        let r = run_one(&Syntax, &code("py", &content));
        assert!(!r.passed);
        assert!(
            r.details.starts_with("1 syntax error (python): "),
            "{}",
            r.details
        );
        let content = json!("fn main() {\n    let s = \"é\"; let x = ;\n}\n");
        let r = run_one(&Syntax, &code("rs", &content));
        assert!(r.details.contains("(rust): 2:"), "{}", r.details);
    }

    #[test]
    fn only_five_errors_are_placed() {
        let content = json!("fn main() {\n".to_owned() + &"    let = ;\n".repeat(8) + "}\n");
        let r = run_one(&Syntax, &code("rust", &content));
        assert!(!r.passed);
        assert!(r.details.contains("; and "), "{}", r.details);
        assert_eq!(
            r.details.matches(" unexpected input").count() + r.details.matches(" missing ").count(),
            5,
            "{}",
            r.details
        );
    }

    #[test]
    fn aliases() {
        for (name, lang) in [
            ("py", Language::Python),
            ("Python3", Language::Python),
            ("js", Language::JavaScript),
            ("Node.js", Language::JavaScript),
            ("ts", Language::TypeScript),
            ("TSX", Language::Tsx),
            ("rs", Language::Rust),
            (" golang ", Language::Go),
        ] {
            assert_eq!(Language::from_name(name), Some(lang), "{name}");
        }
        assert_eq!(Language::from_name("cobol"), None);
    }

    #[test]
    fn tsx_parses_jsx() {
        let content = json!("const App = () => <div className=\"a\">hi</div>;\n");
        assert!(run_one(&Syntax, &code("tsx", &content)).passed);
        assert!(!run_one(&Syntax, &code("ts", &content)).passed);
    }

    #[test]
    fn unknown_or_missing_language_is_not_checked() {
        let content = json!("IDENTIFICATION DIVISION.");
        let r = run_one(&Syntax, &code("cobol", &content));
        assert!(r.passed);
        assert!(
            r.details
                .starts_with("not checked: no parser for language 'cobol'"),
            "{}",
            r.details
        );
        let r = run_one(&Syntax, &sub(TaskKind::Code, None, &content));
        assert!(r.passed);
        assert_eq!(r.details, "not checked: the task names no language");
        let a = crate::quality::Analysis::new(sub(TaskKind::Text, None, &content));
        assert!(Syntax.run(&a).is_none());
    }
}

//! `markdown`: the document's structure (heading levels, empty sections, headings at all in a
//! long document) and its link syntax, read with pulldown-cmark.

use std::ops::Range;

use pulldown_cmark::{BrokenLink, Event, LinkType, Options, Parser, Tag, TagEnd};

use super::{Analysis, Check, CheckResult};
use crate::task::TaskKind;

/// A document with more words than this and no heading is hard to navigate.
const LONG_DOCUMENT_WORDS: usize = 300;

/// Points each problem costs; the check passes only without problems.
const PENALTY: u8 = 15;

/// How many problems the details spell out; the rest are only counted.
const MAX_SHOWN: usize = 8;

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
}

/// The text a reader sees, without code blocks: what `length` and `repetition` judge.
pub(crate) fn prose(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut in_code_block = false;
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::CodeBlock(_)) => in_code_block = true,
            Event::End(TagEnd::CodeBlock) => in_code_block = false,
            Event::Text(t) | Event::Code(t) if !in_code_block => out.push_str(&t),
            // Breaks and block ends separate words; inline tags do not ("**bold**ly").
            Event::SoftBreak | Event::HardBreak | Event::Rule => out.push(' '),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::Item
                | TagEnd::TableCell
                | TagEnd::BlockQuote(_),
            ) => out.push(' '),
            _ => {}
        }
    }
    out
}

/// `markdown` (kind markdown): headings go down one level at a time, no section is empty, a
/// long document has headings, and every link is closed and every reference defined. Each
/// problem costs 15 points and is named with its `line:column`; any problem fails the check,
/// which is not critical (see [`super::weight`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Markdown;

impl Markdown {
    pub const NAME: &'static str = "markdown";
}

/// The most recent heading, while its section is being read.
struct Section {
    level: usize,
    offset: usize,
    has_content: bool,
}

impl Check for Markdown {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        if s.kind != TaskKind::Markdown {
            return None;
        }
        let text = s.text()?;
        let lines = s.lines();
        let at = |offset: usize| lines.position(text, offset);
        let mut problems: Vec<String> = Vec::new();

        let mut broken: Vec<(Range<usize>, LinkType, bool)> = Vec::new();
        let mut links: Vec<Range<usize>> = Vec::new();
        let mut code: Vec<Range<usize>> = Vec::new();
        let mut headings = 0usize;
        let mut section: Option<Section> = None;
        {
            let callback = |link: BrokenLink<'_>| {
                let label_has_letter = link.reference.chars().any(char::is_alphabetic);
                broken.push((link.span, link.link_type, label_has_letter));
                None
            };
            let parser = Parser::new_with_broken_link_callback(text, options(), Some(callback));
            for (event, range) in parser.into_offset_iter() {
                match event {
                    Event::Start(Tag::Heading { level, .. }) => {
                        let level = level as usize;
                        headings += 1;
                        if let Some(prev) = &section {
                            if level > prev.level + 1 {
                                problems.push(format!(
                                    "heading at {} skips from level {} to {level}",
                                    at(range.start),
                                    prev.level
                                ));
                            }
                            if level <= prev.level && !prev.has_content {
                                problems.push(format!(
                                    "the section of the heading at {} is empty",
                                    at(prev.offset)
                                ));
                            }
                        }
                        // A subsection is content of the section above it.
                        if let Some(prev) = section.as_mut() {
                            prev.has_content = true;
                        }
                        section = Some(Section {
                            level,
                            offset: range.start,
                            has_content: false,
                        });
                    }
                    Event::Start(tag) => {
                        if let Tag::Link { .. } | Tag::Image { .. } = tag {
                            links.push(range.clone());
                        }
                        if let Tag::CodeBlock(_) = tag {
                            code.push(range.clone());
                        }
                        if is_block(&tag) {
                            if let Some(sec) = section.as_mut() {
                                sec.has_content = true;
                            }
                        }
                    }
                    Event::Code(_) | Event::Html(_) | Event::InlineHtml(_) => {
                        code.push(range.clone())
                    }
                    Event::Rule => {
                        if let Some(sec) = section.as_mut() {
                            sec.has_content = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(last) = &section {
            if !last.has_content {
                problems.push(format!(
                    "the section of the heading at {} is empty",
                    at(last.offset)
                ));
            }
        }
        let words = s.words().len();
        if headings == 0 && words > LONG_DOCUMENT_WORDS {
            problems.push(format!(
                "{words} words and no heading: split the document into sections"
            ));
        }

        for (span, link_type, label_has_letter) in &broken {
            let flagged = match link_type {
                LinkType::Reference | LinkType::Collapsed => true,
                // `[text]` alone is often not meant as a link (`a[i]`, `[ ]`): only a bracketed
                // word standing on its own counts.
                // `[text](` unclosed is reported as such below.
                LinkType::Shortcut if text[span.end..].starts_with('(') => false,
                LinkType::Shortcut => {
                    *label_has_letter
                        && text[..span.start]
                            .chars()
                            .next_back()
                            .is_none_or(char::is_whitespace)
                }
                _ => false,
            };
            if flagged {
                problems.push(format!(
                    "link reference at {} has no definition",
                    at(span.start)
                ));
            }
        }

        // `](` that did not become part of a link is a link whose destination was never closed
        // or could not be read (`[text](url`, `[text](a b)`).
        let inside = |ranges: &[Range<usize>], i: usize| ranges.iter().any(|r| r.contains(&i));
        for (i, _) in text.match_indices("](") {
            if !inside(&links, i) && !inside(&code, i) {
                problems.push(format!("link at {} is not closed or not valid", at(i)));
            }
        }

        let n = problems.len();
        let penalty = u8::try_from(n.saturating_mul(usize::from(PENALTY))).unwrap_or(100);
        let score = 100u8.saturating_sub(penalty);
        Some(if n == 0 {
            CheckResult::pass(
                Self::NAME,
                format!("{headings} headings in order, no empty section, links well-formed"),
            )
        } else {
            let mut details = format!(
                "{n} structure problem{}: {}",
                if n == 1 { "" } else { "s" },
                problems[..n.min(MAX_SHOWN)].join("; ")
            );
            if n > MAX_SHOWN {
                details.push_str(&format!("; and {} more", n - MAX_SHOWN));
            }
            CheckResult::fail(Self::NAME, score, details)
        })
    }
}

/// Block-level content that makes a section non-empty.
fn is_block(tag: &Tag<'_>) -> bool {
    matches!(
        tag,
        Tag::Paragraph
            | Tag::BlockQuote(_)
            | Tag::CodeBlock(_)
            | Tag::HtmlBlock
            | Tag::List(_)
            | Tag::Table(_)
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::testing::{run_one, sub};
    use serde_json::json;

    fn check(md: &str) -> CheckResult {
        run_one(&Markdown, &sub(TaskKind::Markdown, None, &json!(md)))
    }

    #[test]
    fn a_well_formed_document_passes() {
        let r = check(
            "# Guide\n\nIntro with a [link](https://example.com) and [ref][r].\n\n\
             ## Setup\n\nInstall it; see `a[i](x)` and a[0].\n\n### Details\n\n- one\n- two\n\n\
             ## Use\n\n```\n[not](a link\n```\n\n[r]: https://example.com/r\n",
        );
        assert!(r.passed, "{}", r.details);
        assert_eq!(r.score, 100);
        assert!(r.details.starts_with("4 headings"), "{}", r.details);
    }

    #[test]
    fn skipped_levels_and_empty_sections_fail() {
        let r = check(
            "# Title\n\nIntro.\n\n### Deep\n\nText.\n\n## Empty\n\n## Next\n\nText.\n\n## Last\n",
        );
        assert!(!r.passed);
        assert!(
            r.details.contains("heading at 5:1 skips from level 1 to 3"),
            "{}",
            r.details
        );
        assert!(
            r.details
                .contains("the section of the heading at 9:1 is empty"),
            "{}",
            r.details
        );
        assert!(
            r.details
                .contains("the section of the heading at 15:1 is empty"),
            "{}",
            r.details
        );
        assert!(
            r.details.starts_with("3 structure problems"),
            "{}",
            r.details
        );
        assert_eq!(r.score, 55);
    }

    #[test]
    fn broken_links_fail() {
        let r = check("# T\n\nSee [the docs](https://example.com and more.\n\nAlso [a ref][missing] and [undefined].\n");
        assert!(!r.passed);
        assert!(
            r.details.contains("link at 3:14 is not closed"),
            "{}",
            r.details
        );
        assert!(
            r.details
                .contains("link reference at 5:6 has no definition"),
            "{}",
            r.details
        );
        assert!(
            r.details.starts_with("3 structure problems"),
            "{}",
            r.details
        );
        assert!(
            r.details
                .contains("link reference at 5:27 has no definition"),
            "{}",
            r.details
        );
    }

    #[test]
    fn a_long_document_needs_headings() {
        let body = crate::quality::testing::PROSE.repeat(6);
        let r = check(&body);
        assert!(!r.passed);
        assert!(r.details.contains("no heading"), "{}", r.details);
        let r = check(&format!("# Title\n\n{body}"));
        assert!(r.passed, "{}", r.details);
    }

    #[test]
    fn prose_drops_code_blocks_and_markup() {
        let p = prose("# Head\n\nSome **bold**ly `code`\n\n```rust\nfn main() {}\n```\n- item\n");
        assert_eq!(
            super::super::text::words(&p),
            ["head", "some", "boldly", "code", "item"]
        );
    }

    #[test]
    fn applies_to_markdown_only() {
        let content = json!("# x");
        let a = crate::quality::Analysis::new(sub(TaskKind::Text, None, &content));
        assert!(Markdown.run(&a).is_none());
    }
}

//! `length` and `repetition`: is prose (text and markdown tasks) long enough, and is it more
//! than the same few words over and over?

use std::collections::{HashMap, HashSet};

use super::{Analysis, Check, CheckResult};
use crate::task::TaskKind;

/// Words in one window of the moving type-token ratio. Over a whole text the share of
/// distinct words falls as the text grows (an essay reuses "the"); over a fixed window it
/// does not, so one pass mark serves a paragraph and a book.
const WINDOW: usize = 50;

/// Texts shorter than this are not judged for repetition: too few words to tell.
const MIN_WORDS_JUDGED: usize = 10;

/// Moving type-token ratio at which `repetition` scores 0 and 100; the pass mark (score 50)
/// lies halfway, at 0.4. Ordinary prose scores 0.65–0.8.
const TTR_ZERO: f64 = 0.2;
const TTR_FULL: f64 = 0.6;

/// Share of repeated trigrams at which `repetition` scores 100 and 0; the pass mark lies
/// halfway, at 0.4. Ordinary prose repeats a few per cent ("one of the").
const TRIGRAMS_FULL: f64 = 0.1;
const TRIGRAMS_ZERO: f64 = 0.7;

/// `repetition` passes from this score on.
const REPETITION_PASS: u8 = 50;

/// The words of `text`: whitespace-separated tokens, lowercased and stripped of surrounding
/// punctuation; tokens without a letter or digit (a lone dash, a bullet) are not words.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|t| t.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn applies(s: &Analysis<'_>) -> bool {
    matches!(s.kind, TaskKind::Text | TaskKind::Markdown) && s.text().is_some()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `length` (text and markdown): at least the task's `min_words` words; the score is the
/// share of the minimum reached. Markdown counts the words of its text, not of code blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Length;

impl Length {
    pub const NAME: &'static str = "length";
}

impl Check for Length {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        if !applies(s) {
            return None;
        }
        let n = s.words().len();
        let min = usize::try_from(s.min_words).unwrap_or(usize::MAX);
        let counted = if s.kind == TaskKind::Markdown {
            " (code blocks not counted)"
        } else {
            ""
        };
        let details = format!(
            "{}{counted}; the task asks for at least {}",
            plural(n, "word", "words"),
            plural(min, "word", "words")
        );
        Some(if n >= min {
            CheckResult::pass(Self::NAME, details)
        } else {
            // n < min, so the share is below 100.
            let share = u8::try_from(n * 100 / min).unwrap_or(99);
            CheckResult::fail(Self::NAME, share, details)
        })
    }
}

/// `repetition` (text and markdown): the content is not mostly the same words or phrases.
///
/// Two measures, each mapped linearly to 0..=100, and the lower one is the score:
/// the moving type-token ratio (distinct words per window of 50 words, averaged over the
/// windows; 0.2 → 0, 0.6 → 100) and the share of word trigrams that repeat an earlier one
/// (0.7 → 0, 0.1 → 100). It passes from 50: a ratio of at least 0.4 and at most 40 % of the
/// trigrams repeated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Repetition;

impl Repetition {
    pub const NAME: &'static str = "repetition";
}

/// Mean share of distinct words over every window of [`WINDOW`] words (the whole text when
/// shorter), kept incrementally so a long text costs one pass.
fn moving_type_token_ratio(words: &[String]) -> f64 {
    let window = WINDOW.min(words.len());
    if window == 0 {
        return 1.0;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &words[..window] {
        *counts.entry(w).or_default() += 1;
    }
    let mut sum = counts.len();
    let mut windows = 1usize;
    for i in window..words.len() {
        let out = words[i - window].as_str();
        if let Some(c) = counts.get_mut(out) {
            *c -= 1;
            if *c == 0 {
                counts.remove(out);
            }
        }
        *counts.entry(&words[i]).or_default() += 1;
        sum += counts.len();
        windows += 1;
    }
    sum as f64 / (windows * window) as f64
}

/// Share of word trigrams that already occurred earlier in the text.
fn repeated_trigram_share(words: &[String]) -> f64 {
    let trigrams: Vec<_> = words.windows(3).collect();
    if trigrams.is_empty() {
        return 0.0;
    }
    let distinct: HashSet<_> = trigrams.iter().collect();
    1.0 - distinct.len() as f64 / trigrams.len() as f64
}

/// `value` mapped linearly from `zero` (→ 0) to `full` (→ 100), clamped.
fn linear(value: f64, zero: f64, full: f64) -> u8 {
    let s = ((value - zero) / (full - zero) * 100.0).clamp(0.0, 100.0);
    // Clamped to 0..=100 above, so the cast cannot truncate.
    s.round() as u8
}

impl Check for Repetition {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, s: &Analysis<'_>) -> Option<CheckResult> {
        if !applies(s) {
            return None;
        }
        let words = s.words();
        if words.len() < MIN_WORDS_JUDGED {
            return Some(CheckResult::pass(
                Self::NAME,
                format!(
                    "{}: too few to judge repetition",
                    plural(words.len(), "word", "words")
                ),
            ));
        }
        let ttr = moving_type_token_ratio(words);
        let repeated = repeated_trigram_share(words);
        let score =
            linear(ttr, TTR_ZERO, TTR_FULL).min(linear(repeated, TRIGRAMS_ZERO, TRIGRAMS_FULL));
        let details = format!(
            "distinct-word ratio {ttr:.2} (per {WINDOW} words; at least 0.40 passes), \
             {:.0}% of word trigrams repeated (at most 40% passes)",
            repeated * 100.0
        );
        Some(CheckResult::graded(
            Self::NAME,
            score,
            REPETITION_PASS,
            details,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::testing::{run_one, sub, PROSE};
    use crate::quality::{quality_score, CheckPipeline, Submission};
    use serde_json::{json, Value};

    fn text(content: &Value, min_words: u32) -> Submission<'_> {
        Submission {
            min_words,
            ..sub(TaskKind::Text, None, content)
        }
    }

    #[test]
    fn words_are_lowercased_and_stripped() {
        assert_eq!(
            words("Hello, world! — (It's) 42 ... e-mail"),
            ["hello", "world", "it's", "42", "e-mail"]
        );
        assert!(words("  \n - * ").is_empty());
    }

    #[test]
    fn length_passes_at_the_minimum() {
        let content = json!(PROSE);
        let r = run_one(&Length, &text(&content, 20));
        assert!(r.passed, "{}", r.details);
        assert_eq!(r.score, 100);
        assert!(r.details.starts_with("54 words;"), "{}", r.details);

        let exactly = json!("one two three");
        assert!(run_one(&Length, &text(&exactly, 3)).passed);
        assert!(run_one(&Length, &text(&exactly, 0)).passed);
    }

    #[test]
    fn length_fails_below_the_minimum_with_a_growing_score() {
        let x = json!("x");
        let r = run_one(&Length, &text(&x, 20));
        assert!(!r.passed);
        assert_eq!(r.score, 5);
        assert_eq!(r.details, "1 word; the task asks for at least 20 words");

        let ten = json!("a b c d e f g h i j");
        let r = run_one(&Length, &text(&ten, 20));
        assert!(!r.passed);
        assert_eq!(r.score, 50);
        assert!(Length
            .run(&Analysis::new(sub(TaskKind::Code, None, &ten)))
            .is_none());
        assert!(Length
            .run(&Analysis::new(sub(TaskKind::Json, None, &json!({"a": 1}))))
            .is_none());
    }

    #[test]
    fn markdown_length_ignores_code_blocks() {
        let md = json!(
            "# Title\n\nthree words here\n\n```\nlots of code words that do not count\n```\n"
        );
        let s = Submission {
            min_words: 5,
            ..sub(TaskKind::Markdown, None, &md)
        };
        let r = run_one(&Length, &s);
        assert!(!r.passed, "{}", r.details);
        assert!(
            r.details.starts_with("4 words (code blocks not counted)"),
            "{}",
            r.details
        );
    }

    #[test]
    fn repetition_passes_ordinary_prose() {
        let content = json!(PROSE);
        let r = run_one(&Repetition, &text(&content, 20));
        assert!(r.passed, "{}", r.details);
        assert_eq!(r.score, 100, "{}", r.details);
    }

    #[test]
    fn repetition_fails_the_same_words_over_and_over() {
        let same = json!("buy now ".repeat(40));
        let r = run_one(&Repetition, &text(&same, 20));
        assert!(!r.passed, "{}", r.details);
        assert_eq!(r.score, 0);

        // Every word distinct per sentence, but one sentence over and over: trigrams catch it.
        let looped = json!("the quick brown fox jumps over the lazy dog. ".repeat(12));
        let r = run_one(&Repetition, &text(&looped, 20));
        assert!(!r.passed, "{}", r.details);
        assert!(
            r.details.contains("% of word trigrams repeated"),
            "{}",
            r.details
        );

        let short = json!("no no no no");
        assert!(run_one(&Repetition, &text(&short, 0)).passed);
    }

    #[test]
    fn moving_ratio_is_length_independent() {
        let w = |t: &str| words(t);
        let long = PROSE;
        assert!(moving_type_token_ratio(&w(long)) > 0.6);
        assert!((moving_type_token_ratio(&w("a a a a")) - 0.25).abs() < 1e-9);
        assert!((moving_type_token_ratio(&[]) - 1.0).abs() < 1e-9);
        assert!((repeated_trigram_share(&w("a b c a b c")) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn x_and_filler_are_rejected_good_prose_accepted() {
        let p = CheckPipeline::standard(1 << 20);
        let x = json!("x");
        let checks = p.run(&sub(TaskKind::Text, None, &x));
        assert!(quality_score(&checks) < 60, "{checks:?}");

        let filler = json!("great work done ".repeat(30));
        let checks = p.run(&sub(TaskKind::Text, None, &filler));
        assert!(checks.iter().any(|c| c.name == "repetition" && !c.passed));
        assert!(quality_score(&checks) < 60, "{checks:?}");

        let good = json!(PROSE);
        let checks = p.run(&sub(TaskKind::Text, None, &good));
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
        assert_eq!(quality_score(&checks), 100);
    }
}

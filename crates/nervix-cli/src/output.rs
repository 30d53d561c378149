//! What the client commands print: aligned tables for people, JSON for scripts, durations and
//! deadlines as people type them.

use std::fmt::Write as _;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

/// `--json`: every client command prints its result as JSON on stdout instead of text.
#[derive(clap::Args, Clone, Copy)]
pub struct Format {
    /// Print JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn opt_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "-".to_owned(), rfc3339)
}

/// At most `max` characters, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    let text = text.trim().replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Columns padded to their widest cell; the last column is not padded.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A duration as people type it: `500ms`, `90s`, `30m`, `2h`, `7d`, `1w`, or several (`1h30m`).
pub fn parse_duration(text: &str) -> anyhow::Result<chrono::Duration> {
    let text = text.trim();
    let bad = || anyhow::anyhow!("{text:?} is not a duration like 90s, 30m, 2h, 7d or 1h30m");
    if text.is_empty() {
        bail!("empty duration");
    }
    let mut total = chrono::Duration::zero();
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (number, after) = rest.split_at(digits);
        let letters = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(letters);
        let n: i64 = number.parse().map_err(|_| bad())?;
        total += match unit {
            "ms" => chrono::Duration::milliseconds(n),
            "s" => chrono::Duration::seconds(n),
            "m" => chrono::Duration::minutes(n),
            "h" => chrono::Duration::hours(n),
            "d" => chrono::Duration::days(n),
            "w" => chrono::Duration::weeks(n),
            "" => bail!("{text:?} needs a unit (ms, s, m, h, d or w) after {number}"),
            _ => return Err(bad()),
        };
        rest = after;
    }
    Ok(total)
}

/// A deadline: an RFC 3339 time, or a duration from `now`.
pub fn parse_deadline(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&Utc));
    }
    parse_duration(text)
        .map(|d| now + d)
        .with_context(|| format!("deadline {text:?} is neither an RFC 3339 time nor a duration"))
}

/// Replaces a task body's `deadline` written as a duration (`24h`) by the time it names, and
/// gives a task without one `default`.
pub fn resolve_deadline(
    task: &mut serde_json::Map<String, Value>,
    default: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let at = match task.get("deadline") {
        None | Some(Value::Null) => default,
        Some(Value::String(text)) => parse_deadline(text, now)?,
        Some(other) => bail!("deadline must be a time or a duration, not {other}"),
    };
    task.insert("deadline".into(), Value::String(rfc3339(at)));
    Ok(())
}

/// The fields a task body may have (`POST /v1/tasks`, and a workflow's tasks with `key`):
/// a misspelt field would otherwise be dropped without a word.
pub const TASK_FIELDS: &[&str] = &[
    "title",
    "description",
    "requirements",
    "reward",
    "complexity",
    "deadline",
    "kind",
    "output_schema",
    "language",
    "min_words",
    "max_attempts",
    "depends_on",
];

pub fn check_fields(
    object: &serde_json::Map<String, Value>,
    allowed: &[&str],
    extra: &[&str],
    at: &str,
) -> anyhow::Result<()> {
    for name in object.keys() {
        if !allowed.contains(&name.as_str()) && !extra.contains(&name.as_str()) {
            bail!("{at}: unknown field `{name}`");
        }
    }
    if let Some(req) = object.get("requirements") {
        let Value::Object(req) = req else {
            bail!("{at}.requirements: must be a map");
        };
        for name in req.keys() {
            if !["capabilities", "min_reputation"].contains(&name.as_str()) {
                bail!("{at}.requirements: unknown field `{name}`");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_deadlines() {
        assert_eq!(
            parse_duration("90s").unwrap(),
            chrono::Duration::seconds(90)
        );
        assert_eq!(
            parse_duration("1h30m").unwrap(),
            chrono::Duration::minutes(90)
        );
        assert_eq!(parse_duration("2w").unwrap(), chrono::Duration::days(14));
        assert_eq!(
            parse_duration("250ms").unwrap(),
            chrono::Duration::milliseconds(250)
        );
        for bad in ["", "10", "h", "5x", "1.5h", "-3h", "3 h", "1hh"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        let now = Utc::now();
        assert_eq!(
            parse_deadline("24h", now).unwrap(),
            now + chrono::Duration::hours(24)
        );
        assert_eq!(
            rfc3339(parse_deadline("2099-01-01T00:00:00Z", now).unwrap()),
            "2099-01-01T00:00:00Z"
        );
        assert!(parse_deadline("tomorrow", now).is_err());
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["ID", "TITLE"]);
        t.row(vec!["a".into(), "first".into()]);
        t.row(vec!["longer".into(), "second".into()]);
        assert_eq!(t.render(), "ID      TITLE\na       first\nlonger  second\n");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("a\nb", 4), "a b");
    }

    #[test]
    fn unknown_fields_are_named() {
        let task = serde_json::json!({"title": "t", "rewrd": 1});
        let err =
            check_fields(task.as_object().unwrap(), TASK_FIELDS, &[], "tasks[1]").unwrap_err();
        assert_eq!(err.to_string(), "tasks[1]: unknown field `rewrd`");
        let task = serde_json::json!({"title": "t", "requirements": {"capability": []}});
        assert!(check_fields(task.as_object().unwrap(), TASK_FIELDS, &[], "task").is_err());
    }
}

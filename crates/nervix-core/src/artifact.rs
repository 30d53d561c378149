//! Artifacts: files attached to a submission. What a file is gets decided from its bytes (magic
//! numbers, UTF-8), with the file name refining text only: a declared `Content-Type` is never
//! believed on its own. Which kinds of file a task accepts, and which automated checks run on
//! one, follow from that.

use std::ops::Range;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::quality::{
    CheckPipeline, CheckResult, JsonSchema, Lint, Markdown, SecretScan, Submission, Syntax,
};
use crate::task::TaskKind;
use crate::FieldError;

/// Bytes of the start of a file that [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 8192;

/// What a file is, as far as the platform cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Json,
    Markdown,
    /// Source code in a language with a parser (`quality::Language` name).
    Source(&'static str),
    /// Any other UTF-8 text (plain text, CSV, source in a language without a parser, ...).
    Text,
    Image,
    Pdf,
    /// zip, gzip, tar and the like.
    Archive,
    /// A program for some machine: never accepted.
    Executable,
    /// Bytes nothing recognises.
    Binary,
}

/// The outcome of [`sniff`]: the class and the media type recorded for the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub class: Class,
    pub content_type: String,
}

/// What `head` (the first [`SNIFF_BYTES`] of a file, or all of a shorter one) is. `filename`
/// only tells kinds of text apart (`.json`, `.md`, `.rs`...); `complete` says `head` is the
/// whole file, so a multi-byte character cut at its end is not mistaken for binary.
pub fn sniff(head: &[u8], filename: Option<&str>, complete: bool) -> Sniffed {
    if let Some(t) = infer::get(head) {
        use infer::MatcherType as M;
        let class = match t.matcher_type() {
            M::Image => Class::Image,
            M::Archive if t.mime_type() == "application/pdf" => Class::Pdf,
            M::Archive if is_executable(t.mime_type()) => Class::Executable,
            M::Archive => Class::Archive,
            M::App => Class::Executable,
            _ => Class::Binary,
        };
        return Sniffed {
            class,
            content_type: t.mime_type().to_owned(),
        };
    }
    if !is_text(head, complete) {
        return Sniffed {
            class: Class::Binary,
            content_type: "application/octet-stream".to_owned(),
        };
    }
    let ext = filename
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    let (class, content_type) = match ext.as_deref() {
        Some("json") => (Class::Json, "application/json".to_owned()),
        Some("md" | "markdown") => (Class::Markdown, "text/markdown; charset=utf-8".to_owned()),
        Some(e) => match crate::quality::Language::from_name(e) {
            Some(lang) => (
                Class::Source(lang.name()),
                format!("text/x-{}; charset=utf-8", lang.name()),
            ),
            None => (Class::Text, "text/plain; charset=utf-8".to_owned()),
        },
        None => (Class::Text, "text/plain; charset=utf-8".to_owned()),
    };
    Sniffed {
        class,
        content_type,
    }
}

fn is_executable(mime: &str) -> bool {
    matches!(
        mime,
        "application/x-executable"
            | "application/vnd.microsoft.portable-executable"
            | "application/x-mach-binary"
            | "application/x-msdownload"
            | "application/vnd.android.dex"
            | "application/x-shockwave-flash"
    )
}

/// UTF-8 without NULs; a character cut by the end of an incomplete head still counts.
fn is_text(head: &[u8], complete: bool) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => !complete && e.error_len().is_none(),
    }
}

/// Whether a task of `kind` takes a file of `class`: every task takes text, JSON, images and
/// PDFs (work and its evidence); code tasks also take archives (a project); nothing takes
/// programs or unrecognised binaries, which no reviewer could look at safely.
pub fn accepts(kind: TaskKind, class: &Class) -> bool {
    match class {
        Class::Json
        | Class::Markdown
        | Class::Source(_)
        | Class::Text
        | Class::Image
        | Class::Pdf => true,
        Class::Archive => kind == TaskKind::Code,
        Class::Executable | Class::Binary => false,
    }
}

/// A name for the error when a task refuses a file.
pub fn refusal(kind: TaskKind, sniffed: &Sniffed) -> String {
    format!(
        "a {kind} task does not accept {} files",
        sniffed.content_type
    )
}

/// The checks that apply to a whole file of `class` (its text when it is text): JSON must
/// parse, source must parse and lint, markdown must be well formed; the secret scan runs on
/// every file (see [`scan_window`] for the parts of large ones).
pub fn checks(class: &Class, text: &str) -> Vec<CheckResult> {
    let pipeline = CheckPipeline::new()
        .with(JsonSchema)
        .with(Syntax)
        .with(Lint)
        .with(Markdown)
        .with(SecretScan);
    let (kind, language, content) = match class {
        Class::Json => match serde_json::from_str::<Value>(text) {
            Ok(v) => (TaskKind::Json, None, v),
            Err(e) => {
                let mut out = vec![CheckResult::fail(
                    JsonSchema::NAME,
                    0,
                    format!("not valid JSON: {e}"),
                )];
                out.extend(scan_window(text));
                return out;
            }
        },
        Class::Markdown => (TaskKind::Markdown, None, Value::String(text.to_owned())),
        Class::Source(lang) => (TaskKind::Code, Some(*lang), Value::String(text.to_owned())),
        _ => (TaskKind::Text, None, Value::String(text.to_owned())),
    };
    pipeline.run(&Submission {
        kind,
        output_schema: None,
        language,
        min_words: 0,
        content: &content,
    })
}

/// The secret scan of one part of a file (binary parts read as lossy UTF-8, so strings inside
/// them are still found).
pub fn scan_window(text: &str) -> Option<CheckResult> {
    CheckPipeline::new()
        .with(SecretScan)
        .run(&Submission {
            kind: TaskKind::Text,
            output_schema: None,
            language: None,
            min_words: 0,
            content: &Value::String(text.to_owned()),
        })
        .pop()
}

/// A file name as uploaded: its last path component, printable, at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName(String);

impl FileName {
    pub const FIELD: &'static str = "filename";

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.rsplit(['/', '\\']).next().unwrap_or("").trim();
        if name.is_empty() || name == "." || name == ".." {
            return Err(FieldError::new(Self::FIELD, "must name a file"));
        }
        if name.len() > 255 {
            return Err(FieldError::new(Self::FIELD, "at most 255 bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                Self::FIELD,
                "must not contain control characters",
            ));
        }
        Ok(FileName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Bytes of a large file scanned for secrets at a time, and how much of the end of one
/// window the next repeats, so a secret across the boundary is seen whole.
const SCAN_WINDOW: usize = 256 * 1024;
const SCAN_OVERLAP: usize = 4096;

/// A file refused for its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// What an upload turned out to be, once all of it went through [`Ingest`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    pub sniffed: Sniffed,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub checks: Vec<CheckResult>,
}

/// Looks at an upload as it streams past, holding at most `check_bytes` of it (plus a scan
/// window): hashes it, decides its type from its first bytes (refusing early what the task
/// does not take), keeps a small text file whole for the checks that need all of it, and
/// scans a large one for secrets window by window.
pub struct Ingest {
    kind: TaskKind,
    filename: Option<String>,
    check_bytes: usize,
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
    sniffed: Option<Sniffed>,
    /// The whole file while it is at most `check_bytes`.
    whole: Option<Vec<u8>>,
    window: Vec<u8>,
    /// Where `window` starts in the file.
    window_at: u64,
    /// Secret-scan findings of the windows scanned so far.
    found: Vec<String>,
}

impl Ingest {
    pub fn new(kind: TaskKind, filename: Option<&str>, check_bytes: usize) -> Self {
        Ingest {
            kind,
            filename: filename.map(str::to_owned),
            check_bytes,
            hasher: Sha256::new(),
            size: 0,
            head: Vec::new(),
            sniffed: None,
            whole: Some(Vec::new()),
            window: Vec::new(),
            window_at: 0,
            found: Vec::new(),
        }
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next part of the file.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Refused> {
        self.size += chunk.len() as u64;
        self.hasher.update(chunk);
        if self.sniffed.is_none() {
            let take = (SNIFF_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            if self.head.len() >= SNIFF_BYTES {
                self.decide(false)?;
            }
        }
        if let Some(whole) = &mut self.whole {
            if whole.len() + chunk.len() <= self.check_bytes {
                whole.extend_from_slice(chunk);
            } else {
                self.whole = None;
            }
        }
        self.window.extend_from_slice(chunk);
        while self.window.len() >= SCAN_WINDOW + SCAN_OVERLAP {
            let rest = self.window.split_off(SCAN_WINDOW);
            self.scan_window();
            // The next window starts with the end of this one.
            let keep = self.window.len() - SCAN_OVERLAP;
            self.window.drain(..keep);
            self.window_at += keep as u64;
            self.window.extend_from_slice(&rest);
        }
        Ok(())
    }

    fn decide(&mut self, complete: bool) -> Result<(), Refused> {
        let sniffed = sniff(&self.head, self.filename.as_deref(), complete);
        if !accepts(self.kind, &sniffed.class) {
            return Err(Refused(refusal(self.kind, &sniffed)));
        }
        self.sniffed = Some(sniffed);
        Ok(())
    }

    fn scan_window(&mut self) {
        let text = String::from_utf8_lossy(&self.window);
        if let Some(r) = scan_window(&text) {
            if !r.passed {
                let end = self.window_at + self.window.len() as u64;
                self.found
                    .push(format!("bytes {}-{}: {}", self.window_at, end, r.details));
            }
        }
    }

    /// The end of the file: its type, digest and checks.
    pub fn finish(mut self) -> Result<Ingested, Refused> {
        if self.sniffed.is_none() {
            self.decide(true)?;
        }
        let sniffed = self.sniffed.take().unwrap_or_else(|| Sniffed {
            class: Class::Binary,
            content_type: "application/octet-stream".to_owned(),
        });
        let textual = matches!(
            sniffed.class,
            Class::Json | Class::Markdown | Class::Source(_) | Class::Text
        );
        let whole_text = self
            .whole
            .take()
            .filter(|_| textual)
            .and_then(|w| String::from_utf8(w).ok());
        let checks = match whole_text {
            Some(text) => checks(&sniffed.class, &text),
            None => {
                self.scan_window();
                vec![if self.found.is_empty() {
                    CheckResult::pass(
                        SecretScan::NAME,
                        format!("no secrets found in {} bytes", self.size),
                    )
                } else {
                    CheckResult::fail(SecretScan::NAME, 0, self.found.join("; "))
                }]
            }
        };
        Ok(Ingested {
            sniffed,
            size: self.size,
            sha256: format!("{:x}", self.hasher.finalize()),
            checks,
        })
    }
}

/// One range of a `Range: bytes=…` header. Several ranges in one header are not served as
/// such: the whole file is (which RFC 9110 allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `a-b`, both included.
    Bounded(u64, u64),
    /// `a-`.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The range a header asks for; `None` for anything but one well-formed byte range.
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        match (a.is_empty(), b.is_empty()) {
            (true, false) => b.parse().ok().map(ByteRange::Suffix),
            (false, true) => a.parse().ok().map(ByteRange::From),
            (false, false) => {
                let (a, b) = (a.parse().ok()?, b.parse().ok()?);
                (a <= b).then_some(ByteRange::Bounded(a, b))
            }
            (true, true) => None,
        }
    }

    /// The bytes (end excluded) of a file of `size` this range names; `None` when it names
    /// none of them (416).
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        let r = match self {
            ByteRange::Bounded(a, b) => a..(b.saturating_add(1)).min(size),
            ByteRange::From(a) => a..size,
            ByteRange::Suffix(n) => size.saturating_sub(n)..size,
        };
        (r.start < r.end).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bytes_decide_and_names_only_refine_text() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png, Some("notes.md"), true).class, Class::Image);
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0".to_vec();
        elf.resize(64, 0);
        assert_eq!(
            sniff(&elf, Some("report.txt"), true).class,
            Class::Executable
        );
        assert_eq!(
            sniff(b"# Title\n", Some("a.md"), true).class,
            Class::Markdown
        );
        assert_eq!(
            sniff(b"fn main() {}\n", Some("src/main.rs"), true).class,
            Class::Source("rust")
        );
        assert_eq!(sniff(b"{\"a\":1}", Some("x.JSON"), true).class, Class::Json);
        assert_eq!(sniff(b"plain", None, true).class, Class::Text);
        assert_eq!(sniff(b"a\0b", None, true).class, Class::Binary);
        // "é" cut in half: text while more is to come, binary as a whole file.
        assert_eq!(sniff(b"caf\xc3", None, false).class, Class::Text);
        assert_eq!(sniff(b"caf\xc3", None, true).class, Class::Binary);
    }

    #[test]
    fn tasks_refuse_programs_and_unknown_binaries() {
        for kind in [
            TaskKind::Text,
            TaskKind::Json,
            TaskKind::Markdown,
            TaskKind::Code,
        ] {
            assert!(accepts(kind, &Class::Pdf));
            assert!(!accepts(kind, &Class::Executable));
            assert!(!accepts(kind, &Class::Binary));
        }
        assert!(accepts(TaskKind::Code, &Class::Archive));
        assert!(!accepts(TaskKind::Text, &Class::Archive));
    }

    #[test]
    fn checks_follow_the_class() {
        let names = |v: Vec<CheckResult>| {
            v.into_iter()
                .map(|c| (c.name, c.passed))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(checks(&Class::Json, "{\"a\": 1")),
            [
                ("json_schema".to_owned(), false),
                ("secret_scan".to_owned(), true)
            ]
        );
        let rust = names(checks(&Class::Source("rust"), "fn main( {"));
        assert!(rust.contains(&("syntax".to_owned(), false)), "{rust:?}");
        let text = names(checks(
            &Class::Text,
            "key: AKIAIOSFODNN7EXAMPLE and nothing else",
        ));
        assert_eq!(text, [("secret_scan".to_owned(), false)]);
    }

    #[test]
    fn ingest_hashes_sniffs_and_scans_large_files_in_windows() {
        let mut big = vec![b'a'; SCAN_WINDOW - 10];
        big.extend_from_slice(b" AKIAIOSFODNN7EXAMPLE ");
        big.extend(vec![b'b'; SCAN_WINDOW]);
        let mut ingest = Ingest::new(TaskKind::Text, Some("log.txt"), 1024);
        for chunk in big.chunks(1000) {
            ingest.feed(chunk).unwrap();
        }
        let done = ingest.finish().unwrap();
        assert_eq!(done.size, big.len() as u64);
        assert_eq!(done.sha256, format!("{:x}", Sha256::digest(&big)));
        assert_eq!(done.sniffed.class, Class::Text);
        assert_eq!(done.checks.len(), 1);
        assert!(!done.checks[0].passed, "{:?}", done.checks);

        let mut small = Ingest::new(TaskKind::Code, Some("main.py"), 1024);
        small.feed(b"def f(:\n").unwrap();
        let done = small.finish().unwrap();
        assert!(done.checks.iter().any(|c| c.name == "syntax" && !c.passed));

        let mut elf = Ingest::new(TaskKind::Code, None, 1024);
        let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
        bytes.resize(SNIFF_BYTES + 1, 0);
        assert!(
            elf.feed(&bytes).is_err(),
            "refused as soon as the head is in"
        );
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(
            ByteRange::parse("bytes=0-9"),
            Some(ByteRange::Bounded(0, 9))
        );
        assert_eq!(ByteRange::parse("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(ByteRange::parse("bytes=-3"), Some(ByteRange::Suffix(3)));
        assert_eq!(ByteRange::parse("bytes=0-1,4-5"), None);
        assert_eq!(ByteRange::parse("bytes=9-1"), None);
        assert_eq!(ByteRange::parse("items=0-1"), None);
        assert_eq!(ByteRange::Bounded(0, 99).resolve(10), Some(0..10));
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some(7..10));
        assert_eq!(ByteRange::From(10).resolve(10), None);
        assert_eq!(ByteRange::Suffix(0).resolve(10), None);
    }

    #[test]
    fn file_names_keep_their_last_component() {
        assert_eq!(
            FileName::parse("../../etc/passwd").unwrap().as_str(),
            "passwd"
        );
        assert_eq!(FileName::parse("C:\\x\\a.md").unwrap().as_str(), "a.md");
        assert!(FileName::parse("dir/").is_err());
        assert!(FileName::parse("a\nb").is_err());
    }
}

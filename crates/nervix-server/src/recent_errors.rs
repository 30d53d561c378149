//! The errors this node logged last, for the admin's system page: a `tracing` layer keeps the
//! newest ERROR events (a 500's cause, a worker that failed and was restarted, a template that
//! did not render) with the request they happened in, in a small ring in memory.
//!
//! The log stays the record; this is what an operator sees without a log pipeline. It is one
//! ring per process (like the log itself), shared by every server the process runs, so the
//! layer is installed once, by whoever installs the subscriber (`nervix serve`, the tests).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Errors kept: enough to see a pattern, small enough to render at once.
const KEEP: usize = 50;
/// A field's text is cut here: an error names its cause, not a dump.
const MAX_TEXT: usize = 500;

/// One logged error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedError {
    pub at: DateTime<Utc>,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields (`error = …`, `worker = …`).
    pub message: String,
    /// The request it happened in (`method path`, and its `x-request-id`), if any.
    pub request: Option<String>,
    pub request_id: Option<String>,
}

/// The ring of recent errors.
#[derive(Debug, Default)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<LoggedError>>,
}

impl RecentErrors {
    /// The process's ring.
    pub fn global() -> &'static Arc<RecentErrors> {
        static RING: OnceLock<Arc<RecentErrors>> = OnceLock::new();
        RING.get_or_init(Arc::default)
    }

    /// The layer that fills the process's ring.
    pub fn layer() -> ErrorLayer {
        ErrorLayer {
            ring: RecentErrors::global().clone(),
        }
    }

    fn push(&self, e: LoggedError) {
        let mut ring = self.ring.lock();
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(e);
    }

    /// The kept errors, newest first.
    pub fn newest_first(&self) -> Vec<LoggedError> {
        self.ring.lock().iter().rev().cloned().collect()
    }
}

/// Collects ERROR events into a [`RecentErrors`] ring.
pub struct ErrorLayer {
    ring: Arc<RecentErrors>,
}

/// What a request span said of itself, kept in its extensions for the events inside it.
struct RequestFields {
    request: String,
    request_id: Option<String>,
}

impl<S> Layer<S> for ErrorLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if fields.path.is_none() && fields.request_id.is_none() {
            return;
        }
        let request = [fields.method, fields.path]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(RequestFields {
                request,
                request_id: fields.request_id,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (request, request_id) = ctx
            .event_scope(event)
            .into_iter()
            .flatten()
            .find_map(|span| {
                span.extensions()
                    .get::<RequestFields>()
                    .map(|r| (Some(r.request.clone()), r.request_id.clone()))
            })
            .unwrap_or_default();
        self.ring.push(LoggedError {
            at: Utc::now(),
            target: event.metadata().target().to_owned(),
            message: fields.text,
            request,
            request_id,
        });
    }
}

/// An event's or a span's fields as text, and the request fields picked out.
#[derive(Default)]
struct Fields {
    text: String,
    method: Option<String>,
    path: Option<String>,
    request_id: Option<String>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: String) {
        match field.name() {
            "method" => self.method = Some(value),
            "path" => self.path = Some(value),
            "request_id" => self.request_id = Some(value),
            "message" => {
                let rest = std::mem::take(&mut self.text);
                self.text = value;
                if !rest.is_empty() {
                    self.text.push_str(&rest);
                }
            }
            name => {
                let _ = write!(self.text, " {name}={value}");
            }
        }
        if self.text.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !self.text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.truncate(cut);
            self.text.push('…');
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    fn ring_with_layer() -> (Arc<RecentErrors>, impl Subscriber) {
        let ring = Arc::new(RecentErrors::default());
        let layer = ErrorLayer { ring: ring.clone() };
        (ring, tracing_subscriber::registry().with(layer))
    }

    #[test]
    fn keeps_errors_with_their_request_newest_first() {
        let (ring, subscriber) = ring_with_layer();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not an error");
            tracing::warn!("nor this");
            tracing::error!(worker = "reputation", "worker failed; restarting");
            let span = tracing::info_span!(
                "request",
                method = %"POST",
                path = %"/v1/tasks",
                request_id = %"0b6e"
            );
            let _in = span.enter();
            let inner = tracing::info_span!("store.submit");
            let _inner = inner.enter();
            tracing::error!(error = %"disk full", "internal error");
        });
        let kept = ring.newest_first();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].message, "internal error error=disk full");
        assert_eq!(kept[0].request.as_deref(), Some("POST /v1/tasks"));
        assert_eq!(kept[0].request_id.as_deref(), Some("0b6e"));
        assert_eq!(
            kept[1].message,
            "worker failed; restarting worker=reputation"
        );
        assert_eq!(kept[1].request, None);
    }

    #[test]
    fn keeps_the_newest_and_cuts_long_text() {
        let (ring, subscriber) = ring_with_layer();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..KEEP + 5 {
                tracing::error!(n = i, "failed");
            }
            tracing::error!(error = %"x".repeat(2000), "huge");
        });
        let kept = ring.newest_first();
        assert_eq!(kept.len(), KEEP);
        assert!(kept[0].message.starts_with("huge error=xxx"));
        assert!(kept[0].message.chars().count() <= MAX_TEXT + 1);
        assert_eq!(kept[1].message, format!("failed n={}", KEEP + 4));
        assert_eq!(kept[KEEP - 1].message, "failed n=6");
    }
}

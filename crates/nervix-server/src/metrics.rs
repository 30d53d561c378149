//! Prometheus metrics (prometheus-client, no global registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RequestLabels, Histogram>,
    /// Seconds from a task becoming available to its `task_available` events being published.
    pub match_latency: Histogram,
    pub notifications: Counter,
    /// Agent WebSocket connections open on this node.
    pub ws_connections: Gauge,
    /// Stored frames written to agent connections (not pongs or errors).
    pub ws_frames_sent: Counter,
    /// Connections closed because their client did not take frames fast enough.
    pub ws_slow_consumer_closes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nervix");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        // Finer buckets than the request histogram: this one backs a p99 target.
        let match_latency = Histogram::new(exponential_buckets(0.0002, 1.25, 40));
        let notifications = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route and status",
            latency.clone(),
        );
        registry.register(
            "match_notify_latency_seconds",
            "Time from a task becoming available to its task_available events",
            match_latency.clone(),
        );
        registry.register(
            "task_available_notifications",
            "task_available events sent",
            notifications.clone(),
        );
        let ws_connections = Gauge::default();
        let ws_frames_sent = Counter::default();
        let ws_slow_consumer_closes = Counter::default();
        registry.register(
            "ws_connections",
            "Agent WebSocket connections open on this node",
            ws_connections.clone(),
        );
        registry.register(
            "ws_frames_sent",
            "Stored frames written to agent connections",
            ws_frames_sent.clone(),
        );
        registry.register(
            "ws_slow_consumer_closes",
            "Connections closed because the client fell behind",
            ws_slow_consumer_closes.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            match_latency,
            notifications,
            ws_connections,
            ws_frames_sent,
            ws_slow_consumer_closes,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

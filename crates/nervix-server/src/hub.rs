//! The real-time hub: frames from the event bus to this node's agent connections, in `seq`
//! order per agent, with no gap and no duplicate, resumable from the store.
//!
//! One dispatcher ([`Hub::run`], a supervised worker) reads the bus and offers each frame to
//! the connections of its agent, rendered to text once per event (a broadcast's `data` once
//! for all agents) and queued without waiting in each connection's bounded queue; nobody waits
//! for a slow connection, and no connection holds more than its queue in memory. A frame that
//! finds the queue full is dropped there: it is in the store, and the connection reads it
//! back. A burst (a cancelled workflow's cascade of task updates) therefore costs a healthy
//! client nothing; a live client more than `max_lag` frames behind what it was handed (found
//! when its queue overflows), or one that stops reading (the connection's write timeout), is
//! closed as a slow consumer and resumes with `since`.
//!
//! The connection side is a [`Subscription`]. It is registered before it reads anything, so
//! every frame published from then on reaches its queue; it then replays from the store what
//! the agent asked for (`since`), and follows the queue, skipping what it already sent. A
//! frame that skips a `seq` (two transactions or nodes published one agent's frames out of
//! order, or the bus dropped one) makes it read the missing ones from the store first; the
//! store numbers each agent's events in commit order, so what it returns has no hole.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nervix_store::{Store, StoreError, StoredEvent};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Event, EventBus, Frame};
use crate::metrics::Metrics;

/// Stored events read per query while replaying.
const PAGE: i64 = 200;
/// How long shutdown waits for connections to close.
const DRAIN: Duration = Duration::from_secs(3);

/// Raised on a connection by the dispatcher; its [`Subscription`] acts on them.
/// More than `max_lag` frames behind: close it.
const SLOW: u8 = 1;
const RECHECK: u8 = 2;
/// Frames may have been missed: read the store.
const RESYNC: u8 = 4;
const SHUTDOWN: u8 = 8;

/// A frame ready to send: its wire text and its `seq`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: i64,
    pub text: Arc<str>,
}

/// The wire text of a stored frame, `{"type", "seq", "data"}`, around `data` serialized once.
pub fn frame_text(kind: &str, seq: i64, data: &str) -> String {
    let kind = Value::from(kind);
    format!(r#"{{"type":{kind},"seq":{seq},"data":{data}}}"#)
}

fn render(e: &StoredEvent) -> Delivery {
    Delivery {
        seq: e.seq,
        text: frame_text(&e.kind, e.seq, &e.data.to_string()).into(),
    }
}

/// What the dispatcher and one connection share.
struct Conn {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    /// Following the queue (not replaying from the store, which the agent asked for).
    live: AtomicBool,
    /// The last `seq` the connection handed to its socket: how far behind it is, is measured
    /// from here.
    sent: AtomicI64,
    flags: AtomicU8,
    attention: Notify,
}

impl Conn {
    fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
        self.attention.notify_one();
    }

    /// Queues `d` without waiting. What does not fit is in the store, and the connection reads
    /// it back; a live connection that is more than `max_lag` frames behind is told to close.
    fn offer(&self, d: Delivery, max_lag: i64) {
        let seq = d.seq;
        match self.tx.try_send(d) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                let live = self.live.load(Ordering::Acquire);
                if live && seq - self.sent.load(Ordering::Acquire) > max_lag {
                    self.raise(SLOW);
                } else {
                    self.raise(RESYNC);
                }
            }
        }
    }
}

/// This node's agent connections, fed from the event bus.
pub struct Hub {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    metrics: Arc<Metrics>,
    /// Frames a connection may have queued; more go through the store.
    queue: usize,
    /// Frames a live connection may be behind its agent's stream before it counts as a slow
    /// consumer.
    max_lag: i64,
    conns: RwLock<HashMap<Uuid, Vec<Arc<Conn>>>>,
    next_id: AtomicU64,
    /// The bus subscription taken at construction, for the dispatcher's first run: frames
    /// published between start-up and the dispatcher's first poll are not lost.
    first: Mutex<Option<broadcast::Receiver<Event>>>,
    closing: AtomicBool,
}

impl Hub {
    /// `queue`: frames each connection may have queued; `max_lag`: frames a connection may
    /// fall behind before it is closed as a slow consumer.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        metrics: Arc<Metrics>,
        queue: usize,
        max_lag: usize,
    ) -> Arc<Self> {
        let first = Mutex::new(Some(bus.subscribe()));
        Arc::new(Hub {
            store,
            bus,
            metrics,
            queue: queue.max(1),
            max_lag: i64::try_from(max_lag).unwrap_or(i64::MAX),
            conns: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            first,
            closing: AtomicBool::new(false),
        })
    }

    /// Open connections on this node.
    pub fn connections(&self) -> usize {
        self.conns.read().values().map(Vec::len).sum()
    }

    /// Whether `agent` has a connection open on this node.
    pub fn is_connected(&self, agent: Uuid) -> bool {
        self.conns.read().contains_key(&agent)
    }

    /// Registers a connection of `agent` and positions it: after `since` (clamped to the
    /// agent's last `seq`: a client cannot skip events not yet written), replaying what is
    /// stored after it first; or, without `since`, after the last `seq` stored now (live
    /// frames only).
    pub async fn subscribe(
        self: &Arc<Self>,
        agent: Uuid,
        since: Option<i64>,
    ) -> Result<Subscription, StoreError> {
        let (tx, rx) = mpsc::channel(self.queue);
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            live: AtomicBool::new(false),
            sent: AtomicI64::new(0),
            flags: AtomicU8::new(0),
            attention: Notify::new(),
        });
        self.conns
            .write()
            .entry(agent)
            .or_default()
            .push(conn.clone());
        self.metrics.ws_connections.inc();
        if self.closing.load(Ordering::Acquire) {
            conn.raise(SHUTDOWN);
        }
        // From here on dropping the subscription unregisters it.
        let mut sub = Subscription {
            hub: self.clone(),
            agent,
            conn,
            rx,
            last: 0,
            backlog: VecDeque::new(),
            early: VecDeque::new(),
            caught_up: false,
            filled_for: None,
        };
        // Read after registering: whatever commits after this read is published after it,
        // so it reaches the queue.
        let newest = self.store.last_event_seq(agent).await?;
        match since {
            Some(n) => sub.last = n.clamp(0, newest),
            None => {
                sub.last = newest;
                sub.go_live();
            }
        }
        sub.conn.sent.store(sub.last, Ordering::Release);
        Ok(sub)
    }

    fn detach(&self, agent: Uuid, id: u64) {
        let mut conns = self.conns.write();
        if let Some(list) = conns.get_mut(&agent) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                conns.remove(&agent);
            }
        }
        self.metrics.ws_connections.dec();
    }

    fn raise_all(&self, flag: u8) {
        for c in self.conns.read().values().flatten() {
            c.raise(flag);
        }
    }

    /// The dispatcher: routes bus events to connections until `shutdown`, then closes every
    /// connection (waiting a little for them to say goodbye).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), HubError> {
        let taken = self.first.lock().take();
        let mut rx = match taken {
            Some(rx) => rx,
            None => {
                // A restart: frames published while no dispatcher ran were missed here.
                let rx = self.bus.subscribe();
                self.raise_all(RESYNC);
                rx
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.close_all().await;
                    return Ok(());
                }
                event = rx.recv() => match event {
                    Ok(event) => self.dispatch(event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the hub lagged behind the bus; connections catch up from the store");
                        self.raise_all(RESYNC);
                    }
                    Err(RecvError::Closed) => return Err(HubError::BusClosed),
                },
            }
        }
    }

    fn dispatch(&self, event: Event) {
        match event {
            Event::ToAgent {
                agent_id,
                seq,
                frame,
            } => {
                let conns = self.conns.read();
                let Some(list) = conns.get(&agent_id) else {
                    return;
                };
                let Some((kind, data)) = parts(&frame) else {
                    return;
                };
                let text: Arc<str> = frame_text(&kind, seq, &data).into();
                for c in list {
                    c.offer(
                        Delivery {
                            seq,
                            text: text.clone(),
                        },
                        self.max_lag,
                    );
                }
            }
            Event::Broadcast { frame, seqs } => {
                let conns = self.conns.read();
                if conns.is_empty() {
                    return;
                }
                let Some((kind, data)) = parts(&frame) else {
                    return;
                };
                for &(agent, seq) in seqs.iter() {
                    if let Some(list) = conns.get(&agent) {
                        let text: Arc<str> = frame_text(&kind, seq, &data).into();
                        for c in list {
                            c.offer(
                                Delivery {
                                    seq,
                                    text: text.clone(),
                                },
                                self.max_lag,
                            );
                        }
                    }
                }
            }
            Event::AccessChanged { agent_id } => {
                for c in self.conns.read().get(&agent_id).into_iter().flatten() {
                    c.raise(RECHECK);
                }
            }
            Event::AgentChanged { .. } | Event::WorkloadsChanged | Event::ReceiptsIssued { .. } => {
            }
        }
    }

    async fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        self.raise_all(SHUTDOWN);
        let deadline = tokio::time::Instant::now() + DRAIN;
        while self.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A frame's `type` and serialized `data`; `None` (logged) for one that cannot be rendered.
fn parts(frame: &Frame) -> Option<(String, String)> {
    match frame.parts() {
        Ok((kind, data)) => Some((kind, data.to_string())),
        Err(e) => {
            tracing::warn!(error = %e, "a frame could not be rendered");
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the event bus closed")]
    BusClosed,
}

/// Why a subscription ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The connection fell more than `max_lag` frames behind while live.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
}

/// What [`Subscription::next`] has for the connection.
#[derive(Debug)]
pub enum Next {
    /// The next frame to send.
    Frame(Delivery),
    /// The agent's access changed: check the connection's token again.
    Recheck,
    /// Close the connection.
    Close(Ended),
}

/// One connection's view of its agent's stream. Unregisters itself when dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    agent: Uuid,
    conn: Arc<Conn>,
    rx: mpsc::Receiver<Delivery>,
    /// The last `seq` handed out (or skipped as asked by `since`).
    last: i64,
    /// Stored events read and not yet handed out.
    backlog: VecDeque<StoredEvent>,
    /// Queued frames taken out of the queue when a store pass ended, handed out before the
    /// queue's later ones.
    early: VecDeque<Delivery>,
    /// Whether the store has been read up to what the queue carries.
    caught_up: bool,
    /// The `seq` of the frame whose gap a store pass is filling: if the store did not have the
    /// events before it either (pruned meanwhile), it goes out anyway.
    filled_for: Option<i64>,
}

impl Subscription {
    /// The agent this subscription follows.
    pub fn agent(&self) -> Uuid {
        self.agent
    }

    /// The last `seq` handed out: where a reconnect should resume (`since`).
    pub fn last_seq(&self) -> i64 {
        self.last
    }

    /// The next frame in `seq` order, or what the connection must do instead. Cancel-safe:
    /// state changes only between its awaits.
    pub async fn next(&mut self) -> Result<Next, StoreError> {
        loop {
            let flags = self.conn.flags.swap(0, Ordering::AcqRel);
            if flags & SHUTDOWN != 0 {
                return Ok(Next::Close(Ended::Shutdown));
            }
            if flags & SLOW != 0 {
                return Ok(Next::Close(Ended::SlowConsumer));
            }
            if flags & RESYNC != 0 {
                self.start_pass();
            }
            if flags & RECHECK != 0 {
                return Ok(Next::Recheck);
            }
            if let Some(e) = self.backlog.pop_front() {
                if e.seq <= self.last {
                    continue;
                }
                self.hand_out(e.seq);
                return Ok(Next::Frame(render(&e)));
            }
            if !self.caught_up {
                let page = self
                    .hub
                    .store
                    .events_since(self.agent, self.last, PAGE)
                    .await?;
                let done = (page.len() as i64) < PAGE;
                self.backlog.extend(page);
                if done {
                    self.go_live();
                }
                continue;
            }
            let d = match self.early.pop_front() {
                Some(d) => d,
                None => tokio::select! {
                    biased;
                    () = self.conn.attention.notified() => continue,
                    d = self.rx.recv() => match d {
                        Some(d) => d,
                        // Only the hub's registry holds the sender besides us: gone means
                        // the hub is gone.
                        None => return Ok(Next::Close(Ended::Shutdown)),
                    },
                },
            };
            if d.seq <= self.last {
                continue;
            }
            if d.seq == self.last + 1 || self.filled_for == Some(d.seq) {
                self.filled_for = None;
                self.hand_out(d.seq);
                return Ok(Next::Frame(d));
            }
            // An earlier frame has not arrived (yet): it is in the store.
            self.filled_for = Some(d.seq);
            self.early.push_front(d);
            self.start_pass();
        }
    }

    /// Resolves when the connection must close (too far behind, or the server shuts down),
    /// for a caller busy with something else than [`Subscription::next`] (a send to a client
    /// that reads slowly). The reason stays for `next` to report.
    pub async fn interrupted(&self) {
        loop {
            let notified = self.conn.attention.notified();
            if self.conn.flags.load(Ordering::Acquire) & (SLOW | SHUTDOWN) != 0 {
                return;
            }
            notified.await;
        }
    }

    fn hand_out(&mut self, seq: i64) {
        self.last = seq;
        self.conn.sent.store(seq, Ordering::Release);
    }

    fn start_pass(&mut self) {
        self.caught_up = false;
        self.conn.live.store(false, Ordering::Release);
    }

    /// The store pass is done: empties the queue (what it holds up to the last stored event
    /// read is a duplicate) before going live, so that a queue filled during the pass is not
    /// taken for a slow consumer.
    fn go_live(&mut self) {
        self.caught_up = true;
        let upto = self.backlog.back().map_or(self.last, |e| e.seq);
        while let Ok(d) = self.rx.try_recv() {
            if d.seq > upto {
                self.early.push_back(d);
            }
        }
        self.conn.live.store(true, Ordering::Release);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.detach(self.agent, self.conn.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_text_is_the_wire_shape() {
        let text = frame_text("task_update", 7, r#"{"a":1}"#);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "task_update", "seq": 7, "data": {"a": 1}})
        );
    }
}

//! The outbox: frames and notifications that operations produce, stored and published off the
//! request path, in the order they were produced, many operations' worth in one write.
//!
//! An operation hands its frames over after it committed and returns at once; one writer takes
//! whatever has queued up and stores it as agent events in one transaction
//! ([`bus::deliver`]), and the batch's notifications in a second, then publishes each with its
//! `seq`. An agent's frames are numbered in the order its operations produced them (on this
//! node; a batch's notifications after its frames), and a burst of operations costs two
//! writes per batch rather than one per frame. The queue is bounded: when storage falls
//! behind, operations wait to hand over, which slows them instead of growing memory.
//!
//! A message's frames do not come here: they are stored in the send's own transaction and
//! published at once (`app::messages::send`), so a message waits for one write, not two.
//!
//! Frames still queued when the process dies are lost, like those of an operation that
//! committed just before a crash (see [`bus::deliver`]); on a graceful shutdown the outbox is
//! stopped after the HTTP server and the workers, and writes what is queued first.

use std::sync::Arc;

use nervix_store::{NewNotification, Store};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{self, Event, EventBus, Frame};
use crate::supervisor::supervise;

/// Items queued before producers wait.
const CAPACITY: usize = 4096;
/// Frames one write takes at most.
const BATCH: usize = 2000;

/// What an operation hands over.
#[derive(Debug)]
enum Item {
    Frames(Vec<(Uuid, Frame)>),
    Notifications(Vec<NewNotification>),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Frames(f) => f.len(),
            Item::Notifications(n) => n.len(),
        }
    }
}

/// The producers' end of the outbox.
pub struct Outbox {
    tx: mpsc::Sender<Item>,
}

impl Outbox {
    /// Starts the writer (supervised) until `stop`; it writes what is queued before it ends.
    pub fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        stop: CancellationToken,
    ) -> (Arc<Outbox>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        // Kept across restarts of the writer: what is queued survives a failed batch.
        let rx = Arc::new(Mutex::new(rx));
        let handle = supervise("outbox", stop, move |stop| {
            let (rx, store, bus) = (rx.clone(), store.clone(), bus.clone());
            async move {
                let mut rx = rx.lock().await;
                run(&mut rx, store.as_ref(), bus.as_ref(), stop).await;
                Ok::<_, std::convert::Infallible>(())
            }
        });
        (Arc::new(Outbox { tx }), handle)
    }

    /// Queues frames for agents (each becomes the agent's next event).
    pub async fn frames(&self, frames: Vec<(Uuid, Frame)>) {
        if !frames.is_empty() {
            self.send(Item::Frames(frames)).await;
        }
    }

    /// Queues notifications (each stored with its event, then pushed as a `notification`).
    pub async fn notifications(&self, ns: Vec<NewNotification>) {
        if !ns.is_empty() {
            self.send(Item::Notifications(ns)).await;
        }
    }

    async fn send(&self, item: Item) {
        let n = item.len();
        if self.tx.send(item).await.is_err() {
            tracing::warn!(frames = n, "the outbox has stopped; frames dropped");
        }
    }
}

async fn run(
    rx: &mut mpsc::Receiver<Item>,
    store: &dyn Store,
    bus: &dyn EventBus,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => item,
            _ = stop.cancelled() => {
                // Everything that producers queued before the stop is written.
                rx.close();
                while let Some(item) = rx.recv().await {
                    write(vec![item], store, bus).await;
                }
                return;
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut batch = vec![first];
        let mut frames = batch[0].len();
        while frames < BATCH {
            match rx.try_recv() {
                Ok(item) => {
                    frames += item.len();
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        write(batch, store, bus).await;
    }
}

/// Writes a batch in two writes at most: its frames, in order, then its notifications, in
/// order. An operation's notification therefore comes after its frames; one of another
/// operation in the same batch (a few milliseconds' worth) may come after that one's frames
/// too.
async fn write(batch: Vec<Item>, store: &dyn Store, bus: &dyn EventBus) {
    let mut frames = Vec::new();
    let mut notifications = Vec::new();
    for item in batch {
        match item {
            Item::Frames(f) => frames.extend(f),
            Item::Notifications(ns) => notifications.extend(ns),
        }
    }
    flush(frames, store, bus).await;
    if !notifications.is_empty() {
        notify(notifications, store, bus).await;
    }
}

async fn flush(frames: Vec<(Uuid, Frame)>, store: &dyn Store, bus: &dyn EventBus) {
    let n = frames.len();
    if let Err(e) = bus::deliver(store, bus, frames).await {
        tracing::warn!(error = %e, frames = n, "storing or publishing frames failed");
    }
}

async fn notify(ns: Vec<NewNotification>, store: &dyn Store, bus: &dyn EventBus) {
    let events = match store.create_notifications(&ns).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, notifications = ns.len(), "storing notifications failed");
            return;
        }
    };
    for (event, n) in events.iter().zip(ns) {
        let frame = Frame::Notification {
            id: n.id,
            kind: n.kind,
            title: n.title,
            body: n.body,
            data: n.data,
            created_at: n.created_at,
        };
        let published = bus
            .publish(Event::ToAgent {
                agent_id: n.agent_id,
                seq: event.seq,
                frame,
            })
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, agent_id = %n.agent_id, "publishing a notification failed");
        }
    }
}

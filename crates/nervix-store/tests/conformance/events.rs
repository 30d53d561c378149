//! The per-agent event stream: contiguous numbering per agent (also under concurrent writers,
//! whose commits a reader sees in `seq` order), announcements fanned out to every agent,
//! retention, and notifications that only their agent reads and marks.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::notice::NotificationKind;
use nervix_store::*;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    each_agent_is_numbered_from_one,
    concurrent_appends_are_contiguous_and_commit_in_order [multi],
    announcements_reach_every_agent_enrolled,
    pruning_keeps_the_numbering,
    notifications_belong_to_their_agent,
}

fn event(agent: Uuid, kind: &str, n: i64) -> NewEvent {
    NewEvent {
        agent_id: agent,
        kind: kind.to_owned(),
        data: json!({"n": n}),
        created_at: now(),
    }
}

fn seqs(events: &[StoredEvent]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

pub async fn each_agent_is_numbered_from_one(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    assert_eq!(store.last_event_seq(a.id).await.unwrap(), 0);
    assert!(store.append_events(&[]).await.unwrap().is_empty());

    let batch = [
        event(a.id, "task_update", 1),
        event(b.id, "earning", 2),
        event(a.id, "task_update", 3),
        event(a.id, "earning", 4),
    ];
    let stored = store.append_events(&batch).await.unwrap();
    let got: Vec<(Uuid, i64, i64)> = stored
        .iter()
        .map(|e| (e.agent_id, e.seq, e.data["n"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        got,
        [(a.id, 1, 1), (b.id, 1, 2), (a.id, 2, 3), (a.id, 3, 4)]
    );
    let more = store
        .append_events(&[event(b.id, "task_update", 5)])
        .await
        .unwrap();
    assert_eq!(seqs(&more), [2]);

    let all = store.events_since(a.id, 0, 100).await.unwrap();
    assert_eq!(seqs(&all), [1, 2, 3]);
    assert_eq!(
        all,
        stored
            .iter()
            .filter(|e| e.agent_id == a.id)
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(all[2].kind, "earning");
    assert_eq!(all[2].data, json!({"n": 4}));
    assert_eq!(seqs(&store.events_since(a.id, 1, 1).await.unwrap()), [2]);
    assert!(store.events_since(a.id, 3, 10).await.unwrap().is_empty());
    assert_eq!(store.last_event_seq(a.id).await.unwrap(), 3);
    assert_eq!(store.last_event_seq(b.id).await.unwrap(), 2);
}

/// Writers append to one agent concurrently while a reader follows the stream the way a
/// reconnecting agent does (`events_since(last)`): every read must continue exactly where
/// the last one ended. A later `seq` committed before an earlier one would show up as a gap.
pub async fn concurrent_appends_are_contiguous_and_commit_in_order(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    const WRITERS: i64 = 6;
    const ROUNDS: i64 = 15;
    let total = WRITERS * ROUNDS * 2;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut last = 0;
            let mut reads = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let page = store.events_since(a.id, last, 1000).await.unwrap();
                for e in &page {
                    assert_eq!(e.seq, last + 1, "a gap or a repeat after {last}");
                    last = e.seq;
                }
                reads += 1;
                if finished && page.is_empty() {
                    return (last, reads);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for r in 0..ROUNDS {
                    // Two events per write: one transaction numbers both.
                    let n = w * 1000 + r;
                    let stored = store
                        .append_events(&[event(a.id, "x", n), event(a.id, "y", n)])
                        .await
                        .unwrap();
                    assert_eq!(stored[1].seq, stored[0].seq + 1, "one write, adjacent");
                    mine.extend(seqs(&stored));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in writers {
        let mine = w.await.unwrap();
        assert!(mine.windows(2).all(|p| p[0] < p[1]), "{mine:?}");
        all.extend(mine);
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let (followed, reads) = reader.await.unwrap();
    all.sort_unstable();
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    assert_eq!(followed, total);
    assert!(reads > 1);
    let stored = store.events_since(a.id, 0, 10_000).await.unwrap();
    assert_eq!(seqs(&stored), (1..=total).collect::<Vec<_>>());
    assert_eq!(store.last_event_seq(a.id).await.unwrap(), total);
}

pub async fn announcements_reach_every_agent_enrolled(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let admin = admin(&store).await;
    store
        .append_events(&[event(a.id, "x", 1), event(a.id, "x", 2)])
        .await
        .unwrap();
    let ann = NewAnnouncement {
        id: Uuid::now_v7(),
        title: "Maintenance".into(),
        body: "Tonight at 22:00 UTC.".into(),
        created_by: Some(admin.id),
        created_at: now(),
    };
    let mut got = store
        .create_announcement(&ann, &audit("announcement.create"))
        .await
        .unwrap();
    got.sort_unstable();
    let mut want = vec![(a.id, 3), (b.id, 1), (admin.id, 1)];
    want.sort_unstable();
    assert_eq!(got, want);
    let ev = store.events_since(a.id, 2, 10).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].seq, ev[0].kind.as_str()), (3, "announcement"));
    assert_eq!(ev[0].data, ann.frame_data());
    assert_eq!(ev[0].data["title"], "Maintenance");
    let audits = store
        .list_audit(&AuditQuery {
            action: Some("announcement.create".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audits.len(), 1);

    // Later agents are not in it; the next announcement numbers on from each counter.
    let c = enroll(&store, &[]).await;
    assert_eq!(store.last_event_seq(c.id).await.unwrap(), 0);
    let again = NewAnnouncement {
        id: Uuid::now_v7(),
        ..ann.clone()
    };
    let mut got = store
        .create_announcement(&again, &audit("announcement.create"))
        .await
        .unwrap();
    got.sort_unstable();
    let mut want = vec![(a.id, 4), (b.id, 2), (admin.id, 2), (c.id, 1)];
    want.sort_unstable();
    assert_eq!(got, want);
    // And plain appends continue after it.
    let next = store.append_events(&[event(b.id, "x", 9)]).await.unwrap();
    assert_eq!(seqs(&next), [3]);
}

pub async fn pruning_keeps_the_numbering(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let old = now() - Duration::days(10);
    let aged = |agent, n| NewEvent {
        created_at: old,
        ..event(agent, "x", n)
    };
    store
        .append_events(&[aged(a.id, 1), aged(a.id, 2), aged(b.id, 3)])
        .await
        .unwrap();
    store.append_events(&[event(a.id, "x", 4)]).await.unwrap();
    let cutoff = now() - Duration::days(7);
    assert_eq!(store.prune_events(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.prune_events(cutoff, 2).await.unwrap(), 1);
    assert_eq!(store.prune_events(cutoff, 2).await.unwrap(), 0);
    assert_eq!(seqs(&store.events_since(a.id, 0, 10).await.unwrap()), [3]);
    assert!(store.events_since(b.id, 0, 10).await.unwrap().is_empty());
    let next = store
        .append_events(&[event(a.id, "x", 5), event(b.id, "x", 6)])
        .await
        .unwrap();
    assert_eq!(seqs(&next), [4, 2]);
}

fn notification(agent: Uuid, title: &str) -> NewNotification {
    NewNotification {
        id: Uuid::now_v7(),
        agent_id: agent,
        kind: NotificationKind::SubmissionAccepted,
        title: title.to_owned(),
        body: "Scored 92/100.".to_owned(),
        data: json!({"quality_score": 92}),
        created_at: now(),
    }
}

fn titles(ns: &[NotificationRecord]) -> Vec<&str> {
    ns.iter().map(|n| n.title.as_str()).collect()
}

pub async fn notifications_belong_to_their_agent(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    store.append_events(&[event(a.id, "x", 0)]).await.unwrap();
    let na = [
        notification(a.id, "a1"),
        notification(a.id, "a2"),
        notification(a.id, "a3"),
    ];
    let nb = notification(b.id, "b1");
    let mut batch = na.to_vec();
    batch.push(nb.clone());
    let events = store.create_notifications(&batch).await.unwrap();
    // Each notification is also its agent's next event, carrying the notification.
    let numbered: Vec<(Uuid, i64)> = events.iter().map(|e| (e.agent_id, e.seq)).collect();
    assert_eq!(numbered, [(a.id, 2), (a.id, 3), (a.id, 4), (b.id, 1)]);
    let replayed = store.events_since(a.id, 1, 10).await.unwrap();
    assert!(replayed.iter().all(|e| e.kind == "notification"));
    assert_eq!(replayed[0].data, na[0].frame_data());
    assert_eq!(replayed[0].data["kind"], "submission_accepted");

    let q = |agent, unread_only, cursor, limit| NotificationQuery {
        agent_id: agent,
        unread_only,
        cursor,
        limit,
    };
    let page = store.notifications(&q(a.id, false, None, 2)).await.unwrap();
    assert_eq!(titles(&page), ["a3", "a2"]);
    assert_eq!(page[0].kind, NotificationKind::SubmissionAccepted);
    assert_eq!(page[0].data, json!({"quality_score": 92}));
    assert_eq!(page[0].read_at, None);
    let rest = store
        .notifications(&q(a.id, false, Some(page[1].id), 2))
        .await
        .unwrap();
    assert_eq!(titles(&rest), ["a1"]);

    // Another agent's ids match nothing.
    let ids: Vec<Uuid> = na.iter().map(|n| n.id).collect();
    let at = now();
    assert_eq!(
        store
            .mark_notifications_read(b.id, &MarkRead::Ids(ids.clone()), at)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .mark_notifications_read(a.id, &MarkRead::Ids(vec![na[0].id, nb.id]), at)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .mark_notifications_read(a.id, &MarkRead::Ids(vec![na[0].id]), at)
            .await
            .unwrap(),
        0,
        "already read"
    );
    let unread = store.notifications(&q(a.id, true, None, 10)).await.unwrap();
    assert_eq!(titles(&unread), ["a3", "a2"]);
    let read = store
        .notifications(&q(a.id, false, None, 10))
        .await
        .unwrap();
    assert_eq!(read[2].read_at, Some(at));
    assert_eq!(
        store
            .mark_notifications_read(a.id, &MarkRead::All, at)
            .await
            .unwrap(),
        2
    );
    assert!(store
        .notifications(&q(a.id, true, None, 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        titles(&store.notifications(&q(b.id, true, None, 10)).await.unwrap()),
        ["b1"]
    );
    assert_eq!(
        store
            .mark_notifications_read(a.id, &MarkRead::Ids(Vec::new()), at)
            .await
            .unwrap(),
        0
    );

    // Retention drops read notifications only.
    assert_eq!(
        store
            .prune_notifications(at - Duration::seconds(1), 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_notifications(at + Duration::seconds(1), 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .prune_notifications(at + Duration::seconds(1), 2)
            .await
            .unwrap(),
        1
    );
    assert!(store
        .notifications(&q(a.id, false, None, 10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .notifications(&q(b.id, false, None, 10))
            .await
            .unwrap()
            .len(),
        1
    );
}

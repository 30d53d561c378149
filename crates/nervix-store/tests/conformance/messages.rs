//! Messages and channels: who may send, who may read, histories and their pages.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;
use nervix_store::*;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    direct_history_is_the_pair_only,
    channel_membership_gates_everything,
    history_pages_newest_first,
    adding_members_is_for_members_within_the_limit,
    idempotent_send_stores_once,
    the_database_refuses_malformed_messages,
    concurrent_channel_sends_are_each_stored_once [multi],
    a_send_stores_its_recipients_events,
}

fn direct(from: Uuid, to: Uuid, payload: &[u8]) -> NewMessage {
    NewMessage {
        id: Uuid::now_v7(),
        sender_id: from,
        to: MessageTo::Agent(to),
        encrypted: true,
        payload: payload.to_vec(),
        nonce: Some(vec![9u8; 24]),
        at: now(),
        frame: None,
    }
}

fn to_channel(from: Uuid, channel: Uuid, payload: &[u8]) -> NewMessage {
    NewMessage {
        to: MessageTo::Channel(channel),
        encrypted: false,
        nonce: None,
        ..direct(from, from, payload)
    }
}

fn history(viewer: Uuid, conversation: Conversation) -> HistoryQuery {
    HistoryQuery {
        viewer,
        conversation,
        before: None,
        limit: 100,
    }
}

async fn read(store: &Arc<dyn Store>, q: HistoryQuery) -> Vec<MessageRecord> {
    store.message_history(&q).await.expect("history")
}

fn payloads(ms: &[MessageRecord]) -> Vec<Vec<u8>> {
    ms.iter().map(|m| m.payload.clone()).collect()
}

async fn channel_of(store: &Arc<dyn Store>, creator: Uuid, members: Vec<Uuid>) -> ChannelDetail {
    store
        .create_channel(
            &NewChannel {
                id: Uuid::now_v7(),
                name: "ops".to_owned(),
                created_by: creator,
                members,
                at: now(),
            },
            &audit("channel.create"),
        )
        .await
        .expect("create channel")
}

fn not_found<T: std::fmt::Debug>(r: Result<T>) {
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
}

pub async fn direct_history_is_the_pair_only(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let c = enroll(&store, &[]).await;
    // Every byte value, to show nothing is re-encoded on the way.
    let binary: Vec<u8> = (0..=255u8).collect();
    let ab = store
        .send_message(&direct(a.id, b.id, &binary), None)
        .await
        .unwrap();
    assert_eq!(ab.recipients, vec![b.id]);
    assert_eq!(ab.message.sender_handle, a.handle);
    assert_eq!(
        ab.message.recipient_handle.as_deref(),
        Some(b.handle.as_str())
    );
    assert_eq!(ab.message.payload, binary);
    assert_eq!(ab.message.nonce, Some(vec![9u8; 24]));
    store
        .send_message(&direct(b.id, a.id, b"reply"), None)
        .await
        .unwrap();
    store
        .send_message(&direct(a.id, c.id, b"to c"), None)
        .await
        .unwrap();
    store
        .send_message(&direct(c.id, b.id, b"c to b"), None)
        .await
        .unwrap();

    let for_a = read(&store, history(a.id, Conversation::With(b.id))).await;
    assert_eq!(payloads(&for_a), vec![b"reply".to_vec(), binary.clone()]);
    let for_b = read(&store, history(b.id, Conversation::With(a.id))).await;
    assert_eq!(for_b, for_a, "the same conversation from either side");
    assert_eq!(for_a[1], ab.message, "stored as sent");
    let c_with_a = read(&store, history(c.id, Conversation::With(a.id))).await;
    assert_eq!(payloads(&c_with_a), vec![b"to c".to_vec()]);
    let c_with_b = read(&store, history(c.id, Conversation::With(b.id))).await;
    assert_eq!(payloads(&c_with_b), vec![b"c to b".to_vec()]);
    // An agent talking to itself sees only that.
    let alone = read(&store, history(a.id, Conversation::With(a.id))).await;
    assert!(alone.is_empty(), "{alone:?}");
    for m in for_a.iter().chain(&c_with_a).chain(&c_with_b) {
        assert!(m.channel_id.is_none());
    }
}

pub async fn channel_membership_gates_everything(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let c = enroll(&store, &[]).await;
    // The creator listed among the members too: still one membership.
    let ch = channel_of(&store, a.id, vec![b.id, a.id]).await;
    assert_eq!(ch.channel.member_count, 2);
    assert_eq!(
        ch.members.iter().map(|m| m.agent_id).collect::<Vec<_>>(),
        vec![a.id, b.id]
    );
    let id = ch.channel.id;

    let sent = store
        .send_message(&to_channel(a.id, id, b"hello"), None)
        .await
        .unwrap();
    assert_eq!(sent.recipients, vec![b.id]);
    assert_eq!(sent.message.channel_id, Some(id));
    assert_eq!(sent.message.recipient_id, None);

    // An outsider can neither send, nor read, nor see the channel.
    not_found(
        store
            .send_message(&to_channel(c.id, id, b"let me in"), None)
            .await,
    );
    not_found(
        store
            .message_history(&history(c.id, Conversation::Channel(id)))
            .await,
    );
    assert_eq!(store.channel(id, c.id).await.unwrap(), None);
    let page = PageQuery {
        cursor: None,
        limit: 10,
    };
    assert!(store.channels_of(c.id, &page).await.unwrap().is_empty());
    // ...nor add itself.
    not_found(
        store
            .add_channel_members(
                &NewMembers {
                    channel_id: id,
                    by: c.id,
                    members: vec![c.id],
                    max_members: 100,
                    at: now(),
                },
                &audit("channel.members.add"),
            )
            .await,
    );
    // A channel that does not exist looks the same.
    not_found(
        store
            .send_message(&to_channel(a.id, Uuid::now_v7(), b"x"), None)
            .await,
    );

    let for_b = read(&store, history(b.id, Conversation::Channel(id))).await;
    assert_eq!(payloads(&for_b), vec![b"hello".to_vec()]);
    assert_eq!(store.channels_of(b.id, &page).await.unwrap().len(), 1);

    // B leaves: it loses the channel entirely.
    store
        .leave_channel(id, b.id, &audit("channel.leave"))
        .await
        .unwrap();
    not_found(store.leave_channel(id, b.id, &audit("channel.leave")).await);
    not_found(
        store
            .message_history(&history(b.id, Conversation::Channel(id)))
            .await,
    );
    not_found(
        store
            .send_message(&to_channel(b.id, id, b"still here?"), None)
            .await,
    );
    assert_eq!(store.channel(id, b.id).await.unwrap(), None);
    assert!(store.channels_of(b.id, &page).await.unwrap().is_empty());
    let alone = store
        .send_message(&to_channel(a.id, id, b"anyone?"), None)
        .await
        .unwrap();
    assert!(alone.recipients.is_empty());

    // Added back by a member, B reads again (the whole history) and hears new messages.
    let back = store
        .add_channel_members(
            &NewMembers {
                channel_id: id,
                by: a.id,
                members: vec![b.id, c.id],
                max_members: 100,
                at: now(),
            },
            &audit("channel.members.add"),
        )
        .await
        .unwrap();
    assert_eq!(back.channel.member_count, 3);
    let for_b = read(&store, history(b.id, Conversation::Channel(id))).await;
    assert_eq!(
        payloads(&for_b),
        vec![b"anyone?".to_vec(), b"hello".to_vec()]
    );
    let sent = store
        .send_message(&to_channel(c.id, id, b"hi all"), None)
        .await
        .unwrap();
    assert_eq!(sorted(sent.recipients), sorted(vec![a.id, b.id]));
    let seen = store.channel(id, c.id).await.unwrap().expect("visible");
    assert_eq!(seen.channel.name, "ops");
    assert_eq!(seen.channel.created_by, a.id);
    assert_eq!(seen.members.len(), 3);
}

pub async fn history_pages_newest_first(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let c = enroll(&store, &[]).await;
    let mut sent = Vec::new();
    let start = now();
    for i in 0..5u8 {
        let mut m = direct(if i % 2 == 0 { a.id } else { b.id }, a.id, &[i]);
        if i % 2 == 0 {
            m.to = MessageTo::Agent(b.id);
        }
        // Two messages in the same instant: the id breaks the tie.
        m.at = start + Duration::milliseconds(i64::from(i / 2));
        sent.push(store.send_message(&m, None).await.unwrap().message.id);
    }
    let other = store
        .send_message(&direct(c.id, a.id, b"elsewhere"), None)
        .await
        .unwrap();
    let mut q = history(a.id, Conversation::With(b.id));
    q.limit = 2;
    let mut seen = Vec::new();
    loop {
        let page = read(&store, q).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        q.before = page.last().map(|m| m.id);
        seen.extend(page.into_iter().map(|m| (m.created_at, m.id)));
    }
    assert_eq!(seen.len(), 5);
    let mut expected = seen.clone();
    expected.sort();
    expected.reverse();
    assert_eq!(seen, expected, "newest first by (created_at, id)");
    assert_eq!(
        sorted(seen.iter().map(|s| s.1).collect()),
        sorted(sent.clone())
    );
    // A cursor from another conversation gives nothing away.
    q.before = Some(other.message.id);
    assert!(read(&store, q).await.is_empty());
}

pub async fn adding_members_is_for_members_within_the_limit(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let c = enroll(&store, &[]).await;
    let d = enroll(&store, &[]).await;
    let ch = channel_of(&store, a.id, vec![]).await;
    assert_eq!(ch.channel.member_count, 1);
    let add = |by: Uuid, members: Vec<Uuid>| NewMembers {
        channel_id: ch.channel.id,
        by,
        members,
        max_members: 3,
        at: now(),
    };
    let two = store
        .add_channel_members(&add(a.id, vec![b.id, b.id]), &audit("channel.members.add"))
        .await
        .unwrap();
    assert_eq!(two.channel.member_count, 2);
    // Any member may add; adding someone already in changes nothing.
    let three = store
        .add_channel_members(&add(b.id, vec![a.id, c.id]), &audit("channel.members.add"))
        .await
        .unwrap();
    assert_eq!(three.channel.member_count, 3);
    let joined_a = three.members.iter().find(|m| m.agent_id == a.id).unwrap();
    assert_eq!(joined_a.joined_at, ch.members[0].joined_at);
    let over = store
        .add_channel_members(&add(a.id, vec![d.id]), &audit("channel.members.add"))
        .await;
    assert!(
        matches!(&over, Err(StoreError::Invalid { field, .. }) if field == "members"),
        "{over:?}"
    );
    assert_eq!(store.channel(ch.channel.id, d.id).await.unwrap(), None);
    let audits = store
        .list_audit(&AuditQuery {
            action: Some("channel.members.add".to_owned()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audits.len(), 2, "the refused addition left no record");
}

pub async fn idempotent_send_stores_once(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let scope = IdempotencyScope {
        agent_id: a.id,
        method: "POST".to_owned(),
        path: "/v1/messages/send".to_owned(),
        key: "k1".to_owned(),
    };
    let save = || SaveResponse {
        scope: scope.clone(),
        request_hash: "h".to_owned(),
        created_at: now(),
        render: Arc::new(|s: &SentMessage| Some((201, s.message.id.to_string()))),
    };
    let first = store
        .send_message(&direct(a.id, b.id, b"once"), Some(save()))
        .await
        .unwrap();
    let again = store
        .send_message(&direct(a.id, b.id, b"once"), Some(save()))
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed))
        ),
        "{again:?}"
    );
    let stored = store.idempotent_response(&scope).await.unwrap().unwrap();
    assert_eq!(stored.status, 201);
    assert_eq!(stored.body, first.message.id.to_string());
    let all = read(&store, history(a.id, Conversation::With(b.id))).await;
    assert_eq!(all.len(), 1);

    // A refused channel send under a fresh key leaves the key free.
    let ch = channel_of(&store, b.id, vec![]).await;
    let mut s2 = save();
    s2.scope.key = "k2".to_owned();
    not_found(
        store
            .send_message(&to_channel(a.id, ch.channel.id, b"no"), Some(s2.clone()))
            .await,
    );
    assert_eq!(store.idempotent_response(&s2.scope).await.unwrap(), None);
}

pub async fn the_database_refuses_malformed_messages(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let mut short_nonce = direct(a.id, b.id, b"x");
    short_nonce.nonce = Some(vec![1u8; 23]);
    let mut no_nonce = direct(a.id, b.id, b"x");
    no_nonce.nonce = None;
    let empty = direct(a.id, b.id, b"");
    let huge = direct(a.id, b.id, &vec![0u8; 24 * 1024 + 1]);
    for bad in [short_nonce, no_nonce, empty, huge] {
        let r = store.send_message(&bad, None).await;
        assert!(r.is_err(), "{r:?}");
    }
    let ok = store
        .send_message(&direct(a.id, b.id, &vec![0u8; 24 * 1024]), None)
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(
        read(&store, history(b.id, Conversation::With(a.id)))
            .await
            .len(),
        1
    );
}

pub async fn concurrent_channel_sends_are_each_stored_once(store: Arc<dyn Store>) {
    let creator = enroll(&store, &[]).await;
    let mut senders = Vec::new();
    for _ in 0..6 {
        senders.push(enroll(&store, &[]).await.id);
    }
    let ch = channel_of(&store, creator.id, senders.clone()).await;
    let id = ch.channel.id;
    let mut tasks = Vec::new();
    for (i, s) in senders.iter().copied().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for j in 0..10u8 {
                let payload = [u8::try_from(i).unwrap(), j];
                let sent = store
                    .send_message(&to_channel(s, id, &payload), None)
                    .await
                    .expect("send");
                assert_eq!(sent.recipients.len(), 6, "everyone but the sender");
                ids.push(sent.message.id);
            }
            ids
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    let mut q = history(creator.id, Conversation::Channel(id));
    q.limit = 7;
    let mut seen = Vec::new();
    loop {
        let page = read(&store, q).await;
        let Some(last) = page.last() else { break };
        q.before = Some(last.id);
        seen.extend(page.iter().map(|m| m.id));
    }
    assert_eq!(seen.len(), 60, "every message once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 60);
    assert_eq!(sorted(seen), sorted(sent));
}

/// A send that carries a frame stores it as each recipient's next event with the message
/// (one transaction): after events the agents already had, never for the sender, and not
/// at all when the send is refused.
pub async fn a_send_stores_its_recipients_events(store: Arc<dyn Store>) {
    let a = enroll(&store, &[]).await;
    let b = enroll(&store, &[]).await;
    let c = enroll(&store, &[]).await;
    let outsider = enroll(&store, &[]).await;
    // b already has an event: the message's is numbered after it.
    store
        .append_events(&[NewEvent {
            agent_id: b.id,
            kind: "task_update".to_owned(),
            data: serde_json::json!({"n": 1}),
            created_at: now(),
        }])
        .await
        .unwrap();
    let frame = |text: &str| EventFrame {
        kind: "message".to_owned(),
        data: serde_json::json!({ "text": text }),
    };

    let sent = store
        .send_message(
            &NewMessage {
                frame: Some(frame("direct")),
                ..direct(a.id, b.id, b"hi")
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(sent.events.len(), 1);
    assert_eq!((sent.events[0].agent_id, sent.events[0].seq), (b.id, 2));
    let stored = store.events_since(b.id, 1, 10).await.unwrap();
    assert_eq!(stored, sent.events, "stored as returned");
    assert_eq!(stored[0].data, serde_json::json!({ "text": "direct" }));
    assert!(store.events_since(a.id, 0, 10).await.unwrap().is_empty());

    let channel = channel_of(&store, a.id, vec![b.id, c.id]).await;
    let sent = store
        .send_message(
            &NewMessage {
                frame: Some(frame("channel")),
                ..to_channel(a.id, channel.channel.id, b"all")
            },
            None,
        )
        .await
        .unwrap();
    let mut got: Vec<(Uuid, i64)> = sent.events.iter().map(|e| (e.agent_id, e.seq)).collect();
    got.sort();
    let mut want = vec![(b.id, 3), (c.id, 1)];
    want.sort();
    assert_eq!(got, want);

    // Refused (not a member): no message and no event.
    not_found(
        store
            .send_message(
                &NewMessage {
                    frame: Some(frame("nope")),
                    ..to_channel(outsider.id, channel.channel.id, b"x")
                },
                None,
            )
            .await,
    );
    assert_eq!(store.events_since(b.id, 0, 10).await.unwrap().len(), 3);
    assert_eq!(store.events_since(c.id, 0, 10).await.unwrap().len(), 1);
}

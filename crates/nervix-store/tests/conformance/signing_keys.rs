//! Token-signing keys: the first key is stored once however many nodes start together, a kid
//! keeps its first row, sealing replaces only secrets still in the clear, pruning keeps the
//! newest key and those retired too recently, and the database refuses a secret of the wrong
//! size for its seal.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nervix_store::*;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    first_keys_are_stored_once,
    sealing_replaces_only_clear_secrets,
    pruning_keeps_what_tokens_may_still_name,
    secrets_must_fit_their_seal,
}

fn key(kid: &str, created_at: DateTime<Utc>, fill: u8) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.to_owned(),
        created_at,
        seal: KeySeal::None,
        secret: vec![fill; 32],
    }
}

fn sealed(kid: &str, created_at: DateTime<Utc>, fill: u8) -> SigningKeyRecord {
    SigningKeyRecord {
        seal: KeySeal::Aes256Gcm,
        secret: vec![fill; 60],
        ..key(kid, created_at, 0)
    }
}

pub async fn first_keys_are_stored_once(store: Arc<dyn Store>) {
    assert!(store.signing_keys().await.unwrap().is_empty());
    let t = now();
    let a = key("a", t - Duration::seconds(2), 1);
    let b = key("b", t - Duration::seconds(1), 2);
    assert_eq!(
        store
            .insert_signing_keys(&[b.clone(), a.clone()], true)
            .await
            .unwrap(),
        2
    );
    // Another node's first start finds keys and adds none.
    assert_eq!(
        store
            .insert_signing_keys(&[key("c", t, 3)], true)
            .await
            .unwrap(),
        0
    );
    // A rotation adds its key; a kid already stored keeps its first row.
    let c = key("c", t, 3);
    assert_eq!(
        store
            .insert_signing_keys(&[c.clone(), key("a", t, 9)], false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.signing_keys().await.unwrap(), vec![a, b, c]);
}

pub async fn sealing_replaces_only_clear_secrets(store: Arc<dyn Store>) {
    let t = now();
    let clear = key("clear", t - Duration::seconds(1), 1);
    let already = sealed("already", t, 2);
    store
        .insert_signing_keys(&[clear.clone(), already.clone()], false)
        .await
        .unwrap();
    let n = store
        .seal_signing_keys(&[
            sealed("clear", clear.created_at, 7),
            sealed("already", t, 8),
        ])
        .await
        .unwrap();
    assert_eq!(n, 1, "only the key in the clear is sealed");
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys[0], sealed("clear", clear.created_at, 7));
    assert_eq!(keys[1], already, "a sealed key is never resealed");
    // A "sealed form" in the clear is refused, and nothing changes.
    assert!(store
        .seal_signing_keys(&[key("clear", t, 5)])
        .await
        .is_err());
    assert_eq!(store.signing_keys().await.unwrap(), keys);
}

pub async fn pruning_keeps_what_tokens_may_still_name(store: Arc<dyn Store>) {
    let t = now();
    let keys = [
        key("oldest", t - Duration::days(100), 1),
        key("retired-long-ago", t - Duration::days(95), 2),
        key("retired-recently", t - Duration::days(10), 3),
        key("newest", t - Duration::days(1), 4),
    ];
    store.insert_signing_keys(&keys, false).await.unwrap();
    // Tokens live 90 days: a key replaced more than 90 days ago signs nothing still valid.
    let mut pruned = store
        .prune_signing_keys(t - Duration::days(90))
        .await
        .unwrap();
    pruned.sort();
    assert_eq!(pruned, vec!["oldest".to_owned()]);
    let left: Vec<String> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(left, ["retired-long-ago", "retired-recently", "newest"]);
    // However late the cut-off, the newest key stays.
    let pruned = store
        .prune_signing_keys(t + Duration::days(1))
        .await
        .unwrap();
    assert_eq!(pruned.len(), 2);
    let left = store.signing_keys().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].kid, "newest");
}

pub async fn secrets_must_fit_their_seal(store: Arc<dyn Store>) {
    let t = now();
    let mut short = key("short", t, 1);
    short.secret.pop();
    let mut clear_sized_seal = sealed("wrong", t, 1);
    clear_sized_seal.secret.truncate(32);
    for bad in [short, clear_sized_seal] {
        assert!(
            store
                .insert_signing_keys(std::slice::from_ref(&bad), false)
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    assert!(store.signing_keys().await.unwrap().is_empty());
}

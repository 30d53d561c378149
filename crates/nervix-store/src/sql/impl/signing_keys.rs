//! Token-signing keys, shared by every node through this table. The store keeps what the
//! server hands it: sealing and unsealing the secrets is the server's business.

use chrono::{DateTime, Utc};

use super::Backend;
use crate::model::*;
use crate::{Result, StoreError};

type KeyRow = (String, DateTime<Utc>, String, Vec<u8>);

fn record((kid, created_at, seal, secret): KeyRow) -> Result<SigningKeyRecord> {
    let seal = seal
        .parse()
        .map_err(|()| StoreError::Corrupt(format!("unknown key seal {seal:?}")))?;
    Ok(SigningKeyRecord {
        kid,
        created_at,
        seal,
        secret,
    })
}

#[tracing::instrument(skip_all, name = "store.signing_keys", level = "debug")]
pub(super) async fn signing_keys(store: &Backend) -> Result<Vec<SigningKeyRecord>> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT kid, created_at, seal, secret FROM signing_keys ORDER BY created_at, kid",
    )
    .fetch_all(store.reader())
    .await?;
    rows.into_iter().map(record).collect()
}

#[tracing::instrument(skip_all, name = "store.insert_signing_keys", level = "debug")]
pub(super) async fn insert_signing_keys(
    store: &Backend,
    keys: &[SigningKeyRecord],
    only_if_none: bool,
) -> Result<u64> {
    store
        .write(
            (keys.to_vec(), only_if_none),
            |mut tx, (keys, only_if_none)| {
                Box::pin(async move {
                    if *only_if_none {
                        let any: Option<String> =
                            sqlx::query_scalar("SELECT kid FROM signing_keys LIMIT 1")
                                .fetch_optional(&mut *tx)
                                .await?;
                        if any.is_some() {
                            return tx.refuse(Ok(0));
                        }
                    }
                    let mut inserted = 0;
                    for k in keys {
                        inserted += sqlx::query(
                            "INSERT INTO signing_keys (kid, created_at, seal, secret) VALUES ($1, \
                             $2, $3, $4) ON CONFLICT (kid) DO NOTHING",
                        )
                        .bind(&k.kid)
                        .bind(k.created_at)
                        .bind(k.seal.as_str())
                        .bind(&k.secret)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                    tx.commit().await?;
                    Ok(inserted)
                })
            },
        )
        .await
}

#[tracing::instrument(skip_all, name = "store.seal_signing_keys", level = "debug")]
pub(super) async fn seal_signing_keys(store: &Backend, sealed: &[SigningKeyRecord]) -> Result<u64> {
    store
        .write(sealed.to_vec(), |mut tx, sealed| {
            Box::pin(async move {
                let mut changed = 0;
                for k in sealed {
                    if k.seal == KeySeal::None {
                        return tx
                            .refuse(Err(StoreError::invalid("seal", "must be a sealed form")));
                    }
                    changed += sqlx::query(
                        "UPDATE signing_keys SET seal = $1, secret = $2 WHERE kid = $3 AND seal = \
                         'none'",
                    )
                    .bind(k.seal.as_str())
                    .bind(&k.secret)
                    .bind(&k.kid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(changed)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.prune_signing_keys", level = "debug")]
pub(super) async fn prune_signing_keys(
    store: &Backend,
    retired_before: DateTime<Utc>,
) -> Result<Vec<String>> {
    store
        .write_one(retired_before, |conn, retired_before| {
            Box::pin(async move {
                // A key retired when the next newer key was created; the newest has no successor.
                // A key that signed a receipt stays: receipts are portable proof, meant to
                // verify against the live JWKS for as long as the platform runs.
                let kids: Vec<String> = sqlx::query_scalar(
                    "DELETE FROM signing_keys WHERE kid IN (SELECT k.kid FROM signing_keys k \
                     WHERE EXISTS (SELECT 1 FROM signing_keys n WHERE n.created_at > \
                     k.created_at AND n.created_at < $1) AND NOT EXISTS (SELECT 1 FROM \
                     receipts r WHERE r.kid = k.kid)) RETURNING kid",
                )
                .bind(retired_before)
                .fetch_all(&mut *conn)
                .await?;
                Ok(kids)
            })
        })
        .await
}

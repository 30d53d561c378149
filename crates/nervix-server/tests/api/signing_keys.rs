//! Token-signing keys in the database, sealed at rest: a master key configured later seals a
//! store kept in the clear, a wrong or missing master key stops the start and changes nothing,
//! the admin commands work with the same key, key files of older versions are imported on
//! first start, and a rotation through the admin route signs at once.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use nervix_client::Method;
use nervix_server::auth::keys::MasterKeySource;
use nervix_server::{Config, ServerError};
use nervix_store::{KeySeal, SigningKeyRecord, Store};
use tokio::net::TcpListener;

use crate::common::{fresh_database_url, jwt_parts, test_config, Backend, TestApp};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    master_key_seals_and_a_wrong_one_changes_nothing,
    old_key_files_are_imported_on_first_start,
    rotation_through_the_admin_route,
}

fn master(byte: u8) -> MasterKeySource {
    MasterKeySource::Value(STANDARD.encode([byte; 32]).into())
}

async fn stored(config: &Config) -> Vec<SigningKeyRecord> {
    let store: Arc<dyn Store> = nervix_store::connect(&config.database_url, &Default::default())
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    store.close().await;
    keys
}

async fn start(config: &Config) -> Result<nervix_server::Running, ServerError> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    nervix_server::start(listener, config.clone()).await
}

/// `GET /v1/agents/me` with `token` on a server started with `config`; the status.
async fn me_status(config: &Config, token: &str) -> u16 {
    let running = start(config).await.unwrap();
    let client = nervix_client::Client::new(&format!("http://{}", running.addr))
        .unwrap()
        .with_token(token.to_owned());
    let (status, _) = client
        .request(Method::GET, "/v1/agents/me", None)
        .await
        .unwrap();
    running.shutdown().await;
    status
}

async fn drop_schema(config: &Config) {
    if let (Some((_, schema)), Some(base)) = (
        config.database_url.rsplit_once("search_path%3D"),
        nervix_store::testing::postgres_url(),
    ) {
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

async fn master_key_seals_and_a_wrong_one_changes_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = fresh_database_url(backend, dir.path()).await else {
        return;
    };
    let mut config = test_config(dir.path(), url);

    // Without a master key the keys are stored in the clear.
    let token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    let clear = stored(&config).await;
    assert_eq!(clear.len(), 1);
    assert_eq!(clear[0].seal, KeySeal::None);
    assert_eq!(me_status(&config, &token).await, 200);

    // Configuring one seals them at the next start, and the same tokens keep working.
    config.master_key = master(1);
    assert_eq!(me_status(&config, &token).await, 200);
    let sealed = stored(&config).await;
    assert_eq!(sealed.len(), 1);
    assert_eq!(sealed[0].kid, clear[0].kid);
    assert_eq!(sealed[0].seal, KeySeal::Aes256Gcm);
    assert_eq!(sealed[0].secret.len(), 60);
    assert!(
        !sealed[0]
            .secret
            .windows(32)
            .any(|w| w == clear[0].secret.as_slice()),
        "the seed is not in the sealed form"
    );

    // A wrong master key, or none, stops the start (and the admin commands) with a clear
    // message, and changes nothing.
    for (source, says) in [
        (master(2), "does not open signing key"),
        (
            MasterKeySource::None,
            "is sealed with a master key, and none is configured",
        ),
    ] {
        let mut wrong = config.clone();
        wrong.master_key = source;
        let err = start(&wrong).await.err().expect("refused").to_string();
        assert!(err.contains(says) && err.contains(&clear[0].kid), "{err}");
        let err = nervix_server::operator::create_admin_token(&wrong)
            .await
            .expect_err("refused")
            .to_string();
        assert!(err.contains(says), "{err}");
        assert!(nervix_server::operator::rotate_signing_key(&wrong)
            .await
            .is_err());
        assert_eq!(stored(&config).await, sealed, "nothing changed");
    }
    let mut bad = config.clone();
    bad.master_key = MasterKeySource::Value("c2hvcnQ=".to_owned().into());
    let err = start(&bad).await.err().expect("refused").to_string();
    assert!(
        err.contains("NERVIX_MASTER_KEY") && err.contains("32 bytes"),
        "{err}"
    );

    // The admin commands with the right key work on the sealed keys transparently.
    let (kid, _) = nervix_server::operator::rotate_signing_key(&config)
        .await
        .unwrap();
    let fresh = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    assert_eq!(jwt_parts(&fresh).0["kid"], kid.as_str());
    let after = stored(&config).await;
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|k| k.seal == KeySeal::Aes256Gcm));
    assert_eq!(me_status(&config, &token).await, 200);
    assert_eq!(me_status(&config, &fresh).await, 200);
    drop_schema(&config).await;
}

/// A key file as versions before the keys moved into the database wrote it.
fn write_old_key_file(data_dir: &Path) -> (String, [u8; 32]) {
    use ed25519_dalek::SigningKey;
    let seed = [42u8; 32];
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let kid = nervix_server::auth::keys::thumbprint(&public);
    let dir = data_dir.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{kid}.json"));
    let body = serde_json::json!({
        "kid": kid,
        "created_at": chrono::Utc::now(),
        "seed": STANDARD.encode(seed),
    });
    std::fs::write(&path, body.to_string()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (kid, seed)
}

async fn old_key_files_are_imported_on_first_start(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = fresh_database_url(backend, dir.path()).await else {
        return;
    };
    let mut config = test_config(dir.path(), url);
    config.master_key = master(3);
    let (kid, seed) = write_old_key_file(dir.path());
    start(&config).await.unwrap().shutdown().await;
    let keys = stored(&config).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, kid);
    assert_eq!(keys[0].seal, KeySeal::Aes256Gcm, "imported sealed");
    assert!(!keys[0].secret.windows(32).any(|w| w == seed.as_slice()));
    assert!(!dir.path().join("keys").exists());
    assert!(dir
        .path()
        .join("keys.imported")
        .join(format!("{kid}.json"))
        .exists());
    // Tokens of the old key (issued before the upgrade) keep working.
    let token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    assert_eq!(jwt_parts(&token).0["kid"], kid.as_str());
    assert_eq!(me_status(&config, &token).await, 200);
    assert_eq!(stored(&config).await.len(), 1, "imported once");
    drop_schema(&config).await;
}

async fn rotation_through_the_admin_route(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("oscar", &[]).await;
    let old_kid = jwt_parts(&agent.token).0["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = agent
        .client
        .request(Method::POST, "/v1/admin/signing-keys/rotate", None)
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .admin
        .request(Method::POST, "/v1/admin/signing-keys/rotate", None)
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let new_kid = body["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(body["pruned"], serde_json::json!([]));
    // This node signs with it at once, and lists both keys.
    let mut client = app.client();
    let fresh = client.authenticate(&agent.keys, "oscar").await.unwrap();
    assert_eq!(jwt_parts(&fresh.token).0["kid"], new_kid.as_str());
    let (_, jwks) = app
        .client()
        .request(Method::GET, "/.well-known/jwks.json", None)
        .await
        .unwrap();
    let kids: HashSet<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, HashSet::from([old_kid.as_str(), new_kid.as_str()]));
    assert_eq!(agent.client.me().await.unwrap().id, agent.id);
    let (_, audit) = app
        .admin
        .request(
            Method::GET,
            "/v1/admin/audit?action=signing_key.rotate",
            None,
        )
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["target"], new_kid.as_str(), "{audit}");
    app.stop().await;
}

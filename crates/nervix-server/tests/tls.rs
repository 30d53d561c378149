//! HTTPS and WSS end to end: a private CA and a server certificate made up here (rcgen), the
//! SDK trusting the CA for REST and the event stream, a client without it refused, Python's
//! stock `ssl` module negotiating TLS 1.3 and refused 1.2 unless the operator allows it, and a
//! renewed certificate served without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nervix_client::{AgentKeys, Client, EnrollRequest, EventStream, Trust};
use nervix_server::config::{TlsConfig, TlsVersion};
use nervix_server::Config;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpListener;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Nervix test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A fresh server certificate for localhost; returns its PEM chain, key PEM and DER.
    fn issue(&self) -> (String, String, Vec<u8>) {
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// Replaces `path`'s content the way renewal tools do: a new file renamed over the old one.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn write_files(dir: &Path, ca: &Ca) -> (Files, Vec<u8>) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let files = Files {
        ca: tls.join("ca.pem"),
        cert: tls.join("cert.pem"),
        key: tls.join("key.pem"),
    };
    std::fs::write(&files.ca, ca.cert.pem()).unwrap();
    let (cert, key, der) = ca.issue();
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    (files, der)
}

async fn serve(
    dir: &Path,
    files: &Files,
    min_version: TlsVersion,
) -> (nervix_server::Running, Config) {
    let mut config = common::test_config(dir, nervix_store_url(dir));
    config.tls = Some(TlsConfig {
        cert: files.cert.clone(),
        key: files.key.clone(),
        min_version,
        reload_interval: Duration::from_millis(100),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = nervix_server::start(listener, config.clone())
        .await
        .unwrap();
    (running, config)
}

fn nervix_store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("nervix.db").display())
}

/// The certificate a plain rustls client is served, trusting only `ca`.
async fn served_certificate(addr: SocketAddr, ca: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// What Python's `ssl` module negotiates with the server (`TLSv1.3`, ...), or `refused …`
/// when the handshake fails; `None` when there is no python3 here (and CI is not set).
async fn python_handshake(
    addr: SocketAddr,
    ca: &Path,
    max_version: Option<&str>,
) -> Option<String> {
    const SCRIPT: &str = r#"
import socket, ssl, sys
port, cafile, maxv = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
if maxv == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            print(t.version())
except ssl.SSLError as e:
    print("refused", e.reason)
"#;
    let args = [
        "-c".to_owned(),
        SCRIPT.to_owned(),
        addr.port().to_string(),
        ca.display().to_string(),
        max_version.unwrap_or("-").to_owned(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").args(args).output()
    })
    .await
    .unwrap();
    match out {
        Ok(out) => {
            assert!(
                out.status.success(),
                "python3 failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIP: Python's ssl check needs python3 ({e})");
            None
        }
        Err(e) => panic!("CI: python3 is required for the TLS version checks: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_private_ca_tls13_only_and_reloaded_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (files, first_der) = write_files(dir.path(), &ca);
    let (running, config) = serve(dir.path(), &files, TlsVersion::Tls13).await;
    let addr = running.addr;
    let base = format!("https://localhost:{}", addr.port());
    let admin_token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();

    // REST through the SDK, trusting the private CA.
    let trust = Trust::with_ca_file(&files.ca).unwrap();
    let admin = Client::with_trust(&base, trust.clone())
        .unwrap()
        .with_token(admin_token.clone());
    admin.me().await.expect("REST over HTTPS with the CA");

    // WSS: an agent enrolled over HTTPS opens its event stream.
    let keys = AgentKeys::generate();
    let mut agent = Client::with_trust(&base, trust.clone()).unwrap();
    agent
        .enroll(
            &keys,
            &EnrollRequest::new("tls-agent", &keys).capabilities(["coding"]),
        )
        .await
        .expect("enroll over HTTPS");
    let stream = agent.event_stream(None).await;
    assert!(stream.is_ok(), "WSS with the CA: {stream:?}");
    drop(stream);

    // Without the CA, the same calls are refused: the certificate is verified.
    let plain = Client::new(&base).unwrap().with_token(admin_token.clone());
    let err = plain
        .me()
        .await
        .expect_err("an unknown issuer must be refused");
    let chain = format!("{:?}", err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    let ws = EventStream::connect(&base, plain.clone(), None).await;
    let ws_err = ws
        .expect_err("WSS without the CA must be refused")
        .to_string();
    assert!(ws_err.to_lowercase().contains("certificate"), "{ws_err}");

    // A stock client: Python's ssl negotiates TLS 1.3, and 1.2 is refused by default.
    if let Some(version) = python_handshake(addr, &files.ca, None).await {
        assert_eq!(version, "TLSv1.3");
        let v12 = python_handshake(addr, &files.ca, Some("1.2"))
            .await
            .unwrap();
        assert!(v12.starts_with("refused"), "TLS 1.2 must be refused: {v12}");
    }

    // Renewal: new files on disk are served without a restart; open clients keep working.
    assert_eq!(served_certificate(addr, ca.cert.der()).await, first_der);
    let (cert, key, renewed_der) = ca.issue();
    replace(&files.key, &key);
    replace(&files.cert, &cert);
    common::eventually(Duration::from_secs(10), "the renewed certificate", || {
        let ca_der = ca.cert.der().to_vec();
        let renewed = renewed_der.clone();
        async move { (served_certificate(addr, &ca_der).await == renewed).then_some(()) }
    })
    .await;
    admin.me().await.expect("REST after the renewal");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_is_served_only_when_the_operator_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let (files, _) = write_files(dir.path(), &ca);
    let (running, _) = serve(dir.path(), &files, TlsVersion::Tls12).await;
    if let Some(v12) = python_handshake(running.addr, &files.ca, Some("1.2")).await {
        assert_eq!(v12, "TLSv1.2");
        let best = python_handshake(running.addr, &files.ca, None)
            .await
            .unwrap();
        assert_eq!(best, "TLSv1.3", "1.3 stays preferred");
    }
    running.shutdown().await;
}

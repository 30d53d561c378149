//! HTTPS and WSS with rustls: TLS 1.3 only unless the operator allows 1.2, and a certificate
//! that is read again from disk when its files change, so a renewal (certbot, cert-manager)
//! takes effect without a restart and without dropping open connections.
//!
//! Handshakes run in tasks of their own, off the accept loop: a client that opens a TCP
//! connection and never says hello must not hold up everyone behind it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, TlsVersion};

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Metadata {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider of the process (ring, which reqwest and tungstenite already use).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for a listener: the acceptor and the certificate it serves.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    cert: Arc<ReloadingCert>,
}

impl Tls {
    pub fn new(config: &TlsConfig) -> Result<Self, TlsError> {
        let provider = provider();
        let cert = Arc::new(ReloadingCert::load(
            config.cert.clone(),
            config.key.clone(),
            provider.clone(),
        )?);
        let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            cert,
        })
    }

    /// The certificate being served, to reload.
    pub fn cert(&self) -> Arc<ReloadingCert> {
        self.cert.clone()
    }

    /// Serves TLS on `tcp`: the returned listener hands out connections whose handshake is
    /// done. Dropping it stops accepting.
    pub fn listen(&self, tcp: TcpListener) -> std::io::Result<TlsListener> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, self.acceptor.clone(), tx));
        Ok(TlsListener { addr, ready })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            // The server dropped its listener (shut down): free the port.
            _ = tx.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: the same pause axum takes.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Connections that finished their TLS handshake, for `axum::serve`.
pub struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// The served certificate chain and key, swapped in place when the files change. A renewal
/// that cannot be loaded (half written, a key that does not match) leaves the old one serving
/// and is tried again at the next check.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the cert and key files the current pair was read from.
    loaded_from: Mutex<(SystemTime, SystemTime)>,
}

impl ReloadingCert {
    fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let stamp = (modified(&cert_path)?, modified(&key_path)?);
        let current = read_pair(&cert_path, &key_path, &provider)?;
        Ok(ReloadingCert {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(current),
            loaded_from: Mutex::new(stamp),
        })
    }

    /// Reads the files again if either changed since they were last read; true when a new
    /// certificate is now served.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = (modified(&self.cert_path)?, modified(&self.key_path)?);
        if *self.loaded_from.lock() == stamp {
            return Ok(false);
        }
        self.reload_at(stamp)?;
        Ok(true)
    }

    /// Reads the files again whatever their times say (SIGHUP).
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = (modified(&self.cert_path)?, modified(&self.key_path)?);
        self.reload_at(stamp)
    }

    fn reload_at(&self, stamp: (SystemTime, SystemTime)) -> Result<(), TlsError> {
        let pair = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write() = pair;
        *self.loaded_from.lock() = stamp;
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn modified(path: &Path) -> Result<SystemTime, TlsError> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|source| TlsError::Metadata {
            path: path.to_owned(),
            source,
        })
}

fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    fn pem(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
        move |source| TlsError::Pem {
            path: path.to_owned(),
            source,
        }
    }
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(pem(cert_path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert_path))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(pem(key_path))?;
    // Also checks that the key belongs to the certificate.
    Ok(Arc::new(CertifiedKey::from_der(chain, key, provider)?))
}

//! Which servers the client trusts over `https://` and `wss://`: the public web PKI, plus a
//! private CA for deployments that run their own. REST calls and the event stream share one
//! rustls configuration, so they accept exactly the same certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::ClientError;

/// The certificate authorities a [`Client`](crate::Client) and an
/// [`EventStream`](crate::EventStream) accept. The default is the public web PKI (Mozilla's
/// roots, built in); certificates are always verified.
#[derive(Clone)]
pub struct Trust {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").finish_non_exhaustive()
    }
}

impl Default for Trust {
    fn default() -> Self {
        // The public roots alone always build.
        Self::with_roots(public_roots()).unwrap_or_else(|_| unreachable_config())
    }
}

impl Trust {
    /// The public roots and every certificate in the PEM file at `path` (a private CA).
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            ClientError::Certificate(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        Self::with_ca_pem(&pem)
            .map_err(|e| ClientError::Certificate(format!("CA file {}: {e}", path.display())))
    }

    /// The public roots and every certificate in `pem`.
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, ClientError> {
        let mut roots = public_roots();
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Certificate(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Certificate(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ClientError::Certificate(
                "no PEM certificate found".to_owned(),
            ));
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: RootCertStore) -> Result<Self, ClientError> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Certificate(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Trust {
            config: Arc::new(config),
        })
    }

    /// An HTTP client builder that verifies servers with this trust.
    pub(crate) fn http_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().use_preconfigured_tls((*self.config).clone())
    }

    /// The rustls configuration for WebSocket connections.
    pub(crate) fn rustls(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Building a client configuration from the built-in roots and the protocol versions rustls
/// itself calls safe cannot fail; should a future rustls disagree, fail loudly at first use.
fn unreachable_config() -> Trust {
    panic!("rustls rejected its own default client configuration")
}

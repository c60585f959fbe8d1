//! Mutual TLS for the Raft port, with [rustls] (through `futures-rustls`, on smol's
//! sockets).
//!
//! TLS is optional: a [`TcpServer`](crate::TcpServer) given a [`TlsConfig`]
//! ([`set_tls`](crate::TcpServer::set_tls)) accepts only TLS connections from clients
//! that present a certificate signed by the cluster's CA, and a
//! [`TcpTransport`](crate::TcpTransport) built with one
//! ([`with_tls`](crate::TcpTransport::with_tls)) speaks TLS to its peers and checks their
//! certificates the same way. The [handshake](crate::handshake) then runs inside TLS.
//!
//! **Node ids are bound to certificates.** Node `n`'s certificate must hold the DNS name
//! [`node_name(n)`](node_name) (`node-n`) among its subject alternative names:
//!
//! * a transport that dials node `n` requires the server's certificate to name `node-n`,
//!   so a server with another node's certificate is refused;
//! * a server requires the certificate of a client whose handshake names node `n` to name
//!   `node-n` ([`HandshakeError::CertificateMismatch`](crate::HandshakeError)),
//!   so a node cannot speak for another, and since every Raft request must come from the
//!   handshake's node, no request can claim a sender its certificate does not name.
//!
//! A process without a certificate signed by the cluster's CA cannot get past the TLS
//! handshake, let alone send a message to the node.
//!
//! Only TLS 1.3 is offered, with the `ring` crypto provider.
//!
//! ```
//! # fn pem() -> (Vec<u8>, Vec<u8>, Vec<u8>) { (Vec::new(), Vec::new(), Vec::new()) }
//! use raft_net_smol::tls::{TlsConfig, node_name};
//! use raft_traits::NodeId;
//!
//! assert_eq!(node_name(NodeId(3)), "node-3");
//! // Node 3's certificate chain and key, and the cluster's CA, in PEM:
//! let (cert, key, ca) = pem();
//! // (Empty here, so refused with a typed error.)
//! assert!(TlsConfig::from_pem(&cert, &key, &ca).is_err());
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::rustls::client::verify_server_name;
use futures_rustls::rustls::crypto::{CryptoProvider, ring};
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use raft_traits::NodeId;

use crate::error::HandshakeError;

/// The DNS name that node `node`'s certificate must hold: `node-<id>`.
pub fn node_name(node: NodeId) -> String {
    format!("node-{}", node.0)
}

/// One node's TLS settings: its certificate chain and private key, and the cluster's CA,
/// which signs every node's certificate. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// Why a [`TlsConfig`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// PEM input holds no usable item of the kind asked for.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input: "certificate chain", "private key" or "CA".
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificates or the key.
    #[error("invalid TLS settings: {0}")]
    Invalid(String),
}

impl TlsConfig {
    /// Settings from DER: `chain` (the node's certificate first), its `key`, and the
    /// cluster's CA certificates.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate chain",
                reason: "no certificate".to_owned(),
            });
        }
        let invalid = |e: rustls::Error| TlsError::Invalid(e.to_string());
        let mut roots = RootCertStore::empty();
        for certificate in ca {
            roots.add(certificate).map_err(invalid)?;
        }
        if roots.is_empty() {
            return Err(TlsError::Pem {
                what: "CA",
                reason: "no certificate".to_owned(),
            });
        }
        let roots = Arc::new(roots);
        // An explicit provider: the process-wide default may be unset, or ambiguous when
        // another crate enables another provider.
        let provider: Arc<CryptoProvider> = Arc::new(ring::default_provider());

        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(invalid)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(invalid)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(invalid)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(invalid)?;
        Ok(TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// Settings from PEM: the node's certificate chain (its certificate first), its
    /// private key, and the cluster's CA certificates.
    pub fn from_pem(chain: &[u8], key: &[u8], ca: &[u8]) -> Result<Self, TlsError> {
        let certificates = |what: &'static str, pem: &[u8]| {
            CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Pem {
                    what,
                    reason: e.to_string(),
                })
        };
        let chain = certificates("certificate chain", chain)?;
        let ca = certificates("CA", ca)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        Self::new(chain, key, ca)
    }

    /// Settings from PEM files; see [`from_pem`](Self::from_pem).
    pub fn from_pem_files(chain: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Self::from_pem(&read(chain)?, &read(key)?, &read(ca)?)
    }

    pub(crate) fn server(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    pub(crate) fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// The name a transport requires in the certificate of node `node`'s server.
pub(crate) fn server_name(node: NodeId) -> Result<ServerName<'static>, HandshakeError> {
    ServerName::try_from(node_name(node)).map_err(|e| HandshakeError::Tls {
        reason: e.to_string(),
    })
}

/// Whether `certificate` (a client's, already verified against the CA) names `node`.
pub(crate) fn check_node(
    certificate: Option<&CertificateDer<'static>>,
    node: NodeId,
) -> Result<(), HandshakeError> {
    let mismatch = || HandshakeError::CertificateMismatch { node };
    let certificate = certificate.ok_or_else(mismatch)?;
    let parsed = ParsedCertificate::try_from(certificate).map_err(|_| mismatch())?;
    let name = server_name(node)?;
    verify_server_name(&parsed, &name).map_err(|_| mismatch())
}

//! [`LocalCa`]: a certificate authority made at run time, for mutual TLS between nodes
//! on one machine (the demo's `--tls`, `raft-bench tcp-tls`, the tests). A real
//! deployment gets its certificates from its own CA and passes the files to
//! `raft-kv serve --tls-cert/--tls-key/--tls-ca`.

use raft_net_smol::tls::{TlsConfig, TlsError, node_name};
use raft_traits::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating a key or signing a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The certificates made do not form a TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A self-signed CA whose certificates name nodes as the TCP transport's TLS expects
/// ([`node_name`]).
///
/// ```
/// use raft_examples::pki::LocalCa;
/// use raft_traits::NodeId;
///
/// let ca = LocalCa::new().unwrap();
/// let node_1 = ca.node(NodeId(1)).unwrap(); // a TlsConfig for node 1's server and transport
/// # let _ = node_1;
/// ```
pub struct LocalCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl LocalCa {
    /// A new CA with a fresh key.
    pub fn new() -> Result<Self, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(LocalCa { issuer })
    }

    /// The CA's certificate, in PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate naming `node`, signed by this CA, and its private key, in PEM.
    pub fn issue(&self, node: NodeId) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![node_name(node)])?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    /// `node`'s TLS settings: a certificate of this CA naming it, trusting `trusted`'s
    /// certificates (another CA's, to make an impostor).
    pub fn node_trusting(&self, node: NodeId, trusted: &LocalCa) -> Result<TlsConfig, PkiError> {
        let (cert, key) = self.issue(node)?;
        Ok(TlsConfig::from_pem(
            cert.as_bytes(),
            key.as_bytes(),
            trusted.pem().as_bytes(),
        )?)
    }

    /// `node`'s TLS settings with this CA.
    pub fn node(&self, node: NodeId) -> Result<TlsConfig, PkiError> {
        self.node_trusting(node, self)
    }
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

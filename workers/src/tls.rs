//! Extra trust roots for the workers' TLS clients (webhooks over https, SMTP over TLS):
//! the certificates of `ORDO_TLS_CA_FILE`, trusted beside the webpki (Mozilla) roots.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// One or more CA certificates (DER), each checked to be a usable trust anchor.
#[derive(Clone)]
pub struct TrustRoots {
    certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRoots")
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl TrustRoots {
    /// Read a PEM file of one or more certificates. An unreadable file, one without a
    /// certificate or with one that is not a valid X.509 CA certificate is an error that
    /// names the file.
    pub fn from_pem_file(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("the CA file {}: {e}", path.display()))
    }

    /// PEM text of one or more certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        let mut store = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            store
                .add(cert.clone())
                .map_err(|e| format!("certificate {} is not usable: {e}", i + 1))?;
        }
        Ok(Self { certs })
    }

    /// The certificates, DER-encoded.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_or_with_a_broken_one_is_refused() {
        assert!(TrustRoots::from_pem(b"").is_err());
        assert!(TrustRoots::from_pem(b"hello").is_err());
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = TrustRoots::from_pem(broken).unwrap_err();
        assert!(err.contains("certificate 1"), "{err}");
        let missing = TrustRoots::from_pem_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
    }
}

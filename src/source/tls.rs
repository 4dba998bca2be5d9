//! TLS client configurations for PostgreSQL, with libpq's `sslmode` semantics.
//!
//! The same configuration serves the replication connection (rustls over tokio directly) and
//! the SQL connection (tokio-postgres through tokio-postgres-rustls), so that both connections
//! to one server apply one policy:
//!
//! | sslmode              | chain checked            | host name checked |
//! |----------------------|--------------------------|-------------------|
//! | disable              | no TLS at all            |                   |
//! | prefer, require      | no                       | no                |
//! | verify-ca            | yes (root file or webpki)| no                |
//! | verify-full          | yes (root file or webpki)| yes               |
//!
//! "Not checked" follows libpq: prefer and require encrypt the traffic but trust any
//! certificate. The handshake signature is still verified in every mode, so the peer must
//! at least hold the private key of the certificate it presents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::SslMode;

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The root certificate file could not be read.
    #[error("reading root certificates from {path}")]
    ReadRoots {
        /// The configured `sslrootcert` file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The root certificate file holds no usable certificate.
    #[error("no certificate found in {path}")]
    NoRoots {
        /// The configured `sslrootcert` file.
        path: PathBuf,
    },
    /// rustls rejected the roots or the protocol versions.
    #[error("building the tls configuration")]
    Rustls(#[from] rustls::Error),
    /// The certificate verifier could not be built.
    #[error("building the certificate verifier")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// Builds the rustls client configuration for `mode`.
///
/// Returns `None` for [`SslMode::Disable`]. `root_cert` is a PEM file of trusted roots, used by
/// verify-ca and verify-full (the webpki roots when it is `None`); prefer and require ignore it.
/// The ring provider is named explicitly rather than taken from the process default, so the
/// result does not depend on which other crates installed one.
pub fn client_config(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(root_cert)?),
                provider,
            )
            .build()?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => builder
            .with_root_certificates(root_store(root_cert)?)
            .with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// The trusted roots: every certificate of the PEM file, or the webpki roots.
fn root_store(root_cert: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let Some(path) = root_cert else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let read_err = |source| TlsError::ReadRoots {
        path: path.to_owned(),
        source,
    };
    let pem = std::fs::read(path).map_err(read_err)?;
    let mut store = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        store.add(cert.map_err(read_err)?)?;
    }
    if store.is_empty() {
        return Err(TlsError::NoRoots {
            path: path.to_owned(),
        });
    }
    Ok(store)
}

/// prefer/require: any certificate is accepted, as libpq does; handshake signatures are
/// still checked against the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    /// The provider's signature algorithms, for the handshake signature checks.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to a trusted root, but the host name is not compared.
///
/// webpki checks the chain before the name, so a name mismatch reported by the inner
/// verifier means the chain itself was accepted.
#[derive(Debug)]
struct ChainOnly {
    /// The standard verifier, whose name check is the only result ignored.
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The `tls-server-end-point` channel binding data of RFC 5929 for a server certificate:
/// its hash with the certificate's signature hash, where MD5 and SHA-1 are replaced by
/// SHA-256. `None` when the signature algorithm names no such hash (Ed25519, RSA-PSS), in
/// which case SCRAM goes without channel binding, as PostgreSQL itself cannot bind then.
pub fn server_end_point_hash(certificate_der: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    let algorithm = match signature_algorithm_oid(certificate_der)? {
        // md5WithRSA, sha1WithRSA, sha256WithRSA, ecdsa-with-SHA1, ecdsa-with-SHA256
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x04 | 0x05 | 0x0B]
        | [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01]
        | [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02] => &digest::SHA256,
        // sha384WithRSA, ecdsa-with-SHA384
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C]
        | [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03] => &digest::SHA384,
        // sha512WithRSA, ecdsa-with-SHA512
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D]
        | [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04] => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(algorithm, certificate_der).as_ref().to_vec())
}

/// The OID (content bytes) of `Certificate.signatureAlgorithm`:
/// `SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, ... }, ... }`.
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (_tbs, rest) = der_element(certificate, 0x30)?;
    let (algorithm, _) = der_element(rest, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    Some(oid)
}

/// Splits one DER element with tag `tag` off `input`: (its content, what follows).
/// Bounds-checked; definite lengths of up to four bytes, as certificates use.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = (rest.get(..count)?, rest.get(count..)?);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    Some((rest.get(..len)?, rest.get(len..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_has_no_config_and_other_modes_have_one() {
        assert!(client_config(SslMode::Disable, None)
            .expect("disable")
            .is_none());
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert!(client_config(mode, None).expect("config").is_some());
        }
    }

    #[test]
    fn missing_root_file_is_an_error() {
        let err = client_config(
            SslMode::VerifyFull,
            Some(Path::new("/nonexistent/root.pem")),
        )
        .expect_err("missing file");
        assert!(matches!(err, TlsError::ReadRoots { .. }), "{err:?}");
    }

    #[test]
    fn root_file_without_certificates_is_an_error() {
        let dir = std::env::temp_dir().join(format!("entity-cdc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = client_config(SslMode::VerifyCa, Some(&path)).expect_err("no roots");
        assert!(matches!(err, TlsError::NoRoots { .. }), "{err:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn der_walk_is_bounds_checked() {
        assert_eq!(signature_algorithm_oid(&[]), None);
        assert_eq!(
            signature_algorithm_oid(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]),
            None
        );
        assert_eq!(
            signature_algorithm_oid(&[0x30, 0x03, 0x30, 0x05, 0x00]),
            None
        );
        // SEQUENCE { SEQUENCE {}, SEQUENCE { OID ecdsa-with-SHA256 } }
        let der = [
            0x30, 0x0E, 0x30, 0x00, 0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04,
            0x03, 0x02,
        ];
        assert_eq!(
            signature_algorithm_oid(&der),
            Some(&[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02][..])
        );
        assert_eq!(server_end_point_hash(&der).map(|h| h.len()), Some(32));
    }
}

//! The client's TLS setup: rustls with the *ring* provider (never aws-lc-rs
//! or OpenSSL), the system's roots plus an optional extra CA bundle, and an
//! optional client certificate for mutual TLS.
//!
//! reqwest's `rustls-no-provider` build would panic without a process-wide
//! provider, so we build the rustls configuration here and hand it over with
//! `tls_backend_preconfigured`. Certificate and hostname verification are
//! always on; there is no switch to turn them off.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::{ClientConfig, ClientIdentity};
use crate::error::PortalError;

pub(crate) fn rustls_config(
    config: &ClientConfig,
    https: bool,
) -> Result<rustls::ClientConfig, PortalError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra_roots = match &config.ca_bundle {
        Some(pem) => {
            let bytes = pem.read("ca_bundle")?;
            let certs = read_certs(&bytes, "ca_bundle")?;
            if certs.is_empty() {
                return Err(PortalError::config(
                    "ca_bundle",
                    "no CERTIFICATE block in the bundle",
                ));
            }
            certs
        }
        None => Vec::new(),
    };

    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PortalError::config("tls", e))?;
    let verifier: Arc<dyn ServerCertVerifier> =
        match rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider) {
            Ok(v) => Arc::new(v),
            // No system roots and no bundle: fatal for an https portal. A
            // plain-http portal never does a handshake (redirects are off),
            // so we only make sure no certificate could ever be accepted.
            Err(e) if !https => {
                tracing::debug!(error = %e, "no TLS roots; fine for a plain-http portal");
                Arc::new(RefuseAll(rustls::crypto::ring::default_provider()))
            }
            Err(e) => return Err(PortalError::config("tls roots", e)),
        };
    let builder = builder
        .dangerous() // a verifier of our choice, not no verification
        .with_custom_certificate_verifier(verifier);

    let mut tls = match &config.client_identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let (certs, key) = read_identity(identity)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| PortalError::config("client_certificate", e))?
        }
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

fn read_certs(bytes: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PortalError> {
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PortalError::config(what, format!("bad PEM: {e}")))
}

fn read_identity(
    identity: &ClientIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PortalError> {
    let what = "client_certificate";
    let (cert_pem, key_pem) = match identity {
        ClientIdentity::Combined(pem) => {
            let bytes = pem.read(what)?;
            (bytes.clone(), bytes)
        }
        ClientIdentity::Split { cert, key } => (cert.read(what)?, key.read("client key")?),
    };
    let certs = read_certs(&cert_pem, what)?;
    if certs.is_empty() {
        return Err(PortalError::config(what, "no CERTIFICATE block found"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        PortalError::config(what, format!("no usable PRIVATE KEY block found: {e}"))
    })?;
    Ok((certs, key))
}

/// A verifier that accepts no server at all.
#[derive(Debug)]
struct RefuseAll(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for RefuseAll {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::General(
            "no trusted roots: the system has none and no ca_bundle is configured".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no trusted roots".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("no trusted roots".into()))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! TLS for every protocol of `glimpse-lab load`: one rustls client configuration (trust a
//! given CA, the public web roots, or, with `--insecure`, any certificate) used by the HTTPS
//! client and, through [`GrpcConnector`], by the gRPC channel, so `--ca` and `--insecure`
//! mean the same whatever `--protocol` says.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::Uri;

use super::error::LoadError;

/// Whom the client trusts.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// The public web PKI (Mozilla's roots, built in): a deployment with a public certificate.
    #[default]
    PublicRoots,
    /// Only the CA certificates in this PEM file (e.g. `glimpse-certs`' `ca.pem`, or the
    /// front-end's own certificate when it is self-signed).
    Ca(std::path::PathBuf),
    /// Any certificate at all (`--insecure`): for a local front-end with a self-signed
    /// certificate. The connection is encrypted but not authenticated.
    Insecure,
}

/// A rustls client configuration for `trust`, with `alpn` as the offered protocols.
pub fn client_config(trust: &Trust, alpn: &[&[u8]]) -> Result<ClientConfig, LoadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Tls(format!("TLS versions: {e}")))?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth(),
        Trust::PublicRoots => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Ca(path) => builder
            .with_root_certificates(read_roots(path)?)
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Every certificate of the PEM file at `path`, as trust anchors.
fn read_roots(path: &Path) -> Result<rustls::RootCertStore, LoadError> {
    let pem = std::fs::read(path)
        .map_err(|e| LoadError::Tls(format!("reading --ca {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| LoadError::Tls(format!("parsing --ca {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| LoadError::Tls(format!("--ca {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(LoadError::Tls(format!(
            "--ca {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(roots)
}

/// Accepts any server certificate; handshake signatures are still checked, so the peer does
/// hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens TCP + TLS (ALPN `h2`) connections for the gRPC channel, with the configuration of
/// [`client_config`].
#[derive(Clone)]
pub(crate) struct GrpcConnector {
    config: Arc<ClientConfig>,
}

impl GrpcConnector {
    /// A connector that speaks TLS with `config` (its ALPN should offer `h2`).
    pub(crate) fn new(config: ClientConfig) -> GrpcConnector {
        GrpcConnector {
            config: Arc::new(config),
        }
    }
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tower_service::Service<Uri> for GrpcConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)
                .map_err(|e| std::io::Error::other(format!("server name: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(&Trust::Ca(empty), &[]).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        assert!(client_config(&Trust::Ca(missing), &[]).is_err());
    }

    #[test]
    fn every_trust_mode_builds_and_offers_the_given_alpn() {
        for trust in [Trust::PublicRoots, Trust::Insecure] {
            let c = client_config(&trust, &[b"h2"]).unwrap();
            assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
        }
    }
}

//! `wss://` on the WebSocket port: rustls through tokio-rustls, with the
//! certificate and key reloaded on SIGHUP. A reload changes what new
//! connections are offered; connections already open keep their session.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The certificate files and the acceptor built from them.
pub struct Tls {
    /// The files (cert, key) and the acceptor built from them.
    current: RwLock<(PathBuf, PathBuf, TlsAcceptor)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Tls")
            .field("cert", &current.0)
            .field("key", &current.1)
            .finish()
    }
}

impl Tls {
    /// Reads the certificate chain and key; a bad file is an error here, at start.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let acceptor = acceptor(cert, key)?;
        Ok(Tls {
            current: RwLock::new((cert.to_path_buf(), key.to_path_buf(), acceptor)),
        })
    }

    /// Reads the files again; on an error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            (current.0.clone(), current.1.clone())
        };
        self.reload_from(&cert, &key)
    }

    /// Takes these files from now on (a configuration file that names new
    /// ones); on an error the previous files and certificate stay in use.
    pub fn reload_from(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let fresh = acceptor(cert, key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (cert.to_path_buf(), key.to_path_buf(), fresh);
        Ok(())
    }

    /// The acceptor for a new connection (a cheap clone of an `Arc`).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().unwrap_or_else(|e| e.into_inner()).2.clone()
    }
}

/// Why the certificate and key cannot serve `wss://`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read a certificate chain from {}: {source}", path.display())]
    Certificates {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read a private key from {}: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS certificate and key rejected: {0}")]
    Rejected(rustls::Error),
    #[error("cannot use {} as the client CA: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = server_config(cert, key, None, b"http/1.1")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS server configuration from PEM files: the certificate chain, its
/// key and, to require client certificates, the CA that signs them; with
/// `alpn` as the one application protocol offered. The admin port uses it
/// too (`h2`, and its `--admin-tls-client-ca`).
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>, alpn: &[u8]) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rejected)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let bad = |reason: String| TlsError::ClientCa {
                path: ca.to_path_buf(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(certificate.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(TlsError::Rejected)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A client's byte stream: plain TCP, or TLS over it (boxed: a TLS
/// session's buffers are large, and plain connections should not pay for them).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

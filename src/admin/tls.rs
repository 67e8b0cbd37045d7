//! The admin port's TLS, done here rather than inside tonic: each handshake
//! has a deadline and runs in a task of its own (a slow caller never holds
//! up the next), and one that fails is logged with the caller's address
//! (a wrong CA, no client certificate, plain text on the TLS port), at most
//! one line every 10 s with the count since the last.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::auth::Throttle;
use crate::config::Config;
use crate::listen::{Capped, Idle};

/// A caller has this long to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Reads and checks the admin TLS material (certificate, key, client CA),
/// so a bad file stops the process before anything is served.
pub fn load(config: &Config) -> Result<Option<TlsAcceptor>, crate::error::Error> {
    let (Some(cert), Some(key)) = (&config.admin_tls_cert, &config.admin_tls_key) else {
        return Ok(None);
    };
    let client_ca = config.admin_tls_client_ca.as_deref();
    let server = crate::ws::tls::server_config(cert, key, client_ca, b"h2")
        .map_err(|e| crate::error::Error::AdminTls(format!("{e} ({} / {})", cert.display(), key.display())))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// One admin connection: plain, or TLS over it.
pub enum Io {
    Plain(Idle<TcpStream>),
    Tls(Box<TlsStream<Idle<TcpStream>>>),
}

/// The port's connections for tonic: accepted under the cap and, with TLS,
/// handshaken here. Ends when `stop` is cancelled.
pub fn incoming(
    capped: Capped,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) -> Pin<Box<dyn Stream<Item = io::Result<Io>> + Send>> {
    let Some(acceptor) = tls else {
        return Box::pin(capped.incoming().map(|io| io.map(Io::Plain)));
    };
    let (ready, handshaken) = tokio::sync::mpsc::channel(crate::listen::ADMIN_MAX_CONNECTIONS);
    let failures = Arc::new(Mutex::new(Throttle::default()));
    tokio::spawn(async move {
        loop {
            let (stream, caller) = tokio::select! {
                next = capped.next() => next,
                _ = stop.cancelled() => return,
            };
            let (acceptor, ready, failures) = (acceptor.clone(), ready.clone(), failures.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = ready.send(Ok(Io::Tls(Box::new(tls)))).await;
                    }
                    Ok(Err(e)) => failed(&failures, caller, &e.to_string()),
                    Err(_) => failed(&failures, caller, "no handshake within 10 s"),
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(handshaken))
}

fn failed(failures: &Mutex<Throttle>, caller: SocketAddr, error: &str) {
    if let Some(failed) = failures.lock().unwrap_or_else(|e| e.into_inner()).due() {
        tracing::warn!(%caller, %error, failed, "admin: a TLS handshake failed (a caller without a client certificate, with one from another CA, or speaking plain text); at most one such line every 10 s, `failed` counts them");
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Io {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Io::Plain(s) => s.connect_info(),
            Io::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

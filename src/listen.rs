//! Accepting on the node's ports: an `accept` that fails (out of file
//! descriptors, most often) backs off and is counted instead of spinning;
//! the admin and metrics ports hold at most a few connections each, inside
//! the files reserved for them, and drop a connection that stays silent.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::metrics;

/// Connections the admin port holds at once (of the 256 files reserved for
/// the admin and metrics ports, the listeners and the process's own).
pub const ADMIN_MAX_CONNECTIONS: usize = 100;
/// Connections the metrics port holds at once.
pub const METRICS_MAX_CONNECTIONS: usize = 64;
/// The first and the longest pause after a failed `accept`.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts on `listener` until it succeeds. A failure is counted
/// (`wshub_accept_errors_total{listener, kind}`) and waited out, longer
/// each time it repeats, so a process out of files neither spins nor
/// floods the log.
pub async fn accept(listener: &TcpListener, name: &'static str) -> (TcpStream, SocketAddr) {
    let mut pause = BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                let kind = metrics::accept_error(name, &e);
                if pause == BACKOFF_MIN {
                    tracing::warn!(listener = name, kind, error = %e, "accept failed; backing off");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A listener that holds at most `max` connections and closes each one
/// that stays silent for `idle`: for ports only operators and their tools
/// use, which must never take the files the WebSocket port needs.
pub struct Capped {
    listener: TcpListener,
    name: &'static str,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Capped {
    pub fn new(listener: TcpListener, name: &'static str, max: usize, idle: Duration) -> Capped {
        Capped {
            listener,
            name,
            permits: Arc::new(Semaphore::new(max)),
            idle,
        }
    }

    /// The next connection within the cap; one past it is closed at once
    /// and counted (`wshub_connections_refused_total{listener}`).
    pub async fn next(&self) -> (Idle<TcpStream>, SocketAddr) {
        loop {
            let (stream, addr) = accept(&self.listener, self.name).await;
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                metrics::connection_refused(self.name);
                tracing::debug!(listener = self.name, remote = %addr, "connection over the port's cap; closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            return (Idle::new(stream, self.idle, permit), addr);
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn incoming(self) -> impl futures_util::Stream<Item = io::Result<Idle<TcpStream>>> {
        futures_util::stream::unfold(self, |capped| async move {
            let (stream, _) = capped.next().await;
            Some((Ok(stream), capped))
        })
    }
}

impl axum::serve::Listener for Capped {
    type Io = Idle<TcpStream>;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        self.next()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A stream that fails with `TimedOut` once nothing has been read from it
/// for its idle time, and holds its place under a [`Capped`] listener's
/// cap until dropped.
pub struct Idle<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<S> Idle<S> {
    fn new(inner: S, idle: Duration, permit: OwnedSemaphorePermit) -> Idle<S> {
        Idle {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            _permit: permit,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + this.idle;
                    this.timer.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Idle<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

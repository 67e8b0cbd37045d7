//! One connection from accept to unregister. A first task opens it (TLS,
//! the HTTP upgrade and the gate, within `--handshake-timeout`) and ends;
//! the connection then runs in two tasks: the steady one (register with the
//! hub, the reader, then ending within a bound and reporting why) and the
//! writer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::gate::{Busy, Slot};
use super::tls::Stream;
use super::wire::Wire;
use super::writer::Sink;
use super::{handshake, reader, writer, Context, Ws};
use crate::close::HandshakeFailure;
use crate::close::{Closing, DisconnectReason};
use crate::hub::{ClientId, HubError, Shared};
use crate::{metrics, protocol};

/// After our close frame, the most a client's leftover bytes are read and
/// discarded before the socket is closed, so the kernel answers no reset.
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// One accepted socket. This task opens the connection (handshakes, the
/// client's record) and ends; the connection then lives in a task of its
/// own, so nothing only the opening needed stays in memory for the life of
/// the connection.
pub async fn handle(ctx: Arc<Context>, stream: TcpStream, peer: SocketAddr) {
    let handshaking = match ctx.gate.begin_handshake(peer.ip()) {
        Ok(handshaking) => handshaking,
        Err(busy) => {
            // Full: answer at once and never wait on this socket. What of the
            // request has arrived is read and dropped, so closing sends a FIN
            // (not a reset that could discard the answer).
            let (answer, reason) = match busy {
                Busy::Full => (FULL, HandshakeFailure::MaxConnections),
                Busy::FullForAddress => (FULL_FOR_ADDRESS, HandshakeFailure::MaxConnectionsPerIp),
            };
            let _ = stream.try_write(answer);
            let mut sink = [0u8; 4096];
            for _ in 0..2 {
                if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
                    break;
                }
            }
            refused::<()>(reason, peer);
            return;
        }
    };
    let opened = open(&ctx, stream, peer).await;
    drop(handshaking);
    let Some((ws, shared, slot)) = opened else {
        return;
    };
    // The writer starts at once; the hub queues the welcome as it registers
    // the client, so it is always the first frame.
    let (sink, stream) = ws.split();
    let writer = ctx
        .tracker
        .spawn(writer::run(sink, shared.clone(), ctx.ping_interval).instrument(span(&shared)));
    ctx.tracker.spawn(steady(ctx.clone(), stream, shared, writer, slot));
}

/// The answer to a socket accepted while the node is full.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 34\r\nConnection: close\r\nRetry-After: 5\r\n\r\ntoo many connections on this node\n";
/// The answer to a socket accepted while its address holds all it may.
const FULL_FOR_ADDRESS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 39\r\nConnection: close\r\nRetry-After: 5\r\n\r\ntoo many connections from this address\n";

/// A debug span: free at the default log level, and every connection line
/// carries the client id when debugging.
fn span(shared: &Shared) -> tracing::Span {
    tracing::debug_span!("client", client_id = %shared.id, remote = %shared.remote_addr)
}

/// The handshakes, within `--handshake-timeout`, then the client as the
/// hub will know it; `None` (counted) when the request was refused.
async fn open(ctx: &Context, stream: TcpStream, peer: SocketAddr) -> Option<(Ws, Arc<Shared>, Slot)> {
    let _ = stream.set_nodelay(true);
    let (stream, upgraded) = match tokio::time::timeout(ctx.handshake_timeout, handshakes(ctx, stream, peer)).await {
        Ok(Ok(Some(done))) => done,
        // A page of the demo was served: not a client, not a refusal.
        Ok(Ok(None)) => return None,
        Ok(Err(reason)) => return refused(reason, peer),
        Err(_) => return refused(HandshakeFailure::Timeout, peer),
    };
    let handshake::Upgraded { admitted, leftover } = upgraded;
    let id = ClientId(ctx.next_id.fetch_add(1, Relaxed));
    let limits = &ctx.limits;
    let shared = Shared::new(
        id,
        admitted.addr,
        ctx.force.child_token(),
        limits.send_queue_len,
        limits.send_queue_bytes,
    )
    .with_identity(admitted.identity);
    let shared = Arc::new(shared);
    let wire = Wire::new(stream, shared.clone());
    let ws = WebSocketStream::from_partially_read(wire, leftover, Role::Server, Some(ctx.ws_config)).await;
    Some((ws, shared, admitted.slot))
}

/// Counts a refused handshake, and logs it: the first refusal in each
/// second at info (with how many the previous lines left out), the rest at
/// debug, so a flood of refusals cannot flood the log.
fn refused<T>(reason: HandshakeFailure, peer: SocketAddr) -> Option<T> {
    use std::sync::atomic::AtomicU64;
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);
    metrics::handshake_failure(reason);
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_SECOND.swap(second, Relaxed) != second {
        let left_out = LEFT_OUT.swap(0, Relaxed);
        tracing::info!(reason = reason.as_str(), remote = %peer, left_out, "handshake refused");
    } else {
        LEFT_OUT.fetch_add(1, Relaxed);
        tracing::debug!(reason = reason.as_str(), remote = %peer, "handshake refused");
    }
    None
}

/// TLS (for wss://), then the HTTP upgrade.
async fn handshakes(
    ctx: &Context,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<(Stream, handshake::Upgraded)>, HandshakeFailure> {
    let mut stream = match &ctx.tls {
        None => Stream::Plain(tcp),
        Some(tls) => match tls.acceptor().accept(tcp).await {
            Ok(tls) => Stream::Tls(Box::new(tls)),
            Err(e) => {
                tracing::debug!(error = %e, remote = %peer, "TLS handshake failed");
                return Err(HandshakeFailure::Tls);
            }
        },
    };
    let upgraded = handshake::accept(&mut stream, &ctx.gate, &ctx.lifecycle, ctx.demo, peer).await?;
    Ok(upgraded.map(|upgraded| (stream, upgraded)))
}

/// Everything after the handshake: register, read until the connection
/// ends, finish it, unregister. Set-up and tear-down futures are boxed, so
/// only the steady state (the reader loop) is held in the task for the life
/// of the connection; and this is a function returning an `async move`
/// block rather than an `async fn`, which would keep a second copy of its
/// arguments in that state.
///
/// Whatever happens between registering and unregistering (a panic
/// included: a bug), the client is unregistered and its slot given back.
fn steady(
    ctx: Arc<Context>,
    mut stream: SplitStream<Ws>,
    shared: Arc<Shared>,
    writer: JoinHandle<Option<Sink>>,
    slot: Slot,
) -> impl Future<Output = ()> + Send {
    let span = span(&shared);
    async move {
        // Dropped with this task, however it ends: a writer is never left behind.
        let writer = AbortOnDropHandle::new(writer);
        let handles = metrics::handles();
        handles.connections.increment(1);
        ctx.live.fetch_add(1, Relaxed);
        let registered = {
            let user = shared.identity.as_ref().map(|i| i.user());
            let welcome = protocol::welcome(
                shared.id,
                &ctx.node,
                ctx.ping_interval.as_millis(),
                ctx.limits.max_message_bytes,
                user,
            );
            match Box::pin(ctx.hub.register(shared.clone(), welcome.clone())).await {
                Ok(()) => true,
                Err(refused) => {
                    // Draining or shutting down: say so after the welcome, then end.
                    // (The queue is new: the welcome fits.)
                    let _ = shared.try_push(welcome);
                    shared.close(match refused {
                        HubError::Refused(closing) => closing,
                        _ => Closing::shutdown(),
                    });
                    false
                }
            }
        };
        tracing::debug!("connected");

        guarded(reader::run(&mut stream, &ctx, &shared), &shared).await;
        Box::pin(guarded(finish(&ctx, stream, &shared, writer), &shared)).await;

        let reason = shared.closing().map_or(DisconnectReason::ReadError, |c| c.reason);
        handles.disconnect(reason);
        tracing::debug!(reason = reason.as_str(), "disconnected");
        ctx.live.fetch_sub(1, Relaxed);
        // A client the hub refused was never listed: nothing to announce.
        if registered {
            Box::pin(ctx.hub.unregister(shared, reason)).await;
        }
        // The connection's place under the limits is given back last.
        drop(slot);
    }
    .instrument(span)
}

/// Runs a part of a connection's life (the reader, then the finish, each
/// guarded: the reader inline, the finish boxed, so the guard costs an
/// idle connection nothing); should it panic (a bug), the panic is logged and the connection closed with `1011
/// "internal error"` like any other close, so it is still counted, leaves
/// the hub and frees its slot, instead of staying listed with no one
/// reading it.
///
/// Built from combinators rather than as an `async fn`, which would hold the
/// reader's state twice for the life of the connection.
fn guarded<'a>(life: impl Future<Output = ()> + 'a, shared: &'a Shared) -> impl Future<Output = ()> + 'a {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(life).catch_unwind().map(move |lived| {
        if let Err(panic) = lived {
            tracing::error!(panic = %crate::error::panic_message(&*panic), "a connection's task panicked (a bug); closing it with 1011");
            shared.close(Closing::internal_error());
            // Whatever the writer was doing, it is gone with the task.
            shared.writing(false);
            shared.close_queue();
        }
    })
}

/// Ends the connection within `--close-timeout` of its closing (and at
/// once when the shutdown grace has run out): when the server closes, the
/// writer flushes what was queued and the close frame, then the stream is
/// shut down (TLS `close_notify` included) and what the client still sends
/// is discarded (bounded), so it ends with a FIN rather than a reset. When
/// the client left, the writer is told to stop. Every step has the one
/// deadline; however the writer ends, its queue is closed after it.
async fn finish(ctx: &Context, stream: SplitStream<Ws>, shared: &Shared, mut writer: AbortOnDropHandle<Option<Sink>>) {
    let ours = shared.closing().is_some_and(|c| c.frame.is_some());
    let deadline = Instant::now() + ctx.close_timeout;
    if !ours {
        // Nothing to say to a client that left: drop what is queued; the
        // writer ends at the close marker (which writes nothing here).
        shared.stop_writer();
    }
    let sink = tokio::select! {
        written = &mut writer => written.ok().flatten(),
        _ = tokio::time::sleep_until(deadline) => None,
        _ = ctx.force.cancelled() => None,
    };
    // Still writing past the deadline (a client that reads nothing): stopped.
    writer.abort();
    shared.writing(false);
    shared.close_queue();
    let (true, Some(sink)) = (ours, sink) else { return };
    let Ok(mut ws) = stream.reunite(sink) else { return };
    let tcp = ws.get_mut();
    let end = async {
        let _ = tcp.shutdown().await;
        let discard = async {
            let mut buf = [0u8; 4096];
            let mut total = 0;
            while total < LINGER_BYTES {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, discard).await;
    };
    tokio::select! {
        _ = tokio::time::timeout_at(deadline, end) => {}
        _ = ctx.force.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn a_reader_that_panics_closes_its_connection_with_1011() {
        let shared = Shared::new(
            ClientId(1),
            "127.0.0.1:1".parse().unwrap(),
            CancellationToken::new(),
            8,
            1 << 20,
        );
        guarded(async { panic!("a bug") }, &shared).await;
        assert_eq!(
            shared.try_push("late".into()),
            Err(crate::hub::PushError::Closed),
            "nothing is queued to it"
        );
        let closing = shared.closing().expect("closed");
        assert_eq!(closing.reason, DisconnectReason::InternalError);
        assert_eq!(closing.code(), 1011);
        assert!(shared.token.is_cancelled(), "the close took effect");

        let fine = Shared::new(
            ClientId(2),
            "127.0.0.1:2".parse().unwrap(),
            CancellationToken::new(),
            8,
            1 << 20,
        );
        guarded(async {}, &fine).await;
        assert!(fine.closing().is_none());
    }
}

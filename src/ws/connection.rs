//! One connection from accept to unregister: handshake, register with the
//! hub, run the reader here and the writer in its own task, then report why
//! it ended.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::{handshake, reader, writer, Context};
use crate::close::{Closing, DisconnectReason};
use crate::hub::{self, ClientId, Shared};
use crate::{metrics, protocol};

/// The longest a client may take to send its HTTP upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the server sends a close frame, how long it waits for the client's reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

pub type Ws = WebSocketStream<TcpStream>;

pub async fn handle(ctx: Arc<Context>, mut stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let accepting = ctx.lifecycle.is_ready();
    let leftover = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake::accept(&mut stream, accepting)).await {
        Ok(Ok(leftover)) => leftover,
        Ok(Err(reason)) => return metrics::handshake_failure(reason),
        Err(_) => return metrics::handshake_failure("timeout"),
    };
    let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ctx.ws_config)).await;
    let id = ClientId(ctx.next_id.fetch_add(1, Relaxed));
    let span = tracing::info_span!("client", client_id = %id, remote = %addr);
    run(ctx, ws, id, addr).instrument(span).await;
}

async fn run(ctx: Arc<Context>, ws: Ws, id: ClientId, addr: SocketAddr) {
    let handles = metrics::handles();
    handles.connections.increment(1);
    let shared = Arc::new(Shared::new(id, addr, ctx.force.child_token()));
    let limits = &ctx.limits;
    let (tx, rx) = hub::queue(shared.clone(), limits.send_queue_len, limits.send_queue_bytes);
    // The queue is new and holds at least one message: this cannot fail.
    let _ = tx.try_push(protocol::welcome(id, ctx.ping_interval.as_millis()));
    if ctx.hub.register(tx.clone()).await.is_err() {
        // The hub is shutting down: say so after the welcome, then end.
        tx.close_after_flush(Closing::shutdown());
    }
    tracing::debug!("connected");

    let (sink, mut stream) = ws.split();
    let writer = ctx
        .tracker
        .spawn(writer::run(sink, rx, shared.clone(), ctx.ping_interval).instrument(tracing::Span::current()));
    reader::run(&mut stream, &ctx, &shared, &tx).await;
    drop(tx);
    shared.token.cancel();
    let _ = writer.await;
    if shared.closing().is_some_and(|c| c.frame.is_some()) {
        // We closed first: give the client a moment to answer our close frame.
        let _ = tokio::time::timeout(CLOSE_LINGER, async { while let Some(Ok(_)) = stream.next().await {} }).await;
    }

    let reason = shared.closing().map_or(DisconnectReason::ReadError, |c| c.reason);
    handles.disconnect(reason);
    tracing::debug!(reason = reason.as_str(), "disconnected");
    ctx.hub.unregister(shared, reason).await;
}

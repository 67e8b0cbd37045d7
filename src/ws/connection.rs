//! One connection from accept to unregister: handshake, register with the
//! hub, run the reader here and the writer in its own task, then report why
//! it ended.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use super::{handshake, reader, writer, Context};
use crate::close::{Closing, DisconnectReason};
use crate::hub::{ClientId, Shared};
use crate::{metrics, protocol};

/// The longest a client may take to send its HTTP upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the server sends a close frame, how long it waits for the client's reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

pub type Ws = WebSocketStream<TcpStream>;

pub async fn handle(ctx: Arc<Context>, mut stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // Boxed so the handshake's buffers are freed once it is done, instead
    // of staying part of this task's state for the life of the connection.
    let handshake = Box::pin(handshake::accept(&mut stream, &ctx.lifecycle));
    let leftover = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(leftover)) => leftover,
        Ok(Err(reason)) => return metrics::handshake_failure(reason),
        Err(_) => return metrics::handshake_failure("timeout"),
    };
    let ws = Box::pin(WebSocketStream::from_partially_read(
        stream,
        leftover,
        Role::Server,
        Some(ctx.ws_config),
    ))
    .await;
    let id = ClientId(ctx.next_id.fetch_add(1, Relaxed));
    let limits = &ctx.limits;
    let shared = Arc::new(Shared::new(
        id,
        addr,
        ctx.force.child_token(),
        limits.send_queue_len,
        limits.send_queue_bytes,
    ));
    // A debug span: free at the default log level, and every connection
    // line carries the client id when debugging.
    let span = tracing::debug_span!("client", client_id = %id, remote = %addr);
    // The writer starts at once: the welcome it sends first is queued
    // below, before the client is registered, so it is always the first frame.
    let (sink, stream) = ws.split();
    let writer = ctx
        .tracker
        .spawn(writer::run(sink, shared.clone(), ctx.ping_interval).instrument(span.clone()));
    run(ctx, stream, shared, writer).instrument(span).await;
}

/// Everything after the handshake. Set-up and tear-down futures are boxed,
/// so only the steady state (the reader loop) is held in the task for the
/// life of the connection.
async fn run(ctx: Arc<Context>, mut stream: SplitStream<Ws>, shared: Arc<Shared>, writer: JoinHandle<()>) {
    let handles = metrics::handles();
    handles.connections.increment(1);
    // The queue is new and holds at least one message: this cannot fail.
    let _ = shared.try_push(protocol::welcome(shared.id, ctx.ping_interval.as_millis()));
    if Box::pin(ctx.hub.register(shared.clone())).await.is_err() {
        // The hub is shutting down: say so after the welcome, then end.
        shared.close_after_flush(Closing::shutdown());
    }
    tracing::debug!("connected");

    reader::run(&mut stream, &ctx, &shared).await;
    shared.token.cancel();
    let _ = writer.await;
    if shared.closing().is_some_and(|c| c.frame.is_some()) {
        // We closed first: give the client a moment to answer our close frame.
        let linger = async { while let Some(Ok(_)) = stream.next().await {} };
        let _ = Box::pin(tokio::time::timeout(CLOSE_LINGER, linger)).await;
    }

    let reason = shared.closing().map_or(DisconnectReason::ReadError, |c| c.reason);
    handles.disconnect(reason);
    tracing::debug!(reason = reason.as_str(), "disconnected");
    Box::pin(ctx.hub.unregister(shared, reason)).await;
}

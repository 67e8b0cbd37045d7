//! The writer task: the only owner of the socket's sink. It takes
//! everything queued at once, feeds it all and flushes once, so a burst is
//! one write.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

use super::connection::Ws;
use crate::close::{Closing, DisconnectReason};
use crate::hub::{Outbound, Shared};
use crate::metrics;

/// How long a close frame may take to reach a client that is being dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

type Sink = SplitSink<Ws, Message>;

pub async fn run(mut sink: Sink, shared: Arc<Shared>, ping_interval: Duration) {
    let token = shared.token.clone();
    // One cancellation point around the whole loop keeps the task's state
    // small; a write stuck on a full socket is cancelled with it.
    let ended = tokio::select! {
        biased;
        _ = token.cancelled() => None,
        ended = write_loop(&mut sink, &shared, ping_interval) => Some(ended),
    };
    match ended {
        // The close frame is sent: nothing more to write.
        Some(Ok(())) => {}
        Some(Err(e)) => {
            tracing::debug!(error = %e, "write failed");
            shared.set_closing(Closing::silent(DisconnectReason::ReadError));
        }
        // Stopped before reaching a queued close marker (evicted, timed
        // out, forced): send the close frame owed, best effort and bounded.
        None => {
            if let Some(message) = close_message(&shared) {
                let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, sink.send(message))).await;
            }
        }
    }
    shared.close_queue();
    token.cancel();
}

/// Writes batches and pings until the queued close marker is written.
async fn write_loop(sink: &mut Sink, shared: &Shared, ping_interval: Duration) -> Result<(), WsError> {
    let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            batch = shared.take() => batch,
            _ = ping.tick() => {
                Box::pin(sink.send(Message::Ping(Bytes::new()))).await?;
                continue;
            }
        };
        // Boxed per batch (not per frame): an idle connection's task then
        // holds none of the write's state.
        if let Written::Closed = Box::pin(write_batch(sink, batch, shared)).await? {
            return Ok(());
        }
    }
}

enum Written {
    More,
    Closed,
}

async fn write_batch(
    sink: &mut Sink,
    batch: std::collections::VecDeque<Outbound>,
    shared: &Shared,
) -> Result<Written, WsError> {
    let (mut frames, mut bytes) = (0, 0);
    let mut result = Written::More;
    for item in batch {
        match item {
            Outbound::Text(text) => {
                frames += 1;
                bytes += text.len();
                sink.feed(Message::Text(text)).await?;
            }
            Outbound::Close => {
                if let Some(message) = close_message(shared) {
                    sink.feed(message).await?;
                }
                result = Written::Closed;
                break;
            }
        }
    }
    sink.flush().await?;
    shared.written(frames, bytes);
    shared.messages_sent.fetch_add(frames as u64, Relaxed);
    let handles = metrics::handles();
    handles.messages_sent.increment(frames as u64);
    handles.bytes_sent.increment(bytes as u64);
    Ok(result)
}

fn close_message(shared: &Shared) -> Option<Message> {
    let (code, reason) = shared.closing()?.frame.clone()?;
    Some(Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    })))
}

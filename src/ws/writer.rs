//! The writer task: the only owner of the socket's sink. It drains what is
//! queued, feeds it all and flushes once, so a burst is one write.

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
use crate::hub::{ClientRx, Outbound, Shared};
use crate::metrics;

/// Frames written per flush at most, so one busy client cannot hold the
/// writer in a single batch forever.
const MAX_BATCH: usize = 1024;
/// How long a close frame may take to reach a client that is being dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

type Sink = SplitSink<Ws, Message>;

pub async fn run(mut sink: Sink, mut rx: ClientRx, shared: Arc<Shared>, ping_interval: Duration) {
    let token = shared.token.clone();
    let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let written = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            item = rx.recv() => match item {
                Some(first) => tokio::select! {
                    written = write_batch(&mut sink, &mut rx, first, &shared) => written,
                    _ = token.cancelled() => break,
                },
                None => break,
            },
            _ = ping.tick() => tokio::select! {
                sent = sink.send(Message::Ping(Bytes::new())) => sent.map(|()| Written::More),
                _ = token.cancelled() => break,
            },
        };
        match written {
            Ok(Written::More) => {}
            // The close frame is sent: nothing more to write.
            Ok(Written::Closed) => return token.cancel(),
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                shared.set_closing(Closing::silent(DisconnectReason::ReadError));
                break;
            }
        }
    }
    // Stopped without the queued close marker (evicted, timed out, forced):
    // send the close frame owed, best effort and bounded.
    if let Some(message) = close_message(&shared) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(message)).await;
    }
    token.cancel();
}

enum Written {
    More,
    Closed,
}

async fn write_batch(sink: &mut Sink, rx: &mut ClientRx, first: Outbound, shared: &Shared) -> Result<Written, WsError> {
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut next = Some(first);
    let mut result = Written::More;
    while let Some(item) = next.take() {
        match item {
            Outbound::Text(text) => {
                frames += 1;
                bytes += text.len() as u64;
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
        if frames < MAX_BATCH as u64 {
            next = rx.try_recv();
        }
    }
    sink.flush().await?;
    shared.messages_sent.fetch_add(frames, Relaxed);
    let handles = metrics::handles();
    handles.messages_sent.increment(frames);
    handles.bytes_sent.increment(bytes);
    Ok(result)
}

fn close_message(shared: &Shared) -> Option<Message> {
    let (code, reason) = shared.closing()?.frame.clone()?;
    Some(Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    })))
}

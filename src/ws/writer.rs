//! The writer task: the only owner of the socket's sink. It takes
//! everything queued at once, feeds it all and flushes once, so a burst is
//! one write. Every write has a deadline: a client whose socket takes
//! nothing for `--write-timeout` is evicted as a slow consumer.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::connection::Ws;
use super::Error;
use crate::close::{Closing, DisconnectReason};
use crate::hub::{Outbound, Shared};
use crate::metrics;

pub type Sink = SplitSink<Ws, Message>;

/// Writes until the queued close marker is written; then hands the sink
/// back so the connection can end the TCP stream cleanly. `None` when the
/// socket failed or timed out: there is nothing clean left to do.
pub async fn run(
    mut sink: Sink,
    shared: Arc<Shared>,
    ping_interval: Duration,
    write_timeout: Duration,
) -> Option<Sink> {
    let ended = write_loop(&mut sink, &shared, ping_interval, write_timeout).await;
    shared.close_queue();
    match ended {
        Ok(()) => return Some(sink),
        Err(Error::WriteTimeout) => {
            tracing::debug!(?write_timeout, "write timed out; evicting");
            if let Some(discarded) = shared.evict() {
                metrics::handles().dropped(metrics::DropReason::SlowConsumer, discarded as u64);
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "write failed");
            shared.set_closing(Closing::silent(DisconnectReason::ReadError));
            shared.token.cancel();
        }
    }
    None
}

/// Writes batches and pings until the queued close marker is written.
async fn write_loop(
    sink: &mut Sink,
    shared: &Shared,
    ping_interval: Duration,
    write_timeout: Duration,
) -> Result<(), Error> {
    let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            batch = shared.take() => batch,
            _ = ping.tick() => {
                let send = Box::pin(timeout(write_timeout, sink.send(Message::Ping(Bytes::new()))));
                send.await.map_err(|_| Error::WriteTimeout)??;
                continue;
            }
        };
        // Boxed per batch (not per frame), deadline included: an idle
        // connection's task then holds none of the write's state.
        let write = Box::pin(timeout(write_timeout, write_batch(sink, batch, shared)));
        if let Written::Closed = write.await.map_err(|_| Error::WriteTimeout)?? {
            return Ok(());
        }
    }
}

enum Written {
    More,
    Closed,
}

async fn write_batch(sink: &mut Sink, batch: VecDeque<Outbound>, shared: &Shared) -> Result<Written, Error> {
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

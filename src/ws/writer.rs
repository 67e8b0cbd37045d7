//! The writer task: the only owner of the socket's sink. It takes
//! everything queued at once, feeds it all and flushes once, so a burst is
//! one write. Every write has a deadline without a timer of its own: the
//! writer marks when a write starts and ends, and the hub's once-a-second
//! sampler evicts a client whose write has not ended within
//! `--write-timeout` (see `Hub::sample_queues`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::wire::{self, LARGE_FRAME};
use super::Error;
use super::Ws;
use crate::close::{Closing, DisconnectReason};
use crate::hub::{Outbound, Shared};
use crate::metrics;

pub type Sink = SplitSink<Ws, Message>;

/// Writes until the queued close marker is written; then hands the sink
/// back so the connection can end the TCP stream cleanly. `None` when the
/// socket failed: there is nothing clean left to do.
///
/// A function returning an `async move` block rather than an `async fn`,
/// which would keep a second copy of its arguments in the state every
/// connection holds for its whole life.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn run(mut sink: Sink, shared: Arc<Shared>, ping_interval: Duration) -> impl Future<Output = Option<Sink>> + Send {
    async move {
        let ended = write_loop(&mut sink, &shared, ping_interval).await;
        shared.writing(false);
        shared.close_queue();
        match ended {
            Ok(()) => Some(sink),
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                shared.set_closing(Closing::silent(DisconnectReason::WriteError));
                shared.token.cancel();
                None
            }
        }
    }
}

/// Writes batches and pings until the queued close marker is written.
async fn write_loop(sink: &mut Sink, shared: &Shared, ping_interval: Duration) -> Result<(), Error> {
    let mut ping = interval_at(Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut welcomed = false;
    loop {
        let batch = tokio::select! {
            batch = shared.take() => batch,
            _ = ping.tick() => {
                shared.writing(true);
                Box::pin(sink.send(Message::Ping(Bytes::new()))).await?;
                shared.writing(false);
                continue;
            }
        };
        // Boxed per batch (not per frame): an idle connection's task then
        // holds none of the write's state.
        shared.writing(true);
        let written = Box::pin(write_batch(sink, batch, shared, &mut welcomed)).await?;
        shared.writing(false);
        if let Written::Closed = written {
            return Ok(());
        }
    }
}

enum Written {
    More,
    Closed,
}

/// Feeds a batch to tungstenite and flushes it. Large frames, and the first
/// frame of all (the welcome), go through the side door instead
/// (`ws::wire`): tungstenite's buffer keeps the size of the largest frame
/// it ever wrote for the life of the connection, and the welcome is the
/// largest a client that never subscribes gets. Through the door, such a
/// client holds no write buffer at all (0.12 kB less per idle connection,
/// measured: docs/performance.md).
async fn write_batch(
    sink: &mut Sink,
    batch: VecDeque<Outbound>,
    shared: &Shared,
    welcomed: &mut bool,
) -> Result<Written, Error> {
    let (mut frames, mut bytes) = (0, 0);
    let mut result = Written::More;
    for item in batch {
        match item {
            Outbound::Text(text) => {
                frames += 1;
                bytes += text.len();
                if text.len() > LARGE_FRAME || !*welcomed {
                    // Everything before it leaves tungstenite's buffer (and
                    // any large frame before it, the door) first.
                    sink.flush().await?;
                    wire::hand_over(shared, text.into());
                    *welcomed = true;
                } else {
                    sink.feed(Message::Text(text)).await?;
                }
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
    shared.traffic.sent(frames as u64, bytes as u64);
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

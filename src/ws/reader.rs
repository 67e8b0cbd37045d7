//! The reader task's loop: frames from the socket become hub commands.
//! Replies the reader owes (pong, errors) go through the client's own
//! queue, so the writer stays the only one writing to the socket.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::connection::Ws;
use super::Context;
use crate::close::{code, Closing, DisconnectReason};
use std::future::Future;
use std::pin::Pin;

use crate::hub::{Command, HubError, Publish, PushError, Shared};
use crate::metrics::{self, DropReason, Source};
use crate::protocol::{self, ErrorCode, Frame, Request, RequestError};
use tokio::sync::mpsc::error::TrySendError;

/// Reads until the client leaves, breaks a rule, goes silent, or the
/// connection is stopped; the reason is recorded in `shared`.
pub async fn run(stream: &mut SplitStream<Ws>, ctx: &Context, shared: &Shared) {
    let handles = metrics::handles();
    let from = shared.id.to_string();
    let mut last_seen = Instant::now();
    let idle = tokio::time::sleep(ctx.idle_timeout);
    tokio::pin!(idle);
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.token.cancelled() => return,
            _ = &mut idle => {
                // The timer is reset lazily: only when it fires is the last
                // activity checked, so frames do not each touch the timer.
                let deadline = last_seen + ctx.idle_timeout;
                if Instant::now() < deadline {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                return shared.abort(Closing::with_frame(DisconnectReason::PingTimeout, code::NORMAL, "ping timeout"));
            }
            next = stream.next() => next,
        };
        last_seen = Instant::now();
        let message = match next {
            None => return close_quietly(shared, DisconnectReason::ClientClose),
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(_))) => {
                return shared.abort(Closing::with_frame(
                    DisconnectReason::TooLarge,
                    code::TOO_LARGE,
                    "message too large",
                ));
            }
            Some(Err(WsError::ConnectionClosed)) => return close_quietly(shared, DisconnectReason::ClientClose),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "read failed");
                return close_quietly(shared, DisconnectReason::ReadError);
            }
        };
        match message {
            Message::Text(text) => {
                handles.messages_received.increment(1);
                handles.bytes_received.increment(text.len() as u64);
                shared.messages_received.fetch_add(1, Relaxed);
                match handle_request(text.as_str(), ctx, shared, &from) {
                    Ok(None) => {}
                    // The hub's channel is full: wait for room (rare, boxed).
                    Ok(Some(wait)) => {
                        if wait.await.is_err() {
                            return;
                        }
                    }
                    Err(()) => return,
                }
            }
            Message::Binary(_) => {
                return shared.abort(Closing::with_frame(
                    DisconnectReason::ProtocolError,
                    code::UNSUPPORTED_DATA,
                    "binary frames are not supported",
                ));
            }
            // tungstenite queues the close reply; reading on flushes it and then ends.
            Message::Close(_) => {
                shared.set_closing(Closing::silent(DisconnectReason::ClientClose));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

fn close_quietly(shared: &Shared, reason: DisconnectReason) {
    shared.set_closing(Closing::silent(reason));
}

/// The rare wait for room in the hub's channel.
type Wait<'a> = Pin<Box<dyn Future<Output = Result<(), HubError>> + Send + 'a>>;

/// Handles one request without waiting; `Err` means the connection must
/// stop, `Some` that the command waits for room in the hub's channel.
/// Not async, so the reader's state (kept for the life of the connection)
/// holds none of it.
fn handle_request<'a>(text: &str, ctx: &'a Context, shared: &Shared, from: &str) -> Result<Option<Wait<'a>>, ()> {
    let command = match protocol::parse(text) {
        Err(e) => return reply_error(shared, &e).map(|()| None),
        Ok(Request::Ping { id }) => return reply(shared, protocol::pong(id.as_ref())).map(|()| None),
        Ok(Request::Subscribe { topic, id }) => Command::Subscribe {
            id: shared.id,
            topic,
            request: id,
        },
        Ok(Request::Unsubscribe { topic, id }) => Command::Unsubscribe {
            id: shared.id,
            topic,
            request: id,
        },
        Ok(Request::Publish { id, .. }) if !ctx.limits.client_publish => {
            let e = RequestError {
                code: ErrorCode::PublishDisabled,
                message: "publishing is disabled on this server".into(),
                id,
            };
            return reply_error(shared, &e).map(|()| None);
        }
        Ok(Request::Publish { topic, data, id }) => Command::Publish(Publish {
            frame: protocol::message(topic.as_ref(), from, data),
            topic,
            source: Source::Client,
            from: Some(shared.id),
            request: id,
            exclude: HashSet::new(),
            respond: None,
        }),
    };
    match ctx.hub.try_send(command) {
        Ok(()) => Ok(None),
        Err(TrySendError::Closed(_)) => Err(()),
        Err(TrySendError::Full(command)) => Ok(Some(Box::pin(ctx.hub.send(command)))),
    }
}

fn reply_error(shared: &Shared, e: &RequestError) -> Result<(), ()> {
    metrics::client_error(e.code.as_str());
    reply(shared, protocol::error(e))
}

/// Queues a reply to this client. A client whose queue cannot take its own
/// reply is too slow and is evicted like any other.
fn reply(shared: &Shared, frame: Frame) -> Result<(), ()> {
    match shared.try_push(frame) {
        Ok(_) => Ok(()),
        Err(PushError::Closed) => Err(()),
        Err(PushError::Full) => {
            metrics::handles().dropped(DropReason::SlowConsumer, 1);
            shared.abort(Closing::slow_consumer());
            Err(())
        }
    }
}

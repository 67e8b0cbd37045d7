//! The reader task's loop: frames from the socket become hub commands.
//! Replies the reader owes (pong, errors) go through the client's own
//! queue, so the writer stays the only one writing to the socket.
//!
//! The loop ends the moment the connection starts closing, whoever closed
//! it: a closing client's requests are never read, so they have no effect.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::policy::{ControlRate, Rate, Verdict};
use super::Ws;
use super::{Context, Error};
use crate::close::{code, Closing, DisconnectReason};
use crate::hub::{Command, HubError, Publish, PushError, Shared};
use crate::metrics::{self, DropReason};
use crate::protocol::{self, ErrorCode, Frame, Request, RequestError};
use crate::types::Source;

/// Reads until the client leaves, breaks a rule, goes silent, or the
/// connection starts closing; on return the cause is recorded in `shared`.
///
/// A function returning an `async move` block rather than an `async fn`,
/// which would keep a second copy of its arguments in the state every
/// connection holds for its whole life.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn run<'a>(
    stream: &'a mut SplitStream<Ws>,
    ctx: &'a Context,
    shared: &'a Shared,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        let handles = metrics::handles();
        // The token's expiry has a timer, boxed: a client without one pays
        // a word. Silence (`--idle-timeout`) is the hub's sampler's to find.
        let mut expiry = shared
            .identity
            .as_ref()
            .filter(|_| ctx.close_on_expiry)
            .and_then(|identity| {
                let left = identity
                    .expires()?
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                // Past what the monotonic clock holds: never, in practice.
                Instant::now().checked_add(left)
            })
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        // Boxed: a client pays one word for it unless --client-rate is set.
        let mut rate = ctx
            .rate
            .map(|quota| Box::new(Rate::new(quota, ctx.limits.client_rate_grace)));
        // Whether a refusal by policy (`forbidden`, `publish_disabled`) was
        // logged: once per client, not per request.
        let mut refusal_logged = false;
        let mut control = ControlRate::new(Instant::now());
        loop {
            let next = tokio::select! {
                biased;
                _ = shared.token.cancelled() => break,
                _ = expired(expiry.as_mut()) => {
                    tracing::debug!(user = shared.user(), "token expired");
                    shared.close(Closing::token_expired());
                    break;
                }
                next = stream.next() => next,
            };
            if shared.is_closing() {
                // Closed while this frame arrived: it has no effect.
                break;
            }
            shared.seen();
            let message = match next {
                None => {
                    shared.set_closing(Closing::silent(DisconnectReason::ClientClose));
                    break;
                }
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    fail(shared, &e);
                    break;
                }
            };
            match message {
                Message::Text(text) => {
                    handles.messages_received.increment(1);
                    handles.bytes_received.increment(text.len() as u64);
                    shared.traffic.received(text.len() as u64);
                    let waited =
                        match handle_request(text.as_str(), ctx, shared, rate.as_deref_mut(), &mut refusal_logged) {
                            Ok(None) => Ok(()),
                            // The hub is full: wait for room (rare, boxed). The
                            // socket is not read meanwhile: TCP pushes back. A
                            // close ends the wait: the request then has no effect.
                            Ok(Some(wait)) => tokio::select! {
                                biased;
                                _ = shared.token.cancelled() => Err(Error::Closing),
                                sent = wait => sent.map_err(|_| Error::HubGone),
                            },
                            Err(e) => Err(e),
                        };
                    if let Err(e) = waited {
                        tracing::debug!(error = %e, "reader stops");
                        break;
                    }
                }
                Message::Binary(_) => {
                    shared.close(Closing::with_frame(
                        DisconnectReason::ProtocolError,
                        code::UNSUPPORTED_DATA,
                        "binary frames are not supported",
                    ));
                    break;
                }
                Message::Close(frame) => {
                    // tungstenite queued the close reply (1002 for an invalid
                    // code); reading on flushes it and sees the client hang up.
                    let reason = match frame {
                        Some(f) if f.code == CloseCode::Protocol => DisconnectReason::ProtocolError,
                        _ => DisconnectReason::ClientClose,
                    };
                    shared.set_closing(Closing::silent(reason));
                    let rest = async { while let Some(Ok(_)) = stream.next().await {} };
                    let _ = Box::pin(tokio::time::timeout(ctx.close_timeout, rest)).await;
                    break;
                }
                Message::Ping(_) | Message::Pong(_) => {
                    if !control.take(Instant::now(), ctx.limits.client_control_rate) {
                        tracing::info!(client_id = %shared.id, user = shared.user(), "client sent control frames past --client-control-rate; closing (4029)");
                        shared.close(Closing::control_flood());
                        break;
                    }
                }
                Message::Frame(_) => {}
            }
        }
        // A forced stop records no cause of its own: it is the shutdown's.
        shared.set_closing(Closing::shutdown());
    }
}

/// Ends when the token's expiry timer fires; never without one.
async fn expired(timer: Option<&mut Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

/// Fails the connection as RFC 6455 §7.1.7 asks: a close frame whose code
/// says what was wrong (1002 protocol, 1007 invalid UTF-8, 1009 too large).
/// A socket that ended or failed gets nothing: there is no one to tell.
fn fail(shared: &Shared, e: &WsError) {
    let closing = match e {
        WsError::Capacity(_) => Closing::with_frame(DisconnectReason::TooLarge, code::TOO_LARGE, "message too large"),
        WsError::Utf8(_) => Closing::with_frame(DisconnectReason::ProtocolError, code::INVALID_DATA, "invalid UTF-8"),
        // The client hung up without a close frame.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Closing::silent(DisconnectReason::ReadError),
        WsError::Protocol(p) => {
            let mut reason = format!("protocol error: {p}");
            reason.truncate(crate::close::MAX_REASON_BYTES);
            Closing::with_frame(DisconnectReason::ProtocolError, code::PROTOCOL_ERROR, reason)
        }
        WsError::ConnectionClosed | WsError::AlreadyClosed => Closing::silent(DisconnectReason::ClientClose),
        other => {
            tracing::debug!(error = %other, "read failed");
            Closing::silent(DisconnectReason::ReadError)
        }
    };
    if closing.frame.is_some() {
        shared.close(closing);
    } else {
        shared.set_closing(closing);
    }
}

/// The rare wait for room in the hub's channel.
type Wait<'a> = Pin<Box<dyn Future<Output = Result<(), HubError>> + Send + 'a>>;

/// Handles one request without waiting; `Err` means the reader must stop,
/// `Some` that the command waits for room in the hub's channel. Not async,
/// so the reader's state (kept for the life of the connection) holds none of it.
fn handle_request<'a>(
    text: &str,
    ctx: &'a Context,
    shared: &Shared,
    rate: Option<&mut Rate>,
    refusal_logged: &mut bool,
) -> Result<Option<Wait<'a>>, Error> {
    let parsed = protocol::parse(text);
    // Every request counts against the rate, malformed ones too.
    match rate.map_or(Verdict::Allow, Rate::take) {
        Verdict::Allow => {}
        Verdict::Close => {
            tracing::info!(client_id = %shared.id, user = shared.user(), "client stayed over its rate limit; closing (4029)");
            shared.close(Closing::rate_limited());
            return Err(Error::Closing);
        }
        Verdict::Refuse { first } => {
            if first {
                tracing::info!(client_id = %shared.id, user = shared.user(), "client over its rate limit; requests answered rate_limited");
            }
            let id = match &parsed {
                Ok(request) => request.id().cloned(),
                Err(e) => e.id.clone(),
            };
            let e = RequestError {
                code: ErrorCode::RateLimited,
                message: "too many requests; slow down".into(),
                id,
            };
            return reply_error(shared, &e).map(|()| None);
        }
    }
    let request = match parsed {
        Err(e) => return reply_error(shared, &e).map(|()| None),
        Ok(request) => request,
    };
    if let Err(e) = crate::auth::claims::check(&request, ctx.limits.client_publish, shared.identity.as_deref()) {
        if !std::mem::replace(refusal_logged, true) {
            tracing::info!(client_id = %shared.id, user = shared.user(), code = e.code.as_str(), "client asked for what it may not do; refused (logged once per client)");
        }
        return reply_error(shared, &e).map(|()| None);
    }
    let command = match request {
        Request::Ping { id } => return reply(shared, protocol::pong(id.as_ref())).map(|()| None),
        Request::Subscribe {
            topic,
            id,
            since,
            join_leave,
        } => Command::Subscribe {
            id: shared.id,
            topic,
            request: id,
            since,
            join_leave,
        },
        Request::Presence { topic, id, stats } => Command::Presence {
            id: shared.id,
            topic,
            request: id,
            stats,
        },
        Request::Unsubscribe { topic, id } => Command::Unsubscribe {
            id: shared.id,
            topic,
            request: id,
        },
        Request::Publish { topic, data, id } => Command::Publish(Publish {
            frame: protocol::message(topic.as_ref(), &shared.id.to_string(), data),
            topic,
            source: Source::Client,
            from: Some(shared.id),
            request: id,
            exclude: HashSet::new(),
            respond: None,
            numbered: None,
            budget: None,
        }),
    };
    match ctx.hub.try_send(command) {
        Ok(()) => Ok(None),
        Err(TrySendError::Closed(_)) => Err(Error::HubGone),
        Err(TrySendError::Full(command)) => Ok(Some(Box::pin(ctx.hub.send(command)))),
    }
}

fn reply_error(shared: &Shared, e: &RequestError) -> Result<(), Error> {
    metrics::client_error(e.code.as_str());
    reply(shared, protocol::error(e))
}

/// Queues a reply to this client. A client whose queue cannot take its own
/// reply is too slow and is evicted like any other.
fn reply(shared: &Shared, frame: Frame) -> Result<(), Error> {
    match shared.try_push(frame) {
        Ok(_) => Ok(()),
        Err(PushError::Closed) => Err(Error::Closing),
        Err(PushError::Full) => {
            let discarded = shared.evict(None).unwrap_or(0) as u64;
            metrics::handles().dropped(DropReason::SlowConsumer, 1 + discarded);
            Err(Error::SlowConsumer)
        }
    }
}

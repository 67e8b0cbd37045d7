//! The HTTP side of the WebSocket port: reads one request, answers 101 on
//! `GET /ws` with a valid upgrade, serves the demo page at `/` (unless
//! `--demo false`), and a plain HTTP error otherwise.
//!
//! Done by hand (httparse) rather than by tungstenite's handshake, because
//! the port must answer 404, 426 and 503 itself instead of dropping the
//! connection.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::demo;
use super::gate::{self, Admitted, Denied, Gate};
use crate::lifecycle::Lifecycle;

/// The only path that upgrades.
pub const WS_PATH: &str = "/ws";
/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

pub use crate::close::HandshakeFailure as Refusal;

/// An upgraded request: what the gate admitted, and the bytes read past
/// the request head (frames a client sent early).
pub struct Upgraded {
    pub admitted: Admitted,
    pub leftover: Vec<u8>,
}

/// Reads and answers the request from `peer`: `Ok(None)` when it asked for
/// a page of the demo, which was served.
pub async fn accept<S>(
    stream: &mut S,
    gate: &Arc<Gate>,
    lifecycle: &Lifecycle,
    demo: bool,
    peer: SocketAddr,
) -> Result<Option<Upgraded>, Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| Refusal::Io)?;
        if n == 0 {
            return Err(Refusal::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
        match read_head(&buf, gate, lifecycle.accepting(), demo, peer) {
            None => continue,
            Some((head_len, Answer::Upgrade(key, admitted))) => {
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                );
                stream.write_all(response.as_bytes()).await.map_err(|_| Refusal::Io)?;
                stream.flush().await.map_err(|_| Refusal::Io)?;
                return Ok(Some(Upgraded {
                    admitted,
                    leftover: buf.split_off(head_len),
                }));
            }
            Some((_, Answer::Page(asset, head_only))) => {
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
                    asset.content_type,
                    asset.body.len(),
                    demo::HEADERS
                );
                let body = if head_only { "" } else { asset.body };
                let sent = async {
                    stream.write_all(response.as_bytes()).await?;
                    stream.write_all(body.as_bytes()).await?;
                    stream.shutdown().await
                };
                return sent.await.map(|()| None).map_err(|_| Refusal::Io);
            }
            Some((
                _,
                Answer::Refuse {
                    status,
                    extra,
                    body,
                    reason,
                },
            )) => {
                respond(stream, status, extra, &body).await;
                return Err(reason);
            }
        }
    }
}

/// The answer to the request head at the start of `buf`, with the head's
/// length; `None` while it is incomplete and within the size limits.
/// `accepting`: readiness when the request completed, so a drain that
/// began while it arrived is honoured.
fn read_head(buf: &[u8], gate: &Arc<Gate>, accepting: bool, demo: bool, peer: SocketAddr) -> Option<(usize, Answer)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let refuse = |status, body, reason| Answer::Refuse {
        status,
        extra: "",
        body: Cow::Borrowed(body),
        reason,
    };
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => Some((head_len, decide(&req, accepting, demo, gate, peer))),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => Some((
            buf.len(),
            refuse(
                "431 Request Header Fields Too Large",
                "request head too large: at most 8 KiB and 64 header lines\n",
                Refusal::HeadersTooLarge,
            ),
        )),
        Err(_) => Some((
            buf.len(),
            refuse("400 Bad Request", "malformed HTTP request\n", Refusal::BadRequest),
        )),
    }
}

/// The status the port answers to a complete request head in `bytes` from
/// `peer` (101 for an upgrade), or `None` for an incomplete one: the
/// parser and every check, without a socket (for the fuzz target).
pub fn status_for(bytes: &[u8], gate: &Arc<Gate>, peer: SocketAddr) -> Option<u16> {
    let (_, answer) = read_head(bytes, gate, true, true, peer)?;
    Some(match answer {
        Answer::Upgrade(..) => 101,
        Answer::Page(..) => 200,
        Answer::Refuse { status, .. } => status[..3].parse().expect("status lines start with a code"),
    })
}

enum Answer {
    Upgrade(String, Admitted),
    /// A file of the demo page; `true` for HEAD (headers only).
    Page(demo::Asset, bool),
    Refuse {
        status: &'static str,
        extra: &'static str,
        body: Cow<'static, str>,
        reason: Refusal,
    },
}

/// Decides the answer to a complete request, per RFC 6455 §4.2.1 and
/// RFC 9112: first what is not a WebSocket request at all, then what is a
/// malformed one, then whether this node takes clients now (`accepting`:
/// readiness when the request completed, so a drain that began while it
/// arrived is honoured), then the gate: origin, limits, token.
fn decide(req: &httparse::Request, accepting: bool, demo: bool, gate: &Arc<Gate>, peer: SocketAddr) -> Answer {
    // Header lines may repeat (`Connection: keep-alive` then `Connection:
    // Upgrade`): a list-valued header is all its lines joined.
    fn values<'h>(req: &'h httparse::Request, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or(""))
    }
    let single = |name| values(req, name).next();
    let has_token = |name, token: &str| {
        values(req, name).any(|value| value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let refuse = |status, extra, body: &'static str, reason| Answer::Refuse {
        status,
        extra,
        body: Cow::Borrowed(body),
        reason,
    };
    let bad = |body| refuse("400 Bad Request", "", body, Refusal::BadRequest);
    let page = if demo {
        demo::asset(path(req.path.unwrap_or("")))
    } else {
        None
    };
    if let Some(asset) = page {
        return match req.method {
            Some("GET") => Answer::Page(asset, false),
            Some("HEAD") => Answer::Page(asset, true),
            _ => refuse(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "the demo page takes GET and HEAD\n",
                Refusal::BadRequest,
            ),
        };
    }
    if path(req.path.unwrap_or("")) != WS_PATH {
        return refuse(
            "404 Not Found",
            "",
            "not found; WebSocket clients connect to /ws\n",
            Refusal::NotFound,
        );
    }
    if req.method != Some("GET") {
        return refuse(
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "use GET with a WebSocket upgrade\n",
            Refusal::BadRequest,
        );
    }
    if req.version != Some(1) {
        return bad("a WebSocket upgrade needs HTTP/1.1\n");
    }
    if single("host").is_none_or(|h| h.trim().is_empty()) {
        return bad("missing Host header\n");
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return refuse(
            "426 Upgrade Required",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            "this endpoint speaks WebSocket only\n",
            Refusal::UpgradeRequired,
        );
    }
    if single("sec-websocket-version").map(str::trim) != Some("13") {
        return refuse(
            "426 Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            "unsupported WebSocket version; use 13\n",
            Refusal::UnsupportedVersion,
        );
    }
    let key = single("sec-websocket-key").unwrap_or("").trim();
    if values(req, "sec-websocket-key").count() != 1 || !is_key(key) {
        return bad("Sec-WebSocket-Key must be one base64-encoded 16-byte value\n");
    }
    if !accepting {
        return refuse(
            "503 Service Unavailable",
            "Retry-After: 5\r\n",
            "not accepting clients (draining or shutting down)\n",
            Refusal::Unavailable,
        );
    }
    let target = req.path.unwrap_or("");
    let request = gate::Request {
        origin: single("origin"),
        // The query's token wins over the header's (browsers can only send
        // the query); an empty `?token=` is no token, so the header counts.
        token: query_param(target, "token").filter(|t| !t.is_empty()).or_else(|| {
            single("authorization").and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
        }),
        forwarded: values(req, gate.client_ip_header()).collect(),
    };
    match gate.admit(&request, peer) {
        Ok(admitted) => Answer::Upgrade(key.to_string(), admitted),
        Err(Denied::Origin) => refuse("403 Forbidden", "", "origin not allowed\n", Refusal::Origin),
        Err(Denied::Full) => refuse(
            "503 Service Unavailable",
            "Retry-After: 5\r\n",
            "too many connections on this node\n",
            Refusal::MaxConnections,
        ),
        Err(Denied::FullForAddress) => refuse(
            "429 Too Many Requests",
            "Retry-After: 5\r\n",
            "too many connections from this address\n",
            Refusal::MaxConnectionsPerIp,
        ),
        Err(Denied::Auth(e)) => Answer::Refuse {
            status: "401 Unauthorized",
            extra: "WWW-Authenticate: Bearer\r\n",
            body: Cow::Owned(format!("{e}\n")),
            reason: Refusal::Auth,
        },
    }
}

/// The value of a query parameter, as sent (tokens are URL-safe).
fn query_param<'t>(target: &'t str, name: &str) -> Option<&'t str> {
    let query = target.split_once('?')?.1.split('#').next()?;
    query
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// The path of a request target in origin form (`/ws?x`) or absolute form
/// (`http://host:port/ws`), without its query.
fn path(target: &str) -> &str {
    let target = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => target,
    };
    target.split(['?', '#']).next().unwrap_or("")
}

/// Whether `key` is base64 of exactly 16 bytes: 22 characters of the
/// alphabet, the last carrying only 2 bits (so one of `AQgw`), then `==`.
fn is_key(key: &str) -> bool {
    let b = key.as_bytes();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    b.len() == 24 && b[..21].iter().all(alphabet) && b"AQgw".contains(&b[21]) && &b[22..] == b"=="
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, extra: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_base64_of_16_bytes() {
        assert!(is_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_key("dGhlIHNhbXBsZSBub25jZR=="), "trailing bits set");
        assert!(!is_key("dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_key("not base64 at all, no!!!"));
        assert!(!is_key(""));
    }

    #[test]
    fn targets_in_origin_and_absolute_form() {
        assert_eq!(path("/ws"), "/ws");
        assert_eq!(path("/ws?token=x"), "/ws");
        assert_eq!(path("http://example.com:8080/ws"), "/ws");
        assert_eq!(path("HTTP://example.com"), "/");
        assert_eq!(path("/other"), "/other");
    }

    #[test]
    fn token_from_the_query() {
        assert_eq!(query_param("/ws?token=a.b.c", "token"), Some("a.b.c"));
        assert_eq!(query_param("/ws?x=1&token=a.b.c#frag", "token"), Some("a.b.c"));
        assert_eq!(query_param("/ws?tokens=1", "token"), None);
        assert_eq!(query_param("/ws", "token"), None);
    }
}

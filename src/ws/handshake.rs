//! The HTTP side of the WebSocket port: reads one request, answers 101 on
//! `GET /ws` with a valid upgrade, and a plain HTTP error otherwise.
//!
//! Done by hand (httparse) rather than by tungstenite's handshake, because
//! the port must answer 404, 426 and 503 itself instead of dropping the
//! connection.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::lifecycle::Lifecycle;

/// The only path that upgrades.
pub const WS_PATH: &str = "/ws";
/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// Why a request was not upgraded: the label of `wshub_handshake_failures_total`.
pub type Refusal = &'static str;

/// Reads and answers the request; on an upgrade returns the bytes read past
/// the request head (frames a client sent early).
pub async fn accept(stream: &mut TcpStream, lifecycle: &Lifecycle) -> Result<Vec<u8>, Refusal> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| "io")?;
        if n == 0 {
            return Err("io");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                // Readiness is read when the request is complete, so a drain
                // that began while it arrived is honoured.
                let answer = decide(&req, lifecycle.is_ready());
                return match answer {
                    Answer::Upgrade(key) => {
                        let response = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                            derive_accept_key(key.as_bytes())
                        );
                        stream.write_all(response.as_bytes()).await.map_err(|_| "io")?;
                        Ok(buf.split_off(head_len))
                    }
                    Answer::Refuse {
                        status,
                        extra,
                        body,
                        reason,
                    } => {
                        respond(stream, status, extra, body).await;
                        Err(reason)
                    }
                };
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                respond(
                    stream,
                    "431 Request Header Fields Too Large",
                    "",
                    "request head too large\n",
                )
                .await;
                return Err("bad_request");
            }
            Err(_) => {
                respond(stream, "400 Bad Request", "", "malformed HTTP request\n").await;
                return Err("bad_request");
            }
        }
    }
}

enum Answer {
    Upgrade(String),
    Refuse {
        status: &'static str,
        extra: &'static str,
        body: &'static str,
        reason: Refusal,
    },
}

fn decide(req: &httparse::Request, accepting: bool) -> Answer {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .unwrap_or("")
    };
    let has_token = |value: &str, token: &str| value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token));
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    let refuse = |status, extra, body, reason| Answer::Refuse {
        status,
        extra,
        body,
        reason,
    };
    if path != WS_PATH {
        return refuse(
            "404 Not Found",
            "",
            "not found; WebSocket clients connect to /ws\n",
            "not_found",
        );
    }
    if req.method != Some("GET") {
        return refuse(
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "use GET with a WebSocket upgrade\n",
            "bad_request",
        );
    }
    if !has_token(header("upgrade"), "websocket") || !has_token(header("connection"), "upgrade") {
        return refuse(
            "426 Upgrade Required",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            "this endpoint speaks WebSocket only\n",
            "upgrade_required",
        );
    }
    if header("sec-websocket-version") != "13" {
        return refuse(
            "426 Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            "unsupported WebSocket version; use 13\n",
            "bad_request",
        );
    }
    let key = header("sec-websocket-key");
    if key.is_empty() {
        return refuse("400 Bad Request", "", "missing Sec-WebSocket-Key\n", "bad_request");
    }
    if !accepting {
        return refuse(
            "503 Service Unavailable",
            "Retry-After: 5\r\n",
            "not accepting clients (draining or shutting down)\n",
            "unavailable",
        );
    }
    Answer::Upgrade(key.to_string())
}

async fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

//! Load-generator clients: connecting from many source addresses, stamping
//! messages, and receivers that record latency.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<TcpStream>;

/// Which server speaks on the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// wshub: publish requests, messages wrapped in `{"type":"message",...}`.
    Wshub,
    /// The seed design: every text frame is relayed raw to everyone.
    GoHub,
}

/// Nanoseconds since the generator started: the clock every stamp uses.
pub fn now_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The text a publisher sends for message `seq`, padded to about `size` bytes.
pub fn payload(target: Target, seq: u64, size: usize, topic: Option<&str>) -> String {
    let data = format!(r#"{{"s":{seq},"t":{},"p":""}}"#, now_nanos());
    let pad = "x".repeat(size.saturating_sub(data.len() + 40));
    let data = data.replace(r#""p":"""#, &format!(r#""p":"{pad}""#));
    match (target, topic) {
        (Target::GoHub, _) => data,
        (Target::Wshub, Some(topic)) => format!(r#"{{"type":"publish","topic":"{topic}","data":{data}}}"#),
        (Target::Wshub, None) => format!(r#"{{"type":"publish","data":{data}}}"#),
    }
}

/// Reads the number after `key` in `text`.
fn field(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

/// Opens `n` connections to `url`, spread over `sources` loopback source
/// addresses, at most `parallel` handshakes at a time.
pub async fn connect_many(
    addr: SocketAddr,
    path: &str,
    n: usize,
    sources: u8,
    parallel: usize,
    jwt_secret: Option<&str>,
) -> Vec<Ws> {
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let gate = gate.clone();
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i % sources as usize) as u8);
        let path = with_token(path, jwt_secret, i);
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            connect(addr, &path, source)
                .await
                .map_err(|e| eprintln!("connect failed: {e}"))
                .ok()
        }));
    }
    let mut out = Vec::with_capacity(n);
    for handle in handles {
        if let Ok(Some(ws)) = handle.await {
            out.push(ws);
        }
    }
    out
}

/// `path` with a `token` query parameter for client `i` when a secret is given.
pub fn with_token(path: &str, jwt_secret: Option<&str>, i: usize) -> String {
    let Some(secret) = jwt_secret else {
        return path.to_string();
    };
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 24 * 3600;
    let claims = serde_json::json!({"sub": format!("bench-{i}"), "exp": exp, "topics": ["bench.*", "t"]});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("an HS256 key");
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("a token");
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}token={token}")
}

pub async fn connect(addr: SocketAddr, path: &str, source: Ipv4Addr) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind((source, 0).into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// What one receiver saw.
pub struct Received {
    pub latency_us: Histogram<u64>,
    pub count: u64,
    /// Close code, if the server sent a close frame.
    pub closed_with: Option<u16>,
    /// The connection ended (close frame, EOF or error) before `stop`.
    pub ended: bool,
}

/// Reads stamped messages until `stop` or the end of the stream.
pub async fn receive(mut stream: SplitStream<Ws>, progress: Arc<AtomicU64>, stop: CancellationToken) -> Received {
    let mut latency_us = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
    let (mut count, mut closed_with, mut ended) = (0, None, false);
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            m = stream.next() => m,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                if let (Some(_seq), Some(sent)) = (field(&text, r#""s":"#), field(&text, r#""t":"#)) {
                    let us = now_nanos().saturating_sub(sent) / 1000;
                    let _ = latency_us.record(us.max(1));
                    count += 1;
                    progress.fetch_add(1, Relaxed);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                closed_with = Some(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                ended = true;
                break;
            }
        }
    }
    Received {
        latency_us,
        count,
        closed_with,
        ended,
    }
}

/// Waits until `progress` reaches `expected`, or nothing arrived for `idle`.
/// Returns when the last message arrived.
pub async fn await_count(progress: &AtomicU64, expected: u64, idle: Duration, label: &str) -> Instant {
    let (mut last, mut last_at) = (0, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut report = Instant::now();
    loop {
        tick.tick().await;
        let now = progress.load(Relaxed);
        if now != last {
            (last, last_at) = (now, Instant::now());
        }
        if report.elapsed() >= Duration::from_secs(1) {
            eprintln!("  {label}: {now}/{expected} received");
            report = Instant::now();
        }
        if now >= expected || last_at.elapsed() >= idle {
            return last_at;
        }
    }
}

/// The server's resident memory in KiB, from /proc.
pub fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

//! A wshub client on tokio-tungstenite: subscribes to topics, prints what
//! arrives, and reconnects with exponential backoff and full jitter when
//! the close code says to (docs/clients.md#reconnecting). On topics with
//! history it keeps the last offset and epoch and, on every reconnect, asks
//! for what it missed (docs/history.md).
//!
//! ```text
//! cargo run --example client -- ws://127.0.0.1:8080/ws news sport
//! ```
//! Prints one line per message: `<topic or *> <from> <data>`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The first pause after a failure, and the longest.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(30);
/// How long connecting (TCP and the upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do after a connection ended.
#[derive(Debug, PartialEq)]
enum Next {
    /// Reconnect after the backoff pause.
    Reconnect,
    /// Reconnect, but not before this long (and the backoff).
    ReconnectAfter(Duration),
    /// Do not reconnect: retrying would fail the same way.
    Stop(String),
}

/// The reconnect rules of docs/clients.md, by close code. `None`: the
/// connection dropped without a close frame (the browser's 1006).
fn next(code: Option<u16>, reason: &str) -> Next {
    match code {
        None | Some(1000 | 1001 | 1011 | 1012 | 4008 | 4010) => Next::Reconnect,
        Some(4029) => Next::ReconnectAfter(Duration::from_secs(10)),
        Some(4002) => Next::Reconnect,
        Some(1008) => Next::Stop(format!("the server refused our token ({reason}): get a fresh one")),
        Some(code @ (1002 | 1003 | 1007 | 1009)) => Next::Stop(format!("{code} {reason}: a bug on our side")),
        Some(code @ 4000..=4999) => Next::Stop(format!("kicked by the operator: {code} {reason}")),
        Some(code) => Next::Stop(format!("closed with {code} {reason}")),
    }
}

/// A pause in [0, min(cap, base * 2^attempt)): "full jitter", so clients
/// dropped together do not come back together.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.min(16)).min(BACKOFF_CAP);
    ceiling.mul_f64(random_fraction())
}

/// A number in [0, 1) from the clock and a hasher's random keys: plenty
/// for jitter, and no dependency.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let topics: Vec<String> = args.collect();
    let mut attempt = 0;
    // Per topic with history: the last offset handled and its epoch.
    let mut positions: Positions = HashMap::new();
    loop {
        let started = Instant::now();
        let (code, reason) = match session(&url, &topics, &mut positions).await {
            Ok(closed) => closed,
            Err(e) => {
                eprintln!("connection failed: {e}");
                (None, String::new())
            }
        };
        if started.elapsed() >= HEALTHY {
            attempt = 0;
        }
        let pause = match next(code, &reason) {
            Next::Reconnect => backoff(attempt),
            Next::ReconnectAfter(at_least) => at_least + backoff(attempt),
            Next::Stop(why) => {
                eprintln!("not reconnecting: {why}");
                std::process::exit(1);
            }
        };
        attempt += 1;
        eprintln!("closed ({code:?} {reason:?}); reconnecting in {pause:.1?}");
        tokio::time::sleep(pause).await;
    }
}

/// Topic → (last offset handled, epoch), for topics with history.
type Positions = HashMap<String, (u64, String)>;

/// One connection: subscribe, print, until it closes. Returns the close
/// code and reason (`None` without a close frame).
async fn session(url: &str, topics: &[String], positions: &mut Positions) -> Result<(Option<u16>, String), String> {
    let connecting = tokio_tungstenite::connect_async(url);
    let (mut ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("no answer from {url} within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    // Subscriptions belong to a connection: every reconnect renews them,
    // asking for what was missed where we know where we stopped.
    for (id, topic) in topics.iter().enumerate() {
        let mut subscribe = json!({"type": "subscribe", "topic": topic, "id": id});
        if let Some((offset, epoch)) = positions.get(topic) {
            subscribe["since"] = json!({"offset": offset, "epoch": epoch});
        }
        ws.send(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    while let Some(message) = ws.next().await {
        match message.map_err(|e| e.to_string())? {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
                match frame["type"].as_str() {
                    Some("welcome") => eprintln!("connected as {} on {}", frame["client_id"], frame["node"]),
                    Some("message") => {
                        let topic = frame["topic"].as_str().unwrap_or("*");
                        println!("{topic} {} {}", frame["from"].as_str().unwrap_or("?"), frame["data"]);
                        if let (Some(offset), Some(position)) = (frame["offset"].as_u64(), positions.get_mut(topic)) {
                            position.0 = offset;
                        }
                    }
                    // A subscribe's ack: on a topic with history, where it
                    // stands, and whether what we missed follows.
                    Some("ack") if frame["epoch"].is_string() => {
                        let Some(topic) = frame["id"].as_u64().and_then(|i| topics.get(i as usize)) else {
                            continue;
                        };
                        let latest = frame["offset"].as_u64().unwrap_or(0);
                        let epoch = frame["epoch"].as_str().unwrap_or_default().to_string();
                        let since = positions.get(topic).map(|(offset, _)| *offset);
                        match (frame["recovered"].as_bool(), since) {
                            (Some(true), Some(since)) => {
                                eprintln!("{topic}: recovered {} missed message(s)", latest - since);
                                positions.insert(topic.clone(), (since, epoch));
                            }
                            (Some(false), _) => {
                                eprintln!("{topic}: missed messages could not be recovered; starting afresh");
                                positions.insert(topic.clone(), (latest, epoch));
                            }
                            _ => {
                                positions.insert(topic.clone(), (latest, epoch));
                            }
                        }
                    }
                    Some("error") => eprintln!("error {}: {}", frame["code"], frame["message"]),
                    _ => {}
                }
            }
            Message::Close(Some(close)) => return Ok((Some(u16::from(close.code)), close.reason.to_string())),
            Message::Close(None) => return Ok((Some(u16::from(CloseCode::Status)), String::new())),
            // Pings are answered by tungstenite; binary frames are not part of the protocol.
            _ => {}
        }
    }
    Ok((None, String::new()))
}

//! The Redis engine: Redis pub/sub carries messages, a sorted set holds
//! node presence. Two connections, each owned by one task that reconnects
//! on its own with backoff:
//!
//! - the sender: one multiplexed connection; it takes the outbound queue in
//!   batches, several in flight, in the order they were queued (so one
//!   publisher's messages stay in order), each with a deadline on Redis's
//!   clock (`sender.rs`). Control messages (requests, answers, heartbeats)
//!   have their own queue, sent before any publish.
//! - the subscriber: one pub/sub connection, subscribed to exactly the
//!   channels the node listens to; after a reconnect (or when the canary
//!   asks) it subscribes to all of them again (`subscriber.rs`).
//!
//! Topics with history (`--history-*`) keep a stream each: a publish to one
//! is numbered, kept and sent by one Lua script (`sender.rs`), and a read of
//! what followed an offset is another (`store.rs`, beside the presence
//! rosters each node's heartbeat writes per topic).
//!
//! Names: `wshub:topic:{<topic>}`, `wshub:all`, `wshub:node:{<node>}`; the
//! keys `wshub:nodes`, and per topic with history `wshub:history:{<topic>}`
//! (the stream; entry ids `0-<offset>`) and `wshub:meta:{<topic>}` (its
//! epoch and latest offset; it outlives the stream by a day, so a history
//! that expired is told apart from one never begun). The braces are Redis
//! Cluster hash tags, so a topic's channel and keys map to one slot and
//! sharded pub/sub (SSUBSCRIBE / SPUBLISH) can carry them later without
//! renaming.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::{Channel, Engine, EngineError, Inbound, Numbered, Presence, StreamEntry, StreamLimits, StreamRead};
use crate::metrics::{self, BackplaneError, Dropped};
use crate::types::{NodeId, Topic};

mod sender;
mod store;
mod subscriber;

/// Connecting, and any one command, may take this long.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff: from the first to the last, doubling, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Control messages waiting to be sent, at most (past it dropped, counted).
const CONTROL_QUEUE: usize = 1024;
/// Messages sent as one batch, at most.
const BATCH: usize = 512;
/// Channels named in one SUBSCRIBE, at most (a resubscribe of many topics).
const SUBSCRIBE_BATCH: usize = 1000;
/// The presence key: node → when it last refreshed (Redis's clock, ms).
const NODES_KEY: &str = "wshub:nodes";

/// Refreshes a node (unless ARGV[1] is empty), prunes nodes older than the
/// TTL and answers [now, node, seen, node, seen, ...], all on Redis's clock,
/// so nodes' clocks need not agree.
const PRESENCE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
table.insert(live, 1, tostring(now))
return live
";

/// What the sender takes from its queues.
#[derive(Debug)]
pub(super) enum Out {
    Plain(Channel, Bytes),
    Numbered(Numbered),
}

fn name(channel: &Channel) -> String {
    match channel {
        Channel::Topic(topic) => format!("wshub:topic:{{{topic}}}"),
        Channel::Everyone => "wshub:all".to_string(),
        Channel::Node(node) => format!("wshub:node:{{{node}}}"),
    }
}

fn parse_name(name: &str) -> Option<Channel> {
    if name == "wshub:all" {
        return Some(Channel::Everyone);
    }
    let tag = |prefix: &str| name.strip_prefix(prefix)?.strip_prefix('{')?.strip_suffix('}');
    if let Some(topic) = tag("wshub:topic:") {
        return Topic::parse(topic).ok().map(Channel::Topic);
    }
    tag("wshub:node:").and_then(|node| NodeId::parse(node).ok().map(Channel::Node))
}

/// The Redis engine; see the module docs.
pub struct Redis {
    client: redis::Client,
    /// Publishes waiting for the sender task.
    outbox: mpsc::Sender<Out>,
    /// Control messages (requests, answers, the canary's heartbeat) waiting
    /// for the sender task, which takes them before any publish: a node
    /// busy publishing neither delays its canary (a false stall) nor its
    /// answers to other nodes.
    control: mpsc::Sender<Out>,
    /// What topics with history keep (`None`: history is off).
    limits: Option<StreamLimits>,
    /// The connection for presence and the farewell; it reconnects by
    /// itself after a failure.
    conn: ConnectionManager,
    /// The channels the node listens to, by Redis name.
    wanted: Mutex<HashSet<String>>,
    /// `wanted` changed: the subscriber reconciles.
    changed: Notify,
    /// The canary found the subscription silent: the subscriber reconnects.
    reset: Notify,
    sender_up: AtomicBool,
    /// The current subscription's number, 0 while there is none.
    subscription: AtomicU64,
}

impl Redis {
    /// Checks the URL (a bad one is a configuration error, before serving).
    pub fn check(url: &str) -> Result<(), EngineError> {
        redis::Client::open(url).map(|_| ()).map_err(EngineError::Url)
    }

    /// Whether another process runs as `node` now: its presence is there
    /// and is refreshed within `heartbeat` (a stale entry left by a process
    /// that died is not). `Ok(false)` when Redis cannot be asked in time: a
    /// node may start without Redis.
    pub async fn node_is_live(url: &str, node: &NodeId, heartbeat: Duration) -> Result<bool, EngineError> {
        let client = redis::Client::open(url).map_err(EngineError::Url)?;
        let score = |client: redis::Client| {
            let node = node.clone();
            async move {
                let read = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    redis::cmd("ZSCORE")
                        .arg(NODES_KEY)
                        .arg(node.as_str())
                        .query_async::<Option<f64>>(&mut conn)
                        .await
                };
                tokio::time::timeout(IO_TIMEOUT, read)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten()
            }
        };
        let Some(first) = score(client.clone()).await else {
            return Ok(false);
        };
        // Refreshed at least once a heartbeat by a live process.
        tokio::time::sleep(heartbeat + heartbeat / 2).await;
        Ok(score(client).await.is_some_and(|second| second > first))
    }

    /// Starts the engine's tasks. It connects in the background: a Redis
    /// that is not there yet delays nothing. Received messages go to
    /// `inbound`; when it is full they are dropped and counted.
    pub fn start(
        url: &str,
        queue_len: usize,
        limits: Option<StreamLimits>,
        inbound: mpsc::Sender<Inbound>,
        stop: CancellationToken,
        supervisor: &crate::shutdown::Supervisor,
    ) -> Result<Arc<Redis>, EngineError> {
        let client = redis::Client::open(url).map_err(EngineError::Url)?;
        let (outbox, queued) = mpsc::channel(queue_len);
        let (control, control_queued) = mpsc::channel(CONTROL_QUEUE);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(BACKOFF_FIRST)
            .set_max_delay(BACKOFF_MAX);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(EngineError::Url)?;
        let redis = Arc::new(Redis {
            client,
            outbox,
            control,
            limits,
            conn,
            wanted: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            reset: Notify::new(),
            sender_up: AtomicBool::new(false),
            subscription: AtomicU64::new(0),
        });
        let sender = redis.clone().send_loop(control_queued, queued, stop.clone());
        supervisor.spawn("backplane sender", &stop, sender);
        supervisor.spawn(
            "backplane subscriber",
            &stop,
            redis.clone().subscribe_loop(inbound, stop.clone()),
        );
        Ok(redis)
    }
}

/// Exponential backoff with jitter, from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`].
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = BACKOFF_FIRST.saturating_mul(1 << self.attempts.min(6)).min(BACKOFF_MAX);
        self.attempts += 1;
        // Jitter of up to half the wait, so nodes that lost Redis together
        // do not all come back in the same instant.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }
}

impl Engine for Redis {
    fn publish(&self, channel: Channel, payload: Bytes) -> bool {
        if !self.sender_up.load(Ordering::Relaxed) {
            return false;
        }
        let queue = match channel {
            Channel::Node(_) => &self.control,
            _ => &self.outbox,
        };
        queue.try_send(Out::Plain(channel, payload)).is_ok()
    }

    fn publish_numbered(&self, message: Numbered) -> bool {
        self.limits.is_some()
            && self.sender_up.load(Ordering::Relaxed)
            && self.outbox.try_send(Out::Numbered(message)).is_ok()
    }

    fn read_stream(
        &self,
        topic: &Topic,
        after: u64,
        limit: usize,
        whole: bool,
    ) -> BoxFuture<'_, Result<StreamRead, EngineError>> {
        Box::pin(self.read_history(topic.clone(), after, limit, whole))
    }

    fn write_rosters(
        &self,
        node: &NodeId,
        changed: Vec<(Topic, Option<Bytes>)>,
        held: Vec<Topic>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(self.write_roster(node.clone(), changed, held, ttl))
    }

    fn read_rosters(&self, topic: &Topic, ttl: Duration) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, EngineError>> {
        Box::pin(self.read_roster(topic.clone(), ttl))
    }

    fn listen(&self, channel: Channel, on: bool) {
        let name = name(&channel);
        let mut wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if on { wanted.insert(name) } else { wanted.remove(&name) };
        if changed {
            self.changed.notify_one();
        }
    }

    fn resubscribe(&self) {
        self.reset.notify_one();
    }

    fn refresh_presence(&self, node: &NodeId, ttl: Duration) -> BoxFuture<'_, Result<Vec<Presence>, EngineError>> {
        let node = node.clone();
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let answer: Vec<String> = redis::cmd("EVAL")
                .arg(PRESENCE_SCRIPT)
                .arg(1)
                .arg(NODES_KEY)
                .arg(node.as_str())
                .arg(ttl.as_millis() as u64)
                .query_async(&mut conn)
                .await?;
            let now: u64 = answer
                .first()
                .and_then(|n| n.parse().ok())
                .ok_or(EngineError::Answer("presence without Redis's time"))?;
            Ok(answer[1..]
                .chunks_exact(2)
                .filter_map(|pair| {
                    let node = NodeId::parse(&pair[0]).ok()?;
                    let seen: u64 = pair[1].parse::<f64>().ok()? as u64;
                    Some(Presence {
                        node,
                        age: Duration::from_millis(now.saturating_sub(seen)),
                    })
                })
                .collect())
        })
    }

    fn leave(&self, node: &NodeId, farewells: Vec<(Channel, Bytes)>) -> BoxFuture<'_, Result<(), EngineError>> {
        let node = node.clone();
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            pipe.cmd("ZREM").arg(NODES_KEY).arg(node.as_str()).ignore();
            for (channel, payload) in &farewells {
                pipe.cmd("PUBLISH").arg(name(channel)).arg(payload.as_ref()).ignore();
            }
            Ok(pipe.exec_async(&mut conn).await?)
        })
    }

    fn subscription(&self) -> Option<u64> {
        let generation = self.subscription.load(Ordering::Relaxed);
        (generation != 0 && self.sender_up.load(Ordering::Relaxed)).then_some(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_carry_hash_tags() {
        let topic = Channel::Topic(Topic::parse("news.eu:1").unwrap());
        let node = Channel::Node(NodeId::parse("node-a_1").unwrap());
        for channel in [topic.clone(), node.clone(), Channel::Everyone] {
            assert_eq!(parse_name(&name(&channel)), Some(channel));
        }
        assert_eq!(name(&topic), "wshub:topic:{news.eu:1}");
        assert_eq!(name(&node), "wshub:node:{node-a_1}");
        assert_eq!(parse_name("wshub:topic:{bad topic}"), None);
        assert_eq!(parse_name("other"), None);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut backoff = Backoff::default();
        let first = backoff.next();
        assert!(first >= BACKOFF_FIRST && first <= BACKOFF_FIRST * 3 / 2);
        for _ in 0..20 {
            let wait = backoff.next();
            assert!(wait <= BACKOFF_MAX * 3 / 2, "{wait:?}");
        }
        assert!(backoff.next() >= BACKOFF_MAX);
    }
}

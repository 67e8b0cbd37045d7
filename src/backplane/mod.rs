//! The backplane: how the nodes of a cluster reach one another, so that
//! together they behave as one hub. Off by default; a node alone needs none.
//!
//! Data flows one way through here: the hub hands clients' publishes and its
//! topic interest to the [`Cluster`] (as its [`crate::hub::Relay`]), which
//! sends them through an [`Engine`]; what other nodes publish comes back from
//! the engine into this node's hub. The admin plane asks the cluster to run
//! its calls on every node (scatter-gather over each node's control channel).
//!
//! - [`Engine`] — the small trait a message engine implements: publish to a
//!   channel without waiting, listen to channels, node presence. [`redis`] is
//!   the one engine today; the hub and the cluster never see a Redis type.
//! - [`cluster`] — the engine-independent part: envelopes, the canary, node
//!   presence, cluster-wide admin calls.
//! - [`control`] — the control protocol's messages.

pub mod cluster;
pub mod control;
pub mod redis;
pub(crate) mod wire;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use cluster::{Cluster, Gathered};

use crate::types::{NodeId, Topic};

/// Where a message goes. The engine names them (see `docs/cluster.md`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Publishes to one topic: nodes with subscribers to it listen.
    Topic(Topic),
    /// Publishes to every client: every node listens.
    Everyone,
    /// One node's control channel: requests to it, answers to its requests,
    /// its canary's heartbeats.
    Node(NodeId),
}

/// A message the engine received on a channel this node listens to.
#[derive(Debug)]
pub struct Inbound {
    pub channel: Channel,
    pub payload: Bytes,
}

/// A publish to a topic with history, for the engine to number: it gives
/// the message the topic's next offset, keeps it in the topic's stream and
/// sends it to every node listening to the topic (this one included) with
/// its offset and epoch, in one step.
#[derive(Debug)]
pub struct Numbered {
    pub topic: Topic,
    /// The publishing node.
    pub origin: Bytes,
    pub frame: Bytes,
    /// Gets the offset once the engine has numbered it; dropped if it was
    /// not (the engine failed, or ran it too late to publish anything).
    pub confirm: Option<tokio::sync::oneshot::Sender<u64>>,
}

/// What a topic's stream holds after an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRead {
    pub epoch: String,
    /// The topic's latest offset.
    pub offset: u64,
    /// Kept messages after the offset asked for, oldest first (none when
    /// the read was all or nothing and more were asked for than allowed).
    pub entries: Vec<StreamEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub offset: u64,
    pub frame: Bytes,
}

/// What the engine keeps of each topic with history.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Messages per topic.
    pub size: usize,
    /// A message older than this is not replayed; a stream not published
    /// to for this long is removed.
    pub ttl: Duration,
}

/// A live node as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub node: NodeId,
    /// How long ago it last refreshed its presence.
    pub age: Duration,
}

/// A message engine carrying the cluster's traffic. Sending never waits:
/// a message that cannot go now is dropped and counted, never buffered
/// without bound. Received messages go to the channel the engine was
/// started with.
pub trait Engine: Send + Sync + 'static {
    /// Queues `payload` for `channel`; false if it was dropped (the
    /// outbound queue is full, or the engine is disconnected).
    fn publish(&self, channel: Channel, payload: Bytes) -> bool;
    /// Queues a publish to a topic with history (see [`Numbered`]); false
    /// if it was dropped, as for [`Engine::publish`].
    fn publish_numbered(&self, message: Numbered) -> bool;
    /// Reads a topic's stream after offset `after`, at most `limit`
    /// messages; with `whole`, none at all when more than `limit` follow.
    /// A topic without a stream gets one (offset 0, a new epoch), so its
    /// epoch is known before its first publish.
    fn read_stream(
        &self,
        topic: &Topic,
        after: u64,
        limit: usize,
        whole: bool,
    ) -> BoxFuture<'_, Result<StreamRead, EngineError>>;
    /// Writes this node's rosters of topics with presence: each changed
    /// topic's local clients (`None`: none left here), and keeps every
    /// topic in `held` (those with clients here) alive for `ttl`.
    fn write_rosters(
        &self,
        node: &NodeId,
        changed: Vec<(Topic, Option<Bytes>)>,
        held: Vec<Topic>,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Reads a topic's rosters from the nodes refreshed within `ttl` (those
    /// of nodes gone from presence are removed as they are found).
    /// (node, its roster) for each.
    fn read_rosters(&self, topic: &Topic, ttl: Duration) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, EngineError>>;
    /// Starts or stops listening to `channel`; kept across reconnects.
    fn listen(&self, channel: Channel, on: bool);
    /// Tears the subscription down and sets it up again: the canary found it
    /// connected but silent.
    fn resubscribe(&self);
    /// Marks `node` alive for `ttl` and answers the live nodes (including it).
    fn refresh_presence(&self, node: &NodeId, ttl: Duration) -> BoxFuture<'_, Result<Vec<Presence>, EngineError>>;
    /// Removes `node`'s presence at once (a clean shutdown), then sends
    /// `farewells` directly (the outbound queue has stopped by then), so
    /// the other nodes stop expecting this one's answers.
    fn leave(&self, node: &NodeId, farewells: Vec<(Channel, Bytes)>) -> BoxFuture<'_, Result<(), EngineError>>;
    /// While the engine is connected and subscribed to every channel it
    /// listens to: which subscription this is (a new one after each
    /// reconnect); `None` while it is not. Whether the subscription
    /// delivers is the canary's question.
    fn subscription(&self) -> Option<u64>;
}

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The `--backplane` URL is not one the engine takes.
    #[error("--backplane: {0}")]
    Url(::redis::RedisError),
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    #[error("no answer within the I/O timeout")]
    Timeout,
    #[error("unexpected answer from Redis: {0}")]
    Answer(&'static str),
}

impl EngineError {
    /// Whether Redis refused this node's password, or wanted one it did not send.
    pub fn is_auth(&self) -> bool {
        match self {
            EngineError::Redis(e) => {
                e.kind() == ::redis::ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
            }
            _ => false,
        }
    }
}

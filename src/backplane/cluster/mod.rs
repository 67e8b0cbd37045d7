//! The cluster as this node sees it, one room per role:
//!
//! - `relay`: the hub's outlet to other nodes, and what comes in from
//!   them (control messages routed at once, publishes delivered in order);
//! - `canary`: the heartbeat that judges the backplane, and presence
//!   (which nodes are expected to answer);
//! - `gather`: the admin calls that run on every node, and the executor
//!   of other nodes' requests;
//! - `listing`: cluster-wide client listings, merged, with cursors.
//!
//! Without an engine this is a cluster of one: every call runs on the local
//! hub only, with no encoding and no waiting, so the admin plane has one
//! code path whether or not there is a backplane.
//!
//! Data messages carry an envelope, `<origin node>\n<frame>`: the frame is
//! the one the origin already sent its own clients (encoded once), and the
//! origin, which delivered locally at once, recognises its own message when
//! Redis hands it back and skips it, so every client gets it exactly once.
//! A message to a topic with history is numbered by the engine and comes
//! back to every node listening to the topic, its origin included, as
//! `<origin node>\n#<epoch> <offset>\n<frame>`: every node fans it out only
//! then, in offset order, filling a gap from the stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::control::{Answer, Message, Op};
use super::{Channel, Engine, EngineError, Inbound, Presence};
use crate::close::{Closing, DisconnectReason};
use crate::hub::{
    ClientInfo, Command, Cursor, Delivery, HubError, HubHandle, KickTarget, ListQuery, Order, Publish, Relay, Stats,
};
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, BackplaneError, Dropped};
use crate::shutdown::Supervisor;
use crate::types::{ClientId, ClientRef, NodeId, Source, Topic};

/// Messages received from the engine and not yet routed; past it they are
/// dropped and counted (the engine never waits on the router).
const INBOUND_QUEUE: usize = 4096;
/// Requests from other nodes this node runs at once; more are answered "busy".
const MAX_REQUESTS: usize = 64;

/// What the cluster knows how to run.
pub struct ClusterConfig {
    pub node: NodeId,
    pub presence_ttl: Duration,
    pub heartbeat: Duration,
    /// How long a cluster-wide call waits for other nodes' answers.
    pub deadline: Duration,
    /// Starts the cluster's tasks, so the server sees one fail.
    pub supervisor: Supervisor,
    /// The topics with history (`--history-topics`), when history is on.
    pub history: Option<crate::types::TopicPatterns>,
    /// Whether some topics have presence (`--presence-topics`): this node
    /// writes its rosters each heartbeat.
    pub presence: bool,
}

/// Answers gathered from the nodes asked.
#[derive(Debug)]
pub struct Gathered<T> {
    pub value: T,
    /// The nodes that answered, this one first.
    pub nodes: Vec<NodeId>,
    /// Live nodes that did not answer in time: the value is partial.
    pub missing: Vec<NodeId>,
}

impl<T> Gathered<T> {
    pub fn partial(&self) -> bool {
        !self.missing.is_empty()
    }
}

/// One node's line in cluster-wide stats.
#[derive(Debug, Clone)]
pub struct NodeStats {
    pub node: NodeId,
    pub stats: Stats,
    /// How long ago its presence was last refreshed (zero for this node).
    pub age: Duration,
}

/// Where a cluster-wide listing stands: the node of the last client shown
/// and that node's own cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCursor {
    pub node: NodeId,
    pub cursor: Cursor,
}

pub struct ClusterPage {
    pub clients: Vec<(NodeId, ClientInfo)>,
    pub next: Option<ClusterCursor>,
    pub total: u64,
}

/// A node this node knows of, and when its presence was last refreshed.
#[derive(Debug, Clone)]
struct Known {
    node: NodeId,
    seen: Instant,
}

/// The canary's state: the last heartbeat sent, when, on which subscription.
#[derive(Default)]
struct Canary {
    seq: u64,
    sent: Option<(Instant, u64)>,
    returned: bool,
}

pub struct Cluster {
    node: NodeId,
    hub: HubHandle,
    /// `None`: a node alone.
    engine: Option<Arc<dyn Engine>>,
    config: ClusterConfig,
    /// Cluster-wide calls waiting for answers, by request id.
    pending: Mutex<HashMap<u64, mpsc::Sender<(NodeId, Answer)>>>,
    next_request: AtomicU64,
    /// The nodes this node expects answers from: what presence last showed,
    /// and nodes it showed before that have not been gone a presence TTL
    /// (after a Redis restart, nodes re-register one by one over a
    /// heartbeat: until then, one that has not yet is still expected, and an
    /// answer without it is partial, not complete). Read by admin calls
    /// without a round trip to the engine; kept by the presence task.
    live: Mutex<Vec<Known>>,
    canary: Mutex<Canary>,
    /// This process, in heartbeats: one from another instance on this
    /// node's channel means two processes share a node id.
    instance: u64,
    conflict_logged: Mutex<Option<Instant>>,
    /// When this process started (ms since the epoch), in heartbeats.
    started: u64,
    /// Whether an older process runs as this node: then this one serves nothing.
    twin: AtomicBool,
    /// Whether this node's presence is in the engine (its last refresh worked).
    present: AtomicBool,
    up: AtomicBool,
    lifecycle: Lifecycle,
    /// Per topic with history this node listens to: the epoch and latest
    /// offset delivered here, so a gap is seen (and filled) as it comes.
    tracked: Tracked,
}

/// Topic → (epoch, latest offset delivered); shared with the [`Outlet`],
/// which forgets a topic when this node stops listening to it.
type Tracked = Arc<Mutex<HashMap<Topic, (Box<str>, u64)>>>;

impl Cluster {
    /// A node alone: admin calls run on the local hub only.
    pub fn alone(node: NodeId, hub: HubHandle, lifecycle: Lifecycle) -> Arc<Cluster> {
        let config = ClusterConfig {
            node: node.clone(),
            presence_ttl: Duration::ZERO,
            heartbeat: Duration::ZERO,
            deadline: Duration::ZERO,
            supervisor: Supervisor::default(),
            history: None,
            presence: false,
        };
        Arc::new(Self::new(None, hub, config, lifecycle))
    }

    fn new(engine: Option<Arc<dyn Engine>>, hub: HubHandle, config: ClusterConfig, lifecycle: Lifecycle) -> Self {
        Cluster {
            node: config.node.clone(),
            hub,
            engine,
            config,
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            live: Mutex::new(Vec::new()),
            canary: Mutex::new(Canary::default()),
            instance: crate::types::random_u64(),
            conflict_logged: Mutex::new(None),
            started: crate::types::unix_ms(),
            twin: AtomicBool::new(false),
            present: AtomicBool::new(false),
            up: AtomicBool::new(false),
            lifecycle,
            tracked: Tracked::default(),
        }
    }

    /// Joins the cluster through an engine made by `engine` (given the
    /// channel its messages go to), and starts the router, the canary and
    /// presence. Returns at once: the engine connects in the background.
    pub fn join<E: Engine>(
        engine: impl FnOnce(mpsc::Sender<Inbound>) -> Result<Arc<E>, EngineError>,
        hub: HubHandle,
        config: ClusterConfig,
        lifecycle: Lifecycle,
        stop: CancellationToken,
    ) -> Result<Arc<Cluster>, EngineError> {
        let (inbound, received) = mpsc::channel(INBOUND_QUEUE);
        let engine: Arc<dyn Engine> = engine(inbound)?;
        engine.listen(Channel::Everyone, true);
        engine.listen(Channel::Node(config.node.clone()), true);
        metrics::backplane_start();
        lifecycle.set_backplane(false);
        let supervisor = config.supervisor.clone();
        let cluster = Arc::new(Self::new(Some(engine), hub, config, lifecycle));
        supervisor.spawn("backplane router", &stop, cluster.clone().route(received, stop.clone()));
        supervisor.spawn("backplane canary", &stop, cluster.clone().watch(stop.clone()));
        supervisor.spawn("backplane presence", &stop, cluster.clone().refresh(stop.clone()));
        Ok(cluster)
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// What the hub hands clients' publishes and its topic interest to;
    /// `None` for a node alone.
    pub fn relay(&self) -> Option<Arc<dyn Relay>> {
        let engine = self.engine.clone()?;
        Some(Arc::new(Outlet {
            node: self.node.clone(),
            engine,
            tracked: self.tracked.clone(),
            presence_ttl: self.config.presence_ttl,
        }))
    }

    /// Whether a publish to `topic` is numbered by the backplane (a topic
    /// with history in a cluster): it is sent once, from here, and not
    /// asked of every node.
    pub fn numbers(&self, topic: Option<&Topic>) -> bool {
        self.engine.is_some() && topic.is_some_and(|t| self.config.history.as_ref().is_some_and(|h| h.matches(t)))
    }

    /// Whether this node is in a cluster (has a backplane).
    pub fn clustered(&self) -> bool {
        self.engine.is_some()
    }

    /// Whether the backplane carries messages now (the canary's verdict).
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Takes this node out of presence at once (a clean shutdown), so
    /// others stop expecting its answers; bounded by the I/O timeout.
    pub async fn leave(&self) {
        if let Some(engine) = &self.engine {
            let leaving = Message::Leaving {
                node: self.node.clone(),
            }
            .encode();
            let farewells = self
                .others(None)
                .into_iter()
                .map(|other| (Channel::Node(other.node), leaving.clone()))
                .collect();
            let leave = tokio::time::timeout(Duration::from_secs(2), engine.leave(&self.node, farewells));
            if let Ok(Err(e)) | Err(e) = leave.await.map_err(|_| EngineError::Timeout) {
                tracing::debug!(error = %e, "backplane: could not remove this node's presence");
            }
        }
    }
}

mod canary;
mod gather;
mod listing;
mod relay;
#[cfg(test)]
mod tests;

pub use relay::Outlet;

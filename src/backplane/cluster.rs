//! The cluster as this node sees it: the hub's [`Relay`] to other nodes,
//! the router that brings their messages into the hub, the canary, node
//! presence, and the admin calls that run on every node (scatter-gather).
//!
//! Without an engine this is a cluster of one: every call runs on the local
//! hub only, with no encoding and no waiting, so the admin plane has one
//! code path whether or not there is a backplane.
//!
//! Data messages carry an envelope, `<origin node>\n<frame>`: the frame is
//! the one the origin already sent its own clients (encoded once), and the
//! origin, which delivered locally at once, recognises its own message when
//! Redis hands it back and skips it, so every client gets it exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::control::{Answer, Message, Op};
use super::{Channel, Engine, Inbound, Presence};
use crate::close::{Closing, DisconnectReason};
use crate::hub::{
    ClientInfo, Command, Cursor, Delivery, HubError, HubHandle, KickTarget, ListQuery, Order, Publish, Relay, Stats,
};
use crate::lifecycle::Lifecycle;
use crate::metrics::{self, BackplaneError};
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
    /// Whether this node's presence is in the engine (its last refresh worked).
    present: AtomicBool,
    up: AtomicBool,
    lifecycle: Lifecycle,
}

impl Cluster {
    /// A node alone: admin calls run on the local hub only.
    pub fn alone(node: NodeId, hub: HubHandle, lifecycle: Lifecycle) -> Arc<Cluster> {
        let config = ClusterConfig {
            node: node.clone(),
            presence_ttl: Duration::ZERO,
            heartbeat: Duration::ZERO,
            deadline: Duration::ZERO,
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
            present: AtomicBool::new(false),
            up: AtomicBool::new(false),
            lifecycle,
        }
    }

    /// Joins the cluster through an engine made by `engine` (given the
    /// channel its messages go to), and starts the router, the canary and
    /// presence. Returns at once: the engine connects in the background.
    pub fn join<E: Engine>(
        engine: impl FnOnce(mpsc::Sender<Inbound>) -> Result<Arc<E>, String>,
        hub: HubHandle,
        config: ClusterConfig,
        lifecycle: Lifecycle,
        stop: CancellationToken,
    ) -> Result<Arc<Cluster>, String> {
        let (inbound, received) = mpsc::channel(INBOUND_QUEUE);
        let engine: Arc<dyn Engine> = engine(inbound)?;
        engine.listen(Channel::Everyone, true);
        engine.listen(Channel::Node(config.node.clone()), true);
        metrics::backplane_start();
        lifecycle.set_backplane(false);
        let cluster = Arc::new(Self::new(Some(engine), hub, config, lifecycle));
        tokio::spawn(cluster.clone().route(received, stop.clone()));
        tokio::spawn(cluster.clone().watch(stop.clone()));
        tokio::spawn(cluster.clone().refresh(stop));
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
        }))
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
            if let Ok(Err(e)) | Err(e) = leave.await.map_err(|_| "timed out".to_string()) {
                tracing::debug!(error = %e, "backplane: could not remove this node's presence");
            }
        }
    }

    // ---- What comes in from other nodes ----

    /// Routes what the engine received, never waiting: control messages
    /// are handled at once (requests in tasks of their own), publishes go
    /// to [`Cluster::deliver`]'s queue. So a busy hub delays neither the
    /// canary nor answers to other nodes; publishes it cannot take in time
    /// are dropped and counted, not buffered without bound.
    async fn route(self: Arc<Self>, mut received: mpsc::Receiver<Inbound>, stop: CancellationToken) {
        let requests = Arc::new(Semaphore::new(MAX_REQUESTS));
        let (deliveries, queued) = mpsc::channel(INBOUND_QUEUE);
        tokio::spawn(self.clone().deliver(queued, stop.clone()));
        loop {
            let inbound = tokio::select! {
                inbound = received.recv() => match inbound {
                    Some(inbound) => inbound,
                    None => return,
                },
                _ = stop.cancelled() => return,
            };
            let topic = match inbound.channel {
                Channel::Topic(topic) => Some(topic),
                Channel::Everyone => None,
                Channel::Node(_) => {
                    self.control(&requests, &inbound.payload);
                    continue;
                }
            };
            let Some((origin, frame)) = open_envelope(&inbound.payload) else {
                metrics::backplane_error(BackplaneError::Decode);
                continue;
            };
            // This node's own publish coming back: its clients have it.
            if origin == self.node.as_str().as_bytes() {
                continue;
            }
            if deliveries.try_send((topic, frame)).is_err() {
                metrics::backplane_dropped(1);
            }
        }
    }

    /// A message on this node's control channel.
    fn control(self: &Arc<Self>, requests: &Arc<Semaphore>, payload: &[u8]) {
        match Message::decode(payload) {
            Some(Message::Request { id, from, op }) => match requests.clone().try_acquire_owned() {
                Ok(permit) => {
                    let cluster = self.clone();
                    tokio::spawn(async move {
                        let answer = match cluster.execute(op).await {
                            Ok(answer) => answer,
                            Err(e) => Answer::Failed(e.to_string()),
                        };
                        cluster.answer(from, id, answer);
                        drop(permit);
                    });
                }
                Err(_) => self.answer(from, id, Answer::Failed("busy".into())),
            },
            Some(Message::Answer { id, node, answer }) => {
                let waiting = self.pending.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned();
                if let Some(waiting) = waiting {
                    let _ = waiting.try_send((node, answer));
                }
            }
            Some(Message::Heartbeat { seq, instance }) if instance == self.instance => self.heartbeat_back(seq),
            Some(Message::Heartbeat { .. }) => self.conflict(),
            Some(Message::Leaving { node }) => self.left(&node),
            None => metrics::backplane_error(BackplaneError::Decode),
        }
    }

    /// Another process runs with this node's id: each takes the other's
    /// publishes for its own echo and skips them. Said loudly (at most once
    /// a minute) and counted; the operator must give each node its own id.
    fn conflict(&self) {
        metrics::backplane_error(BackplaneError::NodeIdConflict);
        let mut last = self.conflict_logged.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::error!(node = %self.node, "backplane: another process runs as this node (same --node-id); messages between the two are lost. Give every node its own --node-id");
        }
    }

    /// Fans other nodes' publishes out here, in the order they came,
    /// waiting for room in the hub's channel.
    async fn deliver(self: Arc<Self>, mut queued: mpsc::Receiver<(Option<Topic>, Bytes)>, stop: CancellationToken) {
        loop {
            let (topic, frame) = tokio::select! {
                got = queued.recv() => match got {
                    Some(got) => got,
                    None => return,
                },
                _ = stop.cancelled() => return,
            };
            let Ok(frame) = Utf8Bytes::try_from(frame) else {
                metrics::backplane_error(BackplaneError::Decode);
                continue;
            };
            let publish = Publish {
                topic,
                frame,
                source: Source::Backplane,
                from: None,
                request: None,
                exclude: Default::default(),
                respond: None,
                budget: None,
            };
            if self.hub.send(Command::Publish(publish)).await.is_err() {
                return;
            }
        }
    }

    fn answer(&self, to: NodeId, id: u64, answer: Answer) {
        let message = Message::Answer {
            id,
            node: self.node.clone(),
            answer,
        };
        self.send(to, &message);
    }

    fn send(&self, to: NodeId, message: &Message) -> bool {
        let Some(engine) = &self.engine else { return false };
        let sent = engine.publish(Channel::Node(to), message.encode());
        if !sent {
            metrics::backplane_dropped(1);
        }
        sent
    }

    /// Runs one operation on this node's hub.
    async fn execute(&self, op: Op) -> Result<Answer, HubError> {
        let not_found = |r: Result<Answer, HubError>, none: Answer| match r {
            Err(HubError::NotFound(_)) => Ok(none),
            other => other,
        };
        match op {
            Op::List(query) => self.hub.list_clients(query).await.map(Answer::Page),
            Op::Get(id) => not_found(
                self.hub.get_client(id).await.map(|c| Answer::Client(Some(c))),
                Answer::Client(None),
            ),
            Op::Kick { target, code, reason } => {
                let closing = Closing::with_frame(DisconnectReason::Kicked, code, reason);
                self.hub.kick(target, closing).await.map(Answer::Kicked)
            }
            Op::Send { id, frame } => not_found(
                self.hub.send_to(id, frame.into()).await.map(|q| Answer::Sent(Some(q))),
                Answer::Sent(None),
            ),
            Op::Broadcast { topic, frame, exclude } => self
                .hub
                .broadcast(topic, frame.into(), exclude.into_iter().collect())
                .await
                .map(Answer::Delivered),
            Op::Stats => self.hub.stats().await.map(Answer::Stats),
        }
    }

    // ---- The canary and presence ----

    /// The canary: every heartbeat, judge the last one and send the next.
    async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut beat = tokio::time::interval(self.config.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => self.heartbeat(),
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Presence: refreshes this node's and reads the others' as often as
    /// the canary beats (at least three times per TTL), in a task of its
    /// own so a slow engine never delays the canary's verdict.
    async fn refresh(self: Arc<Self>, stop: CancellationToken) {
        let every = self.config.heartbeat.min(self.config.presence_ttl / 3);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.refresh_presence().await,
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Judges the previous heartbeat, then sends the next one to this
    /// node's own channel. A heartbeat that did not come back on the
    /// subscription it was sent on, still up, is a silent stall: the
    /// backplane is down and the subscription is renewed. One that was lost
    /// while reconnecting says nothing; the next one will.
    fn heartbeat(&self) {
        let Some(engine) = &self.engine else { return };
        let subscription = engine.subscription();
        let (stalled, seq) = {
            let mut canary = self.canary.lock().unwrap_or_else(|e| e.into_inner());
            let stalled = match canary.sent {
                Some((_, on)) if !canary.returned => subscription == Some(on),
                _ => false,
            };
            canary.seq += 1;
            canary.sent = subscription.map(|on| (Instant::now(), on));
            canary.returned = false;
            (stalled, canary.seq)
        };
        let present = self.present.load(Ordering::Relaxed);
        let sent = !stalled
            && present
            && subscription.is_some()
            && self.send(
                self.node.clone(),
                &Message::Heartbeat {
                    seq,
                    instance: self.instance,
                },
            );
        if !sent {
            self.canary.lock().unwrap_or_else(|e| e.into_inner()).sent = None;
            self.set_up(false);
        }
        if stalled {
            metrics::backplane_error(BackplaneError::Stall);
            tracing::warn!("backplane: the canary's heartbeat did not come back; renewing the subscription");
            engine.resubscribe();
        }
    }

    fn heartbeat_back(&self, seq: u64) {
        let roundtrip = {
            let mut canary = self.canary.lock().unwrap_or_else(|e| e.into_inner());
            if canary.seq != seq || canary.returned {
                return;
            }
            canary.returned = true;
            canary.sent.map(|(sent, _)| sent.elapsed())
        };
        if let Some(roundtrip) = roundtrip {
            ::metrics::histogram!(metrics::BACKPLANE_ROUNDTRIP_SECONDS).record(roundtrip.as_secs_f64());
        }
        self.set_up(true);
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            // Metric and readiness first: whoever reads the log line finds them set.
            metrics::gauge_set(metrics::BACKPLANE_UP, if up { 1.0 } else { 0.0 });
            self.lifecycle.set_backplane(up);
            if up {
                tracing::info!(node = %self.node, "backplane up: messages reach other nodes");
            } else {
                tracing::warn!(node = %self.node, "backplane down: local delivery goes on; messages for other nodes are dropped and counted");
            }
        }
    }

    /// Refreshes this node's presence and reads the live nodes into what
    /// this node expects answers from (see [`Cluster::live`]).
    async fn refresh_presence(&self) {
        let Some(engine) = &self.engine else { return };
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            engine.refresh_presence(&self.node, self.config.presence_ttl),
        );
        match read.await {
            Ok(Ok(fresh)) => {
                self.present.store(true, Ordering::Relaxed);
                metrics::gauge_set(metrics::BACKPLANE_NODES, fresh.len() as f64);
                let now = Instant::now();
                let mut known = self.live.lock().unwrap_or_else(|e| e.into_inner());
                let mut merged: Vec<Known> = fresh
                    .iter()
                    .map(|p| Known {
                        node: p.node.clone(),
                        seen: now.checked_sub(p.age).unwrap_or(now),
                    })
                    .collect();
                for old in known.iter() {
                    let listed = merged.iter().any(|k| k.node == old.node);
                    if !listed && old.seen.elapsed() < self.config.presence_ttl {
                        merged.push(old.clone());
                    }
                }
                *known = merged;
            }
            _ => {
                self.present.store(false, Ordering::Relaxed);
                metrics::backplane_error(BackplaneError::Presence);
            }
        }
    }

    /// The other nodes expected to answer (all, or `only` that one), with
    /// how long ago each last refreshed its presence.
    fn others(&self, only: Option<&NodeId>) -> Vec<Presence> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|k| k.node != self.node && only.is_none_or(|n| *n == k.node))
            .map(|k| Presence {
                node: k.node.clone(),
                age: k.seen.elapsed(),
            })
            .collect()
    }

    /// Another node left cleanly: it is no longer expected at once.
    fn left(&self, node: &NodeId) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| k.node != *node);
    }

    // ---- Scatter-gather ----

    /// Runs `op_for(node)` on this node and on every other live node (or on
    /// `only` that one). One deadline bounds the whole call: the requests go
    /// out first, this node's part runs while they travel, and answers are
    /// awaited until the deadline; nodes that have not answered by then are
    /// `missing` (the answer is partial).
    async fn gather(
        &self,
        only: Option<&NodeId>,
        op_for: impl Fn(&NodeId) -> Op,
    ) -> Result<Gathered<Vec<(NodeId, Answer, Duration)>>, HubError> {
        let deadline = tokio::time::Instant::now() + self.config.deadline;
        let others = if self.engine.is_some() {
            self.others(only)
        } else {
            Vec::new()
        };
        tracing::debug!(others = ?others, "backplane: asking the other nodes");
        let mut missing: Vec<NodeId> = Vec::new();
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(others.len().max(1));
        let mut waiting: HashMap<NodeId, Duration> = HashMap::new();
        let _pending = (!others.is_empty()).then(|| {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
            Pending { cluster: self, id }
        });
        for presence in &others {
            let request = Message::Request {
                id,
                from: self.node.clone(),
                op: op_for(&presence.node),
            };
            if self.send(presence.node.clone(), &request) {
                waiting.insert(presence.node.clone(), presence.age);
            } else {
                missing.push(presence.node.clone());
            }
        }
        let mut answers = Vec::new();
        if only.is_none_or(|n| *n == self.node) {
            let local = self.execute(op_for(&self.node));
            let local = if self.engine.is_some() {
                tokio::time::timeout_at(deadline, local)
                    .await
                    .map_err(|_| HubError::Timeout(self.config.deadline))??
            } else {
                // A node alone: the hub's own deadline bounds it.
                local.await?
            };
            answers.push((self.node.clone(), local, Duration::ZERO));
        }
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((node, answer))) => {
                    let Some(age) = waiting.remove(&node) else { continue };
                    if let Answer::Failed(e) = &answer {
                        tracing::warn!(%node, error = %e, "backplane: a node could not answer a cluster-wide call");
                        missing.push(node);
                    } else {
                        answers.push((node, answer, age));
                    }
                }
                _ => break,
            }
        }
        if !waiting.is_empty() {
            metrics::backplane_error(BackplaneError::Timeout);
        }
        missing.extend(waiting.into_keys());
        missing.sort();
        // This node first, then the others by id: answers in a stable order.
        let start = usize::from(answers.first().is_some_and(|(n, _, _)| *n == self.node));
        answers[start..].sort_by(|x, y| x.0.cmp(&y.0));
        let nodes = answers.iter().map(|(node, _, _)| node.clone()).collect();
        Ok(Gathered {
            value: answers,
            nodes,
            missing,
        })
    }

    /// Broadcast from the admin plane: every node fans the frame out to its
    /// own clients and counts them.
    pub async fn broadcast(
        &self,
        topic: Option<Topic>,
        frame: Utf8Bytes,
        exclude: &[ClientRef],
    ) -> Result<Gathered<Delivery>, HubError> {
        let gathered = self
            .gather(None, |node| Op::Broadcast {
                topic: topic.clone(),
                frame: frame.to_string(),
                exclude: self.on_node(exclude, node),
            })
            .await?;
        Ok(gathered.map(|answers| {
            answers
                .into_iter()
                .fold(Delivery::default(), |sum, (_, answer, _)| match answer {
                    Answer::Delivered(d) => Delivery {
                        recipients: sum.recipients + d.recipients,
                        dropped: sum.dropped + d.dropped,
                    },
                    _ => sum,
                })
        }))
    }

    /// The ids among `refs` that name clients of `node`.
    fn on_node(&self, refs: &[ClientRef], node: &NodeId) -> Vec<ClientId> {
        refs.iter()
            .filter(|r| r.node.as_ref().unwrap_or(&self.node) == node)
            .map(|r| r.id)
            .collect()
    }

    /// The node that owns a client, from its id.
    fn owner<'a>(&'a self, client: &'a ClientRef) -> &'a NodeId {
        client.node.as_ref().unwrap_or(&self.node)
    }

    /// Queues a frame for one client, on whichever node holds it.
    pub async fn send_to(&self, client: &ClientRef, frame: Utf8Bytes) -> Result<Gathered<Option<bool>>, HubError> {
        let gathered = self
            .gather(Some(self.owner(client)), |_| Op::Send {
                id: client.id,
                frame: frame.to_string(),
            })
            .await?;
        Ok(gathered.map(|answers| match answers.first() {
            Some((_, Answer::Sent(sent), _)) => *sent,
            _ => None,
        }))
    }

    pub async fn get_client(&self, client: &ClientRef) -> Result<Gathered<Option<ClientInfo>>, HubError> {
        let gathered = self.gather(Some(self.owner(client)), |_| Op::Get(client.id)).await?;
        Ok(gathered.map(|answers| match answers.into_iter().next() {
            Some((_, Answer::Client(info), _)) => info,
            _ => None,
        }))
    }

    /// Kicks a client on its node, or every client of a user or topic on every node.
    pub async fn kick(
        &self,
        client: Option<&ClientRef>,
        target: KickTarget,
        code: u16,
        reason: &str,
    ) -> Result<Gathered<u64>, HubError> {
        let only = client.map(|c| self.owner(c));
        let gathered = self
            .gather(only, |_| Op::Kick {
                target: target.clone(),
                code,
                reason: reason.to_string(),
            })
            .await?;
        Ok(gathered.map(|answers| {
            answers
                .into_iter()
                .map(|(_, answer, _)| if let Answer::Kicked(n) = answer { n } else { 0 })
                .sum()
        }))
    }

    /// Each node's stats, this node first.
    pub async fn stats(&self) -> Result<Gathered<Vec<NodeStats>>, HubError> {
        let gathered = self.gather(None, |_| Op::Stats).await?;
        Ok(gathered.map(|answers| {
            answers
                .into_iter()
                .filter_map(|(node, answer, age)| match answer {
                    Answer::Stats(stats) => Some(NodeStats { node, stats, age }),
                    _ => None,
                })
                .collect()
        }))
    }

    /// A page of clients across the cluster. The order is the single
    /// node's, extended with the node id: in connection order by (node,
    /// connection order); deepest queue first by (depth, node, id). The
    /// cursor names the node and its position, so a walk is as stable as
    /// on one node however clients come and go.
    pub async fn list(
        &self,
        query: ListQuery,
        after: Option<ClusterCursor>,
    ) -> Result<Gathered<ClusterPage>, HubError> {
        let size = query.page_size.max(1);
        let gathered = self
            .gather(None, |node| {
                Op::List(ListQuery {
                    cursor: after.as_ref().map(|after| local_cursor(after, node)),
                    ..query.clone()
                })
            })
            .await?;
        let order = query.order;
        Ok(gathered.map(|answers| {
            let mut total = 0;
            let mut more = false;
            let mut all: Vec<(NodeId, ClientInfo)> = Vec::new();
            for (node, answer, _) in answers {
                if let Answer::Page(page) = answer {
                    total += page.total;
                    more |= page.next.is_some();
                    all.extend(page.clients.into_iter().map(|c| (node.clone(), c)));
                }
            }
            match order {
                Order::ConnectedAt => all.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id))),
                Order::QueueDepth => all.sort_by(|a, b| {
                    (std::cmp::Reverse(a.1.queue_depth), &a.0, a.1.id).cmp(&(
                        std::cmp::Reverse(b.1.queue_depth),
                        &b.0,
                        b.1.id,
                    ))
                }),
            }
            more |= all.len() > size;
            all.truncate(size);
            let next = match (more, all.last()) {
                (true, Some((node, last))) => Some(ClusterCursor {
                    node: node.clone(),
                    cursor: match order {
                        Order::ConnectedAt => Cursor::After(last.id),
                        Order::QueueDepth => Cursor::AfterDepth(last.queue_depth, last.id),
                    },
                }),
                _ => None,
            };
            ClusterPage {
                clients: all,
                next,
                total,
            }
        }))
    }
}

/// Where a cluster-wide cursor leaves `node`'s own listing: nodes before
/// the cursor's node have shown everything at the cursor's position, nodes
/// after it nothing.
fn local_cursor(after: &ClusterCursor, node: &NodeId) -> Cursor {
    use std::cmp::Ordering::*;
    match (after.cursor, node.cmp(&after.node)) {
        (cursor, Equal) => cursor,
        (Cursor::After(_), Less) => Cursor::After(ClientId(u64::MAX)),
        (Cursor::After(_), Greater) => Cursor::After(ClientId(0)),
        (Cursor::AfterDepth(depth, _), Less) => Cursor::AfterDepth(depth, ClientId(u64::MAX)),
        (Cursor::AfterDepth(depth, _), Greater) => Cursor::AfterDepth(depth, ClientId(0)),
    }
}

impl<T> Gathered<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Gathered<U> {
        Gathered {
            value: f(self.value),
            nodes: self.nodes,
            missing: self.missing,
        }
    }
}

/// A publish's envelope, `<origin node>\n<frame>`: (origin, frame).
fn open_envelope(payload: &Bytes) -> Option<(&[u8], Bytes)> {
    let split = payload.iter().position(|&b| b == b'\n')?;
    Some((&payload[..split], payload.slice(split + 1..)))
}

/// Removes a finished call's entry from the pending map, however it ends.
struct Pending<'a> {
    cluster: &'a Cluster,
    id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.cluster
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// The hub's way out to other nodes: the engine and this node's name, and
/// no hub handle, so the hub does not keep itself alive through it.
pub struct Outlet {
    node: NodeId,
    engine: Arc<dyn Engine>,
}

impl Relay for Outlet {
    fn publish(&self, topic: Option<&Topic>, frame: &Utf8Bytes) {
        let engine = &self.engine;
        let mut payload = BytesMut::with_capacity(self.node.as_str().len() + 1 + frame.len());
        payload.put_slice(self.node.as_str().as_bytes());
        payload.put_u8(b'\n');
        payload.put_slice(frame.as_bytes());
        let channel = topic.map_or(Channel::Everyone, |t| Channel::Topic(t.clone()));
        if !engine.publish(channel, payload.freeze()) {
            metrics::backplane_dropped(1);
        }
    }

    fn interest(&self, topic: &Topic, on: bool) {
        self.engine.listen(Channel::Topic(topic.clone()), on);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::BoxFuture;
    use std::sync::atomic::AtomicUsize;

    /// An engine on a wire of its own: what is published to this node's
    /// channel comes straight back, unless `silent`.
    struct Loopback {
        inbound: mpsc::Sender<Inbound>,
        silent: AtomicBool,
        subscription: AtomicU64,
        resubscribed: AtomicUsize,
    }

    impl Engine for Loopback {
        fn publish(&self, channel: Channel, payload: Bytes) -> bool {
            if !self.silent.load(Ordering::Relaxed) {
                let _ = self.inbound.try_send(Inbound { channel, payload });
            }
            true
        }
        fn listen(&self, _: Channel, _: bool) {}
        fn resubscribe(&self) {
            self.resubscribed.fetch_add(1, Ordering::Relaxed);
            self.subscription.fetch_add(1, Ordering::Relaxed);
        }
        fn refresh_presence(&self, node: &NodeId, _: Duration) -> BoxFuture<'_, Result<Vec<Presence>, String>> {
            let node = node.clone();
            Box::pin(async move {
                Ok(vec![Presence {
                    node,
                    age: Duration::ZERO,
                }])
            })
        }
        fn leave(&self, _: &NodeId, _: Vec<(Channel, Bytes)>) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn subscription(&self) -> Option<u64> {
            Some(self.subscription.load(Ordering::Relaxed))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_canary_finds_a_silent_subscription_within_two_heartbeats() {
        let (hub, handle) = crate::hub::Hub::new(crate::hub::HubConfig {
            max_topics_per_client: 8,
            max_topics: 100,
            queue_len: 8,
            queue_bytes: 1 << 20,
            deadline: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            send_queue_len: 8,
            send_queue_bytes: 1 << 20,
        });
        tokio::spawn(hub.run());
        let heartbeat = Duration::from_secs(2);
        let config = ClusterConfig {
            node: NodeId::parse("a").unwrap(),
            presence_ttl: Duration::from_secs(15),
            heartbeat,
            deadline: Duration::from_secs(1),
        };
        let engine = std::sync::OnceLock::new();
        let stop = CancellationToken::new();
        let cluster = Cluster::join(
            |inbound| {
                let loopback = Arc::new(Loopback {
                    inbound,
                    silent: AtomicBool::new(false),
                    subscription: AtomicU64::new(1),
                    resubscribed: AtomicUsize::new(0),
                });
                let _ = engine.set(loopback.clone());
                Ok(loopback)
            },
            handle,
            config,
            Lifecycle::default(),
            stop.clone(),
        )
        .unwrap();
        let engine = engine.get().unwrap();
        let step = Duration::from_millis(10);
        while !cluster.up() {
            tokio::time::sleep(step).await;
        }
        // Up and steady for a while, then silent, at the worst moment: just
        // after a heartbeat came back.
        tokio::time::sleep(heartbeat * 5 + step).await;
        assert!(cluster.up());
        engine.silent.store(true, Ordering::Relaxed);
        let silenced = tokio::time::Instant::now();
        while cluster.up() {
            tokio::time::sleep(step).await;
        }
        assert!(silenced.elapsed() <= heartbeat * 2, "{:?}", silenced.elapsed());
        assert_eq!(
            engine.resubscribed.load(Ordering::Relaxed),
            1,
            "the subscription is renewed once"
        );
        // Heard again: up at the next heartbeat that comes back.
        engine.silent.store(false, Ordering::Relaxed);
        let heard = tokio::time::Instant::now();
        while !cluster.up() {
            tokio::time::sleep(step).await;
        }
        assert!(heard.elapsed() <= heartbeat * 2, "{:?}", heard.elapsed());
        stop.cancel();
    }

    #[test]
    fn local_cursors_split_the_cluster_order() {
        let b = NodeId::parse("b").unwrap();
        let after = ClusterCursor {
            node: b.clone(),
            cursor: Cursor::After(ClientId(5)),
        };
        assert_eq!(local_cursor(&after, &b), Cursor::After(ClientId(5)));
        assert_eq!(
            local_cursor(&after, &NodeId::parse("a").unwrap()),
            Cursor::After(ClientId(u64::MAX))
        );
        assert_eq!(
            local_cursor(&after, &NodeId::parse("c").unwrap()),
            Cursor::After(ClientId(0))
        );
        let deep = ClusterCursor {
            node: b,
            cursor: Cursor::AfterDepth(3, ClientId(5)),
        };
        assert_eq!(
            local_cursor(&deep, &NodeId::parse("c").unwrap()),
            Cursor::AfterDepth(3, ClientId(0))
        );
    }
}

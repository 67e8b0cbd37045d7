//! The hub: one actor task that owns who is connected and who listens to
//! what. Everything else holds a [`HubHandle`] and sends it [`Command`]s
//! over bounded channels; there is no lock around the registry.
//!
//! The hub never waits on a client: fan-out (`fanout.rs`) `try_push`es into
//! each client's bounded queue, and a client whose queue is full is evicted
//! (close 4008). Once the hub has removed a client, nothing that client
//! sends has any effect: its connection is closing and the hub ignores
//! commands from ids it does not list.

mod client;
mod command;
mod fanout;
mod handle;
mod history;
mod presence;
mod query;
mod remote;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use client::{ClientId, ClientTx, Fill, Outbound, PushError, QueueStats, Shared, Totals, Trigger};
pub use command::*;
pub use handle::HubHandle;
pub use history::HistoryConfig;
pub use presence::{NodeRoster, PresenceConfig, Roster};

use crate::close::{Closing, DisconnectReason};
use crate::metrics::{self, Handles};
use crate::protocol;
use crate::types::{Source, Topic};

/// Errors the hub answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("client {0} not found")]
    NotFound(ClientId),
    #[error("the hub did not answer within {0:?}")]
    Timeout(Duration),
    /// A drain or shutdown has started: no new clients; close with this.
    #[error("the hub takes no new clients")]
    Refused(Closing),
    /// The backplane did not do what a topic with history needs (number a
    /// publish, read a stream) in time.
    #[error("the backplane is unavailable: {0}")]
    Backplane(String),
}

/// Where the hub hands on what other nodes must see: with a backplane,
/// the cluster; on a node alone, nothing. Both calls return at once: the
/// hub never waits on another node any more than on a client.
pub trait Relay: Send + Sync + 'static {
    /// A client's publish, which this node fans out to its own clients.
    fn publish(&self, topic: Option<&Topic>, frame: &Utf8Bytes);
    /// This node's interest in a topic: on at its first local subscriber,
    /// off after its last leaves.
    fn interest(&self, topic: &Topic, on: bool);
    /// A publish to a topic with history, for the backplane to number and
    /// send to every node listening to the topic, this one included: it is
    /// fanned out here when it comes back with its offset. `confirm` gets
    /// the offset once it is numbered, and is dropped if it is not. False:
    /// it was dropped at once (the backplane is down or behind).
    fn publish_numbered(
        &self,
        topic: &Topic,
        frame: &Utf8Bytes,
        confirm: Option<tokio::sync::oneshot::Sender<u64>>,
    ) -> bool;
    /// Reads what a topic's history keeps after `after`: at most `limit`
    /// messages, or (with `whole`) none when more follow. Frames carry
    /// their offsets. The hub does not wait for it: it runs elsewhere.
    fn read(
        &self,
        topic: &Topic,
        after: u64,
        limit: usize,
        whole: bool,
    ) -> BoxFuture<'static, Result<HistoryPage, HubError>>;
    /// Every live node's roster of a topic with presence.
    fn rosters(&self, topic: &Topic) -> BoxFuture<'static, Result<Vec<NodeRoster>, HubError>>;
    /// A join or leave on a topic with presence, for other nodes' watchers.
    fn announce(&self, topic: &Topic, frame: &Utf8Bytes);
}

/// The hub's limits.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub max_topics_per_client: usize,
    /// Distinct topics the node holds at once.
    pub max_topics: usize,
    /// Commands the data channel holds.
    pub queue_len: usize,
    /// Bytes of client publishes the data channel holds.
    pub queue_bytes: usize,
    /// How long an admin call may wait for the hub.
    pub deadline: Duration,
    /// A client whose socket write has not finished in this long is evicted.
    pub write_timeout: Duration,
    /// A client that sent nothing (no frame, no pong) for this long is
    /// closed with `1000 "ping timeout"`.
    pub idle_timeout: Duration,
    /// Each client queue's limits (messages, bytes), for the fill metrics.
    pub send_queue_len: usize,
    pub send_queue_bytes: usize,
    /// Per-topic history (`--history-*`); off by default.
    pub history: HistoryConfig,
    /// Per-topic presence (`--presence-*`); off by default.
    pub presence: PresenceConfig,
}

/// Events kept for admin watchers that fall behind, before they lag.
const EVENT_BUFFER: usize = 4096;
/// Admin commands waiting for the hub; callers beyond it wait (with their deadline).
const CONTROL_QUEUE_LEN: usize = 64;

/// One registered client.
struct Entry {
    tx: ClientTx,
    topics: HashSet<Topic>,
}

/// The hub actor.
pub struct Hub {
    /// Clients' requests.
    rx: mpsc::Receiver<Command>,
    /// Admin calls: read before `rx`.
    control: mpsc::Receiver<Command>,
    config: HubConfig,
    /// What topics with history kept, for clients that come back.
    history: history::History,
    /// Join/leave watchers and leaves in their grace.
    presence: presence::Presence,
    /// Clients by id; ids grow with connection time, so this is also oldest-first.
    clients: BTreeMap<ClientId, Entry>,
    /// Topic → subscribers, holding queue handles so fan-out needs no second lookup.
    topics: HashMap<Topic, HashMap<ClientId, ClientTx>>,
    events: broadcast::Sender<Event>,
    /// Set once a drain or shutdown starts: new registrations are refused
    /// with this close. A connection whose handshake passed just before
    /// readiness turned off may register after the drain's last batch; it is
    /// closed like the rest instead of escaping the drain.
    refusing: Option<Closing>,
    started: Instant,
    /// What clients already gone sent and received.
    retired: Totals,
    evictions: u64,
    /// Reused between fan-outs: clients to evict once the fan-out loop is done.
    evict: Vec<ClientId>,
    /// The fullest any queue got at an enqueue since the last sample, and
    /// whether a client was evicted (its queue overflowed, or a write timed out): what the once-a-second sample
    /// alone would miss, since a queue can fill and evict between samples.
    peak: Fill,
    overflowed: bool,
    /// Whether the node-wide topic limit refused a subscribe since the
    /// topic count was last below it: the warning is logged once per crossing.
    at_topic_limit: bool,
    /// Other nodes, when there is a backplane.
    relay: Option<std::sync::Arc<dyn Relay>>,
    /// History kept by the backplane: publishes waiting to come back
    /// numbered, subscribes waiting for their stream read.
    remote: remote::Remote,
    reads_done: mpsc::Receiver<remote::Done>,
    metrics: &'static Handles,
}

impl Hub {
    /// A hub and the handle to reach it; run the hub with [`Hub::run`].
    pub fn new(config: HubConfig) -> (Hub, HubHandle) {
        let (tx, rx) = mpsc::channel(config.queue_len);
        let (control_tx, control) = mpsc::channel(CONTROL_QUEUE_LEN);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let metrics = metrics::handles();
        metrics::gauge_set(metrics::HUB_QUEUE_CAPACITY, config.queue_len as f64);
        let handle = HubHandle::new(tx, config.queue_bytes, control_tx, config.deadline);
        if config.history.size > 0 {
            let causes = history::NotRecovered::ALL.map(history::NotRecovered::as_str);
            let trims = history::Trim::ALL.map(history::Trim::as_str);
            metrics::history::start(&causes, &trims);
        }
        let (remote, reads_done) = remote::Remote::new();
        let hub = Hub {
            rx,
            control,
            history: history::History::new(config.history.clone()),
            presence: presence::Presence::default(),
            config,
            clients: BTreeMap::new(),
            topics: HashMap::new(),
            events,
            refusing: None,
            started: Instant::now(),
            retired: Totals::default(),
            evictions: 0,
            evict: Vec::new(),
            peak: Fill::default(),
            overflowed: false,
            at_topic_limit: false,
            relay: None,
            remote,
            reads_done,
            metrics,
        };
        (hub, handle)
    }

    /// Hands clients' publishes and topic interest on to other nodes.
    pub fn set_relay(&mut self, relay: std::sync::Arc<dyn Relay>) {
        self.relay = Some(relay);
        // With other nodes, topics' history is the backplane's.
        self.remote.on = self.config.history.size > 0;
    }

    /// Runs until every handle is dropped and both channels are empty.
    pub async fn run(mut self) {
        let mut sample = tokio::time::interval(metrics::QUEUE_SAMPLE_INTERVAL);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut control_open, mut data_open) = (true, true);
        while control_open || data_open {
            tokio::select! {
                // Admin first, then the sampler, then clients: a flood of
                // client requests delays neither operators nor metrics.
                biased;
                command = self.control.recv(), if control_open => match command {
                    Some(command) => self.handle(command),
                    None => control_open = false,
                },
                _ = sample.tick() => {
                    self.sample_queues();
                    self.sample_history();
                    self.presence_due(Instant::now());
                }
                Some(done) = self.reads_done.recv() => self.done(done),
                command = self.rx.recv(), if data_open => match command {
                    Some(command) => self.handle(command),
                    None => data_open = false,
                },
            }
        }
        tracing::debug!("hub stopped");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register {
                client,
                welcome,
                respond,
            } => {
                let result = self.register(client, welcome);
                let _ = respond.send(result);
            }
            Command::Unregister { shared, reason } => self.unregister(&shared, reason),
            Command::Subscribe {
                id,
                topic,
                request,
                since,
                join_leave,
            } => self.subscribe(id, topic, request, since, join_leave),
            Command::Presence {
                id,
                topic,
                request,
                stats,
            } => self.presence(id, topic, request, stats),
            Command::Unsubscribe { id, topic, request } => self.unsubscribe(id, topic, request),
            Command::Publish(publish) if self.numbers(&publish) => self.number(publish),
            Command::Publish(publish) => {
                self.relay(&publish);
                self.publish(publish)
            }
            Command::SendTo { id, frame, respond } => {
                let result = match self.clients.get(&id) {
                    None => Err(HubError::NotFound(id)),
                    Some(_) => Ok(self.push(id, frame)),
                };
                let _ = respond.send(result);
            }
            Command::ListClients { query, respond } => {
                let _ = respond.send(self.list(&query));
            }
            Command::GetClient { id, respond } => {
                let info = self.clients.get(&id).map(Self::info).ok_or(HubError::NotFound(id));
                let _ = respond.send(info);
            }
            Command::Kick {
                target,
                closing,
                respond,
            } => {
                let _ = respond.send(self.kick(&target, closing));
            }
            Command::Stats { respond } => {
                let _ = respond.send(self.stats());
            }
            Command::History {
                topic,
                since,
                limit,
                respond,
            } => {
                if self.remote.on && self.history.covers(&topic) {
                    self.read_for_admin(&topic, since, limit, respond);
                } else if self.remote.on {
                    let _ = respond.send(Ok(None));
                } else {
                    let _ = respond.send(Ok(self.history.page(&topic, since, limit, Instant::now())));
                }
            }
            Command::Announce { topic, frame } => self.announce_here(&topic, ClientId(0), frame),
            Command::Roster { full, respond } => {
                let _ = respond.send(self.roster(full));
            }
            Command::Watch { respond } => {
                let _ = respond.send(self.events.subscribe());
            }
            Command::DrainBatch { n, respond } => {
                self.refusing.get_or_insert_with(Closing::drain);
                let oldest: Vec<ClientId> = self.clients.keys().take(n).copied().collect();
                for id in &oldest {
                    self.remove_closing(*id, Closing::drain(), None);
                }
                let _ = respond.send((oldest.len() as u64, self.clients.len() as u64));
            }
            Command::Shutdown { respond } => {
                self.refusing = Some(Closing::shutdown());
                let ids: Vec<ClientId> = self.clients.keys().copied().collect();
                for id in ids {
                    self.remove_closing(id, Closing::shutdown(), None);
                }
                let _ = respond.send(());
            }
        }
    }

    fn register(&mut self, client: ClientTx, welcome: protocol::Frame) -> Result<(), HubError> {
        if let Some(closing) = &self.refusing {
            return Err(HubError::Refused(closing.clone()));
        }
        // The queue is new: the welcome always fits, and it is the first frame.
        let _ = client.try_push(welcome);
        let id = client.id;
        self.clients.insert(
            id,
            Entry {
                tx: client,
                topics: HashSet::new(),
            },
        );
        self.metrics.clients.set(self.clients.len() as f64);
        self.emit(EventKind::Connected, id, None, "", 0);
        Ok(())
    }

    /// A connection ended. If the hub still lists it, it left on its own
    /// (or its connection evicted it: a write timed out, or its queue could
    /// not take its own reply); it is removed now. The disconnect is
    /// announced once either way.
    fn unregister(&mut self, shared: &Shared, reason: DisconnectReason) {
        self.retired += shared.traffic.totals();
        let code = shared.closing().map_or(0, Closing::code);
        if self.remove(shared.id).is_some() && reason == DisconnectReason::SlowConsumer {
            self.evicted(shared);
        }
        self.emit(EventKind::Disconnected, shared.id, None, reason.as_str(), code);
    }

    /// Hands a client's publish to other nodes, which fan it out to their
    /// own clients; what came from them, or from the admin plane (which asks
    /// every node itself), goes no further. Kept out of [`Hub::publish`], so
    /// the fan-out loop compiles as it does on a node alone.
    fn relay(&self, publish: &Publish) {
        let Some(relay) = &self.relay else { return };
        let sender_here = publish.from.is_none_or(|id| self.clients.contains_key(&id));
        if publish.source == Source::Client && sender_here {
            relay.publish(publish.topic.as_ref(), &publish.frame);
        }
    }

    /// Takes a client out of the registry and its topics.
    fn remove(&mut self, id: ClientId) -> Option<Entry> {
        let entry = self.clients.remove(&id)?;
        self.remote.pending.remove(&id);
        for topic in &entry.topics {
            self.leave(topic, id);
            self.left(id, topic, entry.tx.user());
        }
        self.metrics.clients.set(self.clients.len() as f64);
        Some(entry)
    }

    /// Takes a client out of one topic's members, and the topic out of the
    /// registry once it has none.
    fn leave(&mut self, topic: &Topic, id: ClientId) {
        if let Some(members) = self.topics.get_mut(topic) {
            members.remove(&id);
            if members.is_empty() {
                self.topics.remove(topic);
                self.at_topic_limit = false;
                if let Some(relay) = &self.relay {
                    relay.interest(topic, false);
                }
            }
        }
        self.metrics.topics.set(self.topics.len() as f64);
    }

    /// Removes a client and closes it with `closing` once its queue is flushed.
    fn remove_closing(&mut self, id: ClientId, closing: Closing, event: Option<EventKind>) -> bool {
        let Some(entry) = self.remove(id) else { return false };
        if let Some(kind) = event {
            self.emit(kind, id, None, closing.reason.as_str(), closing.code());
        }
        entry.tx.close(closing);
        true
    }

    fn kick(&mut self, target: &KickTarget, closing: Closing) -> u64 {
        let ids: Vec<ClientId> = match target {
            KickTarget::Client(id) => vec![*id],
            KickTarget::User(user) => self
                .clients
                .values()
                .filter(|e| e.tx.user() == user)
                .map(|e| e.tx.id)
                .collect(),
            KickTarget::Topic(topic) => self
                .topics
                .get(topic)
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default(),
        };
        let mut kicked = 0;
        for id in ids {
            if self.remove_closing(id, closing.clone(), Some(EventKind::Kicked)) {
                kicked += 1;
            }
        }
        kicked
    }

    fn emit(&self, kind: EventKind, client_id: ClientId, topic: Option<Topic>, reason: &str, code: u16) {
        if self.events.receiver_count() > 0 {
            let event = Event {
                kind,
                client_id,
                topic,
                reason: reason.to_string(),
                code,
                at: SystemTime::now(),
            };
            let _ = self.events.send(event);
        }
    }
}

#[cfg(test)]
mod tests;

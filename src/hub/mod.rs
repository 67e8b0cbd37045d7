//! The hub: one actor task that owns who is connected and who listens to
//! what. Everything else holds a [`HubHandle`] and sends it [`Command`]s
//! over one bounded channel; there is no lock around the registry.
//!
//! The hub never waits on a client: fan-out `try_push`es into each client's
//! bounded queue, and a client whose queue is full is evicted (close 4008).

mod client;
mod command;
mod handle;
mod query;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime};

use tokio::sync::{broadcast, mpsc};

pub use client::{ClientId, ClientTx, Outbound, PushError, QueueStats, Shared};
pub use command::*;
pub use handle::HubHandle;

use crate::close::{Closing, DisconnectReason};
use crate::metrics::{self, DropReason, Handles};
use crate::protocol::{self, ErrorCode, RequestError, RequestId, Topic};

/// Errors the hub answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error("client {0} not found")]
    NotFound(ClientId),
}

/// Limits the hub enforces per client.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub max_topics_per_client: usize,
}

/// Events kept for admin watchers that fall behind, before they lag.
const EVENT_BUFFER: usize = 4096;

/// One registered client.
struct Entry {
    tx: ClientTx,
    topics: HashSet<Topic>,
}

/// The hub actor.
pub struct Hub {
    rx: mpsc::Receiver<Command>,
    config: HubConfig,
    /// Clients by id; ids grow with connection time, so this is also oldest-first.
    clients: BTreeMap<ClientId, Entry>,
    /// Topic → subscribers, holding queue handles so fan-out needs no second lookup.
    topics: HashMap<Topic, HashMap<ClientId, ClientTx>>,
    events: broadcast::Sender<Event>,
    /// Set by `Shutdown`: new registrations are refused.
    closing: bool,
    started: Instant,
    /// Sent/received totals of clients already gone.
    retired_sent: u64,
    retired_received: u64,
    evictions: u64,
    /// Reused between fan-outs: clients to evict once the fan-out loop is done.
    evict: Vec<ClientId>,
    metrics: &'static Handles,
}

impl Hub {
    /// A hub and the handle to reach it; run the hub with [`Hub::run`].
    pub fn new(config: HubConfig, queue_len: usize) -> (Hub, HubHandle) {
        let (tx, rx) = mpsc::channel(queue_len);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let metrics = metrics::handles();
        metrics::gauge_set(metrics::HUB_QUEUE_CAPACITY, queue_len as f64);
        let hub = Hub {
            rx,
            config,
            clients: BTreeMap::new(),
            topics: HashMap::new(),
            events,
            closing: false,
            started: Instant::now(),
            retired_sent: 0,
            retired_received: 0,
            evictions: 0,
            evict: Vec::new(),
            metrics,
        };
        (hub, HubHandle::new(tx))
    }

    /// Runs until every handle is dropped and the channel is empty.
    pub async fn run(mut self) {
        let mut sample = tokio::time::interval(metrics::QUEUE_SAMPLE_INTERVAL);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                _ = sample.tick() => self.sample_queues(),
            }
        }
        tracing::debug!("hub stopped");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register { client, respond } => {
                let result = self.register(client);
                let _ = respond.send(result);
            }
            Command::Unregister { shared, reason } => self.unregister(&shared, reason),
            Command::Subscribe { id, topic, request } => self.subscribe(id, topic, request),
            Command::Unsubscribe { id, topic, request } => self.unsubscribe(id, topic, request),
            Command::Publish(publish) => self.publish(publish),
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
            Command::Watch { respond } => {
                let _ = respond.send(self.events.subscribe());
            }
            Command::DrainBatch { n, respond } => {
                let oldest: Vec<ClientId> = self.clients.keys().take(n).copied().collect();
                for id in &oldest {
                    self.remove_closing(*id, Closing::drain(), None);
                }
                let _ = respond.send((oldest.len() as u64, self.clients.len() as u64));
            }
            Command::Shutdown { respond } => {
                self.closing = true;
                let ids: Vec<ClientId> = self.clients.keys().copied().collect();
                for id in ids {
                    self.remove_closing(id, Closing::shutdown(), None);
                }
                let _ = respond.send(());
            }
        }
    }

    fn register(&mut self, client: ClientTx) -> Result<(), HubError> {
        if self.closing {
            return Err(HubError::ShuttingDown);
        }
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

    /// A connection ended. If the hub still lists it (the client left on
    /// its own), it is removed now; either way the disconnect is announced once.
    fn unregister(&mut self, shared: &Shared, reason: DisconnectReason) {
        self.retired_sent += shared.messages_sent.load(std::sync::atomic::Ordering::Relaxed);
        self.retired_received += shared.messages_received.load(std::sync::atomic::Ordering::Relaxed);
        let code = shared.closing().map_or(0, Closing::code);
        let was_listed = self.remove(shared.id).is_some();
        if was_listed && reason == DisconnectReason::SlowConsumer {
            // Its queue overflowed with a reply of its own, outside a fan-out:
            // an eviction all the same, counted and announced like one.
            self.evictions += 1;
            self.emit(EventKind::Evicted, shared.id, None, reason.as_str(), code);
        }
        self.emit(EventKind::Disconnected, shared.id, None, reason.as_str(), code);
    }

    /// Takes a client out of the registry and its topics.
    fn remove(&mut self, id: ClientId) -> Option<Entry> {
        let entry = self.clients.remove(&id)?;
        for topic in &entry.topics {
            if let Some(members) = self.topics.get_mut(topic) {
                members.remove(&id);
                if members.is_empty() {
                    self.topics.remove(topic);
                }
            }
        }
        self.metrics.clients.set(self.clients.len() as f64);
        self.metrics.topics.set(self.topics.len() as f64);
        Some(entry)
    }

    /// Removes a client and closes it with `closing` once its queue is flushed.
    fn remove_closing(&mut self, id: ClientId, closing: Closing, event: Option<EventKind>) -> bool {
        let Some(entry) = self.remove(id) else { return false };
        if let Some(kind) = event {
            self.emit(kind, id, None, closing.reason.as_str(), closing.code());
        }
        entry.tx.close_after_flush(closing);
        true
    }

    /// Removes a client whose queue is full and closes it at once with 4008.
    fn evict(&mut self, id: ClientId) {
        let Some(entry) = self.remove(id) else { return };
        self.evictions += 1;
        let queue = entry.tx.queue_stats();
        tracing::info!(client_id = %id, depth = queue.depth, bytes = queue.bytes, "evicting slow consumer");
        let closing = Closing::slow_consumer();
        self.emit(EventKind::Evicted, id, None, closing.reason.as_str(), closing.code());
        entry.tx.abort(closing);
    }

    /// Queues a frame for one client, evicting it if its queue is full.
    fn push(&mut self, id: ClientId, frame: protocol::Frame) -> bool {
        let Some(entry) = self.clients.get(&id) else {
            return false;
        };
        match entry.tx.try_push(frame) {
            Ok(_) => true,
            Err(PushError::Closed) => {
                self.metrics.dropped(DropReason::Closing, 1);
                false
            }
            Err(PushError::Full) => {
                self.metrics.dropped(DropReason::SlowConsumer, 1);
                self.evict(id);
                false
            }
        }
    }

    fn reply(&mut self, id: ClientId, result: Result<(), RequestError>, request: Option<RequestId>) {
        let frame = match (result, request) {
            (Ok(()), Some(request)) => protocol::ack(&request),
            (Ok(()), None) => return,
            (Err(e), _) => {
                metrics::client_error(e.code.as_str());
                protocol::error(&e)
            }
        };
        self.push(id, frame);
    }

    fn subscribe(&mut self, id: ClientId, topic: Topic, request: Option<RequestId>) {
        let Some(entry) = self.clients.get_mut(&id) else { return };
        let result = if entry.topics.contains(&topic) {
            Ok(())
        } else if entry.topics.len() >= self.config.max_topics_per_client {
            Err(RequestError {
                code: ErrorCode::TooManyTopics,
                message: format!("at most {} topics per client", self.config.max_topics_per_client).into(),
                id: request.clone(),
            })
        } else {
            entry.topics.insert(topic.clone());
            self.topics
                .entry(topic.clone())
                .or_default()
                .insert(id, entry.tx.clone());
            self.metrics.topics.set(self.topics.len() as f64);
            self.emit(EventKind::Subscribed, id, Some(topic), "", 0);
            Ok(())
        };
        self.reply(id, result, request);
    }

    fn unsubscribe(&mut self, id: ClientId, topic: Topic, request: Option<RequestId>) {
        let Some(entry) = self.clients.get_mut(&id) else { return };
        if entry.topics.remove(&topic) {
            if let Some(members) = self.topics.get_mut(&topic) {
                members.remove(&id);
                if members.is_empty() {
                    self.topics.remove(&topic);
                }
            }
            self.metrics.topics.set(self.topics.len() as f64);
            self.emit(EventKind::Unsubscribed, id, Some(topic), "", 0);
        }
        self.reply(id, Ok(()), request);
    }

    fn publish(&mut self, publish: Publish) {
        let Publish {
            topic,
            frame,
            source,
            from,
            request,
            exclude,
            respond,
        } = publish;
        let mut delivery = Delivery::default();
        let mut closed = 0;
        {
            let mut deliver = |id: &ClientId, tx: &ClientTx| {
                if exclude.contains(id) {
                    return;
                }
                match tx.try_push(frame.clone()) {
                    Ok(_) => delivery.recipients += 1,
                    Err(PushError::Closed) => closed += 1,
                    Err(PushError::Full) => {
                        delivery.dropped += 1;
                        self.evict.push(*id);
                    }
                }
            };
            match &topic {
                Some(topic) => {
                    if let Some(members) = self.topics.get(topic) {
                        members.iter().for_each(|(id, tx)| deliver(id, tx));
                    }
                }
                None => self.clients.iter().for_each(|(id, entry)| deliver(id, &entry.tx)),
            }
        }
        self.metrics.broadcast(source, delivery.recipients as usize);
        self.metrics.dropped(DropReason::SlowConsumer, delivery.dropped);
        self.metrics.dropped(DropReason::Closing, closed);
        let mut evict = std::mem::take(&mut self.evict);
        for id in evict.drain(..) {
            self.evict(id);
        }
        self.evict = evict;
        if let Some(from) = from {
            self.reply(from, Ok(()), request);
        }
        if let Some(respond) = respond {
            let _ = respond.send(delivery);
        }
    }

    fn kick(&mut self, target: &KickTarget, closing: Closing) -> u64 {
        let ids: Vec<ClientId> = match target {
            KickTarget::Client(id) => vec![*id],
            // Users arrive with authentication; until then no client has one.
            KickTarget::User(_) => Vec::new(),
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

    fn stats(&self) -> Stats {
        let (sent, received) = self.clients.values().fold((0, 0), |(s, r), e| {
            let shared = &e.tx;
            (
                s + shared.messages_sent.load(std::sync::atomic::Ordering::Relaxed),
                r + shared.messages_received.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        Stats {
            clients: self.clients.len() as u64,
            topics: self.topics.len() as u64,
            hub_queue_depth: self.rx.len() as u32,
            hub_queue_capacity: self.rx.max_capacity() as u32,
            messages_sent: self.retired_sent + sent,
            messages_received: self.retired_received + received,
            slow_consumer_evictions: self.evictions,
            uptime: self.started.elapsed(),
        }
    }

    /// Samples every client's queue into the depth histogram, the deepest
    /// queue and the bytes queued; one pass per tick, nothing per delivery.
    fn sample_queues(&self) {
        let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
        let mut bytes = 0;
        for entry in self.clients.values() {
            let queue = entry.tx.queue_stats();
            *counts.entry(queue.depth).or_default() += 1;
            bytes += queue.bytes;
        }
        for (depth, n) in &counts {
            self.metrics.client_queue_depth.record_many(*depth as f64, *n);
        }
        let max = counts.keys().next_back().copied().unwrap_or(0);
        self.metrics.client_queue_depth_max.set(max as f64);
        self.metrics.client_queue_bytes.set(bytes as f64);
        self.metrics.hub_queue_depth.set(self.rx.len() as f64);
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

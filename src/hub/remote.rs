//! History kept by the backplane (a cluster with `--history-size`): the
//! hub's side of it. Topics' offsets and kept messages live in the engine's
//! streams, so that a client recovers on whichever node it comes back to.
//!
//! - A publish to a topic with history is not fanned out where it was made:
//!   it goes to the backplane to be numbered, and comes back to every node
//!   listening to the topic, this one included, with its offset
//!   ([`Hub::number`]). The publisher's ack (or an admin broadcast's answer)
//!   waits for the backplane to say which offset it got, at most
//!   [`CONFIRM_WAIT`]; if it was not numbered, the publisher is told
//!   (`unavailable`).
//! - A subscribe that needs the topic's position or what the client missed
//!   reads the stream in a task of its own; meanwhile the client's live
//!   messages on that topic are held back ([`Pending`]), so its ack, the
//!   replay and then the newer live messages arrive in order, none twice.

use std::sync::Arc;

use tokio::sync::{oneshot, Semaphore};

use super::history::NotRecovered;
use super::*;
use crate::protocol::{ErrorCode, RequestError, RequestId, Since};

/// How long a publisher waits for its publish's offset at most: past the
/// sender's own give-up time (2 s), which answers first.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);
/// Stream reads in flight at once; a subscribe past it is answered without
/// a position (and `recovered: false`, cause `busy`).
const READS: usize = 1024;
/// Publishes waiting for their offset, at most; past it a publisher is
/// answered `unavailable` at once.
const AWAITING_MAX: usize = 65_536;

/// Who waits for a numbered publish to come back.
enum Awaiting {
    Client(ClientId, RequestId),
    Admin(oneshot::Sender<Result<Delivery, HubError>>),
}

/// A subscribe waiting for its stream read.
pub(super) struct Pending {
    seq: u64,
    topic: Topic,
    request: Option<RequestId>,
    since: Option<Since>,
    /// Live messages for the client on the topic meanwhile: (offset, frame).
    held: Vec<(u64, Utf8Bytes)>,
    /// Once the read is back: the offset it ended at. A live message up to
    /// it may still come (it was numbered before the read, and its trip
    /// through pub/sub took longer): the client has it already, so it is
    /// skipped, until the first newer one ends this entry.
    floor: Option<u64>,
}

/// What comes back to the hub from the backplane's side.
#[derive(Debug)]
pub enum Done {
    /// A stream read for a subscribe.
    Read {
        client: ClientId,
        seq: u64,
        result: Result<HistoryPage, HubError>,
    },
    /// The offset a publish got (`None`: it was not numbered in time).
    Numbered { token: u64, offset: Option<u64> },
    /// Every node's clients on a topic with presence, for a request.
    Presence {
        client: ClientId,
        topic: Topic,
        request: Option<RequestId>,
        stats: bool,
        result: Result<Vec<super::NodeRoster>, HubError>,
    },
    /// A join or leave to announce after all (see `Hub::announce_unless`).
    Announce {
        topic: Topic,
        about: ClientId,
        frame: Utf8Bytes,
    },
}

pub(super) struct Remote {
    /// Whether history lives in the backplane (a cluster with history).
    pub(super) on: bool,
    done: mpsc::Sender<Done>,
    reads: Arc<Semaphore>,
    next_seq: u64,
    /// Subscribes waiting for their read, by client.
    pub(super) pending: HashMap<ClientId, Vec<Pending>>,
    next_token: u64,
    awaiting: HashMap<u64, (Topic, Awaiting)>,
}

impl Remote {
    pub(super) fn new() -> (Remote, mpsc::Receiver<Done>) {
        let (done, reads_done) = mpsc::channel(READS);
        let remote = Remote {
            on: false,
            done,
            reads: Arc::new(Semaphore::new(READS)),
            next_seq: 0,
            pending: HashMap::new(),
            next_token: 0,
            awaiting: HashMap::new(),
        };
        (remote, reads_done)
    }

    /// A slot for one more read of the backplane in flight (stream reads
    /// and presence reads share [`READS`]); `None` when all are taken.
    pub(super) fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.reads.clone().try_acquire_owned().ok()
    }

    /// Where a task's result goes back into the hub.
    pub(super) fn done(&self) -> mpsc::Sender<Done> {
        self.done.clone()
    }

    /// Holds a live frame back for `id` if it waits for a read on `topic`;
    /// false if it does not. `Err` when what it holds is at `limit`.
    pub(super) fn hold(
        &mut self,
        id: &ClientId,
        topic: &Topic,
        offset: u64,
        frame: &Utf8Bytes,
        limit: usize,
    ) -> Result<bool, ()> {
        let Some(pending) = self.pending.get_mut(id) else {
            return Ok(false);
        };
        let Some(at) = pending.iter().position(|p| &p.topic == topic) else {
            return Ok(false);
        };
        let p = &mut pending[at];
        match p.floor {
            Some(floor) if offset <= floor => return Ok(true),
            Some(_) => {
                pending.remove(at);
                if pending.is_empty() {
                    self.pending.remove(id);
                }
                return Ok(false);
            }
            None => {}
        }
        if p.held.len() >= limit {
            return Err(());
        }
        p.held.push((offset, frame.clone()));
        Ok(true)
    }
}

fn unconfirmed(request: RequestId) -> RequestError {
    RequestError {
        code: ErrorCode::Unavailable,
        message: "the backplane did not number this publish in time: it may not have been delivered".into(),
        id: Some(request),
    }
}

impl Hub {
    /// Whether this publish goes to the backplane to be numbered rather
    /// than out from here: one to a topic with history, made on this node.
    pub(super) fn numbers(&self, publish: &Publish) -> bool {
        self.remote.on
            && publish.numbered.is_none()
            && publish.source != Source::Backplane
            && publish.topic.as_ref().is_some_and(|t| self.history.covers(t))
    }

    /// Sends a publish to be numbered; whoever waits for it is answered
    /// with its offset once the backplane has given it one, or told it was
    /// not numbered.
    pub(super) fn number(&mut self, publish: Publish) {
        let Publish {
            topic,
            frame,
            from,
            request,
            respond,
            ..
        } = publish;
        let (Some(topic), Some(relay)) = (topic, self.relay.clone()) else {
            return;
        };
        if from.is_some_and(|id| !self.clients.contains_key(&id)) {
            self.metrics.dropped(metrics::DropReason::Closing, 1);
            return;
        }
        let awaiting = match (from, request, respond) {
            (Some(id), Some(request), _) => Some(Awaiting::Client(id, request)),
            (_, _, Some(respond)) => Some(Awaiting::Admin(respond)),
            _ => None,
        };
        let Some(awaiting) = awaiting else {
            relay.publish_numbered(&topic, &frame, None);
            return;
        };
        if self.remote.awaiting.len() >= AWAITING_MAX {
            return self.unconfirmed(awaiting);
        }
        let (confirm, offset) = oneshot::channel();
        if !relay.publish_numbered(&topic, &frame, Some(confirm)) {
            return self.unconfirmed(awaiting);
        }
        self.remote.next_token += 1;
        let token = self.remote.next_token;
        self.remote.awaiting.insert(token, (topic, awaiting));
        let done = self.remote.done.clone();
        tokio::spawn(async move {
            let offset = tokio::time::timeout(CONFIRM_WAIT, offset)
                .await
                .ok()
                .and_then(Result::ok);
            let _ = done.send(Done::Numbered { token, offset }).await;
        });
    }

    fn unconfirmed(&mut self, awaiting: Awaiting) {
        match awaiting {
            Awaiting::Client(id, request) => {
                let e = unconfirmed(request);
                metrics::client_error(e.code.as_str());
                self.push(id, protocol::error(&e));
            }
            Awaiting::Admin(respond) => {
                let _ = respond.send(Err(HubError::Backplane(
                    "the publish was not numbered in time; it may not have been delivered".into(),
                )));
            }
        }
    }

    pub(super) fn done(&mut self, done: Done) {
        match done {
            Done::Read { client, seq, result } => self.read_done(client, seq, result),
            Done::Presence {
                client,
                topic,
                request,
                stats,
                result,
            } => self.presence_read(client, &topic, request, stats, result),
            Done::Announce { topic, about, frame } => self.announce(&topic, about, frame),
            Done::Numbered { token, offset } => {
                let Some((topic, awaiting)) = self.remote.awaiting.remove(&token) else {
                    return;
                };
                match (offset, awaiting) {
                    (None, awaiting) => self.unconfirmed(awaiting),
                    (Some(offset), Awaiting::Client(id, request)) => {
                        self.push(id, protocol::ack_published(&request, offset));
                    }
                    (Some(offset), Awaiting::Admin(respond)) => {
                        // Its fan-out here comes with the message itself:
                        // the topic's subscribers here are who it goes to.
                        let recipients = self.topics.get(&topic).map_or(0, |m| m.len() as u64);
                        let _ = respond.send(Ok(Delivery {
                            recipients,
                            dropped: 0,
                            offset: Some(offset),
                        }));
                    }
                }
            }
        }
    }

    /// A subscribe to a topic with history in a cluster: the ack (with the
    /// position) and any replay wait for a read of the stream, and the
    /// client's live messages on the topic are held back until then. A
    /// subscribe that needs neither (no id, no `since`) is live at once.
    pub(super) fn read_for(&mut self, id: ClientId, topic: &Topic, request: Option<RequestId>, since: Option<Since>) {
        if request.is_none() && since.is_none() {
            return;
        }
        let permit = self.remote.permit();
        let (Some(relay), Some(permit)) = (self.relay.clone(), permit) else {
            // Too many reads at once: answered without a position.
            if since.is_some() {
                metrics::history::recovery(Err(NotRecovered::Busy.as_str()));
            }
            let ack = match (&request, &since) {
                (Some(request), Some(_)) => protocol::ack_not_recovered(request),
                (Some(request), None) => protocol::ack(request),
                (None, _) => return,
            };
            self.push(id, ack);
            return;
        };
        self.remote.next_seq += 1;
        let seq = self.remote.next_seq;
        let limit = self.config.history.recovery_max;
        // Without `since` only the position is wanted: nothing is after it.
        let after = since.as_ref().map_or(u64::MAX, |s| s.offset);
        let read = relay.read(topic, after, limit, true);
        let done = self.remote.done.clone();
        tokio::spawn(async move {
            let result = read.await;
            let _ = done
                .send(Done::Read {
                    client: id,
                    seq,
                    result,
                })
                .await;
            drop(permit);
        });
        let pending = self.remote.pending.entry(id).or_default();
        // An earlier read's floor on this topic is this one's to set now.
        pending.retain(|p| !(&p.topic == topic && p.floor.is_some()));
        pending.push(Pending {
            seq,
            topic: topic.clone(),
            request,
            since,
            held: Vec::new(),
            floor: None,
        });
    }

    /// A stream read came back: the ack, the replay (all or nothing), then
    /// the live messages held back meanwhile that are newer than the read.
    fn read_done(&mut self, id: ClientId, seq: u64, result: Result<HistoryPage, HubError>) {
        let Some(list) = self.remote.pending.get_mut(&id) else {
            return;
        };
        let Some(at) = list.iter().position(|p| p.seq == seq && p.floor.is_none()) else {
            return;
        };
        let pending = list.remove(at);
        if list.is_empty() {
            self.remote.pending.remove(&id);
        }
        let Pending {
            topic,
            request,
            since,
            held,
            ..
        } = pending;
        let max = self.config.history.recovery_max as u64;
        let replay = since.as_ref().map(|since| match &result {
            Ok(page) => super::history::replay_of(page, since, max),
            Err(_) => Err(NotRecovered::Unavailable),
        });
        let replay = self.settle(id, replay);
        if let Some(request) = request {
            let recovered = replay.as_ref().map(Result::is_ok);
            let ack = match &result {
                Ok(page) => protocol::ack_subscribed(&request, page.offset, &page.epoch, recovered),
                Err(_) if since.is_some() => protocol::ack_not_recovered(&request),
                Err(_) => protocol::ack(&request),
            };
            if !self.push(id, ack) {
                return;
            }
        }
        let subscribed = self.clients.get(&id).is_some_and(|e| e.topics.contains(&topic));
        if !subscribed {
            return;
        }
        if let Some(Ok(frames)) = replay {
            if !frames.is_empty() {
                if let Some(entry) = self.clients.get(&id) {
                    if let Ok(fill) = entry.tx.push_replay(frames) {
                        self.peak = self.peak.max(fill);
                    }
                }
            }
        }
        let newest = result.as_ref().map_or(0, |page| page.offset);
        let mut delivered_past = false;
        for (offset, frame) in held {
            if offset > newest {
                if !self.push(id, frame) {
                    return;
                }
                delivered_past = true;
            }
        }
        if let (Ok(_), false) = (&result, delivered_past) {
            self.remote.pending.entry(id).or_default().push(Pending {
                seq,
                topic,
                request: None,
                since: None,
                held: Vec::new(),
                floor: Some(newest),
            });
        }
    }

    /// The admin plane's history read in a cluster: from the stream, in a
    /// task of its own.
    pub(super) fn read_for_admin(
        &self,
        topic: &Topic,
        since: u64,
        limit: usize,
        respond: oneshot::Sender<Result<Option<HistoryPage>, HubError>>,
    ) {
        let Some(relay) = &self.relay else { return };
        let read = relay.read(topic, since, limit, false);
        tokio::spawn(async move {
            let _ = respond.send(read.await.map(Some));
        });
    }
}

//! The relay: the hub's outlet to other nodes (its clients' publishes and
//! topic interest), and what comes in from them: control messages routed
//! at once, publishes delivered into the hub in order.

use super::*;
use crate::hub::{HistoryPage, NodeRoster, Numbered};
use crate::protocol;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

impl Cluster {
    /// Routes what the engine received, never waiting: control messages
    /// are handled at once (requests in tasks of their own), publishes go
    /// to [`Cluster::deliver`]'s queue. So a busy hub delays neither the
    /// canary nor answers to other nodes; publishes it cannot take in time
    /// are dropped and counted, not buffered without bound.
    pub(super) async fn route(self: Arc<Self>, mut received: mpsc::Receiver<Inbound>, stop: CancellationToken) {
        let requests = Arc::new(Semaphore::new(MAX_REQUESTS));
        let (deliveries, queued) = mpsc::channel(INBOUND_QUEUE);
        let deliver = self.clone().deliver(queued, stop.clone());
        self.config.supervisor.spawn("backplane delivery", &stop, deliver);
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
            let mine = origin == self.node.as_str().as_bytes();
            // A join or leave from another node, for the watchers here.
            if frame.first() == Some(&b'!') {
                if let (false, Some(topic)) = (mine, &topic) {
                    self.event(topic, frame.slice(1..));
                }
                continue;
            }
            let Some((stamp, frame)) = open_stamp(frame) else {
                metrics::backplane_error(BackplaneError::Decode);
                continue;
            };
            // This node's own publish coming back: its clients have it,
            // unless it was numbered (then every node waits for it).
            if mine && stamp.is_none() {
                continue;
            }
            // Its share of the hub's byte budget is taken here, before it
            // waits anywhere: what the hub has no room for is dropped and
            // counted, so another node's publishes are bounded in bytes as a
            // client's are, not by a queue length of large frames.
            let Some(budget) = self.hub.reserve(frame.len()) else {
                metrics::backplane_dropped(Dropped::Inbound, 1);
                continue;
            };
            if deliveries.try_send((topic, frame, budget, stamp)).is_err() {
                metrics::backplane_dropped(Dropped::Inbound, 1);
            }
        }
    }

    /// Another node's join or leave: to this node's watchers of the topic
    /// if the hub has room now (an event the hub is too busy for is
    /// dropped and counted, like a message).
    fn event(&self, topic: &Topic, frame: Bytes) {
        let Ok(frame) = Utf8Bytes::try_from(frame) else {
            metrics::backplane_error(BackplaneError::Decode);
            return;
        };
        let topic = topic.clone();
        if self.hub.try_send(Command::Announce { topic, frame }).is_err() {
            metrics::backplane_dropped(Dropped::Inbound, 1);
        }
    }

    /// A message on this node's control channel.
    pub(super) fn control(self: &Arc<Self>, requests: &Arc<Semaphore>, payload: &[u8]) {
        match Message::decode(payload) {
            // A process that found an older one running as this node
            // answers nothing: the older one answers for this node.
            Some(Message::Request { .. }) if self.twin.load(Ordering::Relaxed) => {}
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
            Some(Message::Heartbeat { seq, instance, .. }) if instance == self.instance => self.heartbeat_back(seq),
            Some(Message::Heartbeat { instance, started, .. }) => self.conflict(started, instance),
            Some(Message::Leaving { node }) => self.left(&node),
            None => metrics::backplane_error(BackplaneError::Decode),
        }
    }
}

impl Cluster {
    /// Fans other nodes' publishes out here, in the order they came,
    /// waiting for room in the hub's channel (their bytes are reserved).
    pub(super) async fn deliver(self: Arc<Self>, mut queued: mpsc::Receiver<Delivering>, stop: CancellationToken) {
        loop {
            let (topic, frame, budget, stamp) = tokio::select! {
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
            let numbered = match (stamp, &topic) {
                (None, _) => vec![(frame, None)],
                (Some(stamp), Some(topic)) => {
                    let in_order = tokio::select! {
                        in_order = self.in_order(topic, stamp, frame) => in_order,
                        _ = stop.cancelled() => return,
                    };
                    in_order
                        .into_iter()
                        .map(|(frame, numbered)| (protocol::with_offset(&frame, numbered.offset), Some(numbered)))
                        .collect()
                }
                (Some(_), None) => {
                    metrics::backplane_error(BackplaneError::Decode);
                    continue;
                }
            };
            // The byte budget was taken for the message that came; the
            // ones fetched to fill a gap before it ride along (at most GAP_MAX).
            let mut budget = Some(budget);
            for (frame, numbered) in numbered {
                let publish = Publish {
                    topic: topic.clone(),
                    frame,
                    source: Source::Backplane,
                    from: None,
                    request: None,
                    exclude: Default::default(),
                    respond: None,
                    numbered,
                    budget: budget.take(),
                };
                if self.hub.send(Command::Publish(publish)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// A numbered message, in its topic's order: what to deliver now,
    /// oldest first. The next offset is delivered at once; one past a gap
    /// after the missing ones, fetched from the stream within [`GAP_WAIT`]
    /// (at most [`GAP_MAX`]). A gap that cannot be filled, or a new epoch
    /// (the history was lost), closes the topic's subscribers here with
    /// 4010 so they come back with `since`. An offset already delivered is
    /// skipped.
    async fn in_order(&self, topic: &Topic, stamp: Stamp, frame: Utf8Bytes) -> Vec<(Utf8Bytes, Numbered)> {
        let last = {
            let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            let was = tracked.get(topic).cloned();
            let newer = match &was {
                Some((epoch, last)) => **epoch != *stamp.epoch || stamp.offset > *last,
                None => true,
            };
            if newer {
                tracked.insert(topic.clone(), (stamp.epoch.clone(), stamp.offset));
            }
            was
        };
        let this = (frame, Numbered { offset: stamp.offset });
        let last = match last {
            None => return vec![this],
            Some((epoch, last)) if *epoch == *stamp.epoch => last,
            Some(_) => {
                metrics::history::gap(false);
                self.history_lost(topic, "the topic's history began again (a new epoch)")
                    .await;
                return vec![this];
            }
        };
        if stamp.offset <= last {
            return Vec::new();
        }
        if stamp.offset == last + 1 {
            return vec![this];
        }
        let missing = stamp.offset - last - 1;
        match self.fill(topic, &stamp.epoch, last, missing).await {
            Ok(mut filled) => {
                metrics::history::gap(true);
                filled.push(this);
                filled
            }
            Err(why) => {
                metrics::history::gap(false);
                self.history_lost(topic, why).await;
                vec![this]
            }
        }
    }

    /// Fetches offsets `last + 1 ..= last + missing` from the stream.
    async fn fill(
        &self,
        topic: &Topic,
        epoch: &str,
        last: u64,
        missing: u64,
    ) -> Result<Vec<(Utf8Bytes, Numbered)>, &'static str> {
        if missing > GAP_MAX {
            return Err("the gap is larger than a fill fetches");
        }
        let engine = self.engine.as_ref().ok_or("no backplane")?;
        let read = tokio::time::timeout(GAP_WAIT, engine.read_stream(topic, last, missing as usize, false))
            .await
            .map_err(|_| "the stream did not answer in time")?
            .map_err(|_| "the stream could not be read")?;
        if read.epoch != epoch {
            return Err("the topic's history began again (a new epoch)");
        }
        let complete = read.entries.len() as u64 == missing
            && read
                .entries
                .iter()
                .zip(last + 1..)
                .all(|(e, expected)| e.offset == expected);
        if !complete {
            return Err("the stream no longer keeps the missing messages");
        }
        read.entries
            .into_iter()
            .map(|e| {
                let frame = Utf8Bytes::try_from(e.frame).map_err(|_| "a kept message is not UTF-8")?;
                Ok((frame, Numbered { offset: e.offset }))
            })
            .collect()
    }

    /// Closes the topic's subscribers here (4010): they missed messages
    /// that cannot be given to them in order.
    async fn history_lost(&self, topic: &Topic, why: &str) {
        tracing::warn!(%topic, why, "backplane: missed messages on a topic with history could not be fetched; closing its subscribers here with 4010 so they resubscribe with since");
        if let Err(e) = self
            .hub
            .kick(KickTarget::Topic(topic.clone()), Closing::history_lost())
            .await
        {
            tracing::debug!(error = %e, "backplane: could not close a topic's subscribers");
        }
    }
}

/// A publish on its way into the hub: its topic, frame, share of the hub's
/// byte budget and, when numbered, its stamp.
type Delivering = (Option<Topic>, Bytes, OwnedSemaphorePermit, Option<Stamp>);

/// A gap larger than this is not fetched: the topic's subscribers are
/// closed instead (4010).
const GAP_MAX: u64 = 1000;
/// How long a fill may take.
const GAP_WAIT: Duration = Duration::from_secs(1);

/// A numbered message's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stamp {
    epoch: Box<str>,
    offset: u64,
}

/// A publish's envelope, `<origin node>\n<frame>`: (origin, frame).
pub(super) fn open_envelope(payload: &Bytes) -> Option<(&[u8], Bytes)> {
    let split = payload.iter().position(|&b| b == b'\n')?;
    Some((&payload[..split], payload.slice(split + 1..)))
}

/// A numbered message's header line, `#<epoch> <offset>\n`, if
/// there is one, and the frame after it. `None`: a malformed header.
pub(super) fn open_stamp(frame: Bytes) -> Option<(Option<Stamp>, Bytes)> {
    if frame.first() != Some(&b'#') {
        return Some((None, frame));
    }
    let split = frame.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&frame[1..split]).ok()?;
    let mut fields = header.split(' ');
    let (epoch, offset) = (fields.next()?, fields.next()?);
    if fields.next().is_some() || epoch.is_empty() || epoch.len() > crate::protocol::MAX_EPOCH_LEN {
        return None;
    }
    let stamp = Stamp {
        epoch: epoch.into(),
        offset: offset.parse().ok()?,
    };
    Some((Some(stamp), frame.slice(split + 1..)))
}

/// The hub's way out to other nodes: the engine and this node's name, and
/// no hub handle, so the hub does not keep itself alive through it.
pub struct Outlet {
    pub(super) node: NodeId,
    pub(super) engine: Arc<dyn Engine>,
    pub(super) tracked: Tracked,
    /// Rosters of nodes not refreshed within this are not read.
    pub(super) presence_ttl: Duration,
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
            metrics::backplane_dropped(Dropped::Outbound, 1);
        }
    }

    fn interest(&self, topic: &Topic, on: bool) {
        self.engine.listen(Channel::Topic(topic.clone()), on);
        if !on {
            self.tracked.lock().unwrap_or_else(|e| e.into_inner()).remove(topic);
        }
    }

    fn publish_numbered(&self, topic: &Topic, frame: &Utf8Bytes, confirm: Option<oneshot::Sender<u64>>) -> bool {
        let message = crate::backplane::Numbered {
            topic: topic.clone(),
            origin: Bytes::copy_from_slice(self.node.as_str().as_bytes()),
            frame: Bytes::from(frame.clone()),
            confirm,
        };
        let sent = self.engine.publish_numbered(message);
        if !sent {
            metrics::backplane_dropped(Dropped::Outbound, 1);
        }
        sent
    }

    fn read(
        &self,
        topic: &Topic,
        after: u64,
        limit: usize,
        whole: bool,
    ) -> BoxFuture<'static, Result<HistoryPage, HubError>> {
        let (engine, topic) = (self.engine.clone(), topic.clone());
        Box::pin(async move {
            let read = engine.read_stream(&topic, after, limit, whole).await.map_err(|e| {
                tracing::debug!(%topic, error = %e, "backplane: a history read failed");
                metrics::backplane_error(BackplaneError::History);
                HubError::Backplane(format!("reading the history of {topic}: {e}"))
            })?;
            let first = read.entries.first().map_or(read.offset + 1, |e| e.offset);
            let messages = read
                .entries
                .into_iter()
                .filter_map(|e| {
                    let frame = Utf8Bytes::try_from(e.frame).ok()?;
                    Some((e.offset, protocol::with_offset(&frame, e.offset)))
                })
                .collect();
            Ok(HistoryPage {
                epoch: read.epoch.into(),
                offset: read.offset,
                messages,
                trimmed: after < read.offset && first > after + 1,
            })
        })
    }

    fn rosters(&self, topic: &Topic) -> BoxFuture<'static, Result<Vec<NodeRoster>, HubError>> {
        let (engine, topic, ttl) = (self.engine.clone(), topic.clone(), self.presence_ttl);
        let node = self.node.clone();
        Box::pin(async move {
            let rosters = engine.read_rosters(&topic, ttl).await.map_err(|e| {
                metrics::backplane_error(BackplaneError::Presence);
                HubError::Backplane(format!("reading the presence of {topic}: {e}"))
            })?;
            // One that does not parse is another node's bug, counted.
            Ok(rosters
                .into_iter()
                .filter_map(|(owner, roster)| {
                    let decoded = crate::backplane::wire::decode_roster(&roster, owner == node.as_str());
                    if decoded.is_none() {
                        metrics::backplane_error(BackplaneError::Decode);
                    }
                    decoded
                })
                .collect())
        })
    }

    fn announce(&self, topic: &Topic, frame: &Utf8Bytes) {
        let mut payload = BytesMut::with_capacity(self.node.as_str().len() + 2 + frame.len());
        payload.put_slice(self.node.as_str().as_bytes());
        payload.put_slice(b"\n!");
        payload.put_slice(frame.as_bytes());
        if !self.engine.publish(Channel::Topic(topic.clone()), payload.freeze()) {
            metrics::backplane_dropped(Dropped::Outbound, 1);
        }
    }
}

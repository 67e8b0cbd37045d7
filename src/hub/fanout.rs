//! Fan-out and per-client replies: the hub's hot path. Frames are
//! `try_push`ed into client queues; a full queue evicts its client, through
//! the one eviction path ([`Shared::evict`], counted in [`Hub::evicted`]).

use super::*;
use crate::metrics::DropReason;
use std::time::Instant;

use super::history::NotRecovered;

/// What a client that came back gets: the frames it missed, or why not.
pub(super) type Replay = Result<Vec<Utf8Bytes>, NotRecovered>;
use crate::protocol::{self, ErrorCode, RequestError, RequestId, Since};

impl Hub {
    /// Counts, logs and announces an eviction: the one place for all of
    /// them, whether the hub's fan-out or the client's own connection
    /// (a write timeout, its own reply overflowing) found it too slow.
    pub(super) fn evicted(&mut self, shared: &Shared) {
        self.evictions += 1;
        self.overflowed = true;
        let queue = shared.queue_stats();
        tracing::info!(
            client_id = %shared.id,
            remote_addr = %shared.remote_addr,
            trigger = %shared.trigger().map_or("", Trigger::as_str),
            depth = queue.depth,
            bytes = queue.bytes,
            "evicted slow consumer"
        );
        let code = shared.closing().map_or(0, Closing::code);
        self.emit(
            EventKind::Evicted,
            shared.id,
            None,
            DisconnectReason::SlowConsumer.as_str(),
            code,
        );
    }

    /// Removes a client that is too slow (its queue is full, or its socket
    /// write timed out) and evicts it (close 4008 next).
    pub(super) fn evict(&mut self, id: ClientId, trigger: Option<Trigger>) {
        let Some(entry) = self.remove(id) else { return };
        let discarded = entry.tx.evict(trigger).unwrap_or(0);
        self.metrics.dropped(DropReason::SlowConsumer, discarded as u64);
        self.evicted(&entry.tx);
    }

    /// Queues a frame for one client, evicting it if its queue is full.
    pub(super) fn push(&mut self, id: ClientId, frame: protocol::Frame) -> bool {
        let Some(entry) = self.clients.get(&id) else {
            return false;
        };
        match entry.tx.try_push(frame) {
            Ok(fill) => {
                self.peak = self.peak.max(fill);
                true
            }
            Err(PushError::Closed) => {
                self.metrics.dropped(DropReason::Closing, 1);
                false
            }
            Err(PushError::Full) => {
                self.metrics.dropped(DropReason::SlowConsumer, 1);
                self.evict(id, None);
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

    pub(super) fn subscribe(
        &mut self,
        id: ClientId,
        topic: Topic,
        request: Option<RequestId>,
        since: Option<Since>,
        join_leave: bool,
    ) {
        let Some(entry) = self.clients.get_mut(&id) else { return };
        let mut joined = false;
        let result = if entry.topics.contains(&topic) {
            Ok(())
        } else if entry.topics.len() >= self.config.max_topics_per_client {
            Err(RequestError {
                code: ErrorCode::TooManyTopics,
                message: format!("at most {} topics per client", self.config.max_topics_per_client).into(),
                id: request.clone(),
            })
        } else if self.topics.len() >= self.config.max_topics && !self.topics.contains_key(&topic) {
            if !std::mem::replace(&mut self.at_topic_limit, true) {
                tracing::warn!(
                    max_topics = self.config.max_topics,
                    "node topic limit reached; subscribes to new topics answer too_many_topics"
                );
            }
            Err(RequestError {
                code: ErrorCode::TooManyTopics,
                message: format!("this node holds its limit of {} topics", self.config.max_topics).into(),
                id: request.clone(),
            })
        } else {
            entry.topics.insert(topic.clone());
            let members = self.topics.entry(topic.clone()).or_default();
            if members.is_empty() {
                if let Some(relay) = &self.relay {
                    relay.interest(&topic, true);
                }
            }
            members.insert(id, entry.tx.clone());
            self.metrics.topics.set(self.topics.len() as f64);
            self.emit(EventKind::Subscribed, id, Some(topic.clone()), "", 0);
            joined = true;
            Ok(())
        };
        if result.is_ok() && (joined || join_leave) {
            self.joined(id, &topic, join_leave, joined);
        }
        match result {
            Ok(()) if since.is_some() || self.history.covers(&topic) => self.subscribed(id, &topic, request, since),
            result => self.reply(id, result, request),
        }
    }

    /// A subscribe that took, to a topic with history or asking for what
    /// it missed: the ack carries the topic's position and, when asked,
    /// whether the missed messages follow; they go next, before anything
    /// newer (the hub does nothing else meanwhile), all or none.
    fn subscribed(&mut self, id: ClientId, topic: &Topic, request: Option<RequestId>, since: Option<Since>) {
        if self.remote.on && self.history.covers(topic) {
            return self.read_for(id, topic, request, since);
        }
        let now = Instant::now();
        let replay = since.map(|since| self.history.recover(topic, &since, now));
        let replay = self.settle(id, replay);
        if let Some(request) = request {
            let recovered = replay.as_ref().map(Result::is_ok);
            let ack = if self.history.covers(topic) {
                let position = self.history.position(topic);
                protocol::ack_subscribed(&request, position.offset, &position.epoch, recovered)
            } else {
                protocol::ack_not_recovered(&request)
            };
            if !self.push(id, ack) {
                return;
            }
        }
        let Some(Ok(frames)) = replay else { return };
        if frames.is_empty() {
            return;
        }
        let Some(entry) = self.clients.get(&id) else { return };
        if let Ok(fill) = entry.tx.push_replay(frames) {
            self.peak = self.peak.max(fill);
        }
    }

    /// A recovery's outcome, counted: one replay at a time per client, so
    /// what it queues past its limits stays within one --recovery-max.
    pub(super) fn settle(&self, id: ClientId, replay: Option<Replay>) -> Option<Replay> {
        let replay = match replay {
            Some(Ok(frames)) if !frames.is_empty() && self.clients.get(&id).is_some_and(|e| e.tx.replaying()) => {
                Some(Err(NotRecovered::Busy))
            }
            replay => replay,
        };
        if let Some(replay) = &replay {
            metrics::history::recovery(replay.as_ref().map(Vec::len).map_err(|cause| cause.as_str()));
        }
        replay
    }

    pub(super) fn unsubscribe(&mut self, id: ClientId, topic: Topic, request: Option<RequestId>) {
        let Some(entry) = self.clients.get_mut(&id) else { return };
        if entry.topics.remove(&topic) {
            let user = entry.tx.user().to_string();
            self.leave(&topic, id);
            self.left(id, &topic, &user);
            self.emit(EventKind::Unsubscribed, id, Some(topic), "", 0);
        }
        self.reply(id, Ok(()), request);
    }

    pub(super) fn publish(&mut self, publish: Publish) {
        let Publish {
            topic,
            frame,
            source,
            from,
            request,
            exclude,
            respond,
            numbered,
            budget: _budget,
        } = publish;
        if from.is_some_and(|id| !self.clients.contains_key(&id)) {
            // Its sender was removed (kicked, drained, evicted) after it
            // read the request: a closing client's publish reaches no one.
            self.metrics.dropped(DropReason::Closing, 1);
            return;
        }
        // On a topic with history the message gets its offset, and every
        // recipient the frame that carries it.
        let (frame, offset) = match &topic {
            // Numbered by the backplane: the frame carries its offset.
            _ if numbered.is_some() => (frame, numbered.map(|n| n.offset)),
            Some(t) if self.history.covers(t) && !self.remote.on => {
                let (offset, frame) = self.history.append(t, &frame, Instant::now());
                (frame, Some(offset))
            }
            _ => (frame, None),
        };
        let mut delivery = Delivery {
            offset,
            ..Delivery::default()
        };
        let mut closed = 0;
        let mut peak = self.peak;
        // Subscribers waiting for a stream read get this later, in order.
        let hold = match (&topic, numbered) {
            (Some(topic), Some(n)) if !self.remote.pending.is_empty() => Some((topic, n.offset)),
            _ => None,
        };
        let held_max = self.config.send_queue_len;
        {
            let remote = &mut self.remote;
            let mut deliver = |id: &ClientId, tx: &ClientTx| {
                if exclude.contains(id) {
                    return;
                }
                if let Some((topic, offset)) = hold {
                    match remote.hold(id, topic, offset, &frame, held_max) {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(()) => {
                            delivery.dropped += 1;
                            self.evict.push(*id);
                            return;
                        }
                    }
                }
                match tx.try_push(frame.clone()) {
                    Ok(fill) => {
                        delivery.recipients += 1;
                        peak = peak.max(fill);
                    }
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
        self.peak = peak;
        self.metrics.broadcast(source, delivery.recipients as usize);
        self.metrics.dropped(DropReason::SlowConsumer, delivery.dropped);
        self.metrics.dropped(DropReason::Closing, closed);
        let mut evict = std::mem::take(&mut self.evict);
        for id in evict.drain(..) {
            self.evict(id, None);
        }
        self.evict = evict;
        if let Some(from) = from {
            match (request, offset) {
                (Some(request), Some(offset)) => {
                    self.push(from, protocol::ack_published(&request, offset));
                }
                (request, _) => self.reply(from, Ok(()), request),
            }
        }
        if let Some(respond) = respond {
            let _ = respond.send(Ok(delivery));
        }
    }
}

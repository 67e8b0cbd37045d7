//! The relay: the hub's outlet to other nodes (its clients' publishes and
//! topic interest), and what comes in from them: control messages routed
//! at once, publishes delivered into the hub in order.

use super::*;

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
            // This node's own publish coming back: its clients have it.
            if origin == self.node.as_str().as_bytes() {
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
            if deliveries.try_send((topic, frame, budget)).is_err() {
                metrics::backplane_dropped(Dropped::Inbound, 1);
            }
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
    pub(super) async fn deliver(
        self: Arc<Self>,
        mut queued: mpsc::Receiver<(Option<Topic>, Bytes, OwnedSemaphorePermit)>,
        stop: CancellationToken,
    ) {
        loop {
            let (topic, frame, budget) = tokio::select! {
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
                budget: Some(budget),
            };
            if self.hub.send(Command::Publish(publish)).await.is_err() {
                return;
            }
        }
    }
}

/// A publish's envelope, `<origin node>\n<frame>`: (origin, frame).
pub(super) fn open_envelope(payload: &Bytes) -> Option<(&[u8], Bytes)> {
    let split = payload.iter().position(|&b| b == b'\n')?;
    Some((&payload[..split], payload.slice(split + 1..)))
}

/// The hub's way out to other nodes: the engine and this node's name, and
/// no hub handle, so the hub does not keep itself alive through it.
pub struct Outlet {
    pub(super) node: NodeId,
    pub(super) engine: Arc<dyn Engine>,
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
    }
}

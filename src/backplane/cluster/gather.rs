//! Scatter-gather: the admin calls that run on every node, and the
//! executor that runs other nodes' requests on this node's hub.

use super::*;

impl Cluster {
    pub(super) fn answer(&self, to: NodeId, id: u64, answer: Answer) {
        let message = Message::Answer {
            id,
            node: self.node.clone(),
            answer,
        };
        self.send(to, &message);
    }

    pub(super) fn send(&self, to: NodeId, message: &Message) -> bool {
        let Some(engine) = &self.engine else { return false };
        let sent = engine.publish(Channel::Node(to), message.encode());
        if !sent {
            metrics::backplane_dropped(Dropped::Outbound, 1);
        }
        sent
    }

    /// Runs one operation on this node's hub.
    pub(super) async fn execute(&self, op: Op) -> Result<Answer, HubError> {
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

    /// Runs `op_for(node)` on this node and on every other live node (or on
    /// `only` that one). One deadline bounds the whole call: the requests go
    /// out first, this node's part runs while they travel, and answers are
    /// awaited until the deadline; nodes that have not answered by then are
    /// `missing` (the answer is partial).
    pub(super) async fn gather(
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
        // Numbered once, from here: the hub sends it to every node through
        // the stream and answers when it comes back with its offset. Only
        // this node's recipients are counted (exclude is refused earlier).
        if self.numbers(topic.as_ref()) {
            let delivery = self.hub.broadcast(topic, frame, Default::default()).await?;
            return Ok(Gathered {
                value: delivery,
                nodes: vec![self.node.clone()],
                missing: Vec::new(),
            });
        }
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
                        // Not a topic with history in a cluster (those
                        // are numbered once, above): a node's own offset.
                        offset: sum.offset.or(d.offset),
                    },
                    _ => sum,
                })
        }))
    }

    /// The ids among `refs` that name clients of `node`.
    pub(super) fn on_node(&self, refs: &[ClientRef], node: &NodeId) -> Vec<ClientId> {
        refs.iter()
            .filter(|r| r.node.as_ref().unwrap_or(&self.node) == node)
            .map(|r| r.id)
            .collect()
    }

    /// The node that owns a client, from its id.
    pub(super) fn owner<'a>(&'a self, client: &'a ClientRef) -> &'a NodeId {
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
}

impl<T> Gathered<T> {
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Gathered<U> {
        Gathered {
            value: f(self.value),
            nodes: self.nodes,
            missing: self.missing,
        }
    }
}

/// Removes a finished call's entry from the pending map, however it ends.
pub(super) struct Pending<'a> {
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

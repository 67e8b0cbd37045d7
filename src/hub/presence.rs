//! Presence on one node: who is subscribed to a topic (`presence`), how
//! many clients and users (`presence_stats`), and join/leave events for the
//! subscribers that ask for them (`"join_leave": true` on subscribe).
//!
//! A user's leave waits `--presence-grace`: if the same user joins the
//! topic again within it (a reconnect, a rolling deploy), neither the leave
//! nor the join is announced, so a deploy does not become a join/leave
//! storm. Clients without a user (no client tokens) are announced at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::remote::Done;
use super::*;
use crate::protocol::{ErrorCode, RequestError, RequestId};
use crate::types::TopicPatterns;

#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// Topics with presence; none by default.
    pub topics: TopicPatterns,
    /// Clients one `presence` answer lists at most.
    pub max: usize,
    /// How long a user's leave waits for the same user to come back.
    pub grace: Duration,
}

impl PresenceConfig {
    pub fn off() -> PresenceConfig {
        PresenceConfig {
            topics: TopicPatterns::none(),
            max: 1000,
            grace: Duration::from_secs(5),
        }
    }
}

/// Join/leave watchers and the leaves waiting out their grace.
#[derive(Default)]
pub struct Presence {
    /// Topic → the subscribers that asked for join/leave events.
    watchers: HashMap<Topic, HashSet<ClientId>>,
    /// Leaves of users, oldest first, announced once due.
    leaving: VecDeque<Leaving>,
    /// (topic, user) → leaves of it waiting and not cancelled by a join.
    waiting: HashMap<(Topic, Box<str>), u32>,
    /// (topic, user) → leaves of it waiting that a join cancelled.
    cancelled: HashMap<(Topic, Box<str>), u32>,
    /// Topic → user → its clients subscribed: `presence_stats` in O(1).
    users: HashMap<Topic, HashMap<Box<str>, u32>>,
    /// In a cluster: topics whose clients here changed since the backplane
    /// last took this node's rosters.
    dirty: HashSet<Topic>,
}

/// This node's part of the cluster's presence, taken each heartbeat.
#[derive(Debug, Default)]
pub struct Roster {
    /// Topics whose clients here changed (or all, when asked), each with
    /// its roster here (empty: nothing left here).
    pub changed: Vec<(Topic, NodeRoster)>,
    /// Topics with presence and clients (or leaves in their grace) here.
    pub held: Vec<Topic>,
}

/// One node's clients on a topic with presence, as the cluster keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRoster {
    /// Whether it is this node's own.
    pub here: bool,
    /// (client id, user).
    pub clients: Vec<(String, String)>,
    /// Users whose leave there waits out its grace.
    pub leaving: Vec<String>,
}

impl NodeRoster {
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.leaving.is_empty()
    }
}

/// Takes one from a count, forgetting it at zero; whether there was one.
fn take_one(counts: &mut HashMap<(Topic, Box<str>), u32>, key: &(Topic, Box<str>)) -> bool {
    let Some(n) = counts.get_mut(key) else { return false };
    *n -= 1;
    if *n == 0 {
        counts.remove(key);
    }
    true
}

/// When a join or leave in a cluster goes unannounced.
enum Unless {
    /// The user is on the topic on another node, or its leave there waits
    /// out its grace (a move between nodes: no join).
    OnElsewhere(Box<str>),
    /// The user is on the topic on another node.
    PresentElsewhere(Box<str>),
}

struct Leaving {
    due: Instant,
    topic: Topic,
    client: ClientId,
    user: Box<str>,
}

impl Hub {
    fn presence_on(&self, topic: &Topic) -> bool {
        self.config.presence.topics.matches(topic)
    }

    /// The refusal for a presence request the client may not make here.
    fn presence_refusal(&self, id: ClientId, topic: &Topic, request: &Option<RequestId>) -> Option<RequestError> {
        let refuse = |code, message: &'static str| {
            Some(RequestError {
                code,
                message: message.into(),
                id: request.clone(),
            })
        };
        if !self.presence_on(topic) {
            return refuse(
                ErrorCode::PresenceDisabled,
                "this topic has no presence (--presence-topics)",
            );
        }
        if !self.topics.get(topic).is_some_and(|m| m.contains_key(&id)) {
            return refuse(ErrorCode::Forbidden, "subscribe to the topic first");
        }
        None
    }

    /// `presence`: the topic's clients, up to `--presence-max`.
    pub(super) fn presence(&mut self, id: ClientId, topic: Topic, request: Option<RequestId>, stats: bool) {
        if let Some(e) = self.presence_refusal(id, &topic, &request) {
            metrics::client_error(e.code.as_str());
            self.push(id, protocol::error(&e));
            return;
        }
        if let Some(relay) = self.relay.clone() {
            // In a cluster: every node's clients, from the backplane, with
            // at most READS reads in flight.
            let Some(permit) = self.remote.permit() else {
                let busy = Err(HubError::Backplane("too many presence reads in flight; retry".into()));
                return self.presence_read(id, &topic, request, stats, busy);
            };
            let read = relay.rosters(&topic);
            let done = self.remote.done();
            tokio::spawn(async move {
                let result = read.await;
                drop(permit);
                let _ = done
                    .send(Done::Presence {
                        client: id,
                        topic,
                        request,
                        stats,
                        result,
                    })
                    .await;
            });
            return;
        }
        let members = self.topics.get(&topic).map(|m| m.values()).into_iter().flatten();
        let frame = if stats {
            let clients = self.topics.get(&topic).map_or(0, HashMap::len);
            let users = self.presence.users.get(&topic).map_or(0, HashMap::len);
            protocol::presence_stats(request.as_ref(), &topic, clients, users)
        } else {
            let total = self.topics.get(&topic).map_or(0, HashMap::len);
            let listed: Vec<(String, &str)> = members
                .take(self.config.presence.max)
                .map(|tx| (tx.id.to_string(), tx.user()))
                .collect();
            protocol::presence(request.as_ref(), &topic, &listed, total)
        };
        self.push(id, frame);
    }

    /// The cluster's answer to a presence request: every node's clients.
    pub(super) fn presence_read(
        &mut self,
        id: ClientId,
        topic: &Topic,
        request: Option<RequestId>,
        stats: bool,
        result: Result<Vec<NodeRoster>, HubError>,
    ) {
        let clients: Vec<(String, String)> = match result {
            Ok(rosters) => rosters.into_iter().flat_map(|r| r.clients).collect(),
            Err(e) => {
                let e = RequestError {
                    code: ErrorCode::Unavailable,
                    message: e.to_string().into(),
                    id: request,
                };
                metrics::client_error(e.code.as_str());
                self.push(id, protocol::error(&e));
                return;
            }
        };
        let frame = if stats {
            let users: HashSet<&str> = clients
                .iter()
                .map(|(_, u)| u.as_str())
                .filter(|u| !u.is_empty())
                .collect();
            protocol::presence_stats(request.as_ref(), topic, clients.len(), users.len())
        } else {
            let listed: Vec<(String, &str)> = clients
                .iter()
                .take(self.config.presence.max)
                .map(|(client, user)| (client.clone(), user.as_str()))
                .collect();
            protocol::presence(request.as_ref(), topic, &listed, clients.len())
        };
        self.push(id, frame);
    }

    /// This node's rosters for the backplane: the topics that changed since
    /// the last call (all of them with `full`) and those held here.
    pub(super) fn roster(&mut self, full: bool) -> Roster {
        let held: Vec<Topic> = self.topics.keys().filter(|t| self.presence_on(t)).cloned().collect();
        let changed: Vec<Topic> = if full {
            self.presence.dirty.clear();
            held.clone()
        } else {
            self.presence.dirty.drain().collect()
        };
        let changed = changed
            .into_iter()
            .map(|topic| {
                let clients = self
                    .topics
                    .get(&topic)
                    .map(|m| {
                        m.values()
                            .map(|tx| (tx.id.to_string(), tx.user().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let leaving = self
                    .presence
                    .waiting
                    .keys()
                    .filter(|(t, _)| *t == topic)
                    .map(|(_, user)| user.to_string())
                    .collect();
                let roster = NodeRoster {
                    here: true,
                    clients,
                    leaving,
                };
                (topic, roster)
            })
            .collect();
        Roster { changed, held }
    }

    /// A subscribe to `topic` took: `new`, the client joined it; `watch`,
    /// it asked for join/leave events.
    pub(super) fn joined(&mut self, id: ClientId, topic: &Topic, watch: bool, new: bool) {
        if !self.presence_on(topic) {
            return;
        }
        if watch {
            self.presence.watchers.entry(topic.clone()).or_default().insert(id);
        }
        if !new {
            return;
        }
        let Some(entry) = self.clients.get(&id) else { return };
        let user: Box<str> = entry.tx.user().into();
        self.presence.dirty.insert(topic.clone());
        if !user.is_empty() {
            let users = self.presence.users.entry(topic.clone()).or_default();
            *users.entry(user.clone()).or_default() += 1;
        }
        // The same user back within the grace: its leave and this join
        // cancel out.
        if !user.is_empty() {
            let key = (topic.clone(), user.clone());
            if take_one(&mut self.presence.waiting, &key) {
                *self.presence.cancelled.entry(key).or_default() += 1;
                return;
            }
        }
        let frame = protocol::join_leave("join", topic, &id.to_string(), &user);
        // In a cluster, a user back from another node within its grace
        // there (a rolling deploy), or on the topic there still, is no
        // join either: asked of the rosters.
        if !user.is_empty() && self.relay.is_some() {
            return self.announce_unless(topic, id, frame, Unless::OnElsewhere(user));
        }
        self.announce(topic, id, frame);
    }

    /// A client left `topic` (unsubscribed or gone).
    pub(super) fn left(&mut self, id: ClientId, topic: &Topic, user: &str) {
        if !self.presence_on(topic) {
            return;
        }
        if let Some(watchers) = self.presence.watchers.get_mut(topic) {
            watchers.remove(&id);
            if watchers.is_empty() {
                self.presence.watchers.remove(topic);
            }
        }
        self.presence.dirty.insert(topic.clone());
        if let Some(users) = self.presence.users.get_mut(topic) {
            if let Some(n) = users.get_mut(user) {
                *n -= 1;
                if *n == 0 {
                    users.remove(user);
                }
            }
            if users.is_empty() {
                self.presence.users.remove(topic);
            }
        }
        if user.is_empty() {
            let frame = protocol::join_leave("leave", topic, &id.to_string(), "");
            self.announce(topic, id, frame);
            return;
        }
        *self.presence.waiting.entry((topic.clone(), user.into())).or_default() += 1;
        self.presence.leaving.push_back(Leaving {
            due: Instant::now() + self.config.presence.grace,
            topic: topic.clone(),
            client: id,
            user: user.into(),
        });
    }

    /// Announces the leaves whose grace has passed (once a second).
    pub(super) fn presence_due(&mut self, now: Instant) {
        while self.presence.leaving.front().is_some_and(|l| l.due <= now) {
            let Some(leaving) = self.presence.leaving.pop_front() else {
                break;
            };
            let key = (leaving.topic.clone(), leaving.user.clone());
            if take_one(&mut self.presence.cancelled, &key) {
                continue;
            }
            take_one(&mut self.presence.waiting, &key);
            self.presence.dirty.insert(leaving.topic.clone());
            let frame = protocol::join_leave("leave", &leaving.topic, &leaving.client.to_string(), &leaving.user);
            // In a cluster, a user still on the topic on another node
            // (moved there within the grace) has not left.
            if self.relay.is_some() {
                let unless = Unless::PresentElsewhere(leaving.user.clone());
                self.announce_unless(&leaving.topic, leaving.client, frame, unless);
                continue;
            }
            self.announce(&leaving.topic, leaving.client, frame);
        }
    }

    /// Announces a join or leave unless the cluster's rosters say otherwise
    /// (read in a task of its own; a roster that cannot be read announces:
    /// an event too many rather than one lost).
    fn announce_unless(&mut self, topic: &Topic, about: ClientId, frame: Utf8Bytes, unless: Unless) {
        let Some(relay) = self.relay.clone() else { return };
        // Too many reads in flight: announced (one too many, not one lost).
        let Some(permit) = self.remote.permit() else {
            return self.announce(topic, about, frame);
        };
        let read = relay.rosters(topic);
        let done = self.remote.done();
        let topic = topic.clone();
        tokio::spawn(async move {
            let rosters = read.await;
            drop(permit);
            let quiet = rosters.is_ok_and(|rosters| {
                rosters.iter().filter(|r| !r.here).any(|r| match &unless {
                    Unless::OnElsewhere(user) => {
                        r.leaving.iter().any(|u| **u == **user) || r.clients.iter().any(|(_, u)| **u == **user)
                    }
                    Unless::PresentElsewhere(user) => r.clients.iter().any(|(_, u)| **u == **user),
                })
            });
            if !quiet {
                let _ = done.send(Done::Announce { topic, about, frame }).await;
            }
        });
    }

    /// Sends a join or leave to the topic's watchers here but `about`
    /// itself and, in a cluster, to the other nodes' watchers.
    pub(super) fn announce(&mut self, topic: &Topic, about: ClientId, frame: Utf8Bytes) {
        if let Some(relay) = &self.relay {
            relay.announce(topic, &frame);
        }
        self.announce_here(topic, about, frame);
    }

    /// Sends a join or leave to the topic's watchers here but `about`.
    pub(super) fn announce_here(&mut self, topic: &Topic, about: ClientId, frame: Utf8Bytes) {
        let Some(watchers) = self.presence.watchers.get(topic) else {
            return;
        };
        let to: Vec<ClientId> = watchers.iter().copied().filter(|w| *w != about).collect();
        for id in to {
            self.push(id, frame.clone());
        }
    }
}

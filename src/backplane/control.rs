//! The control protocol: JSON messages on each node's control channel.
//!
//! A node asking the cluster sends a [`Message::Request`] to every other
//! live node's channel, with an id and its own node as the reply address;
//! each answers with a [`Message::Answer`] on the asker's channel, about its
//! own clients only. The canary's [`Message::Heartbeat`] goes to the node's
//! own channel and comes back to it. Data messages (publishes) are not
//! control messages: see [`super::cluster`] for their envelope.

use serde::{Deserialize, Serialize};

use super::wire;
use crate::auth::identity::MAX_USER_LEN;
use crate::close::MAX_REASON_BYTES;
use crate::hub::{ClientInfo, ClientPage, Delivery, KickTarget, ListQuery, Stats, MAX_PAGE_SIZE};
use crate::types::{ClientId, NodeId, Topic};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Request {
        id: u64,
        from: NodeId,
        op: Op,
    },
    Answer {
        id: u64,
        node: NodeId,
        answer: Answer,
    },
    /// The canary's: `instance` tells this process from another running
    /// with the same node id.
    Heartbeat {
        seq: u64,
        instance: u64,
        /// When the process started (ms since the epoch): of two processes
        /// with one node id, the younger refuses to serve. 0 from versions
        /// that did not send it (then this process counts as the younger).
        #[serde(default)]
        started: u64,
    },
    /// A node leaving cleanly: the others stop expecting its answers at once.
    Leaving {
        node: NodeId,
    },
}

/// What a node is asked to do with its own clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A page of its clients; the asker has set the cursor for this node.
    List(#[serde(with = "wire::list_query")] ListQuery),
    Get(ClientId),
    Kick {
        #[serde(with = "wire::kick_target")]
        target: KickTarget,
        code: u16,
        reason: String,
    },
    /// Queue an encoded frame for one client.
    Send {
        id: ClientId,
        frame: String,
    },
    /// Fan an encoded frame out (everyone, or a topic), skipping `exclude`.
    Broadcast {
        topic: Option<Topic>,
        frame: String,
        exclude: Vec<ClientId>,
    },
    Stats,
}

/// A node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Page(#[serde(with = "wire::client_page")] ClientPage),
    /// `None`: no such client here.
    Client(#[serde(with = "wire::client_info")] Option<ClientInfo>),
    Kicked(u64),
    /// `None`: no such client here; `Some(false)`: not queued.
    Sent(Option<bool>),
    Delivered(#[serde(with = "wire::delivery")] Delivery),
    Stats(#[serde(with = "wire::stats")] Stats),
    /// The node could not answer (its hub is shutting down, or timed out).
    Failed(String),
}

impl Message {
    pub fn encode(&self) -> bytes::Bytes {
        // A Message holds nothing serde_json cannot write (no maps with non-string keys).
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    /// Another node's message, refused unless it holds only what this
    /// node's own admin edge would have let through: another node is input
    /// like any other (a bug or a compromised peer must not put a bad
    /// close frame on a client's socket).
    pub fn decode(payload: &[u8]) -> Option<Message> {
        let message: Message = serde_json::from_slice(payload).ok()?;
        message.valid().then_some(message)
    }

    fn valid(&self) -> bool {
        let user_ok = |user: &Option<String>| user.as_ref().is_none_or(|u| u.len() <= MAX_USER_LEN);
        match self {
            Message::Request { op, .. } => match op {
                Op::Kick { target, code, reason } => {
                    (4000..=4999).contains(code)
                        && reason.len() <= MAX_REASON_BYTES
                        && match target {
                            KickTarget::User(user) => user.len() <= MAX_USER_LEN,
                            _ => true,
                        }
                }
                Op::List(query) => query.page_size <= MAX_PAGE_SIZE && user_ok(&query.user),
                _ => true,
            },
            Message::Answer {
                answer: Answer::Page(page),
                ..
            } => page.clients.len() <= MAX_PAGE_SIZE,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Cursor, Order, Stats};

    #[test]
    fn messages_round_trip() {
        let node = NodeId::parse("a").unwrap();
        let query = ListQuery {
            topic: Some(Topic::parse("news").unwrap()),
            user: Some("ünïcode \"user\"".into()),
            order: Order::QueueDepth,
            page_size: 10,
            cursor: Some(Cursor::AfterDepth(3, ClientId(7))),
        };
        let message = Message::Request {
            id: 9,
            from: node.clone(),
            op: Op::List(query),
        };
        let back = Message::decode(&message.encode()).unwrap();
        let Message::Request {
            id: 9,
            from,
            op: Op::List(query),
        } = back
        else {
            panic!("{back:?}")
        };
        assert_eq!(from, node);
        assert_eq!(query.user.as_deref(), Some("ünïcode \"user\""));
        assert_eq!(query.cursor, Some(Cursor::AfterDepth(3, ClientId(7))));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(Message::decode(b"{\"type\":\"request\",\"id\":1,\"from\":\"bad node!\",\"op\":\"stats\"}").is_none());
        assert!(Message::decode(b"\xff").is_none());
        let topic = br#"{"type":"request","id":1,"from":"a","op":{"broadcast":{"topic":"no spaces","frame":"x","exclude":[]}}}"#;
        assert!(Message::decode(topic).is_none());
    }

    /// The wire format is the one nodes of earlier versions exchange: a
    /// rolling upgrade mixes versions. (Stats' traffic fields flattened, and
    /// defaulting to 0 when an older node leaves them out.)
    #[test]
    fn answers_keep_the_wire_format_of_earlier_versions() {
        let stats = Message::Answer {
            id: 3,
            node: NodeId::parse("b").unwrap(),
            answer: Answer::Stats(Stats {
                clients: 2,
                uptime: std::time::Duration::from_secs(1),
                ..Stats::default()
            }),
        };
        let json: serde_json::Value = serde_json::from_slice(&stats.encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"answer","id":3,"node":"b","answer":{"stats":{
                "clients":2,"topics":0,"hub_queue_depth":0,"hub_queue_capacity":0,
                "messages_sent":0,"messages_received":0,"bytes_sent":0,"bytes_received":0,
                "slow_consumer_evictions":0,"uptime":{"secs":1,"nanos":0}}}})
        );
        let older = br#"{"type":"answer","id":3,"node":"b","answer":{"stats":{"clients":5,"topics":1,"hub_queue_depth":0,"hub_queue_capacity":8,"slow_consumer_evictions":0,"uptime":{"secs":1,"nanos":0}}}}"#;
        let Some(Message::Answer {
            answer: Answer::Stats(stats),
            ..
        }) = Message::decode(older)
        else {
            panic!("an older node's stats decode")
        };
        assert_eq!((stats.clients, stats.traffic.bytes_sent), (5, 0));
        let kick =
            br#"{"type":"request","id":1,"from":"a","op":{"kick":{"target":{"User":"u"},"code":4000,"reason":"r"}}}"#;
        assert!(Message::decode(kick).is_some());
    }

    /// What the admin edge refuses is refused from another node too.
    #[test]
    fn kicks_and_pages_from_other_nodes_are_checked() {
        let kick = |code: u16, reason: &str| Message::Request {
            id: 1,
            from: NodeId::parse("a").unwrap(),
            op: Op::Kick {
                target: KickTarget::User("u".into()),
                code,
                reason: reason.into(),
            },
        };
        let decoded = |m: Message| Message::decode(&m.encode()).is_some();
        assert!(decoded(kick(4000, "moved")));
        assert!(decoded(kick(4999, &"r".repeat(MAX_REASON_BYTES))));
        assert!(!decoded(kick(1000, "")), "not a 4xxx code");
        assert!(!decoded(kick(1005, "")), "a code no frame may carry");
        assert!(
            !decoded(kick(4000, &"r".repeat(MAX_REASON_BYTES + 1))),
            "reason past a control frame"
        );
        let list = |page_size| Message::Request {
            id: 1,
            from: NodeId::parse("a").unwrap(),
            op: Op::List(ListQuery {
                topic: None,
                user: None,
                order: Order::ConnectedAt,
                page_size,
                cursor: None,
            }),
        };
        assert!(decoded(list(MAX_PAGE_SIZE)));
        assert!(!decoded(list(usize::MAX)));
    }
}

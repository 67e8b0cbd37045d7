//! The messages the hub actor takes, and the values it answers with.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, oneshot, OwnedSemaphorePermit};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::client::{ClientId, ClientTx, Shared, Totals};
use super::HubError;
use crate::close::{Closing, DisconnectReason};
use crate::protocol::{Frame, RequestId};
use crate::types::{Source, Topic};

/// One request to the hub. Queries answer through `respond`; the asker may
/// have gone, so the hub ignores a failed answer.
#[derive(Debug)]
pub enum Command {
    /// A connection finished its handshake. The hub queues `welcome` as
    /// its first frame as it registers it, so a client that has its welcome
    /// is already known to operators, and no message can come before it.
    Register {
        client: ClientTx,
        welcome: Frame,
        respond: oneshot::Sender<Result<(), HubError>>,
    },
    /// A connection's tasks have ended.
    Unregister {
        shared: Arc<Shared>,
        reason: DisconnectReason,
    },
    Subscribe {
        id: ClientId,
        topic: Topic,
        request: Option<RequestId>,
        /// Replay what the client missed on the topic since then.
        since: Option<crate::protocol::Since>,
        /// Send the client the topic's joins and leaves.
        join_leave: bool,
    },
    /// Who is subscribed to a topic (`stats`: how many clients and users).
    Presence {
        id: ClientId,
        topic: Topic,
        request: Option<RequestId>,
        stats: bool,
    },
    Unsubscribe {
        id: ClientId,
        topic: Topic,
        request: Option<RequestId>,
    },
    /// Fan a frame out: to a topic's subscribers, or to everyone when `topic` is `None`.
    Publish(Publish),
    /// Queue a frame for one client; answers whether it was queued (false:
    /// its queue was full and it was evicted, or it was already leaving).
    SendTo {
        id: ClientId,
        frame: Utf8Bytes,
        respond: oneshot::Sender<Result<bool, HubError>>,
    },
    ListClients {
        query: ListQuery,
        respond: oneshot::Sender<ClientPage>,
    },
    GetClient {
        id: ClientId,
        respond: oneshot::Sender<Result<ClientInfo, HubError>>,
    },
    Kick {
        target: KickTarget,
        closing: Closing,
        respond: oneshot::Sender<u64>,
    },
    Stats {
        respond: oneshot::Sender<Stats>,
    },
    /// What a topic's history keeps after `since`, at most `limit`.
    History {
        topic: Topic,
        since: u64,
        limit: usize,
        respond: oneshot::Sender<Result<Option<HistoryPage>, HubError>>,
    },
    /// Another node's join or leave, for this node's watchers of the topic.
    Announce {
        topic: Topic,
        frame: Utf8Bytes,
    },
    /// This node's rosters of topics with presence, for the backplane.
    Roster {
        full: bool,
        respond: oneshot::Sender<super::Roster>,
    },
    Watch {
        respond: oneshot::Sender<broadcast::Receiver<Event>>,
    },
    /// Closes up to `n` of the oldest clients with close 1012; answers (closed, remaining).
    DrainBatch {
        n: usize,
        respond: oneshot::Sender<(u64, u64)>,
    },
    /// Refuse new clients and close every client with 1001 after its queue is flushed.
    Shutdown {
        respond: oneshot::Sender<()>,
    },
}

/// A frame to fan out.
#[derive(Debug)]
pub struct Publish {
    pub topic: Option<Topic>,
    pub frame: Utf8Bytes,
    pub source: Source,
    /// The publishing client, answered with an ack when `request` is set.
    pub from: Option<ClientId>,
    pub request: Option<RequestId>,
    pub exclude: HashSet<ClientId>,
    pub respond: Option<oneshot::Sender<Result<Delivery, HubError>>>,
    /// Set when the backplane numbered this publish (a topic with history
    /// in a cluster): the frame carries the offset already.
    pub numbered: Option<Numbered>,
    /// The share of the hub channel's byte budget this publish holds until
    /// the hub has fanned it out (set by [`super::HubHandle`]).
    pub budget: Option<OwnedSemaphorePermit>,
}

/// A publish the backplane numbered, as it comes back to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    pub offset: u64,
}

/// What a fan-out did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Clients the message was queued for.
    pub recipients: u64,
    /// Clients evicted instead because their queue was full.
    pub dropped: u64,
    /// The message's offset in its topic's history, if the topic keeps one.
    pub offset: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    #[default]
    ConnectedAt,
    /// Deepest queue first.
    QueueDepth,
}

/// Where a page walk stands; the admin plane turns it into an opaque token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// After this client in connection order.
    After(ClientId),
    /// After this (depth, client) in deepest-first order.
    AfterDepth(u32, ClientId),
}

/// The largest page of clients one listing asks for or answers.
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub topic: Option<Topic>,
    pub user: Option<String>,
    pub order: Order,
    pub page_size: usize,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone)]
pub struct ClientPage {
    pub clients: Vec<ClientInfo>,
    pub next: Option<Cursor>,
    pub total: u64,
}

/// A snapshot of one client (also what another node answers about its own).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: ClientId,
    pub user: String,
    pub remote_addr: SocketAddr,
    pub connected_at: SystemTime,
    pub topics: Vec<Topic>,
    pub queue_depth: u32,
    pub queue_bytes: u64,
    pub queue_high_water: u32,
    pub traffic: Totals,
}

#[derive(Debug, Clone)]
pub enum KickTarget {
    Client(ClientId),
    User(String),
    Topic(Topic),
}

/// `client c-1`, `user "alice"`, `topic news`: for logs.
impl std::fmt::Display for KickTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Client(id) => write!(f, "client {id}"),
            Self::User(user) => write!(f, "user {user:?}"),
            Self::Topic(topic) => write!(f, "topic {topic}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub clients: u64,
    pub topics: u64,
    pub hub_queue_depth: u32,
    pub hub_queue_capacity: u32,
    pub traffic: Totals,
    pub slow_consumer_evictions: u64,
    pub uptime: Duration,
    /// Topics with history, messages and bytes kept (this node's alone).
    pub history: (usize, usize, usize),
}

/// A page of a topic's history, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub epoch: std::sync::Arc<str>,
    /// The topic's latest offset.
    pub offset: u64,
    /// (offset, frame), oldest first.
    pub messages: Vec<(u64, Utf8Bytes)>,
    /// Messages right after `since` are no longer kept.
    pub trimmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Connected,
    Disconnected,
    Subscribed,
    Unsubscribed,
    Kicked,
    Evicted,
}

/// Something that happened in the hub, for admin watchers.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub client_id: ClientId,
    pub topic: Option<Topic>,
    pub reason: String,
    pub code: u16,
    pub at: SystemTime,
}

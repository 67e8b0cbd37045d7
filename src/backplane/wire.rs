//! The cluster's own wire types: how the hub's answers and queries look on
//! the backplane. The hub's types carry no serde; the control protocol
//! ([`super::control`]) serializes them through these, so the hub can
//! change its structs without changing what nodes of another version read,
//! and what another node sends is checked here before the hub sees it.
//!
//! The JSON is the one nodes have always exchanged (field and variant
//! names), so a rolling upgrade mixes versions safely.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::hub;
use crate::types::{ClientId, Topic};

/// Fields default to 0 when another node's answer lacks them.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Totals {
    messages_sent: u64,
    messages_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
}

#[derive(Serialize, Deserialize)]
struct Delivery {
    recipients: u64,
    dropped: u64,
}

#[derive(Serialize, Deserialize)]
enum Order {
    ConnectedAt,
    QueueDepth,
}

#[derive(Serialize, Deserialize)]
enum Cursor {
    After(ClientId),
    AfterDepth(u32, ClientId),
}

#[derive(Serialize, Deserialize)]
struct ListQuery {
    topic: Option<Topic>,
    user: Option<String>,
    order: Order,
    page_size: usize,
    cursor: Option<Cursor>,
}

#[derive(Serialize, Deserialize)]
struct ClientInfo {
    id: ClientId,
    user: String,
    remote_addr: SocketAddr,
    connected_at: SystemTime,
    topics: Vec<Topic>,
    queue_depth: u32,
    queue_bytes: u64,
    queue_high_water: u32,
    #[serde(flatten)]
    traffic: Totals,
}

#[derive(Serialize, Deserialize)]
struct ClientPage {
    clients: Vec<ClientInfo>,
    next: Option<Cursor>,
    total: u64,
}

#[derive(Serialize, Deserialize)]
enum KickTarget {
    Client(ClientId),
    User(String),
    Topic(Topic),
}

#[derive(Serialize, Deserialize)]
struct Stats {
    clients: u64,
    topics: u64,
    hub_queue_depth: u32,
    hub_queue_capacity: u32,
    #[serde(flatten)]
    traffic: Totals,
    slow_consumer_evictions: u64,
    uptime: Duration,
}

// Conversions both ways, field by field: a field added to a hub type must
// be given a place on the wire here (the compiler asks).

impl From<&hub::Totals> for Totals {
    fn from(t: &hub::Totals) -> Self {
        Totals {
            messages_sent: t.messages_sent,
            messages_received: t.messages_received,
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
        }
    }
}

impl From<Totals> for hub::Totals {
    fn from(t: Totals) -> Self {
        hub::Totals {
            messages_sent: t.messages_sent,
            messages_received: t.messages_received,
            bytes_sent: t.bytes_sent,
            bytes_received: t.bytes_received,
        }
    }
}

impl From<&hub::Delivery> for Delivery {
    fn from(d: &hub::Delivery) -> Self {
        Delivery {
            recipients: d.recipients,
            dropped: d.dropped,
        }
    }
}

impl From<Delivery> for hub::Delivery {
    fn from(d: Delivery) -> Self {
        hub::Delivery {
            recipients: d.recipients,
            dropped: d.dropped,
            offset: None,
        }
    }
}

impl From<hub::Order> for Order {
    fn from(o: hub::Order) -> Self {
        match o {
            hub::Order::ConnectedAt => Order::ConnectedAt,
            hub::Order::QueueDepth => Order::QueueDepth,
        }
    }
}

impl From<Order> for hub::Order {
    fn from(o: Order) -> Self {
        match o {
            Order::ConnectedAt => hub::Order::ConnectedAt,
            Order::QueueDepth => hub::Order::QueueDepth,
        }
    }
}

impl From<hub::Cursor> for Cursor {
    fn from(c: hub::Cursor) -> Self {
        match c {
            hub::Cursor::After(id) => Cursor::After(id),
            hub::Cursor::AfterDepth(depth, id) => Cursor::AfterDepth(depth, id),
        }
    }
}

impl From<Cursor> for hub::Cursor {
    fn from(c: Cursor) -> Self {
        match c {
            Cursor::After(id) => hub::Cursor::After(id),
            Cursor::AfterDepth(depth, id) => hub::Cursor::AfterDepth(depth, id),
        }
    }
}

impl From<&hub::ListQuery> for ListQuery {
    fn from(q: &hub::ListQuery) -> Self {
        ListQuery {
            topic: q.topic.clone(),
            user: q.user.clone(),
            order: q.order.into(),
            page_size: q.page_size,
            cursor: q.cursor.map(Into::into),
        }
    }
}

impl From<ListQuery> for hub::ListQuery {
    fn from(q: ListQuery) -> Self {
        hub::ListQuery {
            topic: q.topic,
            user: q.user,
            order: q.order.into(),
            page_size: q.page_size,
            cursor: q.cursor.map(Into::into),
        }
    }
}

impl From<&hub::ClientInfo> for ClientInfo {
    fn from(c: &hub::ClientInfo) -> Self {
        ClientInfo {
            id: c.id,
            user: c.user.clone(),
            remote_addr: c.remote_addr,
            connected_at: c.connected_at,
            topics: c.topics.clone(),
            queue_depth: c.queue_depth,
            queue_bytes: c.queue_bytes,
            queue_high_water: c.queue_high_water,
            traffic: (&c.traffic).into(),
        }
    }
}

impl From<ClientInfo> for hub::ClientInfo {
    fn from(c: ClientInfo) -> Self {
        hub::ClientInfo {
            id: c.id,
            user: c.user,
            remote_addr: c.remote_addr,
            connected_at: c.connected_at,
            topics: c.topics,
            queue_depth: c.queue_depth,
            queue_bytes: c.queue_bytes,
            queue_high_water: c.queue_high_water,
            traffic: c.traffic.into(),
        }
    }
}

impl From<&hub::ClientPage> for ClientPage {
    fn from(p: &hub::ClientPage) -> Self {
        ClientPage {
            clients: p.clients.iter().map(Into::into).collect(),
            next: p.next.map(Into::into),
            total: p.total,
        }
    }
}

impl From<ClientPage> for hub::ClientPage {
    fn from(p: ClientPage) -> Self {
        hub::ClientPage {
            clients: p.clients.into_iter().map(Into::into).collect(),
            next: p.next.map(Into::into),
            total: p.total,
        }
    }
}

impl From<&hub::KickTarget> for KickTarget {
    fn from(t: &hub::KickTarget) -> Self {
        match t {
            hub::KickTarget::Client(id) => KickTarget::Client(*id),
            hub::KickTarget::User(user) => KickTarget::User(user.clone()),
            hub::KickTarget::Topic(topic) => KickTarget::Topic(topic.clone()),
        }
    }
}

impl From<KickTarget> for hub::KickTarget {
    fn from(t: KickTarget) -> Self {
        match t {
            KickTarget::Client(id) => hub::KickTarget::Client(id),
            KickTarget::User(user) => hub::KickTarget::User(user),
            KickTarget::Topic(topic) => hub::KickTarget::Topic(topic),
        }
    }
}

impl From<&hub::Stats> for Stats {
    fn from(s: &hub::Stats) -> Self {
        Stats {
            clients: s.clients,
            topics: s.topics,
            hub_queue_depth: s.hub_queue_depth,
            hub_queue_capacity: s.hub_queue_capacity,
            traffic: (&s.traffic).into(),
            slow_consumer_evictions: s.slow_consumer_evictions,
            uptime: s.uptime,
        }
    }
}

impl From<Stats> for hub::Stats {
    fn from(s: Stats) -> Self {
        hub::Stats {
            clients: s.clients,
            topics: s.topics,
            hub_queue_depth: s.hub_queue_depth,
            hub_queue_capacity: s.hub_queue_capacity,
            traffic: s.traffic.into(),
            slow_consumer_evictions: s.slow_consumer_evictions,
            uptime: s.uptime,
            // In a cluster, history is kept in the backplane, not by nodes.
            history: (0, 0, 0),
        }
    }
}

/// A node's roster of a topic with presence, as other nodes read it.
#[derive(Serialize, Deserialize)]
struct Roster {
    clients: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    leaving: Vec<String>,
}

/// This node's roster, as it is written for the others.
pub fn encode_roster(roster: &hub::NodeRoster) -> Vec<u8> {
    let wire = Roster {
        clients: roster.clients.clone(),
        leaving: roster.leaving.clone(),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// A node's roster as written; `None` if it is not one.
pub fn decode_roster(bytes: &[u8], here: bool) -> Option<hub::NodeRoster> {
    let wire: Roster = serde_json::from_slice(bytes).ok()?;
    Some(hub::NodeRoster {
        here,
        clients: wire.clients,
        leaving: wire.leaving,
    })
}

/// `#[serde(with = ...)]` modules for the control protocol's fields: each
/// writes a hub value as its wire type and reads it back.
macro_rules! via {
    ($name:ident: $hub:ty => $wire:ty) => {
        pub mod $name {
            use super::*;

            pub fn serialize<S: serde::Serializer>(v: &$hub, s: S) -> Result<S::Ok, S::Error> {
                <$wire>::from(v).serialize(s)
            }

            pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$hub, D::Error> {
                <$wire>::deserialize(d).map(Into::into)
            }
        }
    };
}

via!(list_query: hub::ListQuery => ListQuery);
via!(client_page: hub::ClientPage => ClientPage);
via!(kick_target: hub::KickTarget => KickTarget);
via!(delivery: hub::Delivery => Delivery);
via!(stats: hub::Stats => Stats);

/// `Option<ClientInfo>` (an answer about one client, `None`: not here).
pub mod client_info {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &Option<hub::ClientInfo>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().map(ClientInfo::from).serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<hub::ClientInfo>, D::Error> {
        Option::<ClientInfo>::deserialize(d).map(|v| v.map(Into::into))
    }
}

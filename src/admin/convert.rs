//! Proto ↔ domain conversions at the edge of the admin plane: request
//! validation in, snapshots out.

use serde_json::value::RawValue;

use super::pb;
use super::AdminError;
use crate::backplane::cluster::{ClusterCursor, NodeStats};
use crate::hub::{self, ClientId, Cursor, EventKind, Order};
use crate::types::{ClientRef, NodeId, Topic};

/// The largest page a ListClients call may ask for.
pub const MAX_PAGE_SIZE: u32 = crate::hub::MAX_PAGE_SIZE as u32;
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub use crate::close::MAX_REASON_BYTES;

/// A kick's close code (0: the default 4000; otherwise 4000–4999) after
/// checking its reason fits a close frame.
pub fn kick_close(code: u32, reason: &str) -> Result<u16, AdminError> {
    let close_code = match code {
        0 => crate::close::code::KICKED,
        c @ 4000..=4999 => c as u16,
        c => return Err(AdminError::InvalidCode(c)),
    };
    if reason.len() > MAX_REASON_BYTES {
        return Err(AdminError::ReasonTooLong(reason.len()));
    }
    Ok(close_code)
}

/// An empty string means "no topic"; anything else must be a valid topic.
pub fn optional_topic(topic: &str) -> Result<Option<Topic>, AdminError> {
    if topic.is_empty() {
        return Ok(None);
    }
    Topic::parse(topic)
        .map(Some)
        .map_err(|_| AdminError::InvalidTopic(topic.to_string()))
}

/// Checks that `data` is one JSON value within the size limit.
pub fn json_data(data: &str, limit: usize) -> Result<&RawValue, AdminError> {
    if data.len() > limit {
        return Err(AdminError::DataTooLarge {
            size: data.len(),
            limit,
        });
    }
    let data: &RawValue = serde_json::from_str(data).map_err(|e| AdminError::InvalidJson(e.to_string()))?;
    // The same rule as for clients' data: nothing a strict decoder refuses.
    crate::protocol::check_data(data.get()).map_err(|e| AdminError::InvalidJson(e.to_string()))?;
    Ok(data)
}

/// A client id from a request (`c-7`, or `c-7@node` in a cluster); one that
/// cannot name a client is not found.
pub fn client_ref(id: &str) -> Result<ClientRef, AdminError> {
    if id.is_empty() {
        return Err(AdminError::Missing("client_id"));
    }
    id.parse().map_err(|()| AdminError::NotFound(id.to_string()))
}

/// A client's id as operators see it: `c-7`, or in a cluster `c-7@node`.
pub fn client_text(id: ClientId, node: &NodeId, clustered: bool) -> String {
    let node = clustered.then(|| node.clone());
    ClientRef { id, node }.to_string()
}

pub fn client_name(client: &ClientRef, this: &NodeId, clustered: bool) -> String {
    client_text(client.id, client.node.as_ref().unwrap_or(this), clustered)
}

pub fn nodes(nodes: &[NodeId]) -> Vec<String> {
    nodes.iter().map(ToString::to_string).collect()
}

pub fn order(order: i32) -> Order {
    match pb::ClientOrder::try_from(order) {
        Ok(pb::ClientOrder::QueueDepth) => Order::QueueDepth,
        _ => Order::ConnectedAt,
    }
}

/// Page tokens are opaque to callers: `a<id>` in connection order,
/// `q<depth>.<id>` in queue-depth order.
pub fn encode_cursor(cursor: Cursor) -> String {
    match cursor {
        Cursor::After(id) => format!("a{}", id.0),
        Cursor::AfterDepth(depth, id) => format!("q{depth}.{}", id.0),
    }
}

pub fn decode_cursor(token: &str, order: Order) -> Result<Option<Cursor>, AdminError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || AdminError::InvalidPageToken;
    // Tokens come from callers: any string, any characters.
    let cursor = match (order, token.strip_prefix('a'), token.strip_prefix('q')) {
        (Order::ConnectedAt, Some(id), _) => Cursor::After(ClientId(id.parse().map_err(|_| bad())?)),
        (Order::QueueDepth, _, Some(rest)) => {
            let (depth, id) = rest.split_once('.').ok_or_else(bad)?;
            Cursor::AfterDepth(
                depth.parse().map_err(|_| bad())?,
                ClientId(id.parse().map_err(|_| bad())?),
            )
        }
        _ => return Err(bad()),
    };
    Ok(Some(cursor))
}

/// In a cluster a page token names the node of the last client shown too:
/// `a17@node-b`. A node alone keeps its tokens as they were.
pub fn encode_cluster_cursor(cursor: &ClusterCursor, clustered: bool) -> String {
    let local = encode_cursor(cursor.cursor);
    if clustered {
        format!("{local}@{}", cursor.node)
    } else {
        local
    }
}

pub fn decode_cluster_cursor(token: &str, order: Order, this: &NodeId) -> Result<Option<ClusterCursor>, AdminError> {
    let (local, node) = match token.split_once('@') {
        Some((local, node)) => (local, NodeId::parse(node).map_err(|_| AdminError::InvalidPageToken)?),
        None => (token, this.clone()),
    };
    Ok(decode_cursor(local, order)?.map(|cursor| ClusterCursor { node, cursor }))
}

pub fn client_info(info: hub::ClientInfo, node: &NodeId, clustered: bool) -> pb::ClientInfo {
    pb::ClientInfo {
        id: client_text(info.id, node, clustered),
        user: info.user,
        remote_addr: info.remote_addr.to_string(),
        connected_at: Some(info.connected_at.into()),
        topics: info.topics.iter().map(|t| t.to_string()).collect(),
        queue_depth: info.queue_depth,
        queue_bytes: info.queue_bytes,
        queue_high_water: info.queue_high_water,
        messages_sent: info.traffic.messages_sent,
        messages_received: info.traffic.messages_received,
        bytes_sent: info.traffic.bytes_sent,
        bytes_received: info.traffic.bytes_received,
        node: node.to_string(),
    }
}

/// Stats from every node that answered, this node first: totals summed,
/// this node's queue and uptime.
pub fn stats(nodes: Vec<NodeStats>, partial: bool) -> pb::Stats {
    let now = std::time::SystemTime::now();
    let mut out = pb::Stats {
        version: env!("CARGO_PKG_VERSION").to_string(),
        partial,
        ..Default::default()
    };
    if let Some(this) = nodes.first() {
        out.hub_queue_depth = this.stats.hub_queue_depth;
        out.hub_queue_capacity = this.stats.hub_queue_capacity;
        out.uptime = prost_types::Duration::try_from(this.stats.uptime).ok();
        out.node = this.node.to_string();
    }
    for n in &nodes {
        out.clients += n.stats.clients;
        out.topics += n.stats.topics;
        out.messages_sent += n.stats.traffic.messages_sent;
        out.messages_received += n.stats.traffic.messages_received;
        out.bytes_sent += n.stats.traffic.bytes_sent;
        out.bytes_received += n.stats.traffic.bytes_received;
        out.slow_consumer_evictions += n.stats.slow_consumer_evictions;
        let (topics, messages, bytes) = n.stats.history;
        out.history_topics += topics as u64;
        out.history_messages += messages as u64;
        out.history_bytes += bytes as u64;
        out.nodes.push(pb::NodeStats {
            id: n.node.to_string(),
            clients: n.stats.clients,
            topics: n.stats.topics,
            last_seen: Some(now.checked_sub(n.age).unwrap_or(now).into()),
        });
    }
    out
}

pub fn event_kind(kind: EventKind) -> pb::EventKind {
    match kind {
        EventKind::Connected => pb::EventKind::Connected,
        EventKind::Disconnected => pb::EventKind::Disconnected,
        EventKind::Subscribed => pb::EventKind::Subscribed,
        EventKind::Unsubscribed => pb::EventKind::Unsubscribed,
        EventKind::Kicked => pb::EventKind::Kicked,
        EventKind::Evicted => pb::EventKind::Evicted,
    }
}

pub fn event(event: hub::Event) -> pb::Event {
    pb::Event {
        kind: event_kind(event.kind) as i32,
        client_id: event.client_id.to_string(),
        topic: event.topic.map(|t| t.to_string()).unwrap_or_default(),
        reason: event.reason,
        code: u32::from(event.code),
        at: Some(event.at.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_any_string_is_refused_cleanly() {
        for cursor in [Cursor::After(ClientId(7)), Cursor::AfterDepth(3, ClientId(9))] {
            let order = match cursor {
                Cursor::After(_) => Order::ConnectedAt,
                Cursor::AfterDepth(..) => Order::QueueDepth,
            };
            assert_eq!(decode_cursor(&encode_cursor(cursor), order), Ok(Some(cursor)));
        }
        for token in ["é", "€12", "a", "q", "q1", "q.1", "a-1", "a1\u{0}", "\u{10FFFF}", "b1"] {
            for order in [Order::ConnectedAt, Order::QueueDepth] {
                assert_eq!(
                    decode_cursor(token, order),
                    Err(AdminError::InvalidPageToken),
                    "{token:?}"
                );
            }
        }
    }

    /// A number no double holds breaks strict decoders (Go's, Python's):
    /// admin data is refused as a client's is.
    #[test]
    fn data_refuses_numbers_past_f64() {
        let text = "55555E555555555555555555";
        assert!(matches!(json_data(text, 4096), Err(AdminError::InvalidJson(_))));
        assert_eq!(json_data("[1.5e300]", 4096).map(|raw| raw.get()), Ok("[1.5e300]"));
    }

    #[test]
    fn kick_codes_and_reasons() {
        assert_eq!(kick_close(0, ""), Ok(4000));
        assert_eq!(kick_close(4999, &"r".repeat(MAX_REASON_BYTES)), Ok(4999));
        assert_eq!(kick_close(1000, ""), Err(AdminError::InvalidCode(1000)));
        assert_eq!(kick_close(5000, ""), Err(AdminError::InvalidCode(5000)));
        assert!(kick_close(4000, &"é".repeat(62)).is_err(), "124 bytes");
    }
}

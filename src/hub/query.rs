//! Read-only views of the registry for operators: one client, or a
//! filtered page of clients in a stable order.

use std::sync::atomic::Ordering::Relaxed;

use super::{ClientInfo, ClientPage, Cursor, Entry, Hub, ListQuery, Order};

impl Hub {
    pub(super) fn info(entry: &Entry) -> ClientInfo {
        let shared = &entry.tx.shared;
        let mut topics: Vec<_> = entry.topics.iter().cloned().collect();
        topics.sort();
        ClientInfo {
            id: shared.id,
            user: String::new(),
            remote_addr: shared.remote_addr,
            connected_at: shared.connected_at,
            topics,
            queue_depth: entry.tx.depth() as u32,
            queue_bytes: shared.queued_bytes() as u64,
            queue_high_water: shared.high_water(),
            messages_sent: shared.messages_sent.load(Relaxed),
            messages_received: shared.messages_received.load(Relaxed),
        }
    }

    /// One page of the clients matching every filter of `query`.
    ///
    /// In connection order the cursor is the last id shown, so a walk never
    /// shows a client twice however clients come and go. In queue-depth order
    /// the cursor is the last (depth, id) shown; a client whose depth changes
    /// between pages may move across the cursor.
    pub(super) fn list(&self, query: &ListQuery) -> ClientPage {
        let matches = |entry: &&Entry| {
            query.topic.as_ref().is_none_or(|t| entry.topics.contains(t))
                // Users arrive with authentication; until then no client has one.
                && query.user.as_ref().is_none_or(|u| u.is_empty())
        };
        let total = self.clients.values().filter(matches).count() as u64;
        let size = query.page_size.max(1);
        let (page, more): (Vec<&Entry>, bool) = match query.order {
            Order::ConnectedAt => {
                let start = match query.cursor {
                    Some(Cursor::After(id)) => std::ops::Bound::Excluded(id),
                    _ => std::ops::Bound::Unbounded,
                };
                let mut it = self
                    .clients
                    .range((start, std::ops::Bound::Unbounded))
                    .map(|(_, e)| e)
                    .filter(matches);
                let page: Vec<&Entry> = it.by_ref().take(size).collect();
                (page, it.next().is_some())
            }
            Order::QueueDepth => {
                let key = |e: &Entry| (std::cmp::Reverse(e.tx.depth() as u32), e.tx.shared.id);
                let after = match query.cursor {
                    Some(Cursor::AfterDepth(depth, id)) => Some((std::cmp::Reverse(depth), id)),
                    _ => None,
                };
                let mut all: Vec<&Entry> = self
                    .clients
                    .values()
                    .filter(matches)
                    .filter(|e| after.is_none_or(|a| key(e) > a))
                    .collect();
                all.sort_by_key(|e| key(e));
                let more = all.len() > size;
                all.truncate(size);
                (all, more)
            }
        };
        let next = match (more, page.last()) {
            (true, Some(last)) => Some(match query.order {
                Order::ConnectedAt => Cursor::After(last.tx.shared.id),
                Order::QueueDepth => Cursor::AfterDepth(last.tx.depth() as u32, last.tx.shared.id),
            }),
            _ => None,
        };
        ClientPage {
            clients: page.into_iter().map(Self::info).collect(),
            next,
            total,
        }
    }
}

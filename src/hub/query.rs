//! Read-only views of the registry for operators and metrics: one client,
//! a filtered page of clients in a stable order, totals, queue samples.

use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use super::{history, metrics};
use super::{ClientId, ClientInfo, ClientPage, Cursor, Entry, Fill, Hub, ListQuery, Order, Stats};
use crate::close::Closing;

/// A client's place in queue-depth order: deepest first, then by id.
type DepthKey = (std::cmp::Reverse<u32>, ClientId);

impl Hub {
    pub(super) fn info(entry: &Entry) -> ClientInfo {
        let shared = &entry.tx;
        let queue = shared.queue_stats();
        let mut topics: Vec<_> = entry.topics.iter().cloned().collect();
        topics.sort();
        ClientInfo {
            id: shared.id,
            user: shared.user().to_string(),
            remote_addr: shared.remote_addr,
            connected_at: shared.connected_at,
            topics,
            queue_depth: queue.depth as u32,
            queue_bytes: queue.bytes as u64,
            queue_high_water: queue.high_water as u32,
            traffic: shared.traffic.totals(),
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
                && query.user.as_ref().is_none_or(|u| entry.tx.user() == u)
        };
        // The total without a scan where the registry already knows it.
        let total = match (&query.topic, &query.user) {
            (None, None) => self.clients.len(),
            (Some(topic), None) => self.topics.get(topic).map_or(0, |members| members.len()),
            _ => self.clients.values().filter(matches).count(),
        } as u64;
        let size = query.page_size.max(1);
        let mut last_key = None;
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
                // Depth is read once per client; only the page (and one
                // more, to know there is a next) is kept, in a heap whose
                // top is the shallowest kept: O(clients × log page) work and
                // O(page) memory, however many clients the node holds
                // (`wshubctl top` asks every second).
                let after = match query.cursor {
                    Some(Cursor::AfterDepth(depth, id)) => Some((std::cmp::Reverse(depth), id)),
                    _ => None,
                };
                let keep = size.saturating_add(1);
                let mut kept: BinaryHeap<DepthKey> = BinaryHeap::with_capacity(keep.min(1024));
                for entry in self.clients.values().filter(matches) {
                    let key = (std::cmp::Reverse(entry.tx.queue_stats().depth as u32), entry.tx.id);
                    if after.is_some_and(|a| key <= a) {
                        continue;
                    }
                    if kept.len() < keep {
                        kept.push(key);
                    } else if kept.peek().is_some_and(|top| key < *top) {
                        kept.pop();
                        kept.push(key);
                    }
                }
                let mut all: Vec<(DepthKey, &Entry)> = kept
                    .into_sorted_vec()
                    .into_iter()
                    .filter_map(|key| Some((key, self.clients.get(&key.1)?)))
                    .collect();
                let more = all.len() > size;
                all.truncate(size);
                last_key = all.last().map(|(key, _)| *key);
                (all.into_iter().map(|(_, e)| e).collect(), more)
            }
        };
        let next = match (more, page.last()) {
            (true, Some(last)) => Some(match query.order {
                Order::ConnectedAt => Cursor::After(last.tx.id),
                Order::QueueDepth => {
                    let (std::cmp::Reverse(depth), id) = last_key.unwrap_or((std::cmp::Reverse(0), last.tx.id));
                    Cursor::AfterDepth(depth, id)
                }
            }),
            _ => None,
        };
        ClientPage {
            clients: page.into_iter().map(Self::info).collect(),
            next,
            total,
        }
    }

    pub(super) fn stats(&self) -> Stats {
        let mut traffic = self.retired;
        for entry in self.clients.values() {
            traffic += entry.tx.traffic.totals();
        }
        Stats {
            clients: self.clients.len() as u64,
            topics: self.topics.len() as u64,
            hub_queue_depth: self.rx.len() as u32,
            hub_queue_capacity: self.rx.max_capacity() as u32,
            traffic,
            slow_consumer_evictions: self.evictions,
            uptime: self.started.elapsed(),
            history: self.history.usage(),
        }
    }

    /// Once a second with the queue sample: history past its TTL goes,
    /// and the history series are brought up to date.
    pub(super) fn sample_history(&mut self) {
        if self.config.history.size == 0 {
            return;
        }
        let topics = &self.topics;
        self.history.sweep(Instant::now(), |t| topics.contains_key(t));
        let (topics, messages, bytes) = self.history.usage();
        metrics::history::usage(topics, messages, bytes);
        for (trim, total) in history::Trim::ALL.iter().zip(self.history.trimmed) {
            metrics::history::trimmed(trim.as_str(), total);
        }
    }

    /// Samples every client's queue into the depth histogram, the deepest
    /// queue and the bytes queued; one pass per tick, nothing per delivery.
    /// The same pass evicts every client whose socket write has been
    /// blocked for `--write-timeout` (its socket takes nothing), and closes
    /// every client that sent nothing for `--idle-timeout`: neither needs a
    /// timer per connection, and the idle one is found within a tick.
    pub(super) fn sample_queues(&mut self) {
        let mut counts: BTreeMap<usize, u64> = BTreeMap::new();
        let (mut bytes, mut sampled_bytes_max) = (0, 0);
        let mut stalled = std::mem::take(&mut self.evict);
        for (id, entry) in &self.clients {
            let queue = entry.tx.queue_stats();
            *counts.entry(queue.depth).or_default() += 1;
            bytes += queue.bytes;
            sampled_bytes_max = sampled_bytes_max.max(queue.bytes);
            if entry
                .tx
                .write_stalled_for()
                .is_some_and(|t| t >= self.config.write_timeout)
            {
                stalled.push(*id);
            } else if entry.tx.silent_for() >= self.config.idle_timeout {
                // Closed, not evicted: its connection unregisters it.
                entry.tx.close(Closing::ping_timeout());
            }
        }
        for id in stalled.drain(..) {
            self.evict(id, Some(super::Trigger::WriteTimeout));
        }
        self.evict = stalled;
        for (depth, n) in &counts {
            self.metrics.client_queue_depth.record_many(*depth as u64, *n);
        }
        let peaks = self.take_peaks(counts.keys().next_back().copied().unwrap_or(0), sampled_bytes_max);
        self.metrics.client_queue_depth_max.set(peaks.depth_max as f64);
        self.metrics.client_queue_bytes_max.set(peaks.bytes_max as f64);
        self.metrics.client_queue_fill_max.set(peaks.fill);
        self.metrics.client_queue_bytes.set(bytes as f64);
        self.metrics.hub_queue_depth.set(self.rx.len() as f64);
    }

    /// The fullest queue since the last sample: at this sample (`depth`,
    /// `bytes`), at any enqueue in between, or full if one overflowed (an
    /// eviction). Starts the next interval.
    pub(super) fn take_peaks(&mut self, depth: usize, bytes: usize) -> Peaks {
        let Fill {
            depth: depth_max,
            bytes: bytes_max,
        } = self.peak.max(Fill { depth, bytes });
        let ratio = |n: usize, cap: usize| n as f64 / cap.max(1) as f64;
        let fill = if self.overflowed {
            1.0
        } else {
            ratio(depth_max, self.config.send_queue_len)
                .max(ratio(bytes_max, self.config.send_queue_bytes))
                .min(1.0)
        };
        (self.peak, self.overflowed) = (Fill::default(), false);
        Peaks {
            depth_max,
            bytes_max,
            fill,
        }
    }
}

/// What [`Hub::take_peaks`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Peaks {
    pub depth_max: usize,
    pub bytes_max: usize,
    pub fill: f64,
}

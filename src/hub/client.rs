//! One client as the hub and its connection tasks share it: the identity,
//! the bounded send queue (messages and bytes), and the close decision.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::close::Closing;

/// A client's id: `c-<n>`, unique for the life of the process. Clients and
/// operators treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c-{}", self.0)
    }
}

impl FromStr for ClientId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("c-")
            .and_then(|n| n.parse().ok())
            .map(ClientId)
            .ok_or(())
    }
}

/// What the writer task takes off a client's queue.
#[derive(Debug)]
pub enum Outbound {
    /// A text frame; the bytes are shared by every recipient of a broadcast.
    Text(Utf8Bytes),
    /// Close after everything queued before it: the frame is in [`Shared::closing`].
    Close,
}

/// A client's send queue. A plain deque under a short lock, rather than a
/// channel: the writer takes everything queued in one lock, and an idle
/// client's queue holds no allocation at all.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outbound>,
    /// Frames and bytes not yet written: queued plus taken by the writer
    /// and not yet flushed, so a writer stuck on a full socket still counts.
    depth: usize,
    bytes: usize,
    /// Deepest `depth` since connecting.
    high_water: usize,
    /// The writer has ended; nothing more is accepted.
    closed: bool,
}

/// State shared by the hub and the connection's two tasks.
#[derive(Debug)]
pub struct Shared {
    pub id: ClientId,
    pub remote_addr: SocketAddr,
    pub connected_at: SystemTime,
    /// Cancelled to stop the connection at once (eviction, forced shutdown,
    /// end of the reader or writer); a child of the server's force token.
    pub token: CancellationToken,
    /// Why the connection ends; the first cause recorded wins.
    closing: OnceLock<Closing>,
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue gains an item.
    ready: Notify,
    /// The queue's limits: messages and bytes.
    max_len: usize,
    max_bytes: usize,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is at its message or byte limit: the client is too slow.
    Full,
    /// The writer has ended: the client is going away.
    Closed,
}

/// The hub's (and reader's) handle on a client: pushes into its queue.
pub type ClientTx = Arc<Shared>;

/// A queue snapshot for operators.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    pub depth: usize,
    pub bytes: usize,
    pub high_water: usize,
}

impl Shared {
    /// A client with a queue of `max_len` messages and `max_bytes` bytes.
    pub fn new(
        id: ClientId,
        remote_addr: SocketAddr,
        token: CancellationToken,
        max_len: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            id,
            remote_addr,
            connected_at: SystemTime::now(),
            token,
            closing: OnceLock::new(),
            queue: Mutex::default(),
            ready: Notify::new(),
            max_len,
            max_bytes,
            messages_sent: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
        }
    }

    /// Records why the connection ends; returns false if a cause was already recorded.
    pub fn set_closing(&self, closing: Closing) -> bool {
        self.closing.set(closing).is_ok()
    }

    pub fn closing(&self) -> Option<&Closing> {
        self.closing.get()
    }

    /// Records `closing` and stops the connection now, without flushing its queue.
    pub fn abort(&self, closing: Closing) {
        self.set_closing(closing);
        self.token.cancel();
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The lock is never held across anything that can panic; recover anyway.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a text frame without waiting; on success returns the queue
    /// depth. One frame is always accepted into an empty byte budget, so a
    /// single large message never evicts a client that keeps up.
    pub fn try_push(&self, frame: Utf8Bytes) -> Result<usize, PushError> {
        let len = frame.len();
        let depth = {
            let mut q = self.queue();
            if q.closed {
                return Err(PushError::Closed);
            }
            if q.depth >= self.max_len || (q.bytes > 0 && q.bytes + len > self.max_bytes) {
                return Err(PushError::Full);
            }
            q.items.push_back(Outbound::Text(frame));
            q.depth += 1;
            q.bytes += len;
            q.high_water = q.high_water.max(q.depth);
            q.depth
        };
        self.ready.notify_one();
        Ok(depth)
    }

    /// Closes the client with `closing` after what is already queued; if
    /// the queue is full (the client is not keeping up), closes it at once.
    pub fn close_after_flush(&self, closing: Closing) {
        if !self.set_closing(closing) {
            return;
        }
        let queued = {
            let mut q = self.queue();
            let room = !q.closed && q.depth < self.max_len;
            if room {
                q.items.push_back(Outbound::Close);
            }
            room
        };
        if queued {
            self.ready.notify_one();
        } else {
            self.token.cancel();
        }
    }

    pub fn queue_stats(&self) -> QueueStats {
        let q = self.queue();
        QueueStats {
            depth: q.depth,
            bytes: q.bytes,
            high_water: q.high_water,
        }
    }

    /// Waits for queued items and takes them all (the writer's side).
    pub async fn take(&self) -> VecDeque<Outbound> {
        loop {
            {
                let mut q = self.queue();
                if !q.items.is_empty() {
                    return std::mem::take(&mut q.items);
                }
            }
            self.ready.notified().await;
        }
    }

    /// The writer has flushed `frames` frames of `bytes` bytes.
    pub fn written(&self, frames: usize, bytes: usize) {
        let mut q = self.queue();
        q.depth = q.depth.saturating_sub(frames);
        q.bytes = q.bytes.saturating_sub(bytes);
    }

    /// The writer has ended: refuse further frames and free what is queued.
    pub fn close_queue(&self) {
        let mut q = self.queue();
        q.closed = true;
        q.items = VecDeque::new();
    }
}

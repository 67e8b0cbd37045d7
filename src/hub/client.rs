//! One client as the hub and its connection tasks share it: the identity,
//! the bounded send queue (messages and bytes), and the close decision.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tokio::sync::mpsc;
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
    /// Bytes of text frames waiting in the queue; the byte cap is checked against it.
    queued_bytes: AtomicUsize,
    /// Deepest the queue has been since connecting (written only by the hub).
    high_water: AtomicU32,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
}

impl Shared {
    pub fn new(id: ClientId, remote_addr: SocketAddr, token: CancellationToken) -> Self {
        Self {
            id,
            remote_addr,
            connected_at: SystemTime::now(),
            token,
            closing: OnceLock::new(),
            queued_bytes: AtomicUsize::new(0),
            high_water: AtomicU32::new(0),
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

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Relaxed)
    }

    pub fn high_water(&self) -> u32 {
        self.high_water.load(Relaxed)
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is at its message or byte limit: the client is too slow.
    Full,
    /// The writer has ended: the client is going away.
    Closed,
}

/// The sending side of a client's queue, bounded in messages and in bytes.
#[derive(Debug, Clone)]
pub struct ClientTx {
    tx: mpsc::Sender<Outbound>,
    pub shared: Arc<Shared>,
    max_bytes: usize,
}

/// The writer's side of a client's queue.
#[derive(Debug)]
pub struct ClientRx {
    rx: mpsc::Receiver<Outbound>,
    shared: Arc<Shared>,
}

/// A new client's queue: `max_len` messages and `max_bytes` bytes.
pub fn queue(shared: Arc<Shared>, max_len: usize, max_bytes: usize) -> (ClientTx, ClientRx) {
    let (tx, rx) = mpsc::channel(max_len);
    (
        ClientTx {
            tx,
            shared: shared.clone(),
            max_bytes,
        },
        ClientRx { rx, shared },
    )
}

impl ClientTx {
    /// Queues a text frame without waiting; on success returns the queue depth.
    /// One frame is always accepted into an empty byte budget, so a single
    /// large message never evicts a client that keeps up.
    pub fn try_push(&self, frame: Utf8Bytes) -> Result<usize, PushError> {
        let len = frame.len();
        let queued = self.shared.queued_bytes.load(Relaxed);
        if queued > 0 && queued + len > self.max_bytes {
            return Err(PushError::Full);
        }
        match self.tx.try_send(Outbound::Text(frame)) {
            Ok(()) => {
                self.shared.queued_bytes.fetch_add(len, Relaxed);
                let depth = self.depth();
                if depth as u32 > self.shared.high_water.load(Relaxed) {
                    self.shared.high_water.store(depth as u32, Relaxed);
                }
                Ok(depth)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(PushError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Closed),
        }
    }

    /// Closes the client with `closing` after what is already queued; if the
    /// queue has no room for the close marker, closes it at once.
    pub fn close_after_flush(&self, closing: Closing) {
        self.shared.set_closing(closing);
        if self.tx.try_send(Outbound::Close).is_err() {
            self.shared.token.cancel();
        }
    }

    /// Messages waiting in the queue now.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

impl ClientRx {
    /// The next item, waiting for one.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await;
        self.taken(item)
    }

    /// The next item if one is already queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let item = self.rx.try_recv().ok();
        self.taken(item)
    }

    fn taken(&self, item: Option<Outbound>) -> Option<Outbound> {
        if let Some(Outbound::Text(t)) = &item {
            self.shared.queued_bytes.fetch_sub(t.len(), Relaxed);
        }
        item
    }
}

//! One client as the hub and its connection tasks share it: the identity,
//! the bounded send queue (messages and bytes), and the close decision.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::auth::identity::Identity;
use crate::close::Closing;
pub use crate::types::ClientId;

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
    /// Frames of a replay (what a recovering client missed) still counted
    /// in `depth`: room beyond the limits, so a replay never evicts.
    replayed: u32,
    /// The connection is closing (a close marker is queued) or the writer
    /// has ended: nothing more is accepted.
    closed: bool,
}

/// State shared by the hub and the connection's two tasks.
#[derive(Debug)]
pub struct Shared {
    pub id: ClientId,
    pub remote_addr: SocketAddr,
    pub connected_at: SystemTime,
    /// Who the client's token says it is; `None` when auth is off. Boxed:
    /// without auth a client pays one word for it.
    pub identity: Option<Box<Identity>>,
    /// Cancelled the moment the connection starts closing, whatever the
    /// cause, so the reader stops taking requests at once; a child of the
    /// server's force token, so a forced shutdown cancels it too.
    pub token: CancellationToken,
    /// Why the connection ends; the first cause recorded wins.
    closing: OnceLock<Closing>,
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue gains an item.
    ready: Notify,
    /// The queue's limits: messages and bytes.
    max_len: usize,
    max_bytes: usize,
    /// What it sent and received, for operators.
    pub traffic: Traffic,
    /// A large frame on its way to the socket past the WebSocket library's
    /// buffer (the data plane's side door, `ws::wire`): its text and how
    /// many bytes of the frame (head included) are written. Here, in the
    /// client's one shared allocation, rather than in one of its own.
    pub direct: Mutex<Option<(bytes::Bytes, usize)>>,
    /// When the write in progress began ([`clock_ms`]), 0 when the writer
    /// is not writing: the hub's sampler evicts a client whose write has
    /// not finished within `--write-timeout`, so no write needs a timer.
    write_since: AtomicU64,
    /// When the reader last read a frame ([`clock_ms`]): the hub's sampler
    /// closes a client silent for `--idle-timeout`, so no connection needs
    /// an idle timer of its own.
    last_seen: AtomicU64,
    /// Why it was evicted, once it was ([`Trigger`] as a number; 0: not).
    trigger: std::sync::atomic::AtomicU8,
}

/// What made a client a slow consumer, for the eviction's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Its queue held `--send-queue-len` messages.
    MessageLimit = 1,
    /// Its queue held `--send-queue-bytes` bytes.
    ByteLimit = 2,
    /// A socket write took longer than `--write-timeout`.
    WriteTimeout = 3,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::MessageLimit => "message_limit",
            Trigger::ByteLimit => "byte_limit",
            Trigger::WriteTimeout => "write_timeout",
        }
    }
}

/// What a client sent and received, counted by its reader and writer.
#[derive(Debug, Default)]
pub struct Traffic {
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl Traffic {
    /// The writer wrote `frames` frames of `bytes` payload bytes.
    pub fn sent(&self, frames: u64, bytes: u64) {
        self.messages_sent.fetch_add(frames, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The reader read one message of `bytes` payload bytes.
    pub fn received(&self, bytes: u64) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }
}

/// Messages and payload bytes, sent to and received from clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, other: Totals) {
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
    }
}

/// Milliseconds since the first call, never 0: the clock of `write_since`
/// and `last_seen`.
fn clock_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is at its message or byte limit: the client is too slow.
    Full,
    /// The writer has ended: the client is going away.
    Closed,
}

/// How full a client's queue is after a push: messages and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fill {
    pub depth: usize,
    pub bytes: usize,
}

impl Fill {
    /// The larger of each, from two fills (not necessarily of one queue).
    pub fn max(self, other: Fill) -> Fill {
        Fill {
            depth: self.depth.max(other.depth),
            bytes: self.bytes.max(other.bytes),
        }
    }
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
            identity: None,
            token,
            closing: OnceLock::new(),
            queue: Mutex::default(),
            ready: Notify::new(),
            max_len,
            max_bytes,
            traffic: Traffic::default(),
            direct: Mutex::new(None),
            write_since: AtomicU64::new(0),
            last_seen: AtomicU64::new(clock_ms()),
            trigger: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The client as its token identified it.
    pub fn with_identity(mut self, identity: Option<Identity>) -> Self {
        self.identity = identity.map(Box::new);
        self
    }

    /// The token's `sub`, or "" without auth.
    pub fn user(&self) -> &str {
        self.identity.as_ref().map_or("", |i| i.user())
    }

    /// Records why the connection ends; returns false if a cause was already recorded.
    pub fn set_closing(&self, closing: Closing) -> bool {
        self.closing.set(closing).is_ok()
    }

    pub fn closing(&self) -> Option<&Closing> {
        self.closing.get()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The lock is never held across anything that can panic; recover anyway.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a text frame without waiting; on success returns how full
    /// the queue now is. One frame is always accepted into an empty byte budget, so a
    /// single large message never evicts a client that keeps up.
    pub fn try_push(&self, frame: Utf8Bytes) -> Result<Fill, PushError> {
        self.push(std::iter::once(frame), false)
    }

    /// Queues a replay, in order, whatever the limits: the frames are the
    /// history's own (shared, no copy), at most `--recovery-max` of them,
    /// and while they are queued live frames get as much room again.
    pub fn push_replay(&self, frames: Vec<Utf8Bytes>) -> Result<Fill, PushError> {
        self.push(frames.into_iter(), true)
    }

    /// Whether a replay queued for this client is not written yet.
    pub fn replaying(&self) -> bool {
        self.queue().replayed > 0
    }

    /// Queues frames under one lock, then wakes the writer; a live frame
    /// (`replay` false) only within the limits.
    fn push(&self, frames: impl ExactSizeIterator<Item = Utf8Bytes>, replay: bool) -> Result<Fill, PushError> {
        let fill = {
            let mut q = self.queue();
            if q.closed {
                return Err(PushError::Closed);
            }
            if replay {
                q.replayed = q.replayed.saturating_add(frames.len() as u32);
            }
            for frame in frames {
                let (len, room) = (frame.len(), q.replayed as usize);
                let full =
                    q.depth >= self.max_len + room || (room == 0 && q.bytes > 0 && q.bytes + len > self.max_bytes);
                if full && !replay {
                    return Err(PushError::Full);
                }
                q.items.push_back(Outbound::Text(frame));
                q.depth += 1;
                q.bytes += len;
            }
            q.high_water = q.high_water.max(q.depth);
            Fill {
                depth: q.depth,
                bytes: q.bytes,
            }
        };
        self.ready.notify_one();
        Ok(fill)
    }

    /// Starts closing with `closing` after what is already queued: nothing
    /// more is accepted, the writer sends the close frame once the queue is
    /// written, and the reader stops taking requests. False if the
    /// connection was already closing (the first cause wins).
    pub fn close(&self, closing: Closing) -> bool {
        if !self.set_closing(closing) {
            return false;
        }
        self.seal(false);
        true
    }

    /// Evicts a slow consumer: what is queued is discarded and the close
    /// frame (4008) goes next. The only way any layer evicts a client.
    /// Returns the number of messages discarded, or `None` if the
    /// connection was already closing.
    pub fn evict(&self, trigger: Option<Trigger>) -> Option<usize> {
        // Without one given, the queue is full: by count or by bytes.
        let trigger = trigger.unwrap_or_else(|| match self.queue_stats().depth >= self.max_len {
            true => Trigger::MessageLimit,
            false => Trigger::ByteLimit,
        });
        if !self.set_closing(Closing::slow_consumer()) {
            return None;
        }
        self.trigger.store(trigger as u8, Ordering::Relaxed);
        Some(self.seal(true))
    }

    /// Why it was evicted, if it was.
    pub fn trigger(&self) -> Option<Trigger> {
        match self.trigger.load(Ordering::Relaxed) {
            1 => Some(Trigger::MessageLimit),
            2 => Some(Trigger::ByteLimit),
            3 => Some(Trigger::WriteTimeout),
            _ => None,
        }
    }

    /// The client left: what is queued is dropped and the writer stops at
    /// the close marker (with no close frame to send, it writes nothing).
    pub fn stop_writer(&self) {
        self.seal(true);
    }

    /// Queues the close marker and refuses everything after it; with
    /// `discard`, drops what was queued first (returns how many).
    fn seal(&self, discard: bool) -> usize {
        let discarded = {
            let mut q = self.queue();
            let mut discarded = 0;
            if discard {
                for item in std::mem::take(&mut q.items) {
                    if let Outbound::Text(text) = item {
                        discarded += 1;
                        q.depth = q.depth.saturating_sub(1);
                        q.bytes = q.bytes.saturating_sub(text.len());
                    }
                }
            }
            if !q.closed {
                q.closed = true;
                q.items.push_back(Outbound::Close);
            }
            discarded
        };
        self.ready.notify_one();
        self.token.cancel();
        discarded
    }

    /// The writer starts (`true`) or finishes (`false`) a socket write.
    pub fn writing(&self, busy: bool) {
        let since = if busy { clock_ms() } else { 0 };
        self.write_since.store(since, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the write in progress has been blocked, if one is.
    pub fn write_stalled_for(&self) -> Option<std::time::Duration> {
        match self.write_since.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_millis(clock_ms().saturating_sub(since))),
        }
    }

    /// The reader read a frame: the client is not silent.
    pub fn seen(&self) {
        self.last_seen.store(clock_ms(), Ordering::Relaxed);
    }

    /// How long since the reader last read a frame (or since connecting).
    pub fn silent_for(&self) -> std::time::Duration {
        let last = self.last_seen.load(Ordering::Relaxed);
        std::time::Duration::from_millis(clock_ms().saturating_sub(last))
    }

    /// Whether the connection has started closing (or was forced closed).
    pub fn is_closing(&self) -> bool {
        self.token.is_cancelled()
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
        // A replay is queued before anything after it: what is written
        // goes first from it.
        q.replayed = q.replayed.min(q.depth as u32);
    }

    /// The writer has ended: refuse further frames and free what is queued.
    pub fn close_queue(&self) {
        let mut q = self.queue();
        q.closed = true;
        q.items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::{code, DisconnectReason};

    fn shared(max_len: usize, max_bytes: usize) -> Shared {
        Shared::new(
            ClientId(1),
            "127.0.0.1:1".parse().unwrap(),
            CancellationToken::new(),
            max_len,
            max_bytes,
        )
    }

    fn taken(s: &Shared) -> Vec<Outbound> {
        futures_util::FutureExt::now_or_never(s.take())
            .map(Vec::from)
            .unwrap_or_default()
    }

    #[test]
    fn the_message_limit_holds_and_written_frees_room() {
        let s = shared(2, 1 << 20);
        assert_eq!(s.try_push("a".into()).map(|f| f.depth), Ok(1));
        assert_eq!(s.try_push("b".into()).map(|f| f.depth), Ok(2));
        assert_eq!(s.try_push("c".into()), Err(PushError::Full));
        // Taken by the writer but not yet written: still counted.
        assert_eq!(taken(&s).len(), 2);
        assert_eq!(s.try_push("c".into()), Err(PushError::Full));
        s.written(2, 2);
        assert_eq!(s.try_push("c".into()).map(|f| f.depth), Ok(1));
        assert_eq!(s.queue_stats().high_water, 2);
    }

    #[test]
    fn the_byte_limit_holds_but_one_large_frame_always_fits_an_empty_queue() {
        let s = shared(100, 10);
        assert_eq!(
            s.try_push("x".repeat(50).into()).map(|f| f.depth),
            Ok(1),
            "alone in the queue"
        );
        assert_eq!(s.try_push("y".into()), Err(PushError::Full));
        s.written(1, 50);
        assert_eq!(s.try_push("123456".into()).map(|f| f.depth), Ok(1));
        assert_eq!(s.try_push("12345".into()), Err(PushError::Full), "6 + 5 > 10");
        assert_eq!(s.try_push("1234".into()), Ok(Fill { depth: 2, bytes: 10 }));
        assert_eq!((s.queue_stats().depth, s.queue_stats().bytes), (2, 10));
    }

    #[test]
    fn close_keeps_the_queue_then_refuses_everything() {
        let s = shared(4, 1 << 20);
        s.try_push("a".into()).unwrap();
        let kick = Closing::with_frame(DisconnectReason::Kicked, 4000, "bye");
        assert!(s.close(kick));
        assert!(s.is_closing(), "the reader stops at once");
        assert!(!s.close(Closing::shutdown()), "the first cause wins");
        assert_eq!(s.try_push("b".into()), Err(PushError::Closed));
        assert!(matches!(&taken(&s)[..], [Outbound::Text(t), Outbound::Close] if t.as_str() == "a"));
        assert_eq!(s.closing().map(Closing::code), Some(4000));
    }

    #[test]
    fn evict_discards_the_queue_and_counts_it() {
        let s = shared(4, 1 << 20);
        s.try_push("a".into()).unwrap();
        s.try_push("b".into()).unwrap();
        assert_eq!(s.evict(None), Some(2));
        assert_eq!(s.evict(None), None, "evicted once");
        assert!(matches!(&taken(&s)[..], [Outbound::Close]));
        assert_eq!((s.queue_stats().depth, s.queue_stats().bytes), (0, 0));
        assert_eq!(s.closing().map(Closing::code), Some(code::SLOW_CONSUMER));
    }

    #[test]
    fn after_the_writer_ends_nothing_is_queued() {
        let s = shared(4, 1 << 20);
        s.try_push("a".into()).unwrap();
        s.close_queue();
        assert_eq!(s.try_push("b".into()), Err(PushError::Closed));
        assert!(taken(&s).is_empty());
    }
}

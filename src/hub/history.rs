//! Per-topic history, kept by the hub on one node: every publish to a topic
//! with history gets the next offset (1, 2, 3, ... with no gaps) and is kept
//! in the topic's ring, bounded by `--history-size`, `--history-ttl` and the
//! node-wide `--history-max-bytes` (which takes the history of the topics
//! published to longest ago first). A client that comes back with the last
//! offset it saw gets everything after it, or nothing and `recovered: false`.
//!
//! An epoch names one history: this process's start and the topic's
//! generation. A topic whose history was dropped entirely starts again at
//! offset 1 under a new epoch, so a client never takes one history's offsets
//! for another's.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::{self, Since};
use crate::types::{Topic, TopicPatterns};

/// What a kept message costs besides its frame: the ring slot (56 bytes),
/// the shared frame's header and both allocations' rounding. Measured: 100 000
/// kept messages of 138-byte frames took 266 bytes each of the process's
/// memory (docs/performance.md), so the byte cap is charged what memory is.
pub const ENTRY_OVERHEAD: usize = 128;

#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Messages kept per topic; 0: no history anywhere.
    pub size: usize,
    pub ttl: Duration,
    pub topics: TopicPatterns,
    pub max_bytes: usize,
    /// Missed messages one recovery replays at most.
    pub recovery_max: usize,
}

impl HistoryConfig {
    pub fn off() -> HistoryConfig {
        HistoryConfig {
            size: 0,
            ttl: Duration::from_secs(300),
            topics: TopicPatterns::none(),
            max_bytes: 0,
            recovery_max: 0,
        }
    }
}

/// Why a recovery replayed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecovered {
    /// The client's epoch is not this history's (a restart, or the topic's
    /// history was dropped and began again).
    Epoch,
    /// Messages after the client's offset are gone (size, age or the
    /// node-wide byte cap).
    Trimmed,
    /// More were missed than `--recovery-max`.
    TooMany,
    /// The client names an offset this history has not reached.
    Ahead,
    /// The topic keeps no history.
    NoHistory,
    /// An earlier replay to this client is still being written (or, in a
    /// cluster, the node has too many stream reads in flight).
    Busy,
    /// In a cluster: the backplane's stream could not be read in time.
    Unavailable,
}

impl NotRecovered {
    pub const ALL: [NotRecovered; 7] = [
        Self::Epoch,
        Self::Trimmed,
        Self::TooMany,
        Self::Ahead,
        Self::NoHistory,
        Self::Busy,
        Self::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Epoch => "epoch",
            Self::Trimmed => "trimmed",
            Self::TooMany => "too_many",
            Self::Ahead => "ahead",
            Self::NoHistory => "no_history",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Why kept messages were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trim {
    Size,
    Ttl,
    MaxBytes,
}

impl Trim {
    pub const ALL: [Trim; 3] = [Self::Size, Self::Ttl, Self::MaxBytes];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Ttl => "ttl",
            Self::MaxBytes => "max_bytes",
        }
    }
}

struct Kept {
    offset: u64,
    at: Instant,
    frame: Utf8Bytes,
}

/// One topic's history.
struct Log {
    epoch: Arc<str>,
    /// The latest offset given (0: none yet).
    last: u64,
    kept: VecDeque<Kept>,
    bytes: usize,
    /// When it was last published to, in [`History::recency`]'s order,
    /// while it keeps messages.
    touched: Option<u64>,
}

/// A topic's position: its latest offset and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

pub struct History {
    config: HistoryConfig,
    /// This process's part of every epoch.
    process: String,
    /// Topic histories begun so far (each one's epoch is new).
    generation: u64,
    logs: HashMap<Topic, Log>,
    /// Topics that keep messages, by their last publish, oldest first: who
    /// loses history first when the node-wide byte cap is reached, and
    /// where the once-a-second sweep finds what the TTL has emptied.
    recency: BTreeMap<u64, Topic>,
    /// Topics that keep nothing: forgotten once they have no subscriber.
    idle: HashSet<Topic>,
    clock: u64,
    messages: usize,
    bytes: usize,
    /// Messages removed so far, by why (read by the metrics sampler).
    pub trimmed: [u64; 3],
}

impl History {
    pub fn new(config: HistoryConfig) -> History {
        // Unique per process start (and per hub, for tests that run several).
        static HUBS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let hub = HUBS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let process = format!(
            "{:x}{:04x}{hub:x}",
            crate::types::unix_ms(),
            std::process::id() & 0xffff
        );
        History {
            config,
            process,
            generation: 0,
            logs: HashMap::new(),
            recency: BTreeMap::new(),
            idle: HashSet::new(),
            clock: 0,
            messages: 0,
            bytes: 0,
            trimmed: [0; 3],
        }
    }

    /// Whether `topic` keeps history.
    pub fn covers(&self, topic: &Topic) -> bool {
        self.config.size > 0 && self.config.topics.matches(topic)
    }

    /// The topic's position, its history begun if it had none (a
    /// subscriber learns the epoch before the first publish).
    pub fn position(&mut self, topic: &Topic) -> Position {
        let log = self.log(topic);
        Position {
            offset: log.last,
            epoch: log.epoch.clone(),
        }
    }

    fn log(&mut self, topic: &Topic) -> &mut Log {
        if !self.logs.contains_key(topic) {
            self.generation += 1;
            self.clock += 1;
            let epoch = format!("{}-{:x}", self.process, self.generation).into();
            self.idle.insert(topic.clone());
            self.logs.insert(
                topic.clone(),
                Log {
                    epoch,
                    last: 0,
                    kept: VecDeque::new(),
                    bytes: 0,
                    touched: None,
                },
            );
        }
        self.logs.get_mut(topic).expect("just inserted")
    }

    /// Keeps a publish: gives it the topic's next offset and returns the
    /// frame carrying it, which every recipient gets.
    pub fn append(&mut self, topic: &Topic, frame: &Utf8Bytes, now: Instant) -> (u64, Utf8Bytes) {
        self.clock += 1;
        let clock = self.clock;
        let (size, ttl) = (self.config.size, self.config.ttl);
        let log = self.log(topic);
        log.last += 1;
        let offset = log.last;
        let frame = protocol::with_offset(frame, offset);
        let cost = frame.len() + ENTRY_OVERHEAD;
        log.kept.push_back(Kept {
            offset,
            at: now,
            frame: frame.clone(),
        });
        log.bytes += cost;
        let previous = log.touched.replace(clock);
        let (mut trimmed, mut freed) = ([0u64; 3], 0usize);
        while log.kept.len() > size {
            freed += pop(log);
            trimmed[Trim::Size as usize] += 1;
        }
        while log.kept.front().is_some_and(|k| now.duration_since(k.at) >= ttl) {
            freed += pop(log);
            trimmed[Trim::Ttl as usize] += 1;
        }
        let removed: u64 = trimmed.iter().sum();
        match previous {
            Some(previous) => {
                self.recency.remove(&previous);
            }
            None => {
                self.idle.remove(topic);
            }
        }
        self.recency.insert(clock, topic.clone());
        self.messages = self.messages + 1 - removed as usize;
        self.bytes = self.bytes + cost - freed;
        for (total, n) in self.trimmed.iter_mut().zip(trimmed) {
            *total += n;
        }
        self.enforce_cap(topic);
        (offset, frame)
    }

    /// Over the node-wide cap: the history of the topics published to
    /// longest ago goes first (their offsets and epoch stay, so a client
    /// asking for what was dropped is told it is gone). `keep` is the topic
    /// just published to; it goes last.
    fn enforce_cap(&mut self, keep: &Topic) {
        while self.bytes > self.config.max_bytes {
            let mut oldest = self.recency.values().take(2);
            let Some(topic) = (match (oldest.next(), oldest.next()) {
                (Some(first), Some(second)) if first == keep => Some(second),
                (first, _) => first,
            })
            .cloned() else {
                return;
            };
            let n = self.drop_all(&topic);
            self.trimmed[Trim::MaxBytes as usize] += n as u64;
        }
    }

    /// Drops everything a topic keeps; returns how many messages.
    fn drop_all(&mut self, topic: &Topic) -> usize {
        let Some(log) = self.logs.get_mut(topic) else { return 0 };
        let (n, mut freed) = (log.kept.len(), 0);
        while !log.kept.is_empty() {
            freed += pop(log);
        }
        self.messages -= n;
        self.bytes -= freed;
        self.emptied(topic);
        n
    }

    /// A topic whose history is now empty leaves the recency order.
    fn emptied(&mut self, topic: &Topic) {
        if let Some(log) = self.logs.get_mut(topic) {
            if let Some(touched) = log.touched.take() {
                self.recency.remove(&touched);
                self.idle.insert(topic.clone());
            }
        }
    }

    /// What a client that last saw `since` missed on `topic`: all of it,
    /// in order, or why not.
    pub fn recover(&mut self, topic: &Topic, since: &Since, now: Instant) -> Result<Vec<Utf8Bytes>, NotRecovered> {
        if !self.covers(topic) {
            return Err(NotRecovered::NoHistory);
        }
        self.expire(topic, now);
        let recovery_max = self.config.recovery_max as u64;
        let log = self.log(topic);
        if *since.epoch != *log.epoch {
            return Err(NotRecovered::Epoch);
        }
        if since.offset > log.last {
            return Err(NotRecovered::Ahead);
        }
        let missed = log.last - since.offset;
        if missed == 0 {
            return Ok(Vec::new());
        }
        if missed > recovery_max {
            return Err(NotRecovered::TooMany);
        }
        match log.kept.front() {
            Some(first) if first.offset <= since.offset + 1 => {}
            _ => return Err(NotRecovered::Trimmed),
        }
        let skip = (since.offset + 1 - log.kept[0].offset) as usize;
        Ok(log.kept.iter().skip(skip).map(|k| k.frame.clone()).collect())
    }

    /// What the topic keeps after `since`, at most `limit`, for operators;
    /// `None` when the topic has no history here.
    pub fn page(&mut self, topic: &Topic, since: u64, limit: usize, now: Instant) -> Option<super::HistoryPage> {
        if !self.covers(topic) || !self.logs.contains_key(topic) {
            return None;
        }
        self.expire(topic, now);
        let log = self.logs.get(topic)?;
        let first = log.kept.front().map_or(log.last + 1, |k| k.offset);
        let messages = log
            .kept
            .iter()
            .skip_while(|k| k.offset <= since)
            .take(limit)
            .map(|k| (k.offset, k.frame.clone()))
            .collect();
        Some(super::HistoryPage {
            epoch: log.epoch.clone(),
            offset: log.last,
            messages,
            trimmed: since < log.last && first > since + 1,
        })
    }

    /// Drops what is older than the TTL from one topic.
    fn expire(&mut self, topic: &Topic, now: Instant) {
        let ttl = self.config.ttl;
        let Some(log) = self.logs.get_mut(topic) else { return };
        let (mut n, mut freed) = (0, 0);
        while log.kept.front().is_some_and(|k| now.duration_since(k.at) >= ttl) {
            freed += pop(log);
            n += 1;
        }
        let empty = log.kept.is_empty();
        self.messages -= n;
        self.bytes -= freed;
        self.trimmed[Trim::Ttl as usize] += n as u64;
        if empty {
            self.emptied(topic);
        }
    }

    /// Once a second: drops what is older than the TTL everywhere, and
    /// forgets topics with nothing kept (no publish for a TTL, or dropped
    /// for the byte cap) and no subscriber (`subscribed`): their next
    /// history starts under a new epoch.
    ///
    /// Its work is what expired: topics leave the recency order oldest
    /// first, and the walk stops at the first one published to within the
    /// TTL. (A topic still published to drops its expired messages as it is
    /// published to or read.)
    pub fn sweep(&mut self, now: Instant, subscribed: impl Fn(&Topic) -> bool) {
        let ttl = self.config.ttl;
        while let Some(topic) = self.recency.values().next().cloned() {
            let last = self.logs.get(&topic).and_then(|log| log.kept.back()).map(|k| k.at);
            if last.is_some_and(|at| now.duration_since(at) < ttl) {
                break;
            }
            let n = self.drop_all(&topic);
            self.trimmed[Trim::Ttl as usize] += n as u64;
        }
        let forget: Vec<Topic> = self.idle.iter().filter(|t| !subscribed(t)).cloned().collect();
        for topic in forget {
            self.idle.remove(&topic);
            self.logs.remove(&topic);
        }
    }

    /// (topics with history, messages kept, bytes kept).
    pub fn usage(&self) -> (usize, usize, usize) {
        (self.logs.len(), self.messages, self.bytes)
    }
}

/// What a client that last saw `since` missed, from a read of the topic's
/// history in a cluster (`page`: the topic's position and what it keeps
/// after `since`): all of it, in order, or why not.
pub fn replay_of(page: &super::HistoryPage, since: &Since, recovery_max: u64) -> Result<Vec<Utf8Bytes>, NotRecovered> {
    if *since.epoch != *page.epoch {
        return Err(NotRecovered::Epoch);
    }
    if since.offset > page.offset {
        return Err(NotRecovered::Ahead);
    }
    let missed = page.offset - since.offset;
    if missed > recovery_max {
        return Err(NotRecovered::TooMany);
    }
    let complete = page.messages.len() as u64 == missed
        && page
            .messages
            .iter()
            .zip(since.offset + 1..)
            .all(|((offset, _), expected)| *offset == expected);
    if !complete {
        return Err(NotRecovered::Trimmed);
    }
    Ok(page.messages.iter().map(|(_, frame)| frame.clone()).collect())
}

/// Removes a log's oldest message; returns the bytes it held.
fn pop(log: &mut Log) -> usize {
    let kept = log.kept.pop_front().expect("not empty");
    let cost = kept.frame.len() + ENTRY_OVERHEAD;
    log.bytes -= cost;
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(size: usize, max_bytes: usize) -> History {
        History::new(HistoryConfig {
            size,
            ttl: Duration::from_secs(60),
            topics: TopicPatterns::parse("*").unwrap(),
            max_bytes,
            recovery_max: 100,
        })
    }

    fn frame(n: u64) -> Utf8Bytes {
        format!(r#"{{"type":"message","topic":"t","from":"c-1","data":{n}}}"#).into()
    }

    fn since(offset: u64, epoch: &str) -> Since {
        Since {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn offsets_have_no_gaps_and_recovery_is_all_or_nothing() {
        let mut h = history(3, 1 << 20);
        let t = Topic::parse("t").unwrap();
        let now = Instant::now();
        let epoch = h.position(&t).epoch;
        for n in 1..=5 {
            let (offset, framed) = h.append(&t, &frame(n), now);
            assert_eq!(offset, n);
            assert!(framed.as_str().ends_with(&format!(r#","offset":{n}}}"#)), "{framed}");
        }
        assert_eq!(h.usage().1, 3, "size keeps the last 3");
        let replay = h.recover(&t, &since(2, &epoch), now).unwrap();
        assert_eq!(replay.len(), 3);
        assert!(replay[0].as_str().ends_with(r#""offset":3}"#));
        assert_eq!(h.recover(&t, &since(5, &epoch), now).unwrap().len(), 0);
        assert_eq!(h.recover(&t, &since(1, &epoch), now), Err(NotRecovered::Trimmed));
        assert_eq!(h.recover(&t, &since(6, &epoch), now), Err(NotRecovered::Ahead));
        assert_eq!(h.recover(&t, &since(4, "x"), now), Err(NotRecovered::Epoch));
        assert_eq!(h.trimmed[Trim::Size as usize], 2);
    }

    #[test]
    fn the_byte_cap_takes_the_history_published_to_longest_ago_first() {
        let one = frame(1).len() + ",\"offset\":1".len() + ENTRY_OVERHEAD;
        let mut h = history(10, one * 3);
        let (a, b) = (Topic::parse("a").unwrap(), Topic::parse("b").unwrap());
        let now = Instant::now();
        h.append(&a, &frame(1), now);
        h.append(&b, &frame(1), now);
        h.append(&a, &frame(1), now);
        h.append(&b, &frame(1), now);
        // Four over a cap of three: `a` was published to longest ago.
        let (_, messages, bytes) = h.usage();
        assert_eq!((messages, bytes), (2, 2 * one));
        let epoch_a = h.position(&a).epoch;
        assert_eq!(h.recover(&a, &since(1, &epoch_a), now), Err(NotRecovered::Trimmed));
        assert_eq!(h.trimmed[Trim::MaxBytes as usize], 2);
        // Forgotten once empty and unsubscribed: the next history is a new one.
        h.sweep(now, |_| false);
        assert_ne!(h.position(&a).epoch, epoch_a);
        assert_eq!(h.position(&a).offset, 0);
    }

    #[test]
    fn the_sweep_drops_what_expired_and_forgets_idle_topics_without_subscribers() {
        let mut h = history(10, 1 << 20);
        let (a, b, c) = (
            Topic::parse("a").unwrap(),
            Topic::parse("b").unwrap(),
            Topic::parse("c").unwrap(),
        );
        let start = Instant::now();
        h.append(&a, &frame(1), start);
        h.append(&b, &frame(1), start + Duration::from_secs(30));
        let epoch_c = h.position(&c).epoch;
        // At 70 s, `a` (published at 0) has expired; `b` (at 30 s) has not.
        h.sweep(start + Duration::from_secs(70), |t| t == &c);
        assert_eq!(
            h.usage(),
            (2, 1, frame(1).len() + ",\"offset\":1".len() + ENTRY_OVERHEAD)
        );
        assert_eq!(h.trimmed[Trim::Ttl as usize], 1);
        // `a` was forgotten (nothing kept, no subscriber): a new epoch next
        // time; `c` has a subscriber and keeps its epoch.
        assert_eq!(h.position(&c).epoch, epoch_c);
        assert_eq!(h.position(&a).offset, 0);
    }
}

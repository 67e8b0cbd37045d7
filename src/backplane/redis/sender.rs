//! The sender: one multiplexed connection of its own, owned by one task,
//! which reconnects with backoff after a failure.
//!
//! Messages leave in the order they were queued (control messages first).
//! Each batch (up to [`BATCH`] messages) is one `EVAL` of [`SEND_SCRIPT`],
//! and up to [`PIPELINES`] batches are in flight at once, so a link's round
//! trip does not cap a node's publish rate. Order holds because each batch
//! is handed to the connection, which writes requests in the order it gets
//! them, before the next is built. A batch leaves at once when nothing is in
//! flight; otherwise when it is full, or when an earlier one comes back, so
//! a burst travels in full batches rather than in many small ones.
//!
//! Every batch carries a deadline on Redis's own clock: one that Redis runs
//! later than that (a paused Redis resumed, a link that held it) publishes
//! nothing. So a batch the sender gave up on after its own timeout, and
//! counted as dropped, is never delivered late as well.

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesOrdered;
use futures_util::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::time::Instant;

use super::store::META_LIFE;
use super::*;

/// Batches in flight on the connection, at most.
const PIPELINES: usize = 8;
/// A batch Redis runs more than this after it was sent publishes nothing.
/// Half the I/O timeout: one that ran in time has the other half to answer
/// before the sender gives up on it.
const LATE: Duration = Duration::from_millis(IO_TIMEOUT.as_millis() as u64 / 2);

/// ARGV: the deadline (Redis's clock, ms), history size, TTL (ms) and meta
/// TTL (ms), then the messages: `channel, payload` for a plain publish, and
/// `#topic, origin, frame` for one to a topic with history, which gets the
/// topic's next offset (`HINCRBY` on its meta, where a missing epoch is
/// begun), is kept in its stream under id `0-<offset>` with the time, and
/// is sent as `<origin>\n#<epoch> <offset>\n<frame>`. Does all of it and
/// answers {1, the numbered messages' offsets...}, or nothing and answers
/// {0} when the deadline has passed.
const SEND_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[1]) then return {0} end
local offsets = {1}
local i = 5
while i <= #ARGV do
  local c = ARGV[i]
  if string.byte(c, 1) == 35 then
    local topic = string.sub(c, 2)
    local meta = 'wshub:meta:{' .. topic .. '}'
    local stream = 'wshub:history:{' .. topic .. '}'
    local epoch = redis.call('HGET', meta, 'epoch')
    if not epoch then
      epoch = t[1] .. '-' .. t[2]
      redis.call('DEL', stream)
      redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    end
    local offset = redis.call('HINCRBY', meta, 'offset', 1)
    redis.call('XADD', stream, 'MAXLEN', ARGV[2], '0-' .. offset, 't', now, 'f', ARGV[i + 2])
    redis.call('PEXPIRE', stream, ARGV[3])
    redis.call('PEXPIRE', meta, ARGV[4])
    local header = ARGV[i + 1] .. '\n#' .. epoch .. ' ' .. offset .. '\n'
    redis.call('PUBLISH', 'wshub:topic:{' .. topic .. '}', header .. ARGV[i + 2])
    table.insert(offsets, offset)
    i = i + 3
  else
    redis.call('PUBLISH', c, ARGV[i + 1])
    i = i + 2
  end
end
return offsets
";

type Queue = mpsc::Receiver<Out>;
/// A batch on its way: whether Redis published it (`false`: too late), and
/// how many messages it holds.
type InFlight = Pin<Box<dyn Future<Output = (redis::RedisResult<bool>, u64)> + Send>>;
/// Who waits for each numbered message of a batch, in order.
type Confirms = Vec<Option<tokio::sync::oneshot::Sender<u64>>>;

/// Why a connection's run ended.
enum Ended {
    Stopped,
    Failed,
}

impl Redis {
    /// The sender task; see the module docs. While Redis cannot be reached,
    /// what is queued is dropped and counted, and the engine refuses new
    /// messages (see [`Engine::publish`]).
    pub(super) async fn send_loop(self: Arc<Self>, mut control: Queue, mut queued: Queue, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        let (mut dropped, mut dropped_control) = (Vec::new(), Vec::new());
        loop {
            let connected = tokio::select! {
                connected = Link::connect(&self.client) => connected,
                _ = stop.cancelled() => return,
            };
            match connected {
                Ok(link) => {
                    self.sender_connected(&mut backoff);
                    if let Ended::Stopped = link.run(&self, &mut control, &mut queued, &stop, &mut backoff).await {
                        return;
                    }
                }
                Err(e) => self.sender_failed(&e, 0, &mut backoff),
            }
            // Down until the next attempt: what is queued is dropped.
            let retry = tokio::time::sleep(backoff.next());
            tokio::pin!(retry);
            loop {
                let got = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = &mut retry => break,
                    got = control.recv_many(&mut dropped_control, BATCH) => got,
                    got = queued.recv_many(&mut dropped, BATCH) => got,
                };
                if got == 0 {
                    return;
                }
                metrics::backplane_dropped(Dropped::Outbound, got as u64);
                dropped.clear();
                dropped_control.clear();
            }
        }
    }

    fn sender_connected(&self, backoff: &mut Backoff) {
        self.sender_up.store(true, Ordering::Relaxed);
        if backoff.attempts > 0 {
            tracing::info!("backplane: connected to Redis again");
        }
        *backoff = Backoff::default();
    }

    /// The connection failed, with `n` messages lost: counted, and logged
    /// once an outage.
    fn sender_failed(&self, error: &EngineError, n: u64, backoff: &mut Backoff) {
        let was_up = self.sender_up.swap(false, Ordering::Relaxed);
        metrics::backplane_dropped(Dropped::Outbound, n);
        let kind = match error {
            e if e.is_auth() => BackplaneError::Auth,
            EngineError::Redis(e) if !(e.is_io_error() || e.is_connection_refusal() || e.is_timeout()) => {
                BackplaneError::Publish
            }
            _ => BackplaneError::Connect,
        };
        metrics::backplane_error(kind);
        if was_up || backoff.attempts == 0 {
            tracing::warn!(%error, "backplane: cannot reach Redis; local delivery goes on, messages for other nodes are dropped; retrying with backoff");
        }
    }
}

/// One connection to Redis and its clock.
struct Link {
    conn: MultiplexedConnection,
    /// An instant here and Redis's clock (ms) at that instant.
    clock: (Instant, u64),
    /// When a late batch was last logged.
    late_logged: Option<Instant>,
}

impl Link {
    /// Connects and reads Redis's clock, within the I/O timeout.
    async fn connect(client: &redis::Client) -> Result<Link, EngineError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT));
        let connect = async {
            let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
            let asked = Instant::now();
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
            // Read halfway through the round trip, as near as can be told.
            let clock = (asked + asked.elapsed() / 2, secs * 1000 + micros / 1000);
            Ok::<_, EngineError>(Link {
                conn,
                clock,
                late_logged: None,
            })
        };
        tokio::time::timeout(IO_TIMEOUT * 2, connect)
            .await
            .map_err(|_| EngineError::Timeout)?
    }

    /// Sends until the connection fails (every batch in flight has come
    /// back by then, each counted) or the node stops.
    async fn run(
        mut self,
        redis: &Redis,
        control: &mut Queue,
        queued: &mut Queue,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Ended {
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut urgent = Vec::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut failed = false;
        loop {
            let room = !failed && in_flight.len() < PIPELINES;
            let wanted = BATCH - batch.len();
            let got = tokio::select! {
                biased;
                Some((result, n)) = in_flight.next() => {
                    match result {
                        Ok(true) => metrics::backplane_messages("out", n),
                        Ok(false) => self.late(n),
                        Err(_) if failed => metrics::backplane_dropped(Dropped::Outbound, n),
                        Err(e) => {
                            failed = true;
                            redis.sender_failed(&e.into(), n, backoff);
                        }
                    }
                    usize::MAX
                }
                got = control.recv_many(&mut urgent, BATCH), if room => got,
                got = queued.recv_many(&mut batch, wanted), if room && wanted > 0 => got,
                _ = stop.cancelled() => 0,
            };
            if got == 0 {
                return Ended::Stopped;
            }
            if failed {
                if in_flight.is_empty() {
                    let lost = urgent.len() + batch.len();
                    metrics::backplane_dropped(Dropped::Outbound, lost as u64);
                    return Ended::Failed;
                }
                continue;
            }
            let ready = !urgent.is_empty() || (!batch.is_empty() && (in_flight.is_empty() || batch.len() == BATCH));
            if ready && in_flight.len() < PIPELINES {
                let call = self.send(redis.limits, urgent.drain(..).chain(batch.drain(..)));
                in_flight.push_back(call);
            }
        }
    }

    /// One batch as one `EVAL`, handed to the connection before this
    /// returns: the first poll queues the request on the connection, which
    /// writes requests in the order it is given them. Unconstrained, so
    /// tokio's cooperative budget cannot postpone that first step.
    fn send(&self, limits: Option<StreamLimits>, messages: impl Iterator<Item = Out>) -> InFlight {
        let mut eval = redis::cmd("EVAL");
        eval.arg(SEND_SCRIPT).arg(0).arg(self.deadline());
        let (size, ttl) = limits.map_or((1, Duration::ZERO), |l| (l.size.max(1), l.ttl));
        eval.arg(size)
            .arg(ttl.as_millis() as u64)
            .arg((ttl + META_LIFE).as_millis() as u64);
        let mut n = 0;
        let mut confirms: Confirms = Vec::new();
        for out in messages {
            match out {
                Out::Plain(channel, payload) => eval.arg(name(&channel)).arg(payload.as_ref()),
                Out::Numbered(m) => {
                    confirms.push(m.confirm);
                    eval.arg(format!("#{}", m.topic))
                        .arg(m.origin.as_ref())
                        .arg(m.frame.as_ref())
                }
            };
            n += 1;
        }
        let mut conn = self.conn.clone();
        let mut call: InFlight = Box::pin(async move {
            let sent = Instant::now();
            let answer = eval.query_async::<Vec<u64>>(&mut conn).await;
            if answer.is_ok() {
                metrics::backplane_sent(sent.elapsed());
            }
            // {1, offsets...}: each numbered message's waiter learns its
            // offset; {0}: too late, and the waiters are dropped.
            let published = answer.map(|offsets| {
                let published = offsets.first() == Some(&1);
                if published {
                    for (confirm, offset) in confirms.into_iter().zip(&offsets[1..]) {
                        if let Some(confirm) = confirm {
                            let _ = confirm.send(*offset);
                        }
                    }
                }
                published
            });
            (published, n)
        });
        match tokio::task::unconstrained(&mut call).now_or_never() {
            Some(done) => Box::pin(std::future::ready(done)),
            None => call,
        }
    }

    /// Redis's clock (ms) past which a batch sent now publishes nothing.
    fn deadline(&self) -> u64 {
        let (at, redis_ms) = self.clock;
        redis_ms + (Instant::now().saturating_duration_since(at) + LATE).as_millis() as u64
    }

    /// Redis ran a batch after its deadline and published none of it.
    fn late(&mut self, n: u64) {
        metrics::backplane_dropped(Dropped::Outbound, n);
        metrics::backplane_error(BackplaneError::Publish);
        if self
            .late_logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
        {
            self.late_logged = Some(Instant::now());
            tracing::warn!(messages = n, late_after = ?LATE, "backplane: Redis ran publishes too long after they were sent (paused or held up); they were dropped, not delivered late");
        }
    }
}

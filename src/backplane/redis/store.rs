//! What Redis keeps per topic besides its channel: the history stream
//! (`wshub:history:{<topic>}`, with its meta `wshub:meta:{<topic>}`) read
//! by [`READ_SCRIPT`], and the presence rosters (`wshub:presence:{<topic>}`,
//! one field per node) written by each node's heartbeat and read by
//! [`ROSTER_SCRIPT`]. Publishes to history topics are written by the sender.

use super::*;

/// How much longer a topic's meta (epoch, latest offset) lives than its stream.
pub(super) const META_LIFE: Duration = Duration::from_secs(24 * 3600);

/// ARGV: topic, after, limit, whole (1/0), ttl (ms), meta TTL (ms). Answers
/// [epoch, latest offset, offset, frame, offset, frame, ...]: what the stream
/// keeps after `after`, at most `limit` and none older than the TTL (all or
/// nothing with `whole`). A topic with no meta gets one: offset 0 under a
/// new epoch, and any stream left without one is dropped.
const READ_SCRIPT: &str = r"
local meta = 'wshub:meta:{' .. ARGV[1] .. '}'
local stream = 'wshub:history:{' .. ARGV[1] .. '}'
local t = redis.call('TIME')
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = t[1] .. '-' .. t[2]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', meta, ARGV[6])
end
local last = tonumber(redis.call('HGET', meta, 'offset'))
local out = {epoch, last}
local after = tonumber(ARGV[2])
if after >= last then return out end
if ARGV[4] == '1' and last - after > tonumber(ARGV[3]) then return out end
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[5])
for _, e in ipairs(redis.call('XRANGE', stream, '0-' .. (after + 1), '+', 'COUNT', ARGV[3])) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  if tonumber(f.t) >= oldest then
    table.insert(out, string.sub(e[1], 3))
    table.insert(out, f.f)
  end
end
return out
";

/// ARGV: topic, TTL (ms). Answers [node, roster, ...]: the rosters
/// (`wshub:presence:{<topic>}`, node → its clients there) of the nodes
/// present within the TTL, and removes those of nodes no longer in
/// presence at all.
const ROSTER_SCRIPT: &str = r"
local key = 'wshub:presence:{' .. ARGV[1] .. '}'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', key)
local out = {}
for i = 1, #fields, 2 do
  local seen = redis.call('ZSCORE', 'wshub:nodes', fields[i])
  if seen and tonumber(seen) >= now - tonumber(ARGV[2]) then
    table.insert(out, fields[i])
    table.insert(out, fields[i + 1])
  elseif not seen then
    redis.call('HDEL', key, fields[i])
  end
end
return out
";

/// Keys changed in one pipeline of roster writes, at most.
const ROSTER_BATCH: usize = 500;

fn roster_key(topic: &Topic) -> String {
    format!("wshub:presence:{{{topic}}}")
}

impl Redis {
    /// What the stream of `topic` keeps after `after` (see [`READ_SCRIPT`]).
    pub(super) async fn read_history(
        &self,
        topic: Topic,
        after: u64,
        limit: usize,
        whole: bool,
    ) -> Result<StreamRead, EngineError> {
        let limits = self.limits.ok_or(EngineError::Answer("no history configured"))?;
        let mut conn = self.conn.clone();
        let mut eval = redis::cmd("EVAL");
        eval.arg(READ_SCRIPT)
            .arg(0)
            .arg(topic.as_str())
            .arg(after)
            .arg(limit.max(1))
            .arg(if whole { "1" } else { "0" })
            .arg(limits.ttl.as_millis() as u64)
            .arg((limits.ttl + META_LIFE).as_millis() as u64);
        // A connection that broke since its last use (Redis restarted)
        // fails its next command and reconnects: the read is tried once
        // more, all within the I/O timeout.
        let read = async {
            match eval.query_async::<Vec<redis::Value>>(&mut conn).await {
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    eval.query_async::<Vec<redis::Value>>(&mut conn).await
                }
                answer => answer,
            }
        };
        let answer = tokio::time::timeout(IO_TIMEOUT, read)
            .await
            .map_err(|_| EngineError::Timeout)??;
        parse_read(answer).ok_or(EngineError::Answer("a stream read not in the expected shape"))
    }

    /// Writes this node's rosters that `changed` (`None`: none left there)
    /// and renews the expiry of those `held`, in pipelines of at most
    /// [`ROSTER_BATCH`] topics.
    pub(super) async fn write_roster(
        &self,
        node: NodeId,
        changed: Vec<(Topic, Option<Bytes>)>,
        held: Vec<Topic>,
        ttl: Duration,
    ) -> Result<(), EngineError> {
        let mut conn = self.conn.clone();
        let ttl = ttl.as_millis() as u64;
        // (topic, Some(roster or none left)) to write, (topic, None) to keep.
        let writes = changed
            .into_iter()
            .map(|(topic, roster)| (topic, Some(roster)))
            .chain(held.into_iter().map(|topic| (topic, None)));
        let mut pipe = redis::pipe();
        let mut n = 0;
        for (topic, roster) in writes {
            let key = roster_key(&topic);
            match roster {
                Some(Some(roster)) => {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg(node.as_str())
                        .arg(roster.as_ref())
                        .ignore();
                }
                Some(None) => {
                    pipe.cmd("HDEL").arg(&key).arg(node.as_str()).ignore();
                }
                None => {}
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
            n += 1;
            if n % ROSTER_BATCH == 0 {
                tokio::time::timeout(IO_TIMEOUT, pipe.exec_async(&mut conn))
                    .await
                    .map_err(|_| EngineError::Timeout)??;
                pipe = redis::pipe();
            }
        }
        tokio::time::timeout(IO_TIMEOUT, pipe.exec_async(&mut conn))
            .await
            .map_err(|_| EngineError::Timeout)??;
        Ok(())
    }

    /// The rosters of `topic` of the nodes present within `ttl`.
    pub(super) async fn read_roster(&self, topic: Topic, ttl: Duration) -> Result<Vec<(String, Bytes)>, EngineError> {
        let mut conn = self.conn.clone();
        let mut eval = redis::cmd("EVAL");
        eval.arg(ROSTER_SCRIPT)
            .arg(0)
            .arg(topic.as_str())
            .arg(ttl.as_millis() as u64);
        let read = eval.query_async::<Vec<Vec<u8>>>(&mut conn);
        let rosters = tokio::time::timeout(IO_TIMEOUT, read)
            .await
            .map_err(|_| EngineError::Timeout)??;
        let mut pairs = rosters.into_iter();
        let mut out = Vec::new();
        while let (Some(node), Some(roster)) = (pairs.next(), pairs.next()) {
            out.push((String::from_utf8_lossy(&node).into_owned(), Bytes::from(roster)));
        }
        Ok(out)
    }
}

/// [`READ_SCRIPT`]'s answer.
fn parse_read(answer: Vec<redis::Value>) -> Option<StreamRead> {
    use redis::FromRedisValue;
    let mut values = answer.into_iter();
    let epoch = String::from_redis_value(values.next()?).ok()?;
    let offset = u64::from_redis_value(values.next()?).ok()?;
    let rest: Vec<redis::Value> = values.collect();
    let entries = rest
        .chunks_exact(2)
        .map(|e| {
            Some(StreamEntry {
                offset: String::from_redis_value_ref(&e[0]).ok()?.parse().ok()?,
                frame: Vec::<u8>::from_redis_value_ref(&e[1]).ok()?.into(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(StreamRead { epoch, offset, entries })
}

//! The series of per-topic history and recovery (`--history-size`): a node
//! without history has none of them.

use metrics::{describe_counter, describe_gauge};

pub const HISTORY_RECOVERIES_TOTAL: &str = "wshub_history_recoveries_total";
pub const HISTORY_REPLAYED_TOTAL: &str = "wshub_history_replayed_total";
pub const HISTORY_TOPICS: &str = "wshub_history_topics";
pub const HISTORY_MESSAGES: &str = "wshub_history_messages";
pub const HISTORY_BYTES: &str = "wshub_history_bytes";
pub const HISTORY_TRIMMED_TOTAL: &str = "wshub_history_trimmed_total";
pub const HISTORY_GAPS_TOTAL: &str = "wshub_history_gaps_total";

/// Describes the series and creates them at zero: `causes` are the
/// reasons a recovery fails, `trims` the reasons kept messages go.
pub fn start(causes: &[&'static str], trims: &[&'static str]) {
    describe_counter!(
        HISTORY_RECOVERIES_TOTAL,
        "Subscribes with `since`, by result (recovered, not_recovered) and, when not recovered, cause."
    );
    describe_counter!(
        HISTORY_REPLAYED_TOTAL,
        "Messages replayed to clients that recovered what they missed."
    );
    describe_gauge!(
        HISTORY_TOPICS,
        "Topics with history on this node (kept messages or a subscriber)."
    );
    describe_gauge!(HISTORY_MESSAGES, "Messages kept in topic histories.");
    describe_gauge!(
        HISTORY_BYTES,
        "Bytes kept in topic histories (frames plus 128 bytes per message, about what they take in memory), against --history-max-bytes."
    );
    describe_counter!(
        HISTORY_TRIMMED_TOTAL,
        "Messages removed from topic histories, by reason: size (--history-size), ttl (--history-ttl), max_bytes (--history-max-bytes)."
    );
    metrics::counter!(HISTORY_RECOVERIES_TOTAL, "result" => "recovered").absolute(0);
    for cause in causes {
        metrics::counter!(HISTORY_RECOVERIES_TOTAL, "result" => "not_recovered", "cause" => *cause).absolute(0);
    }
    describe_counter!(
        HISTORY_GAPS_TOTAL,
        "In a cluster: gaps in a topic's offsets as messages arrived from the backplane, by result: filled (fetched from the stream in time) or failed (the topic's subscribers here were closed with 4010)."
    );
    for result in ["filled", "failed"] {
        metrics::counter!(HISTORY_GAPS_TOTAL, "result" => result).absolute(0);
    }
    metrics::counter!(HISTORY_REPLAYED_TOTAL).absolute(0);
    for trim in trims {
        metrics::counter!(HISTORY_TRIMMED_TOTAL, "reason" => *trim).absolute(0);
    }
    usage(0, 0, 0);
}

/// A recovery: `Ok(replayed)`, or the cause it failed.
pub fn recovery(result: Result<usize, &'static str>) {
    match result {
        Ok(replayed) => {
            metrics::counter!(HISTORY_RECOVERIES_TOTAL, "result" => "recovered").increment(1);
            metrics::counter!(HISTORY_REPLAYED_TOTAL).increment(replayed as u64);
        }
        Err(cause) => {
            metrics::counter!(HISTORY_RECOVERIES_TOTAL, "result" => "not_recovered", "cause" => cause).increment(1)
        }
    }
}

pub fn usage(topics: usize, messages: usize, bytes: usize) {
    metrics::gauge!(HISTORY_TOPICS).set(topics as f64);
    metrics::gauge!(HISTORY_MESSAGES).set(messages as f64);
    metrics::gauge!(HISTORY_BYTES).set(bytes as f64);
}

/// Sets the trimmed counters to the hub's totals.
pub fn trimmed(reason: &'static str, total: u64) {
    metrics::counter!(HISTORY_TRIMMED_TOTAL, "reason" => reason).absolute(total);
}

/// A gap in a topic's offsets, filled from the stream or not.
pub fn gap(filled: bool) {
    let result = if filled { "filled" } else { "failed" };
    metrics::counter!(HISTORY_GAPS_TOTAL, "result" => result).increment(1);
}

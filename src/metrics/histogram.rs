//! A Prometheus histogram with fixed buckets held in atomics, for the hot
//! paths (every publish, every client at every queue sample). Recording is
//! a short search and three atomic adds, and its memory does not depend on
//! how often it is recorded: the exporter's own histograms keep every
//! sample until their next upkeep, so their memory grows with the rate.
//!
//! The values recorded are counts (recipients, queue depths), so the sum is
//! kept as an integer.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub struct FixedHistogram {
    name: &'static str,
    help: &'static str,
    /// Upper bounds, ascending; a last, implicit bucket is `+Inf`.
    bounds: &'static [f64],
    /// Samples per bucket, not cumulative (`bounds.len() + 1` of them).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl FixedHistogram {
    pub fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Self {
            name,
            help,
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, value: u64) {
        self.record_many(value, 1);
    }

    /// Records `n` samples of `value` at the cost of one.
    pub fn record_many(&self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let bucket = self.bounds.partition_point(|bound| *bound < value as f64);
        self.buckets[bucket].fetch_add(n, Relaxed);
        self.sum.fetch_add(value.saturating_mul(n), Relaxed);
        self.count.fetch_add(n, Relaxed);
    }

    /// Appends the histogram in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // Read the count from the buckets, so `+Inf` and `_count` always agree.
        cumulative += self.buckets[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum.load(Relaxed));
        let _ = writeln!(out, "{name}_count {cumulative}");
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = FixedHistogram::new("h", "help", &[0.0, 1.0, 10.0]);
        h.record(0);
        h.record(1);
        h.record_many(10, 3);
        h.record(11);
        let mut text = String::new();
        h.render(&mut text);
        for line in [
            "h_bucket{le=\"0\"} 1",
            "h_bucket{le=\"1\"} 2",
            "h_bucket{le=\"10\"} 5",
            "h_bucket{le=\"+Inf\"} 6",
            "h_sum 42",
            "h_count 6",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}

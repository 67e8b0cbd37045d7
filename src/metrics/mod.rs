//! Metrics: every name in one place, described once, recorded through
//! handles registered at start-up so the hot path pays one atomic add.
//!
//! The exporter is metrics-exporter-prometheus, installed once per process
//! ([`install`]); [`http`] serves `/metrics`, `/healthz` and `/readyz`.

mod histogram;
pub mod history;
pub mod http;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::close::DisconnectReason;
pub use crate::types::Source;
pub use histogram::FixedHistogram;

pub const CLIENTS: &str = "wshub_clients";
pub const TOPICS: &str = "wshub_topics";
pub const CONNECTIONS_TOTAL: &str = "wshub_connections_total";
pub const HANDSHAKE_FAILURES_TOTAL: &str = "wshub_handshake_failures_total";
pub const DISCONNECTS_TOTAL: &str = "wshub_disconnects_total";
pub const HUB_QUEUE_DEPTH: &str = "wshub_hub_queue_depth";
pub const HUB_QUEUE_CAPACITY: &str = "wshub_hub_queue_capacity";
pub const CLIENT_QUEUE_DEPTH: &str = "wshub_client_queue_depth";
pub const CLIENT_QUEUE_DEPTH_MAX: &str = "wshub_client_queue_depth_max";
pub const CLIENT_QUEUE_BYTES: &str = "wshub_client_queue_bytes";
pub const CLIENT_QUEUE_CAPACITY: &str = "wshub_client_queue_capacity";
pub const CLIENT_QUEUE_BYTES_MAX: &str = "wshub_client_queue_bytes_max";
pub const CLIENT_QUEUE_BYTES_CAPACITY: &str = "wshub_client_queue_bytes_capacity";
pub const CLIENT_QUEUE_FILL_MAX: &str = "wshub_client_queue_fill_max";
pub const MESSAGES_RECEIVED_TOTAL: &str = "wshub_messages_received_total";
pub const MESSAGES_SENT_TOTAL: &str = "wshub_messages_sent_total";
pub const BYTES_RECEIVED_TOTAL: &str = "wshub_bytes_received_total";
pub const BYTES_SENT_TOTAL: &str = "wshub_bytes_sent_total";
pub const BROADCASTS_TOTAL: &str = "wshub_broadcasts_total";
pub const BROADCAST_RECIPIENTS: &str = "wshub_broadcast_recipients";
pub const DROPPED_MESSAGES_TOTAL: &str = "wshub_dropped_messages_total";
pub const CLIENT_ERRORS_TOTAL: &str = "wshub_client_errors_total";
pub const ADMIN_REQUESTS_TOTAL: &str = "wshub_admin_requests_total";
pub const ADMIN_REQUEST_DURATION_SECONDS: &str = "wshub_admin_request_duration_seconds";
pub const ADMIN_EVENTS_LAGGED_TOTAL: &str = "wshub_admin_events_lagged_total";
pub const ADMIN_PANICS_TOTAL: &str = "wshub_admin_panics_total";
pub const BUILD_INFO: &str = "wshub_build_info";
pub const MAX_CONNECTIONS: &str = "wshub_max_connections";
pub const RELOADS_TOTAL: &str = "wshub_reloads_total";
pub const NODE_INFO: &str = "wshub_node_info";
pub const BACKPLANE_UP: &str = "wshub_backplane_up";
pub const BACKPLANE_ROUNDTRIP_SECONDS: &str = "wshub_backplane_roundtrip_seconds";
pub const BACKPLANE_SEND_SECONDS: &str = "wshub_backplane_send_seconds";
pub const BACKPLANE_ERRORS_TOTAL: &str = "wshub_backplane_errors_total";
pub const BACKPLANE_DROPPED_TOTAL: &str = "wshub_backplane_dropped_total";
pub const BACKPLANE_MESSAGES_TOTAL: &str = "wshub_backplane_messages_total";
pub const BACKPLANE_NODES: &str = "wshub_backplane_nodes";
pub const ACCEPT_ERRORS_TOTAL: &str = "wshub_accept_errors_total";
pub const LISTENER_REFUSED_TOTAL: &str = "wshub_listener_refused_total";

/// The node's listeners, as the `listener` label.
pub const LISTENERS: [&str; 3] = ["ws", "admin", "metrics"];
/// Why an `accept` failed, as the `kind` label.
pub const ACCEPT_ERROR_KINDS: [&str; 2] = ["too_many_files", "other"];

/// How often the hub samples every client's queue (depth histogram, max, bytes).
pub const QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a message did not reach a client it was addressed to.
#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// The client's queue was full: the message was dropped and the client evicted.
    SlowConsumer,
    /// The client was already closing: its queue no longer takes messages.
    Closing,
}

/// Registered handles for everything recorded on a hot path.
pub struct Handles {
    pub clients: Gauge,
    pub topics: Gauge,
    pub connections: Counter,
    pub hub_queue_depth: Gauge,
    pub client_queue_depth: FixedHistogram,
    pub client_queue_depth_max: Gauge,
    pub client_queue_bytes: Gauge,
    pub client_queue_bytes_max: Gauge,
    pub client_queue_fill_max: Gauge,
    pub messages_received: Counter,
    pub messages_sent: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub broadcast_recipients: FixedHistogram,
    disconnects: Vec<Counter>,
    broadcasts: [Counter; 3],
    dropped: [Counter; 2],
}

impl Handles {
    pub fn disconnect(&self, reason: DisconnectReason) {
        // `disconnects` is registered in `DisconnectReason::ALL` order,
        // which is declaration order (checked in `close::tests`).
        self.disconnects[reason as usize].increment(1);
    }

    pub fn broadcast(&self, source: Source, recipients: usize) {
        self.broadcasts[source as usize].increment(1);
        self.broadcast_recipients.record(recipients as u64);
    }

    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.dropped[reason as usize].increment(n);
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static HANDLES: OnceLock<Handles> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls
/// return the same handle) and describes every metric.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = |m: &str| Matcher::Full(m.to_string());
        let builder = PrometheusBuilder::new().set_buckets_for_metric(
            buckets(ADMIN_REQUEST_DURATION_SECONDS),
            &[
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ],
        );
        let builder = builder.and_then(|b| {
            b.set_buckets_for_metric(
                buckets(BACKPLANE_SEND_SECONDS),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
        });
        let builder = builder.and_then(|b| {
            b.set_buckets_for_metric(
                buckets(BACKPLANE_ROUNDTRIP_SECONDS),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
        });
        // The bucket lists above are non-empty, so the builder cannot fail;
        // a recorder already installed by an embedding program is reused.
        let handle = match builder.map(|b| b.install_recorder()) {
            Ok(Ok(handle)) => handle,
            _ => PrometheusBuilder::new().build_recorder().handle(),
        };
        describe();
        handle
    })
}

/// The registered hot-path handles (installs the recorder first).
pub fn handles() -> &'static Handles {
    HANDLES.get_or_init(|| {
        install();
        Handles {
            clients: metrics::gauge!(CLIENTS),
            topics: metrics::gauge!(TOPICS),
            connections: metrics::counter!(CONNECTIONS_TOTAL),
            hub_queue_depth: metrics::gauge!(HUB_QUEUE_DEPTH),
            client_queue_depth: FixedHistogram::new(
                CLIENT_QUEUE_DEPTH,
                "Per-client send-queue depth (messages), sampled for every client once a second.",
                &[
                    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 192.0, 256.0, 512.0, 1024.0,
                ],
            ),
            client_queue_depth_max: metrics::gauge!(CLIENT_QUEUE_DEPTH_MAX),
            client_queue_bytes: metrics::gauge!(CLIENT_QUEUE_BYTES),
            client_queue_bytes_max: metrics::gauge!(CLIENT_QUEUE_BYTES_MAX),
            client_queue_fill_max: metrics::gauge!(CLIENT_QUEUE_FILL_MAX),
            messages_received: metrics::counter!(MESSAGES_RECEIVED_TOTAL),
            messages_sent: metrics::counter!(MESSAGES_SENT_TOTAL),
            bytes_received: metrics::counter!(BYTES_RECEIVED_TOTAL),
            bytes_sent: metrics::counter!(BYTES_SENT_TOTAL),
            broadcast_recipients: FixedHistogram::new(
                BROADCAST_RECIPIENTS,
                "Clients each publish was queued for.",
                &[
                    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
                    20000.0, 50000.0, 100000.0,
                ],
            ),
            disconnects: DisconnectReason::ALL
                .iter()
                .map(|r| metrics::counter!(DISCONNECTS_TOTAL, "reason" => r.as_str()))
                .collect(),
            broadcasts: [
                metrics::counter!(BROADCASTS_TOTAL, "source" => "client"),
                metrics::counter!(BROADCASTS_TOTAL, "source" => "admin"),
                metrics::counter!(BROADCASTS_TOTAL, "source" => "backplane"),
            ],
            dropped: [
                metrics::counter!(DROPPED_MESSAGES_TOTAL, "reason" => "slow_consumer"),
                metrics::counter!(DROPPED_MESSAGES_TOTAL, "reason" => "closing"),
            ],
        }
    })
}

/// A refused handshake.
pub fn handshake_failure(reason: crate::close::HandshakeFailure) {
    metrics::counter!(HANDSHAKE_FAILURES_TOTAL, "reason" => reason.as_str()).increment(1);
}

/// An error frame answered to a client, by protocol error code.
pub fn client_error(code: &'static str) {
    metrics::counter!(CLIENT_ERRORS_TOTAL, "code" => code).increment(1);
}

/// Events an admin watcher missed because it did not keep up.
pub fn events_lagged(n: u64) {
    metrics::counter!(ADMIN_EVENTS_LAGGED_TOTAL).increment(n);
}

/// What SIGHUP reloads: the `wss://` certificate, the client-token key.
pub const RELOADED: [&str; 2] = ["tls", "jwt_key"];

/// A reload on SIGHUP of `what` (one of [`RELOADED`]), by result.
pub fn reload(what: &'static str, ok: bool) {
    metrics::counter!(RELOADS_TOTAL, "what" => what, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// What can go wrong on the backplane, as `wshub_backplane_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackplaneError {
    /// Connecting (or reconnecting) to the engine failed.
    Connect,
    /// A batch of publishes failed, timed out, or reached Redis past its
    /// deadline (and published nothing).
    Publish,
    /// Subscribing or unsubscribing failed.
    Subscribe,
    /// Refreshing or reading node presence failed.
    Presence,
    /// The canary's heartbeat did not come back in time.
    Stall,
    /// A message from the backplane could not be read.
    Decode,
    /// A node did not answer a cluster-wide admin call in time.
    Timeout,
    /// Another process runs with this node's id.
    NodeIdConflict,
    /// Redis refused this node's password, or wanted one it did not send.
    Auth,
    /// The subscription ended (Redis dropped it, the link failed, or the
    /// canary found it silent): what other nodes published until it was
    /// back did not reach this node's clients.
    SubscriptionLost,
    /// Reading a topic's history stream failed or timed out.
    History,
}

impl BackplaneError {
    pub const ALL: [BackplaneError; 11] = [
        Self::Connect,
        Self::Publish,
        Self::Subscribe,
        Self::Presence,
        Self::Stall,
        Self::Decode,
        Self::Timeout,
        Self::NodeIdConflict,
        Self::Auth,
        Self::SubscriptionLost,
        Self::History,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Presence => "presence",
            Self::Stall => "stall",
            Self::Decode => "decode",
            Self::Timeout => "timeout",
            Self::NodeIdConflict => "node_id_conflict",
            Self::Auth => "auth",
            Self::SubscriptionLost => "subscription_lost",
            Self::History => "history",
        }
    }
}

/// The backplane's own series, described and created (at zero) when a node
/// joins a cluster: a node alone has none of them.
pub fn backplane_start() {
    describe_gauge!(
        BACKPLANE_UP,
        "1 while the backplane carries messages: connected and the canary's last heartbeat came back in time."
    );
    describe_histogram!(
        BACKPLANE_ROUNDTRIP_SECONDS,
        Unit::Seconds,
        "Time for the canary's heartbeat to go out through the backplane and come back."
    );
    describe_counter!(BACKPLANE_ERRORS_TOTAL, "Backplane failures, by kind.");
    describe_counter!(
        BACKPLANE_DROPPED_TOTAL,
        "Backplane messages dropped, by reason: outbound (for other nodes, not sent: down, queue full, write failed), inbound (from other nodes, not taken in: the hub's byte budget or intake full)."
    );
    describe_counter!(
        BACKPLANE_MESSAGES_TOTAL,
        "Messages through the backplane, by direction (out, in)."
    );
    describe_gauge!(
        BACKPLANE_NODES,
        "Live nodes in the cluster, as this node last read their presence."
    );
    metrics::gauge!(BACKPLANE_UP).set(0.0);
    for kind in BackplaneError::ALL {
        metrics::counter!(BACKPLANE_ERRORS_TOTAL, "kind" => kind.as_str()).absolute(0);
    }
    for way in Dropped::ALL {
        metrics::counter!(BACKPLANE_DROPPED_TOTAL, "reason" => way.as_str()).absolute(0);
    }
    for direction in ["out", "in"] {
        metrics::counter!(BACKPLANE_MESSAGES_TOTAL, "direction" => direction).absolute(0);
    }
    describe_histogram!(
        BACKPLANE_SEND_SECONDS,
        Unit::Seconds,
        "Time from sending one batch of publishes to Redis (one run of the send script: with history, numbering and keeping each message too) to its answer."
    );
    let _ = metrics::histogram!(BACKPLANE_ROUNDTRIP_SECONDS);
    let _ = metrics::histogram!(BACKPLANE_SEND_SECONDS);
}

/// One batch of publishes answered by Redis after `took`.
pub fn backplane_sent(took: std::time::Duration) {
    metrics::histogram!(BACKPLANE_SEND_SECONDS).record(took.as_secs_f64());
}

/// `wshub_node_info{node="..."} 1`: which node this is, alone or in a cluster.
pub fn node_info(node: &str) {
    describe_gauge!(NODE_INFO, "Always 1; the node label says which node this is.");
    metrics::gauge!(NODE_INFO, "node" => node.to_string()).set(1.0);
}

/// One backplane failure.
pub fn backplane_error(kind: BackplaneError) {
    metrics::counter!(BACKPLANE_ERRORS_TOTAL, "kind" => kind.as_str()).increment(1);
}

/// Which way a dropped backplane message was going, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A message for other nodes this node failed to send: the backplane
    /// was down, its outbound queue full, or the write failed.
    Outbound,
    /// A message from another node this node could not take in: its hub's
    /// byte budget (`--hub-queue-bytes`) or its intake was full.
    Inbound,
}

impl Dropped {
    pub const ALL: [Dropped; 2] = [Self::Outbound, Self::Inbound];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// Backplane messages dropped, going `way`.
pub fn backplane_dropped(way: Dropped, n: u64) {
    metrics::counter!(BACKPLANE_DROPPED_TOTAL, "reason" => way.as_str()).increment(n);
}

/// Messages sent to (`out`) or taken from (`in`) the backplane.
pub fn backplane_messages(direction: &'static str, n: u64) {
    metrics::counter!(BACKPLANE_MESSAGES_TOTAL, "direction" => direction).increment(n);
}

/// An `accept` on `listener` failed; returns the kind it was counted as.
pub fn accept_error(listener: &'static str, e: &std::io::Error) -> &'static str {
    // EMFILE (the process's limit) or ENFILE (the system's).
    let kind = match e.raw_os_error() {
        Some(24 | 23) => ACCEPT_ERROR_KINDS[0],
        _ => ACCEPT_ERROR_KINDS[1],
    };
    metrics::counter!(ACCEPT_ERRORS_TOTAL, "listener" => listener, "kind" => kind).increment(1);
    kind
}

/// A connection to the admin or metrics port over its cap was closed.
pub fn connection_refused(listener: &'static str) {
    metrics::counter!(LISTENER_REFUSED_TOTAL, "listener" => listener).increment(1);
}

/// An admin handler panicked (a bug) and was answered INTERNAL.
pub fn admin_panic() {
    metrics::counter!(ADMIN_PANICS_TOTAL).increment(1);
}

/// Creates an admin method's series at zero (calls with OK, the latency
/// histogram), so panels and rates see its first call rather than a series
/// appearing with it.
pub fn admin_method_series(method: &'static str) {
    metrics::counter!(ADMIN_REQUESTS_TOTAL, "method" => method, "code" => "OK").absolute(0);
    let _ = metrics::histogram!(ADMIN_REQUEST_DURATION_SECONDS, "method" => method);
}

/// One finished admin RPC.
pub fn admin_request(method: &str, code: &'static str, elapsed: Duration) {
    let method = method.to_string();
    metrics::counter!(ADMIN_REQUESTS_TOTAL, "method" => method.clone(), "code" => code).increment(1);
    metrics::histogram!(ADMIN_REQUEST_DURATION_SECONDS, "method" => method).record(elapsed.as_secs_f64());
}

fn describe() {
    describe_gauge!(CLIENTS, "Connected WebSocket clients.");
    describe_gauge!(TOPICS, "Topics with at least one subscriber.");
    describe_counter!(CONNECTIONS_TOTAL, "WebSocket upgrades accepted.");
    describe_counter!(
        ACCEPT_ERRORS_TOTAL,
        "Failed accepts on a listener, by kind (too_many_files: out of file descriptors); each is waited out."
    );
    describe_counter!(
        LISTENER_REFUSED_TOTAL,
        "Connections to the admin or metrics port closed at once: the port held its cap."
    );
    for listener in LISTENERS {
        for kind in ACCEPT_ERROR_KINDS {
            metrics::counter!(ACCEPT_ERRORS_TOTAL, "listener" => listener, "kind" => kind).absolute(0);
        }
    }
    for listener in &LISTENERS[1..] {
        metrics::counter!(LISTENER_REFUSED_TOTAL, "listener" => *listener).absolute(0);
    }
    describe_counter!(
        HANDSHAKE_FAILURES_TOTAL,
        "HTTP requests on the WebSocket port that were not upgraded, by reason."
    );
    describe_counter!(DISCONNECTS_TOTAL, "Connections ended, by reason.");
    describe_gauge!(HUB_QUEUE_DEPTH, "Commands waiting in the hub's channel.");
    describe_gauge!(HUB_QUEUE_CAPACITY, "Capacity of the hub's command channel.");
    describe_gauge!(
        CLIENT_QUEUE_DEPTH_MAX,
        "Deepest client send queue (messages) since the previous sample, enqueues included."
    );
    describe_gauge!(
        CLIENT_QUEUE_BYTES_MAX,
        Unit::Bytes,
        "Largest client send queue in bytes since the previous sample, enqueues included."
    );
    describe_gauge!(
        CLIENT_QUEUE_BYTES_CAPACITY,
        Unit::Bytes,
        "Bytes a client's send queue holds (--send-queue-bytes); a client past it is evicted."
    );
    describe_gauge!(
        CLIENT_QUEUE_FILL_MAX,
        "Fullest client send queue since the previous sample, as a fraction of its message or byte limit, whichever is nearer; 1 when a client was evicted as a slow consumer (its queue overflowed or a write timed out)."
    );
    describe_gauge!(
        CLIENT_QUEUE_BYTES,
        Unit::Bytes,
        "Bytes queued for all clients at the last sample."
    );
    describe_gauge!(
        CLIENT_QUEUE_CAPACITY,
        "Messages a client's send queue holds; a client past it is evicted."
    );
    describe_counter!(MESSAGES_RECEIVED_TOTAL, "Text frames received from clients.");
    describe_counter!(MESSAGES_SENT_TOTAL, "Frames written to client sockets (deliveries).");
    describe_counter!(
        BYTES_RECEIVED_TOTAL,
        Unit::Bytes,
        "Payload bytes received from clients."
    );
    describe_counter!(
        BYTES_SENT_TOTAL,
        Unit::Bytes,
        "Payload bytes written to client sockets."
    );
    describe_counter!(BROADCASTS_TOTAL, "Publishes fanned out by the hub, by source.");
    describe_counter!(
        DROPPED_MESSAGES_TOTAL,
        "Messages not delivered to a client they were addressed to, by reason."
    );
    describe_counter!(
        CLIENT_ERRORS_TOTAL,
        "Error frames answered to clients, by protocol error code."
    );
    describe_counter!(
        ADMIN_REQUESTS_TOTAL,
        "Admin gRPC calls, by method and gRPC status code."
    );
    describe_histogram!(
        ADMIN_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Admin gRPC call latency to the response headers, by method."
    );
    describe_counter!(
        ADMIN_EVENTS_LAGGED_TOTAL,
        "Events WatchEvents subscribers missed because they did not keep up."
    );
    describe_counter!(
        ADMIN_PANICS_TOTAL,
        "Admin calls whose handler panicked (a bug), answered INTERNAL."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which wshub runs.");
    describe_gauge!(
        MAX_CONNECTIONS,
        "Clients the node accepts at once (--max-connections); upgrades past it answer 503."
    );
    describe_counter!(
        RELOADS_TOTAL,
        "Reloads on SIGHUP of the wss:// certificate (what=tls) and the client-token key (what=jwt_key), by result."
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Every series with a fixed label set exists from the start, at zero, so
    // rates and alerts see the first event rather than a series appearing.
    for reason in crate::close::HandshakeFailure::ALL {
        metrics::counter!(HANDSHAKE_FAILURES_TOTAL, "reason" => reason.as_str()).absolute(0);
    }
    for code in crate::protocol::ErrorCode::ALL {
        metrics::counter!(CLIENT_ERRORS_TOTAL, "code" => code.as_str()).absolute(0);
    }
    metrics::counter!(ADMIN_EVENTS_LAGGED_TOTAL).absolute(0);
    metrics::counter!(ADMIN_PANICS_TOTAL).absolute(0);
    for what in RELOADED {
        for result in ["ok", "error"] {
            metrics::counter!(RELOADS_TOTAL, "what" => what, "result" => result).absolute(0);
        }
    }
}

/// Everything `/metrics` serves: the exporter's metrics and the fixed histograms.
pub fn render() -> String {
    // The `metrics` crate's counters hold integers, so the process collector
    // records CPU seconds as a gauge to keep their fractions (7.65, not 7);
    // the series is a counter all the same, and is typed as one here.
    let mut text = install().render().replacen(
        "# TYPE process_cpu_seconds_total gauge",
        "# TYPE process_cpu_seconds_total counter",
        1,
    );
    let handles = handles();
    handles.broadcast_recipients.render(&mut text);
    handles.client_queue_depth.render(&mut text);
    text
}

/// Sets an unlabelled gauge (for values set once or rarely).
pub fn gauge_set(name: &'static str, value: f64) {
    metrics::gauge!(name).set(value);
}

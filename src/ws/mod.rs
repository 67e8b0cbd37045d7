//! The data plane: the WebSocket listener, and per connection a reader task
//! (socket → hub) and a writer task (client queue → socket).
//!
//! Data flows one way: socket → `reader` → hub → client queue →
//! `writer` → socket. Neither task touches the registry.

mod connection;
mod demo;
pub mod gate;
mod handshake;
pub mod policy;
mod reader;
pub mod tls;
mod wire;
mod writer;

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use handshake::{status_for, WS_PATH};

use crate::config::{ClientLimits, Config};
use crate::hub::HubHandle;
use crate::lifecycle::Lifecycle;

/// A connection's WebSocket, over its socket (see [`wire`]): the reader
/// and the writer each hold one half.
type Ws = tokio_tungstenite::WebSocketStream<wire::Wire>;

/// Why a connection's task stops early; each is a cause the connection
/// records in its [`crate::close::Closing`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the hub has stopped")]
    HubGone,
    #[error("the connection is closing")]
    Closing,
    #[error("the client's queue cannot take its own reply")]
    SlowConsumer,
    #[error(transparent)]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

/// tungstenite's read buffer per connection, also the most one read takes.
/// tungstenite zero-fills it on the first read, so all of it is resident
/// for every connection: its default (128 KiB) would dominate memory per
/// idle connection. Client requests are small; a larger frame still
/// arrives, in several reads.
const READ_BUFFER: usize = 512;
/// Bytes tungstenite gathers before writing to the socket; `flush` writes
/// whatever is gathered. Its buffer keeps its largest size for the life of
/// the connection, so this is also what a burst leaves behind per client:
/// 1 KiB keeps memory after a burst under 2x the idle figure while a burst
/// of small frames is still a few writes (docs/performance.md).
const WRITE_BUFFER: usize = 1024;

/// What every connection needs; shared by all of them.
pub struct Context {
    pub hub: HubHandle,
    /// This node, named in every welcome.
    pub node: crate::types::NodeId,
    pub limits: ClientLimits,
    pub ping_interval: Duration,
    /// From the moment a connection starts closing, how long it may take
    /// to flush its queue and close frame before the socket is dropped.
    pub close_timeout: Duration,
    pub lifecycle: Lifecycle,
    /// Connection tasks, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Parent of every client's token: cancelled when the shutdown grace runs out.
    pub force: CancellationToken,
    /// The longest a client may take for its TLS and HTTP handshakes.
    pub handshake_timeout: Duration,
    /// Origin, connection limits and client tokens.
    pub gate: Arc<gate::Gate>,
    /// `Some` for wss://.
    pub tls: Option<tls::Tls>,
    /// Per-client request rate (`--client-rate`, `--client-burst`); `None`: unlimited.
    pub rate: Option<governor::Quota>,
    /// Whether a client is closed when its token expires.
    pub close_on_expiry: bool,
    /// Whether `/` serves the demo page (`--demo`).
    pub demo: bool,
    /// Connections past their handshake and not yet ended (for shutdown's count).
    pub live: AtomicUsize,
    next_id: AtomicU64,
    ws_config: WebSocketConfig,
}

impl Context {
    pub fn new(
        hub: HubHandle,
        node: crate::types::NodeId,
        config: &Config,
        security: Security,
        lifecycle: Lifecycle,
        tracker: TaskTracker,
        force: CancellationToken,
    ) -> Self {
        let limits = config.client.clone();
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(WRITE_BUFFER + limits.max_message_bytes * 2 + 4096)
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_message_bytes));
        let rate = std::num::NonZeroU32::new(limits.client_rate).map(|rate| {
            let burst = limits.client_burst.and_then(std::num::NonZeroU32::new).unwrap_or(rate);
            policy::Rate::quota(rate, burst)
        });
        Self {
            hub,
            node,
            close_on_expiry: config.auth.jwt_close_on_expiry,
            demo: config.demo,
            rate,
            gate: Arc::new(security.gate),
            tls: security.tls,
            limits,
            ping_interval: config.ping_interval,
            close_timeout: config.close_timeout,
            lifecycle,
            tracker,
            force,
            handshake_timeout: config.gate.handshake_timeout,
            live: AtomicUsize::new(0),
            next_id: AtomicU64::new(first_client_number(config.cluster.node_id.is_some())),
            ws_config,
        }
    }
}

/// The number of this process's first client id. A generated node id is
/// new per process, so `c-1@<node>` never names a client of another
/// process; with a fixed `--node-id` it would after a restart, so numbers
/// then start from the process's start time (in ms, times 16 384: a later
/// process starts past every id an earlier one could have given out), and
/// an id saved before a restart never names someone else after it.
fn first_client_number(fixed_node_id: bool) -> u64 {
    if !fixed_node_id {
        return 1;
    }
    crate::types::unix_ms().saturating_mul(1 << 14).max(1)
}

/// The data plane's security material, read from the configuration: a bad
/// key, certificate or origin pattern is found here, before anything is served.
#[derive(Debug)]
pub struct Security {
    pub gate: gate::Gate,
    pub tls: Option<tls::Tls>,
}

impl Security {
    pub fn load(config: &Config) -> Result<Security, crate::error::Error> {
        let verifier = crate::auth::identity::Verifier::from_config(&config.auth)?;
        let gate = gate::Gate::new(&config.gate, verifier)?;
        let tls = match (&config.gate.tls_cert, &config.gate.tls_key) {
            (Some(cert), Some(key)) => Some(tls::Tls::load(cert, key)?),
            _ => None,
        };
        Ok(Security { gate, tls })
    }
}

/// Accepts connections until `stop` is cancelled; each runs in a tracked task.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = stop.cancelled() => break,
            // A failed accept (out of files) is counted and backed off there.
            accepted = crate::listen::accept(&listener, "ws") => accepted,
        };
        ctx.tracker.spawn(connection::handle(ctx.clone(), stream, addr));
    }
    tracing::debug!("websocket listener stopped");
}

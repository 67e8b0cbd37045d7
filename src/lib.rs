//! wshub: a WebSocket hub managed over gRPC.
//!
//! The parts, in the order data flows through them:
//!
//! - [`ws`] — the data plane. Accepts WebSocket clients; per connection a
//!   reader task turns frames into hub commands and a writer task drains the
//!   client's bounded send queue into the socket.
//! - [`hub`] — one actor that owns the registry (clients, topic members) and
//!   fans messages out into client queues without ever waiting on a client.
//! - [`admin`] — the control plane: a tonic gRPC service whose every call is
//!   a command into the hub, plus health and reflection.
//! - [`metrics`] — Prometheus metrics and the `/metrics`, `/healthz`,
//!   `/readyz` endpoints.
//! - [`protocol`] — the client protocol's JSON frames; [`close`] — close
//!   codes and disconnect reasons; [`lifecycle`] — readiness; [`config`].
//!
//! [`run`] wires them together on listeners bound by the caller and returns
//! after a graceful shutdown.
#![forbid(unsafe_code)]

pub mod admin;
pub mod close;
pub mod config;
pub mod hub;
pub mod lifecycle;
pub mod metrics;
pub mod protocol;
pub mod shutdown;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// How long shutdown waits, after the grace period, for forced connections to end.
const FORCE_WAIT: Duration = Duration::from_secs(5);

/// The server's listeners, bound before [`run`] so callers (and tests, on
/// port 0) know every address up front.
pub struct Listeners {
    pub ws: TcpListener,
    pub admin: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        Ok(Listeners {
            ws: TcpListener::bind(config.ws_addr).await?,
            admin: TcpListener::bind(config.admin_addr).await?,
            metrics: TcpListener::bind(config.metrics_addr).await?,
        })
    }
}

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("admin TLS: {0}")]
    AdminTls(String),
}

/// Runs the server until `shutdown` completes, then shuts down gracefully:
/// stop accepting → not ready → every client closed with 1001 after its
/// queue is flushed → wait up to the grace period → drop the rest.
pub async fn run(listeners: Listeners, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    metrics::install();
    metrics::gauge_set(metrics::CLIENT_QUEUE_CAPACITY, config.client.send_queue_len as f64);
    let lifecycle = lifecycle::Lifecycle::default();
    let (hub, hub_handle) = hub::Hub::new(
        hub::HubConfig {
            max_topics_per_client: config.client.max_topics_per_client,
        },
        config.hub_queue_len,
    );
    let hub_task = tokio::spawn(hub.run());

    let stop = CancellationToken::new();
    let force = CancellationToken::new();
    let tracker = TaskTracker::new();

    let admin = admin::Server::new(&config, hub_handle.clone(), lifecycle.clone(), stop.clone())?;
    let admin_task = tokio::spawn(admin.serve(listeners.admin));
    // Monitoring outlives the rest, so /readyz answers 503 through the shutdown.
    let metrics_stop = CancellationToken::new();
    let metrics_task = tokio::spawn(metrics::http::serve(
        listeners.metrics,
        lifecycle.clone(),
        metrics_stop.clone(),
    ));
    let ctx = Arc::new(ws::Context::new(
        hub_handle.clone(),
        config.client.clone(),
        config.ping_interval,
        config.idle_timeout,
        lifecycle.clone(),
        tracker.clone(),
        force.clone(),
    ));
    let ws_task = tokio::spawn(ws::serve(listeners.ws, ctx, stop.clone()));
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "wshub running");

    shutdown.await;
    lifecycle.set_not_ready();
    stop.cancel();
    let _ = ws_task.await;
    let _ = hub_handle.shutdown().await;
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown grace ran out; dropping the remaining clients"
        );
        force.cancel();
        let _ = tokio::time::timeout(FORCE_WAIT, tracker.wait()).await;
    }
    let _ = admin_task.await;
    metrics_stop.cancel();
    let _ = metrics_task.await;
    drop(hub_handle);
    let _ = tokio::time::timeout(FORCE_WAIT, hub_task).await;
    tracing::info!("wshub stopped");
    Ok(())
}

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
//! - [`backplane`] — past one machine: other nodes, over Redis. The hub
//!   hands it clients' publishes and its topic interest; it brings other
//!   nodes' publishes into the hub, and runs admin calls on every node.
//! - [`metrics`] — Prometheus metrics and the `/metrics`, `/healthz`,
//!   `/readyz` endpoints.
//! - [`protocol`] — the client protocol's JSON frames; [`close`] — close
//!   codes and disconnect reasons; [`types`] — the ids and names every
//!   layer shares; [`lifecycle`] — readiness; [`config`].
//!
//! [`run`] wires them together on listeners bound by the caller and returns
//! after a graceful shutdown.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backplane;
pub mod close;
pub mod config;
pub mod error;
pub mod hub;
pub mod lifecycle;
pub mod listen;
pub mod metrics;
pub mod protocol;
pub mod shutdown;
pub mod types;
pub mod ws;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::identity;
pub use config::Config;
pub use error::Error;

/// After the grace period, how long shutdown waits for forced connections
/// and the admin and metrics servers before it drops them: shutdown takes
/// at most `--shutdown-grace` plus this.
pub const FORCE_WAIT: Duration = Duration::from_secs(1);

/// The server's listeners, bound before [`run`] so callers (and tests, on
/// port 0) know every address up front.
pub struct Listeners {
    pub ws: TcpListener,
    pub admin: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the three listeners; a failure names the listener and its
    /// address ("cannot bind the admin port 127.0.0.1:50051: address in use").
    pub async fn bind(config: &Config) -> Result<Listeners, Error> {
        let named = |listener: &'static str, addr| {
            move |e: std::io::Error| Error::Bind {
                listener,
                addr,
                reason: match e.kind() {
                    std::io::ErrorKind::AddrInUse => "address in use (another process listens there)".into(),
                    std::io::ErrorKind::AddrNotAvailable => "no such address on this machine".into(),
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied (a port below 1024 needs privileges)".into()
                    }
                    _ => e.to_string(),
                },
            }
        };
        Ok(Listeners {
            ws: listen(config.ws_addr, config.listen_backlog).map_err(named("WebSocket port", config.ws_addr))?,
            admin: TcpListener::bind(config.admin_addr)
                .await
                .map_err(named("admin port", config.admin_addr))?,
            metrics: TcpListener::bind(config.metrics_addr)
                .await
                .map_err(named("metrics port", config.metrics_addr))?,
        })
    }
}

/// Binds with an explicit backlog: a reconnect storm queues in the kernel
/// instead of waiting out SYN retransmits.
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Joins the cluster when there is a backplane (the engine connects in the
/// background); otherwise a cluster of one.
fn join_cluster(
    config: &Config,
    node: &types::NodeId,
    hub: &mut hub::Hub,
    hub_handle: &hub::HubHandle,
    lifecycle: &lifecycle::Lifecycle,
    stop: &CancellationToken,
    supervisor: &shutdown::Supervisor,
) -> Result<Arc<backplane::Cluster>, Error> {
    let cluster = &config.cluster;
    let Some(url) = &cluster.backplane else {
        return Ok(backplane::Cluster::alone(
            node.clone(),
            hub_handle.clone(),
            lifecycle.clone(),
        ));
    };
    if !types::join_cluster(node) {
        return Err(Error::AlreadyClustered);
    }
    // rediss:// uses rustls with the process's default provider: ring, as
    // for the other listeners (an embedding program's choice stands).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    if cluster.backplane_required {
        lifecycle.require_backplane();
    }
    let limits = (config.history.history_size > 0).then_some(backplane::StreamLimits {
        size: config.history.history_size,
        ttl: config.history.history_ttl,
    });
    let config = backplane::cluster::ClusterConfig {
        node: node.clone(),
        presence_ttl: cluster.backplane_presence_ttl,
        heartbeat: cluster.backplane_heartbeat,
        // One deadline for a whole cluster-wide call, inside the admin
        // deadline, so a partial answer (not DEADLINE_EXCEEDED) comes back.
        deadline: config.admin_deadline * 3 / 4,
        supervisor: supervisor.clone(),
        history: (config.history.history_size > 0).then(|| config.history.history_topics.clone()),
        presence: !config.history.presence_topics.is_empty(),
    };
    let queue_len = cluster.backplane_queue_len;

    let engine_stop = stop.clone();
    let joined = backplane::Cluster::join(
        |inbound| backplane::redis::Redis::start(url, queue_len, limits, inbound, engine_stop, supervisor),
        hub_handle.clone(),
        config,
        lifecycle.clone(),
        stop.clone(),
    )?;
    if let Some(relay) = joined.relay() {
        hub.set_relay(relay);
    }
    tracing::info!(%node, "backplane: joining the cluster over Redis (connecting in the background)");
    Ok(joined)
}

/// On each SIGHUP, reloads what comes from files and may be rotated: the
/// WebSocket port's TLS certificate and the client-token key (from
/// `--jwt-secret-file` or `--jwt-public-key`). With a configuration file
/// (`--config`), the configuration is read again first, so a file that now
/// names other certificate files or another token key takes effect (other
/// settings need a restart). New connections get the new ones; open
/// connections keep theirs. A file that does not load keeps the previous
/// material in use. Without any, SIGHUP is logged and ignored (rather than
/// ending the process, its default).
async fn reload_on_hangup(
    ctx: Arc<ws::Context>,
    config: Config,
    hangups: std::io::Result<tokio::signal::unix::Signal>,
) {
    let mut hangups = match hangups {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; certificates and keys will not be reloaded");
            return;
        }
    };
    let mut auth = config.auth.clone();
    let mut tls_files = config.gate.tls_cert.clone().zip(config.gate.tls_key.clone());
    while hangups.recv().await.is_some() {
        if config.config.is_some() {
            match config::load(config.args.clone()) {
                Ok((fresh, _)) => {
                    auth = fresh.auth;
                    tls_files = fresh.gate.tls_cert.zip(fresh.gate.tls_key);
                    tracing::info!("SIGHUP: configuration file read again (TLS and token-key settings apply; others need a restart)");
                }
                Err(e) => {
                    let e = match e {
                        config::LoadError::Args(e) => e.to_string(),
                        config::LoadError::File(e) => e,
                    };
                    tracing::error!(error = %e.trim(), "SIGHUP: the configuration could not be read again; nothing changes");
                    continue;
                }
            }
        }
        let key_file = auth.jwt_secret_file.is_some() || auth.jwt_public_key.is_some();
        let key_in_config = config.config.is_some() && auth.jwt_secret.is_some();
        if ctx.tls.is_none() && !key_file && !key_in_config {
            tracing::info!("SIGHUP: no certificate or key file to reload");
        }
        match (&ctx.tls, &tls_files) {
            (Some(tls), Some((cert, key))) => reloaded("tls", "TLS certificate", tls.reload_from(cert, key)),
            (Some(tls), None) => reloaded("tls", "TLS certificate", tls.reload()),
            (None, Some(_)) => tracing::warn!("SIGHUP: TLS cannot be turned on while running; restart to serve wss://"),
            (None, None) => {}
        }
        if key_file || key_in_config {
            reloaded("jwt_key", "client-token key", ctx.gate.reload_verifier(&auth));
        }
    }
}

fn reloaded<E: std::fmt::Display>(what: &'static str, name: &str, result: Result<(), E>) {
    metrics::reload(what, result.is_ok());
    match result {
        Ok(()) => tracing::info!("SIGHUP: {name} reloaded; new connections get it"),
        Err(e) => tracing::error!(error = %e, "SIGHUP: {name} reload failed; the previous one stays in use"),
    }
}

/// Checks everything that can be checked before binding: the configuration,
/// the TLS material of both ports, the client-token key. `main` calls it
/// first, so a bad flag or file exits at once, with nothing served; [`run`]
/// calls it again and keeps what it loaded for the data plane.
pub fn preflight(config: &Config) -> Result<ws::Security, Error> {
    config.validate()?;
    if let Some(url) = &config.cluster.backplane {
        backplane::redis::Redis::check(url)?;
    }
    admin::load_tls(config)?;
    ws::Security::load(config)
}

/// Runs the server until `shutdown` completes, then shuts down gracefully:
/// stop accepting → not ready → every client closed with 1001 after its
/// queue is flushed → wait up to the grace period → drop the rest. The
/// whole shutdown takes at most `shutdown_grace` + [`FORCE_WAIT`], whatever
/// clients and admin callers do.
///
/// The hub, admin, metrics and listener tasks are supervised: if one ends
/// while the node runs, the node shuts down and `run` returns
/// [`Error::TaskEnded`], so it never runs half alive while reporting ready.
pub async fn run(listeners: Listeners, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let security = preflight(&config)?;
    metrics::install();
    metrics::gauge_set(metrics::CLIENT_QUEUE_CAPACITY, config.client.send_queue_len as f64);
    metrics::gauge_set(
        metrics::CLIENT_QUEUE_BYTES_CAPACITY,
        config.client.send_queue_bytes as f64,
    );
    let lifecycle = lifecycle::Lifecycle::default();
    let node = config.cluster.node_id.clone().unwrap_or_else(types::NodeId::generate);
    metrics::node_info(node.as_str());
    let (mut hub, hub_handle) = hub::Hub::new(hub::HubConfig {
        max_topics_per_client: config.client.max_topics_per_client,
        max_topics: config.client.max_topics,
        queue_len: config.hub_queue_len,
        queue_bytes: config.hub_queue_bytes,
        deadline: config.admin_deadline,
        write_timeout: config.write_timeout,
        idle_timeout: config.idle_timeout,
        send_queue_len: config.client.send_queue_len,
        send_queue_bytes: config.client.send_queue_bytes,
        history: config.history.hub(),
        presence: config.history.presence(),
    });
    let stop = CancellationToken::new();
    let force = CancellationToken::new();
    let tracker = TaskTracker::new();
    // The backplane outlives the data plane's shutdown: clients still here
    // get messages from other nodes until they are closed.
    let backplane_stop = CancellationToken::new();
    if let (Some(url), Some(_)) = (&config.cluster.backplane, &config.cluster.node_id) {
        // A careless operator starts a second process with a live node's id:
        // the younger refuses to serve rather than answer for the other.
        if backplane::redis::Redis::node_is_live(url, &node, config.cluster.backplane_heartbeat).await? {
            return Err(Error::NodeIdLive(node));
        }
    }
    // Starts the parts' own long-running tasks and reports one that fails.
    let supervisor = shutdown::Supervisor::default();
    let cluster = join_cluster(
        &config,
        &node,
        &mut hub,
        &hub_handle,
        &lifecycle,
        &backplane_stop,
        &supervisor,
    )?;
    let ctx = Arc::new(ws::Context::new(
        hub_handle.clone(),
        node.clone(),
        &config,
        security,
        lifecycle.clone(),
        tracker.clone(),
        force.clone(),
    ));
    metrics::gauge_set(metrics::MAX_CONNECTIONS, ctx.gate.max_connections as f64);
    let mut hub_task = tokio::spawn(hub.run());
    // Installed here, before the node serves, so an early SIGHUP never
    // takes its default action (ending the process).
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let reload_task = tokio::spawn(reload_on_hangup(ctx.clone(), config.clone(), hangups));

    let admin = admin::Server::new(
        &config,
        hub_handle.clone(),
        cluster.clone(),
        lifecycle.clone(),
        stop.clone(),
        supervisor.clone(),
    )?;
    let mut admin_task = tokio::spawn(admin.serve(listeners.admin));
    // Monitoring outlives the rest, so /readyz answers 503 through the shutdown.
    let metrics_stop = CancellationToken::new();
    let mut metrics_task = tokio::spawn(metrics::http::serve(
        listeners.metrics,
        config.admin_idle_timeout,
        lifecycle.clone(),
        metrics_stop.clone(),
    ));
    let mut ws_task = tokio::spawn(ws::serve(listeners.ws, ctx.clone(), stop.clone()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %node,
        backplane = if cluster.clustered() { "redis" } else { "none" },
        "wshub running"
    );

    // Until asked to stop, or until a part that must run for good ends.
    let died = shutdown::until_stop_or_ended(
        shutdown,
        &mut [
            ("hub", &mut hub_task),
            ("admin", &mut admin_task),
            ("metrics", &mut metrics_task),
            ("websocket listener", &mut ws_task),
        ],
        &supervisor,
    )
    .await;
    if let Some((task, panic)) = &died {
        tracing::error!(task, panic = ?panic, "a server task ended unexpectedly; shutting down");
    }

    let grace_end = tokio::time::Instant::now() + config.shutdown_grace;
    let hard_end = grace_end + FORCE_WAIT;
    lifecycle.set_not_ready();
    stop.cancel();
    if !ws_task.is_finished() {
        let _ = tokio::time::timeout_at(grace_end, &mut ws_task).await;
    }
    if !hub_task.is_finished() {
        let _ = tokio::time::timeout_at(grace_end, hub_handle.shutdown()).await;
    }
    tracker.close();
    if tokio::time::timeout_at(grace_end, tracker.wait()).await.is_err() {
        tracing::warn!(
            clients = ctx.live.load(std::sync::atomic::Ordering::Relaxed),
            "shutdown grace ran out; dropping the remaining clients"
        );
        force.cancel();
        let _ = tokio::time::timeout_at(hard_end, tracker.wait()).await;
    }
    // Admin streams were told to end at the start; a caller that stopped
    // reading cannot hold the server past the hard end.
    if !admin_task.is_finished() && tokio::time::timeout_at(hard_end, &mut admin_task).await.is_err() {
        tracing::warn!("admin calls still open at the end of shutdown; dropping them");
        admin_task.abort();
    }
    metrics_stop.cancel();
    if !metrics_task.is_finished() && tokio::time::timeout_at(hard_end, &mut metrics_task).await.is_err() {
        metrics_task.abort();
    }
    reload_task.abort();
    // Other nodes stop expecting this one's answers at once, not after the
    // TTL (its presence refresh stops first, so it cannot come back).
    backplane_stop.cancel();
    if cluster.clustered() {
        let _ = tokio::time::timeout_at(hard_end, cluster.leave()).await;
    }
    drop(cluster);
    drop(ctx);
    drop(hub_handle);
    if !hub_task.is_finished() && tokio::time::timeout_at(hard_end, &mut hub_task).await.is_err() {
        hub_task.abort();
    }
    tracing::info!("wshub stopped");
    match died {
        Some((task, _)) => Err(Error::TaskEnded(task)),
        None => Ok(()),
    }
}

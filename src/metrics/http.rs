//! The monitoring listener: `/metrics` (Prometheus text), `/healthz`
//! (alive) and `/readyz` (taking clients).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;

#[derive(Clone)]
struct AppState {
    lifecycle: Lifecycle,
    process: std::sync::Arc<metrics_process::Collector>,
}

/// Serves until `stop` is cancelled.
/// A connection silent for `idle` is closed.
pub async fn serve(listener: TcpListener, idle: std::time::Duration, lifecycle: Lifecycle, stop: CancellationToken) {
    let handle = super::install();
    let process = metrics_process::Collector::default();
    process.describe();
    // Histograms need periodic upkeep to stay bounded between scrapes.
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => handle.run_upkeep(),
                _ = upkeep_stop.cancelled() => break,
            }
        }
    });
    let state = AppState {
        lifecycle,
        process: std::sync::Arc::new(process),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    // At most a few connections, each dropped when silent (TCP_NODELAY set).
    let listener = crate::listen::Capped::new(listener, "metrics", crate::listen::METRICS_MAX_CONNECTIONS, idle);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "metrics server failed");
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.process.collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        super::render(),
    )
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.lifecycle.not_ready_reason() {
        None if state.lifecycle.backplane_down() => (
            StatusCode::OK,
            "ready (the backplane is down: local delivery only)\n".to_string(),
        ),
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

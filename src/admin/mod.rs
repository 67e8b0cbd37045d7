//! The control plane: the `wshub.admin.v1.Admin` gRPC service, with gRPC
//! health and server reflection beside it. Every admin call becomes a
//! command into the hub; this module never touches the registry.

mod auth;
/// Request validation at the edge (public for the fuzz targets in `fuzz/`).
pub mod convert;
mod error;
mod layer;
mod service;
pub mod tls;

pub use tls::load as load_tls;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

pub use error::AdminError;
pub use service::AdminService;

use crate::config::Config;
use crate::hub::HubHandle;
use crate::lifecycle::Lifecycle;

/// Generated protobuf types and the gRPC client and server.
pub mod pb {
    tonic::include_proto!("wshub.admin.v1");
    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("admin_descriptor");
}

/// The name gRPC health reports the admin service under.
pub const SERVICE_NAME: &str = "wshub.admin.v1.Admin";

/// The admin gRPC server, configured and ready to serve.
pub struct Server {
    service: AdminService,
    /// A connection silent this long is closed (`--admin-idle-timeout`).
    idle: Duration,
    token: Option<String>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    lifecycle: Lifecycle,
    stop: CancellationToken,
}

impl Server {
    pub fn new(
        config: &Config,
        hub: HubHandle,
        cluster: std::sync::Arc<crate::backplane::Cluster>,
        lifecycle: Lifecycle,
        stop: CancellationToken,
        supervisor: crate::shutdown::Supervisor,
    ) -> Result<Self, crate::error::Error> {
        let tls = tls::load(config)?;
        layer::register_series();
        let service = AdminService::new(
            hub,
            cluster,
            config.client.max_message_bytes,
            lifecycle.clone(),
            stop.clone(),
            supervisor,
        );
        let token = config.admin_token().map_err(crate::error::Error::Config)?;
        Ok(Self {
            service,
            idle: config.admin_idle_timeout,
            token,
            tls,
            lifecycle,
            stop,
        })
    }

    /// Serves until the stop token is cancelled. Open streams (WatchEvents,
    /// Drain) end with it; a caller that stopped reading can still hold the
    /// connection, so [`crate::run`] bounds the wait. Returning before the
    /// stop token is cancelled is a failure: the caller supervises it.
    pub async fn serve(self, listener: TcpListener) {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status(SERVICE_NAME, ServingStatus::Serving).await;
        reporter.set_service_status("", ServingStatus::Serving).await;
        let mut ready = self.lifecycle.subscribe();
        tokio::spawn(async move {
            // Readiness turns off for good at a drain or shutdown, and back
            // and forth with a required backplane; the loop ends with the server.
            loop {
                let status = if *ready.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status(SERVICE_NAME, status).await;
                reporter.set_service_status("", status).await;
                if ready.changed().await.is_err() {
                    return;
                }
            }
        });
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let (Ok(reflection_v1), Ok(reflection_v1alpha)) = (reflection().build_v1(), reflection().build_v1alpha())
        else {
            tracing::error!("the embedded descriptor set is invalid; admin API not served");
            return;
        };
        let admin = pb::admin_server::AdminServer::with_interceptor(self.service, auth::check(self.token));
        let capped = crate::listen::Capped::new(listener, "admin", crate::listen::ADMIN_MAX_CONNECTIONS, self.idle);
        let incoming = tls::incoming(capped, self.tls, self.stop.clone());
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(layer::MetricsLayer)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(admin)
            // TCP_NODELAY: without it a small answer can wait for the
            // peer's delayed ACK (~40 ms), which showed as admin p99.
            // At most a few connections, each dropped when silent.
            .serve_with_incoming_shutdown(incoming, self.stop.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "admin server failed");
        }
    }
}

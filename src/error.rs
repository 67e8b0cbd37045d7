//! The errors that stop the server from starting or end it, and the text
//! of a caught panic. Every layer reports through these; none of them
//! needs the crate root.

/// The text of a caught panic's payload (`panic!("...")`), or "".
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Errors that stop the server from starting, or end it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// Another process runs as this node (`--node-id`) in the cluster.
    #[error("node id {0} is live in the cluster: another process runs as it; give every node its own --node-id")]
    NodeIdLive(crate::types::NodeId),
    /// This process already runs a node of a cluster (an embedding program).
    #[error("this process already runs as another node of a cluster")]
    AlreadyClustered,
    #[error("admin TLS: {0}")]
    AdminTls(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::Error),
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] crate::ws::tls::TlsError),
    #[error(transparent)]
    Backplane(#[from] crate::backplane::EngineError),
    #[error("the {0} task ended unexpectedly; the node stopped")]
    TaskEnded(&'static str),
    /// A listener's address could not be bound.
    #[error("cannot bind the {listener} {addr}: {reason}")]
    Bind {
        listener: &'static str,
        addr: std::net::SocketAddr,
        reason: String,
    },
}

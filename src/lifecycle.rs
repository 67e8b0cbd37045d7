//! Readiness: whether this node takes new clients. Drain and shutdown turn
//! it off; the WebSocket handshake, `/readyz` and gRPC health all read it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Lifecycle {
    ready: Arc<watch::Sender<bool>>,
    draining: Arc<AtomicBool>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            ready: Arc::new(watch::Sender::new(true)),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Lifecycle {
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Stops taking new clients; there is no way back short of a restart.
    pub fn set_not_ready(&self) {
        self.ready.send_replace(false);
    }

    /// Watches readiness (for gRPC health).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Marks a drain as started; false if one already was.
    pub fn begin_drain(&self) -> bool {
        !self.draining.swap(true, Ordering::SeqCst)
    }
}

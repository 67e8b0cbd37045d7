//! Readiness: whether this node takes new clients, and whether load
//! balancers should send it any. Drain and shutdown stop both; with
//! `--backplane-required`, a backplane that is down turns readiness off
//! (clients already here, and new ones, are still served: a load balancer
//! decides). The WebSocket handshake reads [`Lifecycle::accepting`];
//! `/readyz` and gRPC health read [`Lifecycle::is_ready`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Readiness as last computed, for watchers (gRPC health).
    ready: watch::Sender<bool>,
    /// False once a drain or shutdown starts: there is no way back.
    accepting: AtomicBool,
    draining: AtomicBool,
    /// Whether readiness waits for the backplane, and whether it is up.
    backplane_required: AtomicBool,
    backplane_up: AtomicBool,
    /// Why this process refuses to serve for good, if it does.
    refused: std::sync::OnceLock<&'static str>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                ready: watch::Sender::new(true),
                accepting: AtomicBool::new(true),
                draining: AtomicBool::new(false),
                backplane_required: AtomicBool::new(false),
                backplane_up: AtomicBool::new(true),
                refused: std::sync::OnceLock::new(),
            }),
        }
    }
}

impl Lifecycle {
    /// Whether load balancers should send this node clients.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Whether the node takes new clients (not draining, not shutting down).
    pub fn accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::SeqCst)
    }

    /// Why the node is not ready, for `/readyz`; `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if let Some(reason) = self.inner.refused.get() {
            Some(reason)
        } else if !self.accepting() {
            Some("draining or shutting down")
        } else if !self.is_ready() {
            Some("the backplane is down (--backplane-required)")
        } else {
            None
        }
    }

    /// Whether the backplane is down (false on a node without one).
    pub fn backplane_down(&self) -> bool {
        !self.inner.backplane_up.load(Ordering::SeqCst)
    }

    /// Stops taking new clients; there is no way back short of a restart.
    pub fn set_not_ready(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        self.update();
    }

    /// Refuses to serve for good, saying why: not ready, no new clients.
    pub fn refuse(&self, reason: &'static str) {
        let _ = self.inner.refused.set(reason);
        self.set_not_ready();
    }

    /// Makes readiness wait for the backplane.
    pub fn require_backplane(&self) {
        self.inner.backplane_required.store(true, Ordering::SeqCst);
        self.update();
    }

    /// The backplane went up or down.
    pub fn set_backplane(&self, up: bool) {
        self.inner.backplane_up.store(up, Ordering::SeqCst);
        self.update();
    }

    fn update(&self) {
        let inner = &self.inner;
        let ready = inner.accepting.load(Ordering::SeqCst)
            && (!inner.backplane_required.load(Ordering::SeqCst) || inner.backplane_up.load(Ordering::SeqCst));
        inner.ready.send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// Watches readiness (for gRPC health).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    /// Marks a drain as started: `None` while another runs. The drain
    /// runs while the returned guard lives; a finished drain leaves the node
    /// not ready, and another may start (to close what the first left).
    pub fn begin_drain(&self) -> Option<Draining> {
        (!self.inner.draining.swap(true, Ordering::SeqCst)).then(|| Draining(self.inner.clone()))
    }
}

/// A running drain; dropping it ends it.
#[derive(Debug)]
pub struct Draining(Arc<Inner>);

impl Drop for Draining {
    fn drop(&mut self) {
        self.0.draining.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_a_required_backplane_only() {
        let lifecycle = Lifecycle::default();
        lifecycle.set_backplane(false);
        assert!(lifecycle.is_ready(), "not required: ready with the backplane down");
        lifecycle.require_backplane();
        assert!(!lifecycle.is_ready() && lifecycle.accepting());
        assert_eq!(
            lifecycle.not_ready_reason(),
            Some("the backplane is down (--backplane-required)")
        );
        lifecycle.set_backplane(true);
        assert!(lifecycle.is_ready());
        lifecycle.set_not_ready();
        lifecycle.set_backplane(true);
        assert!(!lifecycle.is_ready() && !lifecycle.accepting());
        assert_eq!(lifecycle.not_ready_reason(), Some("draining or shutting down"));
    }

    #[test]
    fn one_drain_at_a_time_and_another_after_it() {
        let lifecycle = Lifecycle::default();
        let first = lifecycle.begin_drain().expect("the first drain starts");
        assert!(lifecycle.begin_drain().is_none(), "a second while the first runs");
        drop(first);
        assert!(lifecycle.begin_drain().is_some(), "another after the first ended");
    }
}

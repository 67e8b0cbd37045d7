//! Process signals that start a graceful shutdown, and the supervision
//! that starts one when a part of the server ends on its own.

use std::future::Future;

use tokio::task::{JoinError, JoinHandle};

/// A supervised task that ended while the server ran: its name, and its
/// panic if it panicked.
pub type Ended = (&'static str, Option<JoinError>);

/// Waits for `shutdown`, or for any of `tasks` to end first — which they
/// must not while the server runs. `None` for a requested shutdown.
pub async fn until_stop_or_ended(
    shutdown: impl Future<Output = ()>,
    tasks: &mut [(&'static str, &mut JoinHandle<()>)],
) -> Option<Ended> {
    let names: Vec<&'static str> = tasks.iter().map(|(name, _)| *name).collect();
    let ended = futures_util::future::select_all(tasks.iter_mut().map(|(_, task)| &mut **task));
    tokio::select! {
        _ = shutdown => None,
        (result, index, _) = ended => Some((names[index], result.err())),
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_early_is_named_with_its_panic() {
        let mut running = tokio::spawn(std::future::pending::<()>());
        let mut failing = tokio::spawn(async { panic!("broken") });
        let mut tasks = [("running", &mut running), ("failing", &mut failing)];
        let ended = until_stop_or_ended(std::future::pending(), &mut tasks).await;
        let (name, panic) = ended.expect("a task ended");
        assert_eq!(name, "failing");
        assert!(panic.is_some_and(|e| e.is_panic()));
        running.abort();
    }

    #[tokio::test]
    async fn a_requested_stop_names_no_task() {
        let mut running = tokio::spawn(std::future::pending::<()>());
        let mut tasks = [("running", &mut running)];
        assert!(until_stop_or_ended(async {}, &mut tasks).await.is_none());
        running.abort();
    }
}

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

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: call it before the node
/// listens, so a signal that arrives early is a graceful shutdown rather
/// than the default action (the process killed on the spot).
#[cfg(unix)]
pub fn signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{signal, SignalKind};
    let wait = |kind: SignalKind, name: &'static str| {
        let installed = signal(kind);
        async move {
            match installed {
                Ok(mut stream) => {
                    stream.recv().await;
                    tracing::info!("{name}: shutting down");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let (interrupt, terminate) = (
        wait(SignalKind::interrupt(), "SIGINT"),
        wait(SignalKind::terminate(), "SIGTERM"),
    );
    async move {
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub fn signal() -> impl Future<Output = ()> + Send {
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C: shutting down");
        } else {
            std::future::pending::<()>().await;
        }
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

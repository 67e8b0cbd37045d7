//! Process signals that start a graceful shutdown, and the supervision
//! that starts one when a part of the server ends on its own.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A supervised task that ended while the server ran: its name, and its
/// panic's message if it panicked.
pub type Ended = (&'static str, Option<String>);

/// Waits for `shutdown`, or for any of `tasks` (or a task started through
/// `supervisor`) to end first — which they must not while the server runs.
/// `None` for a requested shutdown.
pub async fn until_stop_or_ended(
    shutdown: impl Future<Output = ()>,
    tasks: &mut [(&'static str, &mut JoinHandle<()>)],
    supervisor: &Supervisor,
) -> Option<Ended> {
    let names: Vec<&'static str> = tasks.iter().map(|(name, _)| *name).collect();
    let ended = futures_util::future::select_all(tasks.iter_mut().map(|(_, task)| &mut **task));
    let mut reported = supervisor.ended.subscribe();
    tokio::select! {
        _ = shutdown => None,
        (result, index, _) = ended => Some((names[index], result.err().map(|e| e.to_string()))),
        Ok(ended) = reported.wait_for(Option::is_some) => ended.clone(),
    }
}

/// Starts the long-running tasks the parts of the server need (the
/// backplane's, a drain) and reports one that fails to [`crate::run`],
/// which then shuts the node down as it does when one of its own tasks
/// ends: a node never runs half alive while reporting ready.
#[derive(Debug, Clone)]
pub struct Supervisor {
    ended: Arc<watch::Sender<Option<Ended>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            ended: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl Supervisor {
    /// A task that must run until `stop` is cancelled: ending before that,
    /// or panicking, is a failure.
    pub fn spawn(
        &self,
        name: &'static str,
        stop: &CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        self.start(name, Some(stop.clone()), task)
    }

    /// A task that ends by itself (a drain): only a panic is a failure.
    pub fn spawn_finite(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        self.start(name, None, task)
    }

    fn start(
        &self,
        name: &'static str,
        stop: Option<CancellationToken>,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        use futures_util::FutureExt;
        let ended = self.ended.clone();
        tokio::spawn(async move {
            let result = std::panic::AssertUnwindSafe(task).catch_unwind().await;
            let failure = match (result, &stop) {
                (Err(panic), _) => Some(crate::error::panic_message(&*panic)),
                (Ok(()), Some(stop)) if !stop.is_cancelled() => None,
                (Ok(()), _) => return,
            };
            tracing::error!(task = name, panic = ?failure, "a supervised task ended unexpectedly");
            ended.send_if_modified(|first| first.is_none() && first.replace((name, failure)).is_none());
        })
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
        let ended = until_stop_or_ended(std::future::pending(), &mut tasks, &Supervisor::default()).await;
        let (name, panic) = ended.expect("a task ended");
        assert_eq!(name, "failing");
        assert!(panic.is_some_and(|e| e.contains("panic")));
        running.abort();
    }

    /// A supervised task that panics, or ends before it is told to stop, is
    /// reported; one that ends when told to stop, or a finite one that
    /// completes, is not.
    #[tokio::test]
    async fn supervised_tasks_report_their_failures() {
        let stop = CancellationToken::new();
        let run = |supervisor: Supervisor| async move {
            let mut own = tokio::spawn(std::future::pending::<()>());
            let ended = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                until_stop_or_ended(std::future::pending(), &mut [("own", &mut own)], &supervisor),
            )
            .await;
            own.abort();
            ended.ok().flatten()
        };
        let supervisor = Supervisor::default();
        supervisor.spawn_finite("drain", async {}).await.unwrap();
        let told = CancellationToken::new();
        told.cancel();
        supervisor.spawn("told to stop", &told, async {}).await.unwrap();
        supervisor
            .spawn("router", &stop, async { panic!("a bug") })
            .await
            .unwrap();
        let (name, panic) = run(supervisor).await.expect("reported");
        assert_eq!((name, panic.as_deref()), ("router", Some("a bug")));

        let supervisor = Supervisor::default();
        supervisor.spawn("canary", &stop, async {}).await.unwrap();
        assert_eq!(run(supervisor).await, Some(("canary", None)));
    }

    #[tokio::test]
    async fn a_requested_stop_names_no_task() {
        let mut running = tokio::spawn(std::future::pending::<()>());
        let mut tasks = [("running", &mut running)];
        assert!(until_stop_or_ended(async {}, &mut tasks, &Supervisor::default())
            .await
            .is_none());
        running.abort();
    }
}

//! The cheap, cloneable way to reach the hub. Each method is one command
//! into one of the hub's two bounded channels:
//!
//! - the data channel carries clients' requests. It is bounded in commands
//!   and, for publishes, in bytes: a reader that finds it full waits, and
//!   while it waits it does not read its socket, so TCP pushes back on a
//!   client that publishes faster than the hub fans out.
//! - the control channel carries admin calls. It is small and the hub reads
//!   it first, so an operator reaches the hub however hard clients flood it;
//!   every call on it has a deadline covering both the send and the answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::*;
use crate::protocol::Frame;
use crate::types::Source;

#[derive(Debug, Clone)]
pub struct HubHandle {
    data: mpsc::Sender<Command>,
    /// Bytes of publishes the data channel may still take.
    budget: Arc<Semaphore>,
    budget_total: usize,
    control: mpsc::Sender<Command>,
    /// How long a control call may wait for the hub, in all.
    deadline: Duration,
}

impl HubHandle {
    pub(super) fn new(
        data: mpsc::Sender<Command>,
        budget_total: usize,
        control: mpsc::Sender<Command>,
        deadline: Duration,
    ) -> Self {
        Self {
            data,
            budget: Arc::new(Semaphore::new(budget_total.min(Semaphore::MAX_PERMITS))),
            budget_total: budget_total.min(Semaphore::MAX_PERMITS),
            control,
            deadline,
        }
    }

    /// What a command costs of the byte budget: a publish its frame (from a
    /// client or another node, whatever the source, unless it holds its
    /// share already), anything else nothing.
    fn cost(&self, command: &Command) -> u32 {
        match command {
            Command::Publish(p) if p.budget.is_none() && p.source != Source::Admin => self.share(p.frame.len()),
            _ => 0,
        }
    }

    fn share(&self, bytes: usize) -> u32 {
        bytes.min(self.budget_total).try_into().unwrap_or(u32::MAX)
    }

    /// Takes `bytes` of the data channel's byte budget now, if it has them:
    /// for what other nodes publish, which must be dropped (and counted)
    /// rather than wait in a queue of its own when the hub is behind.
    pub fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.budget.clone().try_acquire_many_owned(self.share(bytes)).ok()
    }

    /// Sends a client's command, waiting while the data channel is full
    /// (in commands or bytes). `ShuttingDown` if the hub is gone.
    pub async fn send(&self, mut command: Command) -> Result<(), HubError> {
        let cost = self.cost(&command);
        if let (Command::Publish(p), true) = (&mut command, cost > 0) {
            let permit = self.budget.clone().acquire_many_owned(cost).await;
            p.budget = Some(permit.map_err(|_| HubError::ShuttingDown)?);
        }
        self.data.send(command).await.map_err(|_| HubError::ShuttingDown)
    }

    /// Sends a client's command if the data channel has room now. A full
    /// channel hands the command back (large, by design) so the caller can wait.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, mut command: Command) -> Result<(), mpsc::error::TrySendError<Command>> {
        let cost = self.cost(&command);
        if let (Command::Publish(p), true) = (&mut command, cost > 0) {
            match self.budget.clone().try_acquire_many_owned(cost) {
                Ok(permit) => p.budget = Some(permit),
                Err(TryAcquireError::NoPermits) => return Err(mpsc::error::TrySendError::Full(command)),
                Err(TryAcquireError::Closed) => return Err(mpsc::error::TrySendError::Closed(command)),
            }
        }
        self.data.try_send(command)
    }

    /// Sends a control command and waits for its answer, both within the deadline.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, HubError> {
        let (respond, answer) = oneshot::channel();
        let command = make(respond);
        let exchange = async {
            self.control.send(command).await.map_err(|_| HubError::ShuttingDown)?;
            answer.await.map_err(|_| HubError::ShuttingDown)
        };
        tokio::time::timeout(self.deadline, exchange)
            .await
            .map_err(|_| HubError::Timeout(self.deadline))?
    }

    /// Registers a connection and queues its welcome frame (data channel:
    /// its turn comes after the requests already queued, like any client's).
    pub async fn register(&self, client: ClientTx, welcome: Frame) -> Result<(), HubError> {
        let (respond, answer) = oneshot::channel();
        self.send(Command::Register {
            client,
            welcome,
            respond,
        })
        .await?;
        answer.await.map_err(|_| HubError::ShuttingDown)?
    }

    /// A connection ended. Never dropped: the registry must hear of it.
    pub async fn unregister(&self, shared: Arc<Shared>, reason: DisconnectReason) {
        let _ = self.send(Command::Unregister { shared, reason }).await;
    }

    /// Fans a frame out from the admin plane; answers who got it.
    pub async fn broadcast(
        &self,
        topic: Option<Topic>,
        frame: Frame,
        exclude: HashSet<ClientId>,
    ) -> Result<Delivery, HubError> {
        self.ask(|respond| {
            Command::Publish(Publish {
                topic,
                frame,
                source: Source::Admin,
                from: None,
                request: None,
                exclude,
                respond: Some(respond),
                numbered: None,
                budget: None,
            })
        })
        .await?
    }

    /// Queues a frame for one client; `Ok(false)`: it was not queued.
    pub async fn send_to(&self, id: ClientId, frame: Frame) -> Result<bool, HubError> {
        self.ask(|respond| Command::SendTo { id, frame, respond }).await?
    }

    pub async fn list_clients(&self, query: ListQuery) -> Result<ClientPage, HubError> {
        self.ask(|respond| Command::ListClients { query, respond }).await
    }

    pub async fn get_client(&self, id: ClientId) -> Result<ClientInfo, HubError> {
        self.ask(|respond| Command::GetClient { id, respond }).await?
    }

    pub async fn kick(&self, target: KickTarget, closing: Closing) -> Result<u64, HubError> {
        self.ask(|respond| Command::Kick {
            target,
            closing,
            respond,
        })
        .await
    }

    pub async fn stats(&self) -> Result<Stats, HubError> {
        self.ask(|respond| Command::Stats { respond }).await
    }

    pub async fn history(&self, topic: Topic, since: u64, limit: usize) -> Result<Option<HistoryPage>, HubError> {
        self.ask(|respond| Command::History {
            topic,
            since,
            limit,
            respond,
        })
        .await?
    }

    pub async fn roster(&self, full: bool) -> Result<super::Roster, HubError> {
        self.ask(|respond| Command::Roster { full, respond }).await
    }

    pub async fn watch(&self) -> Result<broadcast::Receiver<Event>, HubError> {
        self.ask(|respond| Command::Watch { respond }).await
    }

    pub async fn drain_batch(&self, n: usize) -> Result<(u64, u64), HubError> {
        self.ask(|respond| Command::DrainBatch { n, respond }).await
    }

    pub async fn shutdown(&self) -> Result<(), HubError> {
        self.ask(|respond| Command::Shutdown { respond }).await
    }
}

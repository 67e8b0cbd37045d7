//! The cheap, cloneable way to reach the hub. Each method is one command
//! into the hub's bounded channel; when the channel is full the caller
//! waits (callers bound the wait with their own deadline).

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use super::*;
use crate::metrics::Source;
use crate::protocol::Frame;

#[derive(Debug, Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
}

impl HubHandle {
    pub(super) fn new(tx: mpsc::Sender<Command>) -> Self {
        Self { tx }
    }

    /// Sends a command the hub answers; `HubError::ShuttingDown` if the hub is gone.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, HubError> {
        let (respond, answer) = oneshot::channel();
        self.send(make(respond)).await?;
        answer.await.map_err(|_| HubError::ShuttingDown)
    }

    /// Sends a command without waiting for an answer; waits while the
    /// hub's channel is full.
    pub async fn send(&self, command: Command) -> Result<(), HubError> {
        self.tx.send(command).await.map_err(|_| HubError::ShuttingDown)
    }

    /// Sends a command if the hub's channel has room now. A full channel
    /// hands the command back (large, by design) so the caller can wait.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, command: Command) -> Result<(), mpsc::error::TrySendError<Command>> {
        self.tx.try_send(command)
    }

    pub async fn register(&self, client: ClientTx) -> Result<(), HubError> {
        self.ask(|respond| Command::Register { client, respond }).await?
    }

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
            })
        })
        .await
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

//! The `Admin` service: validates at the edge, sends one command into the
//! hub per call, converts the answer. It holds no state of its own beyond
//! the hub handle.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::{self, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use super::pb::{self, admin_server::Admin};
use super::AdminError;
use crate::backplane::{Cluster, Gathered};
use crate::hub::{Event, HubHandle, KickTarget, ListQuery};
use crate::lifecycle::{Draining, Lifecycle};
use crate::types::ClientRef;
use crate::{metrics, protocol};

/// Drain defaults: the pace and how long it may take.
const DEFAULT_DRAIN_RATE: u32 = 100;
/// History messages one call answers by default, and at most.
const DEFAULT_HISTORY_LIMIT: u32 = 100;
const MAX_HISTORY_LIMIT: u32 = 1000;
const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(300);
/// The longest drain deadline accepted: a day.
const MAX_DRAIN_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// A watcher that lags again within this long of its last lag has stayed
/// behind: its stream ends (RESOURCE_EXHAUSTED) rather than lag forever.
const LAG_WINDOW: Duration = Duration::from_secs(10);
/// How long the final `done` message may wait for a caller that does not read.
const DRAIN_DONE_WAIT: Duration = Duration::from_secs(5);
/// Progress messages a Drain stream buffers; a caller that reads slower misses intermediate ones.
const DRAIN_PROGRESS_BUFFER: usize = 64;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The caller's address, for the audit line every changing call logs.
fn caller<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map_or_else(|| "unknown".into(), |a| a.to_string())
}

pub struct AdminService {
    hub: HubHandle,
    /// Every node's hub, for the calls that cover the cluster (this node
    /// only, without a backplane).
    cluster: Arc<Cluster>,
    max_message_bytes: usize,
    lifecycle: Lifecycle,
    /// Server shutdown: ends open streams.
    stop: CancellationToken,
    /// Starts drains, so a drain that panics (a bug) stops the node rather
    /// than leave it half drained and not ready.
    supervisor: crate::shutdown::Supervisor,
}

impl AdminService {
    pub fn new(
        hub: HubHandle,
        cluster: Arc<Cluster>,
        max_message_bytes: usize,
        lifecycle: Lifecycle,
        stop: CancellationToken,
        supervisor: crate::shutdown::Supervisor,
    ) -> Self {
        Self {
            hub,
            cluster,
            max_message_bytes,
            lifecycle,
            stop,
            supervisor,
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let topic = convert::optional_topic(&request.topic)?;
        let data = convert::json_data(&request.data, self.max_message_bytes)?;
        let frame = protocol::message(topic.as_ref(), "admin", data);
        let exclude: Vec<ClientRef> = request
            .exclude_client_ids
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect();
        if !exclude.is_empty() && self.cluster.numbers(topic.as_ref()) {
            return Err(AdminError::ExcludeWithHistory.into());
        }
        let gathered = self
            .cluster
            .broadcast(topic.clone(), frame, &exclude)
            .await
            .map_err(AdminError::from)?;
        let delivery = gathered.value;
        tracing::info!(
            %caller,
            topic = topic.as_ref().map_or("(everyone)", |t| t.as_str()),
            data_bytes = request.data.len(),
            excluded = request.exclude_client_ids.len(),
            recipients = delivery.recipients,
            dropped = delivery.dropped,
            nodes = gathered.nodes.len(),
            missing = ?gathered.missing,
            "admin: Broadcast"
        );
        Ok(Response::new(pb::BroadcastResponse {
            recipients: delivery.recipients,
            dropped: delivery.dropped,
            partial: gathered.partial(),
            nodes: convert::nodes(&gathered.nodes),
            offset: delivery.offset.unwrap_or(0),
        }))
    }

    async fn history(&self, request: Request<pb::HistoryRequest>) -> Result<Response<pb::HistoryResponse>, Status> {
        let request = request.into_inner();
        let topic = convert::optional_topic(&request.topic)?.ok_or(AdminError::Missing("topic"))?;
        let limit = match request.limit {
            0 => DEFAULT_HISTORY_LIMIT,
            n if n > MAX_HISTORY_LIMIT => return Err(AdminError::LimitTooLarge(n).into()),
            n => n,
        };
        let page = self
            .hub
            .history(topic.clone(), request.since, limit as usize)
            .await
            .map_err(AdminError::from)?
            .ok_or_else(|| AdminError::NoHistory(topic.to_string()))?;
        Ok(Response::new(pb::HistoryResponse {
            epoch: page.epoch.to_string(),
            offset: page.offset,
            trimmed: page.trimmed,
            messages: page
                .messages
                .into_iter()
                .map(|(offset, frame)| pb::HistoryMessage {
                    offset,
                    frame: frame.to_string(),
                })
                .collect(),
        }))
    }

    async fn send_to_client(
        &self,
        request: Request<pb::SendToClientRequest>,
    ) -> Result<Response<pb::SendToClientResponse>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let client = convert::client_ref(&request.client_id)?;
        let data = convert::json_data(&request.data, self.max_message_bytes)?;
        let frame = protocol::message(None, "admin", data);
        let gathered = self.cluster.send_to(&client, frame).await.map_err(AdminError::from)?;
        let queued = found(&gathered, &request.client_id)?;
        tracing::info!(%caller, client_id = %request.client_id, data_bytes = request.data.len(), queued, "admin: SendToClient");
        Ok(Response::new(pb::SendToClientResponse {
            dropped: !queued,
            node: gathered.nodes.first().map(ToString::to_string).unwrap_or_default(),
        }))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => return Err(AdminError::PageTooLarge(n).into()),
            n => n,
        };
        let order = convert::order(request.order_by);
        let query = ListQuery {
            topic: convert::optional_topic(&request.topic)?,
            user: Some(request.user).filter(|u| !u.is_empty()),
            order,
            page_size: page_size as usize,
            cursor: None,
        };
        let after = convert::decode_cluster_cursor(&request.page_token, order, self.cluster.node())?;
        let gathered = self.cluster.list(query, after).await.map_err(AdminError::from)?;
        let clustered = self.cluster.clustered();
        let page = &gathered.value;
        Ok(Response::new(pb::ListClientsResponse {
            clients: page
                .clients
                .iter()
                .map(|(node, info)| convert::client_info(info.clone(), node, clustered))
                .collect(),
            next_page_token: page
                .next
                .as_ref()
                .map(|next| convert::encode_cluster_cursor(next, clustered))
                .unwrap_or_default(),
            total: page.total,
            partial: gathered.partial(),
            nodes: convert::nodes(&gathered.nodes),
        }))
    }

    async fn get_client(&self, request: Request<pb::GetClientRequest>) -> Result<Response<pb::ClientInfo>, Status> {
        let id = &request.get_ref().client_id;
        let client = convert::client_ref(id)?;
        let gathered = self.cluster.get_client(&client).await.map_err(AdminError::from)?;
        let info = found(&gathered, id)?;
        let node = gathered.nodes.first().unwrap_or(self.cluster.node());
        Ok(Response::new(convert::client_info(
            info,
            node,
            self.cluster.clustered(),
        )))
    }

    async fn kick_clients(
        &self,
        request: Request<pb::KickClientsRequest>,
    ) -> Result<Response<pb::KickClientsResponse>, Status> {
        use pb::kick_clients_request::Target;
        let caller = caller(&request);
        let request = request.into_inner();
        let close_code = convert::kick_close(request.code, &request.reason)?;
        let mut client = None;
        let target = match request.target {
            None => return Err(AdminError::NoTarget.into()),
            Some(Target::ClientId(id)) => {
                let r = convert::client_ref(&id)?;
                let target = KickTarget::Client(r.id);
                client = Some(r);
                target
            }
            Some(Target::User(user)) if user.is_empty() => return Err(AdminError::NoTarget.into()),
            Some(Target::User(user)) => KickTarget::User(user),
            Some(Target::Topic(topic)) => match convert::optional_topic(&topic)? {
                Some(topic) => KickTarget::Topic(topic),
                None => return Err(AdminError::NoTarget.into()),
            },
        };
        let reason_bytes = request.reason.len();
        let gathered = self
            .cluster
            .kick(client.as_ref(), target.clone(), close_code, &request.reason)
            .await
            .map_err(AdminError::from)?;
        let kicked = gathered.value;
        tracing::info!(%caller, %target, code = close_code, reason_bytes, kicked, missing = ?gathered.missing, "admin: KickClients");
        if let (Some(client), 0) = (&client, kicked) {
            let name = convert::client_name(client, self.cluster.node(), self.cluster.clustered());
            return Err(missing_or_not_found(&gathered, name).into());
        }
        Ok(Response::new(pb::KickClientsResponse {
            kicked,
            partial: gathered.partial(),
            nodes: convert::nodes(&gathered.nodes),
        }))
    }

    async fn get_stats(&self, _: Request<pb::GetStatsRequest>) -> Result<Response<pb::Stats>, Status> {
        let gathered = self.cluster.stats().await.map_err(AdminError::from)?;
        let partial = gathered.partial();
        let mut stats = convert::stats(gathered.value, partial);
        stats.ready = self.lifecycle.not_ready_reason().is_none();
        stats.not_ready_reason = self.lifecycle.not_ready_reason().unwrap_or_default().to_string();
        Ok(Response::new(stats))
    }

    type WatchEventsStream = BoxStream<pb::Event>;

    /// Events come from the hub's bounded broadcast ring: a watcher that
    /// falls behind never slows the hub; it gets one `lagged` event for each
    /// gap (with the number missed in `code`) and the misses are counted. A
    /// watcher that lags again within `LAG_WINDOW` (10 s) has stayed behind: its
    /// stream ends with RESOURCE_EXHAUSTED. Every stream ends at shutdown.
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let kinds: Vec<i32> = request.into_inner().kinds;
        let events = self.hub.watch().await.map_err(AdminError::from)?;
        let watch = Watch {
            events,
            kinds,
            last_lag: None,
            ended: false,
        };
        let stream = futures_util::stream::unfold(watch, Watch::next);
        let stream = futures_util::StreamExt::take_until(stream, self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    type DrainStream = BoxStream<pb::DrainProgress>;

    async fn drain(&self, request: Request<pb::DrainRequest>) -> Result<Response<Self::DrainStream>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let rate = if request.rate_per_second == 0 {
            DEFAULT_DRAIN_RATE
        } else {
            request.rate_per_second
        };
        let deadline = match request.deadline {
            None => DEFAULT_DRAIN_DEADLINE,
            Some(d) => match Duration::try_from(d) {
                Ok(d) if d <= MAX_DRAIN_DEADLINE => d,
                _ => return Err(AdminError::InvalidDeadline.into()),
            },
        };
        let Some(draining) = self.lifecycle.begin_drain() else {
            return Err(AdminError::DrainRunning.into());
        };
        self.lifecycle.set_not_ready();
        tracing::info!(%caller, rate, ?deadline, "admin: Drain started");
        let (tx, rx) = mpsc::channel(DRAIN_PROGRESS_BUFFER);
        let drain = drain(self.hub.clone(), rate, deadline, tx, self.stop.clone(), draining);
        self.supervisor.spawn_finite("drain", drain);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What a call about one client found: its answer, NOT_FOUND when no node
/// holds it, UNAVAILABLE when its node did not answer.
fn found<T: Clone>(gathered: &Gathered<Option<T>>, id: &str) -> Result<T, AdminError> {
    gathered
        .value
        .clone()
        .ok_or_else(|| missing_or_not_found(gathered, id.to_string()))
}

fn missing_or_not_found<T>(gathered: &Gathered<T>, id: String) -> AdminError {
    match gathered.missing.first() {
        Some(node) => AdminError::NodeUnavailable(node.to_string()),
        None => AdminError::NotFound(id),
    }
}

/// One WatchEvents stream's state.
struct Watch {
    events: broadcast::Receiver<Event>,
    kinds: Vec<i32>,
    last_lag: Option<Instant>,
    ended: bool,
}

impl Watch {
    async fn next(mut self) -> Option<(Result<pb::Event, Status>, Watch)> {
        if self.ended {
            return None;
        }
        loop {
            match self.events.recv().await {
                Ok(event) => {
                    let event = convert::event(event);
                    if self.kinds.is_empty() || self.kinds.contains(&event.kind) {
                        return Some((Ok(event), self));
                    }
                }
                Err(RecvError::Closed) => return None,
                Err(RecvError::Lagged(missed)) => {
                    metrics::events_lagged(missed);
                    let now = Instant::now();
                    if self.last_lag.is_some_and(|at| now - at < LAG_WINDOW) {
                        self.ended = true;
                        let status = Status::resource_exhausted(format!(
                            "this watcher fell behind twice within {LAG_WINDOW:?}; reconnect"
                        ));
                        return Some((Err(status), self));
                    }
                    self.last_lag = Some(now);
                    let lagged = pb::Event {
                        kind: pb::EventKind::Unspecified as i32,
                        reason: "lagged".into(),
                        code: u32::try_from(missed).unwrap_or(u32::MAX),
                        at: Some(std::time::SystemTime::now().into()),
                        ..Default::default()
                    };
                    return Some((Ok(lagged), self));
                }
            }
        }
    }
}

/// Closes clients oldest first at `rate` per second until none remain, the
/// deadline passes or the server stops. It goes on if the caller hangs up:
/// the node is already not ready, and a half-drained node helps no one.
/// The drain has ended (another may start) before the caller hears `done`.
async fn drain(
    hub: HubHandle,
    rate: u32,
    deadline: Duration,
    progress: mpsc::Sender<Result<pb::DrainProgress, Status>>,
    stop: CancellationToken,
    draining: Draining,
) {
    // Up to ten batches a second, so the pace is smooth at any rate.
    let ticks_per_second = rate.clamp(1, 10);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / ticks_per_second);
    let end = tokio::time::Instant::now() + deadline;
    let (mut closed, mut remaining, mut owed) = (0u64, 0u64, 0u64);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        if tokio::time::Instant::now() >= end {
            break;
        }
        // Spread `rate` over the ticks of each second without rounding drift.
        ticks += 1;
        let due = ticks * u64::from(rate) / u64::from(ticks_per_second);
        let n = due - owed;
        owed = due;
        match hub.drain_batch(n as usize).await {
            Ok((batch, left)) => {
                closed += batch;
                remaining = left;
            }
            Err(_) => break,
        }
        // The last step is told once, by the `done` message below.
        if remaining == 0 {
            break;
        }
        let _ = progress.try_send(Ok(pb::DrainProgress {
            closed,
            remaining,
            done: false,
        }));
    }
    tracing::info!(closed, remaining, "drain finished");
    drop(draining);
    // The last message waits for room a bounded time: a caller that stopped
    // reading cannot keep this task (and its hub handle) alive.
    let done = progress.send(Ok(pb::DrainProgress {
        closed,
        remaining,
        done: true,
    }));
    let _ = tokio::time::timeout(DRAIN_DONE_WAIT, done).await;
}

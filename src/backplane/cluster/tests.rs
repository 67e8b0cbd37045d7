//! The cluster on a loopback engine, on paused time.

use super::*;
use futures_util::future::BoxFuture;
use std::sync::atomic::AtomicUsize;

/// An engine on a wire of its own: what is published to this node's
/// channel comes straight back, unless `silent`.
struct Loopback {
    inbound: mpsc::Sender<Inbound>,
    silent: AtomicBool,
    subscription: AtomicU64,
    resubscribed: AtomicUsize,
}

impl Engine for Loopback {
    fn publish(&self, channel: Channel, payload: Bytes) -> bool {
        if !self.silent.load(Ordering::Relaxed) {
            let _ = self.inbound.try_send(Inbound { channel, payload });
        }
        true
    }
    fn publish_numbered(&self, _: crate::backplane::Numbered) -> bool {
        false
    }
    fn read_stream(
        &self,
        _: &Topic,
        _: u64,
        _: usize,
        _: bool,
    ) -> BoxFuture<'_, Result<crate::backplane::StreamRead, EngineError>> {
        Box::pin(async { Err(EngineError::Answer("no streams on a loopback")) })
    }
    fn write_rosters(
        &self,
        _: &NodeId,
        _: Vec<(Topic, Option<Bytes>)>,
        _: Vec<Topic>,
        _: Duration,
    ) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }
    fn read_rosters(&self, _: &Topic, _: Duration) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, EngineError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn listen(&self, _: Channel, _: bool) {}
    fn resubscribe(&self) {
        self.resubscribed.fetch_add(1, Ordering::Relaxed);
        self.subscription.fetch_add(1, Ordering::Relaxed);
    }
    fn refresh_presence(&self, node: &NodeId, _: Duration) -> BoxFuture<'_, Result<Vec<Presence>, EngineError>> {
        let node = node.clone();
        Box::pin(async move {
            Ok(vec![Presence {
                node,
                age: Duration::ZERO,
            }])
        })
    }
    fn leave(&self, _: &NodeId, _: Vec<(Channel, Bytes)>) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async { Ok(()) })
    }
    fn subscription(&self) -> Option<u64> {
        Some(self.subscription.load(Ordering::Relaxed))
    }
}

#[tokio::test(start_paused = true)]
async fn the_canary_finds_a_silent_subscription_within_two_heartbeats() {
    let (hub, handle) = crate::hub::Hub::new(crate::hub::HubConfig {
        max_topics_per_client: 8,
        max_topics: 100,
        queue_len: 8,
        queue_bytes: 1 << 20,
        deadline: Duration::from_secs(5),
        write_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        send_queue_len: 8,
        send_queue_bytes: 1 << 20,
        history: crate::hub::HistoryConfig::off(),
        presence: crate::hub::PresenceConfig::off(),
    });
    tokio::spawn(hub.run());
    let heartbeat = Duration::from_secs(2);
    let config = ClusterConfig {
        node: NodeId::parse("a").unwrap(),
        presence_ttl: Duration::from_secs(15),
        heartbeat,
        deadline: Duration::from_secs(1),
        supervisor: Supervisor::default(),
        history: None,
        presence: false,
    };
    let engine = std::sync::OnceLock::new();
    let stop = CancellationToken::new();
    let cluster = Cluster::join(
        |inbound| {
            let loopback = Arc::new(Loopback {
                inbound,
                silent: AtomicBool::new(false),
                subscription: AtomicU64::new(1),
                resubscribed: AtomicUsize::new(0),
            });
            let _ = engine.set(loopback.clone());
            Ok(loopback)
        },
        handle,
        config,
        Lifecycle::default(),
        stop.clone(),
    )
    .unwrap();
    let engine = engine.get().unwrap();
    let step = Duration::from_millis(10);
    while !cluster.up() {
        tokio::time::sleep(step).await;
    }
    // Up and steady for a while, then silent, at the worst moment: just
    // after a heartbeat came back.
    tokio::time::sleep(heartbeat * 5 + step).await;
    assert!(cluster.up());
    engine.silent.store(true, Ordering::Relaxed);
    let silenced = tokio::time::Instant::now();
    while cluster.up() {
        tokio::time::sleep(step).await;
    }
    assert!(silenced.elapsed() <= heartbeat * 2, "{:?}", silenced.elapsed());
    assert_eq!(
        engine.resubscribed.load(Ordering::Relaxed),
        1,
        "the subscription is renewed once"
    );
    // Heard again: up at the next heartbeat that comes back.
    engine.silent.store(false, Ordering::Relaxed);
    let heard = tokio::time::Instant::now();
    while !cluster.up() {
        tokio::time::sleep(step).await;
    }
    assert!(heard.elapsed() <= heartbeat * 2, "{:?}", heard.elapsed());
    stop.cancel();
}

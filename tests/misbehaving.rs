//! Clients and operators that misbehave: none of them can hold the node.
//! Every wait has a deadline, a closing client is gone within
//! `--close-timeout`, a client whose socket takes nothing is evicted after
//! `--write-timeout`, floods meet backpressure instead of memory growth.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{event_for, small_window_watch, Binary, TestServer, WsClient, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wshub::admin::pb::{self, EventKind};

/// Broadcasts ~9 MB to `topic`: far more than the kernel's socket buffers
/// hold for a client that does not read.
async fn flood_topic(server: &TestServer, topic: &str) {
    let mut admin = server.admin().await;
    let data = format!("\"{}\"", "f".repeat(60_000));
    for _ in 0..150 {
        let request = pb::BroadcastRequest {
            topic: topic.into(),
            data: data.clone(),
            ..Default::default()
        };
        admin.broadcast(request).await.unwrap();
    }
}

/// Queues big enough that only the socket, never the queue, stalls.
fn deep_queues(config: &mut wshub::Config) {
    config.client.send_queue_bytes = 64 << 20;
    config.client.send_queue_len = 100_000;
    config.close_timeout = Duration::from_secs(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_client_that_does_not_read_is_gone_within_the_close_timeout() {
    let server = TestServer::with(|c| {
        deep_queues(c);
        c.write_timeout = Duration::from_secs(60);
    })
    .await;
    let mut events = server.watch(&[EventKind::Disconnected]).await;
    let mut observer = server.client().await;
    observer.subscribe("chat").await;
    let (mut stalled, id) = WsClient::stalled(server.ws, "flood").await;
    flood_topic(&server, "flood").await;
    let mut admin = server.admin().await;
    let info = admin
        .get_client(pb::GetClientRequest { client_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(info.queue_bytes > 0, "its writer is stuck on a full socket");

    let kick = pb::KickClientsRequest {
        target: Some(pb::kick_clients_request::Target::ClientId(id.clone())),
        code: 4001,
        reason: "bye".into(),
    };
    assert_eq!(admin.kick_clients(kick).await.unwrap().into_inner().kicked, 1);
    // Removed from the registry at once...
    let gone = admin.get_client(pb::GetClientRequest { client_id: id.clone() }).await;
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
    // ...and what it sends from now on reaches no one.
    stalled
        .ws
        .send(Message::text(
            json!({"type":"publish","topic":"chat","data":"ghost"}).to_string(),
        ))
        .await
        .unwrap();
    // Its socket is dropped within the close timeout although it never reads.
    let event = event_for(&mut events, EventKind::Disconnected, &id).await;
    assert_eq!((event.reason.as_str(), event.code), ("kicked", 4001));
    // Everything it sent was handled before its disconnect was announced:
    // the observer's next frame is the answer to its own request.
    observer.subscribe("sync").await;
    drop(stalled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_takes_nothing_is_evicted_after_the_write_timeout() {
    let server = TestServer::with(|c| {
        deep_queues(c);
        c.write_timeout = Duration::from_secs(1);
    })
    .await;
    let mut events = server.watch(&[EventKind::Evicted, EventKind::Disconnected]).await;
    let (stalled, id) = WsClient::stalled(server.ws, "flood").await;
    flood_topic(&server, "flood").await;
    // The queue never filled (64 MiB): the write deadline evicted it.
    let evicted = event_for(&mut events, EventKind::Evicted, &id).await;
    assert_eq!((evicted.reason.as_str(), evicted.code), ("slow_consumer", 4008));
    let gone = event_for(&mut events, EventKind::Disconnected, &id).await;
    assert_eq!(gone.reason, "slow_consumer");
    let stats = server.stats().await;
    assert_eq!((stats.clients, stats.slow_consumer_evictions), (0, 1));
    drop(stalled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_reach_the_hub_while_a_client_floods_it() {
    // A short hub channel that one publisher keeps full, and a server-side
    // admin deadline: without a channel of its own, an admin call would
    // wait behind the flood and answer DEADLINE_EXCEEDED.
    let server = TestServer::with(|c| {
        c.hub_queue_len = 16;
        c.admin_deadline = Duration::from_secs(1);
    })
    .await;
    let mut readers = Vec::new();
    for _ in 0..100 {
        let mut client = server.client().await;
        client.subscribe("fan").await;
        readers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = client.ws.next().await {}
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooder = server.client().await;
    let flooding = stop.clone();
    let flood = tokio::spawn(async move {
        let text = json!({"type":"publish","topic":"fan","data":"x"}).to_string();
        while !flooding.load(Ordering::Relaxed) {
            for _ in 0..64 {
                flooder.ws.feed(Message::text(text.clone())).await.unwrap();
            }
            flooder.ws.flush().await.unwrap();
        }
        flooder
    });
    let mut admin = server.admin().await;
    let (mut latencies, mut deepest) = (Vec::new(), 0);
    for _ in 0..100 {
        let start = Instant::now();
        let stats = admin
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("answered within the deadline");
        latencies.push(start.elapsed());
        deepest = deepest.max(stats.into_inner().hub_queue_depth);
    }
    stop.store(true, Ordering::Relaxed);
    let _flooder = flood.await.unwrap();
    latencies.sort();
    println!(
        "GetStats under a publish flood: p50 {:?}, p99 {:?}, deepest hub queue {deepest}",
        latencies[49], latencies[98]
    );
    assert!(deepest > 0, "the flood kept the hub's channel busy");
    server.stop().await;
    for reader in readers {
        let _ = tokio::time::timeout(WAIT, reader).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_flood_to_an_empty_topic_does_not_grow_memory() {
    let server = Binary::spawn(&[]).await;
    let flood = |n: usize| {
        let url = server.url();
        async move {
            let mut client = WsClient::connect(&url).await;
            let text = json!({"type":"publish","topic":"nobody","data":{"n":1}}).to_string();
            let until = Instant::now() + Duration::from_secs(3);
            let mut sent = 0;
            while sent < n || (n == 0 && Instant::now() < until) {
                for _ in 0..256 {
                    client.ws.feed(Message::text(text.clone())).await.unwrap();
                }
                client.ws.flush().await.unwrap();
                sent += 256;
            }
            // Answered after every publish before it: the hub has caught up.
            client.subscribe("done").await;
            sent
        }
    };
    // Warm up: connections, buffers and the allocator reach their working size.
    futures_util::future::join_all((0..4).map(|_| flood(20_000))).await;
    let before = server.rss_kib();
    let sent: usize = futures_util::future::join_all((0..4).map(|_| flood(0)))
        .await
        .into_iter()
        .sum();
    let after = server.rss_kib();
    println!("{sent} publishes in 3 s: RSS {before} KiB -> {after} KiB");
    assert!(sent > 100_000, "a real flood ({sent})");
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB over {sent} publishes"
    );
    server.sigterm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_cannot_hold_the_shutdown() {
    let mut server = Binary::spawn(&["--shutdown-grace", "2s"]).await;
    let events = small_window_watch(server.admin).await;
    let mut client = WsClient::connect(&server.url()).await;
    // Far more events than the watcher's HTTP/2 window holds.
    for i in 0..10_000 {
        let kind = if i % 2 == 0 { "subscribe" } else { "unsubscribe" };
        client.send(json!({"type": kind, "topic": "churn"})).await;
    }
    client.ping().await;
    let start = Instant::now();
    server.sigterm().await;
    assert_eq!(client.closed().await.0, 1001);
    let status = tokio::time::timeout(Duration::from_secs(15), server.child.wait())
        .await
        .expect("the process exits")
        .unwrap();
    let took = start.elapsed();
    println!("shutdown with a stuck watcher took {took:?}");
    assert_eq!(status.code(), Some(0));
    // The grace (2 s) plus the documented second, with room for a busy machine.
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    drop(events);
}

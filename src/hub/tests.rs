//! The hub actor without a network: queue commands, drop the handle, run
//! the actor to completion, then look at what reached each client queue.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::close::code;
use crate::protocol::Frame;
use crate::types::Source;

/// A client whose writer is the test: `queued` shows what was queued.
fn client(n: u64, queue_len: usize) -> (ClientTx, ClientTx) {
    let addr = "127.0.0.1:1".parse().unwrap();
    let shared = Arc::new(Shared::new(
        ClientId(n),
        addr,
        CancellationToken::new(),
        queue_len,
        1 << 20,
    ));
    (shared.clone(), shared)
}

/// Everything queued for a client, without waiting.
fn queued(rx: &ClientTx) -> Vec<Outbound> {
    futures_util::FutureExt::now_or_never(rx.take())
        .map(Vec::from)
        .unwrap_or_default()
}

fn publish(topic: Option<&str>, text: &'static str) -> Command {
    Command::Publish(Publish {
        topic: topic.map(|t| Topic::parse(t).unwrap()),
        frame: Frame::from_static(text),
        source: Source::Client,
        from: None,
        request: None,
        exclude: HashSet::new(),
        respond: None,
        numbered: None,
        budget: None,
    })
}

fn texts(rx: &mut ClientTx) -> Vec<String> {
    queued(rx)
        .into_iter()
        .filter_map(|item| match item {
            Outbound::Text(t) => Some(t.to_string()),
            Outbound::Close => None,
        })
        .collect()
}

/// The tests' hub configuration: 8 topics per client, small queues, a 5 s
/// admin deadline.
fn config() -> HubConfig {
    HubConfig {
        max_topics_per_client: 8,
        max_topics: 100_000,
        queue_len: 8,
        queue_bytes: 1 << 20,
        deadline: std::time::Duration::from_secs(5),
        write_timeout: std::time::Duration::from_secs(10),
        idle_timeout: std::time::Duration::from_secs(60),
        send_queue_len: 8,
        send_queue_bytes: 1 << 20,
        history: super::history::HistoryConfig::off(),
        presence: super::presence::PresenceConfig::off(),
    }
}

/// A running hub (8 topics per client, a command channel of `queue_len`).
fn start(queue_len: usize) -> (HubHandle, tokio::task::JoinHandle<()>) {
    let (hub, handle) = Hub::new(HubConfig {
        queue_len,
        deadline: std::time::Duration::from_secs(10),
        ..config()
    });
    (handle, tokio::spawn(hub.run()))
}

/// Stats asked through the data channel: answered after every client
/// command sent before it (admin calls take the control channel and may
/// overtake them).
async fn stats_after(handle: &HubHandle) -> Stats {
    let (respond, answer) = tokio::sync::oneshot::channel();
    handle.send(Command::Stats { respond }).await.unwrap();
    answer.await.unwrap()
}

/// Registers a client; its welcome is queued first, and the test's
/// "writer" takes and writes it, so queues hold only what follows.
async fn register(handle: &HubHandle, tx: &ClientTx) {
    handle
        .register(tx.clone(), Frame::from_static("welcome"))
        .await
        .unwrap();
    let first = queued(tx);
    assert!(
        matches!(&first[..], [Outbound::Text(t)] if t.as_str() == "welcome"),
        "{first:?}"
    );
    tx.written(1, "welcome".len());
}

#[tokio::test]
async fn routes_by_topic_and_to_everyone() {
    let (a_tx, mut a_rx) = client(1, 8);
    let (b_tx, mut b_rx) = client(2, 8);
    let (handle, task) = start(64);
    register(&handle, &a_tx).await;
    register(&handle, &b_tx).await;
    for command in [
        Command::Subscribe {
            id: ClientId(1),
            topic: Topic::parse("news").unwrap(),
            request: None,
            since: None,
            join_leave: false,
        },
        publish(Some("news"), "to-news"),
        publish(None, "to-all"),
        Command::Unsubscribe {
            id: ClientId(1),
            topic: Topic::parse("news").unwrap(),
            request: None,
        },
        publish(Some("news"), "unheard"),
    ] {
        handle.send(command).await.unwrap();
    }
    let stats = stats_after(&handle).await;
    assert_eq!((stats.clients, stats.topics), (2, 0));
    drop(handle);
    task.await.unwrap();
    assert_eq!(texts(&mut a_rx), ["to-news", "to-all"]);
    assert_eq!(texts(&mut b_rx), ["to-all"]);
}

#[tokio::test]
async fn a_full_queue_evicts_that_client_only() {
    let (slow_tx, _slow_rx) = client(1, 2);
    let (ok_tx, mut ok_rx) = client(2, 8);
    let slow = slow_tx.clone();
    let (handle, task) = start(64);
    register(&handle, &slow_tx).await;
    register(&handle, &ok_tx).await;
    let mut deliveries = Vec::new();
    for text in ["1", "2", "3", "4"] {
        deliveries.push(
            handle
                .broadcast(None, Frame::from_static(text), HashSet::new())
                .await
                .unwrap(),
        );
    }
    let stats = handle.stats().await.unwrap();
    drop(handle);
    task.await.unwrap();
    assert_eq!(
        deliveries[1],
        Delivery {
            recipients: 2,
            dropped: 0,
            offset: None
        }
    );
    assert_eq!(
        deliveries[2],
        Delivery {
            recipients: 1,
            dropped: 1,
            offset: None
        }
    );
    assert_eq!(
        deliveries[3],
        Delivery {
            recipients: 1,
            dropped: 0,
            offset: None
        }
    );
    assert_eq!((stats.clients, stats.slow_consumer_evictions), (1, 1));
    assert!(slow.token.is_cancelled());
    assert_eq!(slow.closing().map(Closing::code), Some(code::SLOW_CONSUMER));
    assert_eq!(texts(&mut ok_rx), ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn unregister_returns_the_registry_to_empty() {
    let clients: Vec<_> = (1..=50).map(|n| client(n, 4)).collect();
    let mut commands = Vec::new();
    for (tx, _) in &clients {
        let (respond, _) = tokio::sync::oneshot::channel();
        commands.push(Command::Register {
            client: tx.clone(),
            welcome: Frame::from_static("welcome"),
            respond,
        });
        commands.push(Command::Subscribe {
            id: tx.id,
            topic: Topic::parse("t").unwrap(),
            request: None,
            since: None,
            join_leave: false,
        });
    }
    for (tx, _) in &clients {
        commands.push(Command::Unregister {
            shared: tx.clone(),
            reason: DisconnectReason::ClientClose,
        });
    }
    let (handle, task) = start(256);
    for command in commands {
        handle.send(command).await.unwrap();
    }
    let stats = stats_after(&handle).await;
    drop(handle);
    task.await.unwrap();
    assert_eq!((stats.clients, stats.topics), (0, 0));
}

#[tokio::test]
async fn kick_and_shutdown_close_after_the_queue() {
    let (a_tx, mut a_rx) = client(1, 8);
    let (b_tx, mut b_rx) = client(2, 8);
    let (handle, task) = start(64);
    register(&handle, &a_tx).await;
    register(&handle, &b_tx).await;
    handle
        .broadcast(None, Frame::from_static("before"), HashSet::new())
        .await
        .unwrap();
    let closing = Closing::with_frame(DisconnectReason::Kicked, 4321, "bye");
    assert_eq!(handle.kick(KickTarget::Client(ClientId(1)), closing).await, Ok(1));
    assert_eq!(
        handle.kick(KickTarget::Client(ClientId(1)), Closing::shutdown()).await,
        Ok(0)
    );
    handle.shutdown().await.unwrap();
    let (c_tx, _c_rx) = client(3, 8);
    assert_eq!(
        handle.register(c_tx, Frame::from_static("welcome")).await,
        Err(HubError::Refused(Closing::shutdown()))
    );
    drop(handle);
    task.await.unwrap();
    for (rx, code) in [(&mut a_rx, 4321), (&mut b_rx, code::GOING_AWAY)] {
        let items = queued(rx);
        assert!(matches!(&items[..], [Outbound::Text(t), Outbound::Close] if t.as_str() == "before"));
        let shared = if code == 4321 { &a_tx } else { &b_tx };
        assert_eq!(shared.closing().map(Closing::code), Some(code));
    }
}

#[tokio::test]
async fn list_pages_walk_every_client_once() {
    let clients: Vec<_> = (1..=25).map(|n| client(n, 4)).collect();
    let (handle, task) = start(64);
    for (tx, _) in &clients {
        register(&handle, tx).await;
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let query = ListQuery {
            page_size: 10,
            cursor,
            ..Default::default()
        };
        let page = handle.list_clients(query).await.unwrap();
        assert_eq!(page.total, 25);
        seen.extend(page.clients.iter().map(|c| c.id.0));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    drop(handle);
    task.await.unwrap();
}

#[tokio::test]
async fn a_removed_client_has_no_effect() {
    let (kicked, _kicked_rx) = client(1, 8);
    let (other, mut other_rx) = client(2, 8);
    let (handle, task) = start(64);
    register(&handle, &kicked).await;
    register(&handle, &other).await;
    let closing = Closing::with_frame(DisconnectReason::Kicked, 4000, "");
    assert_eq!(handle.kick(KickTarget::Client(ClientId(1)), closing).await, Ok(1));
    // What it had already read arrives after its removal: dropped, no reply.
    let mut late = publish(None, "ghost");
    if let Command::Publish(p) = &mut late {
        p.from = Some(ClientId(1));
    }
    handle.send(late).await.unwrap();
    handle
        .send(Command::Subscribe {
            id: ClientId(1),
            topic: Topic::parse("t").unwrap(),
            request: match crate::protocol::parse(r#"{"type":"ping","id":1}"#) {
                Ok(crate::protocol::Request::Ping { id }) => id,
                _ => unreachable!(),
            },
            since: None,
            join_leave: false,
        })
        .await
        .unwrap();
    let stats = stats_after(&handle).await;
    drop(handle);
    task.await.unwrap();
    assert_eq!((stats.clients, stats.topics), (1, 0));
    assert!(texts(&mut other_rx).is_empty(), "its publish reached no one");
    assert!(matches!(&queued(&kicked)[..], [Outbound::Close]), "and it got no reply");
}

#[tokio::test]
async fn admin_calls_overtake_a_full_client_channel() {
    // One runtime thread: the hub runs only when this test waits, so the
    // one-slot data channel is full when the admin call arrives.
    let (handle, task) = start(1);
    handle.send(publish(None, "one")).await.unwrap();
    let full = handle.try_send(publish(None, "two"));
    assert!(matches!(full, Err(tokio::sync::mpsc::error::TrySendError::Full(_))));
    let stats = handle.stats().await.unwrap();
    assert_eq!(
        (stats.hub_queue_depth, stats.hub_queue_capacity),
        (1, 1),
        "answered while the client's command still waited"
    );
    drop(handle);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_admin_call_to_a_hub_that_does_not_answer_has_a_deadline() {
    // A hub that is never run: the call must not wait for ever.
    let (_hub, handle) = Hub::new(config());
    let started = tokio::time::Instant::now();
    assert_eq!(
        handle.stats().await.map(|_| ()),
        Err(HubError::Timeout(std::time::Duration::from_secs(5)))
    );
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn client_publishes_are_bounded_in_bytes_until_the_hub_takes_them() {
    let (hub, handle) = Hub::new(HubConfig {
        queue_len: 1000,
        queue_bytes: 100,
        ..config()
    });
    let sixty = "x".repeat(60);
    let command = || {
        let Command::Publish(mut p) = publish(None, "") else {
            unreachable!()
        };
        p.frame = Frame::from(sixty.clone());
        Command::Publish(p)
    };
    assert!(handle.try_send(command()).is_ok());
    // 60 + 60 > 100 bytes: the second waits, however many commands fit.
    assert!(matches!(
        handle.try_send(command()),
        Err(tokio::sync::mpsc::error::TrySendError::Full(_))
    ));
    let task = tokio::spawn(hub.run());
    // Once the hub has fanned the first out, its bytes are free again.
    handle.send(command()).await.unwrap();
    drop(handle);
    task.await.unwrap();
}

/// Other nodes' publishes are charged against the same byte budget as
/// clients': what they hold is not free while the hub is behind, and a
/// reservation the budget cannot cover fails at once (the caller drops it).
#[tokio::test]
async fn other_nodes_publishes_share_the_byte_budget() {
    let (hub, handle) = Hub::new(HubConfig {
        queue_len: 1000,
        queue_bytes: 100,
        ..config()
    });
    let from_node = || {
        let Command::Publish(mut p) = publish(None, "") else {
            unreachable!()
        };
        p.source = Source::Backplane;
        p.frame = Frame::from("x".repeat(60));
        Command::Publish(p)
    };
    assert!(handle.try_send(from_node()).is_ok(), "charged: 60 of 100");
    assert!(
        matches!(
            handle.try_send(from_node()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(_))
        ),
        "a second 60 does not fit"
    );
    assert!(handle.reserve(60).is_none(), "nor as a reservation");
    let held = handle.reserve(40).expect("40 more fit");
    assert!(handle.reserve(1).is_none(), "the budget is spent");
    drop(held);
    let task = tokio::spawn(hub.run());
    handle.send(from_node()).await.unwrap();
    drop(handle);
    task.await.unwrap();
}

#[tokio::test]
async fn a_client_registering_after_a_drain_began_is_closed_like_the_rest() {
    let (early, _early_rx) = client(1, 8);
    let (late, _late_rx) = client(2, 8);
    let (handle, task) = start(64);
    register(&handle, &early).await;
    assert_eq!(handle.drain_batch(10).await, Ok((1, 0)));
    assert_eq!(
        handle.register(late, Frame::from_static("welcome")).await,
        Err(HubError::Refused(Closing::drain()))
    );
    drop(handle);
    task.await.unwrap();
}

#[test]
fn queue_peaks_between_samples_are_kept_and_an_overflow_reads_full() {
    let (mut hub, _handle) = Hub::new(HubConfig {
        send_queue_len: 4,
        ..config()
    });
    let (tx, _rx) = client(1, 4);
    let (respond, _) = tokio::sync::oneshot::channel();
    hub.handle(Command::Register {
        client: tx.clone(),
        welcome: Frame::from_static("welcome"),
        respond,
    });
    hub.handle(publish(None, "one"));
    // Welcome and one message queued: 2 of 4, half full, though a sample
    // taken now after a writer had drained it would see nothing.
    let peaks = hub.take_peaks(0, 0);
    assert_eq!((peaks.depth_max, peaks.fill), (2, 0.5));
    for text in ["two", "three", "four"] {
        hub.handle(publish(None, text));
    }
    // The third publish did not fit: evicted between two samples.
    assert_eq!(hub.take_peaks(0, 0).fill, 1.0);
    assert_eq!(hub.take_peaks(0, 0).fill, 0.0, "a new interval");
}

/// What the hub handed its relay (other nodes), in order.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<String>>);

impl Relay for Recorded {
    fn publish(&self, topic: Option<&Topic>, frame: &Utf8Bytes) {
        let topic = topic.map_or("*", |t| t.as_str());
        self.0.lock().unwrap().push(format!("publish {topic} {frame}"));
    }
    fn interest(&self, topic: &Topic, on: bool) {
        self.0.lock().unwrap().push(format!("interest {topic} {on}"));
    }
    fn publish_numbered(&self, topic: &Topic, frame: &Utf8Bytes, _: Option<tokio::sync::oneshot::Sender<u64>>) -> bool {
        self.0.lock().unwrap().push(format!("numbered {topic} {frame}"));
        true
    }
    fn read(&self, _: &Topic, _: u64, _: usize, _: bool) -> BoxFuture<'static, Result<HistoryPage, HubError>> {
        Box::pin(async { Err(HubError::Backplane("no streams here".into())) })
    }
    fn rosters(&self, _: &Topic) -> BoxFuture<'static, Result<Vec<NodeRoster>, HubError>> {
        Box::pin(async { Err(HubError::Backplane("no rosters here".into())) })
    }
    fn announce(&self, topic: &Topic, frame: &Utf8Bytes) {
        self.0.lock().unwrap().push(format!("announce {topic} {frame}"));
    }
}

#[tokio::test]
async fn the_relay_sees_first_and_last_subscribers_and_clients_publishes_only() {
    let (a_tx, _a_rx) = client(1, 64);
    let (b_tx, mut b_rx) = client(2, 64);
    let (mut hub, handle) = Hub::new(config());
    let relay = Arc::new(Recorded::default());
    hub.set_relay(relay.clone());
    let task = tokio::spawn(hub.run());
    register(&handle, &a_tx).await;
    register(&handle, &b_tx).await;
    let sub = |id, on: bool| {
        let topic = Topic::parse("news").unwrap();
        if on {
            Command::Subscribe {
                id: ClientId(id),
                topic,
                request: None,
                since: None,
                join_leave: false,
            }
        } else {
            Command::Unsubscribe {
                id: ClientId(id),
                topic,
                request: None,
            }
        }
    };
    let mut from_backplane = match publish(Some("news"), "from-b") {
        Command::Publish(p) => p,
        _ => unreachable!(),
    };
    from_backplane.source = Source::Backplane;
    for command in [
        sub(1, true),
        sub(2, true),
        publish(Some("news"), "to-news"),
        publish(None, "to-all"),
        Command::Publish(from_backplane),
        sub(1, false),
        sub(2, false),
    ] {
        handle.send(command).await.unwrap();
    }
    // An admin broadcast runs on each node by itself: it is not relayed.
    // (It takes the control channel, which may overtake the commands above.)
    stats_after(&handle).await;
    handle
        .broadcast(None, Frame::from_static("admin"), HashSet::new())
        .await
        .unwrap();
    stats_after(&handle).await;
    assert_eq!(
        *relay.0.lock().unwrap(),
        [
            "interest news true",
            "publish news to-news",
            "publish * to-all",
            "interest news false",
        ],
        "interest on the first subscriber and off after the last; only clients' publishes go on"
    );
    // What came from another node is delivered here all the same.
    assert_eq!(texts(&mut b_rx), ["to-news", "to-all", "from-b", "admin"]);
    // A client that leaves with topics gives them up too.
    handle.send(sub(1, true)).await.unwrap();
    handle
        .send(Command::Unregister {
            shared: a_tx.clone(),
            reason: DisconnectReason::ClientClose,
        })
        .await
        .unwrap();
    stats_after(&handle).await;
    assert_eq!(
        relay.0.lock().unwrap()[4..],
        ["interest news true", "interest news false"]
    );
    drop(handle);
    task.await.unwrap();
}

/// Queue-depth order kept in a bounded heap gives, page after page, what a
/// full sort of every client would: deepest first, ties by id, each client
/// once, and the total.
#[tokio::test]
async fn queue_depth_pages_match_a_full_sort() {
    let (handle, task) = start(64);
    let mut expected = Vec::new();
    for n in 1..=60u64 {
        let (tx, _rx) = client(n, 64);
        register(&handle, &tx).await;
        // Depths 0-6, repeated, so ties are common.
        let depth = (n * 7 + 3) % 7;
        for _ in 0..depth {
            tx.try_push(Frame::from_static("x")).unwrap();
        }
        expected.push((std::cmp::Reverse(depth as u32), ClientId(n)));
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = handle
            .list_clients(ListQuery {
                topic: None,
                user: None,
                order: Order::QueueDepth,
                page_size: 7,
                cursor,
            })
            .await
            .unwrap();
        assert_eq!(page.total, 60);
        seen.extend(page.clients.iter().map(|c| (std::cmp::Reverse(c.queue_depth), c.id)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    drop(handle);
    task.await.unwrap();
}

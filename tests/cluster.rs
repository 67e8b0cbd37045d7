//! Several nodes over a real Redis backplane, as separate processes: they
//! behave as one hub, and a backplane or node failure never takes the data
//! plane down.

mod common;

use std::time::Duration;

use common::redis::{eventually, Redis, StallProxy};
use common::{metric, Binary, WsClient, WAIT};
use serde_json::{json, Value};
use wshub::admin::pb;

/// A node of a cluster over `redis`, with short heartbeats and TTL so
/// failures show within a test's time.
async fn node(redis: &Redis, id: &str, extra: &[&str]) -> Binary {
    let url = redis.url();
    let mut args = vec![
        "--backplane",
        &url,
        "--node-id",
        id,
        "--backplane-heartbeat",
        "250ms",
        "--backplane-presence-ttl",
        "3s",
    ];
    if !extra.contains(&"--admin-deadline") {
        args.extend_from_slice(&["--admin-deadline", "2s"]);
    }
    args.extend_from_slice(extra);
    let node = Binary::spawn(&args).await;
    node.log_line("backplane up").await;
    node
}

async fn list(node: &Binary, page_size: u32, page_token: String) -> pb::ListClientsResponse {
    node.admin()
        .await
        .list_clients(pb::ListClientsRequest {
            page_size,
            page_token,
            ..Default::default()
        })
        .await
        .expect("ListClients")
        .into_inner()
}

/// Publishes `n` numbered messages and waits for each ack, so they are in
/// the hub (and on their way to Redis) in order. Returns the messages the
/// publisher itself received meanwhile (a publish to everyone reaches it too).
async fn publish_numbered(client: &mut WsClient, topic: Option<&str>, n: u64) -> Vec<Value> {
    for i in 0..n {
        let mut request = json!({"type":"publish","data":{"n":i},"id":i});
        if let Some(topic) = topic {
            request["topic"] = json!(topic);
        }
        client.send(request).await;
    }
    let mut own = Vec::new();
    let mut acked = 0;
    while acked < n {
        let frame = client.recv().await;
        if frame["type"] == "ack" {
            assert_eq!(frame, json!({"type":"ack","id":acked}));
            acked += 1;
        } else {
            own.push(frame);
        }
    }
    own
}

/// Reads `n` messages and checks they are 0..n in order, from `from`.
async fn expect_numbered(client: &mut WsClient, topic: Option<&str>, from: &str, n: u64) {
    for i in 0..n {
        let message = client.recv().await;
        assert_eq!(message["type"], "message", "{message}");
        assert_eq!(message["data"], json!({"n": i}), "in order, each once: {message}");
        assert_eq!(message["from"], from);
        assert_eq!(message.get("topic").and_then(Value::as_str), topic);
    }
}

/// Proves nothing else came before: the next frame is this admin message.
async fn next_is(client: &mut WsClient, data: &Value) {
    let message = client.recv().await;
    assert_eq!(
        &message["data"], data,
        "no duplicate or stray message before the marker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behave_as_one_hub() {
    let redis = Redis::start().await;
    let (a, b, c) = tokio::join!(node(&redis, "a", &[]), node(&redis, "b", &[]), node(&redis, "c", &[]));

    let mut a1 = WsClient::connect(&a.url()).await;
    let mut b1 = WsClient::connect(&b.url()).await;
    let mut c1 = WsClient::connect(&c.url()).await;
    let mut c2 = WsClient::connect(&c.url()).await;
    assert_eq!(a1.welcome["node"], "a");
    assert_eq!(c2.welcome["node"], "c");
    assert!(
        c1.id.ends_with("@c") && a1.id.ends_with("@a"),
        "ids name their node: {}",
        c1.id
    );
    assert_ne!(c1.id, a1.id);

    // Topic interest reaches Redis: B and C subscribe, A does not.
    b1.subscribe("news").await;
    c1.subscribe("news").await;
    eventually(WAIT, "B and C subscribed to news in Redis", || async {
        redis.topic_subscribers("news").await == 2
    })
    .await;

    // A publish on A reaches each subscriber on B and C once, in order.
    publish_numbered(&mut a1, Some("news"), 50).await;
    expect_numbered(&mut b1, Some("news"), &a1.id, 50).await;
    expect_numbered(&mut c1, Some("news"), &a1.id, 50).await;
    // To everyone, from B: every client on every node, B's own included.
    let mut own = publish_numbered(&mut b1, None, 20).await;
    while own.len() < 20 {
        own.push(b1.recv().await);
    }
    let numbers: Vec<&Value> = own.iter().map(|m| &m["data"]["n"]).collect();
    assert_eq!(
        numbers,
        (0..20).map(|i| json!(i)).collect::<Vec<_>>().iter().collect::<Vec<_>>()
    );
    let b1_id = b1.id.clone();
    for client in [&mut a1, &mut c1, &mut c2] {
        expect_numbered(client, None, &b1_id, 20).await;
    }

    // Admin on A, about clients on C.
    let mut admin = a.admin().await;
    let marker = json!({"marker": 1});
    let sent = admin
        .send_to_client(pb::SendToClientRequest {
            client_id: c2.id.clone(),
            data: marker.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!sent.dropped);
    assert_eq!(sent.node, "c");
    // c2 had no news: the marker is the next thing it sees.
    next_is(&mut c2, &marker).await;

    let info = admin
        .get_client(pb::GetClientRequest {
            client_id: c1.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.id.as_str(), info.node.as_str()), (c1.id.as_str(), "c"));
    assert_eq!(info.topics, ["news"]);
    assert_eq!(info.messages_sent, 1 + 50 + 20 + 1, "welcome, news, everyone, ack");

    let all = list(&a, 100, String::new()).await;
    assert_eq!(all.total, 4);
    assert!(!all.partial);
    assert_eq!(all.nodes, ["a", "b", "c"]);
    let ids: Vec<&str> = all.clients.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [&a1.id, &b1.id, &c1.id, &c2.id],
        "ordered by node, then connection"
    );
    // Paging one at a time walks the same clients, each once.
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&b, 1, token).await;
        assert_eq!(page.total, 4);
        walked.extend(page.clients.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(walked, ids);

    let broadcast = admin
        .broadcast(pb::BroadcastRequest {
            topic: "news".into(),
            data: "{\"all\":1}".into(),
            exclude_client_ids: vec![b1.id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (broadcast.recipients, broadcast.partial),
        (1, false),
        "c1 only: b1 excluded"
    );
    assert_eq!(broadcast.nodes, ["a", "b", "c"]);
    next_is(&mut c1, &json!({"all": 1})).await;

    let stats = admin.get_stats(pb::GetStatsRequest {}).await.unwrap().into_inner();
    assert_eq!((stats.clients, stats.node.as_str(), stats.partial), (4, "a", false));
    let per_node: Vec<(&str, u64)> = stats.nodes.iter().map(|n| (n.id.as_str(), n.clients)).collect();
    assert_eq!(per_node, [("a", 1), ("b", 1), ("c", 2)]);

    let kicked = admin
        .kick_clients(pb::KickClientsRequest {
            target: Some(pb::kick_clients_request::Target::ClientId(c2.id.clone())),
            code: 4002,
            reason: "moved".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kicked.kicked, 1);
    assert_eq!(c2.closed().await, (4002, "moved".into()));
    // Kick by topic covers every node.
    let kicked = admin
        .kick_clients(pb::KickClientsRequest {
            target: Some(pb::kick_clients_request::Target::Topic("news".into())),
            code: 4001,
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kicked.kicked, 2);
    assert_eq!(b1.closed().await.0, 4001);
    assert_eq!(c1.closed().await.0, 4001);
    // A client id naming another node is not found on this one's hub.
    let missing = admin
        .get_client(pb::GetClientRequest {
            client_id: "c-1@nowhere".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    assert_eq!(metric(a.metrics, "wshub_node_info{node=\"a\"}").await, 1.0);
    assert!(metric(b.metrics, "wshub_broadcasts_total{source=\"backplane\"}").await >= 50.0);
    // Once B and C have no news subscribers, they leave the topic in Redis.
    eventually(WAIT, "news unsubscribed in Redis", || async {
        redis.topic_subscribers("news").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_partial_then_gone_within_the_ttl() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(node(&redis, "a", &[]), node(&redis, "b", &[]));
    let _a1 = WsClient::connect(&a.url()).await;
    let _b1 = WsClient::connect(&b.url()).await;
    assert_eq!(list(&a, 100, String::new()).await.total, 2);

    b.signal("KILL").await;
    // B is still in presence and does not answer: a partial answer, never a silent under-count.
    let page = list(&a, 100, String::new()).await;
    assert!(page.partial, "{page:?}");
    assert_eq!((page.total, page.nodes.as_slice()), (1, ["a".to_string()].as_slice()));
    let stats = a
        .admin()
        .await
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stats.partial);
    // Once its presence is older than the TTL (3 s here), B is no longer
    // expected: complete answers again, without B's clients.
    eventually(Duration::from_secs(6), "B's presence expired", || async {
        !list(&a, 100, String::new()).await.partial
    })
    .await;
    assert_eq!(list(&a, 100, String::new()).await.nodes, ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_keeps_local_delivery_and_heals_by_itself() {
    let mut redis = Redis::start().await;
    let (a, b) = tokio::join!(
        node(&redis, "a", &[]),
        node(&redis, "b", &["--backplane-required", "true"])
    );
    let mut a1 = WsClient::connect(&a.url()).await;
    let mut a2 = WsClient::connect(&a.url()).await;
    let mut b1 = WsClient::connect(&b.url()).await;
    a2.subscribe("t").await;
    b1.subscribe("t").await;
    eventually(WAIT, "A and B subscribed to t", || async {
        redis.topic_subscribers("t").await == 2
    })
    .await;
    assert_eq!(common::get(b.metrics, "/readyz").await.0, 200);

    redis.kill().await;
    // Local delivery goes on, at once, while the backplane is down.
    publish_numbered(&mut a1, Some("t"), 5).await;
    expect_numbered(&mut a2, Some("t"), &a1.id, 5).await;
    eventually(WAIT, "A sees the backplane down", || async {
        metric(a.metrics, "wshub_backplane_up").await == 0.0
    })
    .await;
    a.log_line("backplane down").await;
    publish_numbered(&mut a1, Some("t"), 3).await;
    expect_numbered(&mut a2, Some("t"), &a1.id, 3).await;
    assert!(metric(a.metrics, "wshub_backplane_dropped_total{reason=\"outbound\"}").await >= 1.0);
    // B requires the backplane: not ready while it is down; A does not.
    eventually(WAIT, "B not ready", || async {
        common::get(b.metrics, "/readyz").await.0 == 503
    })
    .await;
    let (status, body) = common::get(a.metrics, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("backplane is down"), "{body}");
    // Admin calls on A still answer, partial, with A's own clients.
    let page = list(&a, 100, String::new()).await;
    assert_eq!(page.total, 2);
    assert!(page.partial, "B is expected and cannot be asked");

    // Redis comes back on the same address: both nodes reconnect,
    // resubscribe and re-register without a restart.
    assert!(redis.restart().await);
    eventually(Duration::from_secs(15), "both nodes up again", || async {
        metric(a.metrics, "wshub_backplane_up").await == 1.0 && metric(b.metrics, "wshub_backplane_up").await == 1.0
    })
    .await;
    eventually(WAIT, "A and B resubscribed to t", || async {
        redis.topic_subscribers("t").await == 2
    })
    .await;
    assert_eq!(common::get(b.metrics, "/readyz").await.0, 200);
    eventually(WAIT, "B listed again", || async {
        let page = list(&a, 100, String::new()).await;
        page.total == 3 && !page.partial
    })
    .await;
    publish_numbered(&mut a1, Some("t"), 10).await;
    expect_numbered(&mut b1, Some("t"), &a1.id, 10).await;
    expect_numbered(&mut a2, Some("t"), &a1.id, 10).await;
    assert!(metric(a.metrics, "wshub_backplane_errors_total{kind=\"connect\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_catches_a_silent_subscription_and_renews_it() {
    let redis = Redis::start().await;
    let proxy = StallProxy::start(redis.port).await;
    let through_proxy = Redis::on(proxy.port, None);
    let a = node(&through_proxy, "a", &[]).await;
    let b = node(&redis, "b", &[]).await;
    let mut a1 = WsClient::connect(&a.url()).await;
    let mut b1 = WsClient::connect(&b.url()).await;
    a1.subscribe("t").await;
    eventually(WAIT, "A subscribed to t", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    assert_eq!(metric(a.metrics, "wshub_backplane_up").await, 1.0);

    // A's subscription stays connected but delivers nothing; its publishes
    // and presence still work.
    // (That this takes at most two heartbeats is proven on paused time in
    // backplane::cluster's unit tests; here, that it happens end to end.)
    assert_eq!(proxy.silence_subscriptions(), 1);
    a.log_line("backplane down").await;
    assert!(metric(a.metrics, "wshub_backplane_errors_total{kind=\"stall\"}").await >= 1.0);
    // The canary renewed the subscription: up again, and B reaches A's client.
    a.log_line("the canary found it silent").await;
    eventually(WAIT, "up again on a new subscription", || async {
        metric(a.metrics, "wshub_backplane_up").await == 1.0
    })
    .await;
    eventually(WAIT, "A subscribed to t again", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    publish_numbered(&mut b1, Some("t"), 5).await;
    expect_numbered(&mut a1, Some("t"), &b1.id, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_caught_and_survived() {
    let redis = Redis::start().await;
    let a = node(&redis, "a", &[]).await;
    assert_eq!(metric(a.metrics, "wshub_backplane_up").await, 1.0);
    // Redis frozen (SIGSTOP): every connection stays open, nothing moves.
    redis.signal("STOP").await;
    a.log_line("backplane down").await;
    assert_eq!(metric(a.metrics, "wshub_backplane_up").await, 0.0);
    redis.signal("CONT").await;
    eventually(Duration::from_secs(15), "up again after the freeze", || async {
        metric(a.metrics, "wshub_backplane_up").await == 1.0
    })
    .await;
    assert!(metric(a.metrics, "wshub_backplane_roundtrip_seconds_count").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_redis_and_joins_when_it_comes() {
    // A password in the URL, and no Redis there yet.
    let mut redis = Redis::on(Redis::free_port(), Some("s3cret pass"));
    let url = redis.url().replace("s3cret pass", "s3cret%20pass");
    let a = Binary::spawn(&[
        "--backplane",
        &url,
        "--node-id",
        "a",
        "--backplane-heartbeat",
        "250ms",
        "--backplane-required",
        "true",
    ])
    .await;
    a.log_line("cannot reach Redis; local delivery goes on").await;
    // Serving all the same: local delivery works; not ready, as required.
    let mut one = WsClient::connect(&a.url()).await;
    let mut two = WsClient::connect(&a.url()).await;
    two.subscribe("t").await;
    publish_numbered(&mut one, Some("t"), 3).await;
    expect_numbered(&mut two, Some("t"), &one.id, 3).await;
    let (status, body) = common::get(a.metrics, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: the backplane is down (--backplane-required)\n")
    );
    assert_eq!(metric(a.metrics, "wshub_backplane_up").await, 0.0);

    assert!(redis.restart().await);
    a.log_line("backplane up").await;
    assert_eq!(common::get(a.metrics, "/readyz").await, (200, "ready\n".to_string()));
    // It subscribed to its topic by itself, and another node reaches it.
    eventually(WAIT, "a subscribed to t", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    let b = node(&redis, "b", &[]).await;
    let mut three = WsClient::connect(&b.url()).await;
    publish_numbered(&mut three, Some("t"), 3).await;
    expect_numbered(&mut two, Some("t"), &three.id, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_leaves_at_once_and_a_live_node_id_is_refused() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(node(&redis, "a", &[]), node(&redis, "b", &[]));
    assert_eq!(list(&a, 100, String::new()).await.nodes, ["a", "b"]);
    b.sigterm().await;
    b.log_line("wshub stopped").await;
    // Not partial, with no wait for the TTL: B took itself out of presence.
    let page = list(&a, 100, String::new()).await;
    assert_eq!(
        (page.nodes.as_slice(), page.partial),
        (["a".to_string()].as_slice(), false)
    );

    // A careless operator starts a second process as "a": it refuses to
    // serve (exit 2), and "a" goes on alone.
    let mut twin = Binary::spawn(&[
        "--backplane",
        &redis.url(),
        "--node-id",
        "a",
        "--backplane-heartbeat",
        "250ms",
    ])
    .await;
    let status = tokio::time::timeout(WAIT, twin.child.wait())
        .await
        .expect("the twin exits")
        .unwrap();
    assert_eq!(status.code(), Some(2));
    twin.log_line("node id a is live in the cluster").await;
    assert_eq!(list(&a, 100, String::new()).await.nodes, ["a"]);
    // B, stopped cleanly a moment ago, is not live: a new B starts.
    let b = node(&redis, "b", &[]).await;
    eventually(WAIT, "the new B answers", || async {
        list(&a, 100, String::new()).await.nodes == ["a", "b"]
    })
    .await;
    drop(b);
}

/// One deadline bounds a whole cluster-wide call (with Redis frozen, the
/// answer is partial within `--admin-deadline`, not seconds later), and an answer never
/// calls itself complete while a node it knew has not answered: after a
/// Redis restart, nodes re-register one by one, and until one has, it is
/// still expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_calls_keep_the_deadline_and_never_call_a_short_answer_complete() {
    let mut redis = Redis::start().await;
    let deadline = ["--admin-deadline", "1s"];
    let (a, b) = tokio::join!(node(&redis, "a", &deadline), node(&redis, "b", &deadline));
    let _a1 = WsClient::connect(&a.url()).await;
    let _b1 = WsClient::connect(&b.url()).await;
    assert_eq!(list(&a, 100, String::new()).await.total, 2);

    // Redis frozen: nothing answers, not even presence.
    redis.signal("STOP").await;
    let started = std::time::Instant::now();
    let stats = a
        .admin()
        .await
        .get_stats(pb::GetStatsRequest {})
        .await
        .expect("a partial answer, not DEADLINE_EXCEEDED")
        .into_inner();
    let took = started.elapsed();
    redis.signal("CONT").await;
    assert!(stats.partial, "{stats:?}");
    assert!(
        took < Duration::from_secs(1),
        "the call took {took:?} with --admin-deadline 1s"
    );

    eventually(WAIT, "B answers again", || async {
        !list(&a, 100, String::new()).await.partial
    })
    .await;
    redis.kill().await;
    assert!(redis.restart().await, "redis restarts");
    // Until B has re-registered, an answer without B is partial.
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < settle {
        let page = list(&a, 100, String::new()).await;
        assert!(
            page.partial || page.nodes == ["a", "b"],
            "a short answer called complete: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(WAIT, "both nodes answer after the restart", || async {
        let page = list(&a, 100, String::new()).await;
        !page.partial && page.total == 2
    })
    .await;
}

/// Two processes with one node id that both started while Redis was away
/// (so neither could see the other at start): once Redis is back, the
/// younger turns not ready and serves nothing; the older goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_processes_with_one_node_id_the_younger_refuses_to_serve() {
    let mut redis = Redis::on(Redis::free_port(), None);
    let url = redis.url();
    let args = ["--backplane", &url, "--node-id", "a", "--backplane-heartbeat", "250ms"];
    let older = Binary::spawn(&args).await;
    older.log_line("cannot reach Redis").await;
    let younger = Binary::spawn(&args).await;
    younger.log_line("cannot reach Redis").await;
    assert!(redis.restart().await);
    younger.log_line("this one turns not ready and serves nothing").await;
    let (status, body) = common::get(younger.metrics, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("another process runs as this node id"), "{body}");
    assert!(
        metric(
            younger.metrics,
            "wshub_backplane_errors_total{kind=\"node_id_conflict\"}"
        )
        .await
            >= 1.0
    );
    // The older keeps serving, and is the one that answers for "a".
    assert_eq!(common::get(older.metrics, "/readyz").await.0, 200);
    let mut client = WsClient::connect(&older.url()).await;
    client.ping().await;
}

/// A backplane URL without the password Redis wants: counted as an
/// authentication error, and retried with backoff, never in a spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_redis_password_is_reported_and_retried_with_backoff() {
    let redis = Redis::start_with(Some("secret")).await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let node = Binary::spawn(&["--backplane", &url, "--node-id", "a", "--backplane-heartbeat", "250ms"]).await;
    eventually(WAIT, "an auth error counted", || async {
        metric(node.metrics, "wshub_backplane_errors_total{kind=\"auth\"}").await >= 1.0
    })
    .await;
    let connections = || async {
        let info = redis.cli(&["INFO", "stats"]).await.unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("total_connections_received")
    };
    let before = connections().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let opened = connections().await - before;
    // Backing off (100 ms doubling to 5 s), a few connections; spinning
    // opened thousands a second.
    assert!(opened < 40, "{opened} connections to Redis in 2 s");
    assert_eq!(metric(node.metrics, "wshub_backplane_up").await, 0.0);
}

/// Redis dropping a node's subscription (`CLIENT KILL`, or its pub/sub
/// output-buffer limit) loses what other nodes publish until the node is
/// back: each loss is counted, so an alert can fire, and the node
/// resubscribes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_redis_drops_is_counted_and_renewed() {
    let redis = Redis::start().await;
    let a = node(&redis, "a", &[]).await;
    let mut a1 = WsClient::connect(&a.url()).await;
    a1.subscribe("t").await;
    eventually(WAIT, "A subscribed to t", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    let lost = "wshub_backplane_errors_total{kind=\"subscription_lost\"}";
    assert_eq!(metric(a.metrics, lost).await, 0.0);
    redis
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await
        .expect("CLIENT KILL");
    a.log_line("Redis subscription lost").await;
    eventually(WAIT, "the loss counted", || async {
        metric(a.metrics, lost).await >= 1.0
    })
    .await;
    eventually(WAIT, "A subscribed to t again", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    let b = node(&redis, "b", &[]).await;
    let mut b1 = WsClient::connect(&b.url()).await;
    publish_numbered(&mut b1, Some("t"), 3).await;
    expect_numbered(&mut a1, Some("t"), &b1.id, 3).await;
}

/// A sender on `from` and a reader of `topic` on `to`, once a message
/// goes from one to the other.
async fn linked(redis: &Redis, from: &Binary, to: &Binary, topic: &str) -> (WsClient, WsClient) {
    let mut sender = WsClient::connect(&from.url()).await;
    let mut reader = WsClient::connect(&to.url()).await;
    reader.subscribe(topic).await;
    eventually(WAIT, "the reader's node subscribed in Redis", || async {
        redis.topic_subscribers(topic).await == 1
    })
    .await;
    first_through(&mut sender, &mut reader, topic).await;
    (sender, reader)
}

/// Publishes markers on `topic` from `sender` until one reaches `reader`;
/// returns the first message `reader` got, once the last marker sent has
/// arrived too (so nothing of this is still on its way).
async fn first_through(sender: &mut WsClient, reader: &mut WsClient, topic: &str) -> Value {
    let through = async {
        for marker in 0u64.. {
            let ack = sender
                .request(json!({"type":"publish","topic":topic,"data":{"marker":marker},"id":marker}))
                .await;
            assert_eq!(ack["type"], "ack", "{ack}");
            if let Ok(first) = tokio::time::timeout(Duration::from_millis(200), reader.recv()).await {
                let mut last = first.clone();
                while last["data"]["marker"] != json!(marker) {
                    last = reader.recv().await;
                }
                return first;
            }
        }
        unreachable!()
    };
    tokio::time::timeout(Duration::from_secs(20), through)
        .await
        .expect("the sender's node reaches the reader's")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_into_a_frozen_redis_is_delivered_or_counted_never_both() {
    let redis = Redis::start().await;
    let url = redis.url();
    // Heartbeats far apart: the canary stays out of the way, so what
    // happens to these publishes is the sender's doing alone.
    let args = |id: &'static str| {
        vec![
            "--backplane".to_string(),
            url.clone(),
            "--node-id".into(),
            id.into(),
            "--backplane-heartbeat".into(),
            "20s".into(),
            "--backplane-presence-ttl".into(),
            "60s".into(),
        ]
    };
    let (a, b) = (args("a"), args("b"));
    let (a, b): (Vec<&str>, Vec<&str>) = (
        a.iter().map(String::as_str).collect(),
        b.iter().map(String::as_str).collect(),
    );
    let (a, b) = tokio::join!(Binary::spawn(&a), Binary::spawn(&b));
    let (mut sender, mut reader) = linked(&redis, &a, &b, "t").await;

    redis.signal("STOP").await;
    publish_numbered(&mut sender, Some("t"), 3).await;
    let dropped = "wshub_backplane_dropped_total{reason=\"outbound\"}";
    let before = metric(a.metrics, dropped).await;
    eventually(Duration::from_secs(15), "A counted the three as dropped", || async {
        metric(a.metrics, dropped).await >= before + 3.0
    })
    .await;
    redis.signal("CONT").await;

    // Whatever B sees first after the freeze is a marker, never one of the
    // three A counted as dropped.
    let first = first_through(&mut sender, &mut reader, "t").await;
    assert!(
        first["data"].get("marker").is_some(),
        "a publish counted as dropped was delivered too: {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_slow_link_a_burst_travels_in_several_batches_at_once_in_order() {
    let redis = Redis::start().await;
    // Everything Redis answers A comes 500 ms late: one batch at a time,
    // A could send 512 messages per 500 ms, and its queue of 1024 would
    // overflow under this burst.
    let proxy = StallProxy::slow(redis.port, Duration::from_millis(500)).await;
    let slow_url = format!("redis://127.0.0.1:{}", proxy.port);
    let a = Binary::spawn(&[
        "--backplane",
        &slow_url,
        "--node-id",
        "a",
        "--backplane-heartbeat",
        "1s",
        "--backplane-queue-len",
        "1024",
        // Room for the acks of the whole burst, read only after it.
        "--send-queue-len",
        "4096",
    ])
    .await;
    // The burst reaches B in batches of 512, faster than a test reads.
    let b = node(&redis, "b", &["--send-queue-len", "4096"]).await;
    let (mut sender, mut reader) = linked(&redis, &a, &b, "t").await;

    let dropped = "wshub_backplane_dropped_total{reason=\"outbound\"}";
    let before = metric(a.metrics, dropped).await;
    let from = sender.id.clone();
    tokio::join!(
        publish_numbered(&mut sender, Some("t"), 3000),
        expect_numbered(&mut reader, Some("t"), &from, 3000)
    );
    assert_eq!(metric(a.metrics, dropped).await, before, "none dropped");
}

//! Presence on one node: who is on a topic, how many, and join/leave
//! events for those who ask, with a grace that hides a user's reconnect.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestServer, WsClient};
use serde_json::json;
use wshub::admin::pb;

const SECRET: &str = "presence-test-secret";

fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &key,
    )
    .unwrap()
}

async fn server(grace: Duration) -> TestServer {
    TestServer::with(|c| {
        c.auth.jwt_secret = Some(SECRET.into());
        c.history.presence_topics = wshub::types::TopicPatterns::parse("room*").unwrap();
        c.history.presence_max = 2;
        c.history.presence_grace = grace;
    })
    .await
}

async fn connect(server: &TestServer, user: &str) -> WsClient {
    WsClient::connect(&format!("{}?token={}", server.url(), token(user))).await
}

async fn subscribe(client: &mut WsClient, topic: &str, join_leave: bool) {
    let ack = client
        .request(json!({"type":"subscribe","topic":topic,"id":"s","join_leave":join_leave}))
        .await;
    assert_eq!(ack, json!({"type":"ack","id":"s"}));
}

#[tokio::test]
async fn presence_lists_and_counts_a_topics_clients() {
    let server = server(Duration::from_secs(5)).await;
    let mut alice = connect(&server, "alice").await;
    let mut alice2 = connect(&server, "alice").await;
    let mut bob = connect(&server, "bob").await;
    for c in [&mut alice, &mut alice2, &mut bob] {
        subscribe(c, "room1", false).await;
    }
    let stats = bob
        .request(json!({"type":"presence_stats","topic":"room1","id":1}))
        .await;
    assert_eq!(
        stats,
        json!({"type":"presence_stats","id":1,"topic":"room1","clients":3,"users":2})
    );

    // At most --presence-max (2) listed; `total` says how many there are.
    let answer = bob.request(json!({"type":"presence","topic":"room1","id":2})).await;
    assert_eq!(
        (&answer["type"], &answer["id"], &answer["total"]),
        (&json!("presence"), &json!(2), &json!(3))
    );
    let listed = answer["clients"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{answer}");
    let ids = [&alice.id, &alice2.id, &bob.id];
    for entry in listed {
        let id = entry["client_id"].as_str().unwrap();
        assert!(ids.iter().any(|i| *i == id), "{entry}");
        let user = if id == bob.id { "bob" } else { "alice" };
        assert_eq!(entry["user"], user, "{entry}");
    }

    // Refused: not subscribed; a topic without presence; bad requests.
    let mut carol = connect(&server, "carol").await;
    let refused = carol.request(json!({"type":"presence","topic":"room1","id":3})).await;
    assert_eq!(
        (&refused["code"], &refused["id"]),
        (&json!("forbidden"), &json!(3)),
        "{refused}"
    );
    subscribe(&mut carol, "lobby", false).await;
    let refused = carol
        .request(json!({"type":"presence_stats","topic":"lobby","id":4}))
        .await;
    assert_eq!(refused["code"], "presence_disabled", "{refused}");
    let refused = carol.request(json!({"type":"presence","id":5})).await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
    let refused = carol
        .request(json!({"type":"subscribe","topic":"room1","id":6,"join_leave":"yes"}))
        .await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
}

#[tokio::test]
async fn joins_and_leaves_reach_those_who_ask_and_a_quick_return_is_not_a_leave() {
    let server = server(Duration::from_millis(1500)).await;
    let mut watcher = connect(&server, "watcher").await;
    let mut quiet = connect(&server, "quiet").await;
    subscribe(&mut watcher, "room1", true).await;
    subscribe(&mut quiet, "room1", false).await;
    // The watcher hears of quiet's join; quiet (which did not ask) hears nothing.
    let join = watcher.recv().await;
    assert_eq!(
        join,
        json!({"type":"join","topic":"room1","client_id":quiet.id,"user":"quiet"})
    );

    // Bob leaves and comes back within the grace (a reconnect): nothing.
    let mut events = server.watch(&[pb::EventKind::Disconnected]).await;
    let mut bob = connect(&server, "bob").await;
    subscribe(&mut bob, "room1", false).await;
    assert_eq!(watcher.recv().await["type"], "join");
    let first_bob = bob.id.clone();
    drop(bob);
    common::event_for(&mut events, pb::EventKind::Disconnected, &first_bob).await;
    let mut bob = connect(&server, "bob").await;
    subscribe(&mut bob, "room1", false).await;

    // Quiet unsubscribes for good: its leave comes after the grace, and
    // it is the next thing the watcher sees (bob's move announced nothing).
    let ack = quiet
        .request(json!({"type":"unsubscribe","topic":"room1","id":"u"}))
        .await;
    assert_eq!(ack["type"], "ack");
    let leave = watcher.recv().await;
    assert_eq!(
        leave,
        json!({"type":"leave","topic":"room1","client_id":quiet.id,"user":"quiet"})
    );

    // Bob goes for good too.
    let bob_id = bob.id.clone();
    drop(bob);
    let leave = watcher.recv().await;
    assert_eq!(
        leave,
        json!({"type":"leave","topic":"room1","client_id":bob_id,"user":"bob"})
    );
    // And the watcher's own subscribe was never announced to itself.
    watcher.ping().await;
}

/// A node of a cluster over `redis` with presence on `room*`, short
/// heartbeats and a 2 s presence TTL.
async fn node(redis: &common::redis::Redis, id: &str) -> common::Binary {
    let url = redis.url();
    let args = [
        "--backplane",
        &url,
        "--node-id",
        id,
        "--backplane-heartbeat",
        "250ms",
        "--backplane-presence-ttl",
        "2s",
        "--jwt-secret",
        SECRET,
        "--presence-topics",
        "room*",
        "--presence-grace",
        "1s",
    ];
    let node = common::Binary::spawn(&args).await;
    node.log_line("backplane up").await;
    node
}

async fn connect_to(node: &common::Binary, user: &str) -> WsClient {
    WsClient::connect(&format!("{}?token={}", node.url(), token(user))).await
}

#[tokio::test]
async fn presence_spans_the_cluster_and_a_killed_nodes_clients_leave_within_its_ttl() {
    use common::redis::Redis;
    let redis = Redis::start().await;
    let (a, b, mut c) = tokio::join!(node(&redis, "a"), node(&redis, "b"), node(&redis, "c"));
    let mut alice = connect_to(&a, "alice").await;
    let mut bob = connect_to(&b, "bob").await;
    let mut alice2 = connect_to(&c, "alice").await;
    let mut carol = connect_to(&c, "carol").await;
    for client in [&mut alice, &mut bob, &mut alice2, &mut carol] {
        subscribe(client, "room1", false).await;
    }
    let stats = |clients: u64, users: u64| json!({"type":"presence_stats","id":1,"topic":"room1","clients":clients,"users":users});
    // Each node writes its roster within a heartbeat.
    stats_become(&mut bob, stats(4, 3)).await;
    let list = alice.request(json!({"type":"presence","topic":"room1","id":2})).await;
    assert_eq!(list["total"], 4, "{list}");
    // `--presence-max` is 1000 here: every client is listed, with its node.
    let mut listed: Vec<String> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {}", c["client_id"].as_str().unwrap(), c["user"].as_str().unwrap()))
        .collect();
    listed.sort();
    let mut expected = vec![
        format!("{} alice", alice.id),
        format!("{} bob", bob.id),
        format!("{} alice", alice2.id),
        format!("{} carol", carol.id),
    ];
    expected.sort();
    assert_eq!(listed, expected);

    // C dies without a word: its clients leave the answers once its
    // presence is older than the TTL.
    c.child.kill().await.unwrap();
    stats_become(&mut bob, stats(2, 2)).await;
}

/// Asks `presence_stats` every 50 ms until it answers `want` (another
/// node's roster arrives with its heartbeat: there is no event to await).
async fn stats_become(client: &mut WsClient, want: serde_json::Value) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let answer = client
            .request(json!({"type":"presence_stats","topic":"room1","id":1}))
            .await;
        if answer == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {answer}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn joins_and_leaves_cross_nodes_and_a_move_between_nodes_within_the_grace_is_neither() {
    let redis = common::redis::Redis::start().await;
    let (a, b) = tokio::join!(node(&redis, "a"), node(&redis, "b"));
    let mut watcher = connect_to(&a, "watcher").await;
    subscribe(&mut watcher, "room1", true).await;
    let mut bob = connect_to(&b, "bob").await;
    subscribe(&mut bob, "room1", false).await;
    let join = watcher.recv().await;
    assert_eq!(
        (&join["type"], &join["user"]),
        (&json!("join"), &json!("bob")),
        "{join}"
    );
    assert_eq!(join["client_id"], bob.id.as_str(), "another node's client, by its id");
    let mut alice = connect_to(&a, "alice").await;
    subscribe(&mut alice, "room1", false).await;
    let join = watcher.recv().await;
    assert_eq!(
        (&join["type"], &join["user"]),
        (&json!("join"), &json!("alice")),
        "{join}"
    );
    let stats = json!({"type":"presence_stats","id":1,"topic":"room1","clients":3,"users":3});
    stats_become(&mut bob, stats).await;

    // Alice moves from A to B (a drain, a reconnect) within the grace:
    // neither her join on B nor her leave on A is announced.
    drop(alice);
    let mut alice = connect_to(&b, "alice").await;
    subscribe(&mut alice, "room1", false).await;
    // Bob leaves for good: his leave, after the grace, is the next event
    // the watcher sees.
    drop(bob);
    let next = watcher.recv().await;
    assert_eq!(
        (&next["type"], &next["user"]),
        (&json!("leave"), &json!("bob")),
        "{next}"
    );
    let stats = json!({"type":"presence_stats","id":1,"topic":"room1","clients":2,"users":2});
    stats_become(&mut alice, stats).await;
}

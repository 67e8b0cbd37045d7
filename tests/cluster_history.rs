//! History in a cluster, kept in Redis streams: a client recovers on any
//! node, a lost backplane message is filled from the stream, and a lost
//! history is said so, never papered over.

mod common;

use common::history::{message, publish, subscribe};
use common::redis::{eventually, Redis, StallProxy};
use common::{metric, Binary, WsClient, WAIT};
use serde_json::json;
use wshub::admin::pb;

/// A node over `redis` keeping history for topics `t*`.
async fn node(redis: &Redis, id: &str) -> Binary {
    let url = redis.url();
    let args = [
        "--backplane",
        &url,
        "--node-id",
        id,
        "--backplane-heartbeat",
        "250ms",
        "--backplane-presence-ttl",
        "3s",
        "--admin-deadline",
        "2s",
        "--history-size",
        "1000",
        "--history-topics",
        "t*",
    ];
    let node = Binary::spawn(&args).await;
    node.log_line("backplane up").await;
    node
}

#[tokio::test]
async fn a_client_recovers_on_another_node_what_it_missed_while_others_publish() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(node(&redis, "a"), node(&redis, "b"));
    let mut reader = WsClient::connect(&a.url()).await;
    let ack = subscribe(&mut reader, "t", None).await;
    assert_eq!(ack["offset"], 0, "{ack}");
    let epoch = ack["epoch"].as_str().expect("an epoch before any publish").to_string();
    // The publisher's own node has a subscriber too: it gets its node's
    // publishes numbered like everyone else.
    let mut publisher = WsClient::connect(&b.url()).await;
    let mut neighbour = WsClient::connect(&b.url()).await;
    let ack = subscribe(&mut neighbour, "t", None).await;
    assert_eq!(ack["epoch"], epoch.as_str(), "one history, whichever node answers");
    eventually(WAIT, "both nodes listen to t", || async {
        redis.topic_subscribers("t").await == 2
    })
    .await;

    assert_eq!(publish(&mut publisher, "t", 0, 3).await, [1, 2, 3]);
    for expected in 1..=3 {
        assert_eq!(message(&mut reader).await, (expected, expected - 1));
        assert_eq!(message(&mut neighbour).await, (expected, expected - 1));
    }
    drop(reader);
    assert_eq!(publish(&mut publisher, "t", 3, 5).await, [4, 5, 6, 7, 8]);

    // Back on the other node while someone on the first keeps publishing:
    // the missed ones, then the live ones, in order, none twice.
    let mut other = WsClient::connect(&a.url()).await;
    let more = tokio::spawn(async move {
        publish(&mut other, "t", 8, 50).await;
    });
    let mut back = WsClient::connect(&b.url()).await;
    let ack = subscribe(&mut back, "t", Some(json!({"offset":3,"epoch":epoch}))).await;
    assert_eq!(
        (&ack["recovered"], &ack["epoch"]),
        (&json!(true), &json!(epoch)),
        "{ack}"
    );
    for expected in 4..=58 {
        assert_eq!(message(&mut back).await, (expected, expected - 1));
    }
    more.await.unwrap();

    // The admin plane: a broadcast is numbered like any publish, and the
    // stream answers History on any node.
    let mut admin = a.admin().await;
    let sent = admin
        .broadcast(pb::BroadcastRequest {
            topic: "t".into(),
            data: r#"{"n":58}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.offset, 59);
    assert_eq!(message(&mut back).await, (59, 58));
    let refused = admin
        .broadcast(pb::BroadcastRequest {
            topic: "t".into(),
            data: "1".into(),
            exclude_client_ids: vec![back.id.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let page = b
        .admin()
        .await
        .history(pb::HistoryRequest {
            topic: "t".into(),
            since: 55,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!((offsets, page.offset, page.epoch), (vec![56, 57, 58, 59], 59, epoch));
    // B's publishes went in batches through the send script, each timed.
    assert!(metric(b.metrics, "wshub_backplane_send_seconds_count").await >= 8.0);
    assert_eq!(
        metric(b.metrics, r#"wshub_history_recoveries_total{result="recovered"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn a_message_lost_between_redis_and_a_node_is_filled_from_the_stream() {
    let redis = Redis::start().await;
    let proxy = StallProxy::start(redis.port).await;
    let a = node(&Redis::on(proxy.port, None), "a").await;
    let mut reader = WsClient::connect(&a.url()).await;
    subscribe(&mut reader, "t", None).await;
    let mut publisher = WsClient::connect(&a.url()).await;
    eventually(WAIT, "a listens to t", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    assert_eq!(publish(&mut publisher, "t", 0, 1).await, [1]);
    assert_eq!(message(&mut reader).await, (1, 0));

    // Offset 2 is numbered and kept, but its pub/sub message is lost
    // between Redis and the node: 3 arrives first.
    proxy.lose_next_message_with("lose-me");
    let ack = publisher
        .request(json!({"type":"publish","topic":"t","data":{"n":99,"tag":"lose-me"},"id":"lost"}))
        .await;
    assert_eq!(ack["offset"], 2, "{ack}");
    assert_eq!(publish(&mut publisher, "t", 2, 1).await, [3]);
    assert!(proxy.lost(), "the proxy lost offset 2's pub/sub message");
    assert_eq!(message(&mut reader).await, (2, 99), "filled from the stream, in order");
    assert_eq!(message(&mut reader).await, (3, 2));
    assert_eq!(
        metric(a.metrics, r#"wshub_history_gaps_total{result="filled"}"#).await,
        1.0
    );

    // Offset 4 is numbered but not kept (as when the stream was trimmed or
    // lost): the gap cannot be filled, so the subscribers here are told to
    // come back with `since`.
    let skipped = redis.cli(&["HINCRBY", "wshub:meta:{t}", "offset", "1"]).await;
    assert_eq!(skipped.as_deref(), Some("4"));
    assert_eq!(publish(&mut publisher, "t", 4, 1).await, [5]);
    assert_eq!(reader.closed().await.0, 4010);
    assert_eq!(
        metric(a.metrics, r#"wshub_history_gaps_total{result="failed"}"#).await,
        1.0
    );
    eventually(WAIT, "the closed client counted as history_lost", || async {
        metric(a.metrics, r#"wshub_disconnects_total{reason="history_lost"}"#).await == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_loses_the_history_gives_a_new_epoch_and_recovery_says_so() {
    let mut redis = Redis::start().await;
    let a = node(&redis, "a").await;
    let mut reader = WsClient::connect(&a.url()).await;
    let epoch = subscribe(&mut reader, "t", None).await["epoch"].clone();
    let mut publisher = WsClient::connect(&a.url()).await;
    eventually(WAIT, "a listens to t", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    assert_eq!(publish(&mut publisher, "t", 0, 2).await, [1, 2]);
    assert_eq!(message(&mut reader).await, (1, 0));
    assert_eq!(message(&mut reader).await, (2, 1));

    // Redis restarts without persistence: the streams are gone.
    redis.kill().await;
    // Meanwhile a publish that cannot be numbered is refused, not lost quietly.
    let mut refused = None;
    for _ in 0..100 {
        let answer = publisher
            .request(json!({"type":"publish","topic":"t","data":{"n":0},"id":"down"}))
            .await;
        if answer["type"] == "error" {
            refused = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let refused = refused.expect("a publish to a history topic while Redis is down is answered with an error");
    assert_eq!(
        (&refused["code"], &refused["id"]),
        (&json!("unavailable"), &json!("down")),
        "{refused}"
    );
    assert!(redis.restart().await);

    // Once the node is back, a publish begins a new history; the
    // subscriber that was here cannot have it complete: closed with 4010.
    eventually(WAIT, "the node listens to t again", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    let mut offset = None;
    for _ in 0..100 {
        let answer = publisher
            .request(json!({"type":"publish","topic":"t","data":{"n":9},"id":"up"}))
            .await;
        if answer["type"] == "ack" {
            offset = Some(answer["offset"].clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let offset = offset.expect("publishes are numbered again once Redis is back");
    assert_eq!(reader.closed().await.0, 4010);

    // Coming back with the old position: not recovered, and the new epoch.
    let mut back = WsClient::connect(&a.url()).await;
    let ack = subscribe(&mut back, "t", Some(json!({"offset":2,"epoch":epoch}))).await;
    assert_eq!((&ack["recovered"], &ack["offset"]), (&json!(false), &offset), "{ack}");
    assert_ne!(ack["epoch"], epoch);
    assert_eq!(
        metric(
            a.metrics,
            r#"wshub_history_recoveries_total{result="not_recovered",cause="epoch"}"#
        )
        .await,
        1.0
    );
}

/// A subscriber that follows `topic` until it has seen offset `last`,
/// moving to `elsewhere` with `since` whenever its node closes it; answers
/// every offset it saw, in the order it saw them.
async fn follow(mut client: WsClient, epoch: String, elsewhere: String, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        match client.next_or_close().await {
            Ok(m) if m["type"] == "message" => seen.push(m["offset"].as_u64().expect("offset")),
            Ok(other) => panic!("unexpected frame {other}"),
            Err(code) => {
                assert_eq!(code, 1012, "closed by the drain");
                client = WsClient::connect(&elsewhere).await;
                let since = json!({"offset": seen.last().copied().unwrap_or(0), "epoch": epoch});
                let ack = subscribe(&mut client, "t", Some(since)).await;
                assert_eq!(ack["recovered"], true, "{ack}");
            }
        }
    }
    seen
}

#[tokio::test]
async fn a_node_drained_while_a_client_publishes_loses_nothing_for_subscribers_that_move() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(node(&redis, "a"), node(&redis, "b"));
    let total = 300;
    let mut followers = Vec::new();
    for _ in 0..20 {
        let mut client = WsClient::connect(&a.url()).await;
        let epoch = subscribe(&mut client, "t", None).await["epoch"]
            .as_str()
            .unwrap()
            .to_string();
        followers.push(tokio::spawn(follow(client, epoch, b.url(), total)));
    }
    eventually(WAIT, "a listens to t", || async {
        redis.topic_subscribers("t").await == 1
    })
    .await;
    let mut publisher = WsClient::connect(&b.url()).await;
    let publishing = tokio::spawn(async move {
        for n in 0..total {
            publish(&mut publisher, "t", n, 1).await;
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    });
    // A's clients go at 20 a second while the publisher goes on.
    let mut drain = a
        .admin()
        .await
        .drain(pb::DrainRequest {
            rate_per_second: 20,
            deadline: None,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(progress) = drain.message().await.unwrap() {
        if progress.done {
            assert_eq!(progress.remaining, 0);
            break;
        }
    }
    publishing.await.unwrap();
    for follower in followers {
        let seen = follower.await.unwrap();
        assert_eq!(seen, (1..=total).collect::<Vec<u64>>(), "every message once, in order");
    }
}

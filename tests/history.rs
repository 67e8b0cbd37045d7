//! Per-topic history on one node: offsets, epochs, and a client that comes
//! back gets exactly what it missed, all of it or nothing.

mod common;

use std::time::Duration;

use common::history::{message, publish, subscribe};
use common::redis::eventually;
use common::{metric, Binary, TestServer, WsClient};
use serde_json::{json, Value};

async fn server(size: usize, configure: impl FnOnce(&mut wshub::Config)) -> TestServer {
    TestServer::with(|c| {
        c.history.history_size = size;
        c.history.history_topics = wshub::types::TopicPatterns::parse("t*").unwrap();
        configure(c);
    })
    .await
}

#[tokio::test]
async fn a_client_that_comes_back_gets_exactly_what_it_missed_while_others_publish() {
    let server = server(1000, |_| {}).await;
    let mut publisher = server.client().await;
    let mut reader = server.client().await;
    let ack = subscribe(&mut reader, "t", None).await;
    assert_eq!(ack["offset"], 0, "a topic with no messages yet: {ack}");
    let epoch = ack["epoch"].as_str().expect("epoch").to_string();
    assert!(ack.get("recovered").is_none(), "not asked: {ack}");

    assert_eq!(publish(&mut publisher, "t", 0, 3).await, [1, 2, 3]);
    for expected in 1..=3 {
        assert_eq!(message(&mut reader).await, (expected, expected - 1));
    }
    drop(reader);
    assert_eq!(publish(&mut publisher, "t", 3, 5).await, [4, 5, 6, 7, 8]);

    // Back, while the publisher goes on: the missed ones first, in order,
    // then the live ones, none lost, none twice.
    let more = tokio::spawn(async move {
        publish(&mut publisher, "t", 8, 50).await;
        publisher
    });
    let mut back = server.client().await;
    let ack = subscribe(&mut back, "t", Some(json!({"offset":3,"epoch":epoch}))).await;
    assert_eq!(
        (&ack["recovered"], &ack["epoch"]),
        (&json!(true), &json!(epoch)),
        "{ack}"
    );
    let latest = ack["offset"].as_u64().unwrap();
    assert!((8..=58).contains(&latest), "{ack}");
    for expected in 4..=58 {
        assert_eq!(message(&mut back).await, (expected, expected - 1));
    }
    more.await.unwrap();
    // (The tests of this file share one process, hence its metrics.)
    assert!(metric(server.metrics, "wshub_history_recoveries_total{result=\"recovered\"}").await >= 1.0);
    assert!(metric(server.metrics, "wshub_history_replayed_total").await >= 5.0);
}

#[tokio::test]
async fn a_recovery_replays_all_that_was_missed_or_nothing() {
    let server = server(5, |c| {
        c.history.recovery_max = 3;
        c.history.history_ttl = Duration::from_millis(500);
    })
    .await;
    let mut publisher = server.client().await;
    let mut probe = server.client().await;
    let epoch = subscribe(&mut probe, "t", None).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&mut publisher, "t", 0, 10).await;

    // Each case: subscribe with `since`, then a live marker; with
    // `recovered: false` the marker is the next frame (nothing replayed).
    let cases = [
        (json!({"offset":9,"epoch":epoch}), true, ""),
        (json!({"offset":2,"epoch":epoch}), false, "too_many"),
        (json!({"offset":6,"epoch":epoch}), false, "too_many"),
        (json!({"offset":9,"epoch":"other"}), false, "epoch"),
        (json!({"offset":1000,"epoch":epoch}), false, "ahead"),
    ];
    let mut marker = 100;
    for (since, recovered, cause) in cases {
        let mut client = server.client().await;
        let ack = subscribe(&mut client, "t", Some(since.clone())).await;
        assert_eq!(ack["recovered"], json!(recovered), "{since}: {ack}");
        assert_eq!(ack["offset"], 10 + marker - 100, "{since}: {ack}");
        if recovered {
            assert_eq!(message(&mut client).await.0, 10);
        } else {
            let series = format!("wshub_history_recoveries_total{{result=\"not_recovered\",cause=\"{cause}\"}}");
            assert!(metric(server.metrics, &series).await >= 1.0, "{series}");
        }
        publish(&mut publisher, "t", marker, 1).await;
        assert_eq!(
            message(&mut client).await.1,
            marker,
            "{since}: nothing replayed before the live message"
        );
        marker += 1;
    }

    // Past the TTL the history is gone: trimmed, not recovered.
    let offset = 10 + marker - 100;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut late = server.client().await;
    let ack = subscribe(&mut late, "t", Some(json!({"offset":offset - 1,"epoch":epoch}))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    // The history series follow the hub's once-a-second sample.
    eventually(common::WAIT, "trims counted", || async {
        metric(server.metrics, "wshub_history_trimmed_total{reason=\"ttl\"}").await >= 1.0
            && metric(server.metrics, "wshub_history_trimmed_total{reason=\"size\"}").await >= 5.0
    })
    .await;
}

#[tokio::test]
async fn a_restart_begins_a_new_epoch_so_old_offsets_recover_nothing() {
    let first = server(100, |_| {}).await;
    let mut client = first.client().await;
    let epoch = subscribe(&mut client, "t", None).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    let mut publisher = first.client().await;
    publish(&mut publisher, "t", 0, 2).await;
    first.stop().await;

    let second = server(100, |_| {}).await;
    let mut client = second.client().await;
    let ack = subscribe(&mut client, "t", Some(json!({"offset":1,"epoch":epoch}))).await;
    assert_eq!(ack["recovered"], false, "{ack}");
    assert_ne!(ack["epoch"], json!(epoch), "a new process, a new epoch");
    assert_eq!(ack["offset"], 0);
}

#[tokio::test]
async fn topics_without_history_and_old_clients_see_no_change() {
    let server = server(100, |_| {}).await;
    let mut client = server.client().await;
    // Not a history topic (`t*` only): plain acks, no offsets.
    let ack = subscribe(&mut client, "other", None).await;
    assert_eq!(ack, json!({"type":"ack","id":"s"}));
    // Its own message comes first (the fan-out), then the ack.
    let m = client
        .request(json!({"type":"publish","topic":"other","data":1,"id":1}))
        .await;
    assert_eq!(m, json!({"type":"message","topic":"other","from":client.id,"data":1}));
    assert_eq!(client.recv().await, json!({"type":"ack","id":1}));
    // Asking for history where there is none: told so, nothing replayed.
    let ack = subscribe(&mut client, "other", Some(json!({"offset":1,"epoch":"e"}))).await;
    assert_eq!(ack, json!({"type":"ack","id":"s","recovered":false}));
    assert!(
        metric(
            server.metrics,
            "wshub_history_recoveries_total{result=\"not_recovered\",cause=\"no_history\"}"
        )
        .await
            >= 1.0
    );

    // A malformed `since` is a bad request.
    for since in [
        json!(5),
        json!({"offset":-1,"epoch":"e"}),
        json!({"offset":1}),
        json!({"offset":1,"epoch":"e".repeat(65)}),
    ] {
        let answer = client
            .request(json!({"type":"subscribe","topic":"t","id":"x","since":since}))
            .await;
        assert_eq!(
            (&answer["type"], &answer["code"]),
            (&json!("error"), &json!("bad_request")),
            "{since}: {answer}"
        );
    }

    // A node without history (its own process, so its own metrics): no
    // offsets anywhere, no history series.
    let plain = Binary::spawn(&[]).await;
    let mut client = WsClient::connect(&plain.url()).await;
    assert_eq!(subscribe(&mut client, "t", None).await, json!({"type":"ack","id":"s"}));
    let m = client
        .request(json!({"type":"publish","topic":"t","data":1,"id":1}))
        .await;
    assert_eq!(m, json!({"type":"message","topic":"t","from":client.id,"data":1}));
    assert_eq!(client.recv().await, json!({"type":"ack","id":1}));
    let (_, body) = common::get(plain.metrics, "/metrics").await;
    assert!(
        !body.contains("wshub_history_"),
        "no history series on a node without history"
    );
}

#[tokio::test]
async fn operators_read_a_topics_history_and_broadcasts_get_offsets() {
    let server = server(5, |_| {}).await;
    let mut publisher = server.client().await;
    let mut reader = server.client().await;
    subscribe(&mut reader, "t", None).await;
    publish(&mut publisher, "t", 0, 7).await;
    let mut admin = server.admin().await;

    // An admin broadcast to a history topic gets the next offset, and
    // clients see it.
    let sent = admin
        .broadcast(wshub::admin::pb::BroadcastRequest {
            topic: "t".into(),
            data: r#"{"n":7}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((sent.offset, sent.recipients), (8, 1));
    for expected in 1..=8 {
        assert_eq!(message(&mut reader).await, (expected, expected - 1));
    }

    let history = |since: u64, limit: u32| wshub::admin::pb::HistoryRequest {
        topic: "t".into(),
        since,
        limit,
    };
    let page = admin.history(history(0, 0)).await.unwrap().into_inner();
    let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!((page.offset, offsets, page.trimmed), (8, vec![4, 5, 6, 7, 8], true));
    let last: Value = serde_json::from_str(&page.messages[4].frame).unwrap();
    assert_eq!(
        last,
        json!({"type":"message","topic":"t","from":"admin","data":{"n":7},"offset":8})
    );
    let page = admin.history(history(5, 2)).await.unwrap().into_inner();
    let offsets: Vec<u64> = page.messages.iter().map(|m| m.offset).collect();
    assert_eq!((offsets, page.trimmed), (vec![6, 7], false));

    let refused = |request| {
        let mut admin = admin.clone();
        async move { admin.history(request).await.unwrap_err().code() }
    };
    assert_eq!(refused(history(0, 1001)).await, tonic::Code::InvalidArgument);
    let mut other = history(0, 0);
    other.topic = "other".into();
    assert_eq!(refused(other).await, tonic::Code::NotFound, "no history on `other`");
    let mut bad = history(0, 0);
    bad.topic = "a b".into();
    assert_eq!(refused(bad).await, tonic::Code::InvalidArgument);

    let stats = server.stats().await;
    assert_eq!((stats.history_topics, stats.history_messages), (1, 5));
    assert!(stats.history_bytes > 5 * 128, "{}", stats.history_bytes);

    // The same through wshubctl.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshubctl"))
        .args([
            "--addr",
            &server.admin.to_string(),
            "--json",
            "history",
            "t",
            "--since",
            "6",
        ])
        .output();
    let out = tokio::time::timeout(common::WAIT, out)
        .await
        .expect("wshubctl in time")
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["offset"], 8);
    assert_eq!(printed["messages"][0]["offset"], 7);
    assert_eq!(printed["messages"][1]["frame"]["from"], "admin");
}

#[tokio::test]
async fn a_client_gets_one_replay_at_a_time() {
    let server = server(200, |_| {}).await;
    let mut publisher = server.client().await;
    let mut probe = server.client().await;
    let epoch = subscribe(&mut probe, "t", None).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    // 6 MB of history: more than any socket buffers between the server
    // and a client that does not read.
    let big = "x".repeat(60_000);
    for i in 0..100 {
        let ack = publisher
            .request(json!({"type":"publish","topic":"t","data":big,"id":i}))
            .await;
        assert_eq!(ack["offset"], i + 1);
    }
    let busy = "wshub_history_recoveries_total{result=\"not_recovered\",cause=\"busy\"}";
    let before = metric(server.metrics, busy).await;
    let (mut stalled, _) = WsClient::stalled(server.ws, "other").await;
    let since = json!({"type":"subscribe","topic":"t","since":{"offset":0,"epoch":epoch}});
    stalled.send(since.clone()).await;
    stalled.send(since).await;
    // The second comes while the first replay is still queued: refused,
    // so what one client holds past its limits stays one replay.
    eventually(common::WAIT, "the second recovery refused as busy", || async {
        metric(server.metrics, busy).await >= before + 1.0
    })
    .await;
}

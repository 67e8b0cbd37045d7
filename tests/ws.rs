//! The data plane end to end: the real server, real WebSocket clients.

mod common;

use common::{TestServer, WsClient};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wshub::admin::pb;

#[tokio::test]
async fn welcome_frame_comes_first() {
    let server = TestServer::spawn().await;
    let client = server.client().await;
    assert!(client.id.starts_with("c-"));
    assert_eq!(client.welcome["ping_interval_ms"], 25000);
    server.stop().await;
}

#[tokio::test]
async fn publish_without_topic_reaches_everyone_including_sender() {
    let server = TestServer::spawn().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.client().await);
    }
    let sender = clients[0].id.clone();
    clients[0]
        .send_text(r#"{"type":"publish","data":{"n":1.50,"s":"x"}}"#)
        .await;
    for client in &mut clients {
        let text = match tokio::time::timeout(common::WAIT, client.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => t.to_string(),
            other => panic!("unexpected {other:?}"),
        };
        // The data's JSON text arrives unchanged (1.50 stays 1.50).
        assert_eq!(
            text,
            format!(r#"{{"type":"message","from":"{sender}","data":{{"n":1.50,"s":"x"}}}}"#)
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn topics_route_to_subscribers_only() {
    let server = TestServer::spawn().await;
    let mut subscriber = server.client().await;
    let mut bystander = server.client().await;
    let mut publisher = server.client().await;
    subscriber.subscribe("news").await;

    let ack = publisher
        .request(json!({"type":"publish","topic":"news","data":"hello","id":1}))
        .await;
    assert_eq!(ack, json!({"type":"ack","id":1}));
    let got = subscriber.recv().await;
    assert_eq!(
        got,
        json!({"type":"message","topic":"news","from":publisher.id,"data":"hello"})
    );
    // The bystander's next frame is its own pong: it got nothing from the topic.
    bystander.ping().await;

    let ack = subscriber
        .request(json!({"type":"unsubscribe","topic":"news","id":"u"}))
        .await;
    assert_eq!(ack, json!({"type":"ack","id":"u"}));
    publisher
        .request(json!({"type":"publish","topic":"news","data":"again","id":2}))
        .await;
    subscriber.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn every_error_code_is_answered_and_the_connection_stays_open() {
    let server = TestServer::with(|c| c.client.max_topics_per_client = 2).await;
    let mut client = server.client().await;
    let cases = [
        ("not json", "bad_request", None),
        ("[1,2]", "bad_request", None),
        (r#"{"topic":"a","id":"m"}"#, "bad_request", Some(json!("m"))),
        (r#"{"type":7,"id":3}"#, "bad_request", Some(json!(3))),
        (r#"{"type":"subscribe","id":4}"#, "bad_request", Some(json!(4))),
        (r#"{"type":"publish","topic":"a"}"#, "bad_request", None),
        (r#"{"type":"dance","id":"d"}"#, "unknown_type", Some(json!("d"))),
        (
            r#"{"type":"subscribe","topic":"no spaces","id":5}"#,
            "invalid_topic",
            Some(json!(5)),
        ),
    ];
    for (request, code, id) in cases {
        client.send_text(request).await;
        let error = client.recv().await;
        assert_eq!(error["type"], "error", "{request}");
        assert_eq!(error["code"], code, "{request}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(error.get("id").cloned(), id, "{request}");
    }
    client.subscribe("a").await;
    client.subscribe("b").await;
    let error = client.request(json!({"type":"subscribe","topic":"c","id":"c"})).await;
    assert_eq!(
        (error["code"].as_str(), &error["id"]),
        (Some("too_many_topics"), &json!("c"))
    );
    client.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn publish_can_be_disabled() {
    let server = TestServer::with(|c| c.client.client_publish = false).await;
    let mut client = server.client().await;
    let error = client.request(json!({"type":"publish","data":1,"id":9})).await;
    assert_eq!(error["code"], "publish_disabled");
    assert_eq!(error["id"], 9);
    client.ping().await;
    server.stop().await;
}

#[tokio::test]
async fn binary_frame_closes_with_1003() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    client.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(client.closed().await.0, 1003);
    server.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let server = TestServer::with(|c| c.client.max_message_bytes = 1024).await;
    let mut client = server.client().await;
    client.send(json!({"type":"publish","data":"x".repeat(2000)})).await;
    assert_eq!(client.closed().await.0, 1009);
    server.stop().await;
}

#[tokio::test]
async fn slow_consumer_is_evicted_while_a_reader_gets_everything() {
    let server = TestServer::with(|c| {
        c.client.send_queue_len = 64;
        c.client.send_queue_bytes = 1024 * 1024;
        c.client.max_message_bytes = 64 * 1024;
    })
    .await;
    let mut events = server.watch(&[pb::EventKind::Evicted]).await;
    let mut stalled = server.client().await;
    stalled.subscribe("t").await;
    let mut reader = server.client().await;
    reader.subscribe("t").await;
    let mut publisher = server.client().await;

    // Far more than the kernel's socket buffers and the stalled queue hold.
    // The publisher waits for each ack, so the reader can keep up.
    let count = 600;
    let payload = "y".repeat(32 * 1024);
    let publish = async {
        for i in 0..count {
            let ack = publisher
                .request(json!({"type":"publish","topic":"t","data":{"i":i,"p":payload},"id":i}))
                .await;
            assert_eq!(ack["type"], "ack");
        }
    };
    let read_all = async {
        for i in 0..count {
            let message = reader.recv().await;
            assert_eq!(message["data"]["i"], i, "the reader gets every message in order");
        }
    };
    tokio::join!(publish, read_all);

    let event = tokio::time::timeout(common::WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.client_id, stalled.id);
    assert_eq!((event.reason.as_str(), event.code), ("slow_consumer", 4008));
    // The stalled client finally reads: what was written, then 4008.
    assert_eq!(stalled.closed().await, (4008, "slow consumer".to_string()));
    assert_eq!(server.stats().await.slow_consumer_evictions, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_connects_and_disconnects_leave_the_registry_empty() {
    let server = TestServer::spawn().await;
    let mut events = server.watch(&[pb::EventKind::Disconnected]).await;
    let cycles = 1000;
    let url = server.url();
    let connect = tokio::spawn(async move {
        for i in 0..cycles {
            let mut client = WsClient::connect(&url).await;
            if i % 2 == 0 {
                client.ws.close(None).await.unwrap();
                while client.ws.next().await.is_some() {}
            } else {
                drop(client); // the TCP connection just goes away
            }
        }
    });
    for _ in 0..cycles {
        let event = tokio::time::timeout(common::WAIT, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.kind, pb::EventKind::Disconnected as i32);
    }
    connect.await.unwrap();
    let stats = server.stats().await;
    assert_eq!((stats.clients, stats.topics), (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_after_flushing() {
    let mut server = TestServer::spawn().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.client().await);
    }
    clients[0]
        .send(json!({"type":"publish","data":"last words","id":1}))
        .await;
    assert_eq!(clients[0].recv().await["data"], "last words");
    server.begin_shutdown();
    for client in &mut clients[1..] {
        // What was queued before the shutdown arrives before the close.
        assert_eq!(client.recv().await["data"], "last words");
        assert_eq!(client.closed().await.0, 1001);
    }
    assert_eq!(clients[0].closed().await.0, 1001);
    server.stop().await;
}

#[tokio::test]
async fn silent_client_times_out_and_a_ponging_client_stays() {
    let server = TestServer::with(|c| {
        c.ping_interval = std::time::Duration::from_millis(50);
        c.idle_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut silent = server.client().await;
    let mut lively = server.client().await;
    // Reading answers pings; several ping intervals pass past the idle timeout.
    let mut pings = 0;
    while pings < 10 {
        if let Message::Ping(_) = lively.ws.next().await.unwrap().unwrap() {
            pings += 1;
        }
    }
    lively.ping().await;
    // The silent client never read, so never ponged: it was closed.
    assert_eq!(silent.closed().await, (1000, "ping timeout".to_string()));
    server.stop().await;
}

#[tokio::test]
async fn plain_http_gets_404_and_426() {
    let server = TestServer::spawn().await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(TestServer::http_status(server.ws, &get("/")).await, 404);
    assert_eq!(TestServer::http_status(server.ws, &get("/metrics")).await, 404);
    assert_eq!(TestServer::http_status(server.ws, &get("/ws")).await, 426);
    assert_eq!(TestServer::http_status(server.ws, "garbage\r\n\r\n").await, 400);
    // The server still serves WebSocket clients afterwards.
    server.client().await.ping().await;
    server.stop().await;
}

//! The data plane end to end: the real server, real WebSocket clients.

mod common;

use common::{TestServer, WsClient};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wshub::admin::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_frame_comes_first() {
    let server = TestServer::spawn().await;
    let client = server.client().await;
    assert!(client.id.starts_with("c-"));
    assert_eq!(client.welcome["ping_interval_ms"], 25000);
    assert_eq!(
        client.welcome["max_message_bytes"], 65536,
        "the limit a client may check before sending"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_can_be_disabled() {
    let server = TestServer::with(|c| c.client.client_publish = wshub::config::ClientPublish::None).await;
    let mut client = server.client().await;
    let error = client.request(json!({"type":"publish","data":1,"id":9})).await;
    assert_eq!(error["code"], "publish_disabled");
    assert_eq!(error["id"], 9);
    client.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frame_closes_with_1003() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    client.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(client.closed().await.0, 1003);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_with_1009() {
    let server = TestServer::with(|c| c.client.max_message_bytes = 1024).await;
    let mut client = server.client().await;
    client.send(json!({"type":"publish","data":"x".repeat(2000)})).await;
    assert_eq!(client.closed().await.0, 1009);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_times_out_and_a_ponging_client_stays() {
    let server = TestServer::with(|c| {
        c.ping_interval = std::time::Duration::from_millis(50);
        c.idle_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    // The silent client reads every frame but answers no ping (a raw
    // socket): it is closed. The lively one reads (answering every ping)
    // all the while, well past the idle timeout, and stays.
    let mut silent = common::raw::RawClient::connect(server.ws).await;
    let mut lively = server.client().await;
    let silent = tokio::spawn(async move { silent.close_frame().await });
    let mut pings = 0;
    while !silent.is_finished() {
        if let Message::Ping(_) = lively.ws.next().await.unwrap().unwrap() {
            pings += 1;
        }
    }
    assert_eq!(silent.await.unwrap(), (1000, "ping timeout".to_string()));
    assert!(pings >= 6, "the lively client read {pings} pings past the idle timeout");
    lively.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_gets_404_and_426() {
    let server = TestServer::with(|c| c.demo = false).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(TestServer::http_status(server.ws, &get("/")).await, 404, "--demo false");
    assert_eq!(TestServer::http_status(server.ws, &get("/metrics")).await, 404);
    assert_eq!(TestServer::http_status(server.ws, &get("/ws")).await, 426);
    assert_eq!(TestServer::http_status(server.ws, "garbage\r\n\r\n").await, 400);
    // The server still serves WebSocket clients afterwards.
    server.client().await.ping().await;
    server.stop().await;
}

/// An upgrade request with the given request line and extra header lines.
fn upgrade(line: &str, headers: &str) -> String {
    format!(
        "{line}\r\n{headers}Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_follows_rfc_6455_section_4_2_1() {
    let server = TestServer::spawn().await;
    let status = |request: String| async move { TestServer::http_status(server.ws, &request).await };
    let host = "Host: x\r\n";
    assert_eq!(status(upgrade("GET /ws HTTP/1.1", host)).await, 101);
    // Absolute-form target (RFC 9112 §3.2.2), and repeated header lines joined.
    let absolute = format!("GET http://{}/ws HTTP/1.1", server.ws);
    assert_eq!(status(upgrade(&absolute, host)).await, 101);
    let split = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(status(split.to_string()).await, 101);
    // Malformed requests: 400.
    assert_eq!(status(upgrade("GET /ws HTTP/1.0", host)).await, 400, "HTTP/1.0");
    assert_eq!(status(upgrade("GET /ws HTTP/1.1", "")).await, 400, "no Host");
    let bad_key = upgrade("GET /ws HTTP/1.1", host).replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
    assert_eq!(status(bad_key).await, 400, "a key that is not 16 bytes of base64");
    // A version we do not speak: 426 naming the one we do.
    let version = upgrade("GET /ws HTTP/1.1", host).replace("Version: 13", "Version: 8");
    assert_eq!(status(version).await, 426);
    // Too many or too large headers: 431.
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(
        status(upgrade("GET /ws HTTP/1.1", &(host.to_string() + &many))).await,
        431
    );
    let large = format!("{host}X-Big: {}\r\n", "y".repeat(9000));
    assert_eq!(status(upgrade("GET /ws HTTP/1.1", &large)).await, 431);
    server.client().await.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_echo_as_sent_and_data_that_strict_decoders_refuse_is_refused() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    // 1e400 is a valid JSON number that no f64 holds: echoed as sent.
    client.send_text(r#"{"type":"ping","id":1e400}"#).await;
    match tokio::time::timeout(common::WAIT, client.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Message::Text(text) => assert_eq!(text.as_str(), r#"{"type":"pong","id":1e400}"#),
        other => panic!("expected the pong, got {other:?}"),
    }
    // A lone surrogate escape: valid to serde_json, refused by strict decoders.
    client.send_text(r#"{"type":"publish","data":"\ud800","id":"s"}"#).await;
    let refused = client.recv().await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_str()),
        (Some("bad_request"), Some("s"))
    );
    let deep = format!(
        r#"{{"type":"publish","data":{}1{},"id":"d"}}"#,
        "[".repeat(129),
        "]".repeat(129)
    );
    client.send_text(&deep).await;
    let refused = client.recv().await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_str()),
        (Some("bad_request"), Some("d"))
    );
    let ok = format!(
        r#"{{"type":"publish","topic":"t","data":{}1{},"id":"ok"}}"#,
        "[".repeat(120),
        "]".repeat(120)
    );
    client.send_text(&ok).await;
    assert_eq!(client.recv().await, json!({"type":"ack","id":"ok"}));
    server.stop().await;
}

/// Numbers that strict decoders refuse (Go's for past-double values,
/// Python's for very long integers) never reach other clients: the
/// publisher is answered `bad_request`, with the request's id as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_no_double_holds_are_refused_in_data() {
    let server = TestServer::spawn().await;
    let mut publisher = server.client().await;
    let mut reader = server.client().await;
    reader.subscribe("n").await;
    let long = "9".repeat(101);
    for data in ["1e400", r#"{"x":[-1e309]}"#, long.as_str()] {
        publisher
            .send_text(&format!(r#"{{"type":"publish","topic":"n","data":{data},"id":7}}"#))
            .await;
        let answer = publisher.recv().await;
        assert_eq!(
            (answer["type"].as_str(), answer["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{data}: {answer}"
        );
        assert_eq!(answer["id"], 7);
    }
    publisher
        .send_text(r#"{"type":"publish","topic":"n","data":[1.5e300,12345678901234567890]}"#)
        .await;
    // The first message the reader gets is the valid one (a refused one
    // would have failed to parse here).
    let message = reader.recv().await;
    assert_eq!(message["data"][0], 1.5e300, "{message}");
    server.stop().await;
}

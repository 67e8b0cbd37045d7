//! The admin gRPC API end to end: a real tonic client against the real
//! server, with real WebSocket clients on the other side.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{TestServer, WsClient, WAIT};
use futures_util::StreamExt;
use serde_json::json;
use tonic::{Code, Request};
use wshub::admin::pb::{self, kick_clients_request::Target};

fn kick(target: Target, code: u32, reason: &str) -> pb::KickClientsRequest {
    pb::KickClientsRequest {
        target: Some(target),
        code,
        reason: reason.into(),
    }
}

async fn next_event(events: &mut tonic::Streaming<pb::Event>) -> pb::Event {
    tokio::time::timeout(WAIT, events.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_the_right_clients() {
    let server = TestServer::spawn().await;
    let mut admin = server.admin().await;
    let mut news = server.client().await;
    news.subscribe("news").await;
    let mut other = server.client().await;
    let mut excluded = server.client().await;

    let request = pb::BroadcastRequest {
        topic: "news".into(),
        data: r#"{"v": 1.0}"#.into(),
        ..Default::default()
    };
    let r = admin.broadcast(request).await.unwrap().into_inner();
    assert_eq!((r.recipients, r.dropped), (1, 0));
    assert_eq!(
        news.ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(),
        r#"{"type":"message","topic":"news","from":"admin","data":{"v": 1.0}}"#
    );

    let request = pb::BroadcastRequest {
        data: "\"all\"".into(),
        exclude_client_ids: vec![excluded.id.clone()],
        ..Default::default()
    };
    assert_eq!(admin.broadcast(request).await.unwrap().into_inner().recipients, 2);
    assert_eq!(news.recv().await, json!({"type":"message","from":"admin","data":"all"}));
    assert_eq!(other.recv().await["data"], "all");
    excluded.ping().await;

    let request = pb::SendToClientRequest {
        client_id: other.id.clone(),
        data: "[1,2]".into(),
    };
    assert!(!admin.send_to_client(request).await.unwrap().into_inner().dropped);
    assert_eq!(
        other.recv().await,
        json!({"type":"message","from":"admin","data":[1,2]})
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_closes_with_the_given_code_and_reason() {
    let server = TestServer::spawn().await;
    let mut admin = server.admin().await;
    let mut target = server.client().await;
    let mut bystander = server.client().await;
    let r = admin
        .kick_clients(kick(Target::ClientId(target.id.clone()), 4321, "go away"))
        .await
        .unwrap();
    assert_eq!(r.into_inner().kicked, 1);
    assert_eq!(target.closed().await, (4321, "go away".to_string()));

    let mut a = server.client().await;
    let mut b = server.client().await;
    a.subscribe("room").await;
    b.subscribe("room").await;
    let r = admin
        .kick_clients(kick(Target::Topic("room".into()), 0, ""))
        .await
        .unwrap();
    assert_eq!(r.into_inner().kicked, 2);
    assert_eq!(a.closed().await.0, 4000);
    assert_eq!(b.closed().await.0, 4000);
    bystander.ping().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_walk_every_client_once_while_clients_come_and_go() {
    let server = TestServer::spawn().await;
    let mut admin = server.admin().await;
    let mut steady = Vec::new();
    for _ in 0..25 {
        steady.push(server.client().await);
    }
    let mut transient: Vec<WsClient> = Vec::new();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::ListClientsRequest {
            page_size: 7,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = admin.list_clients(request).await.unwrap().into_inner();
        assert!(page.clients.len() <= 7);
        seen.extend(page.clients.into_iter().map(|c| c.id));
        // Between pages: one client arrives, an earlier transient one leaves.
        transient.push(server.client().await);
        if transient.len() > 1 {
            let gone = transient.remove(0);
            drop(gone);
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no client shown twice");
    for client in &steady {
        assert!(
            unique.contains(&client.id),
            "{} was connected throughout and must be listed",
            client.id
        );
    }

    let r = admin
        .list_clients(pb::ListClientsRequest {
            topic: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().total, 0);
    steady[3].subscribe("few").await;
    let r = admin
        .list_clients(pb::ListClientsRequest {
            topic: "few".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = r.into_inner();
    assert_eq!((r.total, r.clients[0].id.as_str()), (1, steady[3].id.as_str()));
    assert_eq!(r.clients[0].topics, ["few"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_by_queue_depth_shows_the_stalled_client_first() {
    let server = TestServer::with(|c| {
        c.client.send_queue_len = 1024;
        c.client.send_queue_bytes = 256 << 20;
    })
    .await;
    let mut admin = server.admin().await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(server.client().await);
    }
    let stalled = server.client().await;
    // ~24 MB: more than the kernel buffers a client that never reads.
    let data = format!("\"{}\"", "z".repeat(60_000));
    let read = async {
        for reader in &mut readers {
            for _ in 0..400 {
                reader.recv().await;
            }
        }
    };
    let send = async {
        for _ in 0..400 {
            let request = pb::BroadcastRequest {
                data: data.clone(),
                ..Default::default()
            };
            admin.clone().broadcast(request).await.unwrap();
        }
    };
    tokio::join!(read, send);
    let request = pb::ListClientsRequest {
        order_by: pb::ClientOrder::QueueDepth as i32,
        ..Default::default()
    };
    let page = admin.list_clients(request).await.unwrap().into_inner();
    assert_eq!(page.clients[0].id, stalled.id);
    assert!(page.clients[0].queue_depth > 0 && page.clients[0].queue_bytes > 0);
    assert!(page.clients[0].queue_high_water >= page.clients[0].queue_depth);
    let info = admin
        .get_client(pb::GetClientRequest {
            client_id: stalled.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.id, stalled.id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_sees_the_life_of_clients() {
    let server = TestServer::with(|c| {
        c.client.send_queue_len = 4;
        c.client.send_queue_bytes = 64 * 1024;
    })
    .await;
    let mut admin = server.admin().await;
    let mut events = server.watch(&[]).await;
    use pb::EventKind as K;

    let mut client = server.client().await;
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.kind, e.client_id.as_str()),
        (K::Connected as i32, client.id.as_str())
    );
    client.subscribe("t").await;
    let e = next_event(&mut events).await;
    assert_eq!((e.kind, e.topic.as_str()), (K::Subscribed as i32, "t"));

    admin
        .kick_clients(kick(Target::ClientId(client.id.clone()), 4001, "kicked"))
        .await
        .unwrap();
    let e = next_event(&mut events).await;
    assert_eq!((e.kind, e.code, e.reason.as_str()), (K::Kicked as i32, 4001, "kicked"));
    client.closed().await;
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.kind, e.reason.as_str(), e.client_id.as_str()),
        (K::Disconnected as i32, "kicked", client.id.as_str())
    );

    // A client that never reads, flooded until its queue overflows.
    let stalled = server.client().await;
    assert_eq!(next_event(&mut events).await.kind, K::Connected as i32);
    let data = format!("\"{}\"", "x".repeat(60_000));
    let evicted = loop {
        let request = pb::BroadcastRequest {
            data: data.clone(),
            ..Default::default()
        };
        let r = admin.broadcast(request).await.unwrap().into_inner();
        if r.dropped == 1 {
            break r;
        }
    };
    assert_eq!(evicted.recipients, 0);
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.kind, e.code, e.client_id.as_str()),
        (K::Evicted as i32, 4008, stalled.id.as_str())
    );
    let e = next_event(&mut events).await;
    assert_eq!((e.kind, e.reason.as_str()), (K::Disconnected as i32, "slow_consumer"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_everyone_with_1012_at_the_asked_rate() {
    let server = TestServer::spawn().await;
    let mut admin = server.admin().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(common::channel(server.admin).await);
    let check = || tonic_health::pb::HealthCheckRequest {
        service: "wshub.admin.v1.Admin".into(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(health.check(check()).await.unwrap().into_inner().status, serving);

    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(server.client().await);
    }
    let started = Instant::now();
    let request = pb::DrainRequest {
        rate_per_second: 20,
        deadline: None,
    };
    let mut progress = admin.drain(request).await.unwrap().into_inner();
    // One drain at a time.
    let meanwhile = admin.drain(pb::DrainRequest::default()).await.unwrap_err();
    assert_eq!(meanwhile.code(), Code::FailedPrecondition);
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(health.check(check()).await.unwrap().into_inner().status, not_serving);
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(TestServer::http_status(server.ws, upgrade).await, 503);
    assert_eq!(server.get("/readyz").await.0, 503);

    let mut last = None;
    while let Some(p) = tokio::time::timeout(WAIT, progress.message()).await.unwrap().unwrap() {
        last = Some(p);
    }
    let elapsed = started.elapsed();
    let last = last.unwrap();
    assert_eq!((last.closed, last.remaining, last.done), (30, 0, true));
    for client in &mut clients {
        assert_eq!(client.closed().await, (1012, "service restart".to_string()));
    }
    // 30 clients at 20/s: the first batch goes at once, the rest over ~1.4 s.
    assert!(elapsed >= Duration::from_millis(1000), "drain too fast: {elapsed:?}");
    // Once it has ended, another may run (to close what a deadline left): nothing is left here.
    let mut again = admin.drain(pb::DrainRequest::default()).await.unwrap().into_inner();
    let last = tokio::time::timeout(WAIT, again.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((last.closed, last.remaining, last.done), (0, 0, true));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_documented_codes() {
    let server = TestServer::with(|c| c.client.max_message_bytes = 1000).await;
    let mut admin = server.admin().await;
    let client = server.client().await;
    let invalid = [
        admin
            .broadcast(pb::BroadcastRequest {
                data: "{nope".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        admin
            .broadcast(pb::BroadcastRequest {
                data: format!("\"{}\"", "x".repeat(1000)),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        admin
            .broadcast(pb::BroadcastRequest {
                topic: "bad topic".into(),
                data: "1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        admin
            .kick_clients(kick(Target::ClientId(client.id.clone()), 1000, ""))
            .await
            .unwrap_err(),
        admin
            .kick_clients(kick(Target::ClientId(client.id.clone()), 5000, ""))
            .await
            .unwrap_err(),
        admin
            .kick_clients(kick(Target::ClientId(client.id.clone()), 4000, &"r".repeat(124)))
            .await
            .unwrap_err(),
        admin.kick_clients(pb::KickClientsRequest::default()).await.unwrap_err(),
        admin
            .list_clients(pb::ListClientsRequest {
                page_size: 1001,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        admin
            .list_clients(pb::ListClientsRequest {
                page_token: "zzz".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        // Data a strict client decoder would refuse is refused here too.
        admin
            .broadcast(pb::BroadcastRequest {
                data: r#""\ud800""#.into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        // A multi-byte first character once panicked the token decoder.
        admin
            .list_clients(pb::ListClientsRequest {
                page_token: "é1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        // A deadline past what an Instant holds once left the node not ready for good.
        admin
            .drain(pb::DrainRequest {
                rate_per_second: 1,
                deadline: Some(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
            })
            .await
            .map(|_| ())
            .unwrap_err(),
    ];
    for status in invalid {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    // Refused, not started: the node still takes clients, and nothing panicked.
    assert_eq!(server.get("/readyz").await.0, 200);
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "wshub_admin_panics_total 0"),
        "no handler panicked"
    );
    let missing = [
        admin
            .get_client(pb::GetClientRequest {
                client_id: "c-999999".into(),
            })
            .await
            .unwrap_err(),
        admin
            .send_to_client(pb::SendToClientRequest {
                client_id: "c-999999".into(),
                data: "1".into(),
            })
            .await
            .unwrap_err(),
        admin
            .kick_clients(kick(Target::ClientId("c-999999".into()), 4000, ""))
            .await
            .unwrap_err(),
    ];
    for status in missing {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), "client c-999999 not found");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured() {
    let server = TestServer::with(|c| c.admin_token = Some("s3cret".into())).await;
    let mut admin = server.admin().await;
    let denied = admin.get_stats(pb::GetStatsRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    let mut wrong = Request::new(pb::GetStatsRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(admin.get_stats(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    let mut right = Request::new(pb::GetStatsRequest {});
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let stats = admin.get_stats(right).await.unwrap().into_inner();
    assert_eq!(stats.version, env!("CARGO_PKG_VERSION"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_admin_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let server = TestServer::spawn().await;
    let mut client = ServerReflectionClient::new(common::channel(server.admin).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("no service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"wshub.admin.v1.Admin".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_on_a_public_admin_address_without_a_token() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--admin-addr",
            "0.0.0.0:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without --admin-token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wshubctl_drives_a_live_server() {
    let server = TestServer::spawn().await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    let addr = server.admin.to_string();
    let ctl = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshubctl"));
        command.arg("--addr").arg(&addr).args(args);
        async move { command.output().await.unwrap() }
    };
    let out = ctl(&["--json", "stats"]).await;
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (stats["clients"].as_u64(), stats["topics"].as_u64()),
        (Some(1), Some(1))
    );

    let out = ctl(&["broadcast", "--topic", "news", r#"{"hi":true}"#]).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "queued for 1 client(s), 0 evicted as slow"
    );
    assert_eq!(client.recv().await["data"], json!({"hi": true}));

    let out = ctl(&["clients", "list", "--order-by", "queue-depth"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&client.id) && table.contains("1 of 1 clients"),
        "{table}"
    );

    let out = ctl(&["clients", "get", "c-424242"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: client c-424242 not found"
    );

    let out = ctl(&["kick", "--client", &client.id, "--code", "4002", "--reason", "bye"]).await;
    assert!(out.status.success());
    assert_eq!(client.closed().await, (4002, "bye".to_string()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_is_told_it_lagged() {
    let server = TestServer::spawn().await;
    // Opened and not read, on a small HTTP/2 window (the client's default
    // holds ~2 MB): the hub keeps a bounded ring for it.
    let mut events = common::small_window_watch(server.admin).await;
    let mut client = server.client().await;
    // Far more events than the hub's ring and the stream's buffers hold.
    for i in 0..10_000 {
        let kind = if i % 2 == 0 { "subscribe" } else { "unsubscribe" };
        client.send(json!({"type": kind, "topic": "churn"})).await;
    }
    // The hub handled everything without waiting for the watcher.
    client.ping().await;
    let lagged = loop {
        let e = next_event(&mut events).await;
        if e.reason == "lagged" {
            break e;
        }
    };
    assert_eq!(lagged.kind, pb::EventKind::Unspecified as i32);
    assert!(lagged.code > 0, "the lag event says how many were missed");
    // It falls behind again at once: it has stayed behind, and its stream ends.
    for i in 0..10_000 {
        let kind = if i % 2 == 0 { "subscribe" } else { "unsubscribe" };
        client.send(json!({"type": kind, "topic": "churn"})).await;
    }
    client.ping().await;
    let ended = loop {
        match tokio::time::timeout(common::WAIT, events.message())
            .await
            .expect("in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), tonic::Code::ResourceExhausted, "{ended:?}");
    server.stop().await;
}

//! The real binary: started on port 0, stopped with SIGTERM; refused at
//! start when its TLS material is bad.

mod common;

use std::time::Duration;

use common::{Binary, WsClient};
use tokio::io::AsyncBufReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut server = Binary::spawn(&[]).await;
    let mut client = WsClient::connect(&server.url()).await;
    client.ping().await;
    server.sigterm().await;
    assert_eq!(client.closed().await, (1001, "server shutting down".to_string()));
    let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Signal handlers are installed before the node listens: a SIGTERM sent
/// the moment it says it listens is a graceful shutdown (exit 0), never the
/// default action (killed by the signal). Found under load, where a client
/// could connect and the test send SIGTERM before the handler existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_as_soon_as_the_node_listens_is_a_graceful_shutdown() {
    use std::os::unix::process::ExitStatusExt;
    for _ in 0..5 {
        let mut server = Binary::spawn(&[]).await;
        server.sigterm().await;
        let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
            .await
            .expect("exits in time")
            .unwrap();
        assert_eq!((status.code(), status.signal()), (Some(0), None), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_and_certificate_files_stop_the_process_before_it_serves() {
    let dir = std::env::temp_dir().join(format!("wshub-bad-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(&key, "not a key at all\n").unwrap();
    let missing = dir.join("missing.pem");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--admin-tls-cert".into(),
                path(&cert),
                "--admin-tls-key".into(),
                path(&key),
            ],
            "admin TLS",
        ),
        (
            vec![
                "--admin-tls-cert".into(),
                path(&missing),
                "--admin-tls-key".into(),
                path(&key),
            ],
            "admin TLS",
        ),
        (
            vec!["--tls-cert".into(), path(&cert), "--tls-key".into(), path(&key)],
            "private key",
        ),
        (
            vec!["--tls-cert".into(), path(&missing), "--tls-key".into(), path(&key)],
            "cannot read",
        ),
        (
            vec!["--jwt-public-key".into(), path(&key)],
            "neither an RSA nor an EC public key",
        ),
        (vec!["--jwt-secret-file".into(), path(&missing)], "cannot read"),
        (vec!["--admin-token-file".into(), path(&missing)], "cannot read"),
    ];
    for (flags, says) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
            .args(["--ws-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(&flags)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(common::WAIT, out)
            .await
            .expect("exits at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(!stderr.contains("wshub running"), "nothing was served: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_port_listens_with_the_configured_backlog() {
    let server = Binary::spawn(&["--listen-backlog", "777"]).await;
    // For a listening socket, `ss` shows the backlog in the Send-Q column.
    let out = tokio::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", server.ws.port())])
        .output()
        .await
        .expect("ss runs (scripts/test installs iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let send_q = text.split_whitespace().nth(2);
    assert_eq!(send_q, Some("777"), "{text}");
    server.sigterm().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_admin_calls_are_logged_with_the_caller_and_without_the_data() {
    use wshub::admin::pb;
    let server = Binary::spawn(&[]).await;
    let mut client = WsClient::connect(&server.url()).await;
    let mut admin = server.admin().await;
    admin
        .broadcast(pb::BroadcastRequest {
            topic: String::new(),
            data: r#""do-not-log-this""#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(client.recv().await["data"], "do-not-log-this");
    admin
        .kick_clients(pb::KickClientsRequest {
            target: Some(pb::kick_clients_request::Target::ClientId(client.id.clone())),
            reason: "a reason".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let broadcast = server.log_line("admin: Broadcast").await;
    assert!(broadcast.contains("caller=127.0.0.1:"), "{broadcast}");
    assert!(
        broadcast.contains("data_bytes=17") && broadcast.contains("recipients=1"),
        "{broadcast}"
    );
    let kick = server.log_line("admin: KickClients").await;
    assert!(
        kick.contains("caller=127.0.0.1:") && kick.contains("kicked=1"),
        "{kick}"
    );
    assert!(kick.contains(&client.id), "{kick}");
    let everything = server.log.borrow().join("\n");
    assert!(!everything.contains("do-not-log-this"), "data must not be logged");
    assert!(!everything.contains("a reason"), "a kick's reason text is data too");
    server.sigterm().await;
}

/// Out of file descriptors, the WebSocket port's `accept` fails: the node
/// backs off and counts it instead of spinning, and serves again once
/// files are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_that_fail_for_lack_of_files_are_counted_and_backed_off() {
    let server =
        Binary::spawn_with_files(Some(64), &["--max-connections", "1000", "--max-handshakes-per-ip", "0"]).await;
    // Silent sockets until the node has no file left for the next one.
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(tokio::net::TcpStream::connect(server.ws).await.unwrap());
    }
    // One more accept must fail at least once; let it.
    let log = server.log_line("accept failed; backing off").await;
    assert!(log.contains("too_many_files"), "{log}");
    drop(held);
    let errors = common::metric(
        server.metrics,
        "wshub_accept_errors_total{listener=\"ws\",kind=\"too_many_files\"}",
    )
    .await;
    assert!(errors >= 1.0, "counted: {errors}");
    let mut client = WsClient::connect(&server.url()).await;
    client.ping().await;
}

/// The admin and metrics ports hold a bounded number of connections and
/// close one that stays silent; a blank admin token is no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_ports_cap_their_connections_and_close_silent_ones() {
    use tokio::io::AsyncReadExt;
    let server = Binary::spawn(&["--admin-idle-timeout", "1s"]).await;
    for (addr, cap, listener) in [
        (server.admin, wshub::listen::ADMIN_MAX_CONNECTIONS, "admin"),
        (server.metrics, wshub::listen::METRICS_MAX_CONNECTIONS, "metrics"),
    ] {
        let mut held = Vec::new();
        for _ in 0..cap {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // One past the cap is closed at once.
        let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(common::WAIT, over.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{listener}: {read:?}");
        // The silent ones are closed at the idle timeout.
        for socket in &mut held {
            let read = tokio::time::timeout(common::WAIT, socket.read(&mut buf)).await;
            assert!(read.is_ok(), "{listener}: a silent socket stays open");
        }
        let refused = common::metric(
            server.metrics,
            &format!("wshub_listener_refused_total{{listener=\"{listener}\"}}"),
        )
        .await;
        assert!(refused >= 1.0, "{listener}: {refused}");
    }
    let stats = server
        .admin()
        .await
        .get_stats(wshub::admin::pb::GetStatsRequest {})
        .await;
    assert!(stats.is_ok(), "the admin port serves after all that");

    for blank in [" ", "\t"] {
        let output = exits(&["--admin-addr", "0.0.0.0:0", "--admin-token", blank]).await;
        assert_eq!(output.status.code(), Some(2), "{blank:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("without --admin-token"), "{stderr}");
    }
}

/// Durations past a year are refused at start (exit 2), rather than
/// overflowing `Instant` arithmetic later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_past_a_year_stop_the_process_at_start() {
    for flag in [
        "--close-timeout",
        "--idle-timeout",
        "--shutdown-grace",
        "--write-timeout",
    ] {
        let output = exits(&[flag, "300000000000y"]).await;
        assert_eq!(output.status.code(), Some(2), "{flag}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("at most a year"),
            "{flag}"
        );
    }
}

/// One message to everyone does not leave its size behind in every
/// connection: a 60 KB broadcast to 1 000 reading clients, and the server's
/// memory is back within 10 MiB of before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_broadcast_leaves_no_memory_behind() {
    let _ = rlimit::increase_nofile_limit(4096);
    let server = Binary::spawn(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..1000 {
        clients.push(WsClient::connect(&server.url()).await);
    }
    clients[0].ping().await;
    clients[999].ping().await;
    let before = server.rss_kib();
    let data = "x".repeat(60_000);
    clients[0]
        .send(serde_json::json!({"type": "publish", "data": data}))
        .await;
    let received = futures_util::future::join_all(clients.iter_mut().map(|c| c.recv())).await;
    assert!(received
        .iter()
        .all(|m| m["data"].as_str().map(str::len) == Some(60_000)));
    // Memory returns as soon as the frames are written; allow a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut after = server.rss_kib();
    while after > before + 10 * 1024 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = server.rss_kib();
    }
    eprintln!("server RSS: {before} KiB before the 60 KB broadcast to 1 000 clients, {after} KiB after");
    assert!(
        after <= before + 10 * 1024,
        "RSS {before} KiB before, {after} KiB after the broadcast"
    );
}

/// Runs the binary with `args`, which must make it exit: its output (a
/// process still running after the wait fails the test, and is killed).
async fn exits(args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--ws-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(common::WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("wshub {args:?} kept running"))
        .unwrap()
}

/// With a fixed `--node-id`, a client id saved before a restart never
/// names another client after it: ids keep their form, and the
/// numbers of a later process start past the earlier one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_are_not_reused_across_restarts_of_a_named_node() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let server = Binary::spawn(&["--node-id", "fixed"]).await;
        let client = WsClient::connect(&server.url()).await;
        let id = client.id.clone();
        let number = id.strip_prefix("c-").and_then(|n| n.parse::<u64>().ok());
        assert!(number.is_some(), "{id} is c-<number> (a node alone names no node)");
        ids.push(number.unwrap());
        server.sigterm().await;
        drop(client);
    }
    assert!(
        ids[1] > ids[0],
        "{ids:?}: the second process's first id comes after the first's"
    );
}

#[tokio::test]
async fn history_settings_that_cannot_work_stop_the_process_at_start() {
    for (args, says) in [
        (
            &["--history-size", "10", "--recovery-max", "10001"][..],
            "at most 10000",
        ),
        (
            &["--history-size", "10", "--history-ttl", "0s"][..],
            "--history-ttl must be longer than zero",
        ),
        (&["--history-topics", "a b"][..], "is neither a topic nor `prefix*`"),
        (&["--presence-max", "0"][..], "--presence-max must be at least 1"),
        (
            &["--history-size", "10", "--history-max-bytes", "1KiB"][..],
            "--history-max-bytes must hold at least one",
        ),
    ] {
        let output = exits(args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_every_field() {
    let node = Binary::spawn(&["--log-format", "json"]).await;
    let mut client = WsClient::connect(&node.url()).await;
    client.subscribe("news").await;
    // An admin call is logged at info with its fields.
    node.admin()
        .await
        .broadcast(wshub::admin::pb::BroadcastRequest {
            topic: "news".into(),
            data: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let line = node.log_line("admin: Broadcast").await;
    let object: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    for key in ["timestamp", "level", "target", "message"] {
        assert!(object.get(key).is_some_and(|v| v.is_string()), "{key} in {line}");
    }
    assert_eq!(object["level"], "INFO");
    assert_eq!(object["recipients"], 1, "fields are top-level keys: {line}");
    assert_eq!(object["topic"], "news", "{line}");
    for line in node.log.borrow().iter() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[tokio::test]
async fn startup_says_where_to_go_and_addresses_take_host_names() {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--ws-addr",
            "localhost:0",
            "--admin-addr",
            "localhost:0",
            "--metrics-addr",
            "localhost:0",
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut child = child;
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = loop {
        let line = tokio::time::timeout(common::WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if line.contains("listening") {
            break line;
        }
    };
    let field = |key: &str| {
        line.split(&format!(" {key}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{key} in {line}"))
            .to_string()
    };
    let ws = field("ws");
    assert!(
        ws.starts_with("127.0.0.1:") || ws.starts_with("[::1]:"),
        "localhost resolved: {line}"
    );
    assert_eq!(field("ws_url"), format!("ws://{ws}/ws"));
    assert_eq!(field("demo_url"), format!("http://{ws}/"));
    assert_eq!(field("metrics_url"), format!("http://{}/metrics", field("metrics")));
    // The URLs it names answer.
    let metrics: std::net::SocketAddr = field("metrics").parse().unwrap();
    let (status, _) = common::get(metrics, "/metrics").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_bind_failure_names_the_listener_and_its_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = exits(&["--admin-addr", &addr]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot bind the admin port {addr}: address in use")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_value_from_the_environment_names_the_variable() {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .env("WSHUB_PING_INTERVAL", "soon")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(common::WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--ping-interval"), "{stderr}");
    assert!(stderr.contains("environment variable WSHUB_PING_INTERVAL"), "{stderr}");
}

#[tokio::test]
async fn an_eviction_is_logged_with_its_trigger_and_the_clients_address() {
    let node = Binary::spawn(&["--send-queue-len", "8"]).await;
    let (_stalled, id) = WsClient::stalled(node.ws, "news").await;
    let mut publisher = WsClient::connect(&node.url()).await;
    let big = "x".repeat(16 * 1024);
    // Far more than 8 frames and the socket buffers: the queue overflows.
    for _ in 0..200 {
        publisher
            .send(serde_json::json!({"type":"publish","topic":"news","data":big}))
            .await;
    }
    let line = node.log_line("evicted slow consumer").await;
    assert!(line.contains(&format!("client_id={id}")), "{line}");
    assert!(line.contains("remote_addr=127.0.0.1:"), "{line}");
    assert!(line.contains("trigger=message_limit"), "{line}");
}

#[tokio::test]
async fn a_refused_admin_token_is_logged_with_the_callers_address() {
    let node = Binary::spawn(&["--admin-token", "right"]).await;
    let mut admin = node.admin().await;
    let mut request = tonic::Request::new(wshub::admin::pb::GetStatsRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let refused = admin.get_stats(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let line = node.log_line("admin: refused a call").await;
    assert!(
        line.contains("a wrong token") && line.contains("caller=127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("refused=1"), "{line}");
}

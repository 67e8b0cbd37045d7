//! The real binary: started on port 0, stopped with SIGTERM; refused at
//! start when its TLS material is bad.

mod common;

use std::time::Duration;

use common::{Binary, WsClient};

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

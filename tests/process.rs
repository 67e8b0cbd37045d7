//! The real binary: started on port 0, stopped with SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::WsClient;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--ws-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The "listening" log line names the bound addresses.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ws_addr = loop {
        let line = tokio::time::timeout(common::WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("a log line");
        if let Some(rest) = line.split(" ws=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let mut client = WsClient::connect(&format!("ws://{ws_addr}/ws")).await;
    client.ping().await;

    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    assert_eq!(client.closed().await, (1001, "server shutting down".to_string()));
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn bad_admin_tls_files_stop_the_process_before_it_serves() {
    let dir = std::env::temp_dir().join(format!("wshub-bad-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(&key, "not a key at all\n").unwrap();
    for (cert, key) in [(cert.clone(), key.clone()), (dir.join("missing.pem"), key.clone())] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
            .args(["--ws-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--admin-tls-cert")
            .arg(&cert)
            .arg("--admin-tls-key")
            .arg(&key)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(common::WAIT, out)
            .await
            .expect("exits at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("admin TLS"), "{stderr}");
        assert!(!stderr.contains("wshub running"), "nothing was served: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

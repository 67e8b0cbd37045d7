//! A smoke test of the benchmark itself: a few clients, a few messages,
//! against the real server; every message must arrive.

mod common;

use common::TestServer;

async fn bench(server: &TestServer, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wshub-bench"))
        .args([
            "--addr",
            &server.ws.to_string(),
            "--admin",
            &server.admin.to_string(),
            "--json",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

#[tokio::test]
async fn every_scenario_runs_and_loses_nothing() {
    let server = TestServer::spawn().await;
    let burst = bench(&server, &["burst", "--clients", "5", "--messages", "10"]).await;
    assert_eq!(
        (burst["deliveries"].as_str(), burst["lost"].as_str()),
        (Some("50"), Some("0")),
        "{burst}"
    );
    let steady = bench(
        &server,
        &["steady", "--clients", "3", "--rate", "20", "--duration", "1s"],
    )
    .await;
    assert_eq!(
        (steady["deliveries"].as_str(), steady["lost"].as_str()),
        (Some("60"), Some("0")),
        "{steady}"
    );
    let admin = bench(&server, &["admin", "--clients", "4", "--messages", "5"]).await;
    assert_eq!(
        (admin["deliveries"].as_str(), admin["lost"].as_str()),
        (Some("20"), Some("0")),
        "{admin}"
    );
    let stall = bench(
        &server,
        &[
            "stall",
            "--clients",
            "4",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--stalled",
            "0.25",
        ],
    )
    .await;
    assert_eq!(
        (stall["stalled"].as_str(), stall["healthy_lost"].as_str()),
        (Some("1"), Some("0")),
        "{stall}"
    );
    server.stop().await;
}

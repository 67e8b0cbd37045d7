//! A smoke test of the benchmark itself: a few clients, a few messages,
//! against the real server; every message must arrive.

use std::net::SocketAddr;

use tokio::sync::oneshot;

/// The real server, in process, on port-0 listeners.
struct TestServer {
    ws: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), wshub::Error>>,
}

impl TestServer {
    async fn spawn() -> TestServer {
        let config = wshub::Config::ephemeral();
        let listeners = wshub::Listeners::bind(&config).await.expect("bind");
        let (ws, admin) = (
            listeners.ws.local_addr().unwrap(),
            listeners.admin.local_addr().unwrap(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wshub::run(listeners, config, async {
            let _ = stopped.await;
        }));
        TestServer { ws, admin, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), self.task).await;
        ended.expect("run returns in time").expect("run task").expect("run ok");
    }
}

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
    let flood = bench(&server, &["flood", "--clients", "3", "--duration", "300ms"]).await;
    assert_eq!(
        (flood["quiet_errors"].as_str(), flood["flood_errors"].as_str()),
        (Some("0"), Some("0")),
        "{flood}"
    );
    assert_ne!(flood["published"].as_str(), Some("0"), "{flood}");
    server.stop().await;
}

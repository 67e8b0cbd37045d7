//! A real browser: headless Chromium, driven over the DevTools protocol by
//! the scripts in tests/browser. It sees the close code the server sent,
//! with `wasClean = true`, every time (never the 1006 a TCP reset turns it
//! into), and the demo page works end to end.

mod common;

use common::{Binary, TestServer, WsClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Runs a script of tests/browser (which drives Chromium) and returns the
/// JSON it prints.
async fn browse(script: &str, args: &[String]) -> serde_json::Value {
    let out = tokio::process::Command::new(common::python())
        .arg(format!("tests/browser/{script}"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the browser run ends")
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{script} failed (scripts/test installs chromium and websockets):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_1009_cleanly_every_time() {
    let server = TestServer::spawn().await;
    let seen = browse("close_codes.py", &[server.url(), "30".into()]).await;
    assert_eq!(seen, serde_json::json!({"1009 clean": 30}));
    server.stop().await;
}

/// The demo page at `/`, in two Chromium pages, with an operator using
/// `wshubctl`; screenshots land in the test's temp directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_talks_is_broadcast_to_and_kicked() {
    let server = TestServer::with(|c| c.history.history_size = 100).await;
    let shots = std::env::temp_dir().join(format!("wshub-demo-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    let args = [
        format!("http://{}/", server.ws),
        env!("CARGO_BIN_EXE_wshubctl").into(),
        server.admin.to_string(),
        shots.display().to_string(),
    ];
    let seen = browse("demo.py", &args).await;
    let (a, b) = (seen["a"].as_str().unwrap(), seen["b"].as_str().unwrap());
    assert!(a.starts_with("c-") && b.starts_with("c-") && a != b, "{seen}");
    assert_eq!(seen["seen_by_b"], serde_json::json!({"text": "hello from A"}));
    assert_eq!(
        seen["broadcast"],
        serde_json::json!([{"note": "from the operator"}, {"note": "from the operator"}])
    );
    assert_eq!(seen["kicked"], "kicked by the operator: 4003 banned");
    assert_eq!(
        seen["retry"],
        "not reconnecting by itself: press Reconnect to try again"
    );
    assert_eq!(seen["reconnect_shown"], true);
    assert_eq!(seen["after_reconnect"], serde_json::json!({"text": "welcome back"}));
    assert_eq!(seen["missed"], serde_json::json!({"text": "while you were away"}));
    assert_eq!(seen["recovered"], "1", "{seen}");
    assert!(seen["b_again"].as_str().is_some_and(|id| id != b), "{seen}");
    for shot in ["a.png", "b-kicked.png", "b-reconnected.png"] {
        let png = std::fs::read(shots.join(shot)).expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 5_000,
            "{shot}: a real picture"
        );
    }
    eprintln!("screenshots in {}", shots.display());
    server.stop().await;
}

/// The demo page with the server killed under it and started again on the
/// same port: back by itself, its subscription renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_reconnects_by_itself_after_a_restart() {
    let mut first = Binary::spawn(&[]).await;
    let ws = first.ws;
    let shots = std::env::temp_dir().join(format!("wshub-restart-{}", std::process::id()));
    std::fs::create_dir_all(&shots).unwrap();
    let mut script = tokio::process::Command::new(common::python())
        .arg("tests/browser/restart.py")
        .arg(format!("http://{ws}/"))
        .arg(&shots)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let mut stdin = script.stdin.take().unwrap();
    let wait = std::time::Duration::from_secs(120);
    let line = tokio::time::timeout(wait, lines.next_line()).await.unwrap().unwrap();
    let before: serde_json::Value = serde_json::from_str(&line.expect("the page subscribed")).unwrap();

    // Killed without a word (the page sees the connection drop), then back
    // on the same port.
    first.child.kill().await.unwrap();
    let second = Binary::spawn(&["--ws-addr", &ws.to_string()]).await;
    stdin.write_all(b"back\n").await.unwrap();
    let url = second.url();
    let publishing = tokio::spawn(async move {
        let mut publisher = WsClient::connect(&url).await;
        loop {
            let message = serde_json::json!({"type":"publish","topic":"demo","data":{"text":"after the restart"}});
            publisher.send(message).await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    });
    let line = tokio::time::timeout(wait, lines.next_line()).await.unwrap().unwrap();
    publishing.abort();
    let seen: serde_json::Value = serde_json::from_str(&line.expect("the page came back")).unwrap();
    assert_ne!(seen["after"], before["before"], "{seen}");
    assert!(
        seen["countdown"].as_str().unwrap().starts_with("reconnecting in "),
        "{seen}"
    );
    assert_eq!(
        seen["message"],
        serde_json::json!({"text": "after the restart"}),
        "the subscription renewed"
    );
    assert!(
        seen["too_large"]
            .as_str()
            .unwrap()
            .contains("this server takes at most 65536"),
        "{seen}"
    );
    assert!(
        seen["named"].as_str().unwrap().contains("subscribe #bad topic!"),
        "{seen}"
    );
    assert_eq!(seen["connected_after_refusal"], true);
    eprintln!("screenshots in {}", shots.display());
}

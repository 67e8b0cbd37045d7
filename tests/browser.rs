//! A real browser: headless Chromium (driven over the DevTools protocol by
//! tests/browser/close_codes.py) sees the close code the server sent, with
//! `wasClean = true`, every time — never the 1006 a TCP reset turns it into.

mod common;

use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_1009_cleanly_every_time() {
    let server = TestServer::spawn().await;
    let out = tokio::process::Command::new(common::python())
        .args(["tests/browser/close_codes.py", &server.url(), "30"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("the browser run ends")
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the browser run failed (scripts/test installs chromium and websockets):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(seen, serde_json::json!({"1009 clean": 30}));
    server.stop().await;
}

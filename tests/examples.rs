//! The example clients, run as they are documented, against a live server:
//! examples/client.rs (the real binary) and the Python client of
//! docs/clients.md (taken from the page). Each prints what arrives, comes
//! back after a 4002 "moved" kick with its subscription renewed, and stays
//! away after a plain 4000 kick.

mod common;

use common::{TestServer, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;
use wshub::admin::pb;

/// Where cargo put the examples it built for this test run.
fn example(name: &str) -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    deps.parent().unwrap().parent().unwrap().join("examples").join(name)
}

/// Waits until exactly one client is subscribed to `topic`; returns its id.
async fn subscriber(admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>, topic: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let request = pb::ListClientsRequest {
                topic: topic.into(),
                ..Default::default()
            };
            let page = admin.list_clients(request).await.unwrap().into_inner();
            if let [client] = page.clients.as_slice() {
                return client.id.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the example subscribed")
}

/// One printed message: `<topic> <from> <data>`, the data as JSON.
async fn line(lines: &mut Lines<BufReader<ChildStdout>>) -> (String, String, serde_json::Value) {
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("a line");
    let mut parts = line.splitn(3, ' ');
    let (topic, from, data) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let data = serde_json::from_str(data).unwrap_or_else(|_| panic!("JSON data in {line:?}"));
    (topic.into(), from.into(), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_example_client_prints_reconnects_when_moved_and_stops_when_kicked() {
    // With history: after the move it asks for what it missed (nothing, or
    // the message published while it was away, depending on who is first).
    let server = TestServer::with(|c| c.history.history_size = 100).await;
    let client = tokio::process::Command::new(example("client"));
    let log = drive(&server, client, true).await;
    assert!(log.contains("news: recovered"), "it resubscribed with `since`: {log}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_of_the_docs_does_the_same() {
    let docs = std::fs::read_to_string("docs/clients.md").unwrap();
    let code = docs
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a python block in docs/clients.md");
    let dir = std::env::temp_dir().join(format!("wshub-clients-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("client.py");
    std::fs::write(&script, code).unwrap();
    let server = TestServer::spawn().await;
    let mut client = tokio::process::Command::new(common::python());
    client.arg(&script);
    drive(&server, client, false).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `client URL news` through the scenario; returns what it logged.
/// `while_away`: the second message is published while the client moves
/// (a client that recovers gets it), else after it is back.
async fn drive(server: &TestServer, mut client: tokio::process::Command, while_away: bool) -> String {
    let mut admin = server.admin().await;
    let mut child = client
        .args([server.url(), "news".into()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the example binary: `cargo test` builds examples (`cargo build --example client`)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let first = subscriber(&mut admin, "news").await;
    let broadcast = |data: &str| pb::BroadcastRequest {
        topic: "news".into(),
        data: data.into(),
        ..Default::default()
    };
    admin.broadcast(broadcast(r#"{"n":1}"#)).await.unwrap();
    let n = |n| ("news".to_string(), "admin".to_string(), serde_json::json!({ "n": n }));
    assert_eq!(line(&mut lines).await, n(1));

    // 4002 "moved": it comes back (a new client) and subscribes again.
    let kick = |id: &str, code| pb::KickClientsRequest {
        target: Some(pb::kick_clients_request::Target::ClientId(id.into())),
        code,
        reason: "moved".into(),
    };
    admin.kick_clients(kick(&first, 4002)).await.unwrap();
    // Published while it moves: it gets it once, live or recovered.
    if while_away {
        admin.broadcast(broadcast(r#"{"n":2}"#)).await.unwrap();
    }
    let second = tokio::time::timeout(WAIT, async {
        loop {
            let id = subscriber(&mut admin, "news").await;
            if id != first {
                return id;
            }
        }
    })
    .await
    .expect("it reconnected");
    if !while_away {
        admin.broadcast(broadcast(r#"{"n":2}"#)).await.unwrap();
    }
    assert_eq!(line(&mut lines).await, n(2));
    admin.broadcast(broadcast(r#"{"n":3}"#)).await.unwrap();
    assert_eq!(line(&mut lines).await, n(3), "n=2 once, then n=3");

    // A plain kick (4000): it stops, and says why.
    admin.kick_clients(kick(&second, 4000)).await.unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("it exits")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("not reconnecting") && log.contains("4000 moved"), "{log}");
    log.into_owned()
}

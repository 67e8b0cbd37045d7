//! The example client (examples/client.rs), the real binary, against a live
//! server: it prints what arrives, comes back after a 4002 "moved" kick and
//! renews its subscription, and stays away after a plain 4000 kick.

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

async fn line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("a line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_client_prints_reconnects_when_moved_and_stops_when_kicked() {
    let server = TestServer::spawn().await;
    let mut admin = server.admin().await;
    let mut child = tokio::process::Command::new(example("client"))
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
    assert_eq!(line(&mut lines).await, r#"news admin {"n":1}"#);

    // 4002 "moved": it comes back (a new client) and subscribes again.
    let kick = |id: &str, code| pb::KickClientsRequest {
        target: Some(pb::kick_clients_request::Target::ClientId(id.into())),
        code,
        reason: "moved".into(),
    };
    admin.kick_clients(kick(&first, 4002)).await.unwrap();
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
    admin.broadcast(broadcast(r#"{"n":2}"#)).await.unwrap();
    assert_eq!(line(&mut lines).await, r#"news admin {"n":2}"#);

    // A plain kick (4000): it stops, and says why.
    admin.kick_clients(kick(&second, 4000)).await.unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("it exits")
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("not reconnecting: kicked by the operator: 4000 moved"),
        "{log}"
    );
    server.stop().await;
}

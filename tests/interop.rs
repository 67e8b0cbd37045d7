//! The admin API from another language: a Python client generated from the
//! proto at run time (examples/python/admin_client.py) drives a live server.

mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_python_client_drives_every_rpc() {
    let server = TestServer::spawn().await;
    let mut a = server.client().await;
    a.subscribe("py").await;
    let mut b = server.client().await;
    let out = tokio::process::Command::new(common::python())
        .arg("examples/python/admin_client.py")
        .args([server.admin.to_string(), a.id.clone(), b.id.clone()])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Python client failed (scripts/test installs grpcio and grpcio-tools in target/venv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ending its own watch is not a failure: nothing on stderr.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "a clean run prints no traceback"
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["clients"], 2);
    assert_eq!(seen["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!((&seen["listed"], &seen["total"]), (&json!([a.id]), &json!(1)));
    assert_eq!(seen["get_topics"], json!(["py"]));
    assert_eq!(seen["recipients"], 1);
    assert_eq!(
        (&seen["not_found"], &seen["invalid"]),
        (&json!("NOT_FOUND"), &json!("INVALID_ARGUMENT"))
    );
    assert_eq!(seen["kicked"], 1);
    assert_eq!(seen["kick_events"], json!([[a.id, 4321]]));
    assert_eq!(seen["drain_last"], json!({"closed": 1, "remaining": 0, "done": true}));

    assert_eq!(
        a.recv().await,
        json!({"type":"message","topic":"py","from":"admin","data":{"from":"python"}})
    );
    assert_eq!(a.recv().await, json!({"type":"message","from":"admin","data":"direct"}));
    assert_eq!(a.closed().await, (4321, "from python".to_string()));
    assert_eq!(b.closed().await, (1012, "service restart".to_string()));
    server.stop().await;
}

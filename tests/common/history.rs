//! Helpers for topics with history: subscribe with `since`, publish and
//! read numbered messages.

use serde_json::{json, Value};

use super::WsClient;

/// Subscribes with an id (and `since`, if given); returns the ack.
pub async fn subscribe(client: &mut WsClient, topic: &str, since: Option<Value>) -> Value {
    let mut request = json!({"type":"subscribe","topic":topic,"id":"s"});
    if let Some(since) = since {
        request["since"] = since;
    }
    let ack = client.request(request).await;
    assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!("s")), "{ack}");
    ack
}

/// Publishes `n` messages numbered from `first`, waiting for each ack;
/// returns the offsets the acks gave.
pub async fn publish(client: &mut WsClient, topic: &str, first: u64, n: u64) -> Vec<u64> {
    let mut offsets = Vec::new();
    for i in first..first + n {
        let ack = client
            .request(json!({"type":"publish","topic":topic,"data":{"n":i},"id":i}))
            .await;
        assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!(i)), "{ack}");
        offsets.push(
            ack["offset"]
                .as_u64()
                .expect("a publish to a history topic is acked with its offset"),
        );
    }
    offsets
}

/// The next message: (offset, n).
pub async fn message(client: &mut WsClient) -> (u64, u64) {
    let m = client.recv().await;
    assert_eq!(m["type"], "message", "{m}");
    (
        m["offset"].as_u64().expect("offset"),
        m["data"]["n"].as_u64().expect("n"),
    )
}

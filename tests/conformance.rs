//! RFC 6455 conformance with raw frames: every way a client can break the
//! framing rules fails the connection with the close code §7.1.7 and §7.4.1
//! ask for, is counted as the right disconnect reason, and ends with a FIN,
//! never a reset (which browsers report as 1006).

mod common;

use common::raw::{End, RawClient, BINARY, CLOSE, CONTINUATION, PING, TEXT};
use common::{event_for, TestServer};
use wshub::admin::pb::EventKind;

/// One frame to send: (fin, rsv, opcode, masked, payload).
type Frame = (bool, u8, u8, bool, Vec<u8>);

fn frame(opcode: u8, payload: &[u8]) -> Frame {
    (true, 0, opcode, true, payload.to_vec())
}

/// Sends `frames` and checks the close code, the counted reason, and a clean end.
async fn fails_with(frames: Vec<Frame>, code: u16, reason: &str) {
    let server = TestServer::spawn().await;
    let mut events = server.watch(&[EventKind::Disconnected]).await;
    let mut client = RawClient::connect(server.ws).await;
    for (fin, rsv, opcode, masked, payload) in frames {
        client.send(fin, rsv, opcode, masked, &payload).await.unwrap();
    }
    assert_eq!(client.close_frame().await.0, code);
    assert_eq!(client.finish().await, End::Fin, "the socket ends without a reset");
    let event = event_for(&mut events, EventKind::Disconnected, &client.id).await;
    assert_eq!((event.reason.as_str(), event.code), (reason, u32::from(code)));
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_fail_with_1002() {
    fails_with(vec![(true, 0b100, TEXT, true, b"{}".to_vec())], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_data_opcode_fails_with_1002() {
    fails_with(vec![frame(0x3, b"x")], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_control_opcode_fails_with_1002() {
    fails_with(vec![frame(0xB, b"")], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frame_over_125_bytes_fails_with_1002() {
    fails_with(vec![frame(PING, &[b'p'; 126])], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_control_frame_fails_with_1002() {
    fails_with(vec![(false, 0, PING, true, b"p".to_vec())], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_with_nothing_to_continue_fails_with_1002() {
    fails_with(vec![frame(CONTINUATION, b"x")], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_message_inside_a_fragmented_one_fails_with_1002() {
    let frames = vec![(false, 0, TEXT, true, b"{\"type\":".to_vec()), frame(TEXT, b"{}")];
    fails_with(frames, 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_client_frame_fails_with_1002() {
    fails_with(vec![(true, 0, TEXT, false, b"{}".to_vec())], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_payload_of_one_byte_fails_with_1002() {
    fails_with(vec![frame(CLOSE, &[0x03])], 1002, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_an_invalid_code_is_answered_1002() {
    // 1005 is reserved: it must never be sent on the wire.
    let server = TestServer::spawn().await;
    let mut events = server.watch(&[EventKind::Disconnected]).await;
    let mut client = RawClient::connect(server.ws).await;
    client.send(true, 0, CLOSE, true, &1005u16.to_be_bytes()).await.unwrap();
    assert_eq!(client.close_frame().await.0, 1002);
    let event = event_for(&mut events, EventKind::Disconnected, &client.id).await;
    assert_eq!(event.reason, "protocol_error");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_text_fails_with_1007() {
    fails_with(vec![frame(TEXT, b"{\"x\":\"\xff\"}")], 1007, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_across_fragments_fails_with_1007() {
    // A two-byte character cut in half, then completed with a wrong byte.
    let frames = vec![
        (false, 0, TEXT, true, b"{\"x\":\"\xc3".to_vec()),
        frame(CONTINUATION, b"\x28\"}"),
    ];
    fails_with(frames, 1007, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_close_reason_fails_with_1007() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye \xff");
    fails_with(vec![frame(CLOSE, &payload)], 1007, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_fail_with_1003() {
    fails_with(vec![frame(BINARY, b"\x00\x01")], 1003, "protocol_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_70_kib_message_gets_1009_then_a_fin_not_a_reset() {
    // The server stops reading at the frame header; the rest of the 70 KiB
    // is still unread when it closes, which is what used to cause a reset.
    let text = format!("{{\"type\":\"publish\",\"data\":\"{}\"}}", "x".repeat(70 * 1024));
    fails_with(vec![frame(TEXT, text.as_bytes())], 1009, "too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_ends_with_the_code_then_a_fin() {
    let server = TestServer::spawn().await;
    let mut client = RawClient::connect(server.ws).await;
    let kick = wshub::admin::pb::KickClientsRequest {
        target: Some(wshub::admin::pb::kick_clients_request::Target::ClientId(
            client.id.clone(),
        )),
        code: 4002,
        reason: "moved".into(),
    };
    server.admin().await.kick_clients(kick).await.unwrap();
    assert_eq!(client.close_frame().await, (4002, "moved".to_string()));
    assert_eq!(client.finish().await, End::Fin);
    server.stop().await;
}

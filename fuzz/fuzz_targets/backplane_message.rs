//! What another node (or anything that can publish to Redis) sends this
//! node: control messages and publish envelopes. Any bytes are refused or
//! read, never a panic; a message that is read encodes and reads back the
//! same; node ids and topics inside it are valid ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub::backplane::control::{Message, Op};

fuzz_target!(|data: &[u8]| {
    let Some(message) = Message::decode(data) else { return };
    let again = Message::decode(&message.encode()).expect("an encoded message reads back");
    assert_eq!(format!("{message:?}"), format!("{again:?}"));
    if let Message::Request { from, op, .. } = &message {
        assert!(wshub::types::NodeId::parse(from.as_str()).is_ok());
        if let Op::Broadcast { topic: Some(topic), .. } = op {
            assert!(wshub::types::Topic::parse(topic.as_str()).is_ok());
        }
    }
});

//! The admin plane's input validation: page tokens, message data, client
//! ids, topics and kick codes and reasons. Any input is accepted or refused
//! with an AdminError (a gRPC status), never a panic; accepted data is JSON
//! within the size limit, and an accepted page token round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub::admin::convert;
use wshub::hub::Order;

fuzz_target!(|input: (&str, u32)| {
    let (text, code) = input;
    for order in [Order::ConnectedAt, Order::QueueDepth] {
        if let Ok(Some(cursor)) = convert::decode_cursor(text, order) {
            let again = convert::encode_cursor(cursor);
            assert!(convert::decode_cursor(&again, order).unwrap().is_some());
        }
    }
    if let Ok(data) = convert::json_data(text, 4096) {
        assert!(data.get().len() <= 4096);
        // Checked as raw JSON: data passes byte for byte, and `5E555` is
        // valid JSON no f64 holds.
        serde_json::from_str::<Box<serde_json::value::RawValue>>(data.get()).expect("accepted data is JSON");
    }
    let _ = convert::client_ref(text);
    let _ = convert::optional_topic(text);
    if let Ok(close) = convert::kick_close(code, text) {
        assert!((4000..=4999).contains(&close));
        assert!(text.len() <= wshub::close::MAX_REASON_BYTES);
    }
});

//! Client protocol v1 (JSON text frames), both directions. `docs/protocol.md`
//! is the contract this module implements.
//!
//! Requests are parsed without copying `data`: it stays the client's JSON
//! text ([`RawValue`]) and is spliced into the outgoing frame unchanged.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// An encoded text frame; clones share the bytes.
pub type Frame = Utf8Bytes;

pub use crate::types::{ClientId, Topic, MAX_TOPIC_LEN};

/// The deepest `data` may nest arrays and objects. A client decoder that
/// recurses (most do) must never be handed more than this.
pub const MAX_DATA_DEPTH: usize = 128;

/// Error codes answered in `{"type":"error"}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    UnknownType,
    InvalidTopic,
    TooManyTopics,
    PublishDisabled,
    Forbidden,
    RateLimited,
    PresenceDisabled,
    /// In a cluster, a publish to a topic with history that the backplane
    /// did not number in time.
    Unavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 9] = [
        Self::BadRequest,
        Self::UnknownType,
        Self::InvalidTopic,
        Self::TooManyTopics,
        Self::PublishDisabled,
        Self::Forbidden,
        Self::RateLimited,
        Self::PresenceDisabled,
        Self::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownType => "unknown_type",
            Self::InvalidTopic => "invalid_topic",
            Self::TooManyTopics => "too_many_topics",
            Self::PublishDisabled => "publish_disabled",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::PresenceDisabled => "presence_disabled",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A refused request: the code, a human message, and the request's id if it had a valid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub id: Option<RequestId>,
}

/// A request's `id` (a JSON string or number), kept as its JSON text to echo back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Box<str>);

/// A parsed client request.
#[derive(Debug)]
pub enum Request<'a> {
    Subscribe {
        topic: Topic,
        id: Option<RequestId>,
        /// Where the client's history of the topic stopped: it asks for
        /// what it missed since.
        since: Option<Since>,
        /// It wants the topic's joins and leaves (topics with presence).
        join_leave: bool,
    },
    /// `presence` (the topic's clients) or, with `stats`,
    /// `presence_stats` (how many clients and users).
    Presence {
        topic: Topic,
        id: Option<RequestId>,
        stats: bool,
    },
    Unsubscribe {
        topic: Topic,
        id: Option<RequestId>,
    },
    Publish {
        topic: Option<Topic>,
        data: &'a RawValue,
        id: Option<RequestId>,
    },
    Ping {
        id: Option<RequestId>,
    },
}

impl Request<'_> {
    /// The request's id, to echo in its answer.
    pub fn id(&self) -> Option<&RequestId> {
        match self {
            Request::Subscribe { id, .. }
            | Request::Unsubscribe { id, .. }
            | Request::Publish { id, .. }
            | Request::Presence { id, .. }
            | Request::Ping { id } => id.as_ref(),
        }
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    topic: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    join_leave: Option<&'a RawValue>,
}

/// The last offset a client saw on a topic, and the history it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub offset: u64,
    pub epoch: Box<str>,
}

/// The longest epoch a client may send back.
pub const MAX_EPOCH_LEN: usize = 64;

/// A field that is present is `Some`, even when its value is `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn bad(message: impl Into<Cow<'static, str>>, id: &Option<RequestId>) -> RequestError {
    RequestError {
        code: ErrorCode::BadRequest,
        message: message.into(),
        id: id.clone(),
    }
}

/// Parses one text frame into a request.
pub fn parse(text: &str) -> Result<Request<'_>, RequestError> {
    if !text.trim_start().starts_with('{') {
        return Err(bad("a request must be a JSON object", &None));
    }
    let fields: Fields = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}"), &None))?;
    let id = match fields.id {
        None => None,
        // Any JSON number is kept as sent, even one no f64 holds (1e400).
        Some(raw)
            if raw
                .get()
                .starts_with(['"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) =>
        {
            check_id(raw.get()).map_err(|e| bad(format!("`id`: {e}"), &None))?;
            Some(RequestId(raw.get().into()))
        }
        Some(_) => return Err(bad("`id` must be a string or a number", &None)),
    };
    let kind = fields.kind.ok_or_else(|| bad("missing `type`", &id))?;
    let kind: Cow<str> = serde_json::from_str(kind.get()).map_err(|_| bad("`type` must be a string", &id))?;
    let topic = |required: bool| -> Result<Option<Topic>, RequestError> {
        let Some(raw) = fields.topic else {
            return if required {
                Err(bad("missing `topic`", &id))
            } else {
                Ok(None)
            };
        };
        let name: Cow<str> = serde_json::from_str(raw.get()).map_err(|_| bad("`topic` must be a string", &id))?;
        Topic::parse(&name).map(Some).map_err(|_| RequestError {
            code: ErrorCode::InvalidTopic,
            message: "a topic is 1-128 characters of A-Za-z0-9_.:-".into(),
            id: id.clone(),
        })
    };
    match kind.as_ref() {
        "subscribe" | "unsubscribe" => {
            let topic = topic(true)?.ok_or_else(|| bad("missing `topic`", &id))?;
            Ok(if kind == "subscribe" {
                let since = match fields.since {
                    None => None,
                    Some(raw) => Some(
                        serde_json::from_str::<Since>(raw.get())
                            .ok()
                            .filter(|s| s.epoch.len() <= MAX_EPOCH_LEN)
                            .ok_or_else(|| {
                                bad(
                                    "`since` must be {\"offset\": a whole number, \"epoch\": a string of at most 64 bytes}",
                                    &id,
                                )
                            })?,
                    ),
                };
                let join_leave = match fields.join_leave.map(RawValue::get) {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(_) => return Err(bad("`join_leave` must be true or false", &id)),
                };
                Request::Subscribe {
                    topic,
                    id,
                    since,
                    join_leave,
                }
            } else {
                Request::Unsubscribe { topic, id }
            })
        }
        "publish" => {
            let topic = topic(false)?;
            let data = fields.data.ok_or_else(|| bad("missing `data`", &id))?;
            check_data(data.get()).map_err(|e| bad(format!("`data`: {e}"), &id))?;
            Ok(Request::Publish { topic, data, id })
        }
        "ping" => Ok(Request::Ping { id }),
        "presence" | "presence_stats" => {
            let topic = topic(true)?.ok_or_else(|| bad("missing `topic`", &id))?;
            Ok(Request::Presence {
                topic,
                id,
                stats: kind == "presence_stats",
            })
        }
        other => Err(RequestError {
            code: ErrorCode::UnknownType,
            message: format!("unknown request type `{}`", other.chars().take(64).collect::<String>()).into(),
            id,
        }),
    }
}

/// The longest number `data` may hold, in characters: Python's `json`
/// refuses integers past 4 300 digits, and no double needs more than this.
pub const MAX_NUMBER_LEN: usize = 100;

/// Refuses what serde_json accepts but strict decoders (browsers'
/// `JSON.parse` is lenient; others are not) reject or choke on: a string
/// with an unpaired surrogate escape (`"\ud800"`), nesting deeper than
/// [`MAX_DATA_DEPTH`], and a number no IEEE double holds (`1e400`, which
/// Go's `encoding/json` refuses) or longer than [`MAX_NUMBER_LEN`].
/// `text` is one valid JSON value.
pub fn check_data(text: &str) -> Result<(), &'static str> {
    scan(text, true)
}

/// The checks of [`check_data`] but numbers: an `id` is echoed as sent.
fn check_id(text: &str) -> Result<(), &'static str> {
    scan(text, false)
}

fn scan(text: &str, numbers: bool) -> Result<(), &'static str> {
    const LONE: &str = "a string holds an unpaired surrogate escape";
    let bytes = text.as_bytes();
    let (mut depth, mut i, mut in_string, mut high) = (0usize, 0, false, false);
    while let Some(&b) = bytes.get(i) {
        i += 1;
        if !in_string {
            match b {
                b'-' | b'0'..=b'9' if numbers => {
                    let start = i - 1;
                    while bytes
                        .get(i)
                        .is_some_and(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                    {
                        i += 1;
                    }
                    if i - start > MAX_NUMBER_LEN {
                        return Err("a number longer than 100 characters");
                    }
                    if !text[start..i].parse::<f64>().is_ok_and(f64::is_finite) {
                        return Err("a number no IEEE double holds");
                    }
                }
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DATA_DEPTH {
                        return Err("nested more than 128 levels deep");
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            continue;
        }
        let unit = match (b, bytes.get(i)) {
            (b'\\', Some(b'u')) => {
                let hex = text.get(i + 1..i + 5).and_then(|h| u16::from_str_radix(h, 16).ok());
                i += 5;
                hex.ok_or("invalid \\u escape")?
            }
            (b'\\', _) => {
                i += 1;
                0
            }
            (b'"', _) => {
                in_string = false;
                0
            }
            _ => 0,
        };
        match unit {
            0xD800..=0xDBFF if !high => high = true,
            0xDC00..=0xDFFF if high => high = false,
            0xD800..=0xDFFF => return Err(LONE),
            _ if high => return Err(LONE),
            _ => {}
        }
    }
    Ok(())
}

/// `{"type":"message",...}`: built once per publish and shared by every
/// recipient. Topic and sender are validated names, so they need no escaping.
pub fn message(topic: Option<&Topic>, from: &str, data: &RawValue) -> Utf8Bytes {
    let data = data.get();
    let mut s = String::with_capacity(48 + from.len() + topic.map_or(0, |t| t.as_str().len()) + data.len());
    s.push_str(r#"{"type":"message","#);
    if let Some(topic) = topic {
        s.push_str(r#""topic":""#);
        s.push_str(topic.as_str());
        s.push_str(r#"","#);
    }
    s.push_str(r#""from":""#);
    s.push_str(from);
    s.push_str(r#"","data":"#);
    s.push_str(data);
    s.push('}');
    s.into()
}

/// A message frame carrying its offset in the topic's history:
/// `{..., "offset": N}`. `frame` is one [`message`] built.
pub fn with_offset(frame: &Utf8Bytes, offset: u64) -> Utf8Bytes {
    let body = frame.as_str().strip_suffix('}').unwrap_or(frame.as_str());
    let mut s = String::with_capacity(body.len() + 32);
    s.push_str(body);
    s.push_str(r#","offset":"#);
    s.push_str(&offset.to_string());
    s.push('}');
    s.into()
}

/// The ack of a publish to a topic with history: `{"type":"ack","id":...,"offset":N}`.
pub fn ack_published(id: &RequestId, offset: u64) -> Utf8Bytes {
    format!(r#"{{"type":"ack","id":{},"offset":{offset}}}"#, id.0).into()
}

/// The ack of a subscribe to a topic with history: its latest offset and
/// epoch, and whether what the client missed follows (when it asked).
pub fn ack_subscribed(id: &RequestId, offset: u64, epoch: &str, recovered: Option<bool>) -> Utf8Bytes {
    let recovered = recovered.map(|r| format!(r#","recovered":{r}"#)).unwrap_or_default();
    // An epoch is made of hex digits and `-`: nothing to escape.
    format!(
        r#"{{"type":"ack","id":{},"offset":{offset},"epoch":"{epoch}"{recovered}}}"#,
        id.0
    )
    .into()
}

/// The ack of a subscribe with `since` to a topic without history.
pub fn ack_not_recovered(id: &RequestId) -> Utf8Bytes {
    format!(r#"{{"type":"ack","id":{},"recovered":false}}"#, id.0).into()
}

/// `{"type":"presence","id":...,"topic":...,"clients":[{"client_id":...,"user":...}],"total":N}`:
/// `clients` (id, user; an empty user is left out) lists at most
/// `--presence-max` of the topic's `total`.
pub fn presence(id: Option<&RequestId>, topic: &Topic, clients: &[(String, &str)], total: usize) -> Utf8Bytes {
    let list: Vec<serde_json::Value> = clients
        .iter()
        .map(|(client, user)| match user {
            &"" => serde_json::json!({ "client_id": client }),
            user => serde_json::json!({ "client_id": client, "user": user }),
        })
        .collect();
    let id = id.map(|id| format!(r#""id":{},"#, id.0)).unwrap_or_default();
    let clients = serde_json::Value::from(list);
    format!(r#"{{"type":"presence",{id}"topic":"{topic}","clients":{clients},"total":{total}}}"#).into()
}

/// `{"type":"presence_stats","id":...,"topic":...,"clients":N,"users":M}`.
pub fn presence_stats(id: Option<&RequestId>, topic: &Topic, clients: usize, users: usize) -> Utf8Bytes {
    let id = id.map(|id| format!(r#""id":{},"#, id.0)).unwrap_or_default();
    format!(r#"{{"type":"presence_stats",{id}"topic":"{topic}","clients":{clients},"users":{users}}}"#).into()
}

/// `{"type":"join"|"leave","topic":...,"client_id":...,"user":...}` (no
/// `user` for a client without one).
pub fn join_leave(kind: &str, topic: &Topic, client: &str, user: &str) -> Utf8Bytes {
    let user = if user.is_empty() {
        String::new()
    } else {
        format!(r#","user":{}"#, serde_json::Value::from(user))
    };
    format!(r#"{{"type":"{kind}","topic":"{topic}","client_id":"{client}"{user}}}"#).into()
}

/// The first frame a client receives.
/// `{"type":"welcome",...}`: the client's id, the node it is on (its
/// characters need no escaping), the ping interval, the largest message the
/// node takes (`--max-message-bytes`) and, with auth on, the token's `user`.
pub fn welcome(
    client_id: ClientId,
    node: &crate::types::NodeId,
    ping_interval_ms: u128,
    max_message_bytes: usize,
    user: Option<&str>,
) -> Utf8Bytes {
    let user = user
        .map(|u| format!(r#","user":{}"#, serde_json::Value::from(u)))
        .unwrap_or_default();
    format!(
        r#"{{"type":"welcome","client_id":"{client_id}","node":"{node}","ping_interval_ms":{ping_interval_ms},"max_message_bytes":{max_message_bytes}{user}}}"#
    )
    .into()
}

/// `{"type":"pong"}`, with the request's id if it had one.
pub fn pong(id: Option<&RequestId>) -> Utf8Bytes {
    match id {
        Some(id) => format!(r#"{{"type":"pong","id":{}}}"#, id.0).into(),
        None => Utf8Bytes::from_static(r#"{"type":"pong"}"#),
    }
}

/// `{"type":"ack","id":...}`.
pub fn ack(id: &RequestId) -> Utf8Bytes {
    format!(r#"{{"type":"ack","id":{}}}"#, id.0).into()
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    code: &'static str,
    message: &'a str,
}

/// `{"type":"error","id":...,"code":...,"message":...}`.
pub fn error(e: &RequestError) -> Utf8Bytes {
    let id =
        e.id.as_ref()
            .and_then(|id| serde_json::from_str::<&RawValue>(&id.0).ok());
    let frame = ErrorFrame {
        kind: "error",
        id,
        code: e.code.as_str(),
        message: &e.message,
    };
    // Serializing a struct of strings cannot fail.
    serde_json::to_string(&frame).unwrap_or_default().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse(text).unwrap_err().code
    }

    #[test]
    fn parses_every_request() {
        assert!(matches!(
            parse(r#"{"type":"subscribe","topic":"a.b:c-d_1"}"#),
            Ok(Request::Subscribe { .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"ping","id":7}"#),
            Ok(Request::Ping { id: Some(_) })
        ));
        let Ok(Request::Publish { topic: None, data, .. }) = parse(r#"{"type":"publish","data":null}"#) else {
            panic!("publish with null data")
        };
        assert_eq!(data.get(), "null");
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(code("not json"), ErrorCode::BadRequest);
        assert_eq!(code("[1,2]"), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"topic":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"subscribe"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"subscribe","topic":7}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"publish","topic":"a"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"subscribe","topic":"a b"}"#), ErrorCode::InvalidTopic);
        assert_eq!(
            code(&format!(r#"{{"type":"subscribe","topic":"{}"}}"#, "a".repeat(129))),
            ErrorCode::InvalidTopic
        );
        assert_eq!(
            parse(r#"{"type":"dance","id":"x"}"#).unwrap_err().id,
            Some(RequestId(r#""x""#.into()))
        );
    }

    #[test]
    fn message_keeps_data_text() {
        let data: &RawValue = serde_json::from_str(r#"{"b": 1.50,"a":[true]}"#).unwrap();
        let topic = Topic::parse("news").unwrap();
        assert_eq!(
            message(Some(&topic), "c-1", data).as_str(),
            r#"{"type":"message","topic":"news","from":"c-1","data":{"b": 1.50,"a":[true]}}"#
        );
        assert_eq!(
            message(None, "admin", data).as_str(),
            r#"{"type":"message","from":"admin","data":{"b": 1.50,"a":[true]}}"#
        );
    }

    #[test]
    fn ids_keep_any_json_number_as_sent() {
        let Ok(Request::Ping { id: Some(id) }) = parse(r#"{"type":"ping","id":1e400}"#) else {
            panic!("1e400 is a JSON number")
        };
        assert_eq!(pong(Some(&id)).as_str(), r#"{"type":"pong","id":1e400}"#);
        // Found by the `client_frame` fuzz target (whose own check parsed
        // frames into a Value, which refuses 1e400): the error frame
        // echoing such an id is valid JSON all the same.
        let Err(e) = parse(r#"{"type":"publish","data":"\ud800","id":1e400}"#) else {
            panic!("a lone surrogate is refused")
        };
        let frame = error(&e);
        assert!(frame.as_str().contains(r#""id":1e400"#));
        serde_json::from_str::<Box<RawValue>>(frame.as_str()).expect("valid JSON");
        assert_eq!(code(r#"{"type":"ping","id":true}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn data_strict_decoders_refuse_is_refused() {
        assert!(check_data(r#""\ud83d\ude00""#).is_ok(), "a surrogate pair");
        assert!(check_data(r#""\ud800""#).is_err(), "a lone high surrogate");
        assert!(check_data(r#""\udc00x""#).is_err(), "a lone low surrogate");
        assert!(check_data(r#""\ud800\u0041""#).is_err(), "high then not low");
        assert!(
            check_data(r#"["\\ud800"]"#).is_ok(),
            "an escaped backslash, not an escape"
        );
        assert!(check_data(r#"{"a":"[[[{{{"}"#).is_ok(), "brackets inside strings");
        let nested = |n| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(check_data(&nested(MAX_DATA_DEPTH)).is_ok());
        assert!(check_data(&nested(MAX_DATA_DEPTH + 1)).is_err());
    }

    #[test]
    fn data_numbers_must_fit_a_double() {
        for fine in [
            "0",
            "-1.5e300",
            "1e-400",
            "[1,2.5,-0]",
            r#"{"n":12345678901234567890}"#,
            r#""1e400""#,
        ] {
            assert!(check_data(fine).is_ok(), "{fine}");
        }
        let long = "9".repeat(MAX_NUMBER_LEN + 1);
        for refused in ["1e400", "-1e309", r#"{"a":[1,1e999]}"#, long.as_str()] {
            assert!(check_data(refused).is_err(), "{refused}");
        }
        assert!(check_data(&"9".repeat(MAX_NUMBER_LEN)).is_ok());
        let Err(e) = parse(r#"{"type":"publish","data":{"n":1e400},"id":1e400}"#) else {
            panic!("1e400 in data is refused")
        };
        assert_eq!(
            (e.code, e.id.map(|id| id.0)),
            (ErrorCode::BadRequest, Some("1e400".into()))
        );
    }

    proptest::proptest! {
        /// Any text yields a request or an error, never a panic; a request's
        /// data always passes the strict checks.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,256}") {
            match parse(&text) {
                Ok(Request::Publish { data, .. }) => proptest::prop_assert!(check_data(data.get()).is_ok()),
                Ok(_) => {}
                // The refusal is itself a well-formed error frame.
                Err(e) => {
                    let frame: serde_json::Value = serde_json::from_str(error(&e).as_str()).unwrap();
                    proptest::prop_assert_eq!(&frame["type"], "error");
                    proptest::prop_assert_eq!(&frame["code"], e.code.as_str());
                }
            }
        }

        /// Any bytes that are UTF-8 (a text frame's payload) behave the same.
        #[test]
        fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = parse(text).map_err(|e| error(&e));
            }
        }

        #[test]
        fn any_json_shaped_text_parses_or_is_refused(
            kind in proptest::prop_oneof!["\"subscribe\"", "\"publish\"", "\"ping\"", "[^\"]{0,8}"],
            value in "[\\[\\]{}\":,\\\\ud80\\-e0-9a-z ]{0,64}",
        ) {
            let text = format!(r#"{{"type":{kind},"topic":{value},"data":{value},"id":{value}}}"#);
            let _ = parse(&text);
            let _ = check_data(&value);
        }
    }
}

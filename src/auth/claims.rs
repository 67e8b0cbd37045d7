//! What one client may do, decided in its reader before a request reaches
//! the hub: the node's `--client-publish` switch and the client's token
//! claims (`topics`, `publish`).

use super::identity::Identity;
use crate::config::ClientPublish;
use crate::protocol::{ErrorCode, Request, RequestError};

/// Checks a parsed request against the node's publish switch and the
/// client's claims; `Err` is the error frame to answer with.
pub fn check(request: &Request, publish: ClientPublish, identity: Option<&Identity>) -> Result<(), RequestError> {
    let refuse = |code, message: &'static str, id: &Option<_>| {
        Err(RequestError {
            code,
            message: message.into(),
            id: id.clone(),
        })
    };
    match request {
        Request::Ping { .. } | Request::Unsubscribe { .. } => Ok(()),
        Request::Subscribe { topic, id, .. } | Request::Presence { topic, id, .. } => {
            match identity.and_then(Identity::topics) {
                Some(rules) if !rules.allows(topic.as_str()) => {
                    refuse(ErrorCode::Forbidden, "your token does not allow this topic", id)
                }
                _ => Ok(()),
            }
        }
        Request::Publish { topic, id, .. } => {
            match (publish, topic) {
                (ClientPublish::None, _) => {
                    return refuse(ErrorCode::PublishDisabled, "publishing is disabled on this server", id)
                }
                (ClientPublish::Topics, None) => {
                    return refuse(
                        ErrorCode::PublishDisabled,
                        "publishing to everyone is disabled on this server; publish to a topic",
                        id,
                    )
                }
                _ => {}
            }
            let Some(identity) = identity else { return Ok(()) };
            if !identity.publish() {
                return refuse(ErrorCode::Forbidden, "your token does not allow publishing", id);
            }
            match (identity.topics(), topic) {
                (Some(rules), Some(topic)) if !rules.allows(topic.as_str()) => {
                    refuse(ErrorCode::Forbidden, "your token does not allow this topic", id)
                }
                (Some(rules), None) if !rules.allows_all() => refuse(
                    ErrorCode::Forbidden,
                    "your token does not allow publishing to everyone",
                    id,
                ),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;

    fn identity(topics: Option<&[&str]>, publish: bool) -> Identity {
        let claims = serde_json::json!({"sub": "u", "exp": u64::MAX / 4, "topics": topics, "publish": publish});
        let config = crate::config::AuthConfig {
            jwt_secret: Some("k".into()),
            ..Default::default()
        };
        let verifier = crate::auth::identity::Verifier::from_config(&config).unwrap().unwrap();
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"k").unwrap(),
        )
        .unwrap();
        verifier.verify(&token).unwrap()
    }

    fn code(text: &str, publish: ClientPublish, id: Option<&Identity>) -> Option<&'static str> {
        check(&parse(text).unwrap(), publish, id).err().map(|e| e.code.as_str())
    }

    #[test]
    fn publish_switch() {
        let to_topic = r#"{"type":"publish","topic":"t","data":1}"#;
        let to_all = r#"{"type":"publish","data":1}"#;
        assert_eq!(code(to_all, ClientPublish::All, None), None);
        assert_eq!(code(to_all, ClientPublish::Topics, None), Some("publish_disabled"));
        assert_eq!(code(to_topic, ClientPublish::Topics, None), None);
        assert_eq!(code(to_topic, ClientPublish::None, None), Some("publish_disabled"));
    }

    #[test]
    fn token_claims() {
        let scoped = identity(Some(&["news", "chat.*"]), true);
        let all = ClientPublish::All;
        assert_eq!(code(r#"{"type":"subscribe","topic":"news"}"#, all, Some(&scoped)), None);
        assert_eq!(
            code(r#"{"type":"subscribe","topic":"chat.1"}"#, all, Some(&scoped)),
            None
        );
        assert_eq!(
            code(r#"{"type":"subscribe","topic":"admin"}"#, all, Some(&scoped)),
            Some("forbidden")
        );
        assert_eq!(
            code(r#"{"type":"publish","topic":"x","data":1}"#, all, Some(&scoped)),
            Some("forbidden")
        );
        assert_eq!(
            code(r#"{"type":"publish","data":1}"#, all, Some(&scoped)),
            Some("forbidden")
        );
        assert_eq!(
            code(r#"{"type":"unsubscribe","topic":"admin"}"#, all, Some(&scoped)),
            None
        );
        let listener = identity(None, false);
        assert_eq!(
            code(r#"{"type":"subscribe","topic":"any"}"#, all, Some(&listener)),
            None
        );
        assert_eq!(
            code(r#"{"type":"publish","topic":"any","data":1}"#, all, Some(&listener)),
            Some("forbidden")
        );
        let everything = identity(Some(&["*"]), true);
        assert_eq!(code(r#"{"type":"publish","data":1}"#, all, Some(&everything)), None);
    }
}

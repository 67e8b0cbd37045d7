//! What one client may do, decided in its reader before a request reaches
//! the hub: the node's `--client-publish` switch, the client's token claims
//! (`topics`, `publish`), and its request rate.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::time::{Duration, Instant};

use crate::config::ClientPublish;
use crate::identity::Identity;
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
        Request::Subscribe { topic, id } => match identity.and_then(Identity::topics) {
            Some(rules) if !rules.allows(topic.as_str()) => {
                refuse(ErrorCode::Forbidden, "your token does not allow this topic", id)
            }
            _ => Ok(()),
        },
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

/// One client's control frames (pings, pongs) in the current second,
/// against `--client-control-rate`: a fixed window, cheap enough to keep
/// for every connection.
#[derive(Debug)]
pub struct ControlRate {
    window: Instant,
    count: u32,
}

impl ControlRate {
    pub fn new(now: Instant) -> ControlRate {
        ControlRate { window: now, count: 0 }
    }

    /// Counts one control frame arrived at `now`; `false` when it is one
    /// more than `limit` in the same second (`limit` 0: no limit).
    pub fn take(&mut self, now: Instant, limit: u32) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            (self.window, self.count) = (now, 0);
        }
        self.count = self.count.saturating_add(1);
        limit == 0 || self.count <= limit
    }
}

/// Refusals closer together than this belong to one stretch over the limit.
const OVER_GAP: Duration = Duration::from_secs(1);

/// One client's request rate: a token bucket (governor's GCRA), and how
/// long the client has stayed over it.
pub struct Rate {
    limiter: DefaultDirectRateLimiter,
    grace: Duration,
    /// Start of the current stretch of refusals, and the last refusal.
    over: Option<(Instant, Instant)>,
}

/// What to do with a request under the rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Answer `rate_limited`; `first` on the client's first refusal (log it once).
    Refuse {
        first: bool,
    },
    /// The client stayed over the limit for the grace period: close with 4029.
    Close,
}

impl Rate {
    pub fn new(quota: Quota, grace: Duration) -> Rate {
        Rate {
            limiter: governor::RateLimiter::direct(quota),
            grace,
            over: None,
        }
    }

    /// A quota of `per_second` requests with bursts of `burst`.
    pub fn quota(per_second: NonZeroU32, burst: NonZeroU32) -> Quota {
        Quota::per_second(per_second).allow_burst(burst)
    }

    /// Takes one request. A client "stays over" the limit while its refusals
    /// come less than a second apart; once such a stretch lasts `grace`, it is closed.
    pub fn take(&mut self) -> Verdict {
        if self.limiter.check().is_ok() {
            return Verdict::Allow;
        }
        let now = Instant::now();
        let first = self.over.is_none();
        let start = match self.over {
            Some((start, last)) if now.duration_since(last) < OVER_GAP => start,
            _ => now,
        };
        self.over = Some((start, now));
        if now.duration_since(start) >= self.grace {
            Verdict::Close
        } else {
            Verdict::Refuse { first }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::protocol::parse;

    fn identity(topics: Option<&[&str]>, publish: bool) -> Identity {
        let claims = serde_json::json!({"sub": "u", "exp": u64::MAX / 4, "topics": topics, "publish": publish});
        let config = crate::config::AuthConfig {
            jwt_secret: Some("k".into()),
            ..Default::default()
        };
        let verifier = crate::identity::Verifier::from_config(&config).unwrap().unwrap();
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

    #[tokio::test(start_paused = true)]
    async fn rate_refuses_then_closes_after_the_grace() {
        let quota = Rate::quota(NonZeroU32::new(10).unwrap(), NonZeroU32::new(2).unwrap());
        let mut rate = Rate::new(quota, Duration::from_secs(3));
        assert_eq!(rate.take(), Verdict::Allow);
        assert_eq!(rate.take(), Verdict::Allow);
        assert_eq!(rate.take(), Verdict::Refuse { first: true });
        assert_eq!(rate.take(), Verdict::Refuse { first: false });
        // Paused tokio time moves the grace clock, not the bucket's: the
        // client stays over the limit as far as the bucket knows.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(500)).await;
            assert_eq!(rate.take(), Verdict::Refuse { first: false });
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(rate.take(), Verdict::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_starts_a_new_stretch() {
        let quota = Rate::quota(NonZeroU32::new(1).unwrap(), NonZeroU32::new(1).unwrap());
        let mut rate = Rate::new(quota, Duration::from_secs(2));
        assert_eq!(rate.take(), Verdict::Allow);
        assert_eq!(rate.take(), Verdict::Refuse { first: true });
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            rate.take(),
            Verdict::Refuse { first: false },
            "a 1.5 s pause ends the stretch"
        );
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(rate.take(), Verdict::Refuse { first: false });
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(
            rate.take(),
            Verdict::Refuse { first: false },
            "1.8 s into the new stretch"
        );
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(rate.take(), Verdict::Close);
    }
}

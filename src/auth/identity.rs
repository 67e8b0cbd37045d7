//! Client identity: the JSON Web Token a client presents at the upgrade,
//! checked with the `jsonwebtoken` crate, and what it grants once connected
//! (the `user` operators see, the topics it may use, whether it may publish,
//! when it expires).
//!
//! Off unless a key is configured; then a request without a valid token is
//! refused with 401 before any upgrade.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::Error;
use crate::config::{read_secret, AuthConfig, SecretError};
use crate::types::Topic;

/// The longest `sub` accepted; it is shown to operators and kept per client.
pub const MAX_USER_LEN: usize = 256;
/// The most entries a `topics` claim may list.
pub const MAX_TOPIC_RULES: usize = 256;

/// Checks client tokens against the configured key and claims.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// What a valid token grants one client, for the life of its connection.
///
/// Kept compact (one allocation besides itself), since every connection of
/// an authenticating node holds one: the user and the topic rules share one
/// string, the rules each after a space (a rule cannot hold one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    text: Box<str>,
    user_len: u32,
    /// Whether a `topics` claim limits the client.
    scoped: bool,
    publish: bool,
    /// The token's `exp`, in seconds since the epoch.
    exp: u64,
}

impl Identity {
    /// The token's `sub`.
    pub fn user(&self) -> &str {
        &self.text[..self.user_len as usize]
    }

    /// The topics the client may subscribe and publish to; `None`: any.
    pub fn topics(&self) -> Option<TopicRules<'_>> {
        self.scoped.then(|| TopicRules(&self.text[self.user_len as usize..]))
    }

    /// Whether the client may publish at all (claim `publish`, default true).
    pub fn publish(&self) -> bool {
        self.publish
    }

    /// The token's `exp`; `None` when it lies beyond what the clock can
    /// represent (an issuer's "never"), which the client outlives.
    pub fn expires(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.exp))
    }
}

/// Why a token was refused: the short reason in the 401 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token: pass ?token= or Authorization: Bearer")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token signature")]
    Signature,
    #[error("token has the wrong audience")]
    Audience,
    #[error("token has the wrong issuer")]
    Issuer,
    #[error("token not valid yet")]
    NotYet,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

/// The claims wshub reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: u64,
    /// Read as sent, to refuse what `jsonwebtoken` lets through: an `iss`
    /// that is not a string (an array), a `null` where a claim is required.
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<bool>,
}

impl Verifier {
    /// The verifier the configuration asks for, or `None` when auth is off.
    /// Key files are read here, so a bad one stops the process at start.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Verifier>, Error> {
        let (key, algorithm) = if let Some(secret) = &config.jwt_secret {
            (secret_key(secret)?, Algorithm::HS256)
        } else if let Some(path) = &config.jwt_secret_file {
            let secret = read_secret(path).map_err(|e| match e {
                SecretError::Read(source) => Error::Read {
                    path: path.clone(),
                    source,
                },
                SecretError::Empty => Error::EmptyFile { path: path.clone() },
            })?;
            (secret_key(&secret)?, Algorithm::HS256)
        } else if let Some(path) = &config.jwt_public_key {
            let pem = std::fs::read(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                (key, Algorithm::RS256)
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                (key, Algorithm::ES256)
            } else {
                return Err(Error::NotAPublicKey { path: path.clone() });
            }
        } else {
            if config.jwt_issuer.is_some() || config.jwt_audience.is_some() {
                return Err(Error::ClaimsWithoutKey);
            }
            return Ok(None);
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Verifier { key, validation }))
    }

    /// Checks one token: signature, algorithm, `exp` and `nbf`, `iss` and
    /// `aud` when configured (then required), then the claims wshub reads.
    ///
    /// The leeway lets a token whose `nbf` is a little ahead of this clock
    /// in; it never lets in one whose `exp` has passed, since the connection
    /// would be closed (1008) the moment it opened.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::ImmatureSignature => AuthError::NotYet,
            ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not accepted"),
            ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
                "iss" => AuthError::Issuer,
                "aud" => AuthError::Audience,
                _ => AuthError::Invalid("exp and sub are required"),
            },
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => AuthError::Invalid("malformed claims"),
            _ => AuthError::Invalid("malformed token"),
        })?;
        let claims = data.claims;
        let now = crate::types::unix_ms() / 1000;
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        // RFC 7519: `iss` is one string; `aud` one string or an array of them.
        if self.validation.iss.is_some() && !matches!(claims.iss, Some(serde_json::Value::String(_))) {
            return Err(AuthError::Issuer);
        }
        if self.validation.aud.is_some() {
            let valid = match &claims.aud {
                Some(serde_json::Value::String(_)) => true,
                Some(serde_json::Value::Array(list)) => !list.is_empty() && list.iter().all(|a| a.is_string()),
                _ => false,
            };
            if !valid {
                return Err(AuthError::Audience);
            }
        }
        let mut text = claims.sub.ok_or(AuthError::Invalid("exp and sub are required"))?;
        if text.is_empty() {
            return Err(AuthError::Invalid("sub is empty"));
        }
        if text.len() > MAX_USER_LEN {
            return Err(AuthError::Invalid("sub longer than 256 bytes"));
        }
        let user_len = text.len() as u32;
        if let Some(rules) = &claims.topics {
            TopicRules::append(&mut text, rules)?;
        }
        Ok(Identity {
            text: text.into_boxed_str(),
            user_len,
            scoped: claims.topics.is_some(),
            publish: claims.publish.unwrap_or(true),
            exp: claims.exp,
        })
    }
}

fn secret_key(secret: &str) -> Result<DecodingKey, Error> {
    if secret.is_empty() {
        return Err(Error::EmptySecret);
    }
    DecodingKey::from_secret(secret.as_bytes()).map_err(Error::Secret)
}

/// A `topics` claim: exact topic names and `prefix.*` patterns (`*` alone
/// allows every topic), each after a space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRules<'a>(&'a str);

impl TopicRules<'_> {
    /// Checks each rule of a claim and appends it to `text` after a space.
    fn append(text: &mut String, list: &[String]) -> Result<(), AuthError> {
        if list.len() > MAX_TOPIC_RULES {
            return Err(AuthError::Invalid("topics claim lists more than 256 entries"));
        }
        for rule in list {
            let valid = match rule.strip_suffix('*') {
                // `*` alone, or `prefix*` whose prefix is a valid topic start.
                Some(prefix) => prefix.is_empty() || Topic::parse(prefix).is_ok(),
                None => Topic::parse(rule).is_ok(),
            };
            if !valid {
                return Err(AuthError::Invalid("topics claim holds an invalid topic pattern"));
            }
            text.push(' ');
            text.push_str(rule);
        }
        Ok(())
    }

    fn rules(&self) -> impl Iterator<Item = &str> {
        self.0.split(' ').skip(1)
    }

    /// Whether `topic` is one of the exact names or starts with a pattern's prefix.
    pub fn allows(&self, topic: &str) -> bool {
        self.rules().any(|rule| match rule.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => rule == topic,
        })
    }

    /// Whether every topic is allowed (`*`): then publish-to-everyone is too.
    pub fn allows_all(&self) -> bool {
        self.rules().any(|rule| rule == "*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of a claim, after a user holding spaces.
    fn rules(list: &[&str]) -> Result<String, AuthError> {
        let mut text = "a user".to_string();
        TopicRules::append(&mut text, &list.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(text["a user".len()..].to_string())
    }

    #[test]
    fn topic_rules_match_exact_names_and_prefixes() {
        let text = rules(&["news", "chat.*", "a:b"]).unwrap();
        let r = TopicRules(&text);
        assert!(r.allows("news"));
        assert!(r.allows("a:b"));
        assert!(r.allows("chat.room1"));
        assert!(r.allows("chat.room1.sub"));
        assert!(!r.allows("chat"), "the pattern needs something after the dot");
        assert!(!r.allows("newsroom"));
        assert!(!r.allows("chatter"));
        assert!(!r.allows_all());
        let all = rules(&["*"]).unwrap();
        assert!(TopicRules(&all).allows("anything") && TopicRules(&all).allows_all());
        let none = rules(&[]).unwrap();
        assert!(!TopicRules(&none).allows("news"), "an empty claim allows nothing");
    }

    #[test]
    fn an_expiry_past_the_clock_is_never() {
        let config = AuthConfig {
            jwt_secret: Some("k".into()),
            ..AuthConfig::default()
        };
        let verifier = Verifier::from_config(&config).unwrap().unwrap();
        let key = jsonwebtoken::EncodingKey::from_secret(b"k").unwrap();
        for exp in [u64::MAX, u64::MAX / 2, 1 << 62] {
            let claims = serde_json::json!({"sub": "u", "exp": exp});
            let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
            let identity = verifier.verify(&token).unwrap();
            if let Some(at) = identity.expires() {
                assert!(at > SystemTime::now());
            }
        }
    }

    #[test]
    fn topic_rules_refuse_invalid_patterns() {
        assert!(rules(&["has space"]).is_err());
        assert!(rules(&["a*b"]).is_err());
        assert!(rules(&["**"]).is_err());
        assert!(rules(&["ünïcode"]).is_err());
        assert!(rules(&vec!["t"; MAX_TOPIC_RULES + 1]).is_err());
    }
}

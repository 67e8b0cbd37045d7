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

use crate::config::{read_secret, AuthConfig};
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: Box<str>,
    /// Topics the client may subscribe and publish to; `None`: any.
    pub topics: Option<TopicRules>,
    /// Whether the client may publish at all (claim `publish`, default true).
    pub publish: bool,
    /// The token's `exp`.
    pub expires: SystemTime,
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
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<bool>,
}

impl Verifier {
    /// The verifier the configuration asks for, or `None` when auth is off.
    /// Key files are read here, so a bad one stops the process at start.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Verifier>, String> {
        let (key, algorithm) = if let Some(secret) = &config.jwt_secret {
            (secret_key(secret)?, Algorithm::HS256)
        } else if let Some(path) = &config.jwt_secret_file {
            (secret_key(&read_secret(path)?)?, Algorithm::HS256)
        } else if let Some(path) = &config.jwt_public_key {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                (key, Algorithm::RS256)
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                (key, Algorithm::ES256)
            } else {
                return Err(format!(
                    "{} is neither an RSA nor an EC public key in PEM",
                    path.display()
                ));
            }
        } else {
            if config.jwt_issuer.is_some() || config.jwt_audience.is_some() {
                return Err(
                    "--jwt-issuer and --jwt-audience need a key (--jwt-secret, --jwt-secret-file or --jwt-public-key)"
                        .into(),
                );
            }
            return Ok(None);
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &config.jwt_audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Some(Verifier { key, validation }))
    }

    /// Checks one token: signature, algorithm, `exp` (and `nbf`), `iss` and
    /// `aud` when configured, then the claims wshub reads.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::InvalidAudience => AuthError::Audience,
            ErrorKind::InvalidIssuer => AuthError::Issuer,
            ErrorKind::ImmatureSignature => AuthError::NotYet,
            ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not accepted"),
            ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("exp and sub are required"),
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => AuthError::Invalid("malformed claims"),
            _ => AuthError::Invalid("malformed token"),
        })?;
        let claims = data.claims;
        let sub = claims.sub.ok_or(AuthError::Invalid("exp and sub are required"))?;
        if sub.len() > MAX_USER_LEN {
            return Err(AuthError::Invalid("sub longer than 256 bytes"));
        }
        let topics = claims.topics.map(|list| TopicRules::parse(&list)).transpose()?;
        Ok(Identity {
            user: sub.into(),
            topics,
            publish: claims.publish.unwrap_or(true),
            expires: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

fn secret_key(secret: &str) -> Result<DecodingKey, String> {
    if secret.is_empty() {
        return Err("the JWT secret is empty".into());
    }
    DecodingKey::from_secret(secret.as_bytes()).map_err(|e| format!("JWT secret: {e}"))
}

/// A `topics` claim: exact topic names and `prefix.*` patterns (`*` alone
/// allows every topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRules {
    /// Sorted, for a binary search.
    exact: Vec<Box<str>>,
    /// Each pattern without its `*`: `chat.*` is kept as `chat.`.
    prefixes: Vec<Box<str>>,
}

impl TopicRules {
    fn parse(list: &[String]) -> Result<TopicRules, AuthError> {
        if list.len() > MAX_TOPIC_RULES {
            return Err(AuthError::Invalid("topics claim lists more than 256 entries"));
        }
        let mut rules = TopicRules {
            exact: Vec::new(),
            prefixes: Vec::new(),
        };
        for rule in list {
            match rule.strip_suffix('*') {
                // `*` alone, or `prefix*` whose prefix is a valid topic start.
                Some(prefix) if prefix.is_empty() || Topic::parse(prefix).is_ok() => {
                    rules.prefixes.push(prefix.into());
                }
                None if Topic::parse(rule).is_ok() => rules.exact.push(rule.as_str().into()),
                _ => return Err(AuthError::Invalid("topics claim holds an invalid topic pattern")),
            }
        }
        rules.exact.sort_unstable();
        Ok(rules)
    }

    /// Whether `topic` is one of the exact names or starts with a pattern's prefix.
    pub fn allows(&self, topic: &str) -> bool {
        self.exact.binary_search_by(|t| (**t).cmp(topic)).is_ok()
            || self.prefixes.iter().any(|p| topic.starts_with(&**p))
    }

    /// Whether every topic is allowed (`*`): then publish-to-everyone is too.
    pub fn allows_all(&self) -> bool {
        self.prefixes.iter().any(|p| p.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Result<TopicRules, AuthError> {
        TopicRules::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn topic_rules_match_exact_names_and_prefixes() {
        let r = rules(&["news", "chat.*", "a:b"]).unwrap();
        assert!(r.allows("news"));
        assert!(r.allows("a:b"));
        assert!(r.allows("chat.room1"));
        assert!(r.allows("chat.room1.sub"));
        assert!(!r.allows("chat"), "the pattern needs something after the dot");
        assert!(!r.allows("newsroom"));
        assert!(!r.allows("chatter"));
        assert!(!r.allows_all());
        let all = rules(&["*"]).unwrap();
        assert!(all.allows("anything") && all.allows_all());
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

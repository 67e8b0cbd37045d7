//! Values every layer shares: who a client is, what a topic is, where a
//! publish came from. They live here, below the hub, the data plane, the
//! control plane and metrics, so none of those reaches into another for them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A client's id: `c-<n>`, unique for the life of the process. Clients and
/// operators treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c-{}", self.0)
    }
}

impl FromStr for ClientId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("c-")
            .and_then(|n| n.parse().ok())
            .map(ClientId)
            .ok_or(())
    }
}

/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;

/// A valid topic: 1–128 characters of `A-Za-z0-9_.:-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// A topic name that breaks the rules above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTopic;

impl Topic {
    pub fn parse(s: &str) -> Result<Topic, InvalidTopic> {
        let valid = (1..=MAX_TOPIC_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if valid {
            Ok(Topic(s.into()))
        } else {
            Err(InvalidTopic)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a publish came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Admin,
}

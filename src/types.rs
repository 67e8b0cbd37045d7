//! Values every layer shares: who a client is, what a topic is, where a
//! publish came from. They live here, below the hub, the data plane, the
//! control plane and metrics, so none of those reaches into another for them.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// A client's id: `c-<n>`, unique for the life of the process; on a node in
/// a cluster `c-<n>@<node>`, unique across the cluster and naming the node
/// that owns the client. Clients and operators treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ClientId(pub u64);

/// The node this process runs as in a cluster, set once when it joins one
/// ([`join_cluster`]); client ids name it from then on. One process is one node.
static CLUSTER_NODE: OnceLock<NodeId> = OnceLock::new();

/// Makes this process's client ids name `node` (`c-7@node`). Once per
/// process: false if it already joined as another node.
pub fn join_cluster(node: &NodeId) -> bool {
    CLUSTER_NODE.get_or_init(|| node.clone()) == node
}

/// The one spelling of a client id: `c-<n>`, or `c-<n>@<node>`.
fn write_id(f: &mut fmt::Formatter<'_>, id: ClientId, node: Option<&NodeId>) -> fmt::Result {
    match node {
        Some(node) => write!(f, "c-{}@{}", id.0, node),
        None => write!(f, "c-{}", id.0),
    }
}

/// A client of this process's node, as its clients and operators see it.
impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, *self, CLUSTER_NODE.get())
    }
}

/// A client id as an operator gives it: the number, and the node it names
/// if any (`c-7@node-b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRef {
    pub id: ClientId,
    pub node: Option<NodeId>,
}

/// A client of any node: `c-7@node-b`, or `c-7` when no node is named.
impl fmt::Display for ClientRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(f, self.id, self.node.as_ref())
    }
}

impl FromStr for ClientRef {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (n, node) = match s.split_once('@') {
            Some((n, node)) => (n, Some(NodeId::parse(node).map_err(|_| ())?)),
            None => (s, None),
        };
        let id = n.strip_prefix("c-").and_then(|n| n.parse().ok()).ok_or(())?;
        Ok(ClientRef { id: ClientId(id), node })
    }
}

/// A client of this node: `c-<n>`, or `c-<n>@<this node>`.
impl FromStr for ClientId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let r: ClientRef = s.parse()?;
        match r.node {
            Some(node) if CLUSTER_NODE.get() != Some(&node) => Err(()),
            _ => Ok(r.id),
        }
    }
}

/// A random number, different in every process and every call: RandomState
/// is seeded randomly, and the pid and the clock make two processes started
/// together differ all the same. Not for secrets.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Milliseconds since the Unix epoch by this machine's clock (0 before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The longest node id, in bytes.
pub const MAX_NODE_LEN: usize = 64;

/// A node id that breaks the rules below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidNode;

/// A node's name: 1–64 characters of `A-Za-z0-9_-`, so it can sit in
/// client ids, channel names and metric labels as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn parse(s: &str) -> Result<NodeId, InvalidNode> {
        let valid = (1..=MAX_NODE_LEN).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if valid {
            Ok(NodeId(s.into()))
        } else {
            Err(InvalidNode)
        }
    }

    /// `<host>-<6 hex digits>`: readable, and new for every process.
    pub fn generate() -> NodeId {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(MAX_NODE_LEN - 7)
            .collect();
        let suffix = random_u64() & 0xff_ffff;
        let host = if host.is_empty() { "node".to_string() } else { host };
        NodeId(format!("{host}-{suffix:06x}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

/// Topic patterns, as an operator writes them (`--history-topics`): exact
/// names, `prefix*` (every topic starting with the prefix), or `*` (every
/// topic), separated by commas.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPatterns(Vec<Pattern>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl TopicPatterns {
    /// No topic at all.
    pub fn none() -> TopicPatterns {
        TopicPatterns(Vec::new())
    }

    pub fn parse(list: &str) -> Result<TopicPatterns, String> {
        let mut patterns = Vec::new();
        for rule in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let pattern = match rule.strip_suffix('*') {
                Some("") => Pattern::Prefix(String::new()),
                Some(prefix) if Topic::parse(prefix).is_ok() => Pattern::Prefix(prefix.to_string()),
                None if Topic::parse(rule).is_ok() => Pattern::Exact(rule.to_string()),
                _ => {
                    return Err(format!(
                        "`{}` is neither a topic nor `prefix*` (topics are 1-128 characters of A-Za-z0-9_.:-)",
                        rule.chars().take(140).collect::<String>()
                    ))
                }
            };
            patterns.push(pattern);
        }
        Ok(TopicPatterns(patterns))
    }

    pub fn matches(&self, topic: &Topic) -> bool {
        self.0.iter().any(|p| match p {
            Pattern::Exact(name) => name == topic.as_str(),
            Pattern::Prefix(prefix) => topic.as_str().starts_with(prefix.as_str()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where a publish came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Admin,
    /// A client's publish on another node, come through the backplane.
    Backplane,
}

/// Topics and node ids cross the backplane as strings and are checked again
/// when read: another node's message is input like any other.
macro_rules! serde_as_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::parse(&s).map_err(|_| serde::de::Error::custom(concat!("invalid ", stringify!($t))))
            }
        }
    };
}
serde_as_str!(Topic);
serde_as_str!(NodeId);

#[cfg(test)]
mod tests {
    use super::{Topic, TopicPatterns};

    #[test]
    fn topic_patterns_match_exact_names_prefixes_and_everything() {
        let t = |s: &str| Topic::parse(s).unwrap();
        let patterns = TopicPatterns::parse("chat.*, news ,orders").unwrap();
        assert!(patterns.matches(&t("chat.eu")) && patterns.matches(&t("news")) && patterns.matches(&t("orders")));
        assert!(!patterns.matches(&t("newsroom")) && !patterns.matches(&t("chat")));
        assert!(TopicPatterns::parse("*").unwrap().matches(&t("any")));
        assert!(TopicPatterns::parse("").unwrap().is_empty());
        assert!(TopicPatterns::parse("a b").is_err());
        assert!(TopicPatterns::parse("bad/*").is_err());
    }

    use super::*;

    #[test]
    fn client_refs_read_and_spell_the_same() {
        for text in ["c-7", "c-7@node-b", "c-18446744073709551615@a_1"] {
            let r: ClientRef = text.parse().unwrap();
            assert_eq!(r.to_string(), text);
        }
        let r: ClientRef = "c-7@node-b".parse().unwrap();
        assert_eq!(
            (r.id, r.node.as_ref().map(NodeId::as_str)),
            (ClientId(7), Some("node-b"))
        );
        for bad in ["", "c-", "c-x", "7", "c-7@", "c-7@bad node", "c-7@a@b", "c--1"] {
            assert!(bad.parse::<ClientRef>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_node_ids_are_valid_and_differ() {
        let (a, b) = (NodeId::generate(), NodeId::generate());
        assert!(NodeId::parse(a.as_str()).is_ok(), "{a}");
        assert_ne!(a, b);
        assert!(NodeId::parse(&"x".repeat(MAX_NODE_LEN + 1)).is_err());
    }
}

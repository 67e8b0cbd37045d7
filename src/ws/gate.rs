//! Who may open a connection, decided on the upgrade request before any
//! upgrade: the origin (403), the connection limits (503 for the node, 429
//! per address) and the client's token (401). Each refusal is an HTTP answer
//! with a short reason, counted in `wshub_handshake_failures_total{reason}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;

use crate::config::GateConfig;
use crate::identity::{AuthError, Identity, Verifier};

/// Sockets kept free for the admin and metrics ports, the listeners and the
/// process's own files when `--max-connections` is derived from the file limit.
pub const RESERVED_FILES: usize = 256;

/// The checks and the counters they share.
#[derive(Debug)]
pub struct Gate {
    /// `None`: any origin.
    origins: Option<Vec<OriginRule>>,
    pub max_connections: usize,
    /// 0: no per-address limit.
    max_per_ip: usize,
    proxies: Vec<IpNet>,
    /// `None`: client identity is off. Replaced by a reload.
    verifier: RwLock<Option<Verifier>>,
    /// Clients holding a [`Slot`].
    connections: AtomicUsize,
    /// Sockets accepted and still in their handshakes.
    handshakes: AtomicUsize,
    /// Clients per address; kept only with a per-address limit.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// Why the gate refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Origin,
    Full,
    FullForAddress,
    Auth(AuthError),
}

/// A connection's place under the limits, given back when it is dropped
/// (however the connection ends).
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.connections.fetch_sub(1, Relaxed);
        if let Some(ip) = self.ip {
            let mut per_ip = self.gate.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A socket's place among the handshakes in flight, given back when dropped.
#[derive(Debug)]
pub struct Handshaking(Arc<Gate>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Relaxed);
    }
}

/// What the gate learnt about an admitted client.
#[derive(Debug)]
pub struct Admitted {
    /// The client's address: the peer, or the one a trusted proxy named.
    pub addr: SocketAddr,
    pub identity: Option<Identity>,
    pub slot: Slot,
}

/// The parts of the request the gate reads.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub origin: Option<&'a str>,
    /// The `token` query parameter or the `Authorization: Bearer` value.
    pub token: Option<&'a str>,
    pub forwarded_for: Vec<&'a str>,
    pub forwarded: Vec<&'a str>,
}

impl Gate {
    pub fn new(config: &GateConfig, verifier: Option<Verifier>) -> Result<Gate, String> {
        let origins = if config.allowed_origins.iter().all(|o| o.trim().is_empty()) {
            None
        } else {
            Some(
                config
                    .allowed_origins
                    .iter()
                    .filter(|o| !o.trim().is_empty())
                    .map(|o| OriginRule::parse(o))
                    .collect::<Result<_, _>>()?,
            )
        };
        let max_connections = match config.max_connections {
            Some(n) => n,
            None => {
                let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
                (soft as usize).saturating_sub(RESERVED_FILES).max(1)
            }
        };
        Ok(Gate {
            origins,
            max_connections,
            max_per_ip: config.max_connections_per_ip,
            proxies: config.trusted_proxies.clone(),
            verifier: RwLock::new(verifier),
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the token verifier with one built from the key files again
    /// (on SIGHUP); a key that does not load keeps the one in use.
    pub fn reload_verifier(&self, config: &crate::config::AuthConfig) -> Result<(), String> {
        let fresh = Verifier::from_config(config)?;
        *self.verifier.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Decides on a request from `peer`: origin, then limits, then token,
    /// so a refused request costs no signature check. A request without an
    /// `Origin` (not from a browser) passes the origin check: the check
    /// protects browsers' users, and any other client can send any origin.
    pub fn admit(self: &Arc<Self>, request: &Request, peer: SocketAddr) -> Result<Admitted, Denied> {
        if let (Some(rules), Some(origin)) = (&self.origins, request.origin) {
            if !rules.iter().any(|rule| rule.matches(origin.trim())) {
                return Err(Denied::Origin);
            }
        }
        let addr = self.client_addr(request, peer);
        let slot = self.take_slot(addr.ip())?;
        let identity = match &*self.verifier.read().unwrap_or_else(|e| e.into_inner()) {
            None => None,
            Some(verifier) => {
                let token = request
                    .token
                    .filter(|t| !t.is_empty())
                    .ok_or(Denied::Auth(AuthError::Missing))?;
                Some(verifier.verify(token).map_err(Denied::Auth)?)
            }
        };
        Ok(Admitted { addr, identity, slot })
    }

    fn take_slot(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Denied> {
        let taken = self
            .connections
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max_connections).then_some(n + 1));
        if taken.is_err() {
            return Err(Denied::Full);
        }
        if self.max_per_ip == 0 {
            return Ok(Slot {
                gate: self.clone(),
                ip: None,
            });
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_ip.entry(ip).or_insert(0);
        if *count as usize >= self.max_per_ip {
            drop(per_ip);
            self.connections.fetch_sub(1, Relaxed);
            return Err(Denied::FullForAddress);
        }
        *count += 1;
        Ok(Slot {
            gate: self.clone(),
            ip: Some(ip),
        })
    }

    /// A socket just accepted starts its handshakes, unless clients and
    /// handshakes in flight together already reach `--max-connections`: so
    /// the limit bounds the sockets clients hold, and connections that
    /// never finish a handshake cannot take the node's file descriptors.
    pub fn begin_handshake(self: &Arc<Self>) -> Option<Handshaking> {
        let handshakes = self.handshakes.fetch_add(1, Relaxed) + 1;
        if handshakes + self.connections.load(Relaxed) > self.max_connections {
            self.handshakes.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Handshaking(self.clone()))
    }

    /// Clients holding a slot now.
    pub fn connections(&self) -> usize {
        self.connections.load(Relaxed)
    }

    /// The client's address. Behind a trusted proxy it is the last address
    /// in `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a
    /// trusted proxy: the first hop no trusted party vouches for. Without a
    /// trusted proxy, headers are ignored (anyone could send them).
    fn client_addr(&self, request: &Request, peer: SocketAddr) -> SocketAddr {
        let trusted = |ip: &IpAddr| self.proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer.ip()) {
            return peer;
        }
        let mut hops: Vec<IpAddr> = request
            .forwarded_for
            .iter()
            .flat_map(|line| line.split(','))
            .filter_map(|hop| parse_hop(hop.trim()))
            .collect();
        if hops.is_empty() {
            hops = request
                .forwarded
                .iter()
                .flat_map(|line| line.split([',', ';']))
                .filter_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_hop(value.trim()))?
                })
                .collect();
        }
        match hops.into_iter().rev().find(|ip| !trusted(ip)) {
            Some(ip) => SocketAddr::new(ip, 0),
            None => peer,
        }
    }
}

/// One hop of a forwarding header: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`,
/// `"[2001:db8::1]"` or `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.split(']').next()?.parse().ok()
}

/// An allowed origin: exact (`https://app.example.com`), or any subdomain
/// of a domain (`https://*.example.com`). Compared without regard to case.
#[derive(Debug, Clone)]
struct OriginRule {
    /// `https://`; empty in a rule without a scheme, which matches any.
    scheme: String,
    /// The host (and port), or the suffix `.example.com` of a pattern.
    host: String,
    wildcard: bool,
}

impl OriginRule {
    fn parse(rule: &str) -> Result<OriginRule, String> {
        let rule = rule.trim().trim_end_matches('/').to_ascii_lowercase();
        let (scheme, host) = match rule.split_once("://") {
            Some((scheme, host)) => (format!("{scheme}://"), host.to_string()),
            None => (String::new(), rule.clone()),
        };
        let (wildcard, host) = match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => (true, suffix.to_string()),
            Some(_) => return Err(format!("origin pattern `{rule}`: a `*` must be followed by `.`")),
            None => (false, host),
        };
        if host.is_empty() || host.contains(['*', '/']) {
            return Err(format!(
                "`{rule}` is not an origin like https://app.example.com or https://*.example.com"
            ));
        }
        Ok(OriginRule { scheme, host, wildcard })
    }

    fn matches(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        let (scheme, host) = match origin.split_once("://") {
            Some((scheme, host)) => (format!("{scheme}://"), host),
            None => return false,
        };
        if !self.scheme.is_empty() && scheme != self.scheme {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() && host.ends_with(&self.host)
        } else {
            host == self.host
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(origins: &[&str], proxies: &[&str]) -> Arc<Gate> {
        let config = GateConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            max_connections: Some(2),
            max_connections_per_ip: 1,
            trusted_proxies: proxies.iter().map(|p| crate::config::parse_net(p).unwrap()).collect(),
            ..GateConfig::default()
        };
        Arc::new(Gate::new(&config, None).unwrap())
    }

    #[test]
    fn origins_exact_and_by_subdomain() {
        let g = gate(&["https://app.example.com", "https://*.example.org"], &[]);
        let peer: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let with = |origin| Request {
            origin: Some(origin),
            ..Request::default()
        };
        assert!(g.admit(&with("https://app.example.com"), peer).is_ok());
        assert!(g
            .admit(&with("HTTPS://APP.EXAMPLE.COM"), "10.0.0.2:1".parse().unwrap())
            .is_ok());
        for refused in [
            "http://app.example.com",
            "https://evil.com",
            "https://example.org",
            "https://app.example.com.evil.com",
            "https://notexample.org",
            "null",
        ] {
            assert_eq!(g.admit(&with(refused), peer).unwrap_err(), Denied::Origin, "{refused}");
        }
        assert!(OriginRule::parse("https://*example.com").is_err());
        assert!(OriginRule::parse("https://*.example.org")
            .unwrap()
            .matches("https://a.b.example.org"));
    }

    #[test]
    fn limits_count_and_free_slots() {
        let g = gate(&[], &[]);
        let (a, b): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
        let first = g.admit(&Request::default(), a).unwrap();
        assert_eq!(g.admit(&Request::default(), a).unwrap_err(), Denied::FullForAddress);
        let second = g.admit(&Request::default(), b).unwrap();
        assert_eq!(
            g.admit(&Request::default(), "10.0.0.3:1".parse().unwrap()).unwrap_err(),
            Denied::Full
        );
        drop(first);
        assert_eq!(g.connections(), 1);
        assert!(g.admit(&Request::default(), a).is_ok());
        drop(second);
        assert_eq!(g.connections(), 0);
        // Handshakes in flight count against the node's limit too.
        let (h1, h2) = (g.begin_handshake().unwrap(), g.begin_handshake().unwrap());
        assert!(g.begin_handshake().is_none());
        let admitted = g.admit(&Request::default(), a).unwrap();
        drop(h1);
        assert!(g.begin_handshake().is_none(), "one client and one handshake: full");
        drop((h2, admitted));
        assert!(g.begin_handshake().is_some());
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let g = gate(&[], &["10.0.0.0/8"]);
        let request = Request {
            forwarded_for: vec!["203.0.113.9, 198.51.100.7", "10.1.1.1"],
            ..Request::default()
        };
        let from_proxy = g.client_addr(&request, "10.0.0.5:443".parse().unwrap());
        assert_eq!(from_proxy.ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        let direct = g.client_addr(&request, "192.0.2.1:5000".parse().unwrap());
        assert_eq!(
            direct,
            "192.0.2.1:5000".parse().unwrap(),
            "headers from untrusted peers are ignored"
        );
        let forwarded = Request {
            forwarded: vec![r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.9"#],
            ..Request::default()
        };
        let ip = g.client_addr(&forwarded, "10.0.0.5:443".parse().unwrap()).ip();
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}

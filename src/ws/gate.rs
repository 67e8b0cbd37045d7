//! Who may open a connection, decided on the upgrade request before any
//! upgrade: the origin (403), the connection limits (503 for the node, 429
//! per address) and the client's token (401). Each refusal is an HTTP answer
//! with a short reason, counted in `wshub_handshake_failures_total{reason}`.
//! The gate keeps the counters (slots, handshakes, per address); the rules
//! it applies (origins, forwarding headers, tokens) are [`crate::auth`]'s.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;

use crate::auth::forwarded::{self, ClientIpHeader};
use crate::auth::identity::{AuthError, Identity, Verifier};
use crate::auth::origin::OriginRule;
use crate::config::GateConfig;

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
    /// Sockets one peer address may hold in their handshakes; 0: no limit.
    max_handshakes_per_ip: usize,
    proxies: Vec<IpNet>,
    /// Where a trusted proxy names the client (`--client-ip-header`).
    ip_header: ClientIpHeader,
    /// `None`: client identity is off. Replaced by a reload.
    verifier: RwLock<Option<Verifier>>,
    /// Clients holding a [`Slot`].
    connections: AtomicUsize,
    /// Sockets accepted and still in their handshakes.
    handshakes: AtomicUsize,
    /// Clients and handshakes per address; kept only with a per-address limit.
    per_ip: Mutex<HashMap<IpAddr, PerIp>>,
}

/// What one address holds.
#[derive(Debug, Default, Clone, Copy)]
struct PerIp {
    clients: u32,
    handshakes: u32,
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
            self.gate.release(ip, |n| n.clients -= 1);
        }
    }
}

/// A socket's place among the handshakes in flight, given back when dropped.
#[derive(Debug)]
pub struct Handshaking {
    gate: Arc<Gate>,
    /// The peer address, when its handshakes are counted.
    ip: Option<IpAddr>,
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.gate.handshakes.fetch_sub(1, Relaxed);
        if let Some(ip) = self.ip {
            self.gate.release(ip, |n| n.handshakes -= 1);
        }
    }
}

/// Why a socket may not even start its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The node's clients and handshakes reach `--max-connections`: 503.
    Full,
    /// The peer address holds all the sockets it may: 429.
    FullForAddress,
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
    /// Every line of the `--client-ip-header` header, in order.
    pub forwarded: Vec<&'a str>,
}

impl Gate {
    pub fn new(config: &GateConfig, verifier: Option<Verifier>) -> Result<Gate, crate::auth::Error> {
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
            max_handshakes_per_ip: config.max_handshakes_per_ip,
            proxies: config.trusted_proxies.clone(),
            ip_header: ClientIpHeader::parse(&config.client_ip_header),
            verifier: RwLock::new(verifier),
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the token verifier with one built from the key files again
    /// (on SIGHUP); a key that does not load keeps the one in use.
    pub fn reload_verifier(&self, config: &crate::config::AuthConfig) -> Result<(), crate::auth::Error> {
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
        let held = per_ip.entry(ip).or_default();
        if held.clients as usize >= self.max_per_ip {
            if held.clients == 0 && held.handshakes == 0 {
                per_ip.remove(&ip);
            }
            drop(per_ip);
            self.connections.fetch_sub(1, Relaxed);
            return Err(Denied::FullForAddress);
        }
        held.clients += 1;
        Ok(Slot {
            gate: self.clone(),
            ip: Some(ip),
        })
    }

    /// Gives back what `ip` held, forgetting the address once it holds nothing.
    fn release(&self, ip: IpAddr, give_back: impl FnOnce(&mut PerIp)) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = per_ip.get_mut(&ip) {
            give_back(held);
            if held.clients == 0 && held.handshakes == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// A socket just accepted from `peer` starts its handshakes, unless
    /// clients and handshakes in flight together already reach
    /// `--max-connections` (so the limit bounds the sockets clients hold,
    /// and connections that never finish a handshake cannot take the
    /// node's file descriptors), or the peer address already holds as many
    /// sockets in their handshakes as `--max-handshakes-per-ip` allows, or
    /// as many sockets (clients and handshakes) as `--max-connections-per-ip`
    /// does: so one host cannot take every handshake slot. The peer address
    /// counts here (no header has been read); a trusted proxy speaks for
    /// many clients and is exempt.
    pub fn begin_handshake(self: &Arc<Self>, peer: IpAddr) -> Result<Handshaking, Busy> {
        let handshakes = self.handshakes.fetch_add(1, Relaxed) + 1;
        let mut held = Handshaking {
            gate: self.clone(),
            ip: None,
        };
        if handshakes + self.connections.load(Relaxed) > self.max_connections {
            return Err(Busy::Full);
        }
        let peer = peer.to_canonical();
        if (self.max_per_ip == 0 && self.max_handshakes_per_ip == 0) || self.trusted(&peer) {
            return Ok(held);
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let from = per_ip.entry(peer).or_default();
        let over_handshakes = self.max_handshakes_per_ip != 0 && from.handshakes as usize >= self.max_handshakes_per_ip;
        let over_sockets = self.max_per_ip != 0 && (from.clients + from.handshakes) as usize >= self.max_per_ip;
        if over_handshakes || over_sockets {
            if from.clients == 0 && from.handshakes == 0 {
                per_ip.remove(&peer);
            }
            return Err(Busy::FullForAddress);
        }
        from.handshakes += 1;
        held.ip = Some(peer);
        Ok(held)
    }

    fn trusted(&self, ip: &IpAddr) -> bool {
        forwarded::trusted(&self.proxies, ip)
    }

    /// The header a trusted proxy names the client in.
    pub fn client_ip_header(&self) -> &str {
        self.ip_header.name()
    }

    /// Clients holding a slot now.
    pub fn connections(&self) -> usize {
        self.connections.load(Relaxed)
    }

    /// The client's address: the peer, or behind a trusted proxy the one
    /// it names (see [`forwarded::client_addr`]).
    fn client_addr(&self, request: &Request, peer: SocketAddr) -> SocketAddr {
        forwarded::client_addr(&self.proxies, &self.ip_header, &request.forwarded, peer)
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
        let (c, d): (IpAddr, IpAddr) = ("10.0.0.3".parse().unwrap(), "10.0.0.4".parse().unwrap());
        let (h1, h2) = (g.begin_handshake(c).unwrap(), g.begin_handshake(d).unwrap());
        assert_eq!(g.begin_handshake(a.ip()).unwrap_err(), Busy::Full);
        let admitted = g.admit(&Request::default(), a).unwrap();
        drop(h1);
        assert_eq!(
            g.begin_handshake(c).unwrap_err(),
            Busy::Full,
            "one client and one handshake: full"
        );
        drop((h2, admitted));
        assert!(g.begin_handshake(c).is_ok());
    }

    #[test]
    fn handshakes_are_counted_per_peer_address() {
        let config = GateConfig {
            max_connections: Some(50),
            max_connections_per_ip: 2,
            max_handshakes_per_ip: 64,
            trusted_proxies: vec![crate::config::parse_net("10.9.0.0/16").unwrap()],
            ..GateConfig::default()
        };
        let g = Arc::new(Gate::new(&config, None).unwrap());
        let attacker: IpAddr = "203.0.113.5".parse().unwrap();
        let held = [
            g.begin_handshake(attacker).unwrap(),
            g.begin_handshake(attacker).unwrap(),
        ];
        assert_eq!(g.begin_handshake(attacker).unwrap_err(), Busy::FullForAddress);
        // As IPv4-mapped IPv6, the same address.
        assert_eq!(
            g.begin_handshake("::ffff:203.0.113.5".parse().unwrap()).unwrap_err(),
            Busy::FullForAddress
        );
        assert!(
            g.begin_handshake("198.51.100.1".parse().unwrap()).is_ok(),
            "others still get in"
        );
        // A client from that address and one handshake: two sockets, the limit.
        drop(held);
        let client = g.admit(&Request::default(), SocketAddr::new(attacker, 1)).unwrap();
        let one = g.begin_handshake(attacker).unwrap();
        assert_eq!(g.begin_handshake(attacker).unwrap_err(), Busy::FullForAddress);
        drop((client, one));
        assert!(
            g.per_ip.lock().unwrap().is_empty(),
            "an address holding nothing is forgotten"
        );
        // A trusted proxy is exempt: it speaks for many clients.
        let proxy: IpAddr = "10.9.1.1".parse().unwrap();
        let through: Vec<_> = (0..10).map(|_| g.begin_handshake(proxy).unwrap()).collect();
        assert_eq!(through.len(), 10);
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let g = gate(&[], &["10.0.0.0/8"]);
        let request = Request {
            forwarded: vec!["203.0.113.9, ::ffff:198.51.100.7", "10.1.1.1"],
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
        // With --client-ip-header forwarded, only Forwarded is read.
        let config = GateConfig {
            trusted_proxies: vec![crate::config::parse_net("10.0.0.0/8").unwrap()],
            client_ip_header: "forwarded".into(),
            ..GateConfig::default()
        };
        let g = Arc::new(Gate::new(&config, None).unwrap());
        let forwarded = Request {
            forwarded: vec![r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.9"#],
            ..Request::default()
        };
        let ip = g.client_addr(&forwarded, "10.0.0.5:443".parse().unwrap()).ip();
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        let mapped = g.client_addr(&Request::default(), "[::ffff:192.0.2.7]:80".parse().unwrap());
        assert_eq!(mapped.ip(), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    /// `--client-ip-header x-real-ip`: the one header the proxy writes is
    /// read (its last line when repeated); the client's own
    /// `X-Forwarded-For` is not even collected, since the handshake reads
    /// only the configured header.
    #[test]
    fn a_single_address_header_names_the_client() {
        let config = GateConfig {
            trusted_proxies: vec![crate::config::parse_net("10.0.0.0/8").unwrap()],
            client_ip_header: crate::config::parse_header_name("X-Real-IP").unwrap(),
            ..GateConfig::default()
        };
        let g = Arc::new(Gate::new(&config, None).unwrap());
        assert_eq!(g.client_ip_header(), "x-real-ip");
        let request = Request {
            forwarded: vec!["203.0.113.1", " 198.51.100.9 "],
            ..Request::default()
        };
        let ip = g.client_addr(&request, "10.0.0.5:443".parse().unwrap()).ip();
        assert_eq!(ip, "198.51.100.9".parse::<IpAddr>().unwrap());
        let garbage = Request {
            forwarded: vec!["not an address"],
            ..Request::default()
        };
        let peer: SocketAddr = "10.0.0.5:443".parse().unwrap();
        assert_eq!(g.client_addr(&garbage, peer), peer, "unreadable: the peer");
        assert!(crate::config::parse_header_name("bad header").is_err());
    }
}

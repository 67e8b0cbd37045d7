//! The client's address behind trusted proxies: which header they write it
//! in (`--client-ip-header`), how each form is read, and which hop counts.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The header a trusted proxy writes the client's address in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
    /// Any other header holding one address (`X-Real-IP`); its lowercase name.
    Single(String),
}

impl ClientIpHeader {
    pub fn parse(name: &str) -> ClientIpHeader {
        match name {
            "" | "x-forwarded-for" => Self::XForwardedFor,
            "forwarded" => Self::Forwarded,
            other => Self::Single(other.to_string()),
        }
    }

    /// The header's name, lowercase.
    pub fn name(&self) -> &str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::Single(name) => name,
        }
    }
}

/// Whether `ip` is one of the trusted proxies.
pub fn trusted(proxies: &[IpNet], ip: &IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(ip))
}

/// The client's address. Behind a trusted proxy it is the last address
/// in the `--client-ip-header` header that is not itself a trusted
/// proxy: the first hop no trusted party vouches for. Without a trusted
/// proxy, headers are ignored (anyone could send them). IPv4-mapped
/// IPv6 addresses (`::ffff:192.0.2.1`) count as the IPv4 address.
pub fn client_addr(proxies: &[IpNet], header: &ClientIpHeader, lines: &[&str], peer: SocketAddr) -> SocketAddr {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if !trusted(proxies, &peer.ip()) {
        return peer;
    }
    let lines = lines.iter();
    let hops: Vec<IpAddr> = match header {
        ClientIpHeader::XForwardedFor => lines
            .flat_map(|line| line.split(','))
            .filter_map(|hop| parse_hop(hop.trim()))
            .collect(),
        ClientIpHeader::Forwarded => lines
            .flat_map(|line| line.split([',', ';']))
            .filter_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_hop(value.trim()))?
            })
            .collect(),
        // One address; a repeated header is ambiguous, so the last counts.
        ClientIpHeader::Single(_) => lines.last().and_then(|v| parse_hop(v.trim())).into_iter().collect(),
    };
    match hops
        .into_iter()
        .map(|ip| ip.to_canonical())
        .rev()
        .find(|ip| !trusted(proxies, ip))
    {
        Some(ip) => SocketAddr::new(ip, 0),
        None => peer,
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
